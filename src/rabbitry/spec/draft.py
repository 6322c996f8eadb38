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


#: The widest line an object is written on in flow style; a wider one is written as a block.
_FLOW_WIDTH = 100


class _Flow(dict[str, Any]):
    """A mapping written on one line (``{type: topic, durable: false}``)."""


class _Dumper(yaml.SafeDumper):
    """Safe YAML with ``_Flow`` mappings in flow style and list items indented under
    their key, as ``topology.yaml`` is written."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_flow(dumper: yaml.SafeDumper, data: _Flow) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


_Dumper.add_representer(_Flow, _represent_flow)


def _dump(data: Any, *, width: int = _FLOW_WIDTH) -> str:
    text = yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=width,
    )
    return str(text)


def _one_line(item: Any, body: Mapping[str, Any]) -> Any:
    """``body`` as a ``_Flow`` when ``item`` (the entry holding it) fits on one line."""
    flow = _Flow(body)
    lines = _dump(item(flow), width=10**6).splitlines()  # the section's key, then the entry
    fits = len(lines) == 2 and len(lines[1]) <= _FLOW_WIDTH
    return flow if fits else dict(body)


def _laid_out(key: str, value: Any) -> Any:
    """A section with each object (an exchange, a binding, ...) on one line where it fits."""
    if isinstance(value, Mapping):
        return {
            name: _one_line(lambda f, name=name: {key: {name: f}}, body)
            if isinstance(body, Mapping) and body
            else body
            for name, body in value.items()
        }
    if isinstance(value, list):
        return [
            _one_line(lambda f: {key: [f]}, body) if isinstance(body, Mapping) else body
            for body in value
        ]
    return value


def spec_yaml(document: Mapping[str, Any], *, header: str = "") -> str:
    """``document`` as YAML: top-level keys in the documented order, a blank line between
    sections, each object on one line where it fits (as ``topology.yaml`` is written), the
    user's key order kept within; ``header`` becomes a leading ``#`` comment."""
    ordered = {key: document[key] for key in _TOP_LEVEL if key in document}
    ordered.update((key, value) for key, value in document.items() if key not in ordered)
    scalars = {k: v for k, v in ordered.items() if not isinstance(v, Mapping | list) or not v}
    sections = [_dump(scalars)] if scalars else []
    sections += [
        _dump({key: _laid_out(key, value)}) for key, value in ordered.items() if key not in scalars
    ]
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comment + "\n".join(sections)


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
