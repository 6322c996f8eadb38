"""``apply --migrate`` on the real broker: queues replaced with nothing lost.

Each test fills a queue, changes the spec so that the queue must be replaced,
and applies with ``migrate=True``: every message must be in the new queue
(bodies, properties, headers), its bindings kept (run-time ones too), the
temporary queue gone and the plan empty.  Faults are caused, not imitated: a
publisher runs during the migration, the broker's connection is closed through
the management API mid-way, a state a cut run leaves is built on the broker.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiormq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp.commands import Basic

from amqp import Bounded, channel_on, publish_ids
from broker import ManagementAPI, Vhost, fresh_vhost
from rabbitry.broker import converge
from rabbitry.broker.migrate import PREFIX, temporary_queue
from rabbitry.broker.plan import Action, Kind
from rabbitry.broker.url import BrokerURL, parse_url
from rabbitry.errors import BrokerError, DataLossRefused
from rabbitry.spec.model import (
    Binding,
    Exchange,
    ExchangeType,
    Policy,
    Queue,
    QueueType,
    Spec,
)
from rabbitry.spec.policies import anchored_pattern
from specs import run_cli

T = TypeVar("T")
TIMEOUT = 10.0


run = Bounded(180)


def url_of(vhost: Vhost) -> BrokerURL:
    return parse_url(vhost.amqp_url)


# -- specs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """The settings of a queue that make apply replace it."""

    type: QueueType = QueueType.CLASSIC
    durable: bool = True
    message_ttl: int | None = None
    max_length: int | None = None
    dead_letter: str | None = None

    def queue(self, name: str) -> Queue:
        arguments: dict[str, Any] = {}
        if self.message_ttl is not None:
            arguments["x-message-ttl"] = self.message_ttl
        if self.max_length is not None:
            arguments["x-max-length"] = self.max_length
        if self.dead_letter is not None:
            arguments["x-dead-letter-exchange"] = self.dead_letter
        return Queue(name, self.type, durable=self.durable, arguments=arguments)


def spec_of(shapes: Mapping[str, Shape], policies: Mapping[str, Limits] | None = None) -> Spec:
    """Exchange ``x`` (direct) routing key ``<queue>`` to each queue; ``dlx`` for dead letters;
    ``policies``: queue → the limits a policy of its own sets on it."""
    exchanges = {
        "x": Exchange("x", ExchangeType.DIRECT),
        "dlx": Exchange("dlx", ExchangeType.FANOUT),
    }
    queues = {name: shape.queue(name) for name, shape in shapes.items()}
    bindings = tuple(Binding("x", name, key=name) for name in shapes)
    return Spec(
        path=Path("topology.yaml"),
        exchanges=exchanges,
        queues=queues,
        bindings=bindings,
        policies={
            f"limits-{queue}": limits.policy(f"limits-{queue}", queue)
            for queue, limits in (policies or {}).items()
            if limits.definition()
        },
    )


@dataclass(frozen=True)
class Limits:
    """What a policy sets on one queue: settings that change in place."""

    message_ttl: int | None = None
    max_length: int | None = None
    dead_letter: str | None = None

    def definition(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "message-ttl": self.message_ttl,
            "max-length": self.max_length,
            "dead-letter-exchange": self.dead_letter,
        }
        return {k: v for k, v in found.items() if v is not None}

    def policy(self, name: str, queue: str) -> Policy:
        return Policy(name, anchored_pattern([queue]), definition=self.definition())


def apply(spec: Spec, vhost: Vhost, **options: Any) -> converge.Converged:
    return run(converge.apply(spec, url_of(vhost), timeout=TIMEOUT, **options))


def plan(spec: Spec, vhost: Vhost, *, prune: bool = False) -> converge.Planned:
    return run(converge.plan(spec, url_of(vhost), prune=prune, timeout=TIMEOUT))


# -- the broker, by hand -------------------------------------------------------------------


async def publish_all(vhost: Vhost, messages: list[tuple[str, bytes, Basic.Properties]]) -> None:
    """Publish (exchange ``x``, routing key, body, properties) each with a confirm."""
    async with channel_on(vhost) as channel:
        confirms = [
            await channel.basic_publish(
                body, exchange="x", routing_key=key, properties=props, mandatory=True, wait=False
            )
            for key, body, props in messages
        ]
        del confirms


def fill(vhost: Vhost, queue: str, n: int, *, start: int = 0) -> list[str]:
    """``n`` persistent messages with ids ``<queue>-<i>`` through ``x``; their ids."""
    ids = [f"{queue}-{i}" for i in range(start, start + n)]
    run(publish_ids(vhost, "x", queue, ids))
    return ids


@dataclass
class Message:
    body: bytes
    properties: dict[str, Any]


def drain(vhost: Vhost, queue: str) -> list[Message]:
    """Every message in ``queue``, in order, taken (acked) off it."""

    async def go() -> list[Message]:
        found: list[Message] = []
        async with channel_on(vhost) as channel:
            while True:
                message = await channel.basic_get(queue, no_ack=True)
                if isinstance(message.delivery, Basic.GetEmpty):
                    return found
                found.append(Message(message.body, props_of(message.header.properties)))

    return run(go())


def props_of(properties: Basic.Properties) -> dict[str, Any]:
    """Every property by name; the header a quorum queue adds to each delivery left out."""
    found = {name: getattr(properties, name) for name in properties.attributes()}
    headers = dict(found.get("headers") or {})
    headers.pop("x-delivery-count", None)
    found["headers"] = headers or None
    return found


def ids_in(vhost: Vhost, queue: str) -> Counter[str]:
    return Counter(m.properties["message_id"] for m in drain(vhost, queue))


def queue_rows(vhost: Vhost) -> dict[str, dict[str, Any]]:
    return {q["name"]: q for q in vhost.queues()}


def bindings_to(vhost: Vhost, queue: str) -> set[tuple[str, str]]:
    return {
        (b["source"], b["routing_key"])
        for b in vhost.bindings()
        if b["destination"] == queue and b["source"]
    }


def close_connections(api: ManagementAPI, vhost: Vhost, *, at_least: int = 1) -> int:
    """Close every AMQP connection to ``vhost`` through the management API.

    The API lists a connection about 5 s after it opened (its statistics), so this
    waits (blocking the caller, up to 15 s) until ``at_least`` are listed.
    """
    path = f"/api/vhosts/{quote(vhost.name, safe='')}/connections"
    deadline = time.monotonic() + 15
    rows = api.get_json(path)
    while len(rows) < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = api.get_json(path)
    for row in rows:
        api._request("DELETE", f"/api/connections/{quote(row['name'], safe='')}")
    return len(rows)


def assert_converged(spec: Spec, vhost: Vhost) -> None:
    """The plan is empty (bindings made at run time are the broker's) and no temporary
    queue is left."""
    planned = plan(spec, vhost)
    assert planned.plan.empty, [c.describe() for c in planned.plan.changes]
    assert not any(name.startswith(PREFIX) for name in vhost.queue_names())


# -- every message, every property -------------------------------------------------------


def varied_messages(queue: str, n: int) -> list[tuple[str, bytes, Basic.Properties]]:
    """Messages with every kind of property and header value AMQP has."""
    stamp = datetime.datetime(2026, 11, 29, 12, 0, 0, tzinfo=datetime.UTC)
    found = []
    for i in range(n):
        headers: dict[str, Any] = {
            "i": i,
            "text": f"héllo {i}",
            "flag": i % 2 == 0,
            "ratio": 0.5,
            "nested": {"list": [1, "two", {"three": 3}], "when": stamp},
            "x-death": [
                {
                    "count": 1,
                    "reason": "rejected",
                    "queue": "earlier",
                    "exchange": "",
                    "routing-keys": ["earlier"],
                    "time": stamp,
                }
            ],
        }
        props = Basic.Properties(
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers if i % 5 else None,
            delivery_mode=2 if i % 3 else 1,
            priority=i % 10,
            correlation_id=f"c{i}",
            reply_to="replies",
            expiration="3600000",
            message_id=f"{queue}-{i}" if i % 7 else None,
            timestamp=stamp,
            message_type="thing.happened",
            user_id="guest",
            app_id="tests",
        )
        found.append((queue, f'{{"n": {i}}}'.encode() * (1 + i % 3), props))
    return found


def test_classic_to_quorum_keeps_every_message_its_properties_and_bindings(vhost: Vhost) -> None:
    old = spec_of({"q": Shape()})
    new = spec_of({"q": Shape(QueueType.QUORUM)})
    apply(old, vhost)
    sent = varied_messages("q", 300)
    run(publish_all(vhost, sent))
    expected = [(body, props_of(props)) for _, body, props in sent]
    # A binding made at run time (not in the spec), and a second one from amq.topic.
    run(_bind(vhost, "q", "amq.topic", "made.#"))

    done = apply(new, vhost, migrate=True)

    (migrated,) = done.result.migrations
    assert (migrated.queue, migrated.moved_out, migrated.moved_back) == ("q", 300, 300)
    assert queue_rows(vhost)["q"]["type"] == "quorum"
    assert bindings_to(vhost, "q") == {("x", "q"), ("amq.topic", "made.#")}
    got = drain(vhost, "q")
    assert [m.body for m in got] == [body for body, _ in expected]
    for message, (_, props) in zip(got, expected, strict=True):
        assert message.properties == props
    assert_converged(new, vhost)


async def _bind(vhost: Vhost, queue: str, exchange: str, key: str) -> None:
    async with channel_on(vhost) as channel:
        await channel.queue_bind(queue, exchange, key)


CHANGES = {
    "classic to quorum": (Shape(), Shape(QueueType.QUORUM)),
    "quorum to classic": (Shape(QueueType.QUORUM), Shape()),
    "message_ttl": (Shape(message_ttl=600_000), Shape(message_ttl=1_200_000)),
    "max_length": (Shape(max_length=10_000), Shape(max_length=20_000, message_ttl=600_000)),
    "dead_letter": (Shape(QueueType.QUORUM), Shape(QueueType.QUORUM, dead_letter="dlx")),
    "durable to transient": (Shape(), Shape(durable=False)),
}


@pytest.mark.parametrize(("old", "new"), CHANGES.values(), ids=CHANGES.keys())
def test_a_replaced_queue_keeps_all_its_messages(vhost: Vhost, old: Shape, new: Shape) -> None:
    apply(spec_of({"q": old, "other": Shape()}), vhost)
    ids = fill(vhost, "q", 2000)
    fill(vhost, "other", 10)
    planned = plan(spec_of({"q": new, "other": Shape()}), vhost)
    assert [(c.action, c.name) for c in planned.plan.changes if c.kind is Kind.QUEUE] == [
        (Action.REPLACE, "q")
    ]
    with pytest.raises(DataLossRefused, match=r"migrate=True"):
        apply(spec_of({"q": new, "other": Shape()}), vhost)

    apply(spec_of({"q": new, "other": Shape()}), vhost, migrate=True)

    row = queue_rows(vhost)["q"]
    assert (row["type"], row["durable"]) == (new.type.value, new.durable)
    assert bindings_to(vhost, "q") == {("x", "q")}
    assert_converged(spec_of({"q": new, "other": Shape()}), vhost)
    assert list(ids_in(vhost, "q").elements()) == ids  # all, once each, in order
    assert ids_in(vhost, "other") == Counter(f"other-{i}" for i in range(10))


def test_an_empty_queue_with_a_consumer_is_migrated_and_its_consumer_cancelled(
    vhost: Vhost,
) -> None:
    old, new = spec_of({"q": Shape()}), spec_of({"q": Shape(message_ttl=60_000)})
    apply(old, vhost)

    async def scenario() -> tuple[bool, int]:
        async with channel_on(vhost) as channel:
            cancelled = asyncio.Event()
            await channel.basic_consume("q", lambda message: None)
            consumer = next(iter(channel.consumers))
            done = await converge.apply(new, url_of(vhost), timeout=TIMEOUT, migrate=True)
            for _ in range(50):  # the broker's basic.cancel reaches the channel
                if consumer not in channel.consumers:
                    cancelled.set()
                    break
                await asyncio.sleep(0.05)
            return cancelled.is_set(), len(done.result.migrations)

    cancelled, migrations = run(scenario())

    assert migrations == 1
    assert cancelled
    assert_converged(new, vhost)


def test_a_replace_of_a_stream_holding_messages_is_still_refused(vhost: Vhost) -> None:
    old = spec_of({"s": Shape(QueueType.STREAM)})
    apply(old, vhost)
    fill(vhost, "s", 3)

    with pytest.raises(DataLossRefused, match=r"migrate=True cannot move it: a stream cannot"):
        apply(spec_of({"s": Shape()}), vhost, migrate=True)

    assert queue_rows(vhost)["s"]["type"] == "stream"


# -- publishing during the migration --------------------------------------------------------


@dataclass
class Publisher:
    """Publishes with confirms, ``mandatory``, to ``x`` with each routing key in turn."""

    vhost: Vhost
    keys: tuple[str, ...]
    confirmed: dict[str, list[str]] = field(default_factory=dict)
    returned: int = 0
    failed: list[BaseException] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        counter = itertools.count()
        async with channel_on(self.vhost) as channel:
            while not stop.is_set():
                batch = [(key, f"live-{key}-{next(counter)}") for key in self.keys * 20]
                results = await asyncio.gather(
                    *(
                        channel.basic_publish(
                            i.encode(),
                            exchange="x",
                            routing_key=key,
                            mandatory=True,
                            properties=Basic.Properties(message_id=i, delivery_mode=2),
                        )
                        for key, i in batch
                    ),
                    return_exceptions=True,
                )
                for (key, i), result in zip(batch, results, strict=True):
                    if isinstance(result, Basic.Ack):
                        self.confirmed.setdefault(key, []).append(i)
                    elif isinstance(result, aiormq.exceptions.PublishError):
                        self.returned += 1
                    elif isinstance(result, BaseException):
                        self.failed.append(result)
                await asyncio.sleep(0.005)


async def while_publishing(
    vhost: Vhost, keys: tuple[str, ...], action: Callable[[], Awaitable[T]]
) -> tuple[T, Publisher]:
    publisher = Publisher(vhost, keys)
    stop = asyncio.Event()
    task = asyncio.create_task(publisher.run(stop))
    await asyncio.sleep(0.2)  # it is publishing before the migration starts
    try:
        result = await action()
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task
    return result, publisher


def test_messages_published_during_the_migration_are_kept(
    vhost: Vhost, record_property: Callable[[str, object], None]
) -> None:
    old, new = spec_of({"q": Shape()}), spec_of({"q": Shape(QueueType.QUORUM)})
    apply(old, vhost)
    before = fill(vhost, "q", 3000)

    done, publisher = run(
        while_publishing(
            vhost,
            ("q",),
            lambda: converge.apply(new, url_of(vhost), timeout=TIMEOUT, migrate=True),
        )
    )

    assert done.result.migrations
    assert not publisher.failed
    assert publisher.returned == 0  # a bound queue all along: T, then Q
    live = publisher.confirmed["q"]
    assert len(live) > 100  # it did publish during the migration
    found = ids_in(vhost, "q")
    missing = (set(before) | set(live)) - set(found)
    assert not missing
    duplicates = sum(found.values()) - len(found)
    record_property("published_during", len(live))
    record_property("duplicates", duplicates)
    print(f"published during: {len(live)}, duplicates: {duplicates}")
    # Only what was routed in the two one-round-trip windows of M2/M3 and M7/M8.
    assert duplicates <= 100, duplicates
    assert_converged(new, vhost)


# -- cut migrations ------------------------------------------------------------------------


def test_a_migration_cut_while_moving_out_is_finished_by_the_next_apply(
    vhost: Vhost, broker: ManagementAPI
) -> None:
    old, new = spec_of({"q": Shape()}), spec_of({"q": Shape(QueueType.QUORUM)})
    apply(old, vhost)
    ids = fill(vhost, "q", 20_000)
    cuts: list[int] = []

    def cut(queue: str, moved: int) -> None:
        if queue == "q" and moved >= 5000 and not cuts:
            # The executor's connection and the migration's.
            cuts.append(close_connections(broker, vhost, at_least=2))

    with pytest.raises(BrokerError) as cut_short:
        run(converge_with_moved(new, vhost, cut))

    # The error says that nothing is lost and how to finish.
    assert f"waits in {temporary_queue('q')!r}" in str(cut_short.value)
    assert "apply again with migrate=True finishes it" in str(cut_short.value)
    assert cuts == [2]
    names = vhost.queue_names()
    assert {"q", temporary_queue("q")} <= names  # cut in M4: both hold messages
    pending = plan(new, vhost).plan
    assert [(c.action, c.name) for c in pending.changes if c.kind is Kind.QUEUE] == [
        (Action.REPLACE, "q"),
        (Action.DELETE, temporary_queue("q")),
    ]

    apply(new, vhost, migrate=True)

    assert queue_rows(vhost)["q"]["type"] == "quorum"
    assert bindings_to(vhost, "q") == {("x", "q")}
    assert_converged(new, vhost)
    found = ids_in(vhost, "q")
    assert set(found) == set(ids)
    assert sum(found.values()) - len(found) <= 2000  # at most a prefetch's worth again


def test_a_migration_cut_while_moving_back_is_finished_by_the_next_apply(
    vhost: Vhost, broker: ManagementAPI
) -> None:
    old, new = spec_of({"q": Shape()}), spec_of({"q": Shape(max_length=100_000)})
    apply(old, vhost)
    ids = fill(vhost, "q", 20_000)
    temp = temporary_queue("q")

    def cut(queue: str, moved: int) -> None:
        if queue == temp and moved >= 5000:
            raise KeyboardInterrupt  # the process is stopped: nothing cleans up

    with pytest.raises(KeyboardInterrupt):
        run(converge_with_moved(new, vhost, cut))

    pending = plan(new, vhost).plan
    (change,) = pending.changes
    assert (change.action, change.name, change.drains_into) == (Action.DELETE, temp, "q")
    assert change.loses_data
    assert "a cut migration of q" in change.describe()
    with pytest.raises(DataLossRefused, match=r"cut migration of queue 'q'"):
        apply(new, vhost)
    assert temp not in {c.name for c in plan(new, vhost, prune=True).plan.changes[1:]}

    done = apply(new, vhost, migrate=True)

    assert [m.moved_back > 0 for m in done.result.migrations] == [True]
    assert bindings_to(vhost, "q") == {("x", "q")}
    assert_converged(new, vhost)
    found = ids_in(vhost, "q")
    assert set(found) == set(ids)


def test_a_migration_cut_after_the_old_queue_was_deleted_is_finished(vhost: Vhost) -> None:
    """What M5 leaves: the queue gone, its messages and bindings on the temporary queue."""
    new = spec_of({"q": Shape(QueueType.QUORUM)})
    temp = temporary_queue("q")

    async def leave_the_cut_state() -> None:
        async with channel_on(vhost) as channel:
            await channel.exchange_declare("x", exchange_type="direct", durable=True)
            await channel.queue_declare(temp, durable=True)
            await channel.queue_bind(temp, "x", "q")
            await channel.queue_bind(temp, "amq.topic", "run.time.#")  # not in the spec

    run(leave_the_cut_state())
    ids = fill(vhost, "q", 500)  # routed to the temporary queue
    assert "q" not in vhost.queue_names()

    apply(new, vhost, migrate=True)

    assert queue_rows(vhost)["q"]["type"] == "quorum"
    assert bindings_to(vhost, "q") == {("x", "q"), ("amq.topic", "run.time.#")}
    assert_converged(new, vhost)
    assert list(ids_in(vhost, "q").elements()) == ids


def test_a_long_queue_name_has_a_temporary_queue_within_the_limit(vhost: Vhost) -> None:
    name = "q" * 250
    assert len(temporary_queue(name).encode()) <= 255
    assert temporary_queue(name) == temporary_queue(name) != temporary_queue(name[:-1])
    apply(spec_of({name: Shape()}), vhost)
    fill(vhost, name, 50)

    apply(spec_of({name: Shape(QueueType.QUORUM)}), vhost, migrate=True)

    assert len(ids_in(vhost, name)) == 50
    assert_converged(spec_of({name: Shape(QueueType.QUORUM)}), vhost)


async def converge_with_moved(
    spec: Spec, vhost: Vhost, moved: Callable[[str, int], None]
) -> converge.Converged:
    """``converge.apply`` with ``--migrate``, its executor's ``moved`` hook set."""
    from rabbitry.broker import apply as executor  # noqa: PLC0415

    url = url_of(vhost)
    planned = await converge.plan(spec, url, timeout=TIMEOUT)
    result = await executor.execute(planned.plan, url, migrate=True, timeout=TIMEOUT, moved=moved)
    return converge.Converged(planned, result)


# -- the property: random changes under a running publisher ----------------------------------

SHAPES = st.builds(
    Shape,
    type=st.sampled_from([QueueType.CLASSIC, QueueType.QUORUM]),
    durable=st.booleans(),
    message_ttl=st.sampled_from([None, 600_000, 1_200_000]),
    max_length=st.sampled_from([None, 100_000, 200_000]),
    dead_letter=st.sampled_from([None, "dlx"]),
).map(lambda s: s if s.type is QueueType.CLASSIC else Shape(s.type, True, *_rest(s)))


def _rest(s: Shape) -> tuple[int | None, int | None, str | None]:
    return s.message_ttl, s.max_length, s.dead_letter


LIMITS = st.builds(
    Limits,
    message_ttl=st.sampled_from([None, 900_000, 1_800_000]),
    max_length=st.sampled_from([None, 150_000, 300_000]),
    dead_letter=st.sampled_from([None, "dlx"]),
)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    before=st.fixed_dictionaries({"a": SHAPES, "b": SHAPES}),
    after=st.fixed_dictionaries({"a": SHAPES, "b": SHAPES}),
    policies_before=st.fixed_dictionaries({"a": LIMITS, "b": LIMITS}),
    policies_after=st.fixed_dictionaries({"a": LIMITS, "b": LIMITS}),
    held=st.integers(0, 400),
)
def test_random_changes_under_a_publisher_lose_nothing(  # noqa: PLR0917 - hypothesis
    broker: ManagementAPI,
    before: dict[str, Shape],
    after: dict[str, Shape],
    policies_before: dict[str, Limits],
    policies_after: dict[str, Limits],
    held: int,
) -> None:
    """Settings, policies and queue types changed at random, applied with ``--migrate``
    while a publisher runs: every confirmed message is in its queue, the plan is empty."""
    old, new = spec_of(before, policies_before), spec_of(after, policies_after)
    for vhost in fresh_vhost(broker):
        apply(old, vhost)
        filled = {name: fill(vhost, name, held) for name in before}

        done, publisher = run(
            while_publishing(
                vhost,
                ("a", "b"),
                lambda vhost=vhost: converge.apply(
                    new, url_of(vhost), timeout=TIMEOUT, migrate=True
                ),
            )
        )

        changes = done.planned.plan.changes
        replaced = {c.name for c in changes if c.action is Action.REPLACE}
        assert {m.queue for m in done.result.migrations} == replaced
        # A policy change is carried out in place: never a replace of its queue.
        assert all(c.action is not Action.REPLACE for c in changes if c.kind is Kind.POLICY)
        assert not publisher.failed
        assert publisher.returned == 0
        assert_converged(new, vhost)
        for name in ("a", "b"):
            found = ids_in(vhost, name)
            confirmed = set(filled[name]) | set(publisher.confirmed.get(name, []))
            assert not confirmed - set(found), name
            assert not set(found) - confirmed, name
            assert sum(found.values()) - len(found) <= 100, f"{name}: duplicates"


def test_a_temporary_queue_deleted_under_the_mover_stops_it_before_any_more_acks(
    vhost: Vhost, broker: ManagementAPI
) -> None:
    """A copy that comes back (``basic.return``: no queue by that name) is never acked,
    whether or not the message has a ``message_id`` to match the return by."""
    old, new = spec_of({"q": Shape()}), spec_of({"q": Shape(QueueType.QUORUM)})
    apply(old, vhost)
    sent = [
        (key, body, Basic.Properties(delivery_mode=2))
        for key, body, _ in varied_messages("q", 6000)
    ]
    run(publish_all(vhost, sent))  # no message_id on any
    temp = temporary_queue("q")
    deleted: list[int] = []

    def delete_temporary(queue: str, moved: int) -> None:
        if queue == "q" and moved >= 1000 and not deleted:
            deleted.append(moved)
            path = f"/api/queues/{quote(vhost.name, safe='')}/{quote(temp, safe='')}"
            broker._request("DELETE", path)

    with pytest.raises(BrokerError, match=rf"queue '{temp}' disappeared"):
        run(converge_with_moved(new, vhost, delete_temporary))

    # What was acked went to the deleted queue (deleted on purpose here); nothing after.
    left = len(drain(vhost, "q"))
    assert deleted
    assert left >= 6000 - deleted[0] - 1000  # at most what was confirmed before the delete


# -- the command line ----------------------------------------------------------------------

CLI_SPEC = """\
version: 1
exchanges:
  x: {type: direct}
queues:
  q: {type: TYPE}
bindings:
  - {from: x, queue: q, key: q}
"""


def test_the_command_line_names_migrate_then_migrates_and_says_what_it_moved(
    vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text(CLI_SPEC.replace("TYPE", "classic"))
    assert run_cli(["apply", str(path), "--url", vhost.amqp_url], capsys)[0] == 0
    ids = fill(vhost, "q", 50)
    path.write_text(CLI_SPEC.replace("TYPE", "quorum"))

    code, out, err = run_cli(["apply", str(path), "--url", vhost.amqp_url], capsys)
    assert code == 1
    assert "--migrate" in err

    code, out, err = run_cli(["apply", str(path), "--url", vhost.amqp_url, "--migrate"], capsys)
    assert code == 0, out + err
    assert f"migrated queue q: 50 messages moved out to {PREFIX}q and 50 back" in out
    code, out, _ = run_cli(["plan", str(path), "--url", vhost.amqp_url], capsys)
    assert code == 0, out
    assert queue_rows(vhost)["q"]["type"] == "quorum"
    assert ids_in(vhost, "q") == Counter(ids)
