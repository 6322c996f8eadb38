"""``rabbitry import --asyncapi``: the command reads back what ``rabbitry export asyncapi``
wrote, into a spec equal to the original (the library's side: tests/test_asyncapi.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncapi_specs import assert_same_spec
from rabbitry.check import load_spec
from specs import FLAGSHIP, run_cli


def test_rabbitry_import_asyncapi_reads_the_export_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = tmp_path / "contract.yaml"
    code, _, err = run_cli(["export", "asyncapi", str(FLAGSHIP), "-o", str(exported)], capsys)
    assert (code, err) == (0, "")
    again = tmp_path / "again" / "topology.yaml"
    code, _, err = run_cli(["import", "--asyncapi", str(exported), "-o", str(again)], capsys)
    assert code == 0, err
    assert_same_spec(load_spec(FLAGSHIP), load_spec(again))
    # A file that is not one rabbitry wrote: refused, naming it, nothing written.
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"asyncapi": "3.0.0", "info": {"title": "t", "version": "1"}}', "utf-8")
    elsewhere = tmp_path / "elsewhere" / "topology.yaml"
    code, _, err = run_cli(["import", "--asyncapi", str(foreign), "-o", str(elsewhere)], capsys)
    assert code == 1
    assert "foreign.json was not written by" in err
    assert not elsewhere.exists()
