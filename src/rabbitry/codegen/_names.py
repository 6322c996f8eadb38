"""Identifiers from spec names: deterministic conversion, collisions resolved in a fixed order.

Names in a spec (messages, queues, services, JSON property names used for
derived type names) may be any text.  Identifiers made from them are ASCII
only (NFKD, then anything else dropped), so two different names can never meet
after Python's NFKC normalisation of identifiers, and every line's width is its
length.  A ``Namer`` hands out each identifier once, in the order it is asked:
the generator asks in sorted spec order, so the same spec gives the same names.
"""

from __future__ import annotations

import builtins
import keyword
import re
import unicodedata
from collections.abc import Iterable

__all__ = ["MAX_LENGTH", "Namer", "pascal", "snake"]

#: Longer names are cut: every generated line stays within the formatter's width.
MAX_LENGTH = 40

_WORD = re.compile(r"[A-Za-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")

#: Never produced: keywords, soft keywords and builtins (a message called ``str``
#: must not shadow the type its fields use), and the names pycodestyle calls ambiguous.
RESERVED = (
    frozenset(keyword.kwlist)
    | frozenset(keyword.softkwlist)
    | frozenset(dir(builtins))
    | frozenset({"l", "O", "I"})
)


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def pascal(text: str, *, fallback: str = "Type") -> str:
    """``job-status`` → ``JobStatus``, ``START_SUCCESS`` → ``StartSuccess``, ``jobId`` → ``JobId``.

    ASCII only; a leading digit gets the fallback's initial; cut at ``MAX_LENGTH``.
    """
    words = _WORD.findall(_ascii(text))
    name = "".join(
        w.capitalize() if w.isupper() and len(w) > 1 else w[0].upper() + w[1:] for w in words
    )
    if not name:
        name = fallback
    if name[0].isdigit():
        name = fallback[0] + name
    return name[:MAX_LENGTH]


def snake(text: str, *, fallback: str = "value") -> str:
    """``StartSuccess`` → ``start_success``, ``jobs.ready`` → ``jobs_ready``."""
    words = _WORD.findall(_CAMEL.sub(" ", _ascii(text)))
    name = "_".join(w.lower() for w in words) or fallback
    if name[0].isdigit():
        name = f"{fallback[0]}_{name}"
    return name[:MAX_LENGTH]


class Namer:
    """Hands out unique identifiers: a taken or reserved name gets ``_``, then 2, 3, ..."""

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self._taken = set(RESERVED) | set(reserved)

    def __contains__(self, name: str) -> bool:
        return name in self._taken

    def take(self, candidate: str) -> str:
        """``candidate`` (cut at ``MAX_LENGTH``), or the first free variant; the result is taken."""
        base = candidate[:MAX_LENGTH]
        if base in RESERVED or keyword.iskeyword(base):
            base += "_"
        name, n = base, 1
        while name in self._taken:
            n += 1
            name = f"{base}{n}"
        self._taken.add(name)
        return name
