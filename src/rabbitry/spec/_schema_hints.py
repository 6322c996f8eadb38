"""Hints for schema faults that are typos: a misspelt ``type`` or ``$ref`` target.

The meta-schema says only that ``"strng"`` "is not valid under any of the
given schemas", and a dangling ``$ref`` only that it does not resolve; the
likely fix is the closest name that exists, so these hints name it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urldefrag

from rabbitry.spec.diagnostics import did_you_mean

__all__ = ["JSON_TYPES", "META_HINT", "REF_HINT", "meta_hint", "ref_hint"]

#: The seven type names JSON Schema's ``type`` keyword takes.
JSON_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")

META_HINT = "see https://json-schema.org/draft/2020-12/json-schema-validation"
REF_HINT = "point it at an existing JSON pointer, e.g. '#/$defs/Name'"

# Keywords whose value maps names to subschemas: a member named ``type`` there is a
# property (or definition) name, not the ``type`` keyword.
_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)


def meta_hint(parts: Sequence[str | int], instance: object) -> str:
    """The hint for a meta-schema error at ``parts`` on value ``instance``."""
    is_type = (
        len(parts) >= 1
        and parts[-1] == "type"
        and (len(parts) < 2 or parts[-2] not in _SCHEMA_MAPS)
    )
    names = [instance] if isinstance(instance, str) else instance
    if is_type and isinstance(names, list):
        for name in names:
            if isinstance(name, str) and name not in JSON_TYPES:
                return did_you_mean(name, JSON_TYPES, "types")
    return META_HINT


def ref_hint(document: Any, ref: str) -> str:
    """The hint for ``ref``, a JSON pointer into ``document`` that does not resolve.

    Walks the pointer as far as it resolves; at the first step that does not,
    offers the closest existing key there (``#/$defs/Thng`` -> ``#/$defs/Thing``).
    """
    base, fragment = urldefrag(ref)
    if not fragment.startswith("/"):
        return REF_HINT
    steps = [unquote(s).replace("~1", "/").replace("~0", "~") for s in fragment[1:].split("/")]
    node = document
    for i, step in enumerate(steps):
        if isinstance(node, Mapping) and step in node:
            node = node[step]
            continue
        if isinstance(node, Mapping):
            close = difflib.get_close_matches(step, [str(k) for k in node], n=1, cutoff=0.6)
            if close:
                fixed = [*steps[:i], close[0], *steps[i + 1 :]]
                pointer = "/".join(s.replace("~", "~0").replace("/", "~1") for s in fixed)
                return f"did you mean '{base}#/{pointer}'?"
        break
    return REF_HINT
