"""Keyword rules: is every instance of schema A also an instance of schema B?

``Rules(writer, reader).compare(a, b)`` returns the places where that is not
proven, each a ``Suspect`` with the reason and *candidate* witness values
(values A allows there that B may not).  An empty list is a proof, built
keyword by keyword: B is a conjunction of its keywords, so A ⊆ B holds when
A implies each of them, and a keyword of B is implied when A carries one at
least as strict (a higher lower bound, a shorter maxLength, a superset of
``required``, each property's schema in turn, ...).  Where no rule applies,
the keyword is suspect; it is never waved through.

Backward is ``Rules(old, new)`` (old writers, new readers), forward the reverse.
Combinators are judged conservatively: ``anyOf``/``oneOf`` options are matched
option by option (a ``oneOf`` option must also be disjoint from the others,
which is proven only by distinct types or distinct ``const``/``enum`` values
of a shared required property); ``not`` and ``if``/``then``/``else`` only when
unchanged.  Suspects become breaking findings only when the counterexample
search (``_counterexample``) finds an instance the real validator accepts
under A and refuses under B; otherwise they are reported as unknown.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice
from typing import Any

from rabbitry.compat._findings import Fact
from rabbitry.compat._regex import matches, pattern_implies, samples
from rabbitry.compat._schema import (
    TYPES,
    Root,
    canonical,
    conjoin,
    finite,
    is_false,
    json_equal,
    key,
    types_of,
)
from rabbitry.compat._synth import (
    Path,
    Synth,
    bounds,
    fresh_name,
    number,
    numbers,
    other_strings,
    strings,
)

__all__ = ["KEYWORDS", "Rules", "Suspect"]

#: The assertion and applicator keywords of draft 2020-12 the rules read; any other
#: keyword that is not an annotation (``unevaluatedProperties``, ``$dynamicRef``) is
#: suspect whenever it differs.
KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "properties",
        "patternProperties",
        "additionalProperties",
        "required",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
    }
)
_OTHER_ASSERTIONS = frozenset(
    {"unevaluatedProperties", "unevaluatedItems", "$dynamicRef", "$recursiveRef"}
)
_SCHEMA_VALUED = frozenset(
    {
        "additionalProperties",
        "items",
        "contains",
        "not",
        "if",
        "then",
        "else",
        "propertyNames",
        "unevaluatedProperties",
        "unevaluatedItems",
    }
)
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas"})
_CANDIDATES = 40


@dataclass(frozen=True)
class Suspect:
    """A place where A ⊆ B is not proven."""

    #: Instance path where the witness value goes.
    at: Path
    #: The schema keyword (of B) whose fault a counterexample must show ("values": any).
    keyword: str
    #: What differs, as the writer's and the reader's schema have it.
    fact: Fact
    #: The local schemas on each side (A: the writer's, B: the reader's), for filtering.
    a: Any
    b: Any
    candidates: tuple[Any, ...] = ()
    #: The instance path reported, when it is not ``at`` (a missing required property).
    pointer: Path | None = None
    #: The property this is about when A does not declare it (open content model): A's
    #: messages are not expected to carry it, so the finding is compatible.
    open_content: str | None = None

    @property
    def reported(self) -> Path:
        return self.at if self.pointer is None else self.pointer


class Rules:
    """Proves A ⊆ B keyword by keyword, for A in ``writer`` and B in ``reader``."""

    def __init__(self, writer: Root, reader: Root) -> None:
        self.a = writer
        self.b = reader
        self.sa = Synth(writer)
        self.sb = Synth(reader)
        self._active: set[tuple[str, str]] = set()
        self._proofs: dict[tuple[str, str], bool] = {}
        self._same_active: set[tuple[str, str]] = set()
        self._reverse: Rules | None = None

    @property
    def reverse(self) -> Rules:
        if self._reverse is None:
            self._reverse = Rules(self.b, self.a)
            self._reverse._reverse = self
        return self._reverse

    # -- entry points ---------------------------------------------------------------------

    def compare(self, a_raw: Any, b_raw: Any, path: Path = ()) -> list[Suspect]:
        """Every suspect place of A ⊆ B (``a_raw`` read in the writer's document)."""
        a, b = self.a.flat(a_raw), self.b.flat(b_raw)
        if is_false(a) or not b:
            return []
        marker = (key(a), key(b))
        if marker in self._active or len(path) > 24:
            return []  # a recursive schema: assumed to hold here, checked where it starts
        if self.same(a, b):
            return []
        self._active.add(marker)
        try:
            return list(self._compare(a, b, path))
        finally:
            self._active.discard(marker)

    def proves(self, a_raw: Any, b_raw: Any) -> bool:
        """A ⊆ B proven (no suspect at all)."""
        marker = (key(a_raw), key(b_raw))
        if marker not in self._proofs:
            self._proofs[marker] = True  # provisional, for recursion
            self._proofs[marker] = not self.compare(a_raw, b_raw)
        return self._proofs[marker]

    # -- sameness -------------------------------------------------------------------------

    def same(self, x: Any, y: Any) -> bool:
        """The same constraints (annotations aside, ``$ref``s followed in each document)."""
        nx, ny = self.a.norm(x), self.b.norm(y)
        marker = (key(nx), key(ny))
        if marker in self._same_active:
            return True
        if nx.keys() != ny.keys():
            return False
        self._same_active.add(marker)
        try:
            return all(self._same_value(name, nx[name], ny[name]) for name in nx)
        finally:
            self._same_active.discard(marker)

    def _same_value(self, name: str, x: Any, y: Any) -> bool:
        if name in _SCHEMA_VALUED:
            return self.same(x, y)
        if name in _SCHEMA_LISTS and isinstance(x, list) and isinstance(y, list):
            return len(x) == len(y) and all(map(self.same, x, y))
        if name in _SCHEMA_MAPS and isinstance(x, Mapping) and isinstance(y, Mapping):
            return x.keys() == y.keys() and all(self.same(x[k], y[k]) for k in x)
        return json_equal(x, y)

    # -- the rules --------------------------------------------------------------------------

    def _compare(self, a: dict[str, Any], b: dict[str, Any], path: Path) -> Iterator[Suspect]:
        if is_false(b):
            fact = Fact("anything", "allowed", "not allowed")
            yield self._suspect(path, "false", fact, a, b)
            return
        if self._distributed(a, b):
            # A = core and (o1 or o2 or ...): A ⊆ B when every (core and oi) ⊆ B.
            for option in self._options(a):
                yield from self.compare(option, b, path)
            return
        values = finite(a)
        if values is not None:
            verdicts = list(
                zip(values, self.a.valid_each(a, values), self.b.valid_each(b, values), strict=True)
            )
            if all(ok_b is not None for _, ok_a, ok_b in verdicts if ok_a is not False):
                refused = [v for v, ok_a, ok_b in verdicts if ok_a is not False and not ok_b]
                if refused:
                    fact = Fact("value", "allowed", "not allowed", refused)
                    yield Suspect(path, "values", fact, a, b, tuple(refused))
                return
        allowed = finite(b)
        if allowed is not None:
            known = {canonical(v) for v in allowed}
            found = [v for v in self.sa.values(a) if canonical(v) not in known]
            fact = Fact("enum", None, allowed)
            yield Suspect(path, _value_keyword(b), fact, a, b, tuple(found[:_CANDIDATES]))
            return
        types_a, types_b = types_of(a), types_of(b)
        live = set(TYPES) if types_a is None else set(types_a)
        if types_b is not None:
            lost = [kind for kind in sorted(live) if not _covered(kind, types_b)]
            if lost:
                yield self._type_suspect(lost, types_b, a, b, path)
            live = {t for t in live if _covered(t, types_b)}
            if "number" in live and "integer" in types_b and "number" not in types_b:
                live = (live - {"number"}) | {"integer"}
        if live & {"number", "integer"}:
            yield from self._numbers(a, b, path, integer="number" not in live)
        if "string" in live:
            yield from self._strings(a, b, path)
        if "array" in live:
            yield from self._arrays(a, b, path)
        if "object" in live:
            yield from self._objects(a, b, path)
        yield from self._combinators(a, b, path)
        for name in sorted(_OTHER_ASSERTIONS & b.keys()):
            if name not in a or not self._same_value(name, a[name], b[name]):
                yield self._suspect(path, name, Fact(name, a.get(name), b[name]), a, b)

    def _suspect(
        self,
        path: Path,
        keyword: str,
        fact: Fact,
        a: Mapping[str, Any],
        b: Mapping[str, Any],
        *,
        extra: Sequence[Any] = (),
    ) -> Suspect:
        """A suspect whose candidates are simply values A allows here."""
        found = [*extra, *islice(self.sa.values(a), _CANDIDATES)]
        return Suspect(path, keyword, fact, a, b, tuple(found))

    def _type_suspect(
        self,
        lost: list[str],
        types_b: frozenset[str],
        a: dict[str, Any],
        b: dict[str, Any],
        path: Path,
    ) -> Suspect:
        found: list[Any] = []
        for kind in lost:
            if kind == "number":  # a number where only integers are allowed now
                extra = (0.5, 1.5, -0.5)
                found += [v for v in numbers(a, integer=False, extra=extra) if v != int(v)]
            else:
                found += islice(self.sa.values({**a, "type": kind}), 8)
        types_a = types_of(a)
        fact = Fact("type", None if types_a is None else sorted(types_a), sorted(types_b))
        return Suspect(path, "type", fact, a, b, tuple(found))

    # numbers ------------------------------------------------------------------------------

    def _numbers(
        self, a: dict[str, Any], b: dict[str, Any], path: Path, *, integer: bool
    ) -> Iterator[Suspect]:
        low_a, low_ax, high_a, high_ax = bounds(a)
        low_b, low_bx, high_b, high_bx = bounds(b)
        if low_b is not None and not _lower_holds(low_a, low_ax, low_b, low_bx, integer=integer):
            extra: tuple[float, ...] = (
                low_b,
                low_b - 1,
                low_b - 0.5,
                math.floor(low_b),
                low_b - 1e-3,
            )
            found = [
                v for v in numbers(a, integer=integer, extra=extra) if _below(v, low_b, low_bx)
            ]
            keyword = "exclusiveMinimum" if low_bx else "minimum"
            fact = Fact("lower bound", _bound(low_a, low_ax, "Minimum"), {keyword: low_b})
            yield Suspect(path, keyword, fact, a, b, tuple(found))
        if high_b is not None and not _upper_holds(
            high_a, high_ax, high_b, high_bx, integer=integer
        ):
            extra = (high_b, high_b + 1, high_b + 0.5, math.ceil(high_b), high_b + 1e-3)
            found = [
                v for v in numbers(a, integer=integer, extra=extra) if _above(v, high_b, high_bx)
            ]
            keyword = "exclusiveMaximum" if high_bx else "maximum"
            fact = Fact("upper bound", _bound(high_a, high_ax, "Maximum"), {keyword: high_b})
            yield Suspect(path, keyword, fact, a, b, tuple(found))
        step_b = number(b.get("multipleOf"))
        if step_b is not None:
            step_a = number(a.get("multipleOf"))
            held = (step_a is not None and _divides(step_b, step_a)) or (
                integer and _divides(step_b, 1)
            )
            if not held:
                extra = (step_b / 2, 1, 0.5, step_a or 1, 3, 7)
                found = [
                    v for v in numbers(a, integer=integer, extra=extra) if not _divides(step_b, v)
                ]
                fact = Fact("multipleOf", step_a, step_b)
                yield Suspect(path, "multipleOf", fact, a, b, tuple(found))

    # strings ------------------------------------------------------------------------------

    def _strings(self, a: dict[str, Any], b: dict[str, Any], path: Path) -> Iterator[Suspect]:
        min_a, min_b = _int(a.get("minLength"), 0), _int(b.get("minLength"), 0)
        max_a, max_b = _int(a.get("maxLength"), None), _int(b.get("maxLength"), None)
        assert min_a is not None
        assert min_b is not None
        if min_b > min_a:
            lengths = sorted({min_a, min_b - 1, max(min_a, min_b // 2)})
            found = [s for s in strings(a, lengths) if len(s) < min_b]
            fact = Fact("minLength", min_a, min_b)
            yield Suspect(path, "minLength", fact, a, b, tuple(found))
        if max_b is not None and (max_a is None or max_a > max_b):
            lengths = [max_b + 1, max_b + 2, max_b * 2 + 1, *([max_a] if max_a else [])]
            found = [s for s in strings(a, lengths) if len(s) > max_b]
            fact = Fact("maxLength", max_a, max_b)
            yield Suspect(path, "maxLength", fact, a, b, tuple(found))
        pattern_a, pattern_b = a.get("pattern"), b.get("pattern")
        if isinstance(pattern_b, str) and not pattern_implies(pattern_a, pattern_b):
            mine = list(strings(a))
            found = [*mine, *other_strings(mine[:6])]
            fact = Fact("pattern", pattern_a if isinstance(pattern_a, str) else None, pattern_b)
            yield Suspect(path, "pattern", fact, a, b, tuple(found))
        format_a, format_b = a.get("format"), b.get("format")
        if isinstance(format_b, str) and format_a != format_b:
            mine = list(strings(a))
            found = [*other_strings(mine[:6]), *mine]
            fact = Fact("format", format_a if isinstance(format_a, str) else None, format_b)
            yield Suspect(path, "format", fact, a, b, tuple(found))

    # arrays -------------------------------------------------------------------------------

    def _arrays(self, a: dict[str, Any], b: dict[str, Any], path: Path) -> Iterator[Suspect]:
        prefix_a = a.get("prefixItems") if isinstance(a.get("prefixItems"), list) else []
        prefix_b = b.get("prefixItems") if isinstance(b.get("prefixItems"), list) else []
        assert isinstance(prefix_a, list)
        assert isinstance(prefix_b, list)
        items_a, items_b = a.get("items", True), b.get("items", True)
        min_a, min_b = _int(a.get("minItems"), 0), _int(b.get("minItems"), 0)
        max_a, max_b = _int(a.get("maxItems"), None), _int(b.get("maxItems"), None)
        assert min_a is not None
        assert min_b is not None
        width = max(len(prefix_a), len(prefix_b))
        for i in range(width):
            if max_a is not None and i >= max_a:
                break
            item_a = prefix_a[i] if i < len(prefix_a) else items_a
            item_b = prefix_b[i] if i < len(prefix_b) else items_b
            yield from self.compare(item_a, item_b, (*path, i))
        if max_a is None or width < max_a:
            yield from self.compare(items_a, items_b, (*path, width))
        if min_b > min_a:
            found = list(self.sa.values({**a, "maxItems": min_b - 1}))
            fact = Fact("minItems", min_a, min_b)
            yield Suspect(path, "minItems", fact, a, b, tuple(found))
        if max_b is not None and (max_a is None or max_a > max_b):
            found = list(self.sa.values({**a, "minItems": max_b + 1}))
            fact = Fact("maxItems", max_a, max_b)
            yield Suspect(path, "maxItems", fact, a, b, tuple(found))
        if b.get("uniqueItems") is True and a.get("uniqueItems") is not True:
            found = [
                [v[0], v[0], *v[2:]]
                for v in self.sa.values({**a, "minItems": max(2, min_a)})
                if isinstance(v, list) and len(v) >= 2
            ]
            fact = Fact("uniqueItems", a.get("uniqueItems") is True, True)
            yield Suspect(path, "uniqueItems", fact, a, b, tuple(found))
        contains = ("contains", "minContains", "maxContains")
        if any(k in b for k in contains) and not all(
            self._same_value(k, a.get(k), b.get(k)) for k in contains
        ):
            fact = Fact("contains", _pick(a, contains), _pick(b, contains))
            yield self._suspect(path, "contains", fact, a, b)

    # objects ------------------------------------------------------------------------------

    def _objects(self, a: dict[str, Any], b: dict[str, Any], path: Path) -> Iterator[Suspect]:
        props_a = _map(a.get("properties"))
        props_b = _map(b.get("properties"))
        patterns_a = _map(a.get("patternProperties"))
        patterns_b = _map(b.get("patternProperties"))
        names = list(dict.fromkeys([*props_a, *props_b]))
        patterns = [*patterns_a, *patterns_b]
        sampled = [s for p in dict.fromkeys(patterns) for s in samples(p, 2)]
        extra = fresh_name(names, patterns)
        open_a = not self.a.norm(a.get("additionalProperties", True))
        for name in dict.fromkeys([*names, *sampled, extra]):
            here = (*path, name)
            sub_a = self.a.flat(self.sa.property_schema(a, name))
            sub_b = self.b.flat(self.sb.property_schema(b, name))
            # A property B declares and A left to its open content model (no properties
            # entry, no pattern, additionalProperties absent or true): A's messages are not
            # expected to carry it, whatever A technically allows there.
            undeclared = (
                open_a
                and name in props_b
                and name not in props_a
                and not any(matches(p, name) is not False for p in patterns_a)
            )
            if is_false(sub_b) and not is_false(sub_a):
                known = name in props_a or name in props_b or name in sampled
                fact = (
                    Fact("property", _state(a, name), "not allowed", name)
                    if known
                    else Fact("additionalProperties", "allowed", "not allowed")
                )
                found = [*islice(self.sa.values(sub_a), _CANDIDATES), *([] if known else [0, "x"])]
                found_suspects = [
                    Suspect(here, "additionalProperties", fact, sub_a, sub_b, tuple(found))
                ]
            else:
                found_suspects = self.compare(sub_a, sub_b, here)
            for suspect in found_suspects:
                yield dataclasses.replace(suspect, open_content=name) if undeclared else suspect
        if patterns_b and not self._same_value("patternProperties", patterns_a, patterns_b):
            fact = Fact("patternProperties", a.get("patternProperties"), b["patternProperties"])
            yield self._suspect(path, "patternProperties", fact, a, b)
        required_a = {r for r in a.get("required", []) if isinstance(r, str)}
        for name in [r for r in b.get("required", []) if isinstance(r, str)]:
            if name in required_a:
                continue
            found = [o for o in self.sa.values(a) if isinstance(o, dict) and name not in o]
            sub_a = self.a.norm(self.sa.property_schema(a, name))
            fact = Fact(
                "property", "not allowed" if is_false(sub_a) else "optional", "required", name
            )
            yield Suspect(path, "required", fact, a, b, tuple(found), pointer=(*path, name))
        min_a, min_b = _int(a.get("minProperties"), 0), _int(b.get("minProperties"), 0)
        assert min_a is not None
        assert min_b is not None
        if min_b > min_a:
            found = [o for o in self.sa.values(a) if isinstance(o, dict) and len(o) < min_b]
            fact = Fact("minProperties", min_a, min_b)
            yield Suspect(path, "minProperties", fact, a, b, tuple(found))
        max_a, max_b = _int(a.get("maxProperties"), None), _int(b.get("maxProperties"), None)
        if max_b is not None and (max_a is None or max_a > max_b):
            found = [o for o in self.sa.values(a) if isinstance(o, dict) and len(o) > max_b]
            if not found:
                pad = {f"{extra}{i}": 0 for i in range(max_b + 1)}
                found = [{**o, **pad} for o in islice(self.sa.values(a), 6) if isinstance(o, dict)]
            fact = Fact("maxProperties", max_a, max_b)
            yield Suspect(path, "maxProperties", fact, a, b, tuple(found))
        for name in ("propertyNames", "dependentRequired", "dependentSchemas"):
            if name in b and (name not in a or not self._same_value(name, a[name], b[name])):
                yield self._suspect(path, name, Fact(name, a.get(name), b[name]), a, b)

    # combinators --------------------------------------------------------------------------

    def _options(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        """A as a union: its ``anyOf`` (else ``oneOf``) options, each with A's other keywords.

        Exact for ``anyOf``; for ``oneOf`` a superset (a value matching two options is
        not in A), which is safe for proofs, and counterexamples are checked anyway.
        """
        name = "anyOf" if isinstance(a.get("anyOf"), list) else "oneOf"
        listed = a.get(name)
        if not isinstance(listed, list) or not listed:
            return [a]
        core = {k: v for k, v in a.items() if k != name}
        return [conjoin(core, self.a.flat(o)) for o in listed]

    def _distributed(self, a: dict[str, Any], b: dict[str, Any]) -> bool:
        """Whether A is a union to split: its ``anyOf``/``oneOf`` is not also B's."""
        return any(
            isinstance(a.get(name), list) and not self._same_value(name, a[name], b.get(name))
            for name in ("anyOf", "oneOf")
        )

    def _combinators(self, a: dict[str, Any], b: dict[str, Any], path: Path) -> Iterator[Suspect]:
        members_a = a.get("allOf") if isinstance(a.get("allOf"), list) else []
        assert isinstance(members_a, list)
        for member in b.get("allOf", []) if isinstance(b.get("allOf"), list) else []:
            if any(self.same(x, member) or self.proves(x, member) for x in members_a):
                continue
            yield from self.compare(a, member, path)
        options_b = b.get("anyOf")
        if isinstance(options_b, list) and not self._same_value("anyOf", a.get("anyOf"), options_b):
            for option in self._options(a):
                if not any(self.proves(option, y) for y in options_b):
                    fact = Fact("anyOf", a.get("anyOf"), options_b)
                    yield self._suspect(path, "anyOf", fact, option, b)
        options_b = b.get("oneOf")
        if isinstance(options_b, list) and not self._same_value("oneOf", a.get("oneOf"), options_b):
            for option in self._options(a):
                if not self._one_of_holds(option, options_b):
                    fact = Fact("oneOf", a.get("oneOf"), options_b)
                    yield self._suspect(path, "oneOf", fact, option, b)
        if "not" in b:
            held = "not" in a and (
                self._same_value("not", a["not"], b["not"])
                or self.reverse.proves(b["not"], a["not"])
            )
            if not held and not self.disjoint(a, self.b.flat(b["not"])):
                yield self._suspect(path, "not", Fact("not", a.get("not"), b["not"]), a, b)
        conditional = ("if", "then", "else")
        if any(k in b for k in conditional) and not all(
            self._same_value(k, a.get(k), b.get(k)) for k in conditional
        ):
            fact = Fact("if", _pick(a, conditional), _pick(b, conditional))
            yield self._suspect(path, "if", fact, a, b)

    def _one_of_holds(self, option: dict[str, Any], choices: list[Any]) -> bool:
        for i, choice in enumerate(choices):
            if self.proves(option, choice) and all(
                self.disjoint(option, self.b.flat(other))
                for j, other in enumerate(choices)
                if j != i
            ):
                return True
        return False

    def disjoint(self, x: Mapping[str, Any], y: Mapping[str, Any]) -> bool:
        """Proven that no value satisfies both ``x`` (writer's) and ``y`` (reader's)."""
        if is_false(x) or is_false(y):
            return True
        types_x, types_y = types_of(x), types_of(y)
        if (
            types_x is not None
            and types_y is not None
            and not (
                types_x & types_y
                or ("integer" in types_x and "number" in types_y)
                or ("number" in types_x and "integer" in types_y)
            )
        ):
            return True
        values = finite(x)
        if values is not None and all(ok is False for ok in self.b.valid_each(y, values)):
            return True
        props_x, props_y = _map(x.get("properties")), _map(y.get("properties"))
        required_x = {r for r in x.get("required", []) if isinstance(r, str)}
        required_y = {r for r in y.get("required", []) if isinstance(r, str)}
        for name in required_x & required_y & props_x.keys() & props_y.keys():
            in_x = finite(self.a.flat(props_x[name]))
            in_y = finite(self.b.flat(props_y[name]))
            if in_x is not None and in_y is not None:
                known = {canonical(v) for v in in_y}
                if not any(canonical(v) in known for v in in_x):
                    return True
        return False


# -- helpers ------------------------------------------------------------------------------


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any, default: int | None) -> int | None:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return default


def _covered(kind: str, allowed: frozenset[str]) -> bool:
    return kind in allowed or (kind == "integer" and "number" in allowed)


def _value_keyword(schema: Mapping[str, Any]) -> str:
    return "const" if "const" in schema else "enum"


def _bound(value: float | None, exclusive: bool, side: str) -> dict[str, float] | None:
    """A bound as data: ``{"minimum": 0}``, ``{"exclusiveMaximum": 10}``, or ``None``."""
    if value is None:
        return None
    return {("exclusive" + side) if exclusive else side.lower(): value}


def _pick(schema: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any] | None:
    """The keywords ``names`` as ``schema`` has them, or ``None`` when it has none."""
    found = {name: schema[name] for name in names if name in schema}
    return found or None


def _state(schema: Mapping[str, Any], name: str) -> str:
    """A property allowed by ``schema``: ``required`` or ``optional``."""
    required = schema.get("required")
    return "required" if isinstance(required, list) and name in required else "optional"


def _effective(value: float, exclusive: bool, *, lower: bool) -> float:
    """The tightest inclusive integer bound equivalent to a bound, for integers."""
    if lower:
        return math.floor(value) + 1 if exclusive else math.ceil(value)
    return math.ceil(value) - 1 if exclusive else math.floor(value)


def _lower_holds(low_a: float | None, ax: bool, low_b: float, bx: bool, *, integer: bool) -> bool:
    if low_a is None:
        return False
    if integer:
        return _effective(low_a, ax, lower=True) >= _effective(low_b, bx, lower=True)
    return low_a > low_b or (low_a == low_b and (ax or not bx))


def _upper_holds(high_a: float | None, ax: bool, high_b: float, bx: bool, *, integer: bool) -> bool:
    if high_a is None:
        return False
    if integer:
        return _effective(high_a, ax, lower=False) <= _effective(high_b, bx, lower=False)
    return high_a < high_b or (high_a == high_b and (ax or not bx))


def _below(value: float, low: float, exclusive: bool) -> bool:
    return value < low or (exclusive and value == low)


def _above(value: float, high: float, exclusive: bool) -> bool:
    return value > high or (exclusive and value == high)


def _divides(step: float, value: float) -> bool:
    """Is ``value`` a multiple of ``step`` (decimal fractions read exactly)?"""
    try:
        ratio = Fraction(str(value)) / Fraction(str(step))
    except (ValueError, ZeroDivisionError):
        return False
    return ratio.denominator == 1
