"""Delayed retries at run time (``retry:`` on a queue), on the real broker.

A consumer whose handler fails sends a copy of the message to the retry queue of its next
delay (``x-rabbitry-attempt`` = the next try, ``x-rabbitry-error`` = why), acks the
original, and the broker gives the copy back when the delay's TTL ends.  After the last try
the message is dead-lettered with ``x-rabbitry-attempts``.  A contract violation and a
handler's ``DeadLetter`` skip the delays; a missing retry queue dead-letters with the hint
to apply the spec; no value of the attempt header makes a message loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from pamqp import commands as spec

from amqp import apply, channel_on, close_connections, depth, drain, raw_publish, until
from broker import Vhost
from rabbitry import DeadLetter
from rabbitry.broker._frames import raw_header
from rabbitry.check import load_spec
from rabbitry.messaging import _telemetry
from rabbitry.messaging._delivery import attempt_of
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract, contract_data
from specs import object_schema, write_spec
from test_codegen_support import ROOT, generate_package, imported, mypy_errors

SPEC = """
version: 1
exchanges:
  work: {type: direct}
  dlx: {type: fanout}
queues:
  tasks: {dead_letter: dlx, retry: [200ms, 400ms]}
  chores: {dead_letter: dlx}
  dead: {}
bindings:
  - {from: work, queue: tasks, key: task}
  - {from: work, queue: chores, key: chore}
  - {from: dlx, queue: dead}
messages:
  Task: {schema: schemas/task.json, exchange: work, routing_key: task}
  Chore: {schema: schemas/task.json, exchange: work, routing_key: chore}
services:
  worker:
    consumes: {tasks: [Task], chores: [Chore]}
  boss:
    publishes: [Task, Chore]
"""
SCHEMAS = {"schemas/task.json": object_schema({"n": {"type": "integer"}}, ["n"])}
DELAYS = (0.2, 0.4)
CACHE = ROOT / ".mypy_cache" / "codegen-tests"

Handler = Callable[[Delivery[Any]], Awaitable[None]]


@pytest.fixture
def contract(vhost: Vhost, tmp_path: Path) -> Contract:
    return apply(vhost, write_spec(tmp_path, SPEC, SCHEMAS))


async def _worker(
    vhost: Vhost, contract: Contract, handler: Handler, queue: str = "tasks"
) -> tuple[Client, Client]:
    worker = Client(contract, vhost.amqp_url, service="worker")
    boss = Client(contract, vhost.amqp_url, service="boss")
    await worker.__aenter__()
    await boss.__aenter__()
    await worker.consume(queue, handler).ready()
    return worker, boss


async def _close(*clients: Client) -> None:
    for client in clients:
        await client.__aexit__(None, None, None)


def _run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


def _names(x_death: Any) -> list[str]:
    return sorted(str(entry["queue"]) for entry in x_death)


def test_the_contract_carries_the_retry_queues_and_what_they_hold(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, SPEC, SCHEMAS))
    data = contract_data(spec)
    assert data["queues"]["tasks"]["retry"] == [
        [200, "tasks.retry.200ms"],
        [400, "tasks.retry.400ms"],
    ]
    assert "retry" not in data["queues"]["chores"]  # the data of a queue without is as it was
    assert data["queues"]["tasks.retry.200ms"]["accepts"] == ["Task"]
    contract = Contract.from_data(json.loads(json.dumps(data)))
    assert contract.queue("tasks").retry == ((200, "tasks.retry.200ms"), (400, "tasks.retry.400ms"))
    assert contract.queue("chores").retry == ()


def test_a_handler_failing_twice_is_tried_again_after_each_delay(
    vhost: Vhost, contract: Contract
) -> None:
    seen: list[tuple[int, float, Any]] = []

    async def flaky(delivery: Delivery[Any]) -> None:
        seen.append((delivery.attempt, time.monotonic(), delivery.headers.get("x-rabbitry-error")))
        if delivery.attempt < 3:
            raise RuntimeError(f"disk busy on try {delivery.attempt}")

    async def body() -> None:
        worker, boss = await _worker(vhost, contract, flaky)
        try:
            await boss.publish("Task", {"n": 1})
            await until(lambda: len(seen) == 3, 10, "for the third try")
            await asyncio.sleep(0.3)
        finally:
            await _close(worker, boss)
        assert await depth(vhost.amqp_url, "dead") == 0
        for name in ("tasks", "tasks.retry.200ms", "tasks.retry.400ms"):
            assert await depth(vhost.amqp_url, name) == 0, name

    _run(body)
    assert [attempt for attempt, _, _ in seen] == [1, 2, 3]
    gaps = [later - earlier for (_, earlier, _), (_, later, _) in itertools.pairwise(seen)]
    for gap, delay in zip(gaps, DELAYS, strict=True):
        assert gap >= delay, (gaps, DELAYS)
    assert seen[0][2] is None
    assert "RuntimeError: disk busy on try 1" in seen[1][2]
    assert "disk busy on try 2" in seen[2][2]


def test_a_handler_that_always_fails_dead_letters_once_after_the_last_delay(
    vhost: Vhost, contract: Contract
) -> None:
    calls: list[int] = []

    async def broken(delivery: Delivery[Any]) -> None:
        calls.append(delivery.attempt)
        raise ValueError("no such printer")

    async def body() -> None:
        worker, boss = await _worker(vhost, contract, broken)
        try:
            await boss.publish("Task", {"n": 2})
            [dead] = await drain(vhost.amqp_url, "dead", 1)
            await asyncio.sleep(0.2)
        finally:
            await _close(worker, boss)
        headers = dead.header.properties.headers
        assert headers["x-rabbitry-attempts"] == 3
        reason = headers["x-rabbitry-error"]
        assert "failed 3 time(s)" in reason
        assert "200ms, 400ms" in reason
        assert "ValueError: no such printer" in reason
        assert headers["x-rabbitry-queue"] == "tasks"
        assert _names(headers["x-death"]) == ["tasks.retry.200ms", "tasks.retry.400ms"]
        assert json.loads(dead.body) == {"n": 2}
        assert await depth(vhost.amqp_url, "dead") == 0

    _run(body)
    assert calls == [1, 2, 3]


def test_a_quorum_queue_retries_through_quorum_retry_queues(vhost: Vhost, tmp_path: Path) -> None:
    quorum = SPEC.replace("tasks: {dead_letter: dlx,", "tasks: {type: quorum, dead_letter: dlx,")
    contract = apply(vhost, write_spec(tmp_path, quorum, SCHEMAS))
    types = {q["name"]: q["type"] for q in vhost.queues()}
    assert types["tasks.retry.200ms"] == types["tasks.retry.400ms"] == "quorum"
    calls: list[int] = []

    async def broken(delivery: Delivery[Any]) -> None:
        calls.append(delivery.attempt)
        raise RuntimeError("still broken")

    async def body() -> None:
        worker, boss = await _worker(vhost, contract, broken)
        try:
            await boss.publish("Task", {"n": 7})
            [dead] = await drain(vhost.amqp_url, "dead", 1)
        finally:
            await _close(worker, boss)
        headers = dead.header.properties.headers
        assert headers["x-rabbitry-attempts"] == 3
        assert _names(headers["x-death"]) == ["tasks.retry.200ms", "tasks.retry.400ms"]

    _run(body)
    assert calls == [1, 2, 3]


@pytest.mark.parametrize("queue", ["tasks", "chores"])
def test_dead_letter_raised_by_a_handler_skips_every_retry(
    vhost: Vhost, contract: Contract, queue: str
) -> None:
    calls: list[int] = []

    async def refuses(delivery: Delivery[Any]) -> None:
        calls.append(delivery.attempt)
        raise DeadLetter("job names a file that does not exist")

    async def body() -> None:
        worker, boss = await _worker(vhost, contract, refuses, queue)
        try:
            await boss.publish("Task" if queue == "tasks" else "Chore", {"n": 3})
            [dead] = await drain(vhost.amqp_url, "dead", 1)
            await asyncio.sleep(0.8)  # past every delay: nothing more comes
        finally:
            await _close(worker, boss)
        headers = dead.header.properties.headers
        assert headers["x-rabbitry-error"] == "job names a file that does not exist"
        assert headers["x-rabbitry-attempts"] == 1
        assert "x-death" not in headers
        assert await depth(vhost.amqp_url, "dead") == 0

    _run(body)
    assert calls == [1]


def test_on_a_queue_without_retry_the_attempt_counts_the_tries_in_process(
    vhost: Vhost, contract: Contract
) -> None:
    seen: list[tuple[int, Any]] = []

    async def flaky(delivery: Delivery[Any]) -> None:
        seen.append((delivery.attempt, delivery.headers.get("x-rabbitry-attempt")))
        if delivery.attempt == 1:
            raise RuntimeError("once")

    async def body() -> None:
        worker, boss = await _worker(vhost, contract, flaky, "chores")
        try:
            await boss.publish("Chore", {"n": 8})
            await until(lambda: len(seen) == 2, 10, "for the second try")
        finally:
            await _close(worker, boss)
        for name in ("dead", "tasks.retry.200ms", "tasks.retry.400ms"):
            assert await depth(vhost.amqp_url, name) == 0, name

    _run(body)
    assert seen == [(1, None), (2, None)]  # the same delivery, tried again in process


def test_an_invalid_message_is_dead_lettered_at_once_without_retry(
    vhost: Vhost, contract: Contract
) -> None:
    calls: list[int] = []

    async def handler(delivery: Delivery[Any]) -> None:
        calls.append(delivery.attempt)

    async def body() -> None:
        worker, boss = await _worker(vhost, contract, handler)
        try:
            await raw_publish(
                vhost.amqp_url, "work", "task", [(b'{"n": "two"}', {"message_type": "Task"})]
            )
            [dead] = await drain(vhost.amqp_url, "dead", 1)
            await asyncio.sleep(0.8)
        finally:
            await _close(worker, boss)
        headers = dead.header.properties.headers
        assert headers["x-rabbitry-path"] == "/n"
        assert "x-rabbitry-attempts" not in headers
        assert "x-death" not in headers
        assert await depth(vhost.amqp_url, "dead") == 0

    _run(body)
    assert calls == []


def test_a_missing_retry_queue_dead_letters_with_the_hint_to_apply(
    vhost: Vhost, contract: Contract
) -> None:
    calls: list[int] = []

    async def broken(delivery: Delivery[Any]) -> None:
        calls.append(delivery.attempt)
        raise RuntimeError("flaky")

    async def body() -> None:
        async with channel_on(vhost) as channel:
            await channel.queue_delete("tasks.retry.200ms")
        worker, boss = await _worker(vhost, contract, broken)
        try:
            await boss.publish("Task", {"n": 4})
            [dead] = await drain(vhost.amqp_url, "dead", 1)
        finally:
            await _close(worker, boss)
        headers = dead.header.properties.headers
        reason = headers["x-rabbitry-error"]
        assert "tasks.retry.200ms" in reason
        assert "rabbitry apply" in reason
        assert "RuntimeError: flaky" in reason
        assert headers["x-rabbitry-attempts"] == 1

    _run(body)
    assert calls == [1]


def test_headers_that_leave_no_room_for_the_retry_headers_reject_it_once(
    vhost: Vhost, contract: Contract
) -> None:
    """A copy's content header must fit in one frame (a larger one makes the broker close the
    connection, and the message would come back for ever): when the message's own headers
    leave room for neither the retry copy nor the dead-letter copy, it is rejected, so the
    broker dead-letters the original, once."""
    body = b'{"n": 9}'
    bare = len(
        raw_header(len(body), spec.Basic.Properties(message_type="Task", headers={"pad": ""}))
    )
    pad = "x" * (131072 - 8 - bare - 120)  # it fits with 120 bytes to spare: not enough
    calls: list[int] = []

    async def broken(delivery: Delivery[Any]) -> None:
        calls.append(delivery.attempt)
        raise RuntimeError("a reason longer than the room left " + "." * 400)

    async def body_() -> None:
        worker, boss = await _worker(vhost, contract, broken)
        try:
            await raw_publish(
                vhost.amqp_url,
                "work",
                "task",
                [(body, {"message_type": "Task", "headers": {"pad": pad}})],
            )
            [dead] = await drain(vhost.amqp_url, "dead", 1)
            await asyncio.sleep(0.8)  # past every delay: nothing more comes
            assert worker.is_connected
        finally:
            await _close(worker, boss)
        headers = dead.header.properties.headers
        assert "x-rabbitry-error" not in headers
        assert [(str(d["queue"]), str(d["reason"])) for d in headers["x-death"]] == [
            ("tasks", "rejected")
        ]
        for name in ("dead", "tasks", "tasks.retry.200ms", "tasks.retry.400ms"):
            assert await depth(vhost.amqp_url, name) == 0, name

    _run(body_)
    assert calls == [1]


def test_a_reason_too_long_for_the_frame_is_shortened_in_the_retry(
    vhost: Vhost, contract: Contract
) -> None:
    """With 600 bytes to spare the full reason (2,000 characters) does not fit, the short one
    (200) does: the message is retried with it rather than dead-lettered."""
    body = b'{"n": 10}'
    bare = len(
        raw_header(len(body), spec.Basic.Properties(message_type="Task", headers={"pad": ""}))
    )
    pad = "x" * (131072 - 8 - bare - 600)
    reasons: list[Any] = []

    async def flaky(delivery: Delivery[Any]) -> None:
        reasons.append(delivery.headers.get("x-rabbitry-error"))
        if delivery.attempt == 1:
            raise RuntimeError("long " + "." * 3000)

    async def body_() -> None:
        worker, boss = await _worker(vhost, contract, flaky)
        try:
            await raw_publish(
                vhost.amqp_url,
                "work",
                "task",
                [(body, {"message_type": "Task", "headers": {"pad": pad}})],
            )
            await until(lambda: len(reasons) == 2, 10, "for the second try")
        finally:
            await _close(worker, boss)
        assert await depth(vhost.amqp_url, "dead") == 0

    _run(body_)
    assert reasons[0] is None
    assert reasons[1].startswith("RuntimeError: long ...")
    assert len(reasons[1]) == 200


def test_the_attempt_header_is_read_leniently() -> None:
    assert attempt_of(None) == 1
    assert attempt_of({}) == 1
    assert attempt_of({"x-rabbitry-attempt": 3}) == 3
    for bad in ("2", b"2", -1, 0, True, 2.0, None, [2]):
        assert attempt_of({"x-rabbitry-attempt": bad}) == 1, bad


_HOSTILE = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=20),
    st.booleans(),
)


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@example(value="2")
@example(value=-5)
@example(value=2**62)
@example(value=2)
@given(value=_HOSTILE)
def test_no_attempt_header_makes_a_message_loop_or_a_consumer_fail(
    vhost: Vhost, contract: Contract, value: Any
) -> None:
    first = min(attempt_of({"x-rabbitry-attempt": value}), 3)
    calls: list[int] = []

    async def broken(delivery: Delivery[Any]) -> None:
        calls.append(delivery.attempt)
        raise RuntimeError("always")

    async def body() -> None:
        worker, boss = await _worker(vhost, contract, broken)
        try:
            await raw_publish(
                vhost.amqp_url,
                "work",
                "task",
                [(b'{"n": 5}', {"message_type": "Task", "headers": {"x-rabbitry-attempt": value}})],
            )
            [dead] = await drain(vhost.amqp_url, "dead", 1)
            await asyncio.sleep(0.1)
            assert worker.is_connected
        finally:
            await _close(worker, boss)
        assert dead.header.properties.headers["x-rabbitry-attempts"] == 3

    _run(body)
    assert calls == list(range(first, 4))


def test_retries_are_counted_by_attempt_and_dead_letters_by_reason(
    vhost: Vhost, contract: Contract
) -> None:
    reader = InMemoryMetricReader()
    _telemetry.configure(meter_provider=MeterProvider(metric_readers=[reader]))

    async def handler(delivery: Delivery[Any]) -> None:
        if delivery.body["n"] == 0:
            raise DeadLetter("zero")
        raise RuntimeError("again")

    async def body() -> None:
        worker, boss = await _worker(vhost, contract, handler)
        try:
            await boss.publish("Task", {"n": 0})
            await boss.publish("Task", {"n": 1})
            await drain(vhost.amqp_url, "dead", 2)
        finally:
            await _close(worker, boss)

    try:
        _run(body)
        data = reader.get_metrics_data()
    finally:
        _telemetry.configure()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    retries = {
        p.attributes["rabbitry.attempt"]: p.value for p in points["rabbitry.messaging.retries"]
    }
    assert retries == {2: 1, 3: 1}
    reasons = {
        p.attributes["rabbitry.dead_letter.reason"]: p.value
        for p in points["rabbitry.messaging.dead_lettered"]
    }
    assert reasons == {"refused": 1, "handler": 1}


GOOD = """
from rabbitry_retry import TasksDelivery, Worker


async def handle(delivery: TasksDelivery) -> None:
    tries: int = delivery.attempt
    print(tries)


def serve(worker: Worker) -> None:
    worker.consume_tasks(handle)
"""
BAD = """
from rabbitry_retry import TasksDelivery


async def handle(delivery: TasksDelivery) -> None:
    tries: str = delivery.attempt  # E
    print(tries)
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("retry")
    generate_package(write_spec(folder, SPEC, SCHEMAS), folder / "rabbitry_retry")
    return folder


def test_a_generated_delivery_exposes_its_attempt_typed(package: Path) -> None:
    user = package / "user"
    user.mkdir(exist_ok=True)
    expected = set()
    for name, text in (("good.py", GOOD), ("bad.py", BAD)):
        lines = text.lstrip().splitlines()
        (user / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        expected |= {(name, n) for n, line in enumerate(lines, 1) if line.endswith("# E")}
    errors = mypy_errors(
        [package / "rabbitry_retry", user / "good.py", user / "bad.py"],
        search=[package],
        cache=CACHE,
    )
    assert {(name, line) for name, line, _ in errors} == expected, errors


def test_the_generated_client_retries_through_the_retry_queues(vhost: Vhost, package: Path) -> None:
    with imported(package, "rabbitry_retry") as generated:
        apply(vhost, package / "topology.yaml")
        assert generated.CONTRACT.queue("tasks").retry == (
            (200, "tasks.retry.200ms"),
            (400, "tasks.retry.400ms"),
        )
        attempts: list[int] = []

        async def once(delivery: Any) -> None:
            attempts.append(delivery.attempt)
            if delivery.attempt == 1:
                raise RuntimeError("first try fails")

        async def body() -> None:
            async with (
                generated.Worker(vhost.amqp_url) as worker,
                generated.Boss(vhost.amqp_url) as boss,
            ):
                await worker.consume_tasks(once).ready()
                await boss.publish_task({"n": 6})
                await until(lambda: len(attempts) == 2, 10, "for the second try")

        _run(body)
        assert attempts == [1, 2]


def test_a_connection_lost_while_the_retry_copy_is_sent_loses_nothing(
    vhost: Vhost, contract: Contract
) -> None:
    """The handler fails and, before the consumer can send the retry copy, the broker closes
    every connection of the vhost (caused, not simulated): the message is neither
    dead-lettered nor dropped, and it comes back to the consumer, which reconnected by
    itself, for a try that succeeds.  (Which settlement the consumer picks matters little
    here: the channel is gone, so the broker's own redelivery is what keeps the message.)"""
    calls: list[tuple[int, bool]] = []

    async def cut_then_fail(delivery: Delivery[Any]) -> None:
        calls.append((delivery.attempt, delivery.redelivered))
        if len(calls) == 1:
            await asyncio.to_thread(close_connections, vhost)
            raise RuntimeError("the disk went away with the connection")

    async def body() -> None:
        worker, boss = await _worker(vhost, contract, cut_then_fail)
        try:
            await boss.publish("Task", {"n": 5})
            await until(lambda: len(calls) >= 2, 30, "for the try after the cut")
            await asyncio.sleep(0.8)  # a copy in a retry queue would be back by now
        finally:
            await _close(worker, boss)
        assert await depth(vhost.amqp_url, "dead") == 0
        for name in ("tasks", "tasks.retry.200ms", "tasks.retry.400ms"):
            assert await depth(vhost.amqp_url, name) == 0, name

    _run(body)
    # The copy could not be sent on the closed connection, so the broker gave the original
    # back (redelivered, the same try again) to the consumer once it had reconnected.
    assert calls == [(1, False), (1, True)]
