"""The routing model proven against RabbitMQ: random topologies, random messages, same queues.

Each example is a random topology — exchanges of every type (some internal,
some with an alternate exchange, cycles allowed), queues, queue and
exchange-to-exchange bindings (topic patterns over words with ``*``, ``#`` and
the empty word; headers bindings in every ``x-match`` mode with string,
integer, float, boolean and void values) — declared on the real broker (in a
fresh vhost for the test, deleted again after each example), and a handful
of messages (random keys with empty words, random
headers; the default exchange too) published with confirms, each with its
own message id.  Every queue is then drained with ``basic.get``: the queues
each message reached must be exactly those ``rabbitry.routing.route``
predicts.  Zero disagreements; the example count is bounded so it runs in CI
in seconds (``DIFFERENTIAL_EXAMPLES``, default 60).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiormq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pamqp import commands
from pamqp.commands import Basic

from broker import Vhost
from rabbitry.routing import route
from rabbitry.spec import Binding, Exchange, ExchangeType, HeadersMatch, Queue, Spec

EXAMPLES = int(os.environ.get("DIFFERENTIAL_EXAMPLES", "200"))

KEY_WORDS = st.sampled_from(["", "a", "b"])
PATTERN_WORDS = st.sampled_from(["", "a", "b", "*", "#"])
keys = st.lists(KEY_WORDS, max_size=4).map(".".join)
patterns = st.lists(PATTERN_WORDS, max_size=4).map(".".join)
direct_keys = st.one_of(keys, st.sampled_from(["a.*", "#", "*"]))
# Header values as AMQP tables carry them: 1 and 1.0 are equal at the top level, a
# boolean never equals a number, None is void (a binding's void only asks presence).
HEADER_VALUES = st.sampled_from(["a", "b", "", 1, 0, 2, 1.0, True, False, None])
HEADER_NAMES = st.sampled_from(["h", "k", "x-h"])
header_tables = st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=3)


@dataclass(frozen=True)
class Publish:
    exchange: str
    key: str
    headers: dict[str, Any]


@dataclass(frozen=True)
class Case:
    spec: Spec
    publishes: tuple[Publish, ...]

    def describe(self) -> str:
        lines = [
            f"exchange {e.name} {e.type} {dict(e.arguments)} internal={e.internal}"
            for e in self.spec.exchanges.values()
        ]
        lines += [f"queue {q}" for q in self.spec.queues]
        lines += [
            f"bind {b.source} -> {b.destination_type} {b.destination} key={b.key!r} "
            f"match={b.match} headers={dict(b.headers)}"
            for b in self.spec.bindings
        ]
        return "\n".join(lines)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    exchange_names = [f"x{i}" for i in range(draw(st.integers(1, 4)))]
    queue_names = [f"q{i}" for i in range(draw(st.integers(1, 4)))]
    exchanges: dict[str, Exchange] = {}
    for name in exchange_names:
        kind = draw(st.sampled_from(list(ExchangeType)))
        alternate = draw(st.one_of(st.none(), st.sampled_from(exchange_names)))
        arguments = {"alternate-exchange": alternate} if alternate else {}
        internal = draw(st.booleans()) if name != "x0" else False  # x0 takes publishes
        exchanges[name] = Exchange(
            name, kind, durable=False, internal=internal, arguments=MappingProxyType(arguments)
        )
    bindings: list[Binding] = []
    for _ in range(draw(st.integers(0, 8))):
        source = draw(st.sampled_from(exchange_names))
        to_exchange = draw(st.booleans()) and len(exchange_names) > 1
        destination = draw(st.sampled_from(exchange_names if to_exchange else queue_names))
        kind = exchanges[source].type
        if kind is ExchangeType.HEADERS:
            match = draw(st.sampled_from(list(HeadersMatch)))
            headers = draw(header_tables)
            binding = Binding(
                source,
                destination,
                "exchange" if to_exchange else "queue",
                match=match,
                headers=MappingProxyType(headers),
            )
        else:
            key = draw(patterns if kind is ExchangeType.TOPIC else direct_keys)
            if kind is ExchangeType.FANOUT:
                key = draw(st.sampled_from(["", key]))
            binding = Binding(source, destination, "exchange" if to_exchange else "queue", key=key)
        if binding not in bindings:
            bindings.append(binding)
    # Alternate exchanges matter only when they route somewhere: often give each a catch-all.
    alternates = {e.alternate_exchange for e in exchanges.values()} - {None}
    for name in sorted(a for a in alternates if a is not None):
        if draw(st.booleans()):
            queue = draw(st.sampled_from(queue_names))
            kind = exchanges[name].type
            if kind is ExchangeType.HEADERS:
                binding = Binding(name, queue, match=HeadersMatch.ALL)  # all of nothing: always
            else:
                key = {ExchangeType.FANOUT: "", ExchangeType.TOPIC: "#"}.get(kind) or draw(keys)
                binding = Binding(name, queue, key=key)
            if binding not in bindings:
                bindings.append(binding)
    spec = Spec(
        path=Path("differential.yaml"),
        exchanges=MappingProxyType(exchanges),
        queues=MappingProxyType({q: Queue(q, durable=False) for q in queue_names}),
        bindings=tuple(bindings),
    )
    public = [n for n in exchange_names if not exchanges[n].internal]
    publishes = draw(
        st.lists(
            st.builds(
                Publish,
                st.sampled_from([*public, ""]),
                st.one_of(keys, st.sampled_from(queue_names)),
                header_tables,
            ),
            min_size=1,
            max_size=8,
        )
    )
    return Case(spec, tuple(publishes))


def _every_kind_of_hop() -> Case:
    """One case routed by each kind of hop, so that no run can miss a kind.

    Hypothesis may go a whole run without drawing one of them (seen: no
    exchange-to-exchange route in 755 random messages): this example is
    always run first, and the random cases come on top.
    """

    def exchange(name: str, kind: ExchangeType, alternate: str | None = None) -> Exchange:
        arguments = {"alternate-exchange": alternate} if alternate else {}
        return Exchange(name, kind, durable=False, arguments=MappingProxyType(arguments))

    exchanges = {
        "x0": exchange("x0", ExchangeType.TOPIC, alternate="x2"),
        "x1": exchange("x1", ExchangeType.HEADERS),
        "x2": exchange("x2", ExchangeType.FANOUT),
    }
    bindings = (
        Binding("x0", "x1", "exchange", key="a.#"),
        Binding("x1", "q0", match=HeadersMatch.ANY, headers=MappingProxyType({"h": 1})),
        Binding("x2", "q1"),
    )
    spec = Spec(
        path=Path("differential.yaml"),
        exchanges=MappingProxyType(exchanges),
        queues=MappingProxyType({q: Queue(q, durable=False) for q in ("q0", "q1")}),
        bindings=bindings,
    )
    publishes = (
        Publish("x0", "a.b", {"h": 1.0}),  # through x0 -> x1, then a headers match
        Publish("x0", "b", {}),  # nothing matches: the alternate exchange
        Publish("x0", "a", {"h": "1"}),  # x1 matches nothing: unroutable
    )
    return Case(spec, publishes)


class Broker:
    """One connection for the whole test; each example declares, publishes, drains, deletes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.connection: Any = None

    def run(self, case: Case) -> dict[int, set[str]]:
        return self.loop.run_until_complete(self._run(case))

    def close(self) -> None:
        if self.connection is not None:
            self.loop.run_until_complete(self.connection.close())
        self.loop.close()

    async def _run(self, case: Case) -> dict[int, set[str]]:
        if self.connection is None or self.connection.is_closed:
            self.connection = await aiormq.connect(self.url)
        channel = await self.connection.channel(publisher_confirms=True)
        spec = case.spec
        try:
            for exchange in spec.exchanges.values():
                await channel.exchange_declare(
                    exchange.name,
                    exchange_type=exchange.type.value,
                    durable=False,
                    internal=exchange.internal,
                    arguments=dict(exchange.arguments) or None,
                )
            for queue in spec.queues:
                await channel.queue_declare(queue, durable=False)
            for b in spec.bindings:
                arguments = b.broker_arguments or None
                if b.destination_type == "queue":
                    await channel.queue_bind(b.destination, b.source, b.key, arguments=arguments)
                else:
                    await channel.exchange_bind(b.destination, b.source, b.key, arguments=arguments)
            ids = {}
            for index, publish in enumerate(case.publishes):
                message_id = uuid.uuid4().hex
                ids[message_id] = index
                confirmation = await channel.basic_publish(
                    b"{}",
                    exchange=publish.exchange,
                    routing_key=publish.key,
                    properties=Basic.Properties(message_id=message_id, headers=publish.headers),
                )
                assert isinstance(confirmation, Basic.Ack)
            reached: dict[int, set[str]] = {i: set() for i in range(len(case.publishes))}
            for queue in spec.queues:
                while True:
                    got = await channel.basic_get(queue, no_ack=True)
                    if isinstance(got.delivery, commands.Basic.GetEmpty):
                        break
                    reached[ids[got.header.properties.message_id]].add(queue)
            return reached
        finally:
            for queue in spec.queues:
                await channel.queue_delete(queue)
            for exchange in spec.exchanges:
                await channel.exchange_delete(exchange)
            await channel.close()


@pytest.fixture
def live(vhost: Vhost) -> Iterator[Broker]:
    broker = Broker(vhost.amqp_url)
    try:
        yield broker
    finally:
        broker.close()


def test_the_routing_model_agrees_with_rabbitmq_on_random_topologies(live: Broker) -> None:
    tally = {"messages": 0, "routed": 0, "headers": 0, "exchange-to-exchange": 0, "alternate": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(cases())
    @example(_every_kind_of_hop())
    def agrees(case: Case) -> None:
        observed = live.run(case)
        for index, publish in enumerate(case.publishes):
            destinations = route(case.spec, publish.exchange, publish.key, publish.headers)
            predicted = {d.queue for d in destinations}
            tally["messages"] += 1
            tally["routed"] += bool(observed[index])
            hops = [b for d in destinations for b in d.path]
            tally["headers"] += any(b.match is not None for b in hops)
            tally["alternate"] += any("alternate-exchange" in b.arguments for b in hops)
            tally["exchange-to-exchange"] += any(
                b.destination_type == "exchange" and "alternate-exchange" not in b.arguments
                for b in hops
            )
            assert observed[index] == predicted, (
                f"publish to {publish.exchange!r} key {publish.key!r} headers {publish.headers}: "
                f"RabbitMQ routed to {sorted(observed[index])}, the model says "
                f"{sorted(predicted)}\n{case.describe()}"
            )

    agrees()
    print(f"differential routing: {tally}")
    # Not vacuous: many messages went somewhere, many nowhere, by every kind of hop.
    assert tally["routed"] >= tally["messages"] // 5
    assert tally["routed"] < tally["messages"]
    if EXAMPLES >= 100:
        assert min(tally["headers"], tally["alternate"], tally["exchange-to-exchange"]) > 0
