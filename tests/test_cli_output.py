"""``-o FILE`` on every command that writes one: the file holds what standard output
would, and a file that cannot be written is one line naming it (exit 1), never a
traceback (``cli._options.write_output``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from specs import copy_flagship, run_cli

#: Each command with ``-o FILE`` that writes text, as a user types it (the spec's path last).
WRITERS = [
    ["graph"],
    ["graph", "--format", "dot"],
    ["export", "definitions"],
    ["export", "asyncapi"],
]


@pytest.mark.parametrize("command", WRITERS, ids=" ".join)
def test_the_file_holds_what_standard_output_shows(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = str(copy_flagship(tmp_path))
    code, shown, _ = run_cli([*command, spec], capsys)
    assert code == 0
    assert shown
    written = tmp_path / "out.txt"
    code, out, _ = run_cli([*command, "-o", str(written), spec], capsys)
    assert code == 0
    assert out == ""
    assert written.read_text(encoding="utf-8") == shown


@pytest.mark.parametrize("command", WRITERS, ids=" ".join)
def test_a_file_that_cannot_be_written_is_named_not_a_traceback(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = str(copy_flagship(tmp_path))
    target = tmp_path / "no such folder" / "out.txt"
    code, out, err = run_cli([*command, "-o", str(target), spec], capsys)
    assert code == 1
    assert out == ""
    assert str(target) in err
    assert "No such file or directory" in err
