"""Log injection: what comes from the wire never forges a log line or a terminal's output.

A publisher controls a message's body (its property names and values, which
become the JSON Pointers and texts of its faults), its ``type``,
``message_id`` and headers (``x-death`` and ``x-rabbitry-*`` may be forged).
Each of those holding a newline, a carriage return, an ANSI escape, a line
or paragraph separator or a bidi override must reach the consumer's log
messages and ``rabbitry tail``'s text escaped (``rabbitry._untrusted.shown``):
one log record is one line, one message is the lines tail says it is, and no
escape sequence reaches the terminal but tail's own colours.  ``tail --format
json`` keeps every value whole: JSON escapes it.

Measured before the fix (RabbitMQ 3.10.8): the three hostile messages below
made 47 lines out of 11 log records (counted as ``str.splitlines`` counts,
which a carriage return and a line separator end too), with 24 ESC
characters; tail's text of the four parked messages was 49 lines where 9
were due (23 by newlines alone), with 26 ESC characters (a clear-screen,
a window title) reaching the terminal; a 28 KB property name made a log
line of 28,586 characters and 500 lines.  After: 11 lines for 11 records,
9 for 9, no ESC, and that log line is one line of 604 characters.  ``tail
--format json`` was already safe (the encoder escapes): pinned here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import aiormq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import Vhost
from rabbitry._untrusted import LIMIT, shown
from rabbitry.broker import converge
from rabbitry.broker.url import parse_url
from rabbitry.check import load_spec
from rabbitry.cli import cli
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract
from specs import write_spec

SPEC = """
version: 1
exchanges:
  in: {type: fanout}
  dead: {type: fanout}
queues:
  work: {dead_letter: dead}
  parked: {}
bindings:
  - {from: in, queue: work}
  - {from: dead, queue: parked}
messages:
  Note: {schema: schemas/note.json, exchange: in}
services:
  reader:
    publishes: [Note]
    consumes:
      work: [Note]
      parked: [Note]
"""
NOTE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
    "additionalProperties": {"type": "integer"},
}

#: A forged log line, a clear-screen and a window-title escape, a carriage return, a line
#: separator and a right-to-left override: each one a way to lie to who reads the log.
FORGED = "\n2026-01-01 00:00:00 INFO rabbitry.messaging all is well"
HOSTILE = FORGED + "\x1b[2J\x1b]0;pwned\x07\r\u2028\u202e"
#: What must never reach a log message or tail's text raw.
RAW = re.compile("[\n\r\x07\x1b\u2028\u2029\u202a-\u202e\u2066-\u2069\x85]")
#: The colours tail itself writes (click.style): the only escapes allowed in its text.
COLOURS = re.compile("\x1b\\[[0-9;]*m")


@pytest.fixture
def topology(vhost: Vhost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Vhost:
    path = write_spec(tmp_path, SPEC, {"schemas/note.json": NOTE_SCHEMA})
    asyncio.run(converge.apply(load_spec(path), parse_url(vhost.amqp_url), timeout=10))
    monkeypatch.chdir(tmp_path)
    return vhost


async def _publish(url: str, queue: str, body: bytes, **properties: Any) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.confirm_delivery()
        await channel.basic_publish(
            body,
            routing_key=queue,
            properties=aiormq.spec.Basic.Properties(content_type="application/json", **properties),
        )
    finally:
        await connection.close()


async def _ready(url: str, queue: str) -> int:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        ok = await channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0)
    finally:
        await connection.close()


async def _consume_hostile(url: str, messages: list[tuple[bytes, dict[str, Any]]]) -> None:
    """A rabbitry consumer of ``work`` takes ``messages`` (each refused or failing) until
    every one is parked; its handler fails with the body's text in its exception."""
    contract = Contract.load(Path("topology.yaml"))

    async def handler(delivery: Delivery[Any]) -> None:
        raise ValueError(f"cannot take {delivery.body['text']}")

    async with Client(contract, url, service="reader") as reader:
        consumer = reader.consume("work", handler, attempts=2)
        await consumer.ready()
        for body, properties in messages:
            await _publish(url, "work", body, **properties)
        deadline = time.monotonic() + 20
        while await _ready(url, "parked") < len(messages):
            assert time.monotonic() < deadline, "the hostile messages were not all parked"
            await asyncio.sleep(0.05)
        await consumer.cancel()


#: Refused by the schema (a hostile property name), by its type, and by its handler.
WORK = [
    (
        json.dumps({"text": "a", "k" + HOSTILE: "s"}).encode(),
        {"message_type": "Note", "message_id": "m1" + HOSTILE},
    ),
    (b'{"text": "b"}', {"message_type": "Note" + HOSTILE, "message_id": "m2"}),
    (
        json.dumps({"text": "c" + HOSTILE}).encode(),
        {"message_type": "Note", "message_id": "m3" + HOSTILE},
    ),
]


def test_the_consumers_log_has_one_line_per_record(
    topology: Vhost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rabbitry")
    began = time.monotonic()
    asyncio.run(_consume_hostile(topology.amqp_url, WORK))
    assert time.monotonic() - began < 30
    records = [r for r in caplog.records if r.name.startswith("rabbitry")]
    about = [r for r in records if "m1" in r.getMessage() or "m3" in r.getMessage()]
    assert len(about) >= 4  # delivery (DEBUG), dead-lettered, retrying, failed
    for record in records:
        message = record.getMessage()
        assert not RAW.search(message), message
        assert len(message) < 3 * LIMIT
    text = "\n".join(r.getMessage() for r in records)
    assert len(text.splitlines()) == len(records)
    dead = [r.getMessage() for r in records if "dead-lettered" in r.getMessage()]
    assert len(dead) == len(WORK)
    # The facts survive, escaped: the property name, the type, the handler's reason.
    assert any("/k\\x0a2026-01-01 00:00:00 INFO" in m and "\\x1b[2J" in m for m in dead)
    assert any("Note\\x0a2026-01-01" in m for m in dead)
    assert any("cannot take c\\x0a2026-01-01" in m for m in dead)
    # The structured fields stay what came from the wire (a JSON formatter escapes them).
    ids = {getattr(r, "message_id", None) for r in records}
    assert {"m1" + HOSTILE, "m3" + HOSTILE} <= ids


def test_a_huge_hostile_property_name_makes_a_bounded_log_line(
    topology: Vhost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rabbitry")
    key = ("k" + FORGED) * 500  # 28 KB (its dead-letter copy carries it twice, under frame_max)
    body = json.dumps({"text": "a", key: "s"}).encode()
    asyncio.run(
        _consume_hostile(topology.amqp_url, [(body, {"message_type": "Note", "message_id": "big"})])
    )
    (record,) = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    message = record.getMessage()
    assert len(message) < 3 * LIMIT
    assert "\n" not in message
    assert "characters" in message  # the cut says how long it was


def _park_forged(url: str) -> None:
    """A message put straight into ``parked`` with every dead-letter header forged."""
    headers = {
        "x-death": [
            {
                "reason": "expired" + HOSTILE,
                "queue": "q" + HOSTILE,
                "exchange": "e" + HOSTILE,
                "routing-keys": ["r" + HOSTILE],
                "count": 1,
            }
        ],
        "x-rabbitry-error": "error" + HOSTILE,
        "x-rabbitry-path": "/p" + HOSTILE,
        "x-rabbitry-errors": [
            {"path": "/p" + HOSTILE, "message": "m" + HOSTILE},
            {"path": "/q" + HOSTILE, "message": "n" + HOSTILE},
        ],
        "x-rabbitry-queue": "q" + HOSTILE,
        "x-rabbitry-exchange": "e" + HOSTILE,
        "x-rabbitry-routing-key": "r" + HOSTILE,
        "h" + FORGED: "v" + HOSTILE,
    }
    body = ('{"text":\n"' + HOSTILE + '"}' + HOSTILE).encode()
    asyncio.run(_publish(url, "parked", body, message_type="Note" + HOSTILE, headers=headers))


def test_tail_shows_each_message_in_the_lines_it_says(
    topology: Vhost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="rabbitry")
    asyncio.run(_consume_hostile(topology.amqp_url, WORK))
    _park_forged(topology.amqp_url)
    runner = CliRunner()
    args = ["tail", "parked", "--url", topology.amqp_url, "--idle", "0.5"]
    as_json = runner.invoke(cli, [*args, "--format", "json"])
    assert as_json.exit_code == 1, as_json.output  # every parked message is invalid
    *lines, end = as_json.stdout.split("\n")
    assert end == ""
    assert len(lines) == 4
    assert not any(RAW.search(line) for line in [*lines, as_json.stderr.rstrip("\n")])
    items = [json.loads(line) for line in lines]
    # JSON keeps every value whole (escaped by the encoder): the forged headers read back.
    forged = items[3]
    assert forged["type"] == "Note" + HOSTILE
    assert forged["headers"]["h" + FORGED] == "v" + HOSTILE
    assert forged["x_death"][0]["queue"] == "q" + HOSTILE
    assert forged["rabbitry_reason"]["error"] == "error" + HOSTILE
    assert forged["body"] == '{"text":\n"' + HOSTILE + '"}' + HOSTILE

    began = time.monotonic()
    text = runner.invoke(cli, args, color=True)  # as on a terminal: colours kept
    assert time.monotonic() - began < 30
    assert text.exit_code == 1, text.output
    due = sum(1 + len(i["x_death"]) + (i["rabbitry_reason"] is not None) for i in items)
    assert len(text.stdout.splitlines()) == due
    assert len(text.stderr.splitlines()) == 1
    plain = COLOURS.sub("", text.stdout + text.stderr)
    assert not any(RAW.search(line) for line in plain.split("\n")), plain
    assert "\\x1b[2J" in plain  # shown escaped, not swallowed
    assert "dead-lettered by the broker: expired\\x0a2026-01-01" in plain


# -- the escaping itself -------------------------------------------------------------------

#: Text drawn mostly from what an attacker would send: controls, C1, separators, bidi
#: controls, escapes that look like rabbitry's own, and the cut's ellipsis.
HOSTILE_TEXT = st.text(
    alphabet=st.sampled_from(
        [
            *"\x00\x07\t\n\r\x1b\x7f\x85\x9b\u2028\u2029\u202e\u2066\u200f\ufeff\u2026",
            *"\\\\xuU0a1b2f8de'[m ",
            *("\ud800", "\U0001f600", "é"),
        ]
    )
    | st.characters(),
    max_size=120,
)


def unshown(text: str, quote: bool = False) -> str:
    """The inverse of ``shown`` for a text it did not cut: the proof it loses nothing.

    A run of backslashes before what reads as an escape of an unsafe character
    (``x1b``: the form ``shown`` writes, for a character it escapes) is halved, and
    an odd one makes that escape the character; any other backslash is itself.
    """
    out, i = [], 0
    while i < len(text):
        if text[i] != "\\":
            out.append(text[i])
            i += 1
            continue
        j = i
        while j < len(text) and text[j] == "\\":
            j += 1
        run = j - i
        escape = _escape_at(text, j, quote)
        if not escape:
            out.append("\\" * run)
        elif run % 2:
            out.append("\\" * (run // 2) + chr(int(escape[1:], 16)))
        else:
            out.append("\\" * (run // 2) + escape)
        i = j + len(escape)
    return "".join(out)


def _escape_at(text: str, at: int, quote: bool) -> str:
    """``x1b``, ``u2028`` or ``U0001f600`` at ``at`` when ``shown`` writes it for an unsafe
    character (lowercase, the shortest form that holds it), else ""."""
    width = {"x": 2, "u": 4, "U": 8}.get(text[at : at + 1], 0)
    found = re.fullmatch(f"[0-9a-f]{{{width}}}", text[at + 1 : at + 1 + width])
    if not width or not found:
        return ""
    point = int(found.group(), 16)
    if (
        point
        not in {"x": range(0x100), "u": range(0x100, 0x10000), "U": range(0x10000, 0x110000)}[
            text[at]
        ]
    ):
        return ""
    char = chr(point)
    if char.isprintable() and char != "\u2026" and not (quote and char == "'"):
        return ""
    return text[at : at + 1 + width]


@settings(max_examples=500)
@given(text=HOSTILE_TEXT)
def test_shown_text_is_printable_and_loses_nothing(text: str) -> None:
    rendered = shown(text)
    assert all(ch.isprintable() for ch in rendered), repr(rendered)
    assert not RAW.search(rendered)
    assert "\u2026" not in rendered  # the ellipsis only ever marks a cut
    assert unshown(rendered) == text


@settings(max_examples=300)
@given(a=HOSTILE_TEXT, b=HOSTILE_TEXT)
def test_distinct_texts_stay_distinct(a: str, b: str) -> None:
    if a != b:
        assert shown(a) != shown(b)


@settings(max_examples=300)
@given(text=HOSTILE_TEXT, limit=st.integers(min_value=1, max_value=60))
def test_a_long_text_is_cut_and_says_its_length(text: str, limit: int) -> None:
    rendered = shown(text, limit=limit)
    if "\u2026" in rendered:
        kept, cut = rendered.split("\u2026")
        assert len(kept) <= limit
        assert cut == f"({len(text)} characters)"
        assert text.startswith(unshown(kept))
    else:
        assert len(rendered) <= limit
        assert unshown(rendered) == text


@settings(max_examples=300)
@given(text=HOSTILE_TEXT, limit=st.integers(min_value=1, max_value=200))
def test_a_sentence_is_kept_when_safe_and_escaped_when_not(text: str, limit: int) -> None:
    rendered = shown(text, limit=limit, sentence=True)
    assert all(ch.isprintable() for ch in rendered), repr(rendered)
    assert len(rendered.split("\u2026")[0]) <= limit
    if text.isprintable() and "\u2026" not in text and len(text) <= limit:
        assert rendered == text  # a repr's '\\x1b' in a reason is not doubled
    elif not text[:limit].isprintable():
        assert rendered == shown(text, limit=limit)


def test_quoted_text_escapes_its_quote() -> None:
    assert shown("it's\n", quote=True) == "'it\\x27s\\x0a'"
    assert unshown(shown("it's\\x27", quote=True)[1:-1], quote=True) == "it's\\x27"
    assert shown(None) == "None"
    assert shown(b"\xff\n") == "\\udcff\\x0a"


def test_a_backslash_is_doubled_only_before_what_reads_as_an_escape() -> None:
    assert shown('{"name": "Jos\\u00e9", "esc": "\\u001b", "nl": "a\\nb"}') == (
        '{"name": "Jos\\u00e9", "esc": "\\u001b", "nl": "a\\nb"}'  # JSON's escapes stay
    )
    assert shown("'\\x1b[2J'") == "'\\\\x1b[2J'"  # a repr's escape of ESC reads as shown's
    assert shown("\\\x1b") == "\\\\\\x1b"  # a backslash, then ESC


def test_a_huge_text_costs_its_limit_not_its_length() -> None:
    text = ("x" + FORGED) * 200_000  # 11 MB
    began = time.perf_counter()
    rendered = shown(text)
    assert time.perf_counter() - began < 0.5
    assert len(rendered) < LIMIT + 40
    assert "\n" not in rendered
