"""The offline routing model, on specs built directly from the model (no broker)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

import pytest

from rabbitry.errors import RoutingError
from rabbitry.routing import (
    Condition,
    Destination,
    Side,
    dead_letter_route,
    headers_match,
    route,
    route_message,
    topic_matches,
)
from rabbitry.spec.model import (
    ArgValue,
    Binding,
    Exchange,
    ExchangeType,
    HeadersMatch,
    Message,
    Queue,
    Spec,
)
from specs import copy_flagship, run_cli

# ----------------------------------------------------------------------- helpers


def ex(name: str, kind: str = "topic", *, ae: str | None = None) -> Exchange:
    arguments = {"alternate-exchange": ae} if ae is not None else {}
    return Exchange(name, ExchangeType(kind), arguments=MappingProxyType(arguments))


def q(name: str, *, dlx: str | None = None, dlk: str | None = None) -> Queue:
    arguments: dict[str, ArgValue] = {}
    if dlx is not None:
        arguments["x-dead-letter-exchange"] = dlx
    if dlk is not None:
        arguments["x-dead-letter-routing-key"] = dlk
    return Queue(name, arguments=MappingProxyType(arguments))


def bq(
    source: str,
    queue: str,
    key: str = "",
    *,
    match: HeadersMatch | None = None,
    headers: Mapping[str, ArgValue] | None = None,
    arguments: Mapping[str, ArgValue] | None = None,
) -> Binding:
    """A binding to a queue."""
    return Binding(
        source=source,
        destination=queue,
        key=key,
        match=match,
        headers=MappingProxyType(dict(headers or {})),
        arguments=MappingProxyType(dict(arguments or {})),
    )


def be(source: str, exchange: str, key: str = "") -> Binding:
    """An exchange-to-exchange binding."""
    return Binding(source=source, destination=exchange, destination_type="exchange", key=key)


def mk_spec(
    exchanges: Iterable[Exchange] = (),
    queues: Iterable[Queue | str] = (),
    bindings: Iterable[Binding] = (),
    messages: Iterable[Message] = (),
) -> Spec:
    qs = [x if isinstance(x, Queue) else q(x) for x in queues]
    return Spec(
        Path("topology.yaml"),
        exchanges=MappingProxyType({e.name: e for e in exchanges}),
        queues=MappingProxyType({x.name: x for x in qs}),
        bindings=tuple(bindings),
        messages=MappingProxyType({m.name: m for m in messages}),
    )


def msg(exchange: str, key: str = "", headers: Mapping[str, ArgValue] | None = None) -> Message:
    return Message(
        name="M",
        schema_path=Path("m.json"),
        exchange=exchange,
        routing_key=key,
        headers=MappingProxyType(dict(headers or {})),
    )


def names(found: Iterable[Destination]) -> list[str]:
    return [d.queue for d in found]


def said(found: Destination) -> tuple[str, ...]:
    """A destination's conditions as ``rabbitry route`` prints them."""
    return tuple(str(c) for c in found.conditions)


def only(found: tuple[Destination, ...]) -> Destination:
    assert len(found) == 1, found
    return found[0]


# ------------------------------------------------------------------ topic words

# Seen on RabbitMQ 3.10.8: every (pattern, key) pair below was published through
# the management API; ROUTED lists the pairs the broker answered routed=true for.
PATTERNS = ["#", "", "*", "a", "a.*", "a.#", "*.*", "*.a", "a.#.b", "#.#", "*.#", "#.*"]
PATTERNS += ["#.a", "a.*.#", "order.*.created", "a.", ".", "#.", ".#", "*.", "a.#.#.b"]
KEYS = ["", "a", "a.", ".", ".a", "a.b", "a..b", "a.x.b", "order..created", "..", "b"]
KEYS += ["a.x.y.b", "#", "*"]
_EVERY = KEYS
_NONEMPTY = [k for k in KEYS if k]
ROUTED = {
    "#": _EVERY,
    "#.#": _EVERY,
    "": [""],
    "*": ["a", "b", "#", "*"],
    "a": ["a"],
    "a.*": ["a.", "a.b"],
    "a.#": ["a", "a.", "a.b", "a..b", "a.x.b", "a.x.y.b"],
    "*.*": ["a.", ".", ".a", "a.b"],
    "*.a": [".a"],
    "a.#.b": ["a.b", "a..b", "a.x.b", "a.x.y.b"],
    "a.#.#.b": ["a.b", "a..b", "a.x.b", "a.x.y.b"],
    "*.#": _NONEMPTY,
    "#.*": _NONEMPTY,
    "#.a": ["a", ".a"],
    "a.*.#": ["a.", "a.b", "a..b", "a.x.b", "a.x.y.b"],
    "order.*.created": ["order..created"],
    "a.": ["a."],
    ".": ["."],
    "#.": ["a.", ".", ".."],
    ".#": [".", ".a", ".."],
    "*.": ["a.", "."],
}


def test_topic_matches_agrees_with_every_pair_the_broker_answered() -> None:
    wrong = [(p, k) for p in PATTERNS for k in KEYS if topic_matches(p, k) != (k in ROUTED[p])]
    assert wrong == []


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("order.*.created", "order..created", True),  # * takes an empty word
        ("*", "", False),  # the empty key has zero words
        ("#", "", True),
        ("", "", True),
        ("", "a", False),
        ("a.*", "a.", True),  # "a." is ["a", ""]
        ("a", "a.", False),
        ("a.#.b", "a.b", True),  # # matches zero words
        ("a.#", "a", True),
        ("#.#", "", True),
        ("*.#", "", False),
        ("*.#", "a", True),
        ("#.a.#", "b.a.c.a", True),  # backtracking over two #s
        ("#.a.#.a", "a.b.b", False),
        ("a.b", "a.b.c", False),
        ("{x}", "{x}", True),  # braces are literal in a concrete match
        ("{x}", "1", False),
    ],
)
def test_topic_edge_cases(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


# ----------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("mode", "binding", "message", "expected"),
    [
        (HeadersMatch.ALL, {}, {}, True),  # all with nothing to compare matches
        (HeadersMatch.ANY, {}, {"a": 1}, False),  # any with nothing never matches
        (HeadersMatch.ALL, {"a": "1", "b": "2"}, {"a": "1"}, False),
        (HeadersMatch.ANY, {"a": "1", "b": "2"}, {"a": "1"}, True),
        (HeadersMatch.ALL, {"a": "1"}, {"a": "1", "z": "extra"}, True),
        (HeadersMatch.ALL, {"a": "1"}, {"a": "2"}, False),
        (HeadersMatch.ALL, {"x-a": "1"}, {}, True),  # x- binding keys ignored
        (HeadersMatch.ANY, {"x-a": "1"}, {"x-a": "1"}, False),
        (HeadersMatch.ALL_WITH_X, {"x-a": "1"}, {}, False),
        (HeadersMatch.ALL_WITH_X, {"x-a": "1"}, {"x-a": "1"}, True),
        (HeadersMatch.ANY_WITH_X, {"x-a": "1"}, {"x-a": "1"}, True),
        (HeadersMatch.ANY_WITH_X, {}, {"a": "1"}, False),
        (HeadersMatch.ALL_WITH_X, {"x-match": "all-with-x"}, {"x-match": "zzz"}, True),
        (HeadersMatch.ALL, {"a": True}, {"a": 1}, False),  # bool is never an int
        (HeadersMatch.ALL, {"a": 1}, {"a": True}, False),
        (HeadersMatch.ALL, {"a": 0}, {"a": False}, False),
        (HeadersMatch.ALL, {"a": True}, {"a": True}, True),
        (HeadersMatch.ALL, {"a": 1}, {"a": 1.0}, True),  # Erlang == on numbers
        (HeadersMatch.ALL, {"a": [1]}, {"a": [1.0]}, False),  # but typed inside arrays
        (HeadersMatch.ALL, {"a": {"k": 1, "j": 2}}, {"a": {"j": 2, "k": 1}}, True),
        (HeadersMatch.ALL, {"a": "1"}, {"a": 1}, False),
        (HeadersMatch.ALL, {"a": None}, {"a": "anything"}, True),  # void: presence
        (HeadersMatch.ALL, {"a": None}, {}, False),
        (HeadersMatch.ALL, {"a": "v"}, {"a": None}, False),
    ],
)
def test_headers_match(
    mode: HeadersMatch,
    binding: dict[str, ArgValue],
    message: dict[str, ArgValue],
    expected: bool,
) -> None:
    assert headers_match(mode, binding, message) is expected


# ---------------------------------------------------------------- exchange types


def test_direct_compares_the_whole_key_and_wildcards_are_literal() -> None:
    spec = mk_spec([ex("d", "direct")], ["q1", "q2"], [bq("d", "q1", "a.b"), bq("d", "q2", "a.*")])
    assert names(route(spec, "d", "a.b")) == ["q1"]
    assert names(route(spec, "d", "a.*")) == ["q2"]
    assert route(spec, "d", "a") == ()


def test_fanout_ignores_the_key() -> None:
    spec = mk_spec([ex("f", "fanout")], ["q1", "q2"], [bq("f", "q2", "x"), bq("f", "q1", "y")])
    found = route(spec, "f", "anything")
    assert names(found) == ["q1", "q2"]  # sorted by queue name
    assert all(said(d) == () for d in found)


def test_topic_routes_to_every_matching_binding() -> None:
    spec = mk_spec(
        [ex("t")],
        ["all", "pdf", "other"],
        [bq("t", "all", "job.#"), bq("t", "pdf", "job.*.pdf"), bq("t", "other", "x.*")],
    )
    assert names(route(spec, "t", "job.render.pdf")) == ["all", "pdf"]
    assert names(route(spec, "t", "job")) == ["all"]


def test_destination_records_the_binding_followed() -> None:
    binding = bq("t", "q", "a.*")
    spec = mk_spec([ex("t")], ["q"], [binding])
    assert route(spec, "t", "a.b") == (Destination("q", (binding,), ()),)


def test_headers_exchange_with_match_none_means_all() -> None:
    spec = mk_spec(
        [ex("h", "headers")],
        ["both"],
        [bq("h", "both", headers={"format": "pdf", "size": 1})],
    )
    assert names(route(spec, "h", "", {"format": "pdf", "size": 1})) == ["both"]
    assert route(spec, "h", "", {"format": "pdf"}) == ()


def test_headers_exchange_any_and_x_keys() -> None:
    spec = mk_spec(
        [ex("h", "headers")],
        ["any", "allx"],
        [
            bq("h", "any", match=HeadersMatch.ANY, headers={"format": "pdf", "x-tag": "t"}),
            bq("h", "allx", match=HeadersMatch.ALL_WITH_X, headers={"x-tag": "t"}),
        ],
    )
    assert names(route(spec, "h", "ignored", {"format": "pdf"})) == ["any"]
    assert names(route(spec, "h", "", {"x-tag": "t"})) == ["allx"]


def test_headers_mode_read_from_raw_arguments() -> None:
    spec = mk_spec(
        [ex("h", "headers")],
        ["q"],
        [bq("h", "q", headers={"a": "1", "b": "2"}, arguments={"x-match": "any"})],
    )
    assert names(route(spec, "h", "", {"a": "1"})) == ["q"]


def test_headers_exchange_bool_is_not_int() -> None:
    spec = mk_spec([ex("h", "headers")], ["q"], [bq("h", "q", headers={"urgent": True})])
    assert route(spec, "h", "", {"urgent": 1}) == ()
    assert names(route(spec, "h", "", {"urgent": True})) == ["q"]


# ---------------------------------------------------------- exchange to exchange


def test_exchange_chain_keeps_the_key_and_records_the_path() -> None:
    first, second = be("a", "b", "job.#"), bq("b", "q", "job.pdf")
    spec = mk_spec([ex("a"), ex("b", "direct")], ["q"], [first, second])
    assert route(spec, "a", "job.pdf") == (Destination("q", (first, second), ()),)
    assert route(spec, "a", "job.doc") == ()
    assert route(spec, "a", "other.pdf") == ()


def test_exchange_cycle_terminates_with_one_destination() -> None:
    spec = mk_spec(
        [ex("c1", "fanout"), ex("c2", "fanout")],
        ["q", "r"],
        [be("c1", "c2"), be("c2", "c1"), bq("c2", "q"), bq("c1", "r")],
    )
    found = route(spec, "c1", "k")
    assert names(found) == ["q", "r"]
    assert [len(d.path) for d in found] == [2, 1]


def test_two_paths_to_one_queue_give_one_destination_with_the_shorter_path() -> None:
    direct = bq("d1", "q")
    spec = mk_spec(
        [ex("d1", "fanout"), ex("d2", "fanout")],
        ["q"],
        [be("d1", "d2"), bq("d2", "q"), direct],
    )
    assert route(spec, "d1", "") == (Destination("q", (direct,), ()),)


def test_exchange_cycle_through_conditional_bindings_terminates() -> None:
    spec = mk_spec(
        [ex("a"), ex("b")],
        ["q"],
        [be("a", "b", "{x}.#"), be("b", "a", "#.{y}"), bq("b", "q", "#")],
    )
    found = only(route(spec, "a", "1.2"))
    assert said(found) == ("bound at run time with x = 1",)


# ------------------------------------------------------------ alternate exchange


def _ae_spec(*bindings: Binding, inner_ae: str | None = None) -> Spec:
    return mk_spec(
        [ex("main", "topic", ae="ae"), ex("ae", "fanout"), ex("inner", "direct", ae=inner_ae)],
        ["hit", "fallback", "inner-q"],
        [bq("ae", "fallback"), *bindings],
    )


def test_alternate_exchange_used_when_nothing_matches() -> None:
    spec = _ae_spec(bq("main", "hit", "job.#"))
    found = only(route(spec, "main", "other"))
    assert found.queue == "fallback"
    hop, last = found.path
    assert (hop.source, hop.destination, hop.destination_type) == ("main", "ae", "exchange")
    assert hop.arguments == {"alternate-exchange": "ae"}
    assert last == bq("ae", "fallback")
    assert said(found) == ()


def test_alternate_exchange_not_used_when_a_queue_matched() -> None:
    spec = _ae_spec(bq("main", "hit", "job.#"))
    assert names(route(spec, "main", "job.x")) == ["hit"]


def test_alternate_exchange_not_used_when_the_match_is_an_exchange_routing_nowhere() -> None:
    # RabbitMQ: the exchange's own bindings matched (an exchange), so no AE.
    spec = _ae_spec(be("main", "inner", "#"))
    assert route(spec, "main", "k") == ()


def test_alternate_exchange_of_an_inner_exchange_is_used() -> None:
    spec = mk_spec(
        [ex("front", "fanout"), ex("inner", "direct", ae="ae"), ex("ae", "fanout")],
        ["fallback"],
        [be("front", "inner"), bq("ae", "fallback")],
    )
    found = only(route(spec, "front", "k"))
    assert found.queue == "fallback"
    assert [b.destination for b in found.path] == ["inner", "ae", "fallback"]


def test_alternate_exchange_of_an_alternate_exchange_is_followed() -> None:
    spec = mk_spec(
        [ex("a", "direct", ae="b"), ex("b", "direct", ae="c"), ex("c", "fanout")],
        ["end"],
        [bq("c", "end")],
    )
    assert names(route(spec, "a", "k")) == ["end"]


def test_alternate_exchange_back_to_an_exchange_already_routed() -> None:
    # Seen on the broker: the queue gets one copy, the loop ends.
    spec = mk_spec(
        [ex("front", "fanout"), ex("inner", "direct", ae="front")],
        ["q"],
        [be("front", "inner"), bq("front", "q")],
    )
    assert route(spec, "front", "k") == (Destination("q", (bq("front", "q"),), ()),)


def test_alternate_exchange_taken_conditionally_for_a_symbolic_key() -> None:
    spec = _ae_spec(bq("main", "hit", "job.pdf"))
    found = route_message(spec, msg("main", "job.{kind}"))
    assert found[0].conditions == (Condition(Side.NO_MATCH, "main"),)
    assert [(d.queue, said(d)) for d in found] == [
        ("fallback", ("when no binding of 'main' matches",)),
        ("hit", ("when kind = pdf",)),
    ]


# --------------------------------------------------------------------- built-ins


def test_default_exchange_routes_to_the_queue_named_by_the_key() -> None:
    spec = mk_spec([], ["jobs.ready", "other"])
    found = only(route(spec, "", "jobs.ready"))
    assert found.queue == "jobs.ready"
    assert [(b.source, b.destination, b.key) for b in found.path] == [
        ("", "jobs.ready", "jobs.ready")
    ]
    assert route(spec, "", "missing") == ()
    assert route(spec, "", "") == ()


@pytest.mark.parametrize(
    ("exchange", "binding", "key", "headers"),
    [
        ("amq.direct", bq("amq.direct", "q", "k"), "k", None),
        ("amq.fanout", bq("amq.fanout", "q", "zzz"), "k", None),
        ("amq.topic", bq("amq.topic", "q", "k.#"), "k.a.b", None),
        ("amq.headers", bq("amq.headers", "q", headers={"h": "1"}), "", {"h": "1"}),
        ("amq.match", bq("amq.match", "q", match=HeadersMatch.ANY, headers={"h": 1}), "", {"h": 1}),
    ],
)
def test_builtin_exchanges_route_by_their_type(
    exchange: str, binding: Binding, key: str, headers: dict[str, ArgValue] | None
) -> None:
    spec = mk_spec([], ["q"], [binding])
    assert names(route(spec, exchange, key, headers)) == ["q"]


def test_builtin_types_are_not_interchangeable() -> None:
    # amq.direct is not a topic exchange: "k.#" is a literal key there.
    spec = mk_spec([], ["q"], [bq("amq.direct", "q", "k.#")])
    assert route(spec, "amq.direct", "k.a") == ()
    assert names(route(spec, "amq.direct", "k.#")) == ["q"]


def test_unknown_exchange_raises_with_a_suggestion() -> None:
    spec = mk_spec([ex("jobs.new")], ["q"])
    with pytest.raises(RoutingError, match=r"'jobs\.nwe'.*did you mean 'jobs\.new'\?"):
        route(spec, "jobs.nwe", "k")


def test_unknown_exchange_behind_an_exchange_binding_raises() -> None:
    spec = mk_spec([ex("a", "fanout")], [], [be("a", "ghost")])
    with pytest.raises(RoutingError, match="ghost"):
        route(spec, "a", "k")


# ------------------------------------------------------------------- symbolic


def _jobs_spec() -> Spec:
    return mk_spec(
        [ex("jobs.new"), ex("jobs.status"), ex("jobs.control")],
        ["jobs.ready", "job-status", "job-control"],
        [
            bq("jobs.new", "jobs.ready", "job.#"),
            bq("jobs.status", "job-status", "{job_id}"),
            bq("jobs.control", "job-control", "{job_id}"),
        ],
    )


def test_message_template_reaches_a_wildcard_binding_always() -> None:
    found = only(route_message(_jobs_spec(), msg("jobs.new", "job.{job_type}")))
    assert (found.queue, said(found)) == ("jobs.ready", ())


def test_same_name_placeholders_meet_unconditionally() -> None:
    found = only(route_message(_jobs_spec(), msg("jobs.status", "{job_id}")))
    assert (found.queue, said(found)) == ("job-status", ())


def test_placeholders_of_different_names_do_not_meet() -> None:
    assert route_message(_jobs_spec(), msg("jobs.status", "{task_id}")) == ()


def test_concrete_key_meets_a_runtime_binding_conditionally() -> None:
    found = only(route(_jobs_spec(), "jobs.status", "1234"))
    assert found.queue == "job-status"
    assert found.conditions == (Condition(Side.RUNTIME_BINDING, "job_id", "1234"),)
    assert said(found) == ("bound at run time with job_id = 1234",)
    assert not found.certain


def test_runtime_binding_placeholder_is_one_word() -> None:
    assert route(_jobs_spec(), "jobs.status", "12.34") == ()


def test_literal_binding_against_a_placeholder_key_is_conditional() -> None:
    spec = mk_spec([ex("t")], ["pdf"], [bq("t", "pdf", "job.pdf")])
    found = only(route_message(spec, msg("t", "job.{job_type}")))
    assert found.conditions == (Condition(Side.FIELD, "job_type", "pdf"),)
    assert found.on(Side.RUNTIME_BINDING) == ()
    assert said(found) == ("when job_type = pdf",)


def test_wildcards_match_a_placeholder_key_word() -> None:
    spec = mk_spec([ex("t")], ["star", "hash"], [bq("t", "star", "*"), bq("t", "hash", "#")])
    found = route_message(spec, msg("t", "{id}"))
    assert [(d.queue, said(d)) for d in found] == [("hash", ()), ("star", ())]


def test_unconditional_destination_preferred_over_a_conditional_one() -> None:
    always = bq("t", "q", "job.*")
    spec = mk_spec([ex("t")], ["q"], [bq("t", "q", "job.pdf"), always])
    assert route_message(spec, msg("t", "job.{kind}")) == (Destination("q", (always,), ()),)


def test_a_field_takes_one_value_across_the_key() -> None:
    spec = mk_spec(
        [ex("t")], ["same", "differ"], [bq("t", "same", "x.x"), bq("t", "differ", "x.y")]
    )
    found = only(route_message(spec, msg("t", "{a}.{a}")))
    assert (found.queue, said(found)) == ("same", ("when a = x",))


def test_a_field_takes_one_value_along_the_path() -> None:
    spec = mk_spec(
        [ex("a"), ex("b")],
        ["q"],
        [be("a", "b", "job.pdf"), bq("b", "q", "job.doc")],
    )
    assert route_message(spec, msg("a", "job.{kind}")) == ()


def test_runtime_binding_params_belong_to_their_own_binding() -> None:
    # Two consumers' bindings may use the same name with different values.
    spec = mk_spec(
        [ex("a"), ex("b")],
        ["q"],
        [be("a", "b", "{id}.#"), bq("b", "q", "#.{id}")],
    )
    found = only(route(spec, "a", "1.2"))
    assert said(found) == (
        "bound at run time with id = 1",
        "bound at run time with id = 2",
    )


def test_the_cheapest_of_several_ways_to_match_is_reported() -> None:
    # "#.pdf.#" meets "{a}.{b}.{c}.pdf" four ways; only one needs no condition.
    spec = mk_spec([ex("t")], ["q"], [bq("t", "q", "#.pdf.#")])
    found = only(route_message(spec, msg("t", "{a}.{b}.{c}.pdf")))
    assert said(found) == ()


def test_runtime_binding_repeating_a_param_needs_equal_words() -> None:
    spec = mk_spec([ex("t")], ["q"], [bq("t", "q", "{id}.{id}")])
    assert route(spec, "t", "1.2") == ()
    assert said(only(route(spec, "t", "1.1"))) == ("bound at run time with id = 1",)


def test_template_inside_a_word() -> None:
    spec = mk_spec([ex("t")], ["q"], [bq("t", "q", "job-{id}.done")])
    assert said(only(route(spec, "t", "job-7.done"))) == ("bound at run time with id = 7",)
    assert route(spec, "t", "task-7.done") == ()


def test_header_templates_match_any_binding_value_conditionally() -> None:
    spec = mk_spec(
        [ex("h", "headers")],
        ["pdf", "big"],
        [bq("h", "pdf", headers={"format": "pdf"}), bq("h", "big", headers={"size": 5})],
    )
    found = route_message(spec, msg("h", headers={"format": "{fmt}", "size": "{n}"}))
    # A filled header is sent as a string: it never equals the binding's number 5.
    assert [(d.queue, said(d)) for d in found] == [("pdf", ("when fmt = pdf",))]


def test_fixed_header_values_in_a_message_are_compared() -> None:
    spec = mk_spec([ex("h", "headers")], ["pdf"], [bq("h", "pdf", headers={"format": "pdf"})])
    assert names(route_message(spec, msg("h", headers={"format": "pdf"}))) == ["pdf"]
    assert route_message(spec, msg("h", headers={"format": "doc"})) == ()


def test_concrete_route_treats_braces_in_headers_literally() -> None:
    spec = mk_spec([ex("h", "headers")], ["pdf"], [bq("h", "pdf", headers={"format": "pdf"})])
    assert route(spec, "h", "", {"format": "{fmt}"}) == ()


def test_default_exchange_with_a_template_key() -> None:
    spec = mk_spec([], ["a", "b"])
    found = route_message(spec, msg("", "{target}"))
    assert [(d.queue, said(d)) for d in found] == [
        ("a", ("when target = a",)),
        ("b", ("when target = b",)),
    ]


# ------------------------------------------------------------------ dead letters


def test_dead_letter_route_uses_the_message_key_by_default() -> None:
    spec = mk_spec(
        [ex("dlx")],
        [q("work", dlx="dlx"), "dead-pdf", "dead-doc"],
        [bq("dlx", "dead-pdf", "job.pdf"), bq("dlx", "dead-doc", "job.doc")],
    )
    assert names(dead_letter_route(spec, "work", "job.pdf")) == ["dead-pdf"]


def test_dead_letter_route_key_overrides_the_message_key() -> None:
    spec = mk_spec(
        [ex("dlx")],
        [q("work", dlx="dlx", dlk="job.doc"), "dead-pdf", "dead-doc"],
        [bq("dlx", "dead-pdf", "job.pdf"), bq("dlx", "dead-doc", "job.doc")],
    )
    assert names(dead_letter_route(spec, "work", "job.pdf")) == ["dead-doc"]


def test_dead_letter_route_without_dead_letter_exchange_is_empty() -> None:
    spec = mk_spec([ex("t")], ["work", "other"], [bq("t", "other", "#")])
    assert dead_letter_route(spec, "work", "k") == ()


def test_dead_letter_to_the_default_exchange() -> None:
    spec = mk_spec([], [q("work", dlx="", dlk="parking"), "parking"])
    assert names(dead_letter_route(spec, "work", "k")) == ["parking"]


def test_dead_letter_route_of_an_unknown_queue_raises() -> None:
    spec = mk_spec([], ["work"])
    with pytest.raises(RoutingError, match="did you mean 'work'"):
        dead_letter_route(spec, "wrok", "k")


def test_route_refuses_an_internal_exchange_as_the_broker_does() -> None:
    spec = Spec(
        path=Path("t.yaml"),
        exchanges={"inner": Exchange("inner", ExchangeType.FANOUT, internal=True)},
        queues={"q": Queue("q")},
        bindings=(Binding("inner", "q"),),
    )
    with pytest.raises(RoutingError, match="internal"):
        route(spec, "inner", "")


def test_route_json_gives_each_condition_as_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flagship = copy_flagship(tmp_path)
    code, out, _ = run_cli(
        ["route", "-f", str(flagship), "--format", "json", "jobs.status", "1234"], capsys
    )
    assert code == 0
    (found,) = json.loads(out)
    assert found["queue"] == "job-status"
    assert found["conditions"] == [
        {
            "side": "runtime-binding",
            "name": "job_id",
            "value": "1234",
            "text": "bound at run time with job_id = 1234",
        }
    ]
