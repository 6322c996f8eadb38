"""Helpers shared by the tests: write specs and schemas, find lines, run the CLI.

Specs are written into a test's ``tmp_path``; the flagship (``topology.yaml``
and ``schemas/`` at the repository root) is copied there so that a test can
mutate one line of it and assert where the fault is reported.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from rabbitry.check import Report
from rabbitry.cli import main
from rabbitry.spec import Code, Diagnostic

__all__ = [
    "DRAFT",
    "FLAGSHIP",
    "FLAGSHIP_SCHEMAS",
    "ROOT",
    "at",
    "codes",
    "copy_flagship",
    "edit",
    "edit_schema",
    "line_of",
    "object_schema",
    "only",
    "position_of",
    "run_cli",
    "same_file",
    "write_spec",
]

ROOT = Path(__file__).resolve().parents[1]
FLAGSHIP = ROOT / "topology.yaml"
FLAGSHIP_SCHEMAS = ROOT / "schemas"
#: The retry queues the flagship's ``retry: [1s, 5s]`` on jobs.ready makes.
RETRY_QUEUES = ("jobs.ready.retry.1s", "jobs.ready.retry.5s")
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def copy_flagship(tmp: Path) -> Path:
    """``topology.yaml`` and ``schemas/`` copied into ``tmp``; the copied spec's path."""
    shutil.copy(FLAGSHIP, tmp / "topology.yaml")
    shutil.copytree(FLAGSHIP_SCHEMAS, tmp / "schemas", dirs_exist_ok=True)
    return tmp / "topology.yaml"


def edit(path: Path, old: str, new: str) -> str:
    """Replace the one occurrence of ``old`` in ``path`` by ``new``; the new text."""
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return text


def edit_schema(spec: Path, name: str, old: str, new: str) -> tuple[Path, str]:
    """``edit`` on ``schemas/NAME`` next to ``spec``: the schema's path and new text."""
    path = spec.parent / "schemas" / name
    return path, edit(path, old, new)


def object_schema(
    properties: Mapping[str, Any], required: Iterable[str] = (), **more: Any
) -> dict[str, Any]:
    """A draft 2020-12 object schema."""
    return {
        "$schema": DRAFT,
        "type": "object",
        "properties": dict(properties),
        "required": list(required),
        **more,
    }


def write_spec(
    tmp: Path,
    spec: str | Mapping[str, Any],
    schemas: Mapping[str, Any] | None = None,
    *,
    name: str = "topology.yaml",
) -> Path:
    """Write a spec (YAML text, dedented, or a mapping) and its schema files into ``tmp``.

    ``schemas`` maps a path relative to ``tmp`` to its contents: a string is
    written as is, anything else as indented JSON.  Returns the spec's path.
    """
    text = (
        textwrap.dedent(spec).lstrip("\n")
        if isinstance(spec, str)
        else yaml.safe_dump(dict(spec), sort_keys=False)
    )
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    for relative, contents in (schemas or {}).items():
        target = tmp / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        body = contents if isinstance(contents, str) else json.dumps(contents, indent=2) + "\n"
        target.write_text(body, encoding="utf-8")
    return path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The 1-based number of the ``occurrence``-th line containing ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} is on {len(hits)} lines"
    return hits[occurrence - 1]


def position_of(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based (line, column) where the ``occurrence``-th ``needle`` starts."""
    start = -1
    for _ in range(occurrence):
        start = text.index(needle, start + 1)
    before = text[:start]
    return before.count("\n") + 1, start - (before.rfind("\n") + 1) + 1


def same_file(reported: str, path: Path) -> bool:
    """A diagnostic's file names ``path`` (schema files may be shown relative to the cwd)."""
    return Path(reported).resolve() == path.resolve()


def codes(report: Report | Iterable[Diagnostic]) -> list[Code]:
    found = report.diagnostics if isinstance(report, Report) else report
    return [d.code for d in found]


def at(report: Report | Iterable[Diagnostic], code: Code) -> list[Diagnostic]:
    """The diagnostics with ``code``."""
    found = report.diagnostics if isinstance(report, Report) else report
    return [d for d in found if d.code is code]


def only(report: Report | Iterable[Diagnostic], code: Code) -> Diagnostic:
    """The one diagnostic with ``code`` (failing, with all of them shown, if not exactly one)."""
    found = report.diagnostics if isinstance(report, Report) else tuple(report)
    hits = [d for d in found if d.code is code]
    assert len(hits) == 1, "\n".join(d.render() for d in found) or "no diagnostics"
    return hits[0]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``rabbitry ARGS`` in-process: exit code, stdout, stderr; never a traceback."""
    code: Any = 0
    try:
        main(args)
    except SystemExit as exited:
        code = exited.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "internal error" not in out + err
    return (0 if code is None else code), out, err
