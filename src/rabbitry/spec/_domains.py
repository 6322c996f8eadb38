"""The finite set of values a message field can take, when its schema says so for certain.

A routing key or header filled from a field (``{channel}``) reaches a queue or
not depending on the field's value.  When the schema allows only finitely many
values (``enum``, ``const``, an ``anyOf``/``oneOf`` of those), ``check`` can
route each one; otherwise the field is *open* and nothing is claimed.

Soundness comes first: a value is named only if a valid message may carry it.
So the candidates come from ``enum``/``const`` (intersected across every
``allOf`` branch and ``$ref`` that applies to the field), and each candidate is
then validated against every schema that applies to the field, so ``type``,
``pattern``, ``not`` and the rest are honoured exactly (by jsonschema, with the
spec's registry, so cross-file ``$ref``s resolve).  Where the message schema
could constrain the field in a way this module does not follow (``anyOf``,
``if``, ``dependentSchemas`` ... at the object level, a nested ``$id``, an
``$anchor`` reference), the field is treated as open.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from jsonschema import Draft202012Validator

from rabbitry import _bounded
from rabbitry.spec.model import Location
from rabbitry.spec.schemas import ANNOTATIONS, SchemaStore, json_path

__all__ = ["Domain", "field_domain"]

#: How deep ``$ref``/``allOf`` nesting is followed before the field is called open.
_MAX_DEPTH = 16

#: Object-level keywords whose effect on one property's value is known (or nil).
_OBJECT_KEYWORDS = ANNOTATIONS | {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "dependentRequired",
    "allOf",
    "$ref",
}


@dataclass(frozen=True)
class Domain:
    """The values a field may take: each valid for it, in the order the schema lists them."""

    field: str
    values: tuple[Any, ...]
    #: The ``enum`` (or ``const``) the values come from, in its schema file.
    where: Location | None


@dataclass(frozen=True)
class _At:
    """A schema, the URI of its file and its JSON path there (``None``: not known)."""

    node: Any
    uri: str
    parts: tuple[str | int, ...] | None

    def child(self, *keys: str | int) -> _At:
        node = self.node
        for key in keys:
            node = node[key]
        return _At(node, self.uri, None if self.parts is None else (*self.parts, *keys))

    @property
    def ref(self) -> str | None:
        """An absolute ``$ref`` to this schema, when its place is known."""
        return None if self.parts is None else f"{self.uri}#{json_path(self.parts)}"


class _Open(Exception):
    """The field's values cannot be known for certain."""


def field_domain(store: SchemaStore, schema_file: Path, field: str) -> Domain | None:
    """The finite values ``field`` may take in a message valid against ``schema_file``.

    ``None`` when the set is open or cannot be known for certain.
    """
    root = _At(store.contents(schema_file), store.uri(schema_file), ())
    try:
        applying = [s for c in _conjuncts(store, root, 0) for s in _field_schemas(c, field)]
        candidates, where = _candidates(store, applying)
    except _Open:
        return None
    if candidates is None:
        return None
    refs = [s.ref for s in applying]
    if any(r is None for r in refs):
        return None
    validators = [_validator(store, r) for r in refs if r is not None]
    try:
        values = tuple(v for v in candidates if all(x.is_valid(v) for x in validators))
    except _bounded.Unknown:
        return None  # a pattern that cannot be run on a value in time: not known for certain
    location = None
    if where is not None and where.parts is not None:
        location = store.locate(Path(unquote(urlsplit(where.uri).path)), where.parts)
    return Domain(field, values, location)


def _validator(store: SchemaStore, ref: str) -> Any:
    bounded = _bounded.jsonschema_validator()  # the schema's patterns, run with a bound
    return bounded(
        {"$ref": ref},
        registry=store.registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def _conjuncts(store: SchemaStore, at: _At, depth: int) -> Iterator[_At]:
    """``at`` and every schema that applies with it (its ``$ref`` and ``allOf``, transitively)."""
    if depth > _MAX_DEPTH:
        raise _Open
    node = at.node
    if isinstance(node, bool):
        yield at
        return
    if not isinstance(node, Mapping):
        raise _Open
    if ("$id" in node and at.parts != ()) or "$dynamicRef" in node or "$recursiveRef" in node:
        raise _Open  # a new base URI inside a document, or a dynamic one: not followed
    yield at
    ref = node.get("$ref")
    if isinstance(ref, str):
        yield from _conjuncts(store, _deref(store, at, ref), depth + 1)
    branches = node.get("allOf")
    if isinstance(branches, list):
        for index in range(len(branches)):
            yield from _conjuncts(store, at.child("allOf", index), depth + 1)


def _deref(store: SchemaStore, at: _At, ref: str) -> _At:
    target = urljoin(at.uri, ref)
    document, fragment = urldefrag(target)
    found = store.lookup(at.uri, ref)
    if found is None:
        raise _Open
    parts: tuple[str | int, ...] | None = None
    if fragment == "":
        parts = ()
    elif fragment.startswith("/"):
        parts = tuple(
            unquote(p).replace("~1", "/").replace("~0", "~") for p in fragment[1:].split("/")
        )
    return _At(found, document or at.uri, parts)


def _field_schemas(obj: _At, field: str) -> Iterator[_At]:
    """The schemas one object-level conjunct applies to ``field``'s value."""
    node = obj.node
    if isinstance(node, bool):
        return  # true says nothing; false no message passes, so nothing is claimed wrongly
    if not set(node) <= _OBJECT_KEYWORDS:
        raise _Open
    covered = False
    properties = node.get("properties")
    if isinstance(properties, Mapping) and field in properties:
        covered = True
        yield obj.child("properties", field)
    patterns = node.get("patternProperties")
    if isinstance(patterns, Mapping):
        for pattern in patterns:
            hit = _bounded.search(pattern, field)  # a schema's pattern: run with a bound
            if hit is None:
                raise _Open
            if hit:
                covered = True
                yield obj.child("patternProperties", pattern)
    if not covered and "additionalProperties" in node:
        yield obj.child("additionalProperties")


def _candidates(store: SchemaStore, schemas: list[_At]) -> tuple[list[Any] | None, _At | None]:
    """The values every finite set among ``schemas`` allows (``None``: none is finite),
    and where the first finite set is written."""
    found: list[Any] | None = None
    where: _At | None = None
    for schema in schemas:
        for part in _conjuncts(store, schema, 1):
            values, here = _finite(store, part)
            if values is None:
                continue
            if where is None:
                where = here
            found = values if found is None else _intersect(found, values)
    return found, where


def _finite(store: SchemaStore, at: _At) -> tuple[list[Any] | None, _At | None]:
    """The finite set one schema (its own keywords only) allows, and where it is written."""
    node = at.node
    if node is False:
        return [], None
    if not isinstance(node, Mapping):
        return None, None
    sets: list[list[Any]] = []
    where: _At | None = None
    if isinstance(node.get("enum"), list):
        sets.append(list(node["enum"]))
        where = at.child("enum")
    if "const" in node:
        sets.append([node["const"]])
        where = where or at.child("const")
    for keyword in ("anyOf", "oneOf"):
        branches = node.get(keyword)
        if isinstance(branches, list) and branches:
            union = _union(store, [at.child(keyword, i) for i in range(len(branches))])
            if union is not None:
                sets.append(union)
                where = where or at.child(keyword)
    if not sets:
        return None, None
    result = _unique(sets[0])
    for other in sets[1:]:
        result = _intersect(result, other)
    return result, where


def _unique(values: list[Any]) -> list[Any]:
    """Each value once, by JSON equality (an ``enum`` may repeat one, or list 1 and 1.0)."""
    seen: set[tuple[str, Any]] = set()
    kept: list[Any] = []
    for value in values:
        if _key(value) not in seen:
            seen.add(_key(value))
            kept.append(value)
    return kept


def _union(store: SchemaStore, branches: list[_At]) -> list[Any] | None:
    """The values any branch allows, when every branch is finite; else ``None``."""
    values: list[Any] = []
    for branch in branches:
        found, _ = _candidates(store, [branch])
        if found is None:
            return None
        seen = {_key(v) for v in values}
        values.extend(v for v in found if _key(v) not in seen)
    return values


def _intersect(a: list[Any], b: list[Any]) -> list[Any]:
    keys = {_key(v) for v in b}
    return [v for v in a if _key(v) in keys]


def _key(value: Any) -> tuple[str, Any]:
    """JSON Schema equality: ``1`` equals ``1.0``, ``true`` is no number, objects by content."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    return ("json", json.dumps(value, sort_keys=True))
