"""Reading a vhost's live state: the management API, its errors, and the AMQP fallback.

Everything runs against the real broker in a fresh vhost; objects are declared
over aiormq the way ``apply`` would, then read back and compared with
``state.desired(spec)``.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import aiormq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp.commands import Basic

from broker import ManagementAPI, Vhost, fresh_vhost, made_user
from rabbitry.broker.live import AMQP, MANAGEMENT, BlindSpot, LiveState, read_live
from rabbitry.broker.management import read_vhost
from rabbitry.broker.plan import diff
from rabbitry.broker.state import (
    BindingState,
    ExchangeState,
    Flag,
    QueueState,
    Topology,
    desired,
    normalise_arguments,
)
from rabbitry.broker.url import BrokerURL, parse_url
from rabbitry.errors import BrokerTimeout, ConnectionFailed, ManagementError
from rabbitry.spec import Binding, Exchange, ExchangeType, Queue, QueueType, Spec, read

T = TypeVar("T")

DEADLINE = 30.0
TIMEOUT = 10.0
SECRET = "not-the-password-" + uuid.uuid4().hex[:8]
CLOSED_PORT = "http://127.0.0.1:1"

SPEC = """\
version: 1
exchanges:
  orders: {type: topic}
  audit: {type: fanout, alternate_exchange: orders}
  docs: {type: headers}
  direct.in: {type: direct, durable: false, auto_delete: true}
queues:
  orders.work: {type: quorum, dead_letter: audit, delivery_limit: 5}
  orders.dead: {message_ttl: 60000, max_length: 100, max_length_bytes: 1099511627776}
  orders.log: {type: stream, max_age: 7D, max_segment_size_bytes: 5000000}
  pdfs: {max_priority: 5, single_active_consumer: true}
  scratch: {durable: false, auto_delete: true}
  watch: {exclusive: true}
bindings:
  - {from: orders, queue: orders.work, key: "order.#"}
  - {from: orders, exchange: audit, key: "#"}
  - {from: audit, queue: orders.log}
  - {from: docs, queue: pdfs, match: all, headers: {format: pdf, pages: 3, size: 40000}}
  - {from: direct.in, queue: scratch, key: scratch}
  - {from: amq.topic, queue: orders.dead, key: "dead.#"}
  - {from: orders, queue: watch, key: "{order_id}"}
"""


def run(coroutine: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, DEADLINE)

    return asyncio.run(bounded())


def url_of(target: Vhost, /, **changes: Any) -> BrokerURL:
    """``target``'s URL (its management API's too), with ``changes`` to its fields.

    The management URL is taken as derived, not given: when it fails, the state
    is read over AMQP (test_honest_plan.py covers a URL given explicitly).
    """
    url = parse_url(target.amqp_url, management=target.management_url)
    return replace(url, **{"management_required": False, **changes})


@asynccontextmanager
async def channel_on(url: BrokerURL) -> AsyncIterator[Any]:
    connection = await aiormq.connect(url.amqp)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def declare(channel: Any, topology: Topology) -> None:
    """Declare ``topology`` as apply would: exchanges, queues, then bindings."""
    for e in topology.exchanges.values():
        await channel.exchange_declare(
            e.name,
            exchange_type=e.type,
            durable=e.durable,
            auto_delete=e.auto_delete,
            internal=e.internal,
            arguments=dict(e.arguments),
        )
    for q in topology.queues.values():
        await channel.queue_declare(
            q.name,
            durable=q.durable,
            exclusive=q.exclusive,
            auto_delete=q.auto_delete,
            arguments=q.declare_arguments(),
        )
    for b in sorted(topology.bindings, key=BindingState.sort_key):
        bind = channel.queue_bind if b.destination_type == "queue" else channel.exchange_bind
        await bind(
            b.destination, b.source, routing_key=b.routing_key, arguments=b.declare_arguments()
        )


def load_spec(tmp_path: Path, text: str = SPEC) -> Spec:
    path = tmp_path / "topology.yaml"
    path.write_text(textwrap.dedent(text))
    spec, problems = read(path)
    assert spec is not None
    assert not [p for p in problems if p.severity.value == "error"], problems
    return spec


def restricted(have: Topology, want: Topology) -> Topology:
    """``have``'s exchanges and queues that ``want`` names; all its bindings."""
    return Topology(
        {name: have.exchanges[name] for name in want.exchanges if name in have.exchanges},
        {name: have.queues[name] for name in want.queues if name in have.queues},
        have.bindings,
    )


# -- the management API ---------------------------------------------------------------------------


async def declare_by_hand(channel: Any) -> None:
    """Every kind of object, with integers that aiormq encodes in different widths."""
    await channel.exchange_declare("t", exchange_type="topic", durable=True)
    await channel.exchange_declare(
        "h", exchange_type="headers", durable=True, arguments={"alternate-exchange": "t"}
    )
    await channel.queue_declare(
        "c",
        durable=True,
        arguments={
            "x-message-ttl": 40000,  # unsigned short
            "x-max-length": 1000,  # short
            "x-max-length-bytes": 2**40,  # long long
            "x-max-priority": 5,  # byte
            "x-expires": 3_000_000_000,  # unsigned int
            "x-dead-letter-exchange": "t",
            "x-single-active-consumer": True,
        },
    )
    await channel.queue_declare(
        "q", durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 100000}
    )
    await channel.queue_declare(
        "s", durable=True, arguments={"x-queue-type": "stream", "x-max-age": "7D"}
    )
    await channel.queue_declare("tmp", durable=False, auto_delete=True)
    await channel.queue_declare("mine", exclusive=True)
    await channel.queue_bind("c", "t", routing_key="a.#")
    await channel.exchange_bind("h", "t", routing_key="#")  # t → exchange h
    await channel.queue_bind(
        "q", "h", arguments={"x-match": "any", "format": "pdf", "pages": 3, "size": 2**40}
    )


EXPECTED = Topology(
    exchanges={
        "t": ExchangeState("t", "topic"),
        "h": ExchangeState("h", "headers", arguments=(("alternate-exchange", "t"),)),
    },
    queues={
        "c": QueueState(
            "c",
            arguments=normalise_arguments(
                {
                    "x-message-ttl": 40000,
                    "x-max-length": 1000,
                    "x-max-length-bytes": 2**40,
                    "x-max-priority": 5,
                    "x-expires": 3_000_000_000,
                    "x-dead-letter-exchange": "t",
                    "x-single-active-consumer": True,
                }
            ),
        ),
        "q": QueueState("q", "quorum", arguments=(("x-delivery-limit", 100000),)),
        "s": QueueState("s", "stream", arguments=(("x-max-age", "7D"),)),
        "tmp": QueueState("tmp", durable=False, auto_delete=True),
        "mine": QueueState("mine", durable=False, exclusive=True),
    },
    bindings=frozenset(
        {
            BindingState("t", "queue", "c", "a.#"),
            BindingState("t", "exchange", "h", "#"),
            BindingState(
                "h",
                "queue",
                "q",
                "",
                normalise_arguments({"x-match": "any", "format": "pdf", "pages": 3, "size": 2**40}),
            ),
        }
    ),
)


def test_read_vhost_gives_the_normalised_topology(vhost: Vhost) -> None:
    url = url_of(vhost)

    async def scenario() -> Topology:
        async with channel_on(url) as channel:
            await declare_by_hand(channel)
            return await read_vhost(url, timeout=TIMEOUT)  # "mine" lives while connected

    have = run(scenario())

    assert {n: e for n, e in have.exchanges.items() if n in EXPECTED.exchanges} == dict(
        EXPECTED.exchanges
    )
    assert {"", "amq.direct", "amq.topic", "amq.headers"} <= set(have.exchanges)
    assert have.queues == EXPECTED.queues
    assert have.bindings == EXPECTED.bindings  # no default-exchange bindings
    assert {type(v) for q in have.queues.values() for _, v in q.arguments} == {int, Flag, str}


def test_counts_are_right_at_once_through_read_live_and_settle_in_the_api(vhost: Vhost) -> None:
    url = url_of(vhost)
    spec = Spec(path=Path("empty.yaml"))  # every queue is one plan may delete: counts matter

    async def scenario() -> tuple[LiveState, Topology]:
        connection = await aiormq.connect(url.amqp)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.queue_declare("full", durable=True)
            await channel.queue_declare("busy", durable=True)
            await channel.basic_consume("busy", ignore)
            for n in range(3):
                confirmation = await channel.basic_publish(
                    f"m{n}".encode(), routing_key="full", mandatory=True
                )
                assert isinstance(confirmation, Basic.Ack)
            live = await read_live(url, spec, timeout=TIMEOUT)  # before any statistics
            settled = await poll_until_counts(url, {"full": (3, 0), "busy": (0, 1)})
            return live, settled
        finally:
            await connection.close()

    live, settled = run(scenario())

    assert live.source == MANAGEMENT
    assert live.blind_spots == ()
    assert counts(live.topology) == {"full": (3, 0), "busy": (0, 1)}
    assert counts(settled) == {"full": (3, 0), "busy": (0, 1)}


async def ignore(message: Any) -> None:
    """A consumer that does nothing (its queue stays empty)."""


def counts(topology: Topology) -> dict[str, tuple[int | None, int | None]]:
    return {name: (q.messages, q.consumers) for name, q in topology.queues.items()}


async def poll_until_counts(
    url: BrokerURL, want: dict[str, tuple[int, int]], within: float = 15.0
) -> Topology:
    """The API's topology once its statistics show ``want`` (they lag by up to ~5 s)."""
    deadline = time.monotonic() + within
    while True:
        have = await read_vhost(url, timeout=TIMEOUT)
        if counts(have) == want or time.monotonic() > deadline:
            return have
        await asyncio.sleep(0.25)


def test_a_vhost_declared_from_a_spec_reads_back_as_desired(vhost: Vhost, tmp_path: Path) -> None:
    spec = load_spec(tmp_path)
    want = desired(spec)
    url = url_of(vhost)

    async def scenario() -> tuple[Topology, LiveState]:
        async with channel_on(url) as channel:
            await declare(channel, want)
            return await read_vhost(url, timeout=TIMEOUT), await read_live(
                url, spec, timeout=TIMEOUT
            )

    have, live = run(scenario())

    assert restricted(have, want) == want
    assert have.bindings == want.bindings
    assert live.topology == have
    assert live.blind_spots == ()
    assert live.can_prune
    plan = diff(want, live.topology, spec, prune=True)
    assert plan.empty, [c.describe() for c in plan.changes]


def test_drift_shows_field_by_field_with_what_the_queue_holds(vhost: Vhost, tmp_path: Path) -> None:
    spec = load_spec(tmp_path)
    want = desired(spec)
    url = url_of(vhost)
    drifted = replace(want.queues["orders.dead"], arguments=(("x-message-ttl", 600000),))

    async def scenario() -> LiveState:
        async with channel_on(url) as channel:
            await declare(channel, replace(want, queues={**want.queues, "orders.dead": drifted}))
            await channel.basic_publish(b"kept", routing_key="orders.dead")
            await channel.queue_declare("stray", durable=True)
            return await read_live(url, spec, timeout=TIMEOUT)

    live = run(scenario())
    plan = diff(want, live.topology, spec, prune=True)

    by_name = {(c.action.value, c.name): c for c in plan.changes}
    replaced = by_name["replace", "orders.dead"]
    shown = " ".join(f.describe() for f in replaced.fields)
    assert "x-message-ttl" in shown
    assert "600000 → 60000" in shown
    assert (replaced.messages, replaced.consumers) == (1, 0)
    stray = by_name["delete", "stray"]
    assert (stray.messages, stray.consumers) == (0, 0)


# -- errors ---------------------------------------------------------------------------------------


def test_wrong_password_is_refused_without_showing_it(vhost: Vhost, tmp_path: Path) -> None:
    url = url_of(vhost, password=SECRET)

    with pytest.raises(ConnectionFailed) as from_api:
        run(read_vhost(url, timeout=TIMEOUT))
    with pytest.raises(ConnectionFailed) as from_live:
        run(read_live(url, load_spec(tmp_path), timeout=TIMEOUT))

    for error in (from_api.value, from_live.value):
        assert "refused the login of user 'guest'" in str(error)
        assert SECRET not in str(error)
        assert SECRET not in repr(error.__cause__) + repr(error.__context__)


def test_missing_vhost_is_named(vhost: Vhost, tmp_path: Path) -> None:
    url = url_of(vhost, vhost=vhost.name + "-gone")

    with pytest.raises(ConnectionFailed, match=r"no vhost 'rabbitry-test-\w+-gone'"):
        run(read_vhost(url, timeout=TIMEOUT))
    with pytest.raises(ConnectionFailed, match="no vhost"):
        run(read_live(url, load_spec(tmp_path), timeout=TIMEOUT))


def test_closed_management_port_says_how_to_enable_the_api(vhost: Vhost) -> None:
    url = url_of(vhost, management_override=CLOSED_PORT)

    with pytest.raises(ManagementError) as caught:
        run(read_vhost(url, timeout=TIMEOUT))

    message = str(caught.value)
    assert "127.0.0.1:1" in message
    assert "rabbitmq-plugins enable rabbitmq_management" in message
    assert "management=" in message


def test_an_odd_vhost_name_is_quoted(broker: ManagementAPI, vhost: Vhost) -> None:
    name = f"{vhost.name}/odd name%"
    broker.create_vhost(name)
    try:
        url = url_of(vhost, vhost=name)

        async def scenario() -> Topology:
            async with channel_on(url) as channel:
                await channel.queue_declare("here", durable=True)
            return await read_vhost(url, timeout=TIMEOUT)

        assert set(run(scenario()).queues) == {"here"}
    finally:
        broker.delete_vhost(name)


@asynccontextmanager
async def fake_api(
    respond: Callable[[asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """An HTTP server on a free local port that answers every request with ``respond``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await respond(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


def answer(status: str, body: bytes) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    async def respond(writer: asyncio.StreamWriter) -> None:
        head = f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()

    return respond


async def never(writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(3600)


@pytest.mark.parametrize(
    ("respond", "error", "words"),
    [
        pytest.param(never, BrokerTimeout, "did not answer in time", id="hangs"),
        pytest.param(
            answer("500 Internal Server Error", b'{"error":"boom","reason":"it broke"}'),
            ManagementError,
            "answered HTTP 500 for /api/",
            id="500",
        ),
        pytest.param(
            answer("404 Not Found", b"<html>nothing here</html>"),
            ManagementError,
            "has no RabbitMQ management API at /api/",
            id="not-rabbitmq",
        ),
        pytest.param(
            answer("200 OK", b"<html>hello</html>"),
            ManagementError,
            "not the RabbitMQ management API's JSON",
            id="not-json",
        ),
    ],
)
def test_a_broken_api_is_one_mapped_error(
    respond: Callable[[asyncio.StreamWriter], Awaitable[None]], error: type, words: str
) -> None:
    async def scenario() -> None:
        async with fake_api(respond) as api:
            url = parse_url(f"amqp://guest:{SECRET}@127.0.0.1:5672/v", management=api)
            await read_vhost(url, timeout=0.5)

    with pytest.raises(error) as caught:
        run(scenario())

    assert words in str(caught.value)
    assert "127.0.0.1:" in str(caught.value)
    assert SECRET not in str(caught.value)


# -- the AMQP fallback ----------------------------------------------------------------------------


def test_without_the_api_passive_declares_find_what_exists(vhost: Vhost, tmp_path: Path) -> None:
    spec = load_spec(tmp_path)
    want = desired(spec)
    url = url_of(vhost, management_override=CLOSED_PORT)
    present = {"orders", "audit"}
    partial = Topology(
        {n: e for n, e in want.exchanges.items() if n in present},
        {n: q for n, q in want.queues.items() if n in {"orders.work", "orders.dead"}},
        frozenset(b for b in want.bindings if b.destination in {"orders.work", "audit"}),
    )

    async def scenario() -> LiveState:
        async with channel_on(url) as channel:
            await declare(channel, partial)
            await channel.basic_publish(b"one", routing_key="orders.dead")
            await channel.basic_publish(b"two", routing_key="orders.dead")
            await channel.queue_declare("stray", durable=True)  # not in the spec: unseen
            return await read_live(url, spec, timeout=TIMEOUT)

    live = run(scenario())

    assert live.source == AMQP
    assert not live.can_prune
    assert not live.sees_bindings
    assert live.fallback_reason is not None
    assert "127.0.0.1:1 is not reachable" in live.fallback_reason
    assert {BlindSpot.BINDINGS, BlindSpot.POLICIES, BlindSpot.UNMANAGED} <= set(live.blind_spots)
    assert live.topology.exchanges == {n: want.exchanges[n] for n in present}
    assert set(live.topology.queues) == {"orders.work", "orders.dead"}
    assert counts(live.topology) == {"orders.work": (0, 0), "orders.dead": (2, 0)}
    assert live.topology.bindings == {
        b
        for b in want.bindings
        if b.destination in {"orders.work", "audit", "orders.dead"}
        and b.source in {"orders", "amq.topic"}
    }  # assumed present where both ends exist, amq.topic → orders.dead included
    plan = diff(want, live.topology, spec)
    assert {(c.action.value, c.name) for c in plan.changes if c.kind.value != "binding"} == {
        ("create", "docs"),
        ("create", "direct.in"),
        ("create", "orders.log"),
        ("create", "pdfs"),
        ("create", "scratch"),
    }
    assert plan.unmanaged == ()  # "stray" is invisible over AMQP


def test_amqp_only_on_request_and_with_everything_present(vhost: Vhost, tmp_path: Path) -> None:
    spec = load_spec(tmp_path)
    want = desired(spec)
    url = url_of(vhost)

    async def scenario() -> LiveState:
        async with channel_on(url) as channel:
            await declare(channel, want)
        return await read_live(url, spec, management=False, timeout=TIMEOUT)

    live = run(scenario())

    assert live.source == AMQP
    assert live.fallback_reason == "the management API was not asked"
    assert BlindSpot.STREAM_COUNTS in live.blind_spots
    assert live.topology == want
    assert live.topology.queues["orders.log"].messages is None  # a stream's count is unknown
    assert diff(want, live.topology, spec).empty


def test_a_user_the_api_refuses_falls_back_to_amqp(
    broker: ManagementAPI, vhost: Vhost, tmp_path: Path
) -> None:
    spec = load_spec(tmp_path)
    with made_user(broker, vhost.name, tags="") as (name, password):
        url = url_of(vhost, username=name, password=password)

        with pytest.raises(ConnectionFailed, match="not a management user") as caught:
            run(read_vhost(url, timeout=TIMEOUT))
        live = run(read_live(url, spec, timeout=TIMEOUT))

    assert password not in str(caught.value)
    assert live.source == AMQP
    assert live.fallback_reason is not None
    assert "not a management user" in live.fallback_reason
    assert live.topology == Topology()


def test_a_user_without_permissions_on_the_vhost_is_told_so(
    broker: ManagementAPI, vhost: Vhost, tmp_path: Path
) -> None:
    with made_user(broker, None, tags="management") as (name, password):
        url = url_of(vhost, username=name, password=password)

        with pytest.raises(ConnectionFailed, match=f"user '{name}' may not use vhost") as api:
            run(read_vhost(url, timeout=TIMEOUT))
        with pytest.raises(ConnectionFailed, match=f"no vhost .* that user '{name}' may use"):
            run(read_live(url, load_spec(tmp_path), timeout=TIMEOUT))

    assert password not in str(api.value)


# -- property: random small topologies read back as declared -------------------------------------

_names = st.sampled_from(["a", "b", "c", "d"])
_ints = st.sampled_from([0, 1, 127, 128, 40000, 70000, 3_000_000_000, 2**40])
_ttls = st.sampled_from([0, 1, 127, 128, 40000, 70000, 3_000_000_000])  # TTLs stop at 2**32


@st.composite
def small_specs(draw: st.DrawFn) -> Spec:
    exchanges = {
        f"x.{n}": Exchange(f"x.{n}", draw(st.sampled_from(list(ExchangeType))))
        for n in draw(st.sets(_names, min_size=1, max_size=2))
    }
    queues = {}
    for n in draw(st.sets(_names, min_size=1, max_size=3)):
        kind = draw(st.sampled_from([QueueType.CLASSIC] * 4 + [QueueType.QUORUM]))
        arguments: dict[str, Any] = {}
        if draw(st.booleans()):
            arguments["x-max-length"] = draw(_ints)
        if draw(st.booleans()):
            arguments["x-message-ttl"] = draw(_ttls)
        if kind is QueueType.QUORUM and draw(st.booleans()):
            arguments["x-delivery-limit"] = draw(_ints)
        if kind is QueueType.CLASSIC and draw(st.booleans()):
            arguments["x-max-priority"] = draw(st.sampled_from([1, 10, 255]))
        queues[f"q.{n}"] = Queue(f"q.{n}", kind, arguments=arguments)
    bindings = []
    for _ in range(draw(st.integers(0, 4))):
        source = draw(st.sampled_from(sorted(exchanges)))
        headers = exchanges[source].type is ExchangeType.HEADERS
        bindings.append(
            Binding(
                source,
                draw(st.sampled_from(sorted(queues))),
                key="" if headers else draw(st.sampled_from(["", "k", "k.#", "*.v"])),
                headers={"n": draw(_ints), "f": "x"} if headers else {},
            )
        )
    return Spec(Path("random.yaml"), exchanges=exchanges, queues=queues, bindings=tuple(bindings))


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=small_specs())
def test_random_topologies_read_back_as_desired(broker: ManagementAPI, spec: Spec) -> None:
    lifecycle = fresh_vhost(broker)
    vhost = next(lifecycle)
    try:
        want = desired(spec)
        url = url_of(vhost)

        async def scenario() -> Topology:
            async with channel_on(url) as channel:
                await declare(channel, want)
            return await read_vhost(url, timeout=TIMEOUT)

        have = run(scenario())

        assert restricted(have, want) == want
        assert have.bindings == want.bindings
        assert diff(want, have, spec, prune=True).empty
    finally:
        lifecycle.close()
