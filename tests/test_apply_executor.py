"""The apply executor against the real broker: plans built by hand, each test in a fresh vhost."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiormq
import pytest
from pamqp.commands import Basic

from broker import Vhost
from rabbitry.broker.apply import ApplyResult, execute
from rabbitry.broker.plan import Action, Kind, Plan, diff
from rabbitry.broker.state import BindingState, ExchangeState, QueueState, Topology, desired
from rabbitry.broker.url import BrokerURL, parse_url
from rabbitry.errors import (
    AccessRefused,
    BrokerTimeout,
    ConnectionFailed,
    DataLossRefused,
    NotFound,
    PreconditionFailed,
)
from rabbitry.spec.model import (
    Binding,
    Exchange,
    ExchangeType,
    HeadersMatch,
    Queue,
    QueueType,
    Spec,
)

T = TypeVar("T")
EMPTY = Topology()


def run(coroutine: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, 60)

    return asyncio.run(bounded())


def url_of(vhost: Vhost) -> BrokerURL:
    return parse_url(vhost.amqp_url)


def apply(plan: Plan, vhost: Vhost, **options: Any) -> ApplyResult:
    return run(execute(plan, url_of(vhost), **options))


async def on_channel(vhost: Vhost, action: Callable[[Any], Awaitable[T]]) -> T:
    connection = await aiormq.connect(vhost.amqp_url)
    try:
        return await action(await connection.channel())
    finally:
        await connection.close()


def messages_in(vhost: Vhost, queue: str) -> int:
    """The broker's count right now (a passive declare; the management API lags)."""

    async def count(channel: Any) -> int:
        ok = await channel.queue_declare(queue, passive=True)
        return int(ok.message_count)

    return run(on_channel(vhost, count))


def publish(vhost: Vhost, queue: str, body: bytes = b"keep me") -> None:
    async def send(channel: Any) -> None:
        confirmation = await channel.basic_publish(
            body, routing_key=queue, mandatory=True, properties=Basic.Properties(delivery_mode=2)
        )
        assert isinstance(confirmation, Basic.Ack)

    run(on_channel(vhost, send))


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def bindings_of(vhost: Vhost) -> set[tuple[str, str, str, str, tuple[tuple[str, Any], ...]]]:
    """(source, destination type, destination, key, arguments) of each non-default binding."""
    return {
        (
            b["source"],
            b["destination_type"],
            b["destination"],
            b["routing_key"],
            tuple(sorted(b["arguments"].items())),
        )
        for b in vhost.bindings()
        if b["source"]
    }


# -- a spec using every kind of object -------------------------------------------


def everything() -> Spec:
    exchanges = [
        Exchange("orders", ExchangeType.TOPIC, arguments={"alternate-exchange": "lost"}),
        Exchange("lost", ExchangeType.FANOUT, arguments={"x-audit": True}),
        Exchange("fan", ExchangeType.FANOUT, durable=False, auto_delete=True),
        Exchange("direct", ExchangeType.DIRECT),
        Exchange("docs", ExchangeType.HEADERS),
        Exchange("inner", ExchangeType.TOPIC, internal=True),
    ]
    queues = [
        Queue(
            "orders.all",
            QueueType.QUORUM,
            arguments={"x-delivery-limit": 3, "x-dead-letter-exchange": "lost"},
        ),
        Queue("orders.log", QueueType.STREAM, arguments={"x-max-length-bytes": 100_000_000}),
        Queue("orders.lost", arguments={"x-message-ttl": 60_000, "x-max-length": 100}),
        Queue("pdfs", arguments={"x-max-priority": 5}),
        Queue("inner.q"),
        Queue("job-status", exclusive=True),  # run-time: not apply's
    ]
    bindings = (
        Binding("orders", "orders.all", key="order.#"),
        Binding("orders", "orders.log", key="#"),
        Binding("orders", "inner", destination_type="exchange", key="order.*.created"),
        Binding("inner", "inner.q", key="#"),
        Binding("lost", "orders.lost"),
        Binding("direct", "pdfs", key="pdf"),
        Binding("docs", "pdfs", match=HeadersMatch.ANY, headers={"format": "pdf", "kind": "inv"}),
        Binding("fan", "orders.lost"),
        Binding("orders", "job-status", key="{job_id}"),  # run-time: not apply's
    )
    return Spec(
        path=Path("topology.yaml"),
        exchanges={e.name: e for e in exchanges},
        queues={q.name: q for q in queues},
        bindings=bindings,
    )


def test_every_kind_of_object_is_created_as_the_spec_says(vhost: Vhost) -> None:
    plan = diff(desired(everything()), EMPTY)

    result = apply(plan, vhost)

    assert result.applied == len(plan.changes) == 6 + 5 + 8
    assert result.seconds > 0
    exchanges = by_name(vhost.exchanges())
    expected = {
        "orders": ("topic", True, False, False, {"alternate-exchange": "lost"}),
        "lost": ("fanout", True, False, False, {"x-audit": True}),
        "fan": ("fanout", False, True, False, {}),
        "direct": ("direct", True, False, False, {}),
        "docs": ("headers", True, False, False, {}),
        "inner": ("topic", True, False, True, {}),
    }
    for name, (kind, durable, auto_delete, internal, arguments) in expected.items():
        e = exchanges[name]
        assert (e["type"], e["durable"], e["auto_delete"], e["internal"]) == (
            kind,
            durable,
            auto_delete,
            internal,
        ), name
        assert e["arguments"] == arguments, name
    queues = by_name(vhost.queues())
    assert set(queues) == {"orders.all", "orders.log", "orders.lost", "pdfs", "inner.q"}
    assert {name: q["type"] for name, q in queues.items()} == {
        "orders.all": "quorum",
        "orders.log": "stream",
        "orders.lost": "classic",
        "pdfs": "classic",
        "inner.q": "classic",
    }
    assert all(q["durable"] and not q["auto_delete"] for q in queues.values())
    assert queues["orders.all"]["arguments"] == {
        "x-delivery-limit": 3,
        "x-dead-letter-exchange": "lost",
        "x-queue-type": "quorum",
    }
    assert queues["orders.log"]["arguments"]["x-max-length-bytes"] == 100_000_000
    assert queues["orders.lost"]["arguments"] == {"x-message-ttl": 60_000, "x-max-length": 100}
    assert queues["pdfs"]["arguments"] == {"x-max-priority": 5}
    assert bindings_of(vhost) == {
        ("orders", "queue", "orders.all", "order.#", ()),
        ("orders", "queue", "orders.log", "#", ()),
        ("orders", "exchange", "inner", "order.*.created", ()),
        ("inner", "queue", "inner.q", "#", ()),
        ("lost", "queue", "orders.lost", "", ()),
        ("direct", "queue", "pdfs", "pdf", ()),
        ("docs", "queue", "pdfs", "", (("format", "pdf"), ("kind", "inv"), ("x-match", "any"))),
        ("fan", "queue", "orders.lost", "", ()),
    }


def test_a_plan_of_creates_can_run_twice(vhost: Vhost) -> None:
    plan = diff(desired(everything()), EMPTY)
    apply(plan, vhost)
    before = (vhost.queue_names(), bindings_of(vhost))

    again = apply(plan, vhost)

    assert again.applied == len(plan.changes)
    assert (vhost.queue_names(), bindings_of(vhost)) == before


def test_progress_counts_up_to_the_total(vhost: Vhost) -> None:
    queues = {f"q{i:03d}": QueueState(f"q{i:03d}") for i in range(120)}
    bindings = frozenset(BindingState("amq.direct", "queue", name, name) for name in queues)
    plan = diff(Topology({}, queues, bindings), EMPTY)
    seen: list[tuple[int, int]] = []

    apply(plan, vhost, channels=4, progress=lambda done, total: seen.append((done, total)))

    done = [d for d, _ in seen]
    assert {t for _, t in seen} == {240}
    assert done[0] == 0
    assert done[-1] == 240
    assert done == sorted(done)
    assert len(set(done)) == len(done) > 2  # reported chunk by chunk, never twice
    assert len(vhost.queue_names()) == 120


def test_an_empty_plan_does_not_connect() -> None:
    result = run(execute(Plan(), parse_url("amqp://guest:guest@127.0.0.1:1/")))

    assert result.applied == 0


# -- data loss ---------------------------------------------------------------------

TTL_OLD, TTL_NEW = 600_000, 1_200_000


def jobs(ttl: int, *, messages: int | None = None, consumers: int | None = None) -> Topology:
    """x --k--> q, with q's TTL; the counts are what a live read would say."""
    queue = QueueState(
        "q", arguments=(("x-message-ttl", ttl),), messages=messages, consumers=consumers
    )
    return Topology(
        {"x": ExchangeState("x", "direct")},
        {"q": queue},
        frozenset({BindingState("x", "queue", "q", "k")}),
    )


def test_a_queue_holding_a_message_is_not_replaced_without_the_flag(vhost: Vhost) -> None:
    apply(diff(jobs(TTL_OLD), EMPTY), vhost)
    publish(vhost, "q")
    plan = diff(jobs(TTL_NEW), jobs(TTL_OLD, messages=1, consumers=0))
    assert [(c.action, c.kind) for c in plan.changes] == [
        (Action.REPLACE, Kind.QUEUE),
        (Action.CREATE, Kind.BINDING),
    ]

    with pytest.raises(DataLossRefused) as refused:
        apply(plan, vhost)

    text = str(refused.value)
    assert "queue 'q'" in text
    assert "1 message, 0 consumers" in text
    assert f"x-message-ttl: {TTL_OLD} → {TTL_NEW}" in text
    assert "allow_data_loss=True" in text
    assert messages_in(vhost, "q") == 1
    assert by_name(vhost.queues())["q"]["arguments"] == {"x-message-ttl": TTL_OLD}

    result = apply(plan, vhost, allow_data_loss=True)

    assert result.applied == 2
    assert by_name(vhost.queues())["q"]["arguments"] == {"x-message-ttl": TTL_NEW}
    assert messages_in(vhost, "q") == 0
    assert bindings_of(vhost) == {("x", "queue", "q", "k", ())}


def test_unknown_counts_are_refused_before_connecting() -> None:
    have = Topology(queues={"old": QueueState("old")})  # counts unknown: None
    plan = diff(EMPTY, have, prune=True)

    with pytest.raises(DataLossRefused, match="unknown number of messages"):
        run(execute(plan, parse_url("amqp://guest:guest@127.0.0.1:1/")))


def test_an_empty_queue_is_replaced_without_the_flag_but_only_while_empty(vhost: Vhost) -> None:
    apply(diff(jobs(TTL_OLD), EMPTY), vhost)
    plan = diff(jobs(TTL_NEW), jobs(TTL_OLD, messages=0, consumers=0))

    apply(plan, vhost)

    assert by_name(vhost.queues())["q"]["arguments"] == {"x-message-ttl": TTL_NEW}
    assert bindings_of(vhost) == {("x", "queue", "q", "k", ())}

    # A message arrives between the plan (which saw it empty) and the apply.
    publish(vhost, "q")
    stale = diff(jobs(TTL_OLD), jobs(TTL_NEW, messages=0, consumers=0))
    with pytest.raises(PreconditionFailed) as kept:
        apply(stale, vhost)

    assert "queue 'q'" in str(kept.value)
    assert "allow_data_loss=True" in str(kept.value)
    assert messages_in(vhost, "q") == 1


def test_prune_deletes_bindings_queues_and_exchanges(vhost: Vhost) -> None:
    have = Topology(
        {"a": ExchangeState("a", "topic"), "b": ExchangeState("b", "fanout")},
        {"gone": QueueState("gone", messages=0, consumers=0)},
        frozenset(
            {
                BindingState("a", "queue", "gone", "k.#"),
                BindingState("a", "exchange", "b", "#"),
                BindingState("amq.topic", "queue", "gone", "t"),
            }
        ),
    )
    apply(diff(have, EMPTY), vhost)
    assert len(bindings_of(vhost)) == 3
    plan = diff(EMPTY, have, prune=True)

    apply(plan, vhost)

    assert vhost.queue_names() == set()
    assert bindings_of(vhost) == set()
    assert {"a", "b"}.isdisjoint(by_name(vhost.exchanges()))


# -- broker errors -----------------------------------------------------------------


def many_queues(n: int) -> Topology:
    queues = {
        f"q.{i:03d}": QueueState(f"q.{i:03d}", arguments=(("x-max-length", 10),)) for i in range(n)
    }
    bindings = frozenset(BindingState("amq.topic", "queue", name, f"{name}.#") for name in queues)
    return Topology({}, queues, bindings)


def test_a_406_mid_run_names_the_object_stops_cleanly_and_a_re_run_converges(
    vhost: Vhost, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncio")
    run(on_channel(vhost, lambda ch: ch.queue_declare("q.137", durable=True)))  # no max-length
    plan = diff(many_queues(300), EMPTY)

    with pytest.raises(PreconditionFailed) as failed:
        apply(plan, vhost)

    message = str(failed.value)
    assert "queue 'q.137'" in message
    assert "inequivalent arg 'x-max-length'" in message
    assert "localhost:5672" in message or "127.0.0.1:5672" in message
    assert "guest@" not in message
    gc.collect()  # an unretrieved future's error is logged when it is collected
    err = capfd.readouterr().err
    for noise in ("Traceback", "unhandled exception", "never retrieved", "Exception ignored"):
        assert noise not in err
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
    assert bindings_of(vhost) == set()  # stopped before the binding stage

    run(on_channel(vhost, lambda ch: ch.queue_delete("q.137")))  # the operator's fix
    apply(plan, vhost)

    queues = by_name(vhost.queues())
    assert len(queues) == 300
    assert all(q["arguments"] == {"x-max-length": 10} for q in queues.values())
    assert len(bindings_of(vhost)) == 300


def test_an_exchange_declared_with_another_type_is_named(vhost: Vhost) -> None:
    run(
        on_channel(vhost, lambda ch: ch.exchange_declare("x", exchange_type="fanout", durable=True))
    )

    with pytest.raises(PreconditionFailed, match=r"\(exchange 'x'\).*inequivalent arg 'type'"):
        apply(diff(jobs(TTL_OLD), EMPTY), vhost)


def test_a_binding_to_a_missing_queue_is_named_among_the_chunk(vhost: Vhost) -> None:
    wanted = many_queues(40)
    ghost = BindingState("amq.topic", "queue", "q.010-ghost", "g.#")  # mid-chunk
    plan = diff(Topology({}, wanted.queues, wanted.bindings | {ghost}), EMPTY)

    with pytest.raises(NotFound) as missing:
        apply(plan, vhost, channels=2)

    assert [c.name for c in plan.changes].index(f"{ghost.describe()}") == 40 + 11
    assert "(binding amq.topic → queue q.010-ghost key 'g.#')" in str(missing.value)
    assert "no queue 'q.010-ghost'" in str(missing.value)


def test_a_reserved_exchange_name_is_refused_with_what_to_do(vhost: Vhost) -> None:
    plan = diff(Topology({"amq.mine": ExchangeState("amq.mine", "topic")}), EMPTY)

    with pytest.raises(AccessRefused, match=r"\(exchange 'amq.mine'\).*rename"):
        apply(plan, vhost)


@pytest.mark.parametrize(
    ("address", "what"),
    [("amqp://guest:s3cret@127.0.0.1:1/", "127.0.0.1:1"), (None, "no vhost")],
)
def test_an_unreachable_broker_or_missing_vhost_fails_to_connect(
    vhost: Vhost, address: str | None, what: str
) -> None:
    url = parse_url(address or vhost.amqp_url + "-missing")

    with pytest.raises(ConnectionFailed) as failed:
        run(execute(diff(jobs(TTL_OLD), EMPTY), url, timeout=5))

    assert what in str(failed.value)
    assert "s3cret" not in str(failed.value)


@contextlib.asynccontextmanager
async def mute_proxy(target: tuple[str, int], mute_after: bytes) -> AsyncIterator[int]:
    """A TCP proxy to ``target`` that stops forwarding once the client sends ``mute_after``."""
    muted = False
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool) -> None:
        nonlocal muted
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                muted = muted or (up and mute_after in data)
                if not muted:
                    writer.write(data)
                    await writer.drain()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        for args in ((reader, upstream_writer, True), (upstream_reader, writer, False)):
            task = asyncio.create_task(pipe(*args))
            tasks.add(task)
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in (writer, upstream_writer):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for task in tasks:
            task.cancel()
        server.close()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_a_declare_that_gets_no_answer_times_out_naming_the_queue(
    vhost: Vhost, caplog: pytest.LogCaptureFixture
) -> None:
    real = url_of(vhost)
    queue_declare = b"\x00\x32\x00\x0a"  # class 50 (queue), method 10 (declare)
    plan = diff(Topology({}, {"slow": QueueState("slow")}), EMPTY)

    async def scenario() -> None:
        async with mute_proxy((real.host, real.port), queue_declare) as port:
            url = parse_url(vhost.amqp_url.replace(f":{real.port}/", f":{port}/"))
            await execute(plan, url, timeout=1.0)

    caplog.set_level(logging.CRITICAL, logger="aiormq")  # it warns as it closes the channel
    with pytest.raises(BrokerTimeout, match=r"did not answer in time \(queue 'slow'\)"):
        run(scenario())


def test_an_exchange_of_another_type_is_replaced_with_its_bindings(vhost: Vhost) -> None:
    apply(diff(jobs(TTL_OLD), EMPTY), vhost)
    topic = jobs(TTL_OLD)
    want = Topology({"x": ExchangeState("x", "topic")}, topic.queues, topic.bindings)
    plan = diff(want, jobs(TTL_OLD, messages=0, consumers=0))
    assert [(c.action, c.kind) for c in plan.changes] == [
        (Action.REPLACE, Kind.EXCHANGE),
        (Action.CREATE, Kind.BINDING),
    ]

    apply(plan, vhost)

    assert by_name(vhost.exchanges())["x"]["type"] == "topic"
    assert bindings_of(vhost) == {("x", "queue", "q", "k", ())}


# -- migrate ---------------------------------------------------------------------------


def test_migrate_replaces_a_queue_holding_messages_and_keeps_them(vhost: Vhost) -> None:
    apply(diff(jobs(TTL_OLD), EMPTY), vhost)
    for _ in range(3):
        publish(vhost, "q")
    plan = diff(jobs(TTL_NEW), jobs(TTL_OLD, messages=3, consumers=0))
    seen: list[tuple[int, int]] = []
    moved: list[tuple[str, int]] = []

    result = apply(
        plan,
        vhost,
        migrate=True,
        progress=lambda done, total: seen.append((done, total)),
        moved=lambda queue, n: moved.append((queue, n)),
    )

    assert result.applied == 2
    assert seen[0] == (0, 2)
    assert seen[-1] == (2, 2)
    (migrated,) = result.migrations
    assert (migrated.queue, migrated.moved_out, migrated.moved_back) == ("q", 3, 3)
    assert moved[-1] == ("rabbitry.migrate.q", 3)
    assert by_name(vhost.queues())["q"]["arguments"] == {"x-message-ttl": TTL_NEW}
    assert messages_in(vhost, "q") == 3
    assert bindings_of(vhost) == {("x", "queue", "q", "k", ())}
    assert vhost.queue_names() == {"q"}


def test_without_migrate_the_refusal_names_it(vhost: Vhost) -> None:
    plan = diff(jobs(TTL_NEW), jobs(TTL_OLD, messages=1, consumers=0))

    with pytest.raises(DataLossRefused, match=r"apply again with migrate=True"):
        apply(plan, vhost)


def test_migrate_does_not_make_a_deletion_safe(vhost: Vhost) -> None:
    have = Topology(queues={"old": QueueState("old", messages=2, consumers=0)})
    plan = diff(EMPTY, have, prune=True)

    with pytest.raises(DataLossRefused) as refused:
        run(execute(plan, parse_url("amqp://guest:guest@127.0.0.1:1/"), migrate=True))

    assert "delete queue 'old'" in str(refused.value)
    assert "allow_data_loss=True" in str(refused.value)
    assert "migrate=True" not in str(refused.value)


def test_migrate_replaces_an_empty_unused_queue_by_moving_too(vhost: Vhost) -> None:
    """With --migrate even an empty queue is migrated: a plain delete-then-declare would
    lose what a running publisher sends in between."""
    apply(diff(jobs(TTL_OLD), EMPTY), vhost)
    plan = diff(jobs(TTL_NEW), jobs(TTL_OLD, messages=0, consumers=0))

    result = apply(plan, vhost, migrate=True)

    assert [m.queue for m in result.migrations] == ["q"]
    assert by_name(vhost.queues())["q"]["arguments"] == {"x-message-ttl": TTL_NEW}
    assert bindings_of(vhost) == {("x", "queue", "q", "k", ())}
