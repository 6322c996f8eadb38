"""Item 8: ``generate`` writes only its own files, whatever was planted in the output folder.

It used to write each file through ``.<name>.tmp`` in the output folder: a
symbolic link planted at that name made it overwrite the link's target (any
file the user may write).  Measured on the code before the fix: all six
victims were overwritten with generated code.  Now each file is written
through a temporary file with a fresh random name, created exclusively (never
through a link), then renamed over the target: a planted link is left alone.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rabbitry.codegen import MARKER
from specs import write_spec

SPEC = """\
version: 1
codegen: {package: contracts, out: out}
exchanges:
  ex: {type: topic}
queues:
  q: {}
bindings:
  - {from: ex, queue: q, key: "#"}
messages:
  M:
    schema: s.json
    exchange: ex
    routing_key: KEY
"""
SCHEMA = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}
PRECIOUS = "precious: not generated\n"


def generate(folder: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rabbitry", "generate"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def generated_once(tmp: Path, key: str = "k1") -> Path:
    write_spec(tmp, SPEC.replace("KEY", key), {"s.json": SCHEMA})
    done = generate(tmp)
    assert done.returncode == 0, done.stderr
    return tmp / "out"


def test_a_link_planted_at_the_old_temporary_name_is_not_written_through(tmp_path: Path) -> None:
    out = generated_once(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text(PRECIOUS)
    names = sorted(p.name for p in out.glob("*.py"))
    for name in names:
        (out / f".{name}.tmp").symlink_to(victim)
    write_spec(tmp_path, SPEC.replace("KEY", "k2"), {"s.json": SCHEMA})  # every file changes
    done = generate(tmp_path)
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == PRECIOUS
    for name in names:
        assert (out / f".{name}.tmp").is_symlink()  # left alone, reported as not ours
        assert (out / name).read_text().startswith(MARKER)
        assert not (out / name).is_symlink()


def test_a_link_at_a_generated_file_is_replaced_not_followed(tmp_path: Path) -> None:
    """A generated file swapped for a link to a victim: the link is replaced by the file."""
    out = generated_once(tmp_path)
    victim = tmp_path / "victim.py"
    victim.write_text(MARKER + "\n# the victim\n")  # looks generated, so it may be replaced
    (out / "messages.py").unlink()
    (out / "messages.py").symlink_to(victim)
    write_spec(tmp_path, SPEC.replace("KEY", "k2"), {"s.json": SCHEMA})
    done = generate(tmp_path)
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == MARKER + "\n# the victim\n"
    assert not (out / "messages.py").is_symlink()


@pytest.mark.parametrize("name", ["__init__.py", "messages.py"])
def test_a_fifo_planted_in_the_output_folder_does_not_hang_generate(
    tmp_path: Path, name: str
) -> None:
    """A FIFO in place of a generated file: reading it to see whether it is ours waited for a
    writer for ever.  Now it is not a regular file, so not ours: refused at once."""
    out = generated_once(tmp_path)
    (out / name).unlink()
    os.mkfifo(out / name)
    started = time.monotonic()
    try:
        done = generate(tmp_path, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("generate waited on the FIFO for a minute")
    assert done.returncode == 1, done.stderr
    assert "did not generate" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 30
    assert stat.S_ISFIFO((out / name).lstat().st_mode)  # left alone


def test_written_files_keep_the_usual_permissions(tmp_path: Path) -> None:
    """``mkstemp`` creates files 0600: the generated package stays readable as before."""
    out = generated_once(tmp_path)
    umask = os.umask(0o022)
    os.umask(umask)
    for path in out.glob("*.py"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert not list(out.glob(".*.tmp"))  # no temporary file is left behind


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    planted=st.lists(
        st.sampled_from(["__init__.py", "messages.py", "clients.py", "strategies.py"]),
        min_size=1,
        max_size=4,
        unique=True,
    ),
    kind=st.sampled_from(["link", "fifo", "file"]),
)
def test_whatever_is_planted_at_temporary_names_no_victim_changes(
    tmp_path: Path, planted: list[str], kind: str
) -> None:
    """Links, FIFOs or files at ``.<name>.tmp`` and at guessable variants of it."""
    folder = tmp_path / f"{kind}-{'-'.join(planted)}"
    folder.mkdir()
    out = generated_once(folder)
    victim = folder / "victim.txt"
    victim.write_text(PRECIOUS)
    for name in planted:
        for temporary in (f".{name}.tmp", f"{name}.tmp", f".{name}.new"):
            path = out / temporary
            if kind == "link":
                path.symlink_to(victim)
            elif kind == "fifo":
                os.mkfifo(path)
            else:
                path.write_text(PRECIOUS)
    write_spec(folder, SPEC.replace("KEY", "k2"), {"s.json": SCHEMA})
    done = generate(folder)
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == PRECIOUS
    for name in planted:
        assert (out / name).read_text().startswith(MARKER)


@pytest.mark.parametrize("target", ["elsewhere"])
def test_an_output_folder_that_is_a_link_is_followed(tmp_path: Path, target: str) -> None:
    """Decided: the folder the user names may be a link (a shared checkout, say); rabbitry
    follows it, and still writes only into an empty folder or its own package there."""
    real = tmp_path / target
    real.mkdir()
    write_spec(tmp_path, SPEC.replace("KEY", "k1"), {"s.json": SCHEMA})
    (tmp_path / "out").symlink_to(real)
    done = generate(tmp_path)
    assert done.returncode == 0, done.stderr
    assert (real / "messages.py").read_text().startswith(MARKER)
    (real / "mine.txt").write_text(PRECIOUS)
    (real / "__init__.py").write_text("# not generated\n")
    done = generate(tmp_path)
    assert done.returncode == 1
    assert (real / "__init__.py").read_text() == "# not generated\n"
