"""Schema compatibility on random schema pairs: no crash, every counterexample real, and no
"compatible" verdict that a message of the writer's schema refutes.

Schemas come from a small grammar (types, bounds, lengths, patterns, enums, arrays,
objects with required and closed properties, anyOf/oneOf); pairs are either unrelated
or a schema and a small edit of it (where compatible claims are made, and can be wrong).
Every direction judged compatible is tested with up to ``PER_CLAIM`` distinct messages
valid under its writer's schema (old for backward, new for forward), drawn from that
schema's own constraints and the synthesiser's candidates: each must be valid under the
reader's, by jsonschema-rs (except where a property the writer leaves to its open content
model is judged compatible by decision).  Run with ``-s`` for the figures: how many claims,
and how many messages checked each (fewer than ``PER_CLAIM`` only for schemas that allow
few values, or none).  ``COMPAT_FUZZ_EXAMPLES`` sets the number of examples.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from rabbitry.compat import Direction, Mode, Verdict, compare_message
from rabbitry.compat._schema import Root
from rabbitry.compat._synth import Synth
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


# -- an edit of a schema: how schemas really change between two versions -------------------

_EDITS: dict[str, list[Any]] = {
    "minimum": [0, 1, -1, 0.5, None],
    "maximum": [1, 2, 10, None],
    "exclusiveMinimum": [0, -1, None],
    "exclusiveMaximum": [2, 10, None],
    "multipleOf": [1, 2, 0.5, None],
    "minLength": [0, 1, 2, None],
    "maxLength": [0, 1, 3, None],
    "pattern": ["^[a-z]+$", "^[a-z0-9]*$", "a", "^$", None],
    "minItems": [0, 1, 2, None],
    "maxItems": [1, 2, 3, None],
}
_BY_TYPE = {
    "integer": ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"],
    "number": ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"],
    "string": ["minLength", "maxLength", "pattern"],
    "array": ["minItems", "maxItems"],
}


def edited(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``schema`` with one or two small edits: a bound moved, a value added to an enum, a
    property added or made required, a schema closed, a type widened, an option dropped."""
    return st.integers(0, 2**32).map(lambda seed: _edit(schema, random.Random(seed)))


def _edit(schema: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(schema))
    for _ in range(rng.choice([1, 1, 2])):
        _edit_one(rng.choice(list(_subschemas(out))), rng)
    return out


def _subschemas(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield schema
    for sub in [*schema.get("properties", {}).values(), schema.get("items")]:
        if isinstance(sub, dict):
            yield from _subschemas(sub)
    for name in ("anyOf", "oneOf"):
        for sub in schema.get(name, []):
            yield from _subschemas(sub)


def _edit_one(s: dict[str, Any], rng: random.Random) -> None:
    kind = s.get("type")
    choices = [_retype]
    if isinstance(kind, str) and kind in _BY_TYPE:
        choices += [_rebound] * 3
    if "enum" in s:
        choices += [_re_enum] * 2
    if kind == "object":
        choices += [_re_property, _re_require, _re_close]
    if "anyOf" in s or "oneOf" in s:
        choices += [_re_option]
    rng.choice(choices)(s, rng)


def _rebound(s: dict[str, Any], rng: random.Random) -> None:
    keyword = rng.choice(_BY_TYPE[s["type"]])
    value = rng.choice(_EDITS[keyword])
    if value is None:
        s.pop(keyword, None)
    else:
        s[keyword] = value


def _re_enum(s: dict[str, Any], rng: random.Random) -> None:
    values = list(s["enum"])
    if len(values) > 1 and rng.random() < 0.5:
        values.remove(rng.choice(values))
    else:
        extra = rng.choice([None, True, 0, 1, 1.5, "", "a", "B"])
        if not any(json.dumps(extra) == json.dumps(v) for v in values):
            values.append(extra)
    s["enum"] = values


def _re_property(s: dict[str, Any], rng: random.Random) -> None:
    props = s.setdefault("properties", {})
    name = rng.choice(NAMES)
    if name in props and rng.random() < 0.5:
        del props[name]
        s["required"] = [r for r in s.get("required", []) if r != name]
    else:
        props[name] = rng.choice([{"type": "string"}, {"type": "integer"}, {}, {"enum": [1]}])


def _re_require(s: dict[str, Any], rng: random.Random) -> None:
    props = list(s.get("properties", {}))
    if props:
        name = rng.choice(props)
        required = [r for r in s.get("required", []) if r != name]
        s["required"] = (
            required
            if len(required) < len(s.get("required", []))
            else [
                *required,
                name,
            ]
        )


def _re_close(s: dict[str, Any], rng: random.Random) -> None:
    if s.pop("additionalProperties", None) is None:
        s["additionalProperties"] = False


def _re_option(s: dict[str, Any], rng: random.Random) -> None:
    name = "anyOf" if "anyOf" in s else "oneOf"
    options = s.pop(name)
    if len(options) > 1 and rng.random() < 0.5:
        del options[rng.randrange(len(options))]
    s["oneOf" if name == "anyOf" and rng.random() < 0.3 else name] = options


def _retype(s: dict[str, Any], rng: random.Random) -> None:
    kind = s.get("type")
    if isinstance(kind, str) and kind != "null" and rng.random() < 0.5:
        s["type"] = [kind, "null"]
    else:
        s["type"] = rng.choice(["string", "integer", "number", "null"])


def pairs() -> st.SearchStrategy[tuple[dict[str, Any], dict[str, Any]]]:
    """Two unrelated schemas, or (mostly) a schema and an edit of it, either way round:
    unrelated pairs are nearly always breaking, edits are where claims of compatibility are
    made and can be wrong."""
    edits = schemas().flatmap(lambda s: st.tuples(st.just(s), edited(s)))
    swapped = edits.map(lambda pair: (pair[1], pair[0]))
    return st.one_of(st.tuples(schemas(), schemas()), edits, swapped, edits, swapped)


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


# -- instances of a schema of the grammar --------------------------------------------------

_SCALARS = [None, True, False, 0, 1, 2, -1, 1.5, 10, "", "a", "ab", "B", "a1"]


def instance(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """A value meant to be valid under ``schema`` (one of the grammar's), drawn from its own
    constraints, so that a writer's schema is exercised by messages it accepts.  Not exact
    (``oneOf``, combined bounds, patterns): the caller keeps those the validator accepts."""
    if not isinstance(schema, dict) or not schema:
        return any_value(rng, depth)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "const" in schema:
        return schema["const"]
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return instance(rng.choice(schema[combinator]), rng, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = rng.choice(kind)
    if kind == "null":
        return None
    if kind == "boolean":
        return rng.random() < 0.5
    if kind in ("integer", "number"):
        return number_of(schema, rng, integer=kind == "integer")
    if kind == "string":
        low = schema.get("minLength", 0)
        high = max(low, schema.get("maxLength", low + 4))
        return "".join(rng.choice("aabz01B-_ é") for _ in range(rng.randint(low, high)))
    if kind == "array":
        low = schema.get("minItems", 0)
        high = max(low, schema.get("maxItems", low + 6))
        items = schema.get("items", {})
        return [instance(items, rng, depth + 1) for _ in range(rng.randint(low, high))]
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        out = {
            k: instance(v, rng, depth + 1)
            for k, v in props.items()
            if k in required or rng.random() < 0.5
        }
        if schema.get("additionalProperties") is not False:
            out |= {
                k: any_value(rng, depth + 1) for k in NAMES if k not in props and rng.random() < 0.3
            }
        return out
    return any_value(rng, depth)


def any_value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth > 2 or roll < 0.7:
        return rng.choice(_SCALARS)
    if roll < 0.85:
        return [any_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {k: any_value(rng, depth + 1) for k in NAMES if rng.random() < 0.5}


def number_of(schema: dict[str, Any], rng: random.Random, *, integer: bool) -> Any:
    low = max((schema[k] for k in ("minimum", "exclusiveMinimum") if k in schema), default=-100)
    high = min((schema[k] for k in ("maximum", "exclusiveMaximum") if k in schema), default=100)
    low, high = min(low, high), max(low, high)
    step = schema.get("multipleOf", 1 if integer else rng.choice([0.5, 0.25, 1]))
    if not integer and rng.random() < 0.3:
        return rng.uniform(low, high)
    value = rng.randint(math.floor(low / step), math.ceil(high / step)) * step
    return int(value) if float(value).is_integer() else value


#: Messages each "compatible" claim is tested with, all valid under its writer's schema.
PER_CLAIM = 20
_ATTEMPTS = 400
FIGURES: Counter[str] = Counter()
#: The writer schemas of claims checked by fewer messages, with how many.
SMALL: list[tuple[int, dict[str, Any]]] = []


def valid_messages(schema: dict[str, Any], rng: random.Random, limit: int) -> list[Any]:
    """Up to ``limit`` distinct messages valid under ``schema``: drawn by its own
    constraints, and the compat synthesiser's candidates (which reach the odd corners)."""
    validator = jsonschema_rs.validator_for(schema)
    root = Root(schema)
    pool = [*islice(Synth(root).values(root.schema), 64)]
    pool += [instance(schema, rng) for _ in range(_ATTEMPTS)]
    found: dict[str, Any] = {}
    for message in pool:
        text = json.dumps(message, sort_keys=True)
        if text not in found and validator.is_valid(message):
            found[text] = message
    values = list(found.values())
    rng.shuffle(values)
    return values[:limit]


@settings(
    max_examples=int(os.environ.get("COMPAT_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(pairs(), st.lists(values(), max_size=40), st.integers(0, 2**32))
def test_random_pairs(
    pair: tuple[dict[str, Any], dict[str, Any]], messages: list[Any], seed: int
) -> None:
    old, new = pair
    # A seed, not hypothesis's own random: hundreds of draws per example would overrun
    # its buffer and silently end the example early.
    rng = random.Random(seed)
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
        FIGURES["breaking claims"] += 1
        reader = finding.direction.reader
        assert second[example.valid_under].is_valid(example.instance), finding.line()
        assert not second[reader].is_valid(example.instance), finding.line()
        # It shows the finding's own fault: refused there (or at the object holding it).
        assert example.path is not None, finding.line()
        assert finding.path == example.path or finding.path.startswith(example.path + "/"), (
            finding.line()
        )
    for direction in Direction:
        if found and verdicts[direction] != {Verdict.COMPATIBLE}:
            continue  # breaking or unknown: nothing claimed
        FIGURES["compatible claims"] += 1
        if any(f.direction is direction and "open content" in f.why for f in found):
            FIGURES["compatible by the open content decision (not checked)"] += 1
            continue  # compatible by decision, not by proof (see test_compat_schema)
        writer, reader = direction.writer, direction.reader
        drawn = valid_messages(schema[writer], rng, PER_CLAIM)
        FIGURES["messages checked"] += len(drawn)
        if len(drawn) >= PER_CLAIM:
            FIGURES[f"compatible claims checked by >= {PER_CLAIM} messages"] += 1
        else:
            # Fewer: a small schema ({"enum": [true]}, a closed {}, arrays of null) whose
            # every value the draws reach is among them, or an empty one.
            kind = f"1-{PER_CLAIM - 1}" if drawn else "0 (no valid message: empty?)"
            FIGURES[f"compatible claims checked by {kind} messages"] += 1
            SMALL.append((len(drawn), schema[writer]))
        for message in [*drawn, *messages]:
            if rs[writer].is_valid(message):
                assert rs[reader].is_valid(message), (
                    f"{direction} judged compatible, but {message!r} is valid under "
                    f"{schema[writer]} and not under {schema[reader]}"
                )


@pytest.fixture(scope="module", autouse=True)
def figures() -> Iterator[None]:
    FIGURES.clear()
    SMALL.clear()
    yield
    if FIGURES:
        print("\ncompat fuzz figures (all examples hypothesis ran, shrinking included):")
        for name, count in sorted(FIGURES.items()):
            print(f"  {name}: {count}")
        for count, schema in list({json.dumps(s): (n, s) for n, s in SMALL}.values())[:6]:
            print(f"  checked by {count}: {json.dumps(schema)}")
