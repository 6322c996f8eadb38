"""Schema compatibility: a corpus of old/new pairs, one or more per rule, with the verdict
expected in each direction, and every counterexample checked by a second validator.

A verdict is the worst finding of the message in that mode: ``breaking`` (with a
counterexample), ``unknown`` (not proven safe, no counterexample), ``compatible``,
or ``none`` (the same constraints: no finding at all).  Full mode is the worse of
backward and forward.
"""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from rabbitry.compat import Direction, Mode, Verdict, compare_message
from rabbitry.compat._regex import branches, pattern_implies, samples
from rabbitry.compat._schema import Root, conjoin
from rabbitry.messaging.contract import MessageContract

B, U, C, N = "breaking", "unknown", "compatible", "none"
RANK = {N: 0, C: 1, U: 2, B: 3}


def obj(properties: dict[str, Any], *required: str, closed: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def field(schema: dict[str, Any]) -> dict[str, Any]:
    """A message whose required field ``v`` has ``schema``."""
    return obj({"v": schema}, "v")


# (id, old, new, backward verdict, forward verdict)
CORPUS: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    # type, integer within number
    ("type-widened-to-null", field({"type": "string"}), field({"type": ["string", "null"]}), C, B),
    ("integer-to-number", field({"type": "integer"}), field({"type": "number"}), C, B),
    ("number-to-integer", field({"type": "number"}), field({"type": "integer"}), B, C),
    ("type-changed", field({"type": "string"}), field({"type": "integer"}), B, B),
    # enum / const
    ("enum-value-added", field({"enum": ["a", "b"]}), field({"enum": ["a", "b", "c"]}), C, B),
    ("enum-value-removed", field({"enum": ["a", "b"]}), field({"enum": ["a"]}), B, C),
    ("const-to-enum", field({"const": "a"}), field({"enum": ["a", "b"]}), C, B),
    ("enum-added-to-string", field({"type": "string"}), field({"enum": ["a", "b"]}), B, C),
    ("enum-1-and-1.0", field({"enum": [1]}), field({"enum": [1.0]}), N, N),
    # numeric bounds, exclusive forms, integers, multipleOf
    (
        "minimum-raised",
        field({"type": "integer", "minimum": 0}),
        field({"type": "integer", "minimum": 5}),
        B,
        C,
    ),
    (
        "maximum-lowered",
        field({"type": "number", "maximum": 10}),
        field({"type": "number", "maximum": 5}),
        B,
        C,
    ),
    ("maximum-added", field({"type": "number"}), field({"type": "number", "maximum": 5}), B, C),
    (
        "minimum-to-exclusive",
        field({"type": "number", "minimum": 0}),
        field({"type": "number", "exclusiveMinimum": 0}),
        B,
        C,
    ),
    (
        "maximum-to-exclusive",
        field({"type": "number", "maximum": 10}),
        field({"type": "number", "exclusiveMaximum": 10}),
        B,
        C,
    ),
    (
        "integer-bounds-equivalent",
        field({"type": "integer", "minimum": 0, "maximum": 9}),
        field({"type": "integer", "exclusiveMinimum": -1, "exclusiveMaximum": 10}),
        C,
        C,
    ),
    (
        "multipleOf-coarser",
        field({"type": "integer", "multipleOf": 2}),
        field({"type": "integer", "multipleOf": 4}),
        B,
        C,
    ),
    (
        "multipleOf-half-on-integers",
        field({"type": "integer"}),
        field({"type": "integer", "multipleOf": 0.5}),
        C,
        C,
    ),
    # strings
    (
        "minLength-raised",
        field({"type": "string", "minLength": 1}),
        field({"type": "string", "minLength": 3}),
        B,
        C,
    ),
    (
        "maxLength-lowered",
        field({"type": "string", "maxLength": 10}),
        field({"type": "string", "maxLength": 4}),
        B,
        C,
    ),
    (
        "maxLength-removed",
        field({"type": "string", "maxLength": 4}),
        field({"type": "string"}),
        C,
        B,
    ),
    (
        "pattern-added",
        field({"type": "string"}),
        field({"type": "string", "pattern": "^[a-z]+$"}),
        B,
        C,
    ),
    (
        "pattern-removed",
        field({"type": "string", "pattern": "^[a-z]+$"}),
        field({"type": "string"}),
        C,
        B,
    ),
    (
        "pattern-widened",  # safe, but regex inclusion is not proven: unknown, never breaking
        field({"type": "string", "pattern": "^[a-z]+$"}),
        field({"type": "string", "pattern": "^[a-z0-9]+$"}),
        U,
        B,
    ),
    (
        "pattern-widened-by-an-alternative",  # proven by form: every branch of old is in new
        field({"type": "string", "pattern": "^[a-z]+$"}),
        field({"type": "string", "pattern": "^[a-z]+$|^[0-9]+$"}),
        C,
        B,
    ),
    (
        "pattern-made-universal",
        field({"type": "string", "pattern": "^[a-z]+$"}),
        field({"type": "string", "pattern": ".*"}),
        C,
        B,
    ),
    (
        "pattern-same-docs-changed",
        field({"type": "string", "pattern": "^[a-z]+$", "description": "old words"}),
        field({"type": "string", "pattern": "^[a-z]+$", "description": "new words"}),
        N,
        N,
    ),
    ("format-added", field({"type": "string"}), field({"type": "string", "format": "uuid"}), B, C),
    # arrays
    (
        "items-narrowed",
        field({"type": "array", "items": {"type": "number"}}),
        field({"type": "array", "items": {"type": "integer"}}),
        B,
        C,
    ),
    (
        "prefixItems-extended",
        field({"type": "array", "prefixItems": [{"type": "string"}], "items": False}),
        field(
            {
                "type": "array",
                "prefixItems": [{"type": "string"}, {"type": "integer"}],
                "items": False,
            }
        ),
        C,
        B,
    ),
    (
        "prefixItems-retyped",
        field({"type": "array", "prefixItems": [{"type": "string"}, {"type": "string"}]}),
        field({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}),
        B,
        B,
    ),
    (
        "minItems-raised",
        field({"type": "array", "minItems": 0}),
        field({"type": "array", "minItems": 2}),
        B,
        C,
    ),
    (
        "maxItems-lowered",
        field({"type": "array", "maxItems": 5}),
        field({"type": "array", "maxItems": 2}),
        B,
        C,
    ),
    (
        "uniqueItems-added",
        field({"type": "array"}),
        field({"type": "array", "uniqueItems": True}),
        B,
        C,
    ),
    # objects: required, properties, additionalProperties
    ("required-added", obj({"a": {"type": "string"}}), obj({"a": {"type": "string"}}, "a"), B, C),
    ("required-removed", obj({"a": {"type": "string"}}, "a"), obj({"a": {"type": "string"}}), C, B),
    (
        "optional-property-added-closed",
        obj({"a": {"type": "string"}}),
        obj({"a": {"type": "string"}, "b": {"type": "integer"}}),
        C,
        B,  # an old consumer with additionalProperties false refuses a message with b
    ),
    (
        "optional-property-added-open",  # open content model: compatible both ways
        obj({"a": {"type": "string"}}, closed=False),
        obj({"a": {"type": "string"}, "b": {"type": "integer"}}, closed=False),
        C,
        C,
    ),
    (
        "additionalProperties-closed",
        obj({"a": {"type": "string"}}, closed=False),
        obj({"a": {"type": "string"}}),
        B,
        C,
    ),
    (
        "additionalProperties-schema-changed",
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"type": "object", "additionalProperties": {"type": "integer"}},
        B,
        B,
    ),
    ("property-made-false", obj({"a": True}), obj({"a": False}), B, C),
    (
        "nested-required-added",
        obj({"a": obj({"b": {"type": "string"}})}, "a"),
        obj({"a": obj({"b": {"type": "string"}}, "b")}, "a"),
        B,
        C,
    ),
    ("minProperties-raised", {"type": "object"}, {"type": "object", "minProperties": 1}, B, C),
    (
        "dependentRequired-added",
        obj({"a": {"type": "string"}, "b": {"type": "string"}}),
        {
            **obj({"a": {"type": "string"}, "b": {"type": "string"}}),
            "dependentRequired": {"a": ["b"]},
        },
        B,
        C,
    ),
    # $ref followed into $defs
    (
        "ref-target-narrowed",
        {"$defs": {"Id": {"type": "string"}}, **obj({"id": {"$ref": "#/$defs/Id"}}, "id")},
        {
            "$defs": {"Id": {"type": "string", "maxLength": 5}},
            **obj({"id": {"$ref": "#/$defs/Id"}}, "id"),
        },
        B,
        C,
    ),
    (
        "ref-renamed-same-target",
        {"$defs": {"Id": {"type": "string"}}, **obj({"id": {"$ref": "#/$defs/Id"}}, "id")},
        {"$defs": {"Key": {"type": "string"}}, **obj({"id": {"$ref": "#/$defs/Key"}}, "id")},
        N,
        N,
    ),
    (
        "ref-inlined",
        {
            "$defs": {"Id": {"type": "string", "description": "an id"}},
            **obj({"id": {"$ref": "#/$defs/Id"}}, "id"),
        },
        obj({"id": {"type": "string"}}, "id"),
        N,
        N,
    ),
    # combinators
    (
        "anyOf-option-added",
        field({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
        field({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}),
        C,
        B,
    ),
    (
        "anyOf-option-removed",
        field({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
        field({"anyOf": [{"type": "string"}]}),
        B,
        C,
    ),
    (
        "oneOf-disjoint-option-added",
        field({"oneOf": [{"type": "string"}]}),
        field({"oneOf": [{"type": "string"}, {"type": "integer"}]}),
        C,
        B,
    ),
    (
        "oneOf-overlapping-option-added",  # an integer now matches two options
        field({"oneOf": [{"type": "string"}, {"type": "integer"}]}),
        field({"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "number"}]}),
        B,
        B,
    ),
    (
        "oneOf-discriminated-variant-added",
        field({"oneOf": [obj({"kind": {"const": "a"}, "x": {"type": "string"}}, "kind")]}),
        field(
            {
                "oneOf": [
                    obj({"kind": {"const": "a"}, "x": {"type": "string"}}, "kind"),
                    obj({"kind": {"const": "b"}, "y": {"type": "integer"}}, "kind"),
                ]
            }
        ),
        C,
        B,
    ),
    (
        "allOf-member-added",
        field({"allOf": [{"type": "object"}]}),
        field({"allOf": [{"type": "object"}, {"required": ["a"]}]}),
        B,
        C,
    ),
    (
        "not-widened",
        field({"not": {"type": "null"}}),
        field({"not": {"type": ["null", "string"]}}),
        B,
        C,
    ),
    (
        "if-then-added",
        obj({"kind": {"type": "string"}, "x": {"type": "string"}}, "kind"),
        {
            **obj({"kind": {"type": "string"}, "x": {"type": "string"}}, "kind"),
            "if": {"properties": {"kind": {"const": "a"}}},
            "then": {"required": ["x"]},
        },
        B,
        C,
    ),
    (
        "equivalent-rewrite-unproven",  # unevaluatedProperties is not analysed: unknown
        obj({"a": {"type": "string"}}),
        {"type": "object", "properties": {"a": {"type": "string"}}, "unevaluatedProperties": False},
        U,
        U,
    ),
    # documentation only
    (
        "docs-only",
        {"title": "Old", "description": "x", **obj({"a": {"type": "string", "examples": ["q"]}})},
        {"title": "New", "$comment": "y", **obj({"a": {"type": "string", "description": "an a"}})},
        N,
        N,
    ),
]


def contract(schema: dict[str, Any]) -> MessageContract:
    return MessageContract("M", "x", "", {}, False, schema)


def verdict(old: dict[str, Any], new: dict[str, Any], mode: Mode) -> str:
    found = compare_message(contract(old), contract(new), mode)
    return max((str(f.verdict) for f in found), key=RANK.__getitem__, default=N)


@pytest.mark.parametrize(
    ("old", "new", "backward", "forward"),
    [pytest.param(o, n, b, f, id=i) for i, o, n, b, f in CORPUS],
)
def test_verdict_per_mode(
    old: dict[str, Any], new: dict[str, Any], backward: str, forward: str
) -> None:
    assert verdict(old, new, Mode.BACKWARD) == backward
    assert verdict(old, new, Mode.FORWARD) == forward
    assert verdict(old, new, Mode.FULL) == max(backward, forward, key=RANK.__getitem__)


@pytest.mark.parametrize(("old", "new"), [pytest.param(o, n, id=i) for i, o, n, _, _ in CORPUS])
def test_every_counterexample_is_valid_under_one_side_and_invalid_under_the_other(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    # A second validator (python-jsonschema, formats asserted) agrees with jsonschema-rs.
    sides = {
        side: Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        for side, schema in (("old", old), ("new", new))
    }
    for finding in compare_message(contract(old), contract(new), Mode.FULL):
        example = finding.counterexample
        assert (finding.verdict is Verdict.BREAKING) == (example is not None), finding.line()
        if example is None:
            continue
        other = "new" if example.valid_under == "old" else "old"
        assert finding.direction is not None
        assert example.valid_under == finding.direction.writer
        assert sides[example.valid_under].is_valid(example.instance), finding.line()
        assert not sides[other].is_valid(example.instance), finding.line()
        assert contract({"old": old, "new": new}[other]).faults(example.instance)


def test_a_breaking_finding_names_the_place_the_reason_and_the_counterexample() -> None:
    old = obj({"steps": {"type": "integer", "maximum": 10000}}, "steps")
    new = obj({"steps": {"type": "integer", "maximum": 100}}, "steps")
    [finding] = compare_message(contract(old), contract(new), Mode.BACKWARD)
    assert finding.verdict is Verdict.BREAKING
    assert finding.direction is Direction.BACKWARD
    assert finding.path == "/steps"
    assert "10000" in finding.why
    assert "100" in finding.why
    assert finding.counterexample is not None
    steps = finding.counterexample.instance["steps"]
    assert 100 < steps <= 10000
    assert finding.line().startswith("breaking: message M /steps: upper bound lowered")
    assert "counterexample (valid under old)" in finding.line()
    data = finding.as_json()
    assert data["verdict"] == "breaking"
    assert data["counterexample"]["valid_under"] == "old"


def test_open_content_findings_say_why_they_are_compatible() -> None:
    old = obj({"a": {"type": "string"}}, closed=False)
    new = obj({"a": {"type": "string"}, "b": {"type": "integer"}}, closed=False)
    [finding] = compare_message(contract(old), contract(new), Mode.BACKWARD)
    assert finding.verdict is Verdict.COMPATIBLE
    assert finding.path == "/b"
    assert "open content" in finding.why


def test_recursive_schemas_terminate() -> None:
    tree = {
        "$defs": {
            "Node": obj(
                {
                    "name": {"type": "string"},
                    "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                "name",
            )
        },
        "$ref": "#/$defs/Node",
    }
    narrowed = {
        "$defs": {
            "Node": obj(
                {
                    "name": {"type": "string", "maxLength": 3},
                    "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                "name",
            )
        },
        "$ref": "#/$defs/Node",
    }
    assert verdict(tree, tree, Mode.FULL) == N
    assert verdict(tree, narrowed, Mode.BACKWARD) == B
    assert verdict(tree, narrowed, Mode.FORWARD) == C


def test_the_regex_sampler_only_yields_matches() -> None:
    found = list(samples("^[a-z][a-z0-9_-]{0,62}$", 10))
    assert len(found) >= 5
    assert all(s[0].isalpha() for s in found)
    assert list(samples("(", 3)) == []  # not a regex: nothing


def test_pattern_inclusion_is_proven_only_by_form() -> None:
    assert branches(r"^a|b(c|d)|[|x]\|y") == ["^a", "b(c|d)", r"[|x]\|y"]
    assert pattern_implies("^a$", "^a$|^b$")
    assert pattern_implies("^b$|^a$", "^a$|^b$|^c$")
    assert not pattern_implies("^a$|^b$", "^a$")
    assert not pattern_implies("^[a-z]+$", "^[a-z0-9]+$")  # true, but not proven: unknown
    assert pattern_implies(None, "")
    assert not pattern_implies(None, "^a")


def test_conjoin_merges_only_where_exact() -> None:
    assert conjoin({"type": "object", "required": ["a"]}, {"required": ["b"]}) == {
        "type": "object",
        "required": ["a", "b"],
    }
    assert conjoin({"type": ["integer", "string"]}, {"type": "number"}) == {"type": ["integer"]}
    closed = {"properties": {"a": {}}, "additionalProperties": False}
    merged = conjoin(closed, {"properties": {"b": {}}})
    assert merged["allOf"] == [{"properties": {"b": {}}}]  # additionalProperties reads siblings
    root = Root({"$defs": {"A": {"type": "string"}}, "$ref": "#/$defs/A", "maxLength": 3})
    assert root.norm(root.schema) == {"type": "string", "maxLength": 3}
