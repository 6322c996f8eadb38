"""rabbitry's public API: what ``__all__`` promises, what importing it costs, and that the
packages ``rabbitry generate`` writes need nothing else of rabbitry's."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import rabbitry
import rabbitry.errors
from rabbitry.check import load_spec
from rabbitry.codegen import generate
from specs import FLAGSHIP
from test_codegen_support import FLAGSHIP_PACKAGE, SRC, foreign_imports

#: What ``import rabbitry`` must not pull in: the runtime's and the generator's libraries.
HEAVY = ("aiormq", "pamqp", "httpx", "jsonschema_rs", "jinja2", "hypothesis", "click")


def _python(code: str, cwd: Path = SRC) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (nothing imported yet), from ``cwd``."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _error_classes() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(rabbitry.errors).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == rabbitry.errors.__name__
    }


def test_all_is_sorted_and_unique() -> None:
    assert rabbitry.__all__ == sorted(set(rabbitry.__all__))


def test_every_name_of_all_resolves_in_a_fresh_interpreter() -> None:
    done = _python(
        "import rabbitry\n"
        "missing = [n for n in rabbitry.__all__ if getattr(rabbitry, n, None) is None]\n"
        "assert not missing, missing\n"
        "assert sorted(n for n in dir(rabbitry) if n in rabbitry.__all__) == rabbitry.__all__\n"
    )
    assert done.returncode == 0, done.stderr


def test_the_whole_error_tree_is_exported() -> None:
    classes = _error_classes()
    assert {"RabbitryError", "SpecError", "BrokerError", "PublishTimeout"} <= set(classes)
    assert set(classes) <= set(rabbitry.__all__)
    for name, cls in classes.items():
        assert getattr(rabbitry, name) is cls
        assert issubclass(cls, rabbitry.RabbitryError)


def test_the_names_are_rabbitry_s_own_objects() -> None:
    from rabbitry.broker import converge  # noqa: PLC0415
    from rabbitry.messaging import client, contract  # noqa: PLC0415
    from rabbitry.routing import route  # noqa: PLC0415

    assert rabbitry.Client is client.Client
    assert rabbitry.Contract is contract.Contract
    assert rabbitry.apply is converge.apply
    assert rabbitry.plan is converge.plan
    assert rabbitry.route is route
    assert rabbitry.load_spec is load_spec


def test_check_is_the_function_whatever_was_imported_first() -> None:
    """``rabbitry.check`` is also a module's name: the function must win, imported in either
    order (the import system binds a submodule on its package when it first loads it)."""
    for first in ("import rabbitry.check", "from rabbitry.check import Report", "pass"):
        done = _python(
            f"{first}\n"
            "import types, rabbitry\n"
            "from rabbitry import check\n"
            "assert not isinstance(rabbitry.check, types.ModuleType), rabbitry.check\n"
            "assert check is rabbitry.check and callable(check)\n"
        )
        assert done.returncode == 0, (first, done.stderr)


def test_importing_rabbitry_leaves_the_runtime_libraries_unimported() -> None:
    """The client, the broker layer and the generator are imported on first use of a name."""
    done = _python(
        "import sys, rabbitry\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
        "rabbitry.Client\n"
        "print('aiormq' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr
    loaded, client_loaded_aiormq = done.stdout.splitlines()
    assert loaded == ""
    assert client_loaded_aiormq == "True"


def test_an_unknown_name_is_an_attribute_error() -> None:
    assert not hasattr(rabbitry, "Clinet")
    assert "Client" in dir(rabbitry)


def _rabbitry_names(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "rabbitry":
                names |= {alias.name for alias in node.names}
    return names


def test_the_flagship_package_imports_only_the_public_api() -> None:
    assert foreign_imports(FLAGSHIP_PACKAGE) == []
    used = _rabbitry_names(FLAGSHIP_PACKAGE)
    assert {"Client", "ClientOptions", "Contract", "Subscription"} <= used
    assert used <= set(rabbitry.__all__)


def test_a_generated_package_imports_only_the_public_api(tmp_path: Path) -> None:
    """Generated afresh, into a folder of its own (a consumer-only service, a publisher, a
    run-time queue: every kind of client the flagship has)."""
    out = tmp_path / "contracts"
    generate(load_spec(FLAGSHIP), out)
    assert foreign_imports(out) == []
    assert _rabbitry_names(out) <= set(rabbitry.__all__)
