"""Python source for values taken from the spec: string literals, data, docstrings, comments.

Nothing from a spec reaches the output except through these functions, and
each one is injection-proof by construction:

- string literals escape everything outside printable ASCII, backslashes and
  the enclosing quote, so a literal is one token whatever the text holds
  (and its width is its length);
- docstrings escape backslashes, every ``"`` and everything that is not
  printable, so a description can neither close the docstring nor hold an
  invalid escape; a comment keeps to one line the same way.

The output is already in ``ruff format``'s style: double quotes unless that
needs more escapes than single quotes, lower-case hex escapes, exponents
without ``+``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = [
    "LINE_LENGTH",
    "comment_text",
    "data_lines",
    "docstring",
    "py_number",
    "py_str",
    "py_value",
    "width",
]

#: The width generated code is formatted for: ruff's default ``line-length``, so that the
#: package passes ``ruff format --check`` in a project on ruff's defaults.  A line no layout
#: can shorten (a long description or name of the spec) stays long and carries no noqa
#: comment for E501: E501 is not among ruff's default rules, and there such a comment is
#: itself a finding (RUF100, an unused noqa).
LINE_LENGTH = 88


def width(text: str) -> int:
    """An upper bound of the width ruff measures: wide (and ambiguous) characters count 2."""
    if text.isascii():
        return len(text)
    return sum(1 if ch.isascii() else 2 for ch in text)


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if ch == "\\":
        return "\\\\"
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    if ch == "\t":
        return "\\t"
    if 0x20 <= code < 0x7F:
        return ch
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def py_str(text: str) -> str:
    """A string literal for ``text``, ASCII only, quoted as ruff would quote it."""
    quote = "'" if text.count('"') > text.count("'") else '"'
    if _PLAIN.fullmatch(text):  # printable ASCII with no quote or backslash: as it is
        return quote + text + quote
    body = "".join("\\" + ch if ch == quote else _escape_char(ch) for ch in text)
    return quote + body + quote


#: Text a literal holds unchanged (most names, keys and descriptions): the per-character
#: escaping above was a third of ``generate`` on a large spec.
_PLAIN = re.compile(r"[ !#-&(-\[\]-~]*")


def py_number(value: int | float) -> str:
    """An int or float literal (``float("inf")`` for what JSON parsers let through)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return 'float("nan")'
    if math.isinf(value):
        return 'float("inf")' if value > 0 else 'float("-inf")'
    return repr(value).replace("e+", "e")


def py_value(value: Any) -> str:
    """A flat literal for a JSON scalar (or a short container)."""
    if value is None:
        return "None"
    if isinstance(value, str):
        return py_str(value)
    if isinstance(value, bool | int | float):
        return py_number(value)
    if isinstance(value, list):
        return "[" + ", ".join(py_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_str(str(k))}: {py_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not JSON data: {type(value).__name__}")


def data_lines(value: Any, indent: int, prefix: str = "", suffix: str = "") -> Iterator[str]:
    """JSON data as Python source lines: every non-empty container exploded, trailing commas.

    A trailing comma makes ruff keep a container exploded whatever its length,
    so the layout needs no width decisions at all.
    """
    pad = " " * indent
    if isinstance(value, dict) and value:
        yield f"{pad}{prefix}{{"
        for key, item in value.items():
            yield from data_lines(item, indent + 4, f"{py_str(str(key))}: ", ",")
        yield f"{pad}}}{suffix}"
    elif isinstance(value, list) and value:
        yield f"{pad}{prefix}["
        for item in value:
            yield from data_lines(item, indent + 4, "", ",")
        yield f"{pad}]{suffix}"
    else:
        yield f"{pad}{prefix}{py_value(value)}{suffix}"


# -- docstrings and comments ---------------------------------------------------------


def _doc_units(word: str) -> list[str]:
    """The escaped pieces of one word; a line may break between pieces, never inside one."""
    units = []
    for ch in word:
        if ch == "\\":
            units.append("\\\\")
        elif ch == '"':
            units.append('\\"')
        elif ch.isprintable():
            units.append(ch)
        else:
            units.append(_escape_char(ch))
    return units


def _clean_words(text: str) -> list[str]:
    # NUL and the other controls are not whitespace to str.split: they are escaped later.
    return text.split()


def _wrap(paragraph: str, first: int, rest: int) -> list[str]:
    """Greedy wrap of escaped words: the first line gets ``first`` columns, the others ``rest``."""
    lines: list[str] = []
    line = ""
    limit = first
    for word in _clean_words(paragraph):
        units = _doc_units(word)
        text = "".join(units)
        candidate = f"{line} {text}" if line else text
        if width(candidate) <= limit:
            line = candidate
            continue
        if line:
            lines.append(line)
            limit = rest
            line = ""
        # Too long for a line of its own: cut between escape units.
        for unit in units:
            if line and width(line + unit) > limit:
                lines.append(line)
                limit = rest
                line = ""
            line += unit
    if line:
        lines.append(line)
    return lines


def docstring(paragraphs: Sequence[str], indent: int) -> str:
    """A docstring at ``indent`` (its first line unindented: the template places it).

    Empty paragraphs are dropped; an empty docstring is ``""`` (the caller
    leaves it out).
    """
    texts = [p for p in paragraphs if _clean_words(p)]
    if not texts:
        return ""
    pad = " " * indent
    avail = LINE_LENGTH - indent
    if len(texts) == 1:
        single = _wrap(texts[0], avail - 6, avail - 6)
        if len(single) == 1:
            return f'"""{single[0]}"""'
    out: list[str] = []
    for i, text in enumerate(texts):
        if i:
            out.append("")
        # One paragraph that did not fit on one line with its quotes is wrapped as narrow,
        # so that it takes two lines: ruff puts the closing quotes of ONE line of text back
        # on that line (a random spec's strategy docstring of 79-81 characters showed it).
        first = avail - 6 if len(texts) == 1 else avail - 3
        out.extend(_wrap(text, first if i == 0 else avail, avail))
    body = "\n".join(f"{pad}{line}" if (n and line) else line for n, line in enumerate(out))
    return f'"""{body}\n{pad}"""'


def comment_text(text: str) -> str:
    """``text`` fit for one comment line: whitespace collapsed, nothing unprintable left."""
    return " ".join(
        "".join(ch if ch.isprintable() else _escape_char(ch) for ch in word)
        for word in _clean_words(text)
    )
