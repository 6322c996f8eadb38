"""Consumers and publishers when the topology changes under them, on the real broker.

A queue is replaced the way ``apply --allow-data-loss`` does it (delete, then
declare with other arguments or another type, pipelined on one channel), or
through ``converge.apply`` itself; deleted and declared again later; an
exchange is deleted and declared again (which drops its bindings; an
exclusive queue and its bindings cannot be deleted from another connection,
not even through the management API: "cannot obtain exclusive access").
Each test then
publishes and sees the message handled, and prints how long that took after
the queue (or exchange) was back (``pytest -s`` shows the figures).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiormq
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from amqp import AT, start, until
from broker import Vhost
from rabbitry.broker import converge
from rabbitry.broker.url import parse_url
from rabbitry.check import load_spec
from rabbitry.errors import NotFound, Unroutable
from rabbitry.messaging._reattach import FIRST_REPORT, Absence, ReattachPolicy
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract
from specs import FLAGSHIP, copy_flagship

QUORUM = {"x-queue-type": "quorum", "x-dead-letter-exchange": "jobs.dead", "x-delivery-limit": 5}
CLASSIC = {"x-queue-type": "classic", "x-dead-letter-exchange": "jobs.dead"}
#: The replacement differs from the original (as a replace by ``apply`` does).
OTHER = {"x-message-ttl": 600_000}
#: Short, so that the tests are quick; the defaults are 15 s and 300 s.
IDLE_CHECK = 1.0


async def replace(url: str, arguments: Mapping[str, Any], queue: str = "jobs.ready") -> None:
    """Delete ``queue`` and declare it with ``arguments`` at once, on one channel (as apply
    does), then bind it to jobs.new again."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await channel.queue_declare(queue, durable=True, arguments=dict(arguments))
        await channel.queue_bind(queue, "jobs.new", routing_key="job.#")
    finally:
        await connection.close()


async def delete_queue(url: str, queue: str = "jobs.ready") -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue)
    finally:
        await connection.close()


def report(what: str, seconds: float) -> None:
    print(f"\n[reattach] {what}: {seconds * 1000:.0f} ms", flush=True)


def warnings(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# -- what the broker does (the facts the runtime is built on) -------------------------------


@pytest.mark.parametrize("kind", ["classic", "quorum"])
def test_the_broker_cancels_only_a_classic_consumer_when_its_queue_is_replaced(
    vhost: Vhost, kind: str
) -> None:
    """RabbitMQ 3.10: a classic queue's consumer gets basic.cancel; a quorum queue deleted and
    declared again at once leaves its consumer without a cancel, counted by the new queue and
    given nothing.  If this starts failing, the broker changed: revisit ``_reattach``."""
    arguments = {"x-queue-type": kind}

    async def body() -> None:
        connection = await aiormq.connect(vhost.amqp_url)
        admin = await connection.channel()
        await admin.queue_declare("q", durable=True, arguments=arguments)
        channel = await connection.channel()
        cancels: list[Any] = []
        got: list[Any] = []
        channel.on_consumer_cancel_callbacks.add(cancels.append)

        async def deliver(message: Any) -> None:
            got.append(message)

        await channel.basic_consume("q", deliver)
        await admin.queue_delete("q")
        await admin.queue_declare("q", durable=True, arguments={**arguments, **OTHER})
        await admin.basic_publish(b"after", routing_key="q")
        await asyncio.sleep(1.5)
        ok = await admin.queue_declare("q", passive=True)
        if kind == "classic":
            assert len(cancels) == 1
            assert ok.consumer_count == 0
            assert ok.message_count == 1  # waiting for a consumer
        else:
            assert cancels == []  # no word from the broker
            assert ok.consumer_count == 1  # the lost consumer is counted ...
            assert ok.message_count == 0  # ... the message checked out to it ...
            assert got == []  # ... and never delivered
            await channel.close()  # closing its channel frees it
            await asyncio.sleep(0.3)
            assert (await admin.queue_declare("q", passive=True)).message_count == 1
        await connection.close()

    asyncio.run(body())


# -- consumers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (CLASSIC, {**CLASSIC, **OTHER}),
        (QUORUM, {**QUORUM, **OTHER}),
        (CLASSIC, QUORUM),
        (QUORUM, CLASSIC),
    ],
    ids=["classic", "quorum", "classic-to-quorum", "quorum-to-classic"],
)
def test_a_consumer_comes_back_after_its_queue_is_replaced(
    jobs: Vhost,
    contract: Contract,
    caplog: pytest.LogCaptureFixture,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
) -> None:
    caplog.set_level(logging.INFO, logger="rabbitry.messaging")

    async def body() -> None:
        await replace(jobs.amqp_url, before)
        got: list[str] = []

        async def handler(delivery: Delivery[Any]) -> None:
            got.append(delivery.body["job_id"])

        server = Client(contract, jobs.amqp_url, service="server")
        worker = Client(contract, jobs.amqp_url, service="worker", idle_check=IDLE_CHECK)
        async with server, worker:
            consumer = worker.consume("jobs.ready", handler)
            await consumer.ready()
            first = start()
            await server.publish("Start", first)
            await until(lambda: got == [first["job_id"]], 20, what="for the first message")
            await replace(jobs.amqp_url, after)
            back = time.monotonic()
            second = start()
            await server.publish("Start", second)
            await until(
                lambda: second["job_id"] in got, 20, what="for the message after the replace"
            )
            taken = time.monotonic() - back
            assert got == [first["job_id"], second["job_id"]]
            # A delivery on the new channel may be handled a moment before the
            # consume-ok is: ``consuming`` turns true right after.
            await until(lambda: consumer.consuming, timeout=2, what="for consuming")
            assert consumer.failure is None
            await consumer.cancel()
        report(f"replace {before['x-queue-type']} -> {after['x-queue-type']}: handled", taken)
        said = warnings(caplog)
        if before["x-queue-type"] == "classic":
            assert "cancelled the consumer of queue 'jobs.ready'" in said
            assert "consuming from queue 'jobs.ready' again" in said
            assert taken < IDLE_CHECK  # the cancel, not the idle check, brought it back

    asyncio.run(body())


def test_a_consumer_comes_back_after_apply_replaces_its_queue(
    vhost: Vhost, contract: Contract, tmp_path: Any
) -> None:
    """``apply --allow-data-loss`` replaces jobs.ready (quorum -> classic) under a consumer."""
    spec_path = copy_flagship(tmp_path)
    data = yaml.safe_load(spec_path.read_text())
    ready = data["queues"]["jobs.ready"]
    assert ready.pop("type") == "quorum"
    ready.pop("delivery_limit", None)  # quorum only
    data.pop("policies", None)  # not needed here; nothing is pruned
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
    url = parse_url(vhost.amqp_url)

    async def body() -> None:
        await converge.apply(load_spec(FLAGSHIP), url, timeout=10)
        got: list[str] = []

        async def handler(delivery: Delivery[Any]) -> None:
            got.append(delivery.body["job_id"])

        server = Client(contract, vhost.amqp_url, service="server")
        worker = Client(contract, vhost.amqp_url, service="worker", idle_check=IDLE_CHECK)
        async with server, worker:
            consumer = worker.consume("jobs.ready", handler)
            await consumer.ready()
            await converge.apply(load_spec(spec_path), url, allow_data_loss=True, timeout=10)
            back = time.monotonic()
            [queue] = [q for q in vhost.queues() if q["name"] == "jobs.ready"]
            assert queue["type"] == "classic"  # it was replaced
            job = start()
            await server.publish("Start", job)
            await until(lambda: got == [job["job_id"]], 20, what="for the message after apply")
            taken = time.monotonic() - back
            await until(lambda: consumer.consuming, timeout=2, what="for consuming")
        report("apply --allow-data-loss quorum -> classic: handled", taken)

    asyncio.run(body())


def test_a_consumer_waits_for_its_deleted_queue_and_comes_back(
    jobs: Vhost, contract: Contract, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rabbitry.messaging")

    async def body() -> None:
        got: list[str] = []

        async def handler(delivery: Delivery[Any]) -> None:
            got.append(delivery.body["job_id"])

        server = Client(contract, jobs.amqp_url, service="server")
        worker = Client(contract, jobs.amqp_url, service="worker", idle_check=IDLE_CHECK)
        async with server, worker:
            consumer = worker.consume("jobs.ready", handler)
            await consumer.ready()
            assert consumer.consuming
            assert consumer.gone_since is None
            await delete_queue(jobs.amqp_url)
            await until(lambda: not consumer.consuming, 20, what="for the consumer to see it go")
            await asyncio.sleep(3)  # gone for a while: several attempts fail
            assert not consumer.consuming
            assert consumer.gone_since is not None
            assert consumer.failure is None
            await replace(jobs.amqp_url, QUORUM)
            back = time.monotonic()
            await until(lambda: consumer.consuming, 20, what="for the consumer to come back")
            attached = time.monotonic() - back
            job = start()
            await server.publish("Start", job)
            await until(lambda: got == [job["job_id"]], 20, what="for the message")
            taken = time.monotonic() - back
        report("queue declared again after 3 s: consuming", attached)
        report("queue declared again after 3 s: handled", taken)
        assert attached < 6  # within the backoff's cap (5 s)
        said = warnings(caplog)
        assert "the queue was deleted or replaced; consuming again as soon as it exists" in said
        assert "consuming from queue 'jobs.ready' again" in said

    asyncio.run(body())


def test_a_consumer_whose_queue_stays_gone_fails_after_reattach_timeout(
    jobs: Vhost, contract: Contract
) -> None:
    async def body() -> None:
        async def handler(delivery: Delivery[Any]) -> None:
            return None

        async with Client(contract, jobs.amqp_url, service="worker", reattach_timeout=1.5) as w:
            consumer = w.consume("jobs.ready", handler)
            await consumer.ready()
            began = time.monotonic()
            await delete_queue(jobs.amqp_url)
            with pytest.raises(NotFound, match="reattach_timeout") as gone:
                await asyncio.wait_for(consumer.wait(), 15)
            took = time.monotonic() - began
            assert "jobs.ready" in str(gone.value)
            assert "rabbitry apply" in str(gone.value)
            assert consumer.failure is not None
            assert not consumer.consuming
        report("queue never back, reattach_timeout 1.5 s: failed after", took)
        assert 1.4 < took < 8

    asyncio.run(body())


@pytest.mark.parametrize("kind", ["classic", "quorum"])
def test_a_handler_running_when_the_queue_is_replaced_finishes(
    jobs: Vhost, contract: Contract, kind: str
) -> None:
    """A handler running when its queue is replaced finishes.  Classic: the cancel comes, and
    the consumer takes new work meanwhile, within its prefetch (2: one held, one more).
    Quorum: no cancel, so the consumer is renewed once it has nothing in hand (a renewal while
    a handler runs would exceed the prefetch): new work waits for the running handler."""
    arguments = CLASSIC if kind == "classic" else QUORUM

    async def body() -> None:
        await replace(jobs.amqp_url, arguments)
        release = asyncio.Event()
        finished: list[str] = []
        running = 0
        most = 0

        async def handler(delivery: Delivery[Any]) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                if delivery.body["steps"] == 99:
                    await release.wait()
                else:
                    await asyncio.sleep(0.2)
                finished.append(delivery.body["job_id"])
            finally:
                running -= 1

        server = Client(contract, jobs.amqp_url, service="server")
        worker = Client(
            contract, jobs.amqp_url, service="worker", idle_check=IDLE_CHECK, prefetch=2
        )
        async with server, worker:
            consumer = worker.consume("jobs.ready", handler)
            await consumer.ready()
            slow = {**start(), "steps": 99}
            await server.publish("Start", slow)
            await until(lambda: running == 1, 20, what="for the slow handler to start")
            await replace(jobs.amqp_url, {**arguments, **OTHER})
            quick = [start() for _ in range(4)]
            for job in quick:
                await server.publish("Start", job)
            if kind == "classic":
                await until(lambda: len(finished) == 4, 20, what="for new work while one runs")
                assert slow["job_id"] not in finished
                release.set()
            else:
                await asyncio.sleep(2 * IDLE_CHECK)
                assert finished == []  # stuck until the running handler is done
                release.set()
            await until(lambda: len(finished) == 5, 20, what="for every handler")
            assert most <= 2  # never more than the prefetch at once
            await until(lambda: consumer.consuming, timeout=2, what="for consuming")

    asyncio.run(body())


# -- subscriptions ---------------------------------------------------------------------------


def test_a_subscription_gets_its_lost_binding_back(
    jobs: Vhost, contract: Contract, caplog: pytest.LogCaptureFixture
) -> None:
    """jobs.status deleted and declared again (its bindings go with it): the subscription
    binds again within ``idle_check`` and receives what is published after."""
    job_id = str(uuid.uuid4())
    hello = {"job_id": job_id, "worker": "w", "started_at": AT}

    async def body() -> None:
        server = Client(contract, jobs.amqp_url, service="server", idle_check=IDLE_CHECK)
        worker = Client(contract, jobs.amqp_url, service="worker")
        async with server, worker, server.subscribe("job-status", job_id=job_id) as status:
            await worker.publish("StartSuccess", hello)
            first = await asyncio.wait_for(status.__anext__(), 10)
            assert first.body == hello
            connection = await aiormq.connect(jobs.amqp_url)
            channel = await connection.channel()
            await channel.exchange_delete("jobs.status")
            await channel.exchange_declare("jobs.status", exchange_type="topic", durable=True)
            await connection.close()
            back = time.monotonic()
            with pytest.raises(Unroutable):  # the binding is lost
                await worker.publish("StartSuccess", hello)
            while True:
                try:
                    await worker.publish("StartSuccess", hello)
                    break
                except Unroutable:
                    assert time.monotonic() - back < 10, "the binding did not come back"
                    await asyncio.sleep(0.05)
            again = await asyncio.wait_for(status.__anext__(), 10)
            taken = time.monotonic() - back
            assert again.body == hello
        report("exchange declared again: subscription bound and received", taken)

    asyncio.run(body())


def test_a_subscription_waits_for_a_missing_exchange(jobs: Vhost, contract: Contract) -> None:
    """jobs.status deleted: re-binding fails, so the subscription counts as gone (not
    consuming) until the exchange is back; then it receives again."""
    job_id = str(uuid.uuid4())
    hello = {"job_id": job_id, "worker": "w", "started_at": AT}

    async def body() -> None:
        server = Client(contract, jobs.amqp_url, service="server", idle_check=IDLE_CHECK)
        worker = Client(contract, jobs.amqp_url, service="worker")
        async with server, worker, server.subscribe("job-status", job_id=job_id) as status:
            name = status.name
            connection = await aiormq.connect(jobs.amqp_url)
            channel = await connection.channel()
            await channel.exchange_delete("jobs.status")
            await until(lambda: not status.consuming, 20, what="for the subscription to see it")
            await asyncio.sleep(1)
            assert status.gone_since is not None
            assert status.failure is None
            await channel.exchange_declare("jobs.status", exchange_type="topic", durable=True)
            await connection.close()
            back = time.monotonic()
            await until(lambda: status.consuming, 20, what="for the subscription to come back")
            report("exchange back: subscription consuming again", time.monotonic() - back)
            assert status.name == name  # the same queue, kept
            await worker.publish("StartSuccess", hello)
            got = await asyncio.wait_for(status.__anext__(), 10)
            assert got.body == hello

    asyncio.run(body())


# -- publishers ------------------------------------------------------------------------------


def test_a_publisher_publishes_once_a_missing_exchange_exists(
    jobs: Vhost, contract: Contract
) -> None:
    async def body() -> None:
        connection = await aiormq.connect(jobs.amqp_url)
        channel = await connection.channel()
        await channel.exchange_delete("jobs.new")
        async with Client(contract, jobs.amqp_url, service="server") as server:
            for _ in range(2):  # missing each time it is tried
                with pytest.raises(NotFound) as missing:
                    await server.publish("Start", start())
                assert "exchange 'jobs.new' does not exist now" in str(missing.value)
                assert "rabbitry apply" in str(missing.value)
            await channel.exchange_declare("jobs.new", exchange_type="topic", durable=True)
            await channel.queue_bind("jobs.ready", "jobs.new", routing_key="job.#")
            await server.publish("Start", start())  # the same client, now it exists
            ok = await channel.queue_declare("jobs.ready", passive=True)
            assert ok.message_count == 1
        await connection.close()

    asyncio.run(body())


# -- the waiting's schedule --------------------------------------------------------------------


@given(
    timeout=st.none() | st.floats(min_value=0, max_value=1e6),
    times=st.lists(st.floats(min_value=0, max_value=1e5), max_size=40),
)
def test_an_absence_reports_at_doubling_intervals_and_ends_at_its_timeout(
    timeout: float | None, times: list[float]
) -> None:
    absence = Absence(ReattachPolicy(timeout=timeout), now=0.0)
    reported: list[float] = []
    for now in sorted(times):
        if absence.report_due(now):
            reported.append(now)
        remaining = absence.remaining(now)
        assert remaining is None if timeout is None else remaining == timeout - now
    # at most one report per doubling: after 10, 20, 40, ... s
    for k, at in enumerate(reported):
        assert at >= FIRST_REPORT * 2**k
    assert len(reported) <= len(times)


# -- the example worker ------------------------------------------------------------------------


def test_the_example_worker_exits_1_when_its_queue_stays_gone(jobs: Vhost) -> None:
    """examples/jobs/worker.py: never up and idle; the supervisor sees exit status 1."""
    worker = Path(__file__).resolve().parent.parent / "examples" / "jobs" / "worker.py"

    async def body() -> tuple[int, str, float]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(worker),
            "--url",
            jobs.amqp_url,
            "--name",
            "w-test",
            "--reattach-timeout",
            "2",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert b"waiting for jobs" in line
        await delete_queue(jobs.amqp_url)
        began = time.monotonic()
        rest = await asyncio.wait_for(process.stdout.read(), 30)
        code = await process.wait()
        return code, rest.decode(), time.monotonic() - began

    code, out, took = asyncio.run(body())
    assert code == 1, out
    assert "cancelled the consumer of queue 'jobs.ready'" in out  # the runtime's log line
    assert "w-test: stopped:" in out
    assert "reattach_timeout" in out
    report("example worker, queue gone, --reattach-timeout 2: exited 1 after", took)
