"""Consuming under faults: a hung handler, a channel closed under running handlers (by the
broker's ``consumer_timeout`` too), and a dead-letter copy that cannot be placed or whose
confirm does not come.

Each fault is caused on a real broker: the shared one where no broker setting is
needed (a channel closed by the broker for a bad ack, connections closed through the
management API, a dead-letter exchange that is missing, routes nowhere or nacks), a
node of the module's own (``nodes.own_node``) for ``consumer_timeout`` and a memory
alarm.  What reached a queue is read back raw (``basic_get``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import aiormq
import pytest
from aiormq.abc import ChannelFrame
from pamqp import commands as spec

from amqp import AT, Bounded, close_connections, depth, drain, raw_publish, start, until
from broker import ManagementAPI, Vhost, fresh_vhost
from jobs_contracts import Worker
from rabbitry.broker import converge
from rabbitry.broker.url import parse_url
from rabbitry.check import load_spec
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract
from specs import FLAGSHIP

if TYPE_CHECKING:
    from conftest import Figures
    from nodes import OwnNode

pytest_plugins = ["nodes"]
pytestmark = pytest.mark.broker

LOGGER = "rabbitry.messaging"


run = Bounded(60)


class Tally:
    """Handler tasks per message: how many run now, the most at once, every run."""

    def __init__(self) -> None:
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.runs: list[tuple[str, bool]] = []
        self.done: list[str] = []

    def enter(self, delivery: Delivery[Any]) -> str:
        key = str(delivery.message_id)
        self.now[key] += 1
        self.most[key] = max(self.most[key], self.now[key])
        self.runs.append((key, delivery.redelivered))
        return key

    def total(self) -> int:
        return sum(self.now.values())


async def slow_to_end(seconds: float) -> None:
    """Cleanup that takes ``seconds`` whatever cancels it (a handler reporting its failure)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.05)


def hang_first_then_finish(tally: Tally, cleanup: float) -> Callable[..., Awaitable[None]]:
    """A handler that hangs on a first delivery (and ends slowly when cancelled) and
    finishes a redelivery at once."""

    async def handler(delivery: Delivery[Any]) -> None:
        key = tally.enter(delivery)
        try:
            if not delivery.redelivered:
                await asyncio.sleep(3600)
            tally.done.append(key)
        finally:
            try:
                if not delivery.redelivered:
                    await slow_to_end(cleanup)
            finally:
                tally.now[key] -= 1

    return handler


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


# -- a hung handler ---------------------------------------------------------------------------


def test_a_hung_handler_is_cancelled_at_its_deadline_then_dead_lettered(
    jobs: Vhost, contract: Contract, caplog: pytest.LogCaptureFixture, figures: Figures
) -> None:
    """Before: a hung handler held its prefetch slot for ever, with nothing logged.  Now each
    try is cancelled after ``handler_timeout``; after ``attempts`` tries the message is
    dead-lettered with the reason, and the slot serves the next message."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    hung, after = start("hung"), start("after")
    tries: Counter[str] = Counter()
    finished: list[str] = []

    async def handler(delivery: Delivery[Any]) -> None:
        job_type = delivery.body["job_type"]
        tries[job_type] += 1
        if job_type == "hung":
            await asyncio.Event().wait()
        finished.append(job_type)

    async def body() -> float:
        async with (
            Client(contract, jobs.amqp_url, service="worker", handler_timeout=0.4) as worker,
            Client(contract, jobs.amqp_url, service="server") as server,
        ):
            consumer = worker.consume("jobs.ready", handler, prefetch=1, attempts=2)
            assert consumer.handler_timeout == 0.4
            await consumer.ready()
            began = time.monotonic()
            await server.publish("Start", hung)
            await server.publish("Start", after)
            await until(lambda: finished == ["after"], 15, what="for the next message")
            took = time.monotonic() - began
            await consumer.cancel()
        return took

    took = run(body())
    figures.record(
        "a handler that hangs (handler_timeout 0.4 s, 2 attempts)",
        "each try cancelled at its deadline, then dead-lettered with the reason; the slot "
        "serves the next message",
        lost=0,
        recovery=took,
    )
    assert tries == {"hung": 2, "after": 1}
    # 2 tries of 0.4 s and the retry pause (0.5 s) between them
    assert took < 5, took
    [dead] = run(drain(jobs.amqp_url, "jobs.dead-letters", 1))
    headers = dead.header.properties.headers
    assert json.loads(dead.body) == hung
    assert "handler did not finish within 0.4 s" in headers["x-rabbitry-error"]
    assert headers["x-rabbitry-errors"][0]["message"] == headers["x-rabbitry-error"]
    assert run(depth(jobs.amqp_url, "jobs.ready")) == 0
    warnings = [r for r in records(caplog, logging.WARNING) if getattr(r, "attempt", None)]
    assert [r.attempt for r in warnings] == [1, 2]  # type: ignore[attr-defined]
    for record in warnings:
        assert record.queue == "jobs.ready"  # type: ignore[attr-defined]
        assert record.message_type == "Start"  # type: ignore[attr-defined]
        assert record.message_id == dead.header.properties.message_id  # type: ignore[attr-defined]
        assert record.reason == "handler did not finish within 0.4 s"  # type: ignore[attr-defined]
        assert not record.getMessage().startswith("rabbitry")
    infos = [r for r in records(caplog, logging.INFO) if getattr(r, "queue", None) == "jobs.ready"]
    assert [r.getMessage().split(" queue")[0] for r in infos] == [
        "consuming from",
        "stopped consuming from",
    ]
    [lettered] = [r for r in records(caplog, logging.WARNING) if "dead-lettered" in r.getMessage()]
    assert lettered.message_id == dead.header.properties.message_id  # type: ignore[attr-defined]


def test_the_handler_deadline_is_the_clients_unless_given_and_can_be_turned_off(
    jobs: Vhost, contract: Contract
) -> None:
    async def handler(delivery: Any) -> None:
        return None

    async def body() -> None:
        async with Client(contract, jobs.amqp_url, service="worker") as worker:
            assert worker.consume("jobs.ready", handler).handler_timeout == 300
            assert worker.consume("jobs.ready", handler, handler_timeout=7).handler_timeout == 7
            off = worker.consume("jobs.ready", handler, handler_timeout=float("inf"))
            assert off.handler_timeout is None
        async with Client(
            contract, jobs.amqp_url, service="worker", handler_timeout=None
        ) as worker:
            assert worker.consume("jobs.ready", handler).handler_timeout is None
        async with Worker(jobs.amqp_url, handler_timeout=9) as generated:  # passed through
            assert generated.consume_jobs_ready(handler).handler_timeout == 9
            assert generated.consume_jobs_ready(handler, handler_timeout=2).handler_timeout == 2

    run(body())


# -- a channel that closes under running handlers ------------------------------------------------


def close_channel_by_the_broker(consumer: Any) -> None:
    """Make the broker close the consumer's channel (406: an ack of a tag it never sent)."""
    channel = consumer._channel
    frame = spec.Basic.Ack(delivery_tag=999_999)
    channel.write_queue.put_nowait(
        ChannelFrame.marshall(channel_number=channel.number, frames=[frame])
    )


@pytest.mark.parametrize("cut", ["channel", "connection"])
def test_a_closed_channel_cancels_its_handlers_and_never_runs_a_message_twice_at_once(
    jobs: Vhost, contract: Contract, caplog: pytest.LogCaptureFixture, cut: str
) -> None:
    """Before: the handlers of the closed channel went on (here: a cleanup of 1 s after their
    cancel) while the broker delivered their messages again on the new channel: two handler
    tasks for one message.  Now the redelivery waits for the old handler to end."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    tally = Tally()
    count = 4

    async def body() -> None:
        async with (
            Client(contract, jobs.amqp_url, service="worker", handler_timeout=None) as worker,
            Client(contract, jobs.amqp_url, service="server") as server,
        ):
            consumer = worker.consume(
                "jobs.ready", hang_first_then_finish(tally, cleanup=1.0), prefetch=count
            )
            await consumer.ready()
            for _ in range(count):
                await server.publish("Start", start())
            await until(lambda: tally.total() == count, 15, what="for every handler running")
            if cut == "channel":
                close_channel_by_the_broker(consumer)
            else:
                await asyncio.to_thread(close_connections, jobs)
            await until(lambda: len(set(tally.done)) == count, 15, what="for every message handled")
            await consumer.cancel()

    run(body())
    assert len(tally.most) == count
    assert max(tally.most.values()) == 1, tally.most
    assert sorted(redelivered for _, redelivered in tally.runs) == [False] * count + [True] * count
    assert run(depth(jobs.amqp_url, "jobs.ready")) == 0
    cancelled = [r for r in records(caplog, logging.WARNING) if "cancelled" in r.getMessage()]
    assert cancelled
    assert all(r.queue == "jobs.ready" for r in cancelled)  # type: ignore[attr-defined]


def set_env(node: OwnNode, key: str, value: str) -> None:
    done = node.ctl("eval", f"application:set_env(rabbit, {key}, {value}).")
    assert done.returncode == 0, done.stderr


@pytest.fixture
def node_jobs(own_node: OwnNode) -> Iterator[Vhost]:
    """A fresh vhost on the module's own node with the flagship applied (its policies through
    the node's management API)."""
    with ManagementAPI(own_node.config) as api:
        for vhost in fresh_vhost(api):
            url = parse_url(vhost.amqp_url, management=own_node.management_url)
            run(converge.apply(load_spec(FLAGSHIP), url, timeout=10))
            yield vhost


@pytest.fixture
def short_consumer_timeout(own_node: OwnNode) -> Iterator[float]:
    """The node closes a channel whose delivery stays unacked 2 s (checked every 0.5 s), on
    channels opened from now on; undone afterwards."""
    set_env(own_node, "consumer_timeout", "2000")
    set_env(own_node, "channel_tick_interval", "500")
    try:
        yield 2.0
    finally:
        set_env(own_node, "consumer_timeout", "1800000")
        set_env(own_node, "channel_tick_interval", "60000")


def test_the_brokers_consumer_timeout_cancels_the_old_handlers(
    node_jobs: Vhost,
    contract: Contract,
    short_consumer_timeout: float,
    caplog: pytest.LogCaptureFixture,
    figures: Figures,
) -> None:
    """What the issue measured (64 hung handlers, then 192 tasks for 64 messages after the
    broker's consumer timeout), small: 8 handlers that hang without a deadline; the broker
    closes the channel; they are cancelled, and their messages run again one task each."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    tally = Tally()
    count = 8
    most_at_once = 0

    async def body() -> float:
        nonlocal most_at_once
        async with (
            Client(contract, node_jobs.amqp_url, service="worker", handler_timeout=None) as w,
            Client(contract, node_jobs.amqp_url, service="server") as server,
        ):
            consumer = w.consume(
                "jobs.ready", hang_first_then_finish(tally, cleanup=0.5), prefetch=count
            )
            await consumer.ready()
            await server.publish_many([("Start", start()) for _ in range(count)])
            began = time.monotonic()
            while len(set(tally.done)) < count:
                most_at_once = max(most_at_once, tally.total())
                assert time.monotonic() - began < 30, "not handled again after the timeout"
                await asyncio.sleep(0.01)
            took = time.monotonic() - began
            await consumer.cancel()
        return took

    took = run(body())
    figures.record(
        f"the broker's consumer_timeout ({short_consumer_timeout:g} s) under {count} hung handlers",
        f"the old channel's handlers cancelled; each message run again in one task "
        f"(at most {max(tally.most.values())} at once per message)",
        lost=count - len(set(tally.done)),
        recovery=took,
    )
    assert max(tally.most.values()) == 1, tally.most
    assert most_at_once == count
    assert len(tally.runs) == 2 * count
    assert took >= short_consumer_timeout
    closed = [r for r in records(caplog, logging.WARNING) if "closed" in r.getMessage()]
    assert any("timed out" in str(getattr(r, "reason", "")) for r in closed), [
        r.getMessage() for r in closed
    ]
    assert run(depth(node_jobs.amqp_url, "jobs.ready")) == 0


# -- the dead-letter copy cannot be placed: the original is rejected -------------------------


async def declare_nacking_exchange(url: str) -> None:
    """Exchange ``nacks`` → a queue that takes nothing (max-length 0, reject-publish): every
    message published there is nacked."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.exchange_declare("nacks", exchange_type="fanout")
        await channel.queue_declare(
            "full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        )
        await channel.queue_bind("full", "nacks")
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("dead_letter_exchange", "says"),
    [
        ("jobs.gone", "NOT_FOUND"),  # the exchange does not exist
        ("jobs.status", "NO_ROUTE"),  # exists; nothing bound (a run-time queue's exchange)
        ("nacks", "nack"),  # the only queue bound refuses it
    ],
)
def test_a_dead_letter_copy_that_cannot_be_placed_rejects_the_original(  # noqa: PLR0917
    jobs: Vhost,
    contract: Contract,
    caplog: pytest.LogCaptureFixture,
    dead_letter_exchange: str,
    says: str,
    figures: Figures,
) -> None:
    """The contract sends refused messages to an exchange where the copy cannot go; the
    queue on the broker dead-letters to ``jobs.dead`` (its policy).  The original must be
    REJECTED (the broker then dead-letters it itself, with ``x-death``): an ack would lose
    it, a requeue would loop."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    run(declare_nacking_exchange(jobs.amqp_url))
    queue = dataclasses.replace(
        contract.queues["jobs.ready"], dead_letter_exchange=dead_letter_exchange
    )
    mismatched = dataclasses.replace(contract, queues={**contract.queues, "jobs.ready": queue})
    handled: list[Any] = []

    async def handler(delivery: Delivery[Any]) -> None:
        handled.append(delivery)

    async def body() -> list[Any]:
        async with Client(mismatched, jobs.amqp_url, service="worker") as worker:
            consumer = worker.consume("jobs.ready", handler)
            await consumer.ready()
            await raw_publish(
                jobs.amqp_url,
                "jobs.new",
                "job.raw",
                [(b'{"steps": "many"}', {"message_type": "Start", "message_id": "poison"})],
            )
            dead = await drain(jobs.amqp_url, "jobs.dead-letters", 1)
            await consumer.cancel()
            return dead

    [dead] = run(body())
    figures.record(
        f"a poison message whose dead-letter copy cannot be placed ({says})",
        "the original rejected: the broker dead-letters it itself (x-death 'rejected')",
        lost=0 if dead.header.properties.message_id == "poison" else 1,
    )
    assert handled == []
    properties = dead.header.properties
    assert properties.message_id == "poison"
    [death] = properties.headers["x-death"]
    assert death["reason"] == "rejected"
    assert death["queue"] == "jobs.ready"
    assert "x-rabbitry-error" not in properties.headers  # the original, as the broker keeps it
    assert run(depth(jobs.amqp_url, "jobs.ready")) == 0
    [error] = [r for r in records(caplog, logging.ERROR) if "could not be placed" in r.getMessage()]
    assert says in error.getMessage()
    assert error.message_id == "poison"  # type: ignore[attr-defined]
    assert error.queue == "jobs.ready"  # type: ignore[attr-defined]
    assert "Start" in error.reason  # type: ignore[attr-defined]


# -- the copy's confirm does not come: the original goes back --------------------------------


@pytest.fixture
def memory_alarm(own_node: OwnNode) -> Iterator[Callable[[bool], None]]:
    """``alarm(True)`` raises the node's memory alarm (it blocks publishing connections),
    ``alarm(False)`` clears it; cleared afterwards whatever happened."""

    def alarm(on: bool) -> None:
        done = own_node.ctl("set_vm_memory_high_watermark", "0" if on else "0.4")
        assert done.returncode == 0, done.stderr

    try:
        yield alarm
    finally:
        alarm(False)


def test_a_dead_letter_copy_whose_confirm_does_not_come_requeues_the_original(
    node_jobs: Vhost,
    contract: Contract,
    memory_alarm: Callable[[bool], None],
    caplog: pytest.LogCaptureFixture,
    figures: Figures,
) -> None:
    """A memory alarm blocks the consumer's connection as soon as it publishes the copy: no
    confirm by the deadline, so the original is REQUEUED (nack, requeue).  Once the alarm is
    cleared the broker reads on: the late copy is placed, the original comes back and is
    refused again.  So: two copies, both rabbitry's (an ack would leave one and never deliver
    the original again; a reject would leave the broker's own, with ``x-death``)."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    url = node_jobs.amqp_url
    poison = json.dumps(start(steps="many")).encode()
    run(
        raw_publish(
            url,
            "jobs.new",
            "job.raw",
            [(poison, {"message_type": "Start", "message_id": "poison"})],
        )
    )
    memory_alarm(True)

    async def handler(delivery: Delivery[Any]) -> None:
        raise AssertionError("a refused message reached the handler")

    async def body() -> list[Any]:
        async with Client(contract, url, service="worker", timeout=2) as worker:
            consumer = worker.consume("jobs.ready", handler)
            await consumer.ready()
            await until(
                lambda: any("goes back" in r.getMessage() for r in caplog.records),
                15,
                what="for the copy's deadline",
            )
            await asyncio.to_thread(memory_alarm, False)
            dead = await drain(url, "jobs.dead-letters", 2, timeout=15)
            await consumer.cancel()
            return dead

    dead = run(body())
    figures.record(
        "a dead-letter copy whose confirm does not come (memory alarm)",
        "the original put back, dead-lettered again once the alarm clears",
        lost=0 if dead else 1,
        duplicates=max(0, len(dead) - 1),
    )
    assert len(dead) == 2
    for copy in dead:
        headers = copy.header.properties.headers
        assert copy.header.properties.message_id == "poison"
        assert "x-death" not in headers
        assert headers["x-rabbitry-path"] == "/steps"
    [back] = [r for r in records(caplog, logging.WARNING) if "goes back" in r.getMessage()]
    assert back.message_id == "poison"  # type: ignore[attr-defined]
    assert back.queue == "jobs.ready"  # type: ignore[attr-defined]
    assert run(depth(url, "jobs.ready")) == 0


def test_a_subscription_drops_what_a_closed_channel_held_so_nothing_comes_twice(
    jobs: Vhost, contract: Contract
) -> None:
    """Deliveries waiting in a subscription when its channel closes come again on the next
    channel.  Before: the waiting ones were handed out too, so the loop got them twice."""
    job_id = str(uuid.uuid4())
    updates = [{"job_id": job_id, "step": n, "progress": 10.0, "at": AT} for n in range(1, 5)]

    async def body() -> list[tuple[int, bool]]:
        seen: list[tuple[int, bool]] = []
        async with (
            Client(contract, jobs.amqp_url, service="server") as server,
            Client(contract, jobs.amqp_url, service="worker") as worker,
            server.subscribe("job-status", job_id=job_id) as sub,
        ):
            await worker.publish_many([("Update", u) for u in updates])
            first = await anext(sub)
            seen.append((first.body["step"], first.redelivered))
            await until(lambda: sub._items.qsize() == 3, 15, what="for the rest waiting")
            channel = sub._channel
            close_channel_by_the_broker(sub)
            await until(lambda: channel.is_closed, 15, what="for the broker closing the channel")
            while {step for step, again in seen if again} != {1, 2, 3, 4}:
                delivery = await asyncio.wait_for(anext(sub), 10)
                seen.append((delivery.body["step"], delivery.redelivered))
        return seen

    seen = run(body())
    # the one in hand comes again (its ack could not be taken); each waiting one once
    assert seen == [(1, False), (1, True), (2, True), (3, True), (4, True)]
