"""``check`` shows advice (severity ``info``) and never fails for it, ``--strict`` or not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specs import run_cli

SPEC = """\
version: 1
exchanges:
  dead: {type: fanout}
queues:
  q: {message_ttl: 1000, dead_letter: dead}
  d: {}
bindings:
  - {from: dead, queue: d}
services:
  s: {consumes: {q: []}}
"""

MOVED = """\
version: 1
exchanges:
  dead: {type: fanout}
queues:
  q: {}
  d: {}
bindings:
  - {from: dead, queue: d}
policies:
  q-settings: {queues: [q], message_ttl: 1000, dead_letter: dead}
services:
  s: {consumes: {q: []}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("strict", [False, True])
def test_a_policy_settable_argument_is_a_hint_not_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], strict: bool
) -> None:
    path = write(tmp_path, SPEC)
    code, out, err = run_cli(["check", str(path), *(["--strict"] if strict else [])], capsys)
    assert code == 0, out + err
    assert f"{path}:5:3: info: queue 'q': message_ttl, dead_letter are x-arguments" in out
    assert "[policy-settable]" in out
    assert out.rstrip().endswith("1 hint")


def test_hints_in_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, SPEC)
    code, out, _ = run_cli(["check", str(path), "--format", "json"], capsys)
    data = json.loads(out)
    assert code == 0
    assert data["ok"] is True
    assert [h["code"] for h in data["hints"]] == ["policy-settable"]
    assert data["diagnostics"] == []


def test_the_same_settings_in_a_policy_give_no_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, MOVED)
    code, out, err = run_cli(["check", str(path)], capsys)
    assert code == 0, out + err
    assert "info:" not in out
    assert "hint" not in out
