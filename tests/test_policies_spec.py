"""Policies in the spec: loading, the rules as data, and every policy check.

Each check has a case where it fires (at the place the user must edit) and one
where it must stay quiet; the hypothesis properties compare the checks and the
anchored patterns with an independent reading of the same facts.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rabbitry.check import Report, check
from rabbitry.spec import Code, Policy, PolicyTarget, Queue, QueueType, Severity, Spec
from rabbitry.spec.arguments import EXCHANGE_ARGUMENTS, QUEUE_ARGUMENTS
from rabbitry.spec.model import Exchange, ExchangeType
from rabbitry.spec.policies import (
    POLICY_KEYS,
    POLICY_SUGAR,
    PRECEDENCE,
    Setting,
    Winner,
    anchored_pattern,
    effective,
    effective_exchange,
    pcre_escape,
    winning_policy,
)
from rabbitry.spec.policy_checks import check_policy_overlaps
from specs import at, only, position_of, write_spec

BASE = """\
version: 1
%(top)s
exchanges:
  work: {type: direct}
  dead: {type: fanout}
  other: {type: fanout}
queues:
  a: {%(a)s}
  b: {type: quorum}
  parked: {}
bindings:
  - {from: work, queue: a, key: a}
  - {from: work, queue: b, key: b}
  - {from: dead, queue: parked}
policies:
%(policies)s
"""


def spec_with(
    tmp_path: Path, policies: str, *, a: str = "", top: str = "", operator: str = ""
) -> tuple[Report, str]:
    text = BASE % {"top": top, "a": a, "policies": policies}
    if operator:
        text += "operator_policies:\n" + operator + "\n"
    path = write_spec(tmp_path, text)
    return check(path), text


def policy_codes(report: Report) -> set[Code]:
    return {d.code for d in report.diagnostics if d.code.value.startswith("policy")}


# ----------------------------------------------------------------------------- loading


def test_a_policy_of_queue_names_is_an_anchored_pattern_with_sugar_folded_in(
    tmp_path: Path,
) -> None:
    report, text = spec_with(
        tmp_path,
        "  ttl:\n"
        "    queues: [a, b]\n"
        "    priority: 10\n"
        "    message_ttl: 300000\n"
        "    definition: {max-length: 5}\n"
        "    description: shorter waits\n",
    )
    assert report.errors == ()
    assert report.spec is not None
    policy = report.spec.policies["ttl"]
    assert policy.pattern == "^(?:a|b)$(?!\\n)"
    assert policy.apply_to is PolicyTarget.QUEUES
    assert policy.priority == 10
    assert dict(policy.definition) == {"max-length": 5, "message-ttl": 300000}
    assert (policy.operator, policy.description, policy.names) == (
        False,
        "shorter waits",
        ("a", "b"),
    )
    line, column = position_of(text, "300000")
    assert (
        policy.locs.of("definition.message-ttl").line,
        policy.locs.of("definition.message-ttl").column,
    ) == (line, column)
    assert policy.locs.of("definition.max-length").line == line + 1


def test_exchange_names_pattern_and_operator_policies(tmp_path: Path) -> None:
    report, _ = spec_with(
        tmp_path,
        "  ae: {exchanges: [work], alternate_exchange: other}\n"
        '  raw: {pattern: "^a", apply_to: all, priority: -1, definition: {expires: 60000}}\n',
        operator="  cap: {pattern: '.*', max_length: 1000000, delivery_limit: 20}",
    )
    assert report.errors == ()
    assert report.spec is not None
    ae, raw = report.spec.policies["ae"], report.spec.policies["raw"]
    assert (ae.pattern, ae.apply_to, dict(ae.definition)) == (
        "^work$(?!\\n)",
        PolicyTarget.EXCHANGES,
        {"alternate-exchange": "other"},
    )
    assert (raw.pattern, raw.apply_to, raw.priority, raw.names) == ("^a", PolicyTarget.ALL, -1, ())
    cap = report.spec.operator_policies["cap"]
    assert cap.operator
    assert dict(cap.definition) == {"max-length": 1000000, "delivery-limit": 20}


def test_the_rabbitmq_version_is_read_as_written(tmp_path: Path) -> None:
    report, _ = spec_with(tmp_path, "  p: {queues: [a], message_ttl: 1}", top="rabbitmq: 3.10")
    assert report.spec is not None
    assert report.spec.rabbitmq == (3, 10)
    report, _ = spec_with(tmp_path, "  p: {queues: [a], message_ttl: 1}", top='rabbitmq: "4.0.5"')
    assert report.spec is not None
    assert report.spec.rabbitmq == (4, 0)
    report, text = spec_with(tmp_path, "  p: {queues: [a], message_ttl: 1}", top="rabbitmq: newest")
    found = only(report, Code.BAD_VALUE)
    assert (found.location.line, found.location.column) == position_of(text, "newest")


SHAPE_FAULTS = [
    # (policy text, code, where the diagnostic points)
    ("  p: {message_ttl: 1}", Code.MISSING_KEY, "p:"),
    ("  p: {queues: [a], pattern: x, message_ttl: 1}", Code.POLICY_SHAPE, "pattern"),
    ("  p: {queues: [a], apply_to: exchanges, message_ttl: 1}", Code.POLICY_SHAPE, "exchanges,"),
    (
        "  p: {exchanges: [work], apply_to: queues, alternate_exchange: dead}",
        Code.POLICY_SHAPE,
        "queues,",
    ),
    ("  p: {queues: [], message_ttl: 1}", Code.MISSING_KEY, "[]"),
    ("  p: {queues: [a]}", Code.MISSING_KEY, "{queues"),
    ("  p: {queues: [a], definition: {x-message-ttl: 1}}", Code.POLICY_KEY, "x-message-ttl"),
    ("  p: {queues: [a], definition: {bogus: 1}}", Code.POLICY_KEY, "bogus"),
    ("  p: {queues: [a], max_priority: 3}", Code.POLICY_KEY, "max_priority"),
    ("  p: {queues: [a], single_active_consumer: true}", Code.POLICY_KEY, "single_active_consumer"),
    ("  p: {queues: [a], message_ttl: -1}", Code.ARGUMENT_TYPE, "-1"),
    ("  p: {queues: [a], definition: {overflow: drop-tail}}", Code.ARGUMENT_TYPE, "drop-tail"),
    ("  p: {queues: [a], message_ttl: 5, definition: {message-ttl: 6}}", Code.SUGAR_CONFLICT, "5,"),
    ("  p: {queues: [a], priority: high, message_ttl: 5}", Code.WRONG_TYPE, "high"),
    ("  p: {queues: [a], apply_to: streamz, message_ttl: 5}", Code.BAD_VALUE, "streamz"),
    ("  p: {queues: [a], ttl: 5}", Code.UNKNOWN_KEY, "ttl"),
]


@pytest.mark.parametrize(("policy", "code", "needle"), SHAPE_FAULTS)
def test_a_policy_written_wrong_is_reported_where_it_is_written(
    tmp_path: Path, policy: str, code: Code, needle: str
) -> None:
    report, text = spec_with(tmp_path, policy)
    found = only(report, code)
    assert (found.location.line, found.location.column) == position_of(
        text, needle, 1 + text[: text.index("policies:")].count(needle)
    )
    assert found.hint
    assert report.spec is not None
    assert "p" not in report.spec.policies
    assert not report.spec.complete


def test_sugar_and_definition_that_agree_are_one_key(tmp_path: Path) -> None:
    report, _ = spec_with(
        tmp_path, "  p: {queues: [a], message_ttl: 5, definition: {message-ttl: 5}}"
    )
    assert report.errors == ()
    assert report.spec is not None
    assert dict(report.spec.policies["p"].definition) == {"message-ttl": 5}


def test_an_operator_policy_sets_only_numeric_caps(tmp_path: Path) -> None:
    report, text = spec_with(
        tmp_path,
        "  p: {queues: [a], message_ttl: 1}",
        operator="  op: {pattern: '.*', dead_letter: dead}",
    )
    found = only(report, Code.POLICY_KEY)
    assert found.location.line == text.count("\n")  # the last line
    assert "operator polic" in found.message
    assert "max_length" in found.hint
    report, _ = spec_with(
        tmp_path,
        "  p: {queues: [a], message_ttl: 1}",
        operator="  op: {pattern: '.*', max_length_bytes: 1}",
    )
    assert report.errors == ()


def test_every_sugar_key_of_a_policy_is_a_queue_or_exchange_sugar_key() -> None:
    sugar = {a.sugar for a in (*QUEUE_ARGUMENTS.values(), *EXCHANGE_ARGUMENTS.values()) if a.sugar}
    assert set(POLICY_SUGAR) <= sugar
    assert {
        "message_ttl",
        "dead_letter",
        "max_length",
        "delivery_limit",
        "alternate_exchange",
    } <= set(POLICY_SUGAR)
    for name, key in POLICY_KEYS.items():
        assert not name.startswith("x-")
        assert key.queue_types or key.exchanges
    for key, rows in PRECEDENCE.items():
        assert key in POLICY_KEYS
        assert set(rows) <= {*(t.value for t in QueueType), "exchange"}


# ------------------------------------------------------------------------------ checks


def test_a_key_for_something_the_policy_does_not_apply_to(tmp_path: Path) -> None:
    report, text = spec_with(
        tmp_path, '  p: {pattern: "^w", apply_to: exchanges, delivery_limit: 3}'
    )
    found = only(report, Code.POLICY_TARGET)
    assert (found.location.line, found.location.column) == position_of(text, "delivery_limit")
    assert "quorum queues" in found.message
    report, text = spec_with(tmp_path, "  p: {queues: [a], alternate_exchange: other}")
    found = only(report, Code.POLICY_TARGET)
    assert "exchanges" in found.message
    report, _ = spec_with(
        tmp_path,
        '  p: {pattern: "^(a|work)$", apply_to: all, alternate_exchange: other, delivery_limit: 3}',
    )
    assert Code.POLICY_TARGET not in policy_codes(report)


def test_apply_to_per_queue_type_needs_3_12(tmp_path: Path) -> None:
    policy = "  p: {queues: [b], apply_to: quorum_queues, delivery_limit: 3}"
    report, text = spec_with(tmp_path, policy)
    found = only(report, Code.POLICY_VERSION_ASSUMED)
    assert found.severity is Severity.WARNING
    assert (found.location.line, found.location.column) == position_of(text, "quorum_queues")
    assert 'rabbitmq: "3.12"' in found.hint
    report, _ = spec_with(tmp_path, policy, top='rabbitmq: "3.11"')
    assert only(report, Code.POLICY_VERSION).severity is Severity.ERROR
    report, _ = spec_with(tmp_path, policy, top='rabbitmq: "3.12"')
    assert policy_codes(report) == set()
    # a key a queue type does not take, with a per-type target
    report, _ = spec_with(
        tmp_path,
        "  p: {queues: [a], apply_to: classic_queues, delivery_limit: 3}",
        top="rabbitmq: 3.13",
    )
    assert policy_codes(report) == {Code.POLICY_TARGET}


def test_keys_removed_by_a_later_rabbitmq(tmp_path: Path) -> None:
    policy = "  p: {queues: [a], definition: {ha-mode: all}}"
    report, _ = spec_with(tmp_path, policy)
    assert policy_codes(report) == set()
    report, text = spec_with(tmp_path, policy, top='rabbitmq: "4.0"')
    found = only(report, Code.RABBITMQ_REFUSED)  # spec.rabbitmq4's table
    assert (found.location.line, found.location.column) == position_of(text, "ha-mode")


@pytest.mark.parametrize("pattern", ["(", "[a", "a{2,1}", r"\\Qa.b\\E", "(?<=a+)b"])
def test_a_pattern_that_is_not_a_regex(tmp_path: Path, pattern: str) -> None:
    report, text = spec_with(tmp_path, f'  p: {{pattern: "{pattern}", message_ttl: 1}}')
    found = only(report, Code.POLICY_PATTERN)
    assert found.location.line == text.count("\n")
    assert "PCRE" in found.hint


def test_a_valid_pattern_is_quiet(tmp_path: Path) -> None:
    report, _ = spec_with(tmp_path, '  p: {pattern: "^(a|b)$", message_ttl: 1}')
    assert Code.POLICY_PATTERN not in policy_codes(report)


def test_equal_priorities_on_one_object_are_an_error_naming_both(tmp_path: Path) -> None:
    report, _ = spec_with(
        tmp_path,
        "  one: {queues: [a], message_ttl: 1}\n  two: {pattern: '^a', max_length: 1}\n",
    )
    found = only(report, Code.POLICY_TIE)
    assert "'one'" in found.message
    assert "'two'" in found.message
    assert "queue 'a'" in found.message
    report, _ = spec_with(
        tmp_path,
        "  one: {queues: [a], message_ttl: 1}\n"
        "  two: {pattern: '^a', priority: 1, max_length: 1}\n",
    )
    assert Code.POLICY_TIE not in policy_codes(report)
    report, _ = spec_with(
        tmp_path, "  one: {queues: [a], message_ttl: 1}\n  two: {queues: [b], max_length: 1}\n"
    )
    assert Code.POLICY_TIE not in policy_codes(report)


def test_operator_policies_tie_among_themselves_not_with_user_policies(tmp_path: Path) -> None:
    report, _ = spec_with(
        tmp_path,
        "  one: {queues: [a], message_ttl: 1}",
        operator="  op1: {pattern: '.*', max_length: 10}\n  op2: {pattern: 'a', expires: 10000}",
    )
    found = only(report, Code.POLICY_TIE)
    assert "operator policy 'op1'" in found.message
    assert "operator policy 'op2'" in found.message


def test_a_policy_shadowed_everywhere_is_a_warning_naming_both(tmp_path: Path) -> None:
    report, _ = spec_with(
        tmp_path,
        "  wide: {pattern: '.*', priority: 5, message_ttl: 1}\n"
        "  narrow: {queues: [a], max_length: 1}\n",
    )
    found = only(report, Code.POLICY_SHADOWED)
    assert found.severity is Severity.WARNING
    assert found.message.startswith("policy 'narrow'")
    assert "'wide'" in found.message
    # Taking effect on one object is enough not to be shadowed.
    report, _ = spec_with(
        tmp_path,
        "  wide: {pattern: '^b', priority: 5, message_ttl: 1}\n"
        "  narrow: {pattern: '^(a|b)$', max_length: 1}\n",
    )
    assert Code.POLICY_SHADOWED not in policy_codes(report)


def test_an_argument_a_policy_also_sets_says_which_value_wins(tmp_path: Path) -> None:
    report, text = spec_with(
        tmp_path, "  p: {queues: [a], message_ttl: 500}", a="message_ttl: 1000"
    )
    found = only(report, Code.POLICY_OVERRIDE)
    assert (found.location.line, found.location.column) == position_of(text, "1000")
    assert "the broker uses policy's 500" in found.message
    assert "lesser" in found.message
    report, _ = spec_with(tmp_path, "  p: {queues: [a], dead_letter: other}", a="dead_letter: dead")
    found = only(report, Code.POLICY_OVERRIDE)
    assert "the broker uses the argument's 'dead'" in found.message
    report, _ = spec_with(
        tmp_path,
        "  p: {queues: [a], message_ttl: 500}",
        operator="  op: {pattern: '.*', message_ttl: 100}",
        a="message_ttl: 1000",
    )
    found = only(report, Code.POLICY_OVERRIDE)
    assert "operator policy 'op'" in found.message
    assert "100" in found.message
    report, _ = spec_with(tmp_path, "  p: {queues: [a], max_length: 5}", a="message_ttl: 1000")
    assert Code.POLICY_OVERRIDE not in policy_codes(report)


def test_an_alternate_exchange_argument_a_policy_also_sets(tmp_path: Path) -> None:
    text = (
        BASE
        % {"top": "", "a": "", "policies": "  p: {exchanges: [work], alternate_exchange: dead}"}
    ).replace("work: {type: direct}", "work: {type: direct, alternate_exchange: other}")
    report = check(write_spec(tmp_path, text))
    found = only(report, Code.POLICY_OVERRIDE)
    assert "the broker uses the argument's 'other'" in found.message
    assert found.location.line == 4


def test_quorum_overflow_is_the_policys(tmp_path: Path) -> None:
    text = (
        BASE % {"top": "", "a": "", "policies": "  p: {queues: [b], overflow: drop-head}"}
    ).replace("b: {type: quorum}", "b: {type: quorum, overflow: reject-publish}")
    found = only(check(write_spec(tmp_path, text)), Code.POLICY_OVERRIDE)
    assert "the broker uses policy's 'drop-head' (the policy wins" in found.message


def test_a_policy_sending_to_an_exchange_the_spec_lacks(tmp_path: Path) -> None:
    report, text = spec_with(tmp_path, "  p: {queues: [a], dead_letter: nowhere}")
    found = only(report, Code.UNKNOWN_EXCHANGE)
    assert (found.location.line, found.location.column) == position_of(text, "nowhere")
    report, _ = spec_with(tmp_path, "  p: {exchanges: [work], alternate_exchange: dedd}")
    assert "did you mean 'dead'" in only(report, Code.UNKNOWN_EXCHANGE).hint
    report, _ = spec_with(tmp_path, "  p: {exchanges: [amq.topic], alternate_exchange: dead}")
    assert report.errors == ()


def test_names_listed_that_the_spec_lacks(tmp_path: Path) -> None:
    report, text = spec_with(tmp_path, "  p: {queues: [a, parkd], message_ttl: 1}")
    found = only(report, Code.UNKNOWN_QUEUE)
    assert (found.location.line, found.location.column) == position_of(text, "parkd")
    report, _ = spec_with(tmp_path, "  p: {exchanges: [wrk], alternate_exchange: dead}")
    assert only(report, Code.UNKNOWN_EXCHANGE).message.startswith("policy 'p' names exchange 'wrk'")


def test_a_policy_dead_letter_exchange_counts_as_dead_lettering(tmp_path: Path) -> None:
    spec = (
        BASE
        + "messages:\n  M: {schema: m.json, exchange: work, routing_key: a}\n"
        + "services:\n  s: {publishes: [M], consumes: {a: [M]}}\n"
    )
    path = write_spec(
        tmp_path,
        spec % {"top": "", "a": "", "policies": "  p: {queues: [b], message_ttl: 1}"},
        {"m.json": {"type": "object"}},
    )
    assert [d.message for d in at(check(path), Code.NO_DEAD_LETTER)] != []
    path = write_spec(
        tmp_path,
        spec % {"top": "", "a": "", "policies": "  p: {queues: [a], dead_letter: dead}"},
        {"m.json": {"type": "object"}},
    )
    assert at(check(path), Code.NO_DEAD_LETTER) == []


def test_an_x_argument_a_policy_could_set_is_a_hint_not_a_finding(tmp_path: Path) -> None:
    report, text = spec_with(
        tmp_path, "  p: {queues: [b], message_ttl: 1}", a="dead_letter: dead, max_priority: 5"
    )
    assert Code.POLICY_SETTABLE not in {d.code for d in report.diagnostics}
    [hint] = report.hints
    assert hint.code is Code.POLICY_SETTABLE
    assert hint.severity is Severity.INFO
    assert "dead_letter" in hint.message
    assert "max_priority" not in hint.message
    assert (hint.location.line, hint.location.column) == position_of(text, "a: {")
    assert "queues: [a]" in hint.hint
    # Set by a policy already (an override, warned), or nothing settable: no hint.
    report, _ = spec_with(tmp_path, "  p: {queues: [a], dead_letter: other}", a="dead_letter: dead")
    assert report.hints == ()
    report, _ = spec_with(tmp_path, "  p: {queues: [b], message_ttl: 1}", a="max_priority: 5")
    assert report.hints == ()


# ------------------------------------------------------------------------ the rules


def _spec(
    queues: dict[str, Queue], policies: Sequence[Policy], operator: Sequence[Policy] = ()
) -> Spec:
    return Spec(
        path=Path("t.yaml"),
        queues=MappingProxyType(queues),
        policies=MappingProxyType({p.name: p for p in policies}),
        operator_policies=MappingProxyType({p.name: p for p in operator}),
    )


def test_effective_settings_follow_the_precedence_table() -> None:
    queue = Queue(
        "q",
        QueueType.QUORUM,
        arguments=MappingProxyType(
            {"x-message-ttl": 1000, "x-dead-letter-exchange": "arg", "x-overflow": "reject-publish"}
        ),
    )
    user = Policy(
        "p",
        "^q$",
        definition=MappingProxyType(
            {
                "message-ttl": 50,
                "dead-letter-exchange": "pol",
                "overflow": "drop-head",
                "max-length": 9,
                "max-age": "1D",
            }
        ),
    )
    op = Policy(
        "op", ".*", definition=MappingProxyType({"max-length": 3, "message-ttl": 70}), operator=True
    )
    found = effective(_spec({"q": queue}, [user], [op]), "q")
    assert found == {
        "message-ttl": Setting(50, "policy:p"),
        "dead-letter-exchange": Setting("arg", "argument"),
        "overflow": Setting("drop-head", "policy:p"),
        "max-length": Setting(3, "operator_policy:op"),
    }  # max-age is a stream key: a quorum queue ignores it


def test_the_highest_priority_wins_and_exchanges_take_only_exchange_keys() -> None:
    low = Policy("low", ".*", PolicyTarget.ALL, 0, MappingProxyType({"alternate-exchange": "x"}))
    high = Policy(
        "high",
        "^e",
        PolicyTarget.ALL,
        1,
        MappingProxyType({"alternate-exchange": "y", "message-ttl": 1}),
    )
    assert winning_policy([low, high], "exchange", "e") is high
    assert winning_policy([low, high], "exchange", "f") is low
    assert winning_policy([low, high], "queue", "zzz", QueueType.STREAM) is low
    spec = Spec(
        path=Path("t"),
        exchanges=MappingProxyType({"e": Exchange("e", ExchangeType.TOPIC)}),
        policies=MappingProxyType({"low": low, "high": high}),
    )
    assert effective_exchange(spec, "e") == {"alternate-exchange": Setting("y", "policy:high")}
    assert effective_exchange(spec, "") == {}


@given(
    st.one_of(st.none(), st.integers(0, 10**6)),
    st.one_of(st.none(), st.integers(0, 10**6)),
    st.one_of(st.none(), st.integers(0, 10**6)),
    st.sampled_from(list(QueueType)[:2]),
)
def test_numeric_caps_the_least_wins(
    arg: int | None, pol: int | None, op: int | None, kind: QueueType
) -> None:
    arguments = {"x-message-ttl": arg} if arg is not None else {}
    queue = Queue("q", kind, arguments=MappingProxyType(arguments))
    user = (
        [Policy("p", "q", definition=MappingProxyType({"message-ttl": pol}))]
        if pol is not None
        else []
    )
    oper = (
        [Policy("o", "q", definition=MappingProxyType({"message-ttl": op}), operator=True)]
        if op is not None
        else []
    )
    found = effective(_spec({"q": queue}, user, oper), "q").get("message-ttl")
    present = [v for v in (arg, pol, op) if v is not None]
    assert (found.value if found else None) == (min(present) if present else None)
    assert PRECEDENCE["message-ttl"][kind.value] is Winner.LESSER


# -------------------------------------------------------------- anchored patterns

NAME_CHARS = st.sampled_from(
    list(string.ascii_letters[:6] + string.digits[:3] + string.punctuation + " \n\té")
)
names = st.text(NAME_CHARS, min_size=1, max_size=8)


@settings(max_examples=300)
@given(st.lists(names, min_size=1, max_size=5), st.lists(names, max_size=10))
def test_an_anchored_pattern_matches_exactly_its_names(
    listed: list[str], others: list[str]
) -> None:
    pattern = anchored_pattern(listed)
    compiled = re.compile(pattern)
    probes = {*listed, *others}
    for name in listed:
        probes |= {name + "\n", "\n" + name, name[:-1], name + name, "x" + name, name + "x"}
    for probe in probes:
        assert (compiled.search(probe) is not None) == (probe in listed), (pattern, probe)
    # Only escapes PCRE reads the same way: a backslash before ASCII punctuation,
    # and the one \n of the closing lookahead.
    body = pattern.removesuffix("$(?!\\n)")
    assert all(m.group(1) in string.punctuation for m in re.finditer(r"\\(.)", body, re.DOTALL)), (
        pattern
    )


def test_pcre_escape_leaves_letters_and_digits_alone() -> None:
    assert pcre_escape("orders.shipping-v2") == "orders\\.shipping\\-v2"
    assert pcre_escape("ABCxyz019 é") == "ABCxyz019 é"


# ---------------------------------------------------------- overlaps, as properties

QUEUE_NAMES = ["a", "ab", "b", "c"]
PATTERNS = ["^a", "b", "^(a|c)$", ".*", "^ab$", "z"]


@st.composite
def policy_sets(draw: st.DrawFn) -> list[Policy]:
    count = draw(st.integers(0, 5))
    return [
        Policy(
            f"p{i}",
            draw(st.sampled_from(PATTERNS)),
            draw(st.sampled_from([PolicyTarget.QUEUES, PolicyTarget.ALL, PolicyTarget.EXCHANGES])),
            draw(st.integers(0, 2)),
            MappingProxyType({"message-ttl": 1}),
        )
        for i in range(count)
    ]


@settings(max_examples=300)
@given(policy_sets())
def test_the_tie_and_shadow_checks_fire_exactly_when_they_should(policies: list[Policy]) -> None:
    spec = _spec({n: Queue(n) for n in QUEUE_NAMES}, policies)
    found = list(check_policy_overlaps(spec))
    # An independent reading: which policies apply to which queue.
    applies = {
        p.name: {
            n
            for n in QUEUE_NAMES
            if p.apply_to is not PolicyTarget.EXCHANGES and re.search(p.pattern, n)
        }
        for p in policies
    }
    tied = {
        tuple(sorted((a.name, b.name)))
        for a, b in combinations(policies, 2)
        if a.priority == b.priority and applies[a.name] & applies[b.name]
    }
    reported_ties = {
        tuple(sorted(re.findall(r"policy '(p\d)'", d.message)))
        for d in found
        if d.code is Code.POLICY_TIE
    }
    assert reported_ties == tied
    shadowed = {
        p.name
        for p in policies
        if applies[p.name]
        and all(
            any(h.priority > p.priority and n in applies[h.name] for h in policies)
            for n in applies[p.name]
        )
    }
    reported_shadowed = {
        re.match(r"policy '(p\d)'", d.message).group(1)  # type: ignore[union-attr]
        for d in found
        if d.code is Code.POLICY_SHADOWED
    }
    assert reported_shadowed == shadowed


# ------------------------------------------------------------------ never a crash

POLICY_BODY_KEYS = [
    "pattern",
    "queues",
    "exchanges",
    "apply_to",
    "priority",
    "definition",
    "description",
    "message_ttl",
    "dead_letter",
    "delivery_limit",
    "alternate_exchange",
    "max_priority",
    "overflow",
    "bogus",
]
ANY_VALUE = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 10**6),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(["a", "b", "dead", "(", ".*", "^a$", "queues", "all", "streams", ""]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["message-ttl", "x-expires", "ha-params", "k"]), inner),
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["p1", "p2", "amq.p", "p 3"]),
        st.dictionaries(st.sampled_from(POLICY_BODY_KEYS), ANY_VALUE, max_size=5),
        max_size=3,
    ),
    st.booleans(),
    st.one_of(st.none(), ANY_VALUE),
)
def test_check_never_raises_on_random_policies(
    tmp_path_factory: pytest.TempPathFactory,
    policies: dict[str, dict[str, object]],
    operator: bool,
    version: object,
) -> None:
    import yaml  # noqa: PLC0415 - only this property writes YAML from data

    tmp = tmp_path_factory.mktemp("fuzz")
    body = yaml.safe_load(BASE % {"top": "", "a": "", "policies": ""})
    body["operator_policies" if operator else "policies"] = policies
    if version is not None:
        body["rabbitmq"] = version
    report = check(write_spec(tmp, body))
    for found in report.diagnostics + report.hints:
        assert found.location.line >= 1
        assert found.message
    assert report.spec is not None
    for queue in report.spec.queues:
        effective(report.spec, queue)  # whatever policies made it into the model
