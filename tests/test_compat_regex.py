"""The regex sampler leans on CPython's private ``re._parser``: without it, ``check`` still
works (plain and ``--against``) and a pattern change it cannot sample is *unknown*."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rabbitry import _bounded
from rabbitry.compat import Mode, Verdict, _regex, compare_message
from rabbitry.messaging.contract import MessageContract
from specs import copy_flagship, edit_schema


@pytest.fixture
def no_sre_parser(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``re._parser`` gone, as on an interpreter that moved it (``None`` blocks the import)."""
    monkeypatch.setitem(sys.modules, "re._parser", None)
    _bounded.sre_parser.cache_clear()
    _bounded._small.cache_clear()
    yield
    _bounded.sre_parser.cache_clear()
    _bounded._small.cache_clear()


def contract(schema: dict[str, Any]) -> MessageContract:
    return MessageContract("M", "x", "", {}, False, schema)


def field(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"v": schema},
        "required": ["v"],
        "additionalProperties": False,
    }


def test_samples_come_from_the_parser_when_it_is_there() -> None:
    found = list(_regex.samples("^ab+$", 3))
    assert len(found) == 3
    assert all(_regex.matches("^ab+$", s) for s in found)


def test_without_the_parser_samples_are_none_and_a_pattern_change_is_unknown(
    no_sre_parser: None,
) -> None:
    assert list(_regex.samples("^ab+$", 3)) == []
    assert _regex.matches("^ab+$", "abb") is True  # re itself is untouched
    old = field({"type": "string", "pattern": "^[a-z]{3}$"})
    new = field({"type": "string", "pattern": "^[a-z]{4}$"})
    verdicts = {f.verdict for f in compare_message(contract(old), contract(new), Mode.BACKWARD)}
    # Without samples no candidate is drawn from the pattern: nothing is proven either way
    # by the sampler, yet the comparison runs to the end.
    assert verdicts <= {Verdict.UNKNOWN, Verdict.BREAKING}
    assert verdicts


_BLOCKED = (
    "import re, sys; sys.modules['re._parser'] = None; "
    "from rabbitry.cli import main; main(sys.argv[1:])"
)


@pytest.mark.parametrize("against", [False, True])
def test_check_runs_when_the_parser_is_missing_at_import_time(
    tmp_path: Path, against: bool
) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = copy_flagship(tmp_path / "old")
    new = copy_flagship(tmp_path / "new")
    edit_schema(new, "update.json", '"maximum": 100\n', '"maximum": 1\n')
    args = [str(new), *(["--against", str(old)] if against else [])]
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKED, "check", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == (1 if against else 0), done.stdout + done.stderr
    assert "ok (4 exchanges" in done.stdout
    if against:
        assert "breaking: message Update /progress:" in done.stdout
