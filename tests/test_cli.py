"""The ``rabbitry`` command line: ``check`` and ``route``, exit codes, output formats.

A few cases run the real program (``python -m rabbitry``) in a subprocess; the
rest call ``rabbitry.cli.main`` in-process.  No output may ever hold a traceback.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rabbitry import __version__
from specs import copy_flagship, edit, object_schema, position_of, run_cli, write_spec

JOB_ID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
#: What `rabbitry route jobs.new job.render` prints: the queue, and its retries (retry: [1s, 5s]).
READY_ROUTE = (
    "jobs.ready\n  retries: jobs.ready.retry.1s (1s), jobs.ready.retry.5s (5s) → jobs.ready\n"
)
_DIAGNOSTIC = re.compile(
    r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning): .+ \[[a-z-]+\]$"
)


def run_script(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real program, as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "rabbitry", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stdout + done.stderr
    return done


@pytest.fixture
def flagship(tmp_path: Path) -> Path:
    return copy_flagship(tmp_path)


@pytest.fixture
def headers_spec(tmp_path: Path) -> Path:
    return write_spec(
        tmp_path,
        """
        version: 1
        exchanges:
          docs: {type: headers}
          dlx: {type: fanout}
        queues:
          pdf: {dead_letter: dlx}
          images: {dead_letter: dlx}
          parked: {}
        bindings:
          - {from: docs, queue: pdf, match: all, headers: {format: pdf}}
          - {from: docs, queue: images, match: any, headers: {format: png, pages: 1}}
          - {from: dlx, queue: parked}
        messages:
          Document: {schema: schemas/d.json, exchange: docs, headers: {format: "{format}"}}
        services:
          converter: {publishes: [Document], consumes: {pdf: [Document], images: [Document]}}
        """,
        {"schemas/d.json": object_schema({"format": {"enum": ["pdf", "png"]}}, ["format"])},
    )


# ------------------------------------------------------------- the real program


def test_script_check_in_the_spec_folder(flagship: Path) -> None:
    done = run_script(["check"], cwd=flagship.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "topology.yaml: ok (4 exchanges, 6 queues, 4 bindings, 5 messages, 2 services)"
    )
    assert done.stderr == ""


def test_script_check_reports_located_errors(flagship: Path) -> None:
    text = edit(flagship, "version: 1\n", "version: 2\n")
    done = run_script(["check", "topology.yaml"], cwd=flagship.parent)
    assert done.returncode == 1
    line, column = position_of(text, "2\n")
    assert done.stdout.splitlines() == [
        f"topology.yaml:{line}:{column}: error: spec version 2 is not supported "
        "(this rabbitry reads `version: 1`) [version]"
    ]
    assert "1 error" in done.stderr


def test_script_route(flagship: Path) -> None:
    done = run_script(["route", "jobs.new", "job.render"], cwd=flagship.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout == READY_ROUTE


def test_script_usage_error_and_version(flagship: Path) -> None:
    done = run_script(["check", "--bogus"], cwd=flagship.parent)
    assert done.returncode == 2
    assert "--bogus" in done.stderr
    done = run_script(["--version"], cwd=flagship.parent)
    assert done.returncode == 0
    assert __version__ in done.stdout


# ------------------------------------------------------------------------- check


def test_check_positional_spec(flagship: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["check", str(flagship)], capsys)
    assert code == 0
    assert out.startswith(f"{flagship}: ok (4 exchanges")


def test_check_spec_option(flagship: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["check", "-f", str(flagship)], capsys)
    assert code == 0
    assert out.startswith(f"{flagship}: ok")
    code, out, _ = run_cli(["check", "--spec", str(flagship), str(flagship)], capsys)
    assert code == 0


def test_check_default_spec_is_in_the_working_folder(
    flagship: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(flagship.parent)
    code, out, _ = run_cli(["check"], capsys)
    assert code == 0
    assert out.startswith("topology.yaml: ok")


def test_two_different_specs_are_a_usage_error(
    flagship: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["check", str(flagship), "-f", str(tmp_path / "other.yaml")], capsys)
    assert code == 2
    assert "two specs" in err


def test_unknown_option_is_a_usage_error(
    flagship: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["check", str(flagship), "--nope"], capsys)
    assert code == 2
    assert "--nope" in err
    code, _, err = run_cli(["check", "--format", "xml", str(flagship)], capsys)
    assert code == 2
    assert "xml" in err


def test_errors_are_file_line_column_lines(
    flagship: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(flagship, "publishes: [Start, Stop]", "publishes: [Start, Stpo]")
    text = edit(flagship, "jobs.dead:    {type: fanout,", "jobs.dead:    {type: fanuot,")
    code, out, err = run_cli(["check", str(flagship)], capsys)
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 2
    found = [_DIAGNOSTIC.match(line) for line in lines]
    assert all(found), lines
    assert [(m["file"], int(m["line"]), int(m["col"])) for m in found if m] == [
        (str(flagship), *position_of(text, "fanuot")),
        (str(flagship), *position_of(text, "Stpo")),
    ]
    assert "did you mean 'fanout'?" in lines[0]
    assert "did you mean 'Stop'?" in lines[1]
    assert "2 errors, 0 warnings" in err


def test_a_missing_spec_file_is_exit_1_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run_cli(["check", str(tmp_path / "nope.yaml")], capsys)
    assert code == 1
    assert f"no spec file at {tmp_path / 'nope.yaml'}" in out
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(["check"], capsys)
    assert code == 1
    assert "no spec file at topology.yaml" in out
    assert "-f FILE" in out


def test_a_folder_as_spec_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["check", str(tmp_path)], capsys)
    assert code == 2
    assert "directory" in err


def test_a_yaml_syntax_error_is_exit_1(flagship: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flagship.write_text("version: 1\nqueues: [\n", encoding="utf-8")
    code, out, _ = run_cli(["check", str(flagship)], capsys)
    assert code == 1
    assert re.search(rf"^{re.escape(str(flagship))}:3:1: error: YAML syntax", out, re.M)


def test_check_json_output(flagship: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["check", "--format", "json", str(flagship)], capsys)
    assert code == 0
    assert json.loads(out) == {
        "spec": str(flagship),
        "ok": True,
        "errors": 0,
        "warnings": 0,
        "diagnostics": [],
        "hints": [],
    }
    text = edit(flagship, "publishes: [Start, Stop]", "publishes: [Start, Stpo]")
    code, out, _ = run_cli(["check", "--format", "json", str(flagship)], capsys)
    assert code == 1
    data = json.loads(out)
    assert (data["ok"], data["errors"], data["warnings"]) == (False, 1, 0)
    (entry,) = data["diagnostics"]
    line, column = position_of(text, "Stpo")
    assert entry == {
        "file": str(flagship),
        "line": line,
        "column": column,
        "code": "unknown-message",
        "severity": "error",
        "message": "service 'server' names message 'Stpo', which the spec does not declare",
        "hint": "did you mean 'Stop'?",
    }


def test_strict_turns_warnings_into_failure(
    flagship: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(flagship, "  jobs.dead-letters:\n", "  lonely: {}\n  jobs.dead-letters:\n")
    code, out, _ = run_cli(["check", str(flagship)], capsys)
    assert code == 0
    assert ": warning: no service consumes queue 'lonely'" in out
    assert out.rstrip().endswith("1 warning")
    code, out, err = run_cli(["check", "--strict", str(flagship)], capsys)
    assert code == 1
    assert ": error: no service consumes queue 'lonely'" in out
    assert "1 error, 0 warnings" in err
    code, out, _ = run_cli(["check", "--strict", "--format", "json", str(flagship)], capsys)
    assert code == 1
    data = json.loads(out)
    assert (data["ok"], data["errors"], data["warnings"]) == (False, 1, 0)
    assert [d["severity"] for d in data["diagnostics"]] == ["error"]
    assert [d["code"] for d in data["diagnostics"]] == ["unconsumed-queue"]


# ------------------------------------------------------------------------- route


def test_route_topic(flagship: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["route", "-f", str(flagship), "jobs.new", "job.render"], capsys)
    assert code == 0
    assert out == READY_ROUTE


def test_route_to_a_runtime_binding_says_its_condition(
    flagship: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["route", "-f", str(flagship), "jobs.status", JOB_ID], capsys)
    assert code == 0
    queue, _, condition = out.rstrip("\n").partition("\t")
    assert queue == "job-status"
    assert "run time" in condition
    assert f"job_id = {JOB_ID}" in condition


def test_route_json(flagship: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        ["route", "-f", str(flagship), "--format", "json", "jobs.new", "job.render"], capsys
    )
    assert code == 0
    assert json.loads(out) == [
        {
            "queue": "jobs.ready",
            "conditions": [],
            "path": [{"from": "jobs.new", "to": "jobs.ready", "to_type": "queue", "key": "job.#"}],
            "retries": [
                {"queue": "jobs.ready.retry.1s", "delay_ms": 1000},
                {"queue": "jobs.ready.retry.5s", "delay_ms": 5000},
            ],
        }
    ]


def test_route_to_an_unknown_exchange(flagship: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["route", "-f", str(flagship), "jobs.nwe", "job.render"], capsys)
    assert code == 1
    assert out == ""
    assert "'jobs.nwe'" in err
    assert "did you mean 'jobs.new'?" in err


def test_route_that_reaches_no_queue(flagship: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["route", "-f", str(flagship), "jobs.new", "task.render"], capsys)
    assert code == 1
    assert out == ""
    assert "no queue" in err
    assert "'task.render'" in err


def test_route_uses_the_default_spec(
    flagship: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(flagship.parent)
    code, out, _ = run_cli(["route", "jobs.dead"], capsys)
    assert code == 0
    assert out == "jobs.dead-letters\n"


def test_route_on_a_spec_with_errors_shows_them(
    flagship: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = edit(flagship, "version: 1\n", "version: 2\n")
    code, out, err = run_cli(["route", "-f", str(flagship), "jobs.new", "job.render"], capsys)
    assert code == 1
    assert out == ""
    line, column = position_of(text, "2\n")
    assert f"{flagship}:{line}:{column}: error: spec version 2" in err
    assert "rabbitry check" in err


def test_route_with_headers(headers_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        ["route", "-f", str(headers_spec), "docs", "--header", "format=pdf"], capsys
    )
    assert (code, out) == (0, "pdf\n")
    code, out, _ = run_cli(
        ["route", "-f", str(headers_spec), "docs", "--header", "format=png"], capsys
    )
    assert (code, out) == (0, "images\n")
    # pages:=1 is the number 1 and matches `pages: 1`; pages=1 is the string "1" and does not
    code, out, _ = run_cli(
        ["route", "-f", str(headers_spec), "docs", "--header", "pages:=1"], capsys
    )
    assert (code, out) == (0, "images\n")
    code, out, _ = run_cli(
        ["route", "-f", str(headers_spec), "docs", "--header", "pages=1"], capsys
    )
    assert code == 1
    code, out, err = run_cli(
        ["route", "-f", str(headers_spec), "docs", "--header", "format=gif"], capsys
    )
    assert (code, out) == (1, "")
    assert "no queue" in err


def test_route_header_must_be_name_equals_value(
    headers_spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["route", "-f", str(headers_spec), "docs", "--header", "format"], capsys)
    assert code == 2
    assert "NAME=VALUE" in err


def test_route_needs_an_exchange(flagship: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["route", "-f", str(flagship)], capsys)
    assert code == 2
    assert "EXCHANGE" in err


# ----------------------------------------------------------------------- the rest


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0
    assert out.strip() == f"rabbitry, version {__version__}"


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    assert "check" in out
    assert "route" in out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["chek"], capsys)
    assert code == 2
    assert "chek" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["plan", "--url", "amqp://u:SECRET@[::1/"], "is not a valid URL"),
        (["plan", "--url", "amqp://u:SECRET@localhost:port/"], "is not a valid URL"),
        (["plan", "--management-url", "notaurl"], "is not a management API URL"),
        (["generate", "--out", "/proc/rabbitry-x"], "cannot write the package"),
    ],
)
def test_bad_addresses_and_unwritable_folders_are_usage_errors_not_tracebacks(
    args: list[str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # the flagship
    code, out, err = run_cli(args, capsys)
    assert code == 1
    assert expected in err
    assert "internal error" not in err
    assert "SECRET" not in out + err


def test_tail_help_says_what_a_look_costs_and_names_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(["tail", "--help"], capsys)
    assert code == 0
    assert "--spend-delivery" in out
    assert "x-delivery-count" in out
    assert "--management-url" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["tail", "nope"], "the contract has no queue 'nope'"),
        (["tail", "jobs.ready", "--management-url", "notaurl"], "is not a management API URL"),
    ],
)
def test_tail_refuses_before_connecting(
    args: list[str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # the flagship
    code, out, err = run_cli([*args, "--url", "amqp://guest:guest@127.0.0.1:9/"], capsys)
    assert code == 1
    assert out == ""
    assert expected in err
