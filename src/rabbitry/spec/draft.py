"""A spec to be written: the document, its schema files, and what was left out.

What ``rabbitry import`` builds from a live vhost or a definitions file, and
``rabbitry import --asyncapi`` from an AsyncAPI document: plain data in the
shape of ``topology.yaml`` (the keys a user writes, sugar and all), which
``write_spec`` writes as YAML beside its schema files.  The draft is never
trusted to be valid: the writer's caller loads what was written with
``rabbitry.check`` and reports what the checks say.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from rabbitry.errors import InvalidArgument, Option, Phrase

__all__ = ["SpecDraft", "spec_yaml", "write_spec"]

#: The order of a spec's top-level keys, as the README documents them.
_TOP_LEVEL = (
    "version",
    "rabbitmq",
    "codegen",
    "exchanges",
    "queues",
    "policies",
    "operator_policies",
    "bindings",
    "messages",
    "services",
)


@dataclass(frozen=True)
class SpecDraft:
    """A spec as plain data, ready to be written.

    ``document`` has the keys of ``topology.yaml`` (``version``, ``exchanges``, ...);
    ``schemas`` maps each schema file's path, relative to the spec's folder and
    written with ``/`` (``"schemas/start.json"``), to its JSON document; ``notes``
    say what was left out and why, one fact each, for the user to read.
    """

    document: Mapping[str, Any]
    schemas: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def spec_yaml(document: Mapping[str, Any], *, header: str = "") -> str:
    """``document`` as YAML: top-level keys in the documented order, block style,
    the user's key order kept within; ``header`` becomes a leading ``#`` comment."""
    ordered = {key: document[key] for key in _TOP_LEVEL if key in document}
    ordered.update((key, value) for key, value in document.items() if key not in ordered)
    text = yaml.safe_dump(
        ordered, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100
    )
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comment + text


def write_spec(
    draft: SpecDraft, path: Path, *, header: str = "", force: bool = False
) -> list[Path]:
    """Write ``draft`` to ``path`` and its schema files beside it; the paths written.

    Nothing is overwritten without ``force``: an existing file is refused before
    anything is written.  A schema path that would leave the spec's folder
    (absolute, or with ``..``) is refused.
    """
    root = path.parent
    files: dict[Path, str] = {path: spec_yaml(draft.document, header=header)}
    for name, schema in sorted(draft.schemas.items()):
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise InvalidArgument(
                f"schema path {name!r} must stay inside the spec's folder (relative, no '..')"
            )
        files[root.joinpath(*relative.parts)] = (
            json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
        )
    if not force:
        existing = [p for p in files if p.exists()]
        if existing:
            raise InvalidArgument(
                Phrase.of(
                    f"already exists: {', '.join(str(p) for p in existing)}; pass ",
                    Option.FORCE,
                    " to overwrite",
                )
            )
    for target, text in files.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return list(files)
