"""JSON Schema as data: ``$ref`` followed inside a bundle, exact conjunction, types, equality.

Everything here works on *bundled* schemas (``rabbitry.spec.bundle``): one
document per message whose every ``$ref`` is a JSON Pointer into itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from rabbitry.messaging.contract import compile_schema
from rabbitry.spec.schemas import ANNOTATIONS, DATA_KEYWORDS, DRAFT_2020_12

__all__ = [
    "ANNOTATIONS",
    "FALSE",
    "Root",
    "canonical",
    "conjoin",
    "finite",
    "is_false",
    "json_equal",
    "json_in",
    "key",
    "types_of",
]

#: The schema nothing satisfies, in normal form.
FALSE: Mapping[str, Any] = {"not": {}}
_MAX_REF_HOPS = 32

TYPES = ("null", "boolean", "object", "array", "string", "number", "integer")

# Keywords that read their siblings: a schema holding one of a group cannot be merged
# with another schema holding any of that group without changing what it means.
_GROUPS = (
    frozenset({"properties", "patternProperties", "additionalProperties"}),
    frozenset({"prefixItems", "items", "contains", "minContains", "maxContains"}),
    frozenset({"if", "then", "else"}),
)
_NEVER_MERGED = frozenset({"unevaluatedProperties", "unevaluatedItems", "$dynamicRef"})


def key(value: Any) -> str:
    """A stable text key for a JSON value (for caches and sets)."""
    return json.dumps(value, sort_keys=True, default=repr)


def is_false(schema: Any) -> bool:
    return schema is False or (isinstance(schema, Mapping) and dict(schema) == {"not": {}})


def json_equal(a: Any, b: Any) -> bool:
    """JSON Schema equality: numbers by value, a boolean is never a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(json_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def json_in(value: Any, values: Iterator[Any] | list[Any] | tuple[Any, ...]) -> bool:
    return any(json_equal(value, v) for v in values)


def canonical(value: Any) -> str:
    """A text equal for two values exactly when ``json_equal`` holds (``1`` and ``1.0`` alike,
    ``true`` apart from ``1``): sets of these make membership linear for a large ``enum``."""
    return json.dumps(_canonical(value), sort_keys=True, default=repr)


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def finite(schema: Mapping[str, Any]) -> list[Any] | None:
    """The values ``const``/``enum`` allow (before the other keywords), or ``None``: unbounded."""
    values: list[Any] | None = None
    if "const" in schema:
        values = [schema["const"]]
    if isinstance(schema.get("enum"), list):
        listed = list(schema["enum"])
        if values is None:
            values = listed
        else:
            known = {canonical(v) for v in listed}
            values = [v for v in values if canonical(v) in known]
    return values


def types_of(schema: Mapping[str, Any]) -> frozenset[str] | None:
    """The JSON types the schema allows (``integer`` within ``number``); ``None``: any."""
    found: frozenset[str] | None = None
    declared = schema.get("type")
    if isinstance(declared, str):
        found = frozenset({declared})
    elif isinstance(declared, list):
        found = frozenset(t for t in declared if isinstance(t, str))
    values = finite(schema)
    if values is not None:
        of_values = frozenset(_type_of(v) for v in values)
        found = of_values if found is None else _intersect(found, of_values)
    if is_false(schema):
        found = frozenset()
    return found


def _intersect(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    out = set(a & b)
    if ("integer" in a and "number" in b) or ("number" in a and "integer" in b):
        out.add("integer")
    return frozenset(out)


class Root:
    """One bundled schema: resolves ``$ref``s and brings subschemas to a normal form."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema if isinstance(schema, Mapping) else ({} if schema else dict(FALSE))
        self._validators: dict[str, Any] = {}

    def lookup(self, ref: str) -> Any:
        """The subschema a ``#...`` reference points at, or ``None``."""
        if ref == "#":
            return self.schema
        if not ref.startswith("#/"):
            return None
        node: Any = self.schema
        for raw in ref[2:].split("/"):
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node

    def norm(self, schema: Any) -> dict[str, Any]:
        """``schema`` with ``$ref`` chains followed and annotations dropped.

        ``true`` is ``{}``, ``false`` is ``{"not": {}}``; a ``$ref`` with siblings
        becomes their exact conjunction.  An unresolvable reference reads as ``{}``
        (the spec's own checks report it).
        """
        for _ in range(_MAX_REF_HOPS):
            if schema is True or schema is None:
                return {}
            if schema is False:
                return dict(FALSE)
            if not isinstance(schema, Mapping):
                return {}
            plain = {k: v for k, v in schema.items() if k not in ANNOTATIONS}
            ref = plain.pop("$ref", None)
            if not isinstance(ref, str):
                return plain
            target = self.lookup(ref)
            if not plain:
                schema = target
                continue
            return conjoin(self.norm(target), plain)
        return {}

    def flat(self, schema: Any) -> dict[str, Any]:
        """``norm(schema)`` with ``allOf`` members merged in where that is exact."""
        out = self.norm(schema)
        members = out.pop("allOf", None)
        if not isinstance(members, list):
            return out
        for member in members:
            out = conjoin(out, self.flat(member))
        return out

    # -- validating pieces of this document -------------------------------------------

    def validator(self, schema: Any) -> Any | None:
        """A compiled validator of ``schema`` (a piece of this document), or ``None``.

        ``None`` when the piece refers to something outside ``#/$defs``: it cannot
        be validated apart from the whole.
        """
        if not isinstance(schema, Mapping):
            schema = {} if schema else dict(FALSE)
        if any(not ref.startswith("#/$defs/") for ref in _refs(schema)):
            return None
        document = dict(schema)
        defs = self.schema.get("$defs")
        if isinstance(defs, Mapping):
            document["$defs"] = {**defs, **(document.get("$defs") or {})}
        document.setdefault("$schema", DRAFT_2020_12)
        text = key(document)
        if text not in self._validators:
            try:
                self._validators[text] = compile_schema(document)
            except Exception:
                self._validators[text] = None
        return self._validators[text]

    def valid(self, schema: Any, value: Any) -> bool | None:
        """Is ``value`` valid under the piece ``schema``?  ``None``: cannot tell apart."""
        return self.valid_each(schema, [value])[0]

    def valid_each(self, schema: Any, values: list[Any]) -> list[bool | None]:
        """``valid`` for each of ``values``, the validator looked up once: its cache key is
        the whole schema's text, and an ``enum`` of 20,000 values must not pay it per value.

        ``enum`` and ``const`` are checked here against a set of canonical texts, the
        other keywords by the validator: the validator's own ``enum`` scans its list for
        every value (20,000 values of a 20,000-value enum took 11 s), and keywords of one
        schema are a conjunction, so the split is exact."""
        listed = finite(schema) if isinstance(schema, Mapping) and len(values) > 1 else None
        if listed is not None:
            rest = {k: v for k, v in schema.items() if k not in ("enum", "const")}
            known = {canonical(v) for v in listed}
            checked = self.valid_each(rest, values)
            pairs = zip(values, checked, strict=True)
            return [ok if canonical(v) in known else False for v, ok in pairs]
        validator = self.validator(schema)
        if validator is None:
            return [None] * len(values)
        out: list[bool | None] = []
        for value in values:
            try:
                out.append(bool(validator.is_valid(value)))
            except Exception:
                out.append(None)
        return out


def _refs(schema: Any) -> Iterator[str]:
    if isinstance(schema, Mapping):
        for name, value in schema.items():
            if name in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield value
            elif name not in DATA_KEYWORDS:
                yield from _refs(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _refs(item)


def conjoin(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """A schema meaning exactly ``a`` and ``b``: merged where that is exact, else ``allOf``."""
    if not b:
        return dict(a)
    if not a:
        return dict(b)
    if is_false(a) or is_false(b):
        return dict(FALSE)
    if not _mergeable(a, b):
        out = dict(a)
        out["allOf"] = [*out.get("allOf", []), dict(b)]
        return out
    out = dict(a)
    for name, value in b.items():
        if name not in out or json_equal(out[name], value):
            out[name] = value
        elif name == "required":
            out[name] = list(dict.fromkeys([*out[name], *value]))
        elif name == "type":
            mine, theirs = types_of({"type": out[name]}), types_of({"type": value})
            common = _intersect(mine or frozenset(TYPES), theirs or frozenset(TYPES))
            if not common:
                return dict(FALSE)
            out[name] = sorted(common)
        elif name == "allOf":
            out[name] = [*out[name], *value]
    return out


def _mergeable(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if _NEVER_MERGED & (a.keys() | b.keys()):
        return False
    for group in _GROUPS:
        in_a, in_b = group & a.keys(), group & b.keys()
        if in_a and in_b and not all(json_equal(a.get(k), b.get(k)) for k in group):
            return False
    for name in a.keys() & b.keys():
        if name in ("required", "type", "allOf"):
            if name == "required" and not (isinstance(a[name], list) and isinstance(b[name], list)):
                return False
            continue
        if not json_equal(a[name], b[name]):
            return False
    return True
