"""What ``check --against`` SAYS about each kind of schema change: subject, place, verdict and
the sentence, old → new whichever direction found it; the change as data; and the
counterexample citing the very fault its finding is about."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rabbitry.check import check, load_spec
from rabbitry.compat import Change, Direction, Finding, Mode, Verdict, compare, compare_message
from rabbitry.messaging.contract import MessageContract
from specs import copy_flagship, edit

B, U = Verdict.BREAKING, Verdict.UNKNOWN
BACK, FORTH = Direction.BACKWARD, Direction.FORWARD
S = {"type": "string"}


def obj(properties: dict[str, Any], *required: str, closed: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def field(schema: dict[str, Any]) -> dict[str, Any]:
    return obj({"v": schema}, "v")


def contract(schema: dict[str, Any]) -> MessageContract:
    return MessageContract("M", "x", "", {}, False, schema)


def opened(**extra: Any) -> dict[str, Any]:
    return {**obj({"a": S, "b": S}, closed=False), **extra}


# (id, old, new, direction, path, verdict, sentence): the one finding that is not compatible.
TEXT: list[tuple[str, dict[str, Any], dict[str, Any], Direction, str, Verdict, str]] = [
    ("type-widened", field(S), field({"type": ["string", "null"]}), FORTH, "/v", B,
     "type: string → null or string"),
    ("type-narrowed", field({"type": ["string", "null"]}), field(S), BACK, "/v", B,
     "type: null or string → string"),
    ("type-any-to-string", field({}), field(S), BACK, "/v", B, "type: any → string"),
    ("enum-value-added", field({"enum": ["a", "b"]}), field({"enum": ["a", "b", "c"]}), FORTH,
     "/v", B, 'value "c": not allowed → allowed'),
    ("enum-value-removed", field({"enum": ["a", "b", "c"]}), field({"enum": ["a"]}), BACK,
     "/v", B, 'values "b", "c": allowed → not allowed'),
    ("enum-on-string", field(S), field({"enum": ["a", "b"]}), BACK, "/v", B,
     'allowed values: any → "a", "b"'),
    ("enum-dropped", field({"enum": ["a", "b"]}), field(S), FORTH, "/v", B,
     'allowed values: "a", "b" → any'),
    ("minimum-raised", field({"type": "integer", "minimum": 0}),
     field({"type": "integer", "minimum": 5}), BACK, "/v", B, "lower bound raised: >= 0 → >= 5"),
    ("minimum-lowered", field({"type": "integer", "minimum": 5}),
     field({"type": "integer", "minimum": 0}), FORTH, "/v", B,
     "lower bound lowered: >= 5 → >= 0"),
    ("maximum-raised", field({"type": "number", "maximum": 5}),
     field({"type": "number", "maximum": 10}), FORTH, "/v", B, "upper bound raised: <= 5 → <= 10"),
    ("maximum-to-exclusive", field({"type": "number", "maximum": 10}),
     field({"type": "number", "exclusiveMaximum": 10}), BACK, "/v", B,
     "upper bound changed: <= 10 → < 10"),
    ("maximum-removed", field({"type": "number", "maximum": 10}), field({"type": "number"}),
     FORTH, "/v", B, "upper bound removed: <= 10 → none"),
    ("multipleOf-added", field({"type": "integer"}), field({"type": "integer", "multipleOf": 2}),
     BACK, "/v", B, "multipleOf added: none → 2"),
    ("multipleOf-removed", field({"type": "integer", "multipleOf": 2}), field({"type": "integer"}),
     FORTH, "/v", B, "multipleOf removed: 2 → none"),
    ("minLength-raised", field(S), field({"type": "string", "minLength": 2}), BACK, "/v", B,
     "minLength raised: 0 → 2"),
    ("minLength-lowered", field({"type": "string", "minLength": 2}), field(S), FORTH, "/v", B,
     "minLength lowered: 2 → 0"),
    ("maxLength-added", field(S), field({"type": "string", "maxLength": 3}), BACK, "/v", B,
     "maxLength added: none → 3"),
    ("maxLength-raised", field({"type": "string", "maxLength": 3}),
     field({"type": "string", "maxLength": 5}), FORTH, "/v", B, "maxLength raised: 3 → 5"),
    ("pattern-added", field(S), field({"type": "string", "pattern": "^a+$"}), BACK, "/v", B,
     "pattern added: none → '^a+$'"),
    ("pattern-removed", field({"type": "string", "pattern": "^a+$"}), field(S), FORTH, "/v", B,
     "pattern removed: '^a+$' → none"),
    ("format-added", field(S), field({"type": "string", "format": "uuid"}), BACK, "/v", B,
     "format added: none → 'uuid'"),
    ("minItems-raised", field({"type": "array"}), field({"type": "array", "minItems": 2}), BACK,
     "/v", B, "minItems raised: 0 → 2"),
    ("maxItems-added", field({"type": "array"}), field({"type": "array", "maxItems": 1}), BACK,
     "/v", B, "maxItems added: none → 1"),
    ("uniqueItems-dropped", field({"type": "array", "uniqueItems": True}), field({"type": "array"}),
     FORTH, "/v", B, "uniqueItems changed: true → false"),
    ("contains-added", field({"type": "array"}), field({"type": "array", "contains": {"const": 1}}),
     BACK, "/v", B, "contains added (not analysed)"),
    ("optional-property-added-to-closed", obj({"a": S}), obj({"a": S, "b": S}), FORTH, "/b", B,
     "property 'b': not allowed → optional"),
    ("optional-property-removed-from-closed", obj({"a": S, "b": S}), obj({"a": S}), BACK, "/b",
     B, "property 'b': optional → not allowed"),
    ("required-added", obj({"a": S, "b": S}, "a"), obj({"a": S, "b": S}, "a", "b"), BACK, "/b",
     B, "property 'b': optional → required"),
    ("required-removed", obj({"a": S, "b": S}, "a", "b"), obj({"a": S, "b": S}, "a"), FORTH,
     "/b", B, "property 'b': required → optional"),
    ("closed", obj({"a": S}, closed=False), obj({"a": S}), BACK, "/extra", B,
     "additional properties: allowed → not allowed"),
    ("opened", obj({"a": S}), obj({"a": S}, closed=False), FORTH, "/extra", B,
     "additional properties: not allowed → allowed"),
    ("minProperties-raised", opened(), opened(minProperties=1), BACK, "", B,
     "minProperties raised: 0 → 1"),
    ("maxProperties-added", opened(), opened(maxProperties=1), BACK, "", B,
     "maxProperties added: none → 1"),
    ("propertyNames-added", opened(), opened(propertyNames={"maxLength": 1}), BACK, "", U,
     "propertyNames added (not analysed); not proven safe, and no counterexample found"),
    ("dependentRequired-added", opened(), opened(dependentRequired={"a": ["b"]}), BACK, "", B,
     "dependentRequired added (not analysed)"),
    ("anyOf-added", field({"type": ["string", "integer"]}), field({"anyOf": [S]}), BACK, "/v", B,
     "anyOf added: a value may match none of the options"),
    ("oneOf-added", field(S), field({"type": "string", "oneOf": [S, {"maxLength": 3}]}), BACK,
     "/v", B,
     "oneOf added: a value may match none, or more than one, of the options"),
    ("not-added", field(S), field({"type": "string", "not": {"const": "a"}}), BACK, "/v", B,
     "not added (not analysed)"),
    ("if-added", field(S),
     field({"type": "string", "if": {"const": "a"}, "then": {"minLength": 2}}), BACK, "/v", B,
     "if added (not analysed)"),
    ("property-made-false", obj({"v": S}), obj({"v": False}), BACK, "/v", B,
     "property 'v': optional → not allowed"),
]  # fmt: skip


def not_compatible(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.verdict is not Verdict.COMPATIBLE]


@pytest.mark.parametrize("case", [pytest.param(case[1:], id=case[0]) for case in TEXT])
def test_each_kind_of_change_is_said_old_to_new(
    case: tuple[dict[str, Any], dict[str, Any], Direction, str, Verdict, str],
) -> None:
    old, new, direction, path, verdict, why = case
    [finding] = not_compatible(compare_message(contract(old), contract(new), Mode.FULL))
    assert (finding.subject, finding.path, finding.direction) == ("message M", path, direction)
    assert finding.verdict is verdict
    assert finding.why == why
    assert finding.line().startswith(f"{verdict}: message M{' ' + path if path else ''}: {why}")
    assert f" [{direction}]" in finding.line()
    example = finding.counterexample
    assert (example is not None) == (verdict is B)
    if example is not None:
        assert example.valid_under == direction.writer
        assert example.error.startswith(f"{direction.reader} says ")


@pytest.mark.parametrize(("old", "new"), [pytest.param(c[1], c[2], id=c[0]) for c in TEXT])
def test_swapping_old_and_new_mirrors_every_change(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    """The same facts seen from the other side: the other direction, old and new swapped."""
    ahead = compare_message(contract(old), contract(new), Mode.FULL)
    behind = compare_message(contract(new), contract(old), Mode.FULL)
    changed = [f for f in ahead if f.change is not None]
    assert changed
    mirrored = {
        (f.path, str(f.verdict), str(f.direction), str(f.change))
        for f in behind
        if f.change is not None
    }
    for f in changed:
        assert f.direction is not None
        assert f.change is not None
        other = BACK if f.direction is FORTH else FORTH
        back = Change(f.change.aspect, f.change.new, f.change.old, f.change.of)
        assert (f.path, str(f.verdict), str(other), str(back)) in mirrored, f.line()


def test_the_change_is_data_rendered_once() -> None:
    old = field({"type": "integer", "maximum": 5})
    new = field({"type": "integer", "maximum": 10})
    [finding] = not_compatible(compare_message(contract(old), contract(new), Mode.FULL))
    assert finding.change == Change("upper bound", {"maximum": 5}, {"maximum": 10})
    assert finding.why == str(finding.change)
    assert finding.as_json()["change"] == {
        "aspect": "upper bound",
        "of": None,
        "old": {"maximum": 5},
        "new": {"maximum": 10},
    }


def test_a_counterexample_cites_its_own_findings_fault_when_the_instance_has_two() -> None:
    # New messages with b carry two faults for the old schema: b is unexpected, and a's
    # first value (5) is above the old maximum.  The finding about b must cite b's fault.
    old = obj({"a": {"type": "integer", "maximum": 3}}, "a")
    new = obj({"a": {"type": "integer", "maximum": 5}, "b": S}, "a")
    found = not_compatible(compare_message(contract(old), contract(new), Mode.FORWARD))
    by_path = {f.path: f for f in found}
    assert set(by_path) == {"/a", "/b"}
    for path, keyword in (("/a", "maximum"), ("/b", "additionalProperties")):
        example = by_path[path].counterexample
        assert example is not None
        assert example.keyword == keyword, by_path[path].line()
    b = by_path["/b"].counterexample
    assert b is not None
    assert b.path == ""
    assert b.error.startswith("old says /: Additional properties are not allowed ('b'")
    a = by_path["/a"].counterexample
    assert a is not None
    assert a.path == "/a"
    assert a.error.startswith("old says /a: ")


def test_every_counterexample_is_refused_where_its_finding_points() -> None:
    # Both properties changed; each message new allows may break old at a, at b, or both.
    # A finding's counterexample is refused at its place (or at the object holding it).
    old = obj({"a": {"type": "integer", "maximum": 3}, "b": S}, "a", "b")
    new = obj({"a": {"type": "integer", "maximum": 5}, "b": S}, "a")
    found = not_compatible(compare_message(contract(old), contract(new), Mode.FORWARD))
    for finding in found:
        example = finding.counterexample
        assert example is not None
        assert example.path is not None
        assert example.path == finding.path or finding.path.startswith(example.path), finding.line()


# -- topology: the flagship changed one way, each finding's whole sentence ---------------------

TOPOLOGY: list[tuple[str, list[tuple[str, str]], list[tuple[str, str, str]]]] = [
    ("exchange-added",
     [("  jobs.dead:    {type: fanout",
       "  jobs.audit:   {type: fanout}\n  jobs.dead:    {type: fanout")],
     [("compatible", "exchange jobs.audit", "added")]),
    ("exchange-made-internal",
     [("jobs.new:     {type: topic,", "jobs.new:     {type: topic, internal: true,")],
     [("breaking", "exchange jobs.new", "made internal, but old publishers send Start to it")]),
    ("queue-added", [("queues:\n", "queues:\n  audit: {}\n")],
     [("compatible", "queue audit", "added")]),
    ("unconsumed-queue-changed",
     [("  jobs.dead-letters:\n", "  jobs.dead-letters:\n    max_length: 10\n")],
     [("compatible", "queue jobs.dead-letters",
       "changed (argument x-max-length none → 10); no service consumes it")]),
    ("consumed-queue-changed",
     [("  jobs.ready:\n    type: quorum\n",
       "  jobs.ready:\n    type: quorum\n    max_length: 6\n")],
     [("breaking", "queue jobs.ready",
       "changed (argument x-max-length none → 6), but consumed by worker (Start): its consumers "
       "declare or expect the old queue")]),
    ("binding-added",
     [("bindings:\n", 'bindings:\n  - {from: jobs.new, queue: jobs.dead-letters, key: "x.#"}\n')],
     [("compatible", "binding jobs.new → queue jobs.dead-letters key 'x.#'", "added")]),
    ("binding-removed", [("  - {from: jobs.dead,    queue: jobs.dead-letters}\n", "")],
     [("compatible", "binding jobs.dead → queue jobs.dead-letters key ''",
       "removed or changed; every consumer still receives what it expects")]),
    ("policy-changed", [("    delivery_limit: 5\n", "    delivery_limit: 6\n")],
     [("compatible", "policy jobs-ready",
       "changed in place (delivery-limit 5 → 6); every consumer still receives what it expects")]),
    ("exchange-changed",
     [('jobs.new:     {type: topic,', 'jobs.new:     {type: topic, durable: false,')],
     [("compatible", "exchange jobs.new",
       "changed (durable true → false); no consumer lost a message")]),
    ("service-added", [("services:\n", "services:\n  auditor: {publishes: []}\n")],
     [("compatible", "service auditor", "added")]),
    ("routing-key-changed",
     [('routing_key: "job.{job_type}"', 'routing_key: "jobs.{job_type}"'),
      ('key: "job.#"', 'key: "jobs.#"')],
     [("breaking", "message Start",
       "routing key 'job.{job_type}' → 'jobs.{job_type}' (old publishers still send it the old "
       "way)"),
      ("compatible", "binding jobs.new → queue jobs.ready key 'job.#'",
       "removed or changed; every consumer still receives what it expects"),
      ("compatible", "binding jobs.new → queue jobs.ready key 'jobs.#'", "added")]),
    ("delivery-lost", [('key: "job.#"', 'key: "job.render"')],
     [("breaking", "message Start",
       "no longer reaches queue 'jobs.ready', where service 'worker' consumes it"),
      ("compatible", "binding jobs.new → queue jobs.ready key 'job.render'", "added")]),
]  # fmt: skip


@pytest.mark.parametrize(("edits", "expected"), [pytest.param(e, x, id=i) for i, e, x in TOPOLOGY])
def test_each_kind_of_topology_change_is_said_old_to_new(
    tmp_path: Path, edits: list[tuple[str, str]], expected: list[tuple[str, str, str]]
) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old, new = copy_flagship(tmp_path / "old"), copy_flagship(tmp_path / "new")
    for before, after in edits:
        edit(new, before, after)
    report = check(new)
    assert report.spec is not None
    found = compare(load_spec(old), report.spec, Mode.FULL)
    assert [(str(f.verdict), f.subject, f.why) for f in found] == expected
    for finding in found:
        assert "mappingproxy" not in finding.line()


def test_a_topology_counterexample_says_old_then_new(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old, new = copy_flagship(tmp_path / "old"), copy_flagship(tmp_path / "new")
    edit(new, 'key: "job.#"', 'key: "job.render"')
    report = check(new)
    assert report.spec is not None
    [lost] = [f for f in compare(load_spec(old), report.spec) if f.verdict is B]
    assert lost.counterexample is not None
    assert lost.counterexample.valid_under == "old"
    assert lost.counterexample.error == "old routes it to jobs.ready; new to no queue"


def test_a_topology_change_is_data_too(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old, new = copy_flagship(tmp_path / "old"), copy_flagship(tmp_path / "new")
    edit(new, "  jobs.ready:\n    type: quorum\n", "  jobs.ready:\n    type: classic\n")
    report = check(new)
    assert report.spec is not None
    [changed] = [f for f in compare(load_spec(old), report.spec) if f.verdict is B]
    assert changed.change == Change("settings", {"type": "quorum"}, {"type": "classic"})
    assert changed.why.startswith("changed (type 'quorum' → 'classic'), but consumed by")
    assert changed.as_json()["change"] == {
        "aspect": "settings",
        "of": None,
        "old": {"type": "quorum"},
        "new": {"type": "classic"},
    }


def test_a_property_newly_required_cites_its_own_absence_not_a_nested_one() -> None:
    # Found by the fuzz: a is required now at the top and inside c; a message without a
    # anywhere was cited with c's complaint ("/c: a is required") for the finding at /a.
    integer = {"type": "integer"}
    old = obj({"a": integer, "b": integer, "c": obj({}, closed=False)}, "c", closed=False)
    new = obj({"a": integer, "b": integer, "c": obj({"a": integer}, "a", closed=False)}, "a")
    found = compare_message(contract(old), contract(new), Mode.BACKWARD)
    [top] = [f for f in found if f.path == "/a"]
    assert top.why == "property 'a': optional → required"
    assert top.counterexample is not None
    assert (top.counterexample.path, top.counterexample.keyword) == ("", "required")
    assert top.counterexample.error == 'new says /: "a" is a required property'
