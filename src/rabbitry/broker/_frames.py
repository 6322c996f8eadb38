"""AMQP 0-9-1 frames for publishing, marshalled by hand for speed.

pamqp marshals one message's three frames in ~35 µs on a small machine; the
runtime's publish path needs a few µs.  Only what the runtime sends is built
here: ``Basic.Publish``, a content header with the properties rabbitry sets
(or pamqp's marshalling of arbitrary properties, for dead-letter copies), and
body frames.  The split is deliberate: payloads do not depend on the channel,
so they are made once when a message is prepared, and framed (channel number,
size, end octet) when a batch is written — also again after a reconnect.
Tests check every byte against pamqp's own marshalling.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import Any

from pamqp import commands as spec
from pamqp import encode
from pamqp.header import ContentHeader

__all__ = [
    "HeaderTemplate",
    "frame",
    "message_id",
    "publish_method",
    "raw_header",
    "shortstr",
]

METHOD, HEADER, BODY = 1, 2, 3
FRAME_END = b"\xce"
_FRAME = struct.Struct(">BHI")
_HEADER_START = struct.Struct(">HHQH")  # class id, weight, body size, property flags
_U64 = struct.Struct(">Q")
_BASIC = 60
_PUBLISH = b"\x00\x3c\x00\x28\x00\x00"  # Basic(60).Publish(40), reserved-1 = 0

# Basic property flags (AMQP 0-9-1, highest bit first).
_CONTENT_TYPE = 0x8000
_HEADERS = 0x2000
_DELIVERY_MODE = 0x1000
_MESSAGE_ID = 0x0080
_TIMESTAMP = 0x0040
_TYPE = 0x0020
_APP_ID = 0x0008


def shortstr(text: str) -> bytes:
    """An AMQP short string: one length octet, then at most 255 bytes of UTF-8."""
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"{text[:40]!r}... is {len(raw)} bytes; AMQP allows 255")
    return bytes((len(raw),)) + raw


def publish_method(exchange: str, routing_key: str, *, mandatory: bool) -> bytes:
    """The payload of a ``Basic.Publish`` method frame."""
    return (
        _PUBLISH + shortstr(exchange) + shortstr(routing_key) + (b"\x01" if mandatory else b"\x00")
    )


class HeaderTemplate:
    """Content headers of one message type: only the body size, id, time and headers vary."""

    __slots__ = ("_after_id", "_before_id", "_flags", "_flags_with_headers", "_mode")

    def __init__(
        self, *, message_type: str, content_type: str, persistent: bool, app_id: str | None
    ) -> None:
        flags = _CONTENT_TYPE | _DELIVERY_MODE | _MESSAGE_ID | _TIMESTAMP | _TYPE
        tail = shortstr(message_type)
        if app_id is not None:
            flags |= _APP_ID
            tail += shortstr(app_id)
        self._flags = flags
        self._flags_with_headers = flags | _HEADERS
        self._before_id = shortstr(content_type)
        self._mode = b"\x02" if persistent else b"\x01"
        self._after_id = tail

    def payload(
        self,
        body_size: int,
        message_id: str,
        timestamp: int,
        headers: Mapping[str, Any] | None = None,
        extra: tuple[int, bytes] = (0, b""),
    ) -> bytes:
        """The content header's payload (``message_id`` is 32 ASCII hex digits); ``extra``
        is more property flags and their values between delivery-mode and message-id
        (priority, correlation-id, reply-to, expiration: ``messaging._properties``)."""
        flags, more = extra
        if headers:
            start = _HEADER_START.pack(_BASIC, 0, body_size, self._flags_with_headers | flags)
            table = _field_table(headers)
            return b"".join(
                (
                    start,
                    self._before_id,
                    table,
                    self._mode,
                    more,
                    bytes((len(message_id),)),
                    message_id.encode(),
                    _U64.pack(timestamp),
                    self._after_id,
                )
            )
        return b"".join(
            (
                _HEADER_START.pack(_BASIC, 0, body_size, self._flags | flags),
                self._before_id,
                self._mode,
                more,
                bytes((len(message_id),)),
                message_id.encode(),
                _U64.pack(timestamp),
                self._after_id,
            )
        )


def _field_table(headers: Mapping[str, Any]) -> bytes:
    return encode.field_table(dict(headers))


def raw_header(body_size: int, properties: spec.Basic.Properties) -> bytes:
    """A content header's payload with any properties (pamqp's marshalling: the slow path)."""
    return ContentHeader(0, body_size, properties).marshal()


def frame(kind: int, channel: int, payload: bytes) -> tuple[bytes, bytes, bytes]:
    """The three parts of one frame, to be joined with others into one write."""
    return _FRAME.pack(kind, channel, len(payload)), payload, FRAME_END


_ids: list[str] = []
os.register_at_fork(after_in_child=_ids.clear)  # a child must not reuse its parent's ids


def message_id() -> str:
    """A fresh UUID4 as 32 hex digits, from the OS's randomness, drawn 512 at a time."""
    if not _ids:
        raw = os.urandom(16 * 512)
        clear = ~((0xF000 << 64) | (0xC000 << 48))
        mark = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant
        _ids.extend(
            format((int.from_bytes(raw[i : i + 16]) & clear) | mark, "032x")
            for i in range(0, len(raw), 16)
        )
    return _ids.pop()
