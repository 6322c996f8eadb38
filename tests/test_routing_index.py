"""The indexed routing equals the simple one, on random specs.

``rabbitry.routing`` matches a key only against the bindings its key trie lets
through (``_candidates``); the reference (``_every_binding``) matches every
binding of the exchange, as routing did before the index.  The reference is
itself proven against the broker (``test_routing_differential.py``).  Here
random topologies — topic and direct keys with ``*``, ``#``, empty words and
``{param}`` templates, headers and fanout exchanges, exchange-to-exchange
bindings, alternate and dead-letter exchanges — are routed both ways, for
concrete keys and for spec messages whose keys are templates: same queues,
same paths, same conditions.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rabbitry import routing
from rabbitry.spec import Binding, Exchange, ExchangeType, HeadersMatch, Message, Queue, Spec

WORDS = st.sampled_from(["", "a", "b", "c"])
TEMPLATE_WORDS = st.sampled_from(["{p}", "{q}", "a{p}", "{p}-{q}"])
PATTERN_WORDS = st.one_of(WORDS, st.sampled_from(["*", "#"]), TEMPLATE_WORDS)
patterns = st.lists(PATTERN_WORDS, max_size=4).map(".".join)
keys = st.lists(WORDS, max_size=4).map(".".join)
message_keys = st.lists(st.one_of(WORDS, TEMPLATE_WORDS), max_size=4).map(".".join)
HEADER_VALUES = st.sampled_from(["a", "b", 1, True, None, "{p}"])
header_tables = st.dictionaries(st.sampled_from(["h", "k", "x-h"]), HEADER_VALUES, max_size=3)


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    exchange_names = [f"x{i}" for i in range(draw(st.integers(1, 4)))]
    queue_names = [f"q{i}" for i in range(draw(st.integers(1, 5)))]
    exchanges: dict[str, Exchange] = {}
    for name in exchange_names:
        kind = draw(st.sampled_from(list(ExchangeType)))
        alternate = draw(st.one_of(st.none(), st.sampled_from(exchange_names)))
        arguments = {"alternate-exchange": alternate} if alternate else {}
        exchanges[name] = Exchange(name, kind, arguments=MappingProxyType(arguments))
    queues: dict[str, Queue] = {}
    for name in queue_names:
        dead = draw(st.one_of(st.none(), st.sampled_from(exchange_names)))
        arguments = {"x-dead-letter-exchange": dead} if dead else {}
        queues[name] = Queue(name, arguments=MappingProxyType(arguments))
    bindings: list[Binding] = []
    for _ in range(draw(st.integers(0, 14))):
        source = draw(st.sampled_from(exchange_names))
        to_exchange = draw(st.booleans())
        destination = draw(st.sampled_from(exchange_names if to_exchange else queue_names))
        destination_type = "exchange" if to_exchange else "queue"
        kind = exchanges[source].type
        if kind is ExchangeType.HEADERS:
            match = draw(st.sampled_from(list(HeadersMatch)))
            headers = MappingProxyType(draw(header_tables))
            binding = Binding(source, destination, destination_type, match=match, headers=headers)
        else:
            binding = Binding(source, destination, destination_type, key=draw(patterns))
        if binding not in bindings:
            bindings.append(binding)
    messages = {
        f"M{i}": Message(
            f"M{i}",
            Path("m.json"),
            draw(st.sampled_from([*exchange_names, ""])),
            routing_key=draw(message_keys),
            headers=MappingProxyType(draw(header_tables)),
        )
        for i in range(draw(st.integers(0, 3)))
    }
    return Spec(
        path=Path("index.yaml"),
        exchanges=MappingProxyType(exchanges),
        queues=MappingProxyType(queues),
        bindings=tuple(bindings),
        messages=MappingProxyType(messages),
    )


def both(spec: Spec, exchange: str, query: routing._Query) -> tuple[object, object]:
    indexed = routing._route(spec, exchange, query)
    reference = routing._route(spec, exchange, query, routing._every_binding)
    return indexed, reference


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), data=st.data())
def test_indexed_routing_equals_the_reference(spec: Spec, data: st.DataObject) -> None:
    for exchange in [*spec.exchanges, ""]:
        for _ in range(3):
            key = data.draw(st.one_of(keys, st.sampled_from(list(spec.queues))))
            headers = data.draw(header_tables)
            words = routing._words(key, wildcards=False, templates=False)
            indexed, reference = both(spec, exchange, routing._Query(words, headers, False))
            assert indexed == reference, (exchange, key, headers)
    for message in spec.messages.values():
        words = routing._words(message.routing_key, wildcards=False, templates=True)
        query = routing._Query(words, message.headers, True)
        indexed, reference = both(spec, message.exchange, query)
        assert indexed == reference, message
        assert indexed == routing.route_message(spec, message)


def test_the_index_lets_through_only_bindings_that_share_the_key() -> None:
    """The point of the index: of 1,000 literal bindings, a key meets the one it names
    plus the wildcard ones, not all of them."""
    bindings = [Binding("x", f"q{i}", key=f"k{i}.#") for i in range(1_000)]
    bindings += [Binding("x", "all", key="#"), Binding("x", "one", key="*.x")]
    queues = {q.destination: Queue(q.destination) for q in bindings}
    spec = Spec(
        path=Path("i.yaml"),
        exchanges=MappingProxyType({"x": Exchange("x", ExchangeType.TOPIC)}),
        queues=MappingProxyType(queues),
        bindings=tuple(bindings),
    )
    key = routing._words("k7.x", wildcards=False, templates=False)
    query = routing._Query(key, {}, False)
    met = routing._candidates(spec, "x", ExchangeType.TOPIC, query)
    assert [b.destination for b in met] == ["q7", "all", "one"]
    assert [d.queue for d in routing.route(spec, "x", "k7.x")] == ["all", "one", "q7"]
