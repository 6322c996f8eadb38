"""``rabbitry check NEW --against OLD [--mode M]``: output, exit codes, and OLD read from git."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from specs import copy_flagship, edit, edit_schema, run_cli


@pytest.fixture
def old(tmp_path: Path) -> Path:
    (tmp_path / "old").mkdir()
    return copy_flagship(tmp_path / "old")


@pytest.fixture
def new(tmp_path: Path) -> Path:
    (tmp_path / "new").mkdir()
    return copy_flagship(tmp_path / "new")


# -- output and exit codes -----------------------------------------------------------------


def test_no_change_exits_0(old: Path, new: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["check", str(new), "--against", str(old)], capsys)
    assert code == 0
    assert f"against {old} (mode full): 0 breaking, 0 unknown, 0 compatible" in out


def test_a_breaking_change_prints_one_line_per_finding_and_exits_1(
    old: Path, new: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_schema(new, "update.json", '"maximum": 100\n', '"maximum": 1\n')
    code, out, _ = run_cli(["check", str(new), "--against", str(old)], capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].endswith("ok (4 exchanges, 6 queues, 4 bindings, 5 messages, 2 services)")
    [line] = [x for x in lines if x.startswith("breaking:")]
    assert line.startswith("breaking: message Update /progress: upper bound lowered: <= 100 → <= 1")
    assert "[backward]; counterexample (valid under old): {" in line
    assert "new says /progress:" in line
    assert "compatible: message Update: schema changed" in out  # forward is fine
    assert lines[-1] == f"against {old} (mode full): 1 breaking, 0 unknown, 1 compatible"


@pytest.mark.parametrize(("mode", "code"), [("backward", 1), ("forward", 0), ("full", 1)])
def test_the_mode_decides_which_direction_counts(
    old: Path, new: Path, capsys: pytest.CaptureFixture[str], mode: str, code: int
) -> None:
    edit_schema(new, "update.json", '"maximum": 100\n', '"maximum": 1\n')
    assert run_cli(["check", str(new), "--against", str(old), "--mode", mode], capsys)[0] == code


def test_json_output(old: Path, new: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit_schema(
        new,
        "stop.json",
        '"job_id",\n    "requested_at"',
        '"job_id",\n    "reason",\n    "requested_at"',
    )
    code, out, _ = run_cli(
        ["check", str(new), "--against", str(old), "--mode", "backward", "--format", "json"],
        capsys,
    )
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False
    assert data["errors"] == 0
    against = data["against"]
    assert (against["old"], against["mode"], against["breaking"]) == (str(old), "backward", 1)
    [finding] = against["findings"]
    assert finding["verdict"] == "breaking"
    assert (finding["subject"], finding["message"], finding["path"]) == (
        "message Stop",
        "Stop",
        "/reason",
    )
    assert finding["why"] == "property 'reason': optional → required"
    assert finding["change"] == {
        "aspect": "property",
        "of": "reason",
        "old": "optional",
        "new": "required",
    }
    assert finding["direction"] == "backward"
    example = finding["counterexample"]
    assert example["valid_under"] == "old"
    assert "reason" not in example["instance"]
    assert "required" in example["error"]
    assert example["fault"] == {"path": "", "keyword": "required"}


def test_unknown_findings_pass_unless_strict(
    old: Path, new: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A widened pattern is safe, but regex inclusion is not proven: unknown, a warning.
    edit_schema(new, "start.json", '"^[a-z][a-z0-9_-]{0,62}$"', '"^[a-z0-9][a-z0-9_-]{0,62}$"')
    code, out, _ = run_cli(["check", str(new), "--against", str(old), "--mode", "backward"], capsys)
    assert code == 0
    assert "unknown: message Start /job_type: pattern changed" in out
    code, _, _ = run_cli(
        ["check", str(new), "--against", str(old), "--mode", "backward", "--strict"], capsys
    )
    assert code == 1


def test_the_new_specs_own_errors_still_count_and_the_change_is_still_named(
    old: Path, new: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(new, 'key: "job.#"', 'key: "task.#"')  # Start now reaches no queue: an error
    code, out, _err = run_cli(["check", str(new), "--against", str(old)], capsys)
    assert code == 1
    assert "[unroutable]" in out
    assert "breaking: message Start: no longer reaches queue 'jobs.ready'" in out


def test_a_new_spec_that_cannot_be_read_is_not_compared(
    old: Path, new: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(new, '{type: topic, description: "New jobs', '{type: topik, description: "New jobs')
    code, _, err = run_cli(["check", str(new), "--against", str(old)], capsys)
    assert code == 1
    assert "not compared: fix the errors of the new spec first" in err


def test_an_old_spec_with_errors_fails_with_them(
    old: Path, new: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(old, '{type: topic, description: "New jobs', '{type: topik, description: "New jobs')
    code, _, err = run_cli(["check", str(new), "--against", str(old)], capsys)
    assert code == 1
    assert "the old spec has 1 error" in err
    assert "topik" in err


def test_usage_errors_exit_2(new: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["check", str(new), "--mode", "backward"], capsys)
    assert code == 2
    assert "--mode applies to --against" in err
    code, _, _ = run_cli(["check", str(new), "--against", str(new), "--mode", "sideways"], capsys)
    assert code == 2
    code, _, err = run_cli(["check", str(new), "--against", str(tmp_path / "nowhere.yaml")], capsys)
    assert code == 2
    assert "no spec file there" in err
    # Not a git repository.
    code, _, err = run_cli(["check", str(new), "--against", "git:main"], capsys)
    assert code == 2
    assert "not inside a git repository" in err


def test_the_real_program(old: Path, new: Path) -> None:
    edit(
        new,
        "  jobs.ready:\n    type: quorum\n",
        "  jobs.ready:\n    type: quorum\n    max_length: 6\n",
    )
    done = subprocess.run(
        [sys.executable, "-m", "rabbitry", "check", str(new), "--against", str(old)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "breaking: queue jobs.ready: changed (argument x-max-length none → 6)" in done.stdout


# -- git:REF[:PATH] ----------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository holding the flagship under contracts/, committed on main."""
    root = tmp_path / "repo"
    (root / "contracts").mkdir(parents=True)
    copy_flagship(root / "contracts")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "the contracts")
    return root


def test_old_from_git_uses_the_schema_files_of_that_commit(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = repo / "contracts" / "topology.yaml"
    edit_schema(spec, "common.json", '"maxLength": 128', '"maxLength": 64')  # not committed
    monkeypatch.chdir(repo / "contracts")
    code, out, _ = run_cli(["check", "topology.yaml", "--against", "git:main"], capsys)
    assert code == 1
    assert "breaking: message StartSuccess /worker: maxLength lowered: 128 → 64" in out
    assert "against git:main:contracts/topology.yaml (mode full)" in out
    # The same with the path given, from elsewhere, and with a commit id.
    monkeypatch.chdir(repo)
    head = git(repo, "rev-parse", "HEAD")
    for ref in ("git:main:contracts/topology.yaml", f"git:{head}", "git:HEAD"):
        code, out, _ = run_cli(["check", str(spec), "--against", ref], capsys)
        assert code == 1, ref
        assert "maxLength lowered" in out


def test_old_from_git_at_an_earlier_commit(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = repo / "contracts" / "topology.yaml"
    edit_schema(spec, "start.json", '"minimum": 1,', '"minimum": 2,')
    git(repo, "commit", "-q", "-am", "steps from 2")
    monkeypatch.chdir(repo)
    code, out, _ = run_cli(
        ["check", str(spec), "--against", "git:HEAD~1", "--mode", "backward"], capsys
    )
    assert code == 1
    assert "message Start /steps: lower bound raised" in out
    code, _, _ = run_cli(["check", str(spec), "--against", "git:HEAD"], capsys)
    assert code == 0


def test_a_branch_only_on_origin_is_found_there(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A CI checkout has origin/main but no local main.
    git(repo, "update-ref", "refs/remotes/origin/release", "HEAD")
    monkeypatch.chdir(repo)
    code, out, _ = run_cli(["check", "contracts/topology.yaml", "--against", "git:release"], capsys)
    assert code == 0
    assert "against git:release:contracts/topology.yaml" in out


def test_git_errors_are_usage_errors(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo)
    spec = "contracts/topology.yaml"
    code, _, err = run_cli(["check", spec, "--against", "git:no-such-branch"], capsys)
    assert code == 2
    assert "git has no commit 'no-such-branch'" in err
    code, _, err = run_cli(["check", spec, "--against", "git:main:elsewhere/topology.yaml"], capsys)
    assert code == 2
    assert "no such file" in err
    code, _, err = run_cli(["check", spec, "--against", "git:"], capsys)
    assert code == 2


def test_an_old_commit_whose_spec_had_errors_says_so_in_git_terms(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = repo / "contracts" / "topology.yaml"
    shutil.rmtree(repo / "contracts" / "schemas")
    git(repo, "commit", "-q", "-am", "schemas lost")
    git(repo, "checkout", "-q", "HEAD~1", "--", ".")  # the working tree has them back
    monkeypatch.chdir(repo)
    code, _, err = run_cli(["check", str(spec), "--against", "git:HEAD"], capsys)
    assert code == 1
    assert "the old spec has" in err
    assert "git:" in err
    assert "rabbitry-against-" not in err
