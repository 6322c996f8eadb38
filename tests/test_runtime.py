"""The messaging runtime against the real broker: publish, consume, dead-letter, subscribe.

Each test gets a fresh vhost with the flagship topology (or a tiny spec of its
own) applied by ``converge.apply``, and runs its async body with
``asyncio.run``.  What reached a queue is read back raw (aiormq ``basic_get``
and passive declares), not through the code under test.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiormq
import pytest

from amqp import AT, apply, depth, drain, raw_publish, start, until
from broker import Vhost
from rabbitry.errors import (
    ContractViolation,
    InvalidArgument,
    NotFound,
    PublishManyFailed,
    PublishNacked,
    PublishTimeout,
    Unroutable,
)
from rabbitry.messaging._decode import MAX_BODY
from rabbitry.messaging._xdeath import rabbitry_reason
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract
from specs import object_schema, write_spec


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


# -- publishing ------------------------------------------------------------------


def test_invalid_publish_raises_with_the_path_and_sends_nothing(
    jobs: Vhost, contract: Contract
) -> None:
    async def body() -> None:
        async with Client(contract, jobs.amqp_url, service="server") as client:
            with pytest.raises(ContractViolation) as wrong_type:
                await client.publish("Start", start(steps="three"))
            assert wrong_type.value.path == "/steps"
            assert "/steps" in str(wrong_type.value)
            bad = start()
            del bad["job_type"]
            with pytest.raises(ContractViolation) as missing:
                await client.publish("Start", bad)
            assert "job_type" in str(missing.value)
            with pytest.raises(ContractViolation) as dotted:
                await client.publish("Stop", {"job_id": "a.b", "requested_at": AT})
            assert dotted.value.path == "/job_id"
            with pytest.raises(ContractViolation) as many:
                await client.publish_many([("Start", start()), ("Start", start(steps=0))])
            assert many.value.index == 1
            assert many.value.path == "/steps"
            with pytest.raises(InvalidArgument, match="does not publish Update"):
                await client.publish("Update", {})
            await client.publish("Start", start())  # the one message that may arrive
        assert await depth(jobs.amqp_url, "jobs.ready") == 1

    run(body)


def test_a_body_over_what_consumers_accept_is_refused_before_sending(
    jobs: Vhost, contract: Contract
) -> None:
    """Consumers dead-letter a body over MAX_BODY; the broker (128 MiB) would confirm it."""

    async def body() -> None:
        async with Client(contract, jobs.amqp_url, service="server") as client:
            pad = "x" * MAX_BODY
            with pytest.raises(ContractViolation) as too_big:
                await client.publish("Start", start(parameters={"pad": pad}))
            assert str(MAX_BODY) in str(too_big.value)
            assert too_big.value.path == ""
            with pytest.raises(ContractViolation) as many:
                await client.publish_many(
                    [("Start", start()), ("Start", start(parameters={"pad": pad}))]
                )
            assert many.value.index == 1
            await client.publish("Start", start(parameters={"pad": pad[: MAX_BODY // 2]}))
            # what consumers refuse as not JSON between programs: refused here, located
            for value, why in ((float("inf"), "finite"), ("\ud800", "lone surrogate")):
                with pytest.raises(ContractViolation) as unfit:
                    await client.publish("Start", start(parameters={"x": [1, value]}))
                assert unfit.value.path == "/parameters/x/1"
                assert why in unfit.value.reason
        assert await depth(jobs.amqp_url, "jobs.ready") == 1

    run(body)


def test_published_message_has_the_contract_properties(jobs: Vhost, contract: Contract) -> None:
    async def body() -> None:
        payload = start("build", parameters={"é": [1, 2]})
        async with Client(contract, jobs.amqp_url, service="server") as client:
            await client.publish("Start", payload)
        [message] = await drain(jobs.amqp_url, "jobs.ready", 1)
        properties = message.header.properties
        assert message.delivery.routing_key == "job.build"
        assert message.delivery.exchange == "jobs.new"
        assert properties.message_type == "Start"
        assert properties.content_type == "application/json"
        assert properties.delivery_mode == 2  # jobs.ready is durable
        assert properties.app_id == "server"
        assert len(properties.message_id) == 32
        assert uuid.UUID(properties.message_id).version == 4
        assert properties.timestamp is not None
        assert json.loads(message.body) == payload

    run(body)


def test_publish_many_of_1000_arrives_complete(jobs: Vhost, contract: Contract) -> None:
    async def body() -> None:
        async with Client(contract, jobs.amqp_url) as client:
            await client.publish_many(("Start", start(steps=i + 1)) for i in range(1000))
        messages = await drain(jobs.amqp_url, "jobs.ready", 1000)
        assert len(messages) == 1000
        assert len({m.header.properties.message_id for m in messages}) == 1000
        assert sorted(json.loads(m.body)["steps"] for m in messages) == list(range(1, 1001))

    run(body)


TINY = """
version: 1
exchanges:
  pings: {type: topic}
  full: {type: direct}
  ghost: {type: direct}
queues:
  pings.q: {}
  full.q: {max_length: 1, overflow: reject-publish}
  ghost.q: {}
bindings:
  - {from: pings, queue: pings.q, key: "ping.yes"}
  - {from: full, queue: full.q, key: "full"}
  - {from: ghost, queue: ghost.q, key: "boo"}
messages:
  Ping: {schema: schemas/ping.json, exchange: pings, routing_key: "ping.{key}"}
  Fill: {schema: schemas/ping.json, exchange: full, routing_key: "full"}
  Boo: {schema: schemas/ping.json, exchange: ghost, routing_key: "boo"}
services:
  app:
    publishes: [Ping, Fill, Boo]
    consumes: {pings.q: [Ping]}
"""
PING = object_schema({"n": {"type": "integer"}, "key": {"type": "string"}}, ["n", "key"])


def test_unroutable_nacked_and_missing_exchange_raise(vhost: Vhost, tmp_path: Path) -> None:
    contract = apply(vhost, write_spec(tmp_path, TINY, {"schemas/ping.json": PING}))

    async def body() -> None:
        connection = await aiormq.connect(vhost.amqp_url)
        channel = await connection.channel()
        await channel.exchange_delete("ghost")
        await connection.close()
        async with Client(contract, vhost.amqp_url, service="app") as client:
            await client.publish("Ping", {"n": 1, "key": "yes"})
            with pytest.raises(Unroutable) as returned:
                await client.publish("Ping", {"n": 2, "key": "no"})
            assert returned.value.message_name == "Ping"
            assert returned.value.message_id is not None
            assert returned.value.index is None  # a single publish has no index
            assert "ping.no" in str(returned.value)
            await client.publish("Fill", {"n": 1, "key": "x"})
            with pytest.raises(PublishNacked):
                await client.publish("Fill", {"n": 2, "key": "x"})
            with pytest.raises(NotFound, match="ghost"):
                await client.publish("Boo", {"n": 1, "key": "x"})
            # publish_many: every failure is reported by index, the rest delivered
            with pytest.raises(PublishManyFailed) as many:
                await client.publish_many(
                    [("Ping", {"n": i, "key": "yes" if i % 2 else "no"}) for i in range(6)]
                )
            failures = many.value.failures
            assert list(failures) == [0, 2, 4]
            assert all(isinstance(f, Unroutable) for f in failures.values())
            assert [f.index for f in failures.values()] == [0, 2, 4]  # type: ignore[attr-defined]
            assert "3 of 6 messages were not delivered (items 0, 2, 4)" in str(many.value)
            await client.publish("Ping", {"n": 3, "key": "yes"})  # the client still works
        assert await depth(vhost.amqp_url, "pings.q") == 5
        assert await depth(vhost.amqp_url, "full.q") == 1

    run(body)


def test_a_confirm_that_never_comes_is_an_unknown_outcome(jobs: Vhost, contract: Contract) -> None:
    async def body() -> None:
        async with Client(contract, jobs.amqp_url, service="server") as client:
            await client.publish("Start", start())
            channel = client._publisher._line.channel  # type: ignore[union-attr]
            channel.publisher_confirms = False  # aiormq now ignores the broker's acks
            with pytest.raises(PublishTimeout) as timed_out:
                await client.publish("Start", start(), timeout=0.5)
            assert timed_out.value.sent
            assert "UNKNOWN" in str(timed_out.value)
            channel.publisher_confirms = True
        # it did arrive: "unknown" is not "lost", and never "sent" either
        assert await depth(jobs.amqp_url, "jobs.ready") == 2

    run(body)


# -- consuming -------------------------------------------------------------------


def test_worker_receives_a_valid_start(jobs: Vhost, contract: Contract) -> None:
    async def body() -> None:
        payload = start()
        got: list[Delivery[Any]] = []

        async def handler(delivery: Delivery[Any]) -> None:
            got.append(delivery)

        async with (
            Client(contract, jobs.amqp_url, service="server") as server,
            Client(contract, jobs.amqp_url, service="worker") as worker,
        ):
            consumer = worker.consume("jobs.ready", handler)
            await consumer.ready()
            await server.publish("Start", payload)
            await until(lambda: len(got) == 1, 10)
            await consumer.cancel()
        [delivery] = got
        assert delivery.type == "Start"
        assert delivery.body == payload
        assert delivery.exchange == "jobs.new"
        assert delivery.routing_key == "job.render"
        assert delivery.message_id is not None
        assert delivery.timestamp is not None
        assert await depth(jobs.amqp_url, "jobs.ready") == 0  # acked

    run(body)


def test_a_consumer_whose_channel_closes_consumes_again(jobs: Vhost, contract: Contract) -> None:
    async def body() -> None:
        got: list[Delivery[Any]] = []

        async def handler(delivery: Delivery[Any]) -> None:
            got.append(delivery)

        async with Client(contract, jobs.amqp_url, service="worker") as worker:
            consumer = worker.consume("jobs.ready", handler)
            await consumer.ready()
            await consumer._channel.close()  # the channel alone goes; the connection stays
            async with Client(contract, jobs.amqp_url, service="server") as server:
                await server.publish("Start", start())
            await until(lambda: len(got) == 1, 10)
            assert consumer.failure is None

    run(body)


def test_consume_refuses_unknown_and_runtime_queues(jobs: Vhost, contract: Contract) -> None:
    async def body() -> None:
        async with Client(contract, jobs.amqp_url, service="worker") as worker:
            with pytest.raises(InvalidArgument, match="subscribe"):
                worker.consume("job-control", _ignore)
            with pytest.raises(InvalidArgument, match="does not consume"):
                worker.consume("jobs.dead-letters", _ignore)
            with pytest.raises(InvalidArgument, match="job_id"):
                worker.subscribe("job-control", job=1)

    run(body)


async def _ignore(delivery: Delivery[Any]) -> None:
    return None


def test_malformed_messages_are_dead_lettered_with_their_reason(
    jobs: Vhost, contract: Contract
) -> None:
    good = start("good")
    missing = start()
    del missing["steps"]
    wrong = start(steps="many")
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    cases: list[tuple[bytes, dict[str, Any], str, str]] = [
        (b"{nope", {"message_type": "Start"}, "not JSON", ""),
        (b'{"job_id": NaN}', {"message_type": "Start"}, "NaN", ""),
        (b'{"steps": Infinity}', {"message_type": "Start"}, "Infinity", ""),
        (b"\xff\xfe{}", {"message_type": "Start"}, "not UTF-8", ""),
        (json.dumps(start()).encode(), {"message_type": "Stop"}, "'Stop' is not a message", ""),
        (json.dumps(start()).encode(), {}, "no `type` property", ""),
        (json.dumps(missing).encode(), {"message_type": "Start"}, "steps", ""),
        (json.dumps(wrong).encode(), {"message_type": "Start"}, "Start /steps", "/steps"),
        (
            json.dumps(start(parameters={"d": deep})).encode(),
            {"message_type": "Start"},
            "nests",
            "",
        ),
        (
            json.dumps(start()).encode(),
            {"message_type": "Start", "content_type": "text/plain"},
            "text/plain",
            "",
        ),
        # the schema leaves parameters free; neither side takes these (issue 11)
        (
            json.dumps(start(parameters={"x": 1})).encode().replace(b'"x": 1', b'"x": 1e400'),
            {"message_type": "Start"},
            "inf is not a finite number",
            "/parameters/x",
        ),
        (
            json.dumps(start(parameters={"x": "\ud800"})).encode(),
            {"message_type": "Start"},
            "lone surrogate",
            "/parameters/x",
        ),
    ]

    async def body() -> None:
        handled: list[Delivery[Any]] = []

        async def handler(delivery: Delivery[Any]) -> None:
            handled.append(delivery)

        async with Client(contract, jobs.amqp_url, service="worker") as worker:
            consumer = worker.consume("jobs.ready", handler)
            await consumer.ready()
            await raw_publish(
                jobs.amqp_url,
                "jobs.new",
                "job.raw",
                [
                    (body, {**props, "message_id": f"m{i}"})
                    for i, (body, props, _, _) in enumerate(cases)
                ],
            )
            await raw_publish(
                jobs.amqp_url,
                "jobs.new",
                "job.good",
                [(json.dumps(good).encode(), {"message_type": "Start"})],
            )
            await until(lambda: len(handled) == 1, 10)
            dead = await drain(jobs.amqp_url, "jobs.dead-letters", len(cases))
            assert consumer.failure is None  # still consuming
            await consumer.cancel()
        assert [d.body for d in handled] == [good]
        assert len(dead) == len(cases)
        by_id = {m.header.properties.message_id: m for m in dead}
        for i, (body_, _, reason, path) in enumerate(cases):
            message = by_id[f"m{i}"]
            headers = message.header.properties.headers
            assert reason in headers["x-rabbitry-error"], (i, headers)
            assert headers["x-rabbitry-path"] == path
            assert headers["x-rabbitry-queue"] == "jobs.ready"
            assert headers["x-rabbitry-exchange"] == "jobs.new"
            assert headers["x-rabbitry-routing-key"] == "job.raw"
            assert message.body == body_  # the original, untouched
            assert message.delivery.routing_key == "job.raw"
        assert await depth(jobs.amqp_url, "jobs.ready") == 0

    run(body)


def test_a_dead_letter_keeps_the_message_id_and_lists_every_fault(
    jobs: Vhost, contract: Contract
) -> None:
    """The copy's ``message_id`` is the original's (a log line and its dead letter match), and
    ``x-rabbitry-errors`` lists every fault, the first one also in ``x-rabbitry-error``/-path."""
    bad = {"job_id": 1, "job_type": "X.Y", "steps": 0, "submitted_at": AT}

    async def body() -> None:
        async with Client(contract, jobs.amqp_url, service="worker") as worker:
            consumer = worker.consume("jobs.ready", _ignore)
            await consumer.ready()
            await raw_publish(
                jobs.amqp_url,
                "jobs.new",
                "job.raw",
                [(json.dumps(bad).encode(), {"message_type": "Start", "message_id": "m-77"})],
            )
            [dead] = await drain(jobs.amqp_url, "jobs.dead-letters", 1)
            await consumer.cancel()
        headers = dead.header.properties.headers
        assert dead.header.properties.message_id == "m-77"
        errors = headers["x-rabbitry-errors"]
        assert {e["path"] for e in errors} == {"/job_id", "/job_type", "/steps"}
        assert errors[0]["path"] == headers["x-rabbitry-path"]
        assert errors[0]["message"] in headers["x-rabbitry-error"]
        assert "(and 2 more)" in headers["x-rabbitry-error"]
        reason = rabbitry_reason(headers)
        assert reason is not None
        assert [f.path for f in reason.errors] == [e["path"] for e in errors]

    run(body)


def test_a_failing_handler_is_retried_then_dead_lettered(jobs: Vhost, contract: Contract) -> None:
    async def body() -> None:
        calls: dict[str, int] = {}
        done: list[str] = []

        async def handler(delivery: Delivery[Any]) -> None:
            job_type = delivery.body["job_type"]
            calls[job_type] = calls.get(job_type, 0) + 1
            if job_type == "flaky" and calls[job_type] < 2:
                raise RuntimeError("once")
            if job_type == "broken":
                raise RuntimeError("boom")
            done.append(job_type)

        async with Client(contract, jobs.amqp_url, service="worker") as worker:
            consumer = worker.consume("jobs.ready", handler, prefetch=1)
            async with Client(contract, jobs.amqp_url, service="server") as server:
                for job_type in ("broken", "flaky", "after"):
                    await server.publish("Start", start(job_type))
            await until(lambda: done == ["flaky", "after"], 10)
            await consumer.cancel()
        assert calls == {"broken": 3, "flaky": 2, "after": 1}
        [dead] = await drain(jobs.amqp_url, "jobs.dead-letters", 1)
        error = dead.header.properties.headers["x-rabbitry-error"]
        assert "failed 3 time(s)" in error
        assert "RuntimeError: boom" in error
        assert json.loads(dead.body)["job_type"] == "broken"

    run(body)


def test_cancel_lets_handlers_finish_and_requeues_the_rest(jobs: Vhost, contract: Contract) -> None:
    async def body() -> None:
        started: list[int] = []
        finished: list[int] = []

        async def slow(delivery: Delivery[Any]) -> None:
            started.append(delivery.body["steps"])
            await asyncio.sleep(0.3)
            finished.append(delivery.body["steps"])

        async with Client(contract, jobs.amqp_url, service="server") as server:
            await server.publish_many(("Start", start(steps=i + 1)) for i in range(10))
        async with Client(contract, jobs.amqp_url, service="worker") as worker:
            consumer = worker.consume("jobs.ready", slow, prefetch=3)
            await until(lambda: len(started) == 3, 10)
            await consumer.cancel(timeout=5)
            assert sorted(finished) == sorted(started)  # in-flight handlers finished
        await until_depth(jobs.amqp_url, "jobs.ready", 10 - len(finished))

        async with Client(contract, jobs.amqp_url, service="worker") as worker:
            consumer = worker.consume("jobs.ready", slow, prefetch=3)
            await until(lambda: len(started) >= 4, 10)
            await consumer.cancel(timeout=0.05)  # too short: the rest goes back
        await until_depth(jobs.amqp_url, "jobs.ready", 10 - len(finished))
        assert len(finished) < len(started)

    run(body)


async def until_depth(url: str, queue: str, want: int, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (now := await depth(url, queue)) != want:
        assert asyncio.get_running_loop().time() < deadline, f"{queue}: {now} != {want}"
        await asyncio.sleep(0.05)


# -- run-time queues ---------------------------------------------------------------


def test_subscription_gets_only_its_job_and_is_removed_at_exit(
    jobs: Vhost, contract: Contract
) -> None:
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())

    def status(job_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            ("StartSuccess", {"job_id": job_id, "worker": "w1", "started_at": AT}),
            ("Update", {"job_id": job_id, "step": 1, "progress": 50.0, "at": AT}),
            (
                "Finished",
                {"job_id": job_id, "outcome": "completed", "steps_done": 2, "finished_at": AT},
            ),
        ]

    async def body() -> None:
        async with (
            Client(contract, jobs.amqp_url, service="server") as server,
            Client(contract, jobs.amqp_url, service="worker") as worker,
        ):
            async with server.subscribe("job-status", job_id=mine) as sub:
                assert sub.name.startswith("amq.gen-")
                [queue] = [q for q in jobs.queues() if q["name"] == sub.name]
                assert queue["exclusive"]
                assert queue["arguments"]["x-dead-letter-exchange"] == "jobs.dead"
                for name, payload in status(mine):
                    await worker.publish(name, payload)
                with pytest.raises(Unroutable):  # nobody follows the other job
                    await worker.publish(*status(other)[0])
                got = [await anext(sub) for _ in range(3)]
                assert [d.type for d in got] == ["StartSuccess", "Update", "Finished"]
                assert all(d.body["job_id"] == mine for d in got)

                await sub.bind(job_id=other)
                await worker.publish(*status(other)[1])
                also = await anext(sub)
                assert also.body["job_id"] == other
                await sub.unbind(job_id=other)
                with pytest.raises(Unroutable):
                    await worker.publish(*status(other)[2])
                assert sub.bound == [{"job_id": mine}]
                name = sub.name
            assert name not in jobs.queue_names()
            assert not [b for b in jobs.bindings() if b["source"] == "jobs.status"]
            with pytest.raises(Unroutable):
                await worker.publish(*status(mine)[1])

    run(body)


def test_subscription_dead_letters_what_it_cannot_take(jobs: Vhost, contract: Contract) -> None:
    job_id = str(uuid.uuid4())

    async def body() -> None:
        server = Client(contract, jobs.amqp_url, service="server")
        async with server, server.subscribe("job-status", job_id=job_id) as sub:
            stop = {"job_id": job_id, "requested_at": AT}
            await raw_publish(
                jobs.amqp_url,
                "jobs.status",
                job_id,
                [
                    (json.dumps(stop).encode(), {"message_type": "Stop"}),
                    (b"[]", {"message_type": "Update"}),
                    (
                        json.dumps({"job_id": job_id, "step": 1, "progress": 1, "at": AT}).encode(),
                        {"message_type": "Update"},
                    ),
                ],
            )
            delivery = await asyncio.wait_for(anext(sub), 10)
            assert delivery.type == "Update"
        dead = await drain(jobs.amqp_url, "jobs.dead-letters", 2)
        reasons = sorted(m.header.properties.headers["x-rabbitry-error"] for m in dead)
        assert any(r.startswith("Update /: [] is not of type") for r in reasons), reasons
        assert any("'Stop' is not a message queue 'job-status' takes" in r for r in reasons)

    run(body)


ODD_NAMES = """
version: 1
exchanges:
  odd: {type: topic}
queues:
  odd.q: {exclusive: true}
bindings:
  - {from: odd, queue: odd.q, key: "{prefetch}.{queue}"}
messages:
  Odd: {schema: schemas/odd.json, exchange: odd, routing_key: "{prefetch}.{queue}"}
services:
  app:
    publishes: [Odd]
    consumes: {odd.q: [Odd]}
"""
ODD = object_schema(
    {"prefetch": {"type": "string"}, "queue": {"type": "string"}}, ["prefetch", "queue"]
)


def test_binding_values_may_have_any_name_through_the_mapping(vhost: Vhost, tmp_path: Path) -> None:
    contract = apply(vhost, write_spec(tmp_path, ODD_NAMES, {"schemas/odd.json": ODD}))

    async def body() -> None:
        async with Client(contract, vhost.amqp_url, service="app") as client:
            values = {"prefetch": "a", "queue": "b"}
            async with client.subscribe("odd.q", values, prefetch=4) as subscription:
                await subscription.bind({"prefetch": "c", "queue": "d"})
                await client.publish("Odd", {"prefetch": "c", "queue": "d"})
                await client.publish("Odd", {"prefetch": "a", "queue": "b"})
                received = []
                async for delivery in subscription:
                    received.append(delivery.body)
                    if len(received) == 2:
                        break
        assert sorted(r["prefetch"] for r in received) == ["a", "c"]

    run(body)
