"""Publishing under faults the broker causes: a refused message, a channel closing again and
again, a memory alarm.

The broker settings these need (``max_message_size``, an alarm) are set on a
RabbitMQ node of the module's own (``nodes.own_node``), never on the shared
broker, and each test undoes its setting.  Every test asserts what reached the
queue (read raw, with ``basic_get``), that nothing confirmed is lost, and how
long the failure took to be reported.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiormq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands as spec

from amqp import Bounded
from broker import ManagementAPI, Vhost, fresh_vhost
from rabbitry.broker import converge
from rabbitry.broker.url import parse_url
from rabbitry.check import load_spec
from rabbitry.errors import MessageTooLarge, PublishManyFailed, PublishRefused, PublishTimeout
from rabbitry.messaging._publisher import prepare_raw
from rabbitry.messaging.client import Client
from rabbitry.messaging.contract import Contract
from specs import object_schema, write_spec

if TYPE_CHECKING:
    from conftest import Figures
    from nodes import OwnNode

# The fixture own_node (imported by name so that pytest rewrites its asserts).
pytest_plugins = ["nodes"]
pytestmark = pytest.mark.broker

#: The broker's max_message_size in these tests: a body of 2,000 bytes is over it.
LIMIT = 1024

SPEC = """
version: 1
exchanges:
  pings: {type: direct}
queues:
  pings.q: {}
bindings:
  - {from: pings, queue: pings.q, key: "ping"}
messages:
  Ping: {schema: schemas/ping.json, exchange: pings, routing_key: "ping"}
services:
  app:
    publishes: [Ping]
    consumes: {pings.q: [Ping]}
"""
PING = object_schema({"n": {"type": "integer"}, "pad": {"type": "string"}}, ["n"])


run = Bounded(30)


@pytest.fixture
def node_vhost(own_node: OwnNode) -> Iterator[Vhost]:
    """A fresh vhost on the module's own node."""
    with ManagementAPI(own_node.config) as api:
        yield from fresh_vhost(api)


@pytest.fixture
def pings(node_vhost: Vhost, tmp_path: Path) -> Contract:
    spec_ = load_spec(write_spec(tmp_path, SPEC, {"schemas/ping.json": PING}))
    run(converge.apply(spec_, parse_url(node_vhost.amqp_url), timeout=10))
    return Contract.from_spec(spec_)


def set_env(node: OwnNode, key: str, value: str) -> None:
    done = node.ctl("eval", f"application:set_env(rabbit, {key}, {value}).")
    assert done.returncode == 0, done.stderr


@pytest.fixture
def small_messages(own_node: OwnNode) -> Iterator[None]:
    """The node refuses bodies over ``LIMIT`` bytes (on channels opened from now on)."""
    set_env(own_node, "max_message_size", str(LIMIT))
    try:
        yield
    finally:
        set_env(own_node, "max_message_size", str(128 * 1024 * 1024))


async def take_all(url: str, queue: str) -> list[Any]:
    """Every message in ``queue`` now, taken raw (basic_get, no ack)."""
    connection = await aiormq.connect(url)
    got: list[Any] = []
    try:
        channel = await connection.channel()
        while True:
            message = await channel.basic_get(queue, no_ack=True)
            if isinstance(message.delivery, spec.Basic.GetEmpty):
                return got
            got.append(message)
    finally:
        await connection.close()


def ping(n: int, size: int = 0) -> dict[str, Any]:
    return {"n": n, "pad": "x" * size}


# -- a message the broker refuses for what it is ---------------------------------------------


@pytest.mark.usefixtures("small_messages")
def test_an_oversized_message_fails_alone_and_is_never_written_again(
    node_vhost: Vhost, pings: Contract, caplog: pytest.LogCaptureFixture, figures: Figures
) -> None:
    """Before: ~3,000 channel close/re-send cycles in 10 s, thousands of copies delivered, the
    culprit reported as "outcome UNKNOWN".  Now: it fails at once with its size and the
    broker's limit; the others are delivered, each written again at most once."""
    caplog.set_level(logging.DEBUG, logger="rabbitry.messaging")
    items = [("Ping", ping(n, 2000 if n == 50 else 10)) for n in range(101)]

    async def body() -> tuple[float, str | None]:
        async with Client(pings, node_vhost.amqp_url, service="app") as client:
            started = time.monotonic()
            with pytest.raises(PublishManyFailed) as many:
                await client.publish_many(items, timeout=5)
            took = time.monotonic() - started
            [(index, failure)] = many.value.failures.items()
            culprit = failure.message_id if isinstance(failure, MessageTooLarge) else None
            assert index == 50
            assert isinstance(failure, MessageTooLarge)
            assert (failure.size, failure.limit) == (len(b'{"n":50,"pad":""}') + 2000, LIMIT)
            assert failure.index == 50
            assert failure.message_name == "Ping"
            assert f"max_message_size of {LIMIT} bytes" in str(failure)
            assert "1 of 101" in str(many.value)
            # publish: the same, alone, with no index; the client goes on working
            with pytest.raises(MessageTooLarge) as alone:
                await client.publish("Ping", ping(1000, 5000), timeout=5)
            assert alone.value.index is None
            await client.publish("Ping", ping(1001), timeout=5)
        return took, culprit

    took, culprit = run(body())
    assert took < 3, f"the failure took {took:.1f} s"
    copies = Counter(
        m.header.properties.message_id for m in run(take_all(node_vhost.amqp_url, "pings.q"))
    )
    figures.record(
        "an oversized message among 101 in publish_many (max_message_size 1024)",
        "MessageTooLarge for it alone, never written again; the 100 others delivered",
        lost=max(0, 101 - len(copies)),  # the 100 others and the publish after it
        duplicates=sum(copies.values()) - len(copies),
        recovery=took,
    )
    # at-least-once: each of the 101 delivered, written again at most once (no loop)
    assert len(copies) == 101
    assert max(copies.values()) <= 2
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 4, [r.getMessage() for r in warnings]  # no loop in the log either
    # the refusal is logged with structured fields, to match the caller's error by message_id
    [refused] = [r for r in warnings if getattr(r, "message_id", None) == culprit]
    assert refused.exchange == "pings"  # type: ignore[attr-defined]
    assert refused.message_type == "Ping"  # type: ignore[attr-defined]
    assert "max size 1024" in refused.reason  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.getMessage().startswith("rabbitry")]


@pytest.mark.usefixtures("small_messages")
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.integers(min_value=1, max_value=80).flatmap(
        lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), max_size=5))
    )
)
def test_exactly_the_oversized_items_fail_and_every_other_is_delivered(
    node_vhost: Vhost, pings: Contract, case: tuple[int, set[int]]
) -> None:
    count, oversized = case
    items = [("Ping", ping(n, 1500 if n in oversized else 10)) for n in range(count)]

    async def body() -> dict[int, type[BaseException]]:
        async with Client(pings, node_vhost.amqp_url, service="app") as client:
            try:
                await client.publish_many(items, timeout=5)
            except PublishManyFailed as many:
                return {index: type(error) for index, error in many.failures.items()}
            return {}

    assert run(body()) == dict.fromkeys(oversized, MessageTooLarge)
    taken = run(take_all(node_vhost.amqp_url, "pings.q"))
    copies = Counter(m.header.properties.message_id for m in taken)
    assert len(copies) == count - len(oversized)
    assert max(copies.values(), default=1) <= 2
    assert {int(m.body.split(b",")[0][5:]) for m in taken} == set(range(count)) - oversized


@pytest.mark.usefixtures("small_messages")
def test_concurrent_publishes_beside_an_oversized_one_are_delivered(
    node_vhost: Vhost, pings: Contract
) -> None:
    async def body() -> list[BaseException | None]:
        async with Client(pings, node_vhost.amqp_url, service="app") as client:
            return await asyncio.gather(
                *(
                    client.publish("Ping", ping(n, 3000 if n % 50 == 7 else 0), timeout=5)
                    for n in range(200)
                ),
                return_exceptions=True,
            )

    outcomes = run(body())
    failed = {n for n, outcome in enumerate(outcomes) if outcome is not None}
    assert failed == {7, 57, 107, 157}, outcomes
    assert all(isinstance(outcomes[n], MessageTooLarge) for n in failed)
    copies = Counter(
        m.header.properties.message_id for m in run(take_all(node_vhost.amqp_url, "pings.q"))
    )
    assert len(copies) == 196
    assert max(copies.values()) <= 2


def test_a_message_that_closes_every_channel_fails_alone_with_backoff(
    node_vhost: Vhost, pings: Contract, caplog: pytest.LogCaptureFixture
) -> None:
    """A message the broker refuses with a reason rabbitry does not know (here a ``user_id``
    that is not the connection's user: 406) closes the channel each time it is written.
    It is found (written alone on the next channel) and fails with the broker's reason; the
    messages around it are delivered."""

    async def body() -> float:
        async with Client(pings, node_vhost.amqp_url, service="app") as client:
            publisher = client._publisher
            assert publisher is not None
            good = [
                prepare_raw(
                    "Ping",
                    "pings",
                    "ping",
                    b'{"n":%d}' % n,
                    spec.Basic.Properties(
                        message_type="Ping",
                        user_id="somebody-else" if n == 5 else None,
                    ),
                )
                for n in range(10)
            ]
            for index, out in enumerate(good):
                out.index = index
            started = time.monotonic()
            with pytest.raises(PublishManyFailed) as many:
                await publisher.send(good, 10, many=True)
            took = time.monotonic() - started
            [(index, failure)] = many.value.failures.items()
            assert index == 5
            assert isinstance(failure, PublishRefused)
            assert "user_id" in str(failure)
            await client.publish("Ping", ping(99), timeout=5)
        return took

    took = run(body())
    assert took < 3, f"the failure took {took:.1f} s"
    # one close for the batch, one for the culprit written alone: no more
    closes = [r for r in caplog.records if r.getMessage().startswith("the publishing channel")]
    assert len(closes) == 1, [r.getMessage() for r in closes]
    assert "one at a time" in closes[0].getMessage()
    copies = Counter(
        m.header.properties.message_id for m in run(take_all(node_vhost.amqp_url, "pings.q"))
    )
    assert len(copies) == 10
    assert max(copies.values()) <= 2


# -- a memory alarm ------------------------------------------------------------------------


def test_a_publish_blocked_by_a_memory_alarm_says_so(
    own_node: OwnNode, node_vhost: Vhost, pings: Contract
) -> None:
    alarm = "{resource_limit, memory, node()}"

    async def body() -> None:
        async with Client(pings, node_vhost.amqp_url, service="app") as client:
            await client.publish("Ping", ping(1), timeout=5)
            done = own_node.ctl("eval", f"rabbit_alarm:set_alarm({{{alarm}, []}}).")
            assert done.returncode == 0, done.stderr
            try:
                started = time.monotonic()
                with pytest.raises(PublishTimeout) as blocked:
                    await client.publish("Ping", ping(2), timeout=2)
                assert time.monotonic() - started < 3
                text = str(blocked.value)
                assert "has blocked this connection (low on memory)" in text, text
                assert "rabbitmq-diagnostics alarms" in text
            finally:
                own_node.ctl("eval", f"rabbit_alarm:clear_alarm({alarm}).")
            await client.publish("Ping", ping(3), timeout=5)  # unblocked: works again

    run(body())
