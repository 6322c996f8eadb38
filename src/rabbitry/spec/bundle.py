"""One self-contained schema per message: its file, plus every file it ``$ref``s.

Each referenced file is embedded whole under ``$defs`` with a key derived from
its path relative to the message's schema (``"common.json"``), and every
``$ref`` — in the message's file and in the embedded ones — is rewritten to
point inside the bundle.  The result needs no registry and no file system:
the runtime compiles it once, and generated code embeds it as data.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag

from rabbitry.spec._walk import subschemas
from rabbitry.spec.schemas import SchemaStore

__all__ = ["EMBEDDED_PREFIX", "bundle"]

#: ``$defs`` keys of embedded files start with this, so they cannot meet the user's own.
EMBEDDED_PREFIX = "file:"


def bundle(store: SchemaStore, path: Path) -> Any:
    """The schema at ``path`` with everything it references embedded."""
    root = path.resolve()
    keys = {root: ""}
    pending: list[Path] = []

    def pointer_for(ref: str, here: Path) -> str:
        target, fragment = urldefrag(ref)
        file = (here.parent / target).resolve() if target else here
        if file not in keys:
            keys[file] = _key(file, root)
            pending.append(file)
        escaped = keys[file].replace("~", "~0").replace("/", "~1")
        return f"#{fragment}" if not escaped else f"#/$defs/{escaped}{fragment}"

    def rewritten(file: Path) -> Any:
        return _rewrite(copy.deepcopy(store.contents(file)), lambda ref: pointer_for(ref, file))

    main = rewritten(root)
    embedded: dict[str, Any] = {}
    while pending:
        file = pending.pop()
        schema = rewritten(file)
        if isinstance(schema, dict):
            schema.pop("$schema", None)
        embedded[keys[file]] = schema
    if embedded:
        if not isinstance(main, dict):
            main = {"allOf": [main]}
        main.setdefault("$defs", {}).update(embedded)
    return main


def _key(file: Path, root: Path) -> str:
    return EMBEDDED_PREFIX + Path(os.path.relpath(file, root.parent)).as_posix()


def _rewrite(schema: Any, pointer_for: Callable[[str], str]) -> Any:
    """Rewrite every ``$ref`` in place: those ``load_schemas`` resolved, found by the same walk."""
    for _, node in subschemas(schema):
        node.pop("$id", None)  # an $id would move the base URI of the rewritten refs
        ref = node.get("$ref")
        if isinstance(ref, str):
            node["$ref"] = pointer_for(ref)
    return schema
