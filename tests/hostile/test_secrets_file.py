"""Issue 14, item 11 (password file): the password from a file, as container secrets give it.

``password_file=PATH`` in the URL's query, or ``$RABBITRY_PASSWORD_FILE`` for a
URL without a password.  One trailing newline is stripped (``echo`` writes
one); what is not a regular file (a FIFO would hang the read, ``/dev/zero``
never ends), a file over 4 KiB, an empty or non-UTF-8 file are refused, and
a file others may read gives a warning.  The file's content never appears.
Before: ``password_file`` was an unknown option, and the password could only
be in the URL or ``$RABBITRY_URL``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import tracemalloc
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import Vhost
from rabbitry.broker.url import parse_url
from rabbitry.errors import InvalidArgument
from specs import run_cli, write_spec

SECRET = "fi1e-S3CRET:@/#?é"
#: Reading a password file takes well under a millisecond; a FIFO or /dev/zero must not hang.
READ_BOUND = 2.0
#: Refusing one allocates a few KB here (/dev/zero: 2.8 KB; at most 4 KiB is read).
MEMORY_BOUND = 1_000_000


def _secret_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "password"
    path.write_bytes(text.encode())
    path.chmod(mode)
    return path


@settings(max_examples=100, deadline=None)
@given(tail=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",))))
def test_the_password_is_the_files_text_one_newline_stripped(
    tmp_path_factory: pytest.TempPathFactory, tail: str
) -> None:
    folder = tmp_path_factory.mktemp("secret")
    password = f"S3CRET{tail}"
    if password.endswith("\r"):
        return  # "\r\n" is one newline too: a password cannot end in "\r" in a file
    path = _secret_file(folder, password + "\n")
    url = parse_url(f"amqp://admin@host/vh?password_file={quote(str(path))}")
    assert url.password == password
    assert "***" in url.masked
    assert "S3CRET" not in url.masked + repr(url) + str(url)


def test_the_environment_names_the_file_for_a_url_without_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _secret_file(tmp_path, SECRET + "\r\n")
    monkeypatch.setenv("RABBITRY_PASSWORD_FILE", str(path))
    assert parse_url("amqp://admin@host/").password == SECRET
    assert parse_url("amqp://admin:given@host/").password == "given"  # the URL's own wins
    with pytest.raises(InvalidArgument, match="password and password_file= both"):
        parse_url(f"amqp://admin:given@host/?password_file={path}")


def test_a_file_others_may_read_is_taken_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _secret_file(tmp_path, SECRET, mode=0o644)
    with caplog.at_level(logging.WARNING, logger="rabbitry"):
        assert parse_url(f"amqp://admin@host/?password_file={path}").password == SECRET
    assert "may be read by every user" in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder", "large", "empty", "binary", "none"])
def test_what_is_not_a_password_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "password"
    writer = None
    if kind == "fifo":
        os.mkfifo(path)
        # A writer that never writes: a blocking read would wait for ever.
        writer = threading.Thread(target=lambda: time.sleep(READ_BOUND * 2), daemon=True)
        writer.start()
    elif kind == "dev-zero":
        path = Path("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    elif kind == "large":
        path.write_text(SECRET * 1000)
    elif kind == "empty":
        path.write_text("\n")
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe" + SECRET.encode())
    started = time.monotonic()
    tracemalloc.start()
    try:
        with pytest.raises(InvalidArgument) as refused:
            parse_url(f"amqp://admin@host/?password_file={path}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < READ_BOUND
    assert peak < MEMORY_BOUND  # /dev/zero: 4 KiB read, not the whole device
    assert "password_file" in str(refused.value)
    assert "S3CRET" not in str(refused.value)


def test_apply_logs_in_with_the_files_password(
    vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, "version: 1\nqueues:\n  q: {}\n")
    path = _secret_file(tmp_path, "guest\n")
    url = f"amqp://guest@localhost/{quote(vhost.name, safe='')}?password_file={path}"
    code, out, err = run_cli(["apply", "-f", str(spec), "--url", url], capsys)
    assert code == 0, err
    assert "q" in vhost.queue_names()
    path.write_text(f"wrong-{SECRET}\n")
    code, out, err = run_cli(["plan", "-f", str(spec), "--url", url], capsys)
    assert code == 1
    assert "refused the login" in err or "refused" in err
    assert "S3CRET" not in out + err
