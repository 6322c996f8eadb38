"""Candidate instances of a schema, with chosen values forced at chosen places.

``Synth(root).values(schema, forced)`` yields a bounded, deterministic stream
of values meant to be valid under ``schema`` — the first one as plain as
possible, later ones varying one place at a time — where ``forced`` maps an
instance path (``("steps",)``) to the values wanted there.  Nothing here
is trusted: every candidate is judged by the real validator before it
becomes a counterexample.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from rabbitry.compat._regex import matches, samples
from rabbitry.compat._schema import TYPES, Root, conjoin, finite, is_false, json_in, types_of

__all__ = ["FORMAT_EXAMPLES", "Path", "Synth", "fresh_name", "other_strings"]

Path = tuple[str | int, ...]
Forced = Mapping[Path, Sequence[Any]]

#: Strings that satisfy each format as jsonschema-rs checks it.
FORMAT_EXAMPLES: Mapping[str, tuple[str, ...]] = {
    "uuid": ("6f1c1a52-4a8e-4a3f-9a57-0c7d2f3c1b11", "00000000-0000-4000-8000-000000000000"),
    "date-time": ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00.5+02:00"),
    "date": ("2024-05-01",),
    "time": ("12:00:00Z", "23:59:59+01:00"),
    "duration": ("P1D", "PT1H"),
    "email": ("someone@example.com",),
    "idn-email": ("someone@example.com",),
    "hostname": ("example.com", "a"),
    "idn-hostname": ("example.com",),
    "ipv4": ("192.0.2.1",),
    "ipv6": ("2001:db8::1",),
    "uri": ("https://example.com/a",),
    "iri": ("https://example.com/a",),
    "uri-reference": ("a/b", "https://example.com/a"),
    "iri-reference": ("a/b",),
    "uri-template": ("https://example.com/{id}",),
    "json-pointer": ("/a/b", ""),
    "relative-json-pointer": ("0", "1/a"),
    "regex": ("^a+$",),
}
_LIMIT = 12


def other_strings(seed: Sequence[str] = ()) -> list[str]:
    """Strings likely to fall outside a pattern or format: edits of ``seed`` and oddities."""
    out: list[str] = []
    for text in seed:
        out += [text + "!", "!" + text, text[:-1], text.upper(), text + "\n", text + text]
        out += [text[:-1] + "!" if text else "!", text.replace("-", "_"), text + "0"]
    out += ["", "a", "A", "0", "-", " ", "a.b", "a b", "Z9", "é", "a\n", "x" * 300, "_", "1.5"]
    return list(dict.fromkeys(out))


def fresh_name(taken: Sequence[str], patterns: Sequence[str] = ()) -> str:
    """A property name that is not ``taken`` and matches none of ``patterns``."""
    for candidate in ("extra", "x_extra", "zz", "unknown_field", "Extra1", "_"):
        if candidate not in taken and not any(matches(p, candidate) for p in patterns):
            return candidate
    return "extra_" + "_".join(taken)[:20]


class Synth:
    def __init__(self, root: Root) -> None:
        self.root = root

    def values(self, schema: Any, forced: Forced | None = None, depth: int = 0) -> Iterator[Any]:
        """Candidates for ``schema``, distinct, at most a few dozen."""
        seen: list[Any] = []
        for value in itertools.islice(self._values(schema, forced or {}, depth), 64):
            if not json_in(value, seen):
                seen.append(value)
                yield value

    def first(self, schema: Any, forced: Forced | None = None, depth: int = 0) -> list[Any]:
        return list(itertools.islice(self.values(schema, forced, depth), _LIMIT))

    # -- dispatch -------------------------------------------------------------------------

    def _values(self, schema: Any, forced: Forced, depth: int) -> Iterator[Any]:
        if () in forced:
            yield from forced[()]
            return
        if depth > 12:
            return
        s = self.root.flat(schema)
        if is_false(s):
            return
        values = finite(s)
        if values is not None:
            yield from values
            return
        branches = s.get("anyOf") or s.get("oneOf")
        if isinstance(branches, list) and branches:
            core = {k: v for k, v in s.items() if k not in ("anyOf", "oneOf")}
            merged = [conjoin(core, self.root.flat(b)) for b in branches]
            yield from _round_robin([self._values(m, forced, depth + 1) for m in merged])
            return
        if isinstance(s.get("allOf"), list):  # members that would not merge: take the first
            core = {k: v for k, v in s.items() if k != "allOf"}
            members = [self.root.flat(m) for m in s["allOf"]]
            merged_any: dict[str, Any] = core
            for member in members:
                merged_any = {**merged_any, **member}
            yield from self._values(merged_any, forced, depth + 1)
            return
        if isinstance(s.get("if"), Mapping | bool):
            core = {k: v for k, v in s.items() if k not in ("if", "then", "else")}
            then = conjoin(conjoin(core, self.root.flat(s["if"])), self.root.flat(s.get("then")))
            other = conjoin(core, self.root.flat(s.get("else")))
            yield from _round_robin(
                [self._values(then, forced, depth + 1), self._values(other, forced, depth + 1)]
            )
            return
        types = types_of(s)
        wanted = [t for t in TYPES if t in types] if types is not None else _inferred(s, forced)
        if "number" in wanted and "integer" in wanted:
            wanted.remove("integer")
        yield from _round_robin([self._typed(t, s, forced, depth) for t in wanted])

    def _typed(self, kind: str, s: Mapping[str, Any], forced: Forced, depth: int) -> Iterator[Any]:
        if kind == "null":
            yield None
        elif kind == "boolean":
            yield from (False, True)
        elif kind in ("integer", "number"):
            yield from numbers(s, integer=kind == "integer")
        elif kind == "string":
            yield from strings(s)
        elif kind == "array":
            yield from self._array(s, forced, depth)
        elif kind == "object":
            yield from self._object(s, forced, depth)

    # -- containers -------------------------------------------------------------------------

    def property_schema(self, s: Mapping[str, Any], name: str) -> Any:
        """The schema a property ``name`` must satisfy: properties, patterns, else additional."""
        found: list[Any] = []
        props = s.get("properties")
        if isinstance(props, Mapping) and name in props:
            found.append(props[name])
        patterns = s.get("patternProperties")
        if isinstance(patterns, Mapping):
            found += [sub for p, sub in patterns.items() if matches(p, name)]
        if not found:
            return s.get("additionalProperties", True)
        out: dict[str, Any] = {}
        for sub in found:
            out = conjoin(out, self.root.norm(sub))
        return out

    def _object(self, s: Mapping[str, Any], forced: Forced, depth: int) -> Iterator[Any]:
        required = [r for r in s.get("required", []) if isinstance(r, str)]
        keys = list(
            dict.fromkeys([*required, *(p[0] for p in forced if p and isinstance(p[0], str))])
        )
        props = s.get("properties") if isinstance(s.get("properties"), Mapping) else {}
        assert isinstance(props, Mapping)
        minimum = s.get("minProperties", 0)
        if isinstance(minimum, int) and len(keys) < minimum:
            extra = [k for k in props if k not in keys]
            if len(keys) + len(extra) < minimum and s.get("additionalProperties") is not False:
                patterns = list(s.get("patternProperties") or {})
                extra += [f"{fresh_name(keys, patterns)}{i}" for i in range(minimum)]
            keys += extra[: max(0, minimum - len(keys))]
        choices: dict[str, list[Any]] = {}
        for name in keys:
            sub_forced = {p[1:]: v for p, v in forced.items() if p and p[0] == name}
            found = self.first(self.property_schema(s, name), sub_forced, depth + 1)
            if not found:
                return
            choices[name] = found
        base = {name: found[0] for name, found in choices.items()}
        yield base
        for name, found in choices.items():
            for value in found[1:4]:
                yield {**base, name: value}
        optional = {}
        for name, sub in props.items():
            if name not in base and not is_false(self.root.norm(sub)):
                found = self.first(sub, None, depth + 1)
                if found:
                    optional[name] = found[0]
        if optional:
            yield {**base, **optional}
            for name, value in optional.items():
                yield {**base, name: value}

    def _array(self, s: Mapping[str, Any], forced: Forced, depth: int) -> Iterator[Any]:
        prefix = s.get("prefixItems") if isinstance(s.get("prefixItems"), list) else []
        assert isinstance(prefix, list)
        items = s.get("items", True)
        low = s.get("minItems", 0) if isinstance(s.get("minItems"), int) else 0
        high = s.get("maxItems") if isinstance(s.get("maxItems"), int) else None
        indices = [p[0] for p in forced if p and isinstance(p[0], int)]
        lengths = sorted({max(low, (max(indices) + 1) if indices else 0), low + 1, low + 2})
        unique = s.get("uniqueItems") is True
        for length in lengths:
            if high is not None and length > high:
                continue
            column: list[list[Any]] = []
            for i in range(length):
                schema = prefix[i] if i < len(prefix) else items
                sub_forced = {p[1:]: v for p, v in forced.items() if p and p[0] == i}
                found = self.first(schema, sub_forced, depth + 1)
                if not found:
                    break
                column.append(found)
            else:
                yield from _arrays(column, unique)


def _arrays(column: list[list[Any]], unique: bool) -> Iterator[list[Any]]:
    if unique:
        out: list[Any] = []
        for found in column:
            fresh = [v for v in found if not json_in(v, out)]
            if not fresh:
                return
            out.append(fresh[0])
        yield out
        return
    base = [found[0] for found in column]
    yield base
    for i, found in enumerate(column):
        for value in found[1:3]:
            yield [*base[:i], value, *base[i + 1 :]]


def _inferred(s: Mapping[str, Any], forced: Forced) -> list[str]:
    """The types a schema without ``type`` is most likely about, most likely first."""
    found: list[str] = []
    object_words = {"properties", "required", "additionalProperties", "patternProperties"}
    if object_words & s.keys() or any(p and isinstance(p[0], str) for p in forced):
        found.append("object")
    if {"items", "prefixItems", "minItems", "maxItems", "contains"} & s.keys() or any(
        p and isinstance(p[0], int) for p in forced
    ):
        found.append("array")
    if {"minLength", "maxLength", "pattern", "format"} & s.keys():
        found.append("string")
    if {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"} & s.keys():
        found.append("number")
    return found + [
        t
        for t in ("string", "integer", "number", "null", "boolean", "object", "array")
        if t not in found
    ]


def _round_robin(streams: list[Iterator[Any]]) -> Iterator[Any]:
    live = list(streams)
    while live:
        for stream in list(live):
            try:
                yield next(stream)
            except StopIteration:
                live.remove(stream)


# -- scalars -------------------------------------------------------------------------------


def bounds(s: Mapping[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """(lower, lower exclusive, upper, upper exclusive) of a numeric schema, tightest wins."""
    low: float | None = None
    low_x = False
    high: float | None = None
    high_x = False
    for name, exclusive in (("minimum", False), ("exclusiveMinimum", True)):
        value = number(s.get(name))
        if value is not None and (low is None or value > low or (value == low and exclusive)):
            low, low_x = value, exclusive
    for name, exclusive in (("maximum", False), ("exclusiveMaximum", True)):
        value = number(s.get(name))
        if value is not None and (high is None or value < high or (value == high and exclusive)):
            high, high_x = value, exclusive
    return low, low_x, high, high_x


def number(value: Any) -> float | None:
    """``value`` if it is a finite JSON number (not a boolean), else ``None``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def numbers(s: Mapping[str, Any], *, integer: bool, extra: Sequence[float] = ()) -> Iterator[Any]:
    """Numbers meant to fit ``s``'s bounds and ``multipleOf`` (integers only if ``integer``)."""
    low, low_x, high, high_x = bounds(s)
    step = number(s.get("multipleOf"))
    raw: list[float] = list(extra)
    for edge in (low, high):
        if edge is not None:
            raw += [edge, edge + 1, edge - 1, edge + 0.5, edge - 0.5]
    if low is not None and high is not None:
        raw += [(low + high) / 2, math.floor((low + high) / 2)]
    raw += [0, 1, -1, 2, 0.5, 10, 100, -100, 1e6]
    if step is not None:
        raw = [math.ceil(v / step) * step for v in raw] + [step, 2 * step, 0]
    found: list[Any] = []
    for raw_value in raw:
        value: float = raw_value
        if integer:
            if value != math.floor(value):
                continue
            value = int(value)
        elif isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)
        if _inside(value, low, low_x, high, high_x) and not json_in(value, found):
            found.append(value)
    yield from found


def _inside(value: float, low: float | None, low_x: bool, high: float | None, high_x: bool) -> bool:
    if low is not None and (value < low or (low_x and value == low)):
        return False
    return not (high is not None and (value > high or (high_x and value == high)))


def strings(s: Mapping[str, Any], lengths: Sequence[int] = ()) -> Iterator[str]:
    """Strings meant to fit ``s``'s pattern, format and length."""
    low = s.get("minLength", 0) if isinstance(s.get("minLength"), int) else 0
    high = s.get("maxLength") if isinstance(s.get("maxLength"), int) else None
    pattern = s.get("pattern") if isinstance(s.get("pattern"), str) else None
    fmt = s.get("format") if isinstance(s.get("format"), str) else None
    raw: list[str] = []
    if pattern is not None:
        raw += list(samples(pattern, 16))
    if fmt is not None:
        raw += list(FORMAT_EXAMPLES.get(fmt, ()))
    wanted = list(lengths) or [low, low + 1, 1, 5]
    if high is not None:
        wanted.append(high)
    base = raw or ["a"]
    for length in wanted:
        for text in base[:4]:
            if length >= 0:
                raw.append(
                    (text * (length // max(len(text), 1) + 1))[:length] if text else "a" * length
                )
    raw += ["a", "", "abc", "A", "0"]
    good: list[str] = []
    for text in raw:
        fits = low <= len(text) and (high is None or len(text) <= high)
        if pattern is not None:
            fits = fits and matches(pattern, text) is not False
        if fits and text not in good:
            good.append(text)
    yield from good
