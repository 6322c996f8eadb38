"""RabbitMQ 4 awareness: ``spec.rabbitmq4``'s table, as ``check`` and ``plan`` read it.

There is no 4.x broker here: the only broker is 3.10.8.  What a 4.x broker
refuses is tested as the plan logic's decision (``plan.version_findings`` /
``refuse_what_the_broker_refuses``) fed a live state that says 4.x; that the
live state carries the version the broker gives is tested on the 3.10 broker,
over the management API and over AMQP.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pamqp import commands as pamqp_commands

from amqp import channel_on
from broker import Vhost
from rabbitry.broker import converge
from rabbitry.broker.live import AMQP, MANAGEMENT, LiveState, read_live
from rabbitry.broker.plan import refuse_what_the_broker_refuses, version_findings
from rabbitry.broker.state import Topology
from rabbitry.broker.url import parse_url
from rabbitry.check import check, load_spec
from rabbitry.errors import SpecError
from rabbitry.messaging._decode import MAX_BODY
from rabbitry.spec import Code, Diagnostic, Severity
from rabbitry.spec.arguments import QUEUE_ARGUMENTS
from rabbitry.spec.policies import POLICY_KEYS
from rabbitry.spec.rabbitmq4 import (
    MAX_MESSAGE_SIZE,
    RULES,
    Place,
    Rule,
    Version,
    findings,
    parse_version,
    shown,
)
from specs import FLAGSHIP, run_cli

RULE_CODES = frozenset({Code.RABBITMQ_4, Code.RABBITMQ_REFUSED})

# A spec around one queue `q` (and a policy `p` on it when a policy key is tested):
# a dead-letter exchange with a queue bound to it, so that only the rule under test fires.
BASE = """\
version: 1
%(top)s
exchanges:
  dead: {type: fanout}
queues:
  parked: {}
  q: %(queue)s
bindings:
  - {from: dead, queue: parked}
%(policies)s
"""

#: A value each key may hold (the trigger's own values where it has them).
VALUES: dict[str, list[object]] = {
    "x-queue-mode": ["lazy", "default"],
    "queue-mode": ["lazy", "default"],
    "x-queue-master-locator": ["min-masters", "client-local", "random"],
    "queue-master-locator": ["min-masters", "client-local", "random"],
    "ha-mode": ["all", "exactly"],
    "ha-params": [2, "x"],
    "ha-sync-mode": ["manual", "automatic"],
    "ha-sync-batch-size": [1, 100],
    "ha-promote-on-shutdown": ["always", "when-synced"],
    "ha-promote-on-failure": ["always", "when-synced"],
}


@dataclass(frozen=True)
class Written:
    """One way of writing a rule into a spec, and the text the finding should point at."""

    rule: Rule
    top: str
    queue: str
    policies: str
    marker: str  # the text the finding is located at (its first occurrence after `q:`)
    spelling: str  # what the message names
    offset: int = 0  # how far into ``marker``


def _yaml(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


@st.composite
def written(draw: st.DrawFn, rule: Rule, target: str) -> Written:
    trigger = rule.trigger
    quorum = "type: quorum, dead_letter: dead"
    if trigger.place is Place.QUEUE_ARGUMENT:
        key = draw(st.sampled_from(trigger.keys))
        options = trigger.values or VALUES.get(key) or [draw(st.integers(0, 10**6))]
        value = draw(st.sampled_from(list(options)))
        known = QUEUE_ARGUMENTS.get(key)
        kind = quorum if "in-memory" in key else "type: classic"
        if known is not None and known.sugar and draw(st.booleans()):
            # located at the sugar key's value, or at the arguments' table
            queue = f"{{{kind}, {known.sugar}: {_yaml(value)}}}"
            marker, offset = f"{known.sugar}: ", len(known.sugar) + 2
        else:
            queue = f"{{{kind}, arguments: {{{key}: {_yaml(value)}}}}}"
            marker, offset = f"{{{key}", 0
        spelling = key if trigger.values is None else f"{key}: {value!r}"
        return Written(rule, target, queue, "", marker, spelling, offset)
    if trigger.place is Place.POLICY_KEY:
        key = draw(st.sampled_from(trigger.keys))
        options = trigger.values or VALUES.get(key) or [draw(st.integers(0, 10**6))]
        value = draw(st.sampled_from(list(options)))
        policy_key = POLICY_KEYS[key]
        sugar = policy_key.sugar
        if sugar and draw(st.booleans()):
            body, marker = f"{sugar}: {_yaml(value)}", sugar
        else:
            body, marker = f"definition: {{{key}: {_yaml(value)}}}", key
        operator = policy_key.operator and draw(st.booleans())
        section = "operator_policies" if operator else "policies"
        policies = f"{section}:\n  p: {{queues: [q], {body}}}"
        spelling = key if trigger.values is None else f"{key}: {value!r}"
        return Written(rule, target, "{dead_letter: dead}", policies, marker, spelling)
    if trigger.place is Place.TRANSIENT_QUEUE:
        auto = draw(st.sampled_from(["", ", auto_delete: true", ", auto_delete: false"]))
        queue = f"{{durable: false, dead_letter: dead{auto}}}"
        return Written(rule, target, queue, "", "false", rule.feature)
    limit = draw(st.sampled_from(["", ", delivery_limit: 5"]))
    return Written(rule, target, f"{{type: quorum{limit}}}", "", "q:", rule.feature)


@st.composite
def a_rule_written(draw: st.DrawFn) -> Written:
    rule = draw(st.sampled_from(RULES))
    version = draw(st.sampled_from([None, (3, 10), (3, 13), (4, 0), (4, 2), (4, 3), (5, 1)]))
    top = "" if version is None else f'rabbitmq: "{shown(version)}"'
    return draw(written(rule, top))


def _findings(text: str) -> tuple[list[Diagnostic], str]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "topology.yaml"
        path.write_text(text)
        report = check(path)
    return [d for d in report.diagnostics if d.code in RULE_CODES], text


def _position(text: str, marker: str) -> tuple[int, int]:
    start = text.index("  q:")
    at = text.index(marker, start) if marker != "q:" else start + 2
    line = text.count("\n", 0, at) + 1
    return line, at - text.rfind("\n", 0, at)


def _target(top: str) -> Version | None:
    return parse_version(top.split('"')[1]) if top else None


@settings(max_examples=150, deadline=None)
@given(a_rule_written())
def test_every_row_is_found_with_its_version_and_an_error_where_the_target_refuses_it(
    case: Written,
) -> None:
    text = BASE % {"top": case.top, "queue": case.queue, "policies": case.policies}
    found, _ = _findings(text)
    rule, target = case.rule, _target(case.top)
    assert len(found) == 1, [d.render() for d in found]
    finding = found[0]
    where = _position(text, case.marker)
    assert (finding.location.line, finding.location.column) == (where[0], where[1] + case.offset)
    assert case.spelling in finding.message
    assert finding.hint == rule.remedy
    refused = rule.refused_from
    if refused is not None and target is not None and target >= refused:
        assert finding.code is Code.RABBITMQ_REFUSED
        assert finding.severity is Severity.ERROR
        assert f"RabbitMQ {shown(refused)} " in finding.message
        assert f'the spec targets RabbitMQ {shown(target)} (`rabbitmq: "' in finding.message
    else:
        assert finding.code is Code.RABBITMQ_4
        assert finding.severity is Severity.WARNING
        assert f"RabbitMQ {shown(rule.matters_from)} " in finding.message
        if refused is not None:
            assert f"{shown(refused)} " in finding.message  # the refusal to come is said too


@pytest.mark.parametrize(
    "queue",
    [
        "{arguments: {x-queue-version: 2}}",
        "{arguments: {x-queue-version: true}}",
        "{durable: false, exclusive: true}",
        "{type: quorum, dead_letter: dead}",
        "{type: quorum, dead_letter: ''}",
        "{leader_locator: balanced, type: quorum, dead_letter: dead}",
        "{max_length: 5, message_ttl: 100}",
    ],
)
def test_what_4x_keeps_is_not_a_finding(queue: str) -> None:
    text = BASE % {"top": 'rabbitmq: "4.3"', "queue": queue, "policies": ""}
    found, _ = _findings(text)
    assert found == [], [d.render() for d in found]


def test_a_dead_letter_exchange_from_a_policy_counts_for_a_quorum_queue() -> None:
    policies = "policies:\n  p: {queues: [q], dead_letter: dead, delivery_limit: 5}"
    text = BASE % {"top": "", "queue": "{type: quorum}", "policies": policies}
    assert _findings(text)[0] == []
    text = BASE % {"top": "", "queue": "{type: quorum}", "policies": ""}
    assert [d.code for d in _findings(text)[0]] == [Code.RABBITMQ_4]


def test_rabbitmq_4_3_turns_every_refusal_into_an_error() -> None:
    queue = "{queue_mode: lazy, durable: false, arguments: {x-queue-version: 1}}"
    policies = "policies:\n  p: {queues: [q], definition: {ha-mode: all, queue-version: 1}}"
    for top, errors, warnings in (
        ("", 0, 5),
        ('rabbitmq: "3.13"', 0, 5),
        ('rabbitmq: "4.0"', 1, 4),  # ha-mode, refused from 4.0
        ('rabbitmq: "4.2"', 1, 4),
        ('rabbitmq: "4.3"', 4, 1),  # and x-queue-mode, x-queue-version: 1, durable: false
    ):
        found, _ = _findings(BASE % {"top": top, "queue": queue, "policies": policies})
        severities = [d.severity for d in found]
        assert severities.count(Severity.ERROR) == errors, top
        assert severities.count(Severity.WARNING) == warnings, top


def test_the_flagship_is_clean_under_strict(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["check", "--strict", str(FLAGSHIP)], capsys)
    assert code == 0, out + err
    report = check(FLAGSHIP)
    assert not [d for d in report.diagnostics if d.code in RULE_CODES]
    # Its quorum queue is clean because the policy gives it a dead-letter path.
    assert any(q.type.value == "quorum" for q in report.spec.queues.values())  # type: ignore[union-attr]


def test_the_runtime_body_limit_is_under_4_0s_message_size_cap() -> None:
    # A body the runtime sends is never one a 4.0 broker's default max_message_size refuses.
    assert MAX_BODY <= MAX_MESSAGE_SIZE


# ----------------------------------------------------------------- the live broker's version


@given(
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 99),
    st.sampled_from(["", "-rc.1", "+3.gdeadbee", "-beta.2"]),
)
def test_a_version_string_is_its_major_and_minor(
    major: int, minor: int, patch: int, suffix: str
) -> None:
    assert parse_version(f"{major}.{minor}.{patch}{suffix}") == (major, minor)
    assert parse_version(f"{major}.{minor}") == (major, minor)


@pytest.mark.parametrize("text", [None, "", "4", "x.y.z", "4.x", "4.3a.1", "v4.3.0"])
def test_what_is_not_a_version_is_unknown(text: str | None) -> None:
    assert parse_version(text) is None


def _every_rule_spec(tmp_path: Path) -> Path:
    queue = "{queue_mode: lazy, durable: false, arguments: {x-queue-version: 1}}"
    policies = "policies:\n  p: {queues: [q], definition: {ha-mode: all}}"
    path = tmp_path / "topology.yaml"
    path.write_text(BASE % {"top": "", "queue": queue, "policies": policies})
    return path


@given(st.integers(3, 6), st.integers(0, 15), st.integers(0, 20))
@example(3, 13, 7)
@example(4, 0, 0)
@example(4, 2, 9)
@example(4, 3, 0)
@settings(deadline=None)
def test_plan_makes_errors_of_what_the_live_broker_refuses(
    major: int, minor: int, patch: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        spec = load_spec(_every_rule_spec(Path(folder)))
    running = f"{major}.{minor}.{patch}"
    live = LiveState(Topology(), MANAGEMENT, version=running)
    found = version_findings(spec, live)
    rules = [f.rule.feature for f in findings(spec)]  # version_findings keeps their order
    assert len(rules) == len(found)
    refused = {rule for rule, d in zip(rules, found, strict=True) if d.severity is Severity.ERROR}
    # What the brief and the broker's source say, independently of the table.
    refused_from = {
        "x-queue-mode": (4, 3),
        "x-queue-version: 1": (4, 3),
        "classic mirroring (ha-*)": (4, 0),
        "a transient non-exclusive queue (durable: false)": (4, 3),
    }
    assert set(rules) == set(refused_from)
    assert refused == {f for f, v in refused_from.items() if (major, minor) >= v}
    for finding in found:
        if finding.severity is Severity.ERROR:
            assert f"the broker runs RabbitMQ {running}" in finding.message
    if refused:
        with pytest.raises(SpecError) as raised:
            refuse_what_the_broker_refuses(spec, live)
        assert all(d.code is Code.RABBITMQ_REFUSED for d in raised.value.diagnostics)
        assert len(raised.value.diagnostics) == len(refused)
    else:
        assert refuse_what_the_broker_refuses(spec, live) == found


def test_a_4_3_broker_refuses_with_a_located_message(tmp_path: Path) -> None:
    spec = load_spec(_every_rule_spec(tmp_path))
    live = LiveState(Topology(), AMQP, version="4.3.0")
    with pytest.raises(SpecError) as raised:
        refuse_what_the_broker_refuses(spec, live)
    rendered = [d.render() for d in raised.value.diagnostics]
    assert len(rendered) == 4
    assert any(
        "queue 'q': x-queue-version: 1: RabbitMQ 4.3 refuses it: the declare fails with 406" in r
        and "the broker runs RabbitMQ 4.3.0" in r
        and '`rabbitmq: "4.3"` makes check say so too' in r
        for r in rendered
    ), rendered
    assert all(r.startswith(str(tmp_path / "topology.yaml")) for r in rendered)


def test_an_unknown_broker_version_is_judged_by_the_spec_s_target(tmp_path: Path) -> None:
    spec = load_spec(_every_rule_spec(tmp_path))
    live = LiveState(Topology(), AMQP, version=None)
    found = version_findings(spec, live)
    assert {d.severity for d in found} == {Severity.WARNING}
    assert refuse_what_the_broker_refuses(spec, live) == found


def test_plan_on_the_3_10_broker_reads_3_10_8_and_keeps_warnings(
    vhost: Vhost, tmp_path: Path
) -> None:
    spec = load_spec(_every_rule_spec(tmp_path))
    url = parse_url(vhost.amqp_url)
    planned = asyncio.run(converge.plan(spec, url, timeout=10))
    assert planned.live.source == MANAGEMENT
    assert planned.live.version == "3.10.8"
    assert planned.live.release == (3, 10)
    found = version_findings(spec, planned.live)
    assert len(found) == 4
    assert {d.severity for d in found} == {Severity.WARNING}
    over_amqp = asyncio.run(read_live(url, spec, management=False, timeout=10))
    assert over_amqp.source == AMQP
    assert over_amqp.version == "3.10.8"


def test_plan_prints_the_version_and_the_warnings(
    vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _every_rule_spec(tmp_path)
    code, out, err = run_cli(["plan", str(path), "--url", vhost.amqp_url], capsys)
    assert code == 3, out + err
    assert "  broker: RabbitMQ 3.10.8" in out
    assert err.count("[rabbitmq-4]") == 4
    code, out, err = run_cli(
        ["plan", str(path), "--url", vhost.amqp_url, "--format", "json"], capsys
    )
    assert '"rabbitmq_version": "3.10.8"' in out


# ------------------------------------------- the 3.10 half of each row, pinned on the broker


def test_the_3_10_broker_accepts_what_4x_refuses(vhost: Vhost, tmp_path: Path) -> None:
    """Before the versions the table names, the broker takes each of them: a transient
    non-exclusive queue, x-queue-mode, x-queue-version 1, an ha-mode policy."""
    spec = load_spec(_every_rule_spec(tmp_path))
    url = parse_url(vhost.amqp_url)
    asyncio.run(converge.apply(spec, url, timeout=10))
    queue = next(q for q in vhost.queues() if q["name"] == "q")
    assert queue["durable"] is False
    assert queue["exclusive"] is False
    assert queue["arguments"]["x-queue-mode"] == "lazy"
    assert queue["arguments"]["x-queue-version"] == 1
    policies = vhost.api.get_json(f"/api/policies/{quote(vhost.name, safe='')}")
    assert [p["definition"] for p in policies] == [{"ha-mode": "all"}]
    again = asyncio.run(converge.plan(spec, url, timeout=10))
    assert again.plan.empty


def test_a_quorum_queue_without_a_delivery_limit_redelivers_past_20_on_3_10(
    vhost: Vhost,
) -> None:
    """The row's "unlimited before 4.0": 25 requeues, and the message is still there."""

    async def go() -> list[int]:
        seen: list[int] = []
        async with channel_on(vhost) as channel:
            await channel.queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum"})
            await channel.basic_publish(b"{}", routing_key="qq")
            for _ in range(26):
                got = await _get(channel, "qq")
                headers = got.header.properties.headers or {}
                seen.append(int(headers.get("x-delivery-count", 0)))
                await channel.basic_nack(got.delivery_tag, requeue=True)
        return seen

    seen = asyncio.run(go())
    assert len(seen) == 26
    assert seen[-1] >= 25  # delivered 26 times; a 4.0 broker would have dropped it after 20


async def _get(channel: Any, queue: str, timeout: float = 5.0) -> Any:
    """One message from ``queue`` (basic.get, retried while the queue is momentarily empty)."""
    async with asyncio.timeout(timeout):
        while True:
            got = await channel.basic_get(queue)
            if isinstance(got.delivery, pamqp_commands.Basic.GetOk):
                return got
            await asyncio.sleep(0.01)
