"""Helpers for the code generation tests (no tests here): generate, import, type-check, lint.

mypy runs in-process (``mypy.api``) with a cache shared by the session;
ruff runs as the dev tool it is (the executable next to this Python).
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from mypy import api as mypy_api

from rabbitry.check import load_spec
from rabbitry.codegen import generate

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
FLAGSHIP_PACKAGE = SRC / "jobs_contracts"
PYPROJECT = ROOT / "pyproject.toml"
RUFF = Path(sys.executable).with_name("ruff")

# mypy raises the recursion limit when it runs; raise it once, before hypothesis notices.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 2**14))

_MYPY_ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")


def generate_package(spec: Path, out: Path) -> Path:
    """Load ``spec`` (it must be free of errors) and generate its package into ``out``."""
    generate(load_spec(spec), out)
    return out


def mypy_errors(
    files: Sequence[Path], *, search: Sequence[Path], cache: Path
) -> list[tuple[str, int, str]]:
    """``mypy --strict`` over ``files`` (packages and snippets): each error as (file name, line,
    message).  Modules found on ``search`` but not listed are followed silently."""
    cache.mkdir(parents=True, exist_ok=True)
    config = Path(tempfile.mkdtemp(prefix="mypy-config-")) / "mypy.ini"
    config.write_text(
        "\n".join(
            [
                "[mypy]",
                "strict = True",
                "python_version = 3.11",
                "follow_imports = silent",
                "warn_unused_configs = False",
                f"mypy_path = {':'.join(str(p) for p in search)}",
                f"cache_dir = {cache}",
                "[mypy-jsonschema_rs.*,aiormq.*,pamqp.*]",
                "ignore_missing_imports = True",
                "",
            ]
        ),
        encoding="utf-8",
    )
    stdout, stderr, status = mypy_api.run(["--config-file", str(config), *map(str, files)])
    assert status in (0, 1), f"mypy crashed ({status}):\n{stdout}\n{stderr}"
    errors = []
    for line in stdout.splitlines():
        found = _MYPY_ERROR.match(line)
        if found:
            errors.append((Path(found["file"]).name, int(found["line"]), found["message"]))
    assert status == (1 if errors else 0), stdout
    return errors


def ruff(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The ruff dev tool with the project's configuration."""
    return subprocess.run(
        [str(RUFF), *map(str, args), "--config", str(PYPROJECT)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ruff_defaults(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """ruff as a project on its defaults runs it: ``--isolated`` (no configuration file is
    read: line length 88, the default rules), from a folder with no configuration."""
    return subprocess.run(
        [str(RUFF), *map(str, args), "--isolated"],
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_passes_ruff_defaults(folder: Path) -> None:
    """What the README promises of a generated package: ``ruff format --check --isolated``
    and ``ruff check --isolated`` find nothing."""
    formatted = ruff_defaults("format", "--check", "--diff", folder)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    linted = ruff_defaults("check", folder)
    assert linted.returncode == 0, linted.stdout + linted.stderr


#: What a module of a generated package may import: the standard library, rabbitry's public
#: API (the top-level package only), its own package (relative imports), and hypothesis in
#: ``strategies`` alone.
STDLIB = frozenset(sys.stdlib_module_names)


def foreign_imports(folder: Path) -> list[tuple[str, str]]:
    """``(file, module)`` for each import of a generated package outside what it may import."""
    found = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level > 0:
                    continue  # the package's own modules
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                top = module.partition(".")[0]
                allowed = (
                    module == "rabbitry"
                    or (top in STDLIB and top != "rabbitry")
                    or (module == "hypothesis" and path.name == "strategies.py")
                )
                if not allowed:
                    found.append((path.name, module))
    return found


@contextmanager
def imported(folder: Path, package: str) -> Iterator[ModuleType]:
    """``package`` imported from ``folder``; forgotten again afterwards."""
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(package)
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
            del sys.modules[name]
