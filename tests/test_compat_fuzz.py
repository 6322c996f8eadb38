"""Schema compatibility on random schema pairs: no crash, every counterexample real, and no
"compatible" verdict that a random message refutes.

Schemas come from a small grammar (types, bounds, lengths, patterns, enums, arrays,
objects with required and closed properties, anyOf/oneOf); messages from a generic
JSON strategy biased towards the grammar's values.  A direction judged compatible
must hold for every message tried: valid under the writer's schema means valid
under the reader's, by jsonschema-rs (except where a property the writer leaves to its
open content model is judged compatible by decision).
"""

from __future__ import annotations

import os
from typing import Any

import jsonschema_rs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from rabbitry.compat import Direction, Mode, Verdict, compare_message
from rabbitry.messaging.contract import MessageContract

NAMES = ["a", "b", "c"]
SCALARS = st.sampled_from([None, True, False, 0, 1, 2, -1, 1.5, 10, "", "a", "ab", "B", "a1"])


def scalar_schemas() -> st.SearchStrategy[dict[str, Any]]:
    numbers = st.fixed_dictionaries(
        {"type": st.sampled_from(["integer", "number"])},
        optional={
            "minimum": st.sampled_from([0, 1, -1, 0.5]),
            "maximum": st.sampled_from([1, 2, 10]),
            "exclusiveMinimum": st.sampled_from([0, -1]),
            "exclusiveMaximum": st.sampled_from([2, 10]),
            "multipleOf": st.sampled_from([1, 2, 0.5]),
        },
    )
    strings = st.fixed_dictionaries(
        {"type": st.just("string")},
        optional={
            "minLength": st.integers(0, 2),
            "maxLength": st.integers(0, 3),
            "pattern": st.sampled_from(["^[a-z]+$", "^[a-z0-9]*$", "a", "^$"]),
        },
    )
    enums = st.lists(SCALARS, min_size=1, max_size=3, unique_by=repr).map(lambda v: {"enum": v})
    others = st.sampled_from(
        [{"type": "null"}, {"type": "boolean"}, {}, {"type": ["string", "null"]}, {"const": 1}]
    )
    return st.one_of(numbers, strings, enums, others)


def schemas() -> st.SearchStrategy[dict[str, Any]]:
    def extend(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        arrays = st.fixed_dictionaries(
            {"type": st.just("array"), "items": inner},
            optional={"minItems": st.integers(0, 2), "maxItems": st.integers(1, 3)},
        )
        objects = st.builds(
            lambda props, required, closed: {
                "type": "object",
                "properties": props,
                "required": [r for r in required if r in props],
                **({"additionalProperties": False} if closed else {}),
            },
            st.dictionaries(st.sampled_from(NAMES), inner, max_size=3),
            st.lists(st.sampled_from(NAMES), max_size=2, unique=True),
            st.booleans(),
        )
        unions = st.builds(
            lambda kind, options: {kind: options},
            st.sampled_from(["anyOf", "oneOf"]),
            st.lists(inner, min_size=1, max_size=3),
        )
        return st.one_of(arrays, objects, unions)

    return st.recursive(scalar_schemas(), extend, max_leaves=5)


def values() -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(NAMES), inner, max_size=3)
        ),
        max_leaves=6,
    )


def contract(schema: dict[str, Any]) -> MessageContract:
    return MessageContract("M", "x", "", {}, False, schema)


@settings(
    max_examples=int(os.environ.get("COMPAT_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(schemas(), schemas(), st.lists(values(), max_size=40))
def test_random_pairs(old: dict[str, Any], new: dict[str, Any], messages: list[Any]) -> None:
    found = compare_message(contract(old), contract(new), Mode.FULL)
    schema = {"old": old, "new": new}
    second = {s: Draft202012Validator(v) for s, v in schema.items()}
    rs = {s: jsonschema_rs.validator_for(v) for s, v in schema.items()}
    verdicts: dict[Direction, set[Verdict]] = {d: set() for d in Direction}
    for finding in found:
        assert finding.direction is not None
        verdicts[finding.direction].add(finding.verdict)
        example = finding.counterexample
        if example is None:
            continue
        reader = finding.direction.reader
        assert second[example.valid_under].is_valid(example.instance), finding.line()
        assert not second[reader].is_valid(example.instance), finding.line()
    for direction in Direction:
        if found and verdicts[direction] != {Verdict.COMPATIBLE}:
            continue  # breaking or unknown: nothing claimed
        if any(f.direction is direction and "open content" in f.why for f in found):
            continue  # compatible by decision, not by proof (see test_compat_schema)
        writer, reader = direction.writer, direction.reader
        for message in messages:
            if rs[writer].is_valid(message):
                assert rs[reader].is_valid(message), (
                    f"{direction} judged compatible, but {message!r} is valid under "
                    f"{schema[writer]} and not under {schema[reader]}"
                )
