"""Fuzzing the loader and the checks: whatever the text, ``check()`` reports, never raises.

Mutations start from the flagship: of its text (delete, duplicate or swap
lines, insert junk, truncate) and of its parsed structure (delete or rename a
key, replace a value by a random scalar, list or mapping).  Every diagnostic
must still name a file and a line.  A smaller number of examples goes through
``rabbitry check`` in-process, which must exit 0 or 1 and never print a
traceback or an internal error.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rabbitry.check import Report, check
from rabbitry.spec import CODES, Severity
from specs import FLAGSHIP, FLAGSHIP_SCHEMAS

FLAGSHIP_TEXT = FLAGSHIP.read_text(encoding="utf-8")
FLAGSHIP_TREE: dict[str, Any] = yaml.safe_load(FLAGSHIP_TEXT)

_FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
_CLI_FUZZ = settings(_FUZZ, max_examples=40)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the flagship's schemas; each example writes its own topology.yaml."""
    folder = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(FLAGSHIP_SCHEMAS, folder / "schemas")
    return folder


# ------------------------------------------------------------------------ mutations

_JUNK = st.text(
    alphabet=st.sampled_from([*"{}[]:,-#&*!|>'\"%@`?~ \t\n\\", "é", "\x00", "a", "1"]),
    min_size=1,
    max_size=6,
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "{job_id}",
            "job.{x",
            "amq.x",
            "jobs.dead",
            "quorum",
            "headers",
            "schemas/start.json",
            "schemas",
            "../topology.yaml",
            "https://example.com/s.json",
            "2020-13-45",
            "é" * 130,
        ]
    ),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def _text_mutation(draw: st.DrawFn, text: str) -> str:
    lines = text.splitlines(keepends=True)
    kind = draw(st.sampled_from(["delete", "duplicate", "swap", "junk", "truncate", "replace"]))
    if kind == "truncate":
        return text[: draw(st.integers(0, len(text)))]
    if kind == "junk":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(_JUNK) + text[at:]
    if not lines:
        return text
    i = draw(st.integers(0, len(lines) - 1))
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "swap":
        j = draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    else:  # replace one character
        line = lines[i]
        at = draw(st.integers(0, max(len(line) - 1, 0)))
        lines[i] = line[:at] + draw(_JUNK) + line[at + 1 :]
    return "".join(lines)


@st.composite
def _mutated_text(draw: st.DrawFn) -> str:
    text = FLAGSHIP_TEXT
    for _ in range(draw(st.integers(1, 3))):
        text = draw(_text_mutation(text))
    return text


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every node below ``tree`` (dict keys and list indexes)."""
    found: list[tuple[Any, ...]] = []
    children: list[tuple[Any, Any]] = []
    if isinstance(tree, dict):
        children = list(tree.items())
    elif isinstance(tree, list):
        children = list(enumerate(tree))
    for key, value in children:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


_FLAGSHIP_PATHS = _paths(FLAGSHIP_TREE)


def _parent(tree: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        tree = tree[part]
    return tree


@st.composite
def _mutated_tree(draw: st.DrawFn) -> Any:
    tree = json.loads(json.dumps(FLAGSHIP_TREE))  # a deep copy
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(tree)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, last = _parent(tree, path), path[-1]
        kind = draw(st.sampled_from(["delete", "replace", "rename"]))
        if kind == "delete":
            del parent[last]
        elif kind == "replace":
            parent[last] = draw(_VALUES)
        elif isinstance(parent, dict):
            new = draw(st.one_of(st.text(max_size=10), st.just(last[:-1]), st.just(last + "s")))
            parent[new] = parent.pop(last)
    if draw(st.booleans()):
        tree = draw(st.one_of(st.just(tree), _VALUES))  # sometimes not a mapping at all
    return tree


def _dump(tree: Any, flow: bool) -> str:
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, default_flow_style=flow)


# --------------------------------------------------------------------------- checks


def _assert_well_formed(report: Report) -> None:
    assert isinstance(report, Report)
    assert list(report.diagnostics) == sorted(report.diagnostics)
    for diagnostic in report.diagnostics:
        assert diagnostic.location.file, diagnostic
        assert diagnostic.location.line >= 1, diagnostic
        assert diagnostic.location.column >= 1, diagnostic
        assert diagnostic.code in CODES
        assert diagnostic.severity in (Severity.ERROR, Severity.WARNING)
        assert diagnostic.message
        rendered = diagnostic.render()
        assert rendered.startswith(f"{diagnostic.location}: {diagnostic.severity}: ")
        json.dumps(diagnostic.as_json())


def _check_text(workdir: Path, text: str) -> Report:
    spec = workdir / "topology.yaml"
    spec.write_text(text, encoding="utf-8")
    report = check(spec)
    _assert_well_formed(report)
    # What load_spec runs: the checks that find only warnings skipped, the same errors.
    assert check(spec, advisory=False).errors == report.errors
    return report


@_FUZZ
@given(text=_mutated_text())
def test_check_never_raises_on_mutated_text(workdir: Path, text: str) -> None:
    _check_text(workdir, text)


@_FUZZ
@given(tree=_mutated_tree(), flow=st.booleans())
def test_check_never_raises_on_mutated_structure(workdir: Path, tree: Any, flow: bool) -> None:
    report = _check_text(workdir, _dump(tree, flow))
    # Unchanged, types too: Python's == takes 1 for True, the spec does not (a mutation
    # of `exclusive: true` to `1` compared equal and expected no finding).
    if json.dumps(tree, sort_keys=True) == json.dumps(FLAGSHIP_TREE, sort_keys=True):
        assert report.diagnostics == ()


_STOP_SCHEMA: dict[str, Any] = json.loads((FLAGSHIP_SCHEMAS / "stop.json").read_text("utf-8"))
_JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.text(max_size=8),
        st.sampled_from(["#/$defs/X", "common.json#/$defs/JobId", "nope.json", "#/required/0"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(st.text(max_size=6), st.sampled_from(["$ref", "type", "$schema"])),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=6,
)


@st.composite
def _mutated_schema(draw: st.DrawFn) -> Any:
    tree = json.loads(json.dumps(_STOP_SCHEMA))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(tree)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, last = _parent(tree, path), path[-1]
        if draw(st.booleans()):
            del parent[last]
        else:
            parent[last] = draw(_JSON_VALUES)
    return tree


@settings(_FUZZ, max_examples=100)
@given(schema=_mutated_schema())
def test_check_never_raises_on_a_mutated_schema(workdir: Path, schema: Any) -> None:
    (workdir / "schemas" / "stop.json").write_text(json.dumps(schema, indent=2), "utf-8")
    try:
        _check_text(workdir, FLAGSHIP_TEXT)
    finally:
        shutil.copy(FLAGSHIP_SCHEMAS / "stop.json", workdir / "schemas" / "stop.json")


def test_an_unmutated_flagship_is_clean(workdir: Path) -> None:
    assert _check_text(workdir, FLAGSHIP_TEXT).diagnostics == ()
    assert _check_text(workdir, _dump(FLAGSHIP_TREE, flow=False)).diagnostics == ()
    assert _check_text(workdir, _dump(FLAGSHIP_TREE, flow=True)).diagnostics == ()


# ------------------------------------------------------------------------------ CLI


def _cli_check(spec: Path, *more: str) -> tuple[int, str]:
    from rabbitry.cli import main  # noqa: PLC0415 - only the CLI tests need the CLI

    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["check", str(spec), *more])
        except SystemExit as exited:
            code = exited.code
    return (0 if code is None else code), out.getvalue() + err.getvalue()


@_CLI_FUZZ
@given(
    text=st.one_of(_mutated_text(), _mutated_tree().map(lambda t: _dump(t, flow=False))),
    as_json=st.booleans(),
)
def test_cli_check_exits_0_or_1_without_a_traceback(
    workdir: Path, text: str, as_json: bool
) -> None:
    spec = workdir / "topology.yaml"
    spec.write_text(text, encoding="utf-8")
    code, output = _cli_check(spec, *(["--format", "json"] if as_json else []))
    assert code in (0, 1), output
    assert "Traceback" not in output
    assert "internal error" not in output
    if as_json:
        data = json.loads(output[: output.rindex("}") + 1])
        assert data["ok"] is (code == 0)
