"""The old spec from git: ``git:REF[:PATH]``, with the schema files it had at that commit.

``PATH`` is relative to the repository's top folder and defaults to the new
spec's own path there.  The spec file is copied out of ``REF`` into a
temporary folder at the same relative place, then every file the loader
finds missing (schemas, files they ``$ref``) is fetched from ``REF`` the same
way, until nothing more is missing.  ``REF`` is anything ``git rev-parse``
takes; a branch that exists only as ``origin/REF`` (a CI checkout) is found
there too.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rabbitry.errors import InvalidArgument
from rabbitry.spec import read
from rabbitry.spec._files import MAX_FILE_BYTES

__all__ = ["GitSource", "materialise", "parse_git"]

PREFIX = "git:"
_MAX_ROUNDS = 64


@dataclass(frozen=True)
class GitSource:
    ref: str
    #: Relative to the repository's top folder; ``None``: the new spec's own path.
    path: str | None


def parse_git(text: str) -> GitSource | None:
    """``git:REF[:PATH]`` read, or ``None`` when ``text`` is not a git source."""
    if not text.startswith(PREFIX):
        return None
    ref, _, path = text[len(PREFIX) :].partition(":")
    if not ref:
        raise InvalidArgument(f"{text!r}: name a commit, e.g. git:main or git:HEAD~1:topology.yaml")
    return GitSource(ref, path or None)


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, check=False, timeout=60
        )
    except FileNotFoundError:
        raise InvalidArgument("a git:REF source needs git, which is not installed") from None


def _toplevel(folder: Path) -> Path:
    done = _git(folder, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        raise InvalidArgument(
            f"{folder} is not inside a git repository, so git:REF has nothing to read; "
            "pass the old spec as a file instead"
        )
    return Path(done.stdout.decode().strip())


def _commit(top: Path, ref: str) -> str:
    for candidate in (ref, f"origin/{ref}"):
        done = _git(top, "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}")
        if done.returncode == 0:
            return done.stdout.decode().strip()
    raise InvalidArgument(
        f"git has no commit {ref!r} here (nor origin/{ref}); fetch it first "
        "(in CI: actions/checkout with fetch-depth: 0)"
    )


def show(top: Path, commit: str, path: str) -> bytes | None:
    """The file ``path`` (relative to the top folder) at ``commit``, or ``None``.

    Its size is asked first: a blob over ``MAX_FILE_BYTES`` is refused unread.
    """
    size = _git(top, "cat-file", "-s", f"{commit}:{path}")
    if size.returncode != 0:
        return None
    if int(size.stdout.decode().strip() or 0) > MAX_FILE_BYTES:
        raise InvalidArgument(
            f"git:{commit[:12]}:{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, "
            "more than a spec or schema file may be"
        )
    done = _git(top, "show", f"{commit}:{path}")
    return done.stdout if done.returncode == 0 else None


@dataclass(frozen=True)
class Materialised:
    """The old spec copied out of git into ``folder``, at ``spec`` (inside it)."""

    folder: tempfile.TemporaryDirectory[str]
    spec: Path
    commit: str
    display: str


def materialise(source: GitSource, new_spec: Path) -> Materialised:
    """Copy the spec at ``source`` and every file it needs into a temporary folder.

    Raises ``InvalidArgument`` when the repository, the commit or the file is not there.
    """
    start = new_spec.resolve().parent if new_spec.exists() else Path.cwd()
    top = _toplevel(start).resolve()
    commit = _commit(top, source.ref)
    if source.path is None:
        try:
            relative = PurePosixPath(new_spec.resolve().relative_to(top).as_posix())
        except ValueError:
            raise InvalidArgument(
                f"{new_spec} is not inside the git repository at {top}: "
                "say which file to read, git:REF:PATH"
            ) from None
    else:
        relative = PurePosixPath(source.path.lstrip("/"))
    display = f"git:{source.ref}:{relative}"
    text = show(top, commit, str(relative))
    if text is None:
        raise InvalidArgument(
            f"{display}: no such file at {commit[:12]}; name it with git:REF:PATH"
        )
    folder = tempfile.TemporaryDirectory(prefix="rabbitry-against-")
    root = Path(folder.name).resolve()
    spec_path = root / relative
    _write(spec_path, text)
    fetched: set[Path] = set()
    for _ in range(_MAX_ROUNDS):
        spec, _problems = read(spec_path)
        store = spec.schemas if spec is not None else None
        wanted = sorted(store.missing - fetched) if store is not None else []
        if not wanted:
            break
        for missing in wanted:
            fetched.add(missing)
            try:
                inside = missing.resolve().relative_to(root)
            except ValueError:
                continue  # outside the repository: stays missing (reported by the loader)
            data = show(top, commit, inside.as_posix())
            if data is not None:
                _write(missing, data)
    return Materialised(folder, spec_path, commit, display)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
