"""``rabbitry generate`` on the flagship: the committed package is fresh, formatted and clean;
``--check`` catches a schema edit; the output is deterministic; writing is safe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator, FormatChecker

from jobs_contracts import strategies
from rabbitry.check import load_spec
from rabbitry.codegen import MARKER, check_fresh, generate, render
from rabbitry.errors import InvalidState
from rabbitry.messaging.contract import contract_data
from specs import FLAGSHIP, copy_flagship, edit_schema, run_cli, write_spec
from test_codegen_support import (
    FLAGSHIP_PACKAGE,
    ROOT,
    assert_passes_ruff_defaults,
    imported,
    ruff,
)

FILES = [
    "__init__.py",
    "_contract.py",
    "clients.py",
    "deliveries.py",
    "messages.py",
    "py.typed",
    "strategies.py",
]


def test_committed_package_is_a_fresh_generation() -> None:
    """The golden files: ``src/jobs_contracts`` is exactly what the flagship generates."""
    generated = render(load_spec(FLAGSHIP))
    assert sorted(generated.files) == FILES
    for name, text in generated.files.items():
        committed = (FLAGSHIP_PACKAGE / name).read_text(encoding="utf-8")
        assert committed == text, f"src/jobs_contracts/{name} is stale: run `rabbitry generate`"
    assert sorted(p.name for p in FLAGSHIP_PACKAGE.iterdir() if p.name != "__pycache__") == FILES


def test_generated_flagship_is_formatted_and_lint_clean() -> None:
    """Formatted and lint-clean under ruff's defaults (what the README promises users), and
    lint-clean under this project's rules (more of them; E501 ignored for generated code)."""
    assert_passes_ruff_defaults(FLAGSHIP_PACKAGE)
    linted = ruff("check", "--ignore", "E501", FLAGSHIP_PACKAGE)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_header_carries_the_hash_and_do_not_edit() -> None:
    for name in FILES:
        if name.endswith(".py"):
            head = (FLAGSHIP_PACKAGE / name).read_text(encoding="utf-8").splitlines()[:3]
            assert head[0].startswith(f"{MARKER} — do not edit")
            assert "topology.yaml and the 6 schema files it uses" in head[1]
            assert len(head[2]) == len("# ") + 64


def test_output_is_deterministic_and_independent_of_the_folder(tmp_path: Path) -> None:
    first = render(load_spec(FLAGSHIP)).files
    assert render(load_spec(FLAGSHIP)).files == first
    copied = copy_flagship(tmp_path)
    assert render(load_spec(copied)).files == first


def test_hash_changes_with_any_schema_file(tmp_path: Path) -> None:
    spec = copy_flagship(tmp_path)
    before = render(load_spec(spec)).files["messages.py"]
    edit_schema(spec, "common.json", "When it happened", "When it happened, exactly")
    after = render(load_spec(spec)).files
    assert before.splitlines()[2] != after["messages.py"].splitlines()[2]
    # Files whose content does not depend on the edit still change: the header names the hash.
    assert after["clients.py"] != (FLAGSHIP_PACKAGE / "clients.py").read_text(encoding="utf-8")


def test_edit_schema_check_fails_generate_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = copy_flagship(tmp_path)
    out = tmp_path / "src" / "jobs_contracts"
    assert run_cli(["generate", str(spec)], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert run_cli(["generate", str(spec), "--check"], capsys)[0] == 0

    edit_schema(spec, "update.json", '"maxLength": 1024', '"maxLength": 2048')
    code, stdout, stderr = run_cli(["generate", str(spec), "--check"], capsys)
    assert code == 1
    stale = {line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith("stale: ")}
    assert {Path(p).name for p in stale} == {n for n in FILES if n != "py.typed"}
    assert "out of date" in stderr
    assert "Length: at most 1024" in (out / "messages.py").read_text(encoding="utf-8")  # untouched

    code, stdout, _ = run_cli(["generate", str(spec)], capsys)
    assert code == 0
    assert "6 written" in stdout
    assert "Length: at most 2048" in (out / "messages.py").read_text(encoding="utf-8")
    assert run_cli(["generate", str(spec), "--check"], capsys)[0] == 0
    code, stdout, _ = run_cli(["generate", str(spec)], capsys)
    assert (code, "0 written" in stdout) == (0, True)


def test_check_names_missing_and_extra_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = copy_flagship(tmp_path)
    out = tmp_path / "src" / "jobs_contracts"
    generate(load_spec(spec))
    (out / "strategies.py").unlink()
    (out / "notes.txt").write_text("mine\n", encoding="utf-8")
    code, stdout, _ = run_cli(["generate", "-f", str(spec), "--check", "--format", "json"], capsys)
    assert code == 1
    data = json.loads(stdout)
    assert data["fresh"] is False
    assert [Path(p).name for p in data["missing"]] == ["strategies.py"]
    assert [Path(p).name for p in data["extra"]] == ["notes.txt"]
    assert data["stale"] == []
    assert not (out / "strategies.py").exists()  # --check writes nothing


def test_generate_json_and_out_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = copy_flagship(tmp_path)
    out = tmp_path / "elsewhere" / "contracts"
    code, stdout, _ = run_cli(
        ["generate", str(spec), "--out", str(out), "--format", "json"], capsys
    )
    assert code == 0
    data = json.loads(stdout)
    assert data["package"] == "jobs_contracts"
    assert sorted(Path(p).name for p in data["written"]) == FILES
    assert check_fresh(load_spec(spec), out).fresh
    assert not (tmp_path / "src").exists()


def test_spec_without_codegen_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = copy_flagship(tmp_path)
    text = spec.read_text(encoding="utf-8").replace(
        "codegen: {package: jobs_contracts, out: src/jobs_contracts}\n", ""
    )
    spec.write_text(text, encoding="utf-8")
    code, _, stderr = run_cli(["generate", str(spec)], capsys)
    assert code == 2
    assert "codegen:" in stderr
    assert "--out" in stderr
    # With --out, the folder names the package.
    code, _, _ = run_cli(["generate", str(spec), "--out", str(tmp_path / "my_contracts")], capsys)
    assert code == 0
    assert (tmp_path / "my_contracts" / "clients.py").is_file()
    code, _, stderr = run_cli(
        ["generate", str(spec), "--out", str(tmp_path / "not-a-name")], capsys
    )
    assert code == 2
    assert "identifier" in stderr


def test_a_spec_with_errors_generates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = copy_flagship(tmp_path)
    edit_schema(spec, "stop.json", '"type": "object"', '"type": "objekt"')
    code, _, stderr = run_cli(["generate", str(spec)], capsys)
    assert code == 1
    assert "stop.json" in stderr
    assert not (tmp_path / "src").exists()


def test_never_overwrites_or_removes_files_it_did_not_generate(tmp_path: Path) -> None:
    spec = copy_flagship(tmp_path)
    model = load_spec(spec)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "app.py").write_text("print('mine')\n", encoding="utf-8")
    with pytest.raises(Exception, match="did not generate"):
        generate(model, precious)
    assert sorted(p.name for p in precious.iterdir()) == ["app.py"]

    out = tmp_path / "pkg"
    generate(model, out)
    (out / "messages.py").write_text("# hand-written\n", encoding="utf-8")
    with pytest.raises(Exception, match="refusing to overwrite"):
        generate(model, out)
    (out / "messages.py").unlink()
    (out / "old_module.py").write_text(f"{MARKER} — do not edit\n", encoding="utf-8")
    (out / "README.md").write_text("mine\n", encoding="utf-8")
    report = generate(model, out)
    assert [p.name for p in report.removed] == ["old_module.py"]
    assert [p.name for p in report.foreign] == ["README.md"]
    assert [p.name for p in report.written] == ["messages.py"]


def test_package_without_services_or_consumers(tmp_path: Path) -> None:
    """The smallest spec: one message, nobody consumes; the package still imports and is clean."""
    spec = write_spec(
        tmp_path,
        """
        version: 1
        codegen: {package: tiny, out: tiny}
        exchanges: {e: {type: fanout}}
        queues: {q: {}}
        bindings: [{from: e, queue: q}]
        messages: {Ping: {schema: ping.json, exchange: e}}
        """,
        {"ping.json": {"type": "object", "properties": {"n": {"type": "integer"}}}},
    )
    generate(load_spec(spec))
    assert_passes_ruff_defaults(tmp_path / "tiny")
    assert ruff("check", "--ignore", "E501", tmp_path / "tiny").returncode == 0
    with imported(tmp_path, "tiny") as package:
        assert package.__all__ == ["CONTRACT", "ClientOptions", "Ping", "PingDelivery", "Received"]
        assert package.Ping.__required_keys__ == frozenset()


@pytest.mark.parametrize("name", ["Start", "StartSuccess", "Update", "Finished", "Stop"])
def test_flagship_strategies_make_valid_messages(name: str) -> None:
    """Each instance validates with jsonschema (format checker on) and the runtime's validator."""
    schema = contract_data(load_spec(FLAGSHIP))["messages"][name]["schema"]
    reference = Draft202012Validator(schema, format_checker=FormatChecker())
    runtime = jsonschema_rs.validator_for(schema, validate_formats=True)

    @settings(max_examples=60, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(strategies.STRATEGIES[name])
    def valid(message: dict[str, Any]) -> None:
        assert reference.is_valid(message), next(reference.iter_errors(message)).message
        assert runtime.is_valid(message), message
        json.dumps(message)

    valid()


def test_strategies_map_each_message_of_the_spec_by_its_name() -> None:
    """``STRATEGIES`` is keyed by the spec's message names, each its message function's."""
    assert sorted(strategies.STRATEGIES) == sorted(load_spec(FLAGSHIP).messages)
    assert repr(strategies.STRATEGIES["StartSuccess"]) == repr(strategies.start_success())


def test_the_package_and_its_clients_import_without_hypothesis() -> None:
    """hypothesis is an extra (``rabbitry[test]``): only ``strategies`` needs it, and says so
    by failing to import, alone."""
    code = "\n".join(
        [
            "import sys",
            "sys.modules['hypothesis'] = None  # as if it were not installed",
            "import jobs_contracts, jobs_contracts.clients, jobs_contracts.deliveries",
            "import rabbitry.pytest_plugin",
            "jobs_contracts.Server('amqp://guest:guest@localhost:5672/')",
            "try:",
            "    import jobs_contracts.strategies",
            "except ImportError as exc:",
            "    print(exc.name)",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=FLAGSHIP_PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hypothesis"


def test_templates_are_found_in_the_repository() -> None:
    """An editable install reads ``codegen/`` (the wheel ships it as ``rabbitry/_templates``)."""
    from rabbitry.codegen._render import TEMPLATES, _template_root  # noqa: PLC0415

    root = _template_root()
    assert all(root.joinpath(name).is_file() for name in TEMPLATES)
    assert sorted(p.name for p in (ROOT / "codegen").iterdir()) == sorted(TEMPLATES)


def test_publish_methods_follow_the_spec_order() -> None:
    text = render(load_spec(FLAGSHIP)).files["clients.py"]
    methods = [
        line.split("def ")[1].split("(")[0] for line in text.splitlines() if "def publish_" in line
    ]
    assert methods == [
        "publish_start",
        "publish_stop",
        "publish_start_success",
        "publish_update",
        "publish_finished",
    ]


ODD_SPEC = """
version: 1
codegen: {package: odd_contracts, out: odd_contracts}
exchanges:
  odd: {type: topic}
queues:
  odd.q: {exclusive: true}
bindings:
  - {from: odd, queue: odd.q, key: "{prefetch}.{queue}"}
messages:
  Odd: {schema: schemas/odd.json, exchange: odd, routing_key: "{prefetch}.{queue}"}
services:
  viewer:
    consumes: {odd.q: [Odd]}
"""
ODD_SCHEMA = {
    "type": "object",
    "properties": {"prefetch": {"type": "string"}, "queue": {"type": "string"}},
    "required": ["prefetch", "queue"],
}


def test_binding_params_named_like_the_runtime_s_own_arguments_still_call_through(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, ODD_SPEC, {"schemas/odd.json": ODD_SCHEMA})
    generate(load_spec(spec), tmp_path / "odd_contracts")
    clients = (tmp_path / "odd_contracts" / "clients.py").read_text()
    assert '{"prefetch": prefetch2, "queue": queue}' in clients
    with imported(tmp_path, "odd_contracts") as package:
        viewer = package.Viewer("amqp://guest:guest@localhost:5672/")
        params = {"prefetch2": "a", "queue": "b"}
        # The arguments bind (no TypeError); the client is not open yet, which is what it says.
        with pytest.raises(InvalidState, match="not open"):
            viewer.subscribe_odd_q(**params, prefetch=3)
