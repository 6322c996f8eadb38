"""Text that came from the wire, made safe for a log line or a terminal: ``shown``.

A publisher chooses a message's body (its property names and values, which
become the JSON Pointers and texts of its faults), its ``type``,
``message_id``, routing key and headers (``x-death`` and ``x-rabbitry-*``
can be forged).  Written raw, a newline in any of them forges a log line,
a carriage return or an ANSI escape rewrites what a terminal shows, a line
separator or a bidi override reorders it.  So every such text goes through
``shown`` where it is put into a sentence (a log message, a ``Fault``, a
refusal, a line of ``rabbitry tail``): once, at the point it enters, so that
a sentence made of shown parts is safe as a whole.  A sentence that is
itself untrusted (an exception's message, a reason read back from a header)
is shown as a sentence (``sentence=True``), which leaves a safe one as it is.

What is escaped: every character ``str.isprintable`` refuses -- the C0 and
C1 controls (newline, carriage return, ESC, DEL, NEL), the line and
paragraph separators, the format characters (bidi overrides and isolates,
zero-width joiners, the byte-order mark), lone surrogates (bytes that were
not UTF-8), unassigned code points -- as ``\\xNN``, ``\\uNNNN`` or
``\\UNNNNNNNN`` (lowercase, the shortest that holds it); and U+2026 (…),
which marks a cut and nothing else.  Backslashes are left alone, except a
run of them before what reads as such an escape (the text ``\\x1b``, or an
escaped character): that run is doubled, so that distinct texts stay
distinct (tests/hostile/test_logs.py undoes the escaping to prove it), while
JSON's ``\\u00e9`` and a repr's ``\\n`` are shown as they are.  A sentence
(``sentence=True``: a reason, an exception's message) that holds nothing
unsafe is kept as it is: it was made of reprs and shown parts already.

The length is bounded: past ``limit`` characters of rendering the text is
cut at a whole character or escape and ends with ``…(N characters)``, N
being the original length, so that a 4 MB property name costs a log line
of a few hundred characters and the time to render ``limit`` characters.

Structured data keeps the raw value: a log record's ``extra`` fields
(``message_id``, ``message_type``, ``routing_key``, ...) are data for a
formatter that encodes them (JSON escapes every control character), and
``rabbitry tail --format json`` writes the headers, body and reasons whole,
JSON-encoded.  Only text meant to be read as text is escaped.
"""

from __future__ import annotations

__all__ = ["LIMIT", "shown"]

#: Longest rendering kept, in characters (the cut's note comes on top).
LIMIT = 500
_CUT = "\u2026"


def shown(value: object, *, limit: int = LIMIT, quote: bool = False, sentence: bool = False) -> str:
    """``value`` as text that holds no control character and at most ``limit`` characters
    of rendering (then ``…(N characters)``).

    ``bytes`` are read as UTF-8, a byte that is not shown as its lone surrogate
    (``\\udcff``); anything else is ``str(value)``.  ``quote``: in single quotes, a
    quote inside escaped as ``\\x27`` (for a name among other words).

    ``sentence``: the text is a sentence rather than a value (a fault's reason, an
    exception's message, a reason read back from ``x-rabbitry-error``), and such a
    sentence shows values by their repr or through ``shown`` already.  When it holds
    nothing unsafe it is kept as it is, only cut to ``limit``: its backslashes are not
    doubled, so that ``'\\x1b'`` in it is not shown as ``'\\\\x1b'``.  A sentence
    with an unsafe character is escaped as a value is.
    """
    if isinstance(value, bytes):
        text = value.decode("utf-8", "surrogateescape")
    else:
        text = value if isinstance(value, str) else str(value)
    if sentence and not any(_unsafe(char, quote) for char in text[:limit]):
        body = text if len(text) <= limit else f"{text[:limit]}{_CUT}({len(text)} characters)"
    else:
        body = _escaped(text, limit, quote)
    return f"'{body}'" if quote else body


def _escaped(text: str, limit: int, quote: bool) -> str:
    if (
        len(text) <= limit
        and text.isprintable()
        and "\\" not in text
        and _CUT not in text
        and not (quote and "'" in text)
    ):
        return text  # the usual case: nothing to do
    out: list[str] = []
    size, i, end = 0, 0, len(text)
    while i < end:
        char = text[i]
        if char == "\\":
            j = i
            while j < end and text[j] == "\\":
                j += 1
            run = j - i
            if j < end and _unsafe(text[j], quote):  # the escape comes right after the run
                piece, i = "\\" * (2 * run) + _code(text[j]), j + 1
            elif looks := _looks_escaped(text, j, quote):  # text that reads as an escape
                piece, i = "\\" * (2 * run) + looks, j + len(looks)
            else:
                piece, i = "\\" * run, j
        elif _unsafe(char, quote):
            piece, i = _code(char), i + 1
        else:
            piece, i = char, i + 1
        if size + len(piece) > limit:
            return "".join(out) + f"{_CUT}({end} characters)"
        out.append(piece)
        size += len(piece)
    return "".join(out)


def _unsafe(char: str, quote: bool) -> bool:
    return not char.isprintable() or char == _CUT or (quote and char == "'")


def _code(char: str) -> str:
    """The escape of an unsafe character: the only form ``shown`` writes for it."""
    point = ord(char)
    if point < 0x100:
        return f"\\x{point:02x}"
    if point < 0x10000:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


def _looks_escaped(text: str, at: int, quote: bool) -> str:
    """The text at ``at`` (after a backslash) when it is what ``_code`` writes after its
    backslash for some unsafe character (``x1b``), else "".  Only then is a backslash
    before it doubled: a JSON ``\\u00e9`` or a repr's ``\\n`` stays as it is."""
    width = _WIDTHS.get(text[at : at + 1], 0)
    digits = text[at + 1 : at + 1 + width]
    if not width or len(digits) != width or digits.strip(_HEX):
        return ""
    point = int(digits, 16)
    if point > 0x10FFFF or _code(chr(point)) != "\\" + text[at] + digits:
        return ""
    return text[at : at + 1 + width] if _unsafe(chr(point), quote) else ""


_WIDTHS = {"x": 2, "u": 4, "U": 8}
_HEX = "0123456789abcdef"
