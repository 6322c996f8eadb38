"""The one walk over a JSON Schema's subschemas (draft 2020-12, plus draft-7 spellings).

A keyword's value is either a schema, a list of schemas, a map of names to
schemas, or data.  Only the first three are searched: a property *named*
``enum`` is a schema (``properties`` maps names to schemas), while the value of
the keyword ``enum`` is data, and a ``$ref`` inside data is just a string.
``load_schemas`` (which resolves every ``$ref`` for ``check``) and ``bundle``
(which rewrites them for the runtime) both walk with this, so they cannot
disagree on what is a reference.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["SCHEMA_LISTS", "SCHEMA_MAPS", "SCHEMA_VALUES", "refs", "subschemas"]

#: Keywords whose value is one schema.
SCHEMA_VALUES = frozenset(
    {
        "additionalProperties",
        "propertyNames",
        "items",  # a list of schemas in drafts before 2020-12: handled as SCHEMA_LISTS too
        "additionalItems",
        "contains",
        "not",
        "if",
        "then",
        "else",
        "unevaluatedItems",
        "unevaluatedProperties",
        "contentSchema",
    }
)
#: Keywords whose value is a list of schemas.
SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
#: Keywords whose value maps names to schemas: a name there is never a keyword.
SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"}
)

Parts = tuple[str | int, ...]


def subschemas(schema: Any, parts: Parts = ()) -> Iterator[tuple[Parts, dict[str, Any]]]:
    """Every schema object in ``schema`` (itself first), with its JSON path.

    Boolean schemas have no keywords and are skipped; the objects are yielded
    as they are, so a caller may change them in place (``bundle`` does).
    """
    if not isinstance(schema, dict):
        return
    yield parts, schema
    for key, value in list(schema.items()):
        here = (*parts, key)
        if key in SCHEMA_MAPS and isinstance(value, Mapping):
            for name, sub in value.items():
                yield from subschemas(sub, (*here, name))
        elif key in SCHEMA_LISTS and isinstance(value, list):
            for index, sub in enumerate(value):
                yield from subschemas(sub, (*here, index))
        elif key in SCHEMA_VALUES:
            yield from subschemas(value, here)


def refs(schema: Any) -> Iterator[tuple[Parts, str]]:
    """Every ``$ref`` of ``schema`` with the JSON path of its value."""
    for parts, node in subschemas(schema):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield (*parts, "$ref"), ref
