"""Reading a file the user names, with a bound: regular files only, at most ``MAX_FILE_BYTES``.

A spec names its schema files, a schema names the files it ``$ref``s, and
``check --against`` reads an old spec: any of them may be ``/dev/zero`` (read
for ever, into all memory), a FIFO (``open`` waits for a writer for ever) or a
folder.  The file is opened without waiting (``O_NONBLOCK``: opening a FIFO
returns at once), checked with ``fstat`` on that same descriptor (so it cannot
be swapped between the check and the read), refused unless it is a regular
file, and read to at most one byte past the limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["MAX_FILE_BYTES", "REFUSED_HINT", "FileRefused", "read_bounded", "read_text_bounded"]

#: The largest spec or schema file rabbitry reads (16 MiB): hand-written text is far smaller,
#: and a bound keeps a hostile file from taking all memory.
MAX_FILE_BYTES = 16 * 1024 * 1024

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


class FileRefused(OSError):
    """The path names something rabbitry does not read: not a regular file, or too large.

    ``reason`` completes a sentence about the file: ``"is a FIFO (named pipe), ..."``.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} {reason}")
        self.reason = reason


#: What to do about a refused file.
REFUSED_HINT = f"name a regular file of at most {MAX_FILE_BYTES // (1024 * 1024)} MiB"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _mib(limit: int) -> str:
    return f"{limit / (1024 * 1024):g} MiB"


def read_bounded(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file at ``path``; ``FileRefused`` for anything else.

    Raises ``FileNotFoundError`` and other ``OSError``s as ``open`` does.
    """
    fd = os.open(path, _FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileRefused(path, f"is {_kind(mode)}, not a regular file")
        if os.fstat(fd).st_size > limit:
            raise FileRefused(path, f"is larger than {_mib(limit)}")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # it grew while being read
            raise FileRefused(path, f"is larger than {_mib(limit)}")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text_bounded(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """``read_bounded`` decoded as UTF-8 with universal newlines, as ``Path.read_text`` reads.

    ``UnicodeDecodeError`` when it is not UTF-8.
    """
    text = read_bounded(path, limit).decode("utf-8")
    return text.replace("\r\n", "\n").replace("\r", "\n")
