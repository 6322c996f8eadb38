"""What rabbitry reads from aiormq beyond its abstract interface, checked once here.

aiormq's ``connection.channel()`` is typed as its ``AbstractChannel``, which
declares no write queue, delivery tag or confirmations; the batched
publisher, the consumer's acks and the migration's mover write frames on
that queue and register confirms in that dict, so they need aiormq's own
``Channel`` (``frame_channel``).  pamqp types every field of a frame as
optional, because a frame built by hand may lack it; a frame the broker sent
has them, and the accessors below say so once, with an error that names the
frame if one ever does not.

aiormq's internals used here and elsewhere (``Channel.confirmations``,
``Channel.write_queue``, name-mangled ``Connection`` handlers, ...) are why
pyproject bounds aiormq's version; tests/test_dependency_internals.py fails
when an aiormq release no longer has one of them.

``GuardedConnection`` reads frames with ``GuardedFrames`` instead of aiormq's
``FrameReceiver``, so that one message can never stop a connection or fill
its memory (issue 14).  aiormq unmarshals every frame in its connection
reader: a content header it cannot decode (a header table nested thousands
deep raises ``RecursionError`` inside pamqp) ends the reader, the connection
closes, the broker delivers the message again on the next one, for ever.  And
aiormq's channel reader keeps every body frame of a delivery until the whole
body is in memory, whatever its size.  ``GuardedFrames`` replaces such a
content header by a ``WithheldHeader``: the same properties (without the
headers table when that is what failed), ``body_size`` 0 so that the
channel reads no body, and the announced size and the reason kept; the body
frames that follow are read off the socket one at a time and dropped.  The
consumer then rejects the delivery (the queue's own dead-lettering takes the
original, broker-side: nothing large is copied), and ``tail`` says it could
not read it.  A body is withheld only on a channel given a limit
(``limit_body``: the consumers'), a header that cannot be read on any channel.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import aiormq
import pamqp.frame
from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.connection import FrameReceiver, ReceivedFrame
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError
from pamqp import commands as spec
from pamqp.exceptions import PAMQPException
from pamqp.header import ContentHeader

from rabbitry._nesting import nests_deeper
from rabbitry.errors import BrokerError

__all__ = [
    "MAX_HEADER_DEPTH",
    "GuardedConnection",
    "GuardedFrames",
    "WithheldHeader",
    "consumer_tag",
    "delivered",
    "frame_channel",
    "limit_body",
    "queue_counts",
    "queue_name",
    "withheld",
]

#: Deepest nesting of tables and arrays read in a message's headers.  Deeper is legal
#: AMQP, but every program that copies or logs such headers recurses on them.
MAX_HEADER_DEPTH = 64
_FRAME = struct.Struct(">BHI")
_HEADER, _BODY = 2, 3
_HEADERS_FLAG = 0x2000
#: A header table must be at least this long to nest past ``MAX_HEADER_DEPTH`` (each level
#: takes 6 bytes or more): shorter payloads are not walked.
_WALK_FROM = 6 * MAX_HEADER_DEPTH


class WithheldHeader(ContentHeader):
    """A delivery's content header whose body was not read: ``body_size`` is 0 (aiormq then
    reads no body), ``announced`` is what the broker said it is, ``reason`` says why (a
    sentence), and ``unreadable`` whether its headers could not be decoded (its properties
    then lack them)."""

    def __init__(
        self,
        announced: int,
        properties: spec.Basic.Properties,
        *,
        reason: str,
        unreadable: bool,
    ) -> None:
        super().__init__(0, 0, properties)
        self.announced = announced
        self.reason = reason
        self.unreadable = unreadable


def withheld(message: DeliveredMessage) -> WithheldHeader | None:
    """The ``WithheldHeader`` of a message whose body or headers were not read, else None."""
    header = message.header
    return header if isinstance(header, WithheldHeader) else None


def _without_headers(payload: bytes) -> spec.Basic.Properties:
    """The properties of a content header payload, its headers table skipped (it has a length
    prefix, so skipping it decodes nothing); empty properties if even that fails."""
    try:
        (flags,) = struct.unpack_from(">H", payload, 12)
        at = 14
        for flag in (0x8000, 0x4000):  # content_type, content_encoding: short strings first
            if flags & flag:
                at += 1 + payload[at]
        if flags & _HEADERS_FLAG:
            (size,) = struct.unpack_from(">I", payload, at)
            payload = b"".join(
                (
                    payload[:12],
                    struct.pack(">H", flags & ~_HEADERS_FLAG),
                    payload[14:at],
                    payload[at + 4 + size :],
                )
            )
        header = ContentHeader()
        header.unmarshal(payload)
    except Exception:
        return spec.Basic.Properties()
    return header.properties


class GuardedFrames(FrameReceiver):
    """aiormq's frame receiver, guarded: a content header that cannot be decoded, nests too
    deep, or announces a body over its channel's limit becomes a ``WithheldHeader``, and that
    delivery's body frames are dropped as they are read (see the module's docstring).

    Its reading is aiormq 7.2's ``FrameReceiver.get_frame`` (which reads and unmarshals in one
    step, so it cannot be wrapped); tests/test_dependency_internals.py pins what it relies on.
    """

    def __init__(self, receiver: FrameReceiver, connection: GuardedConnection) -> None:
        super().__init__(receiver.reader)
        self.started = True
        self.lock = receiver.lock
        self._connection = connection
        #: channel -> body bytes still to drop.
        self._dropping: dict[int, int] = {}

    async def get_frame(self) -> ReceivedFrame:
        while True:
            raw = await self._read()
            kind, channel, size = _FRAME.unpack_from(raw)
            if kind == _BODY and channel in self._dropping:
                left = self._dropping[channel] - size
                if left > 0:
                    self._dropping[channel] = left
                else:
                    del self._dropping[channel]
                continue
            if kind == _HEADER:
                return self._header(channel, raw)
            try:
                return pamqp.frame.unmarshal(raw)
            except PAMQPException as exc:
                raise InvalidFrameError(str(exc)) from exc

    async def _read(self) -> bytes:
        """One whole frame's bytes (aiormq's reading, with its errors)."""
        reader = self.reader
        if reader.at_eof():
            raise StopAsyncIteration
        async with self.lock:
            try:
                start = await reader.readexactly(7)
                _, _, size = _FRAME.unpack(start)
                return start + await reader.readexactly(size + 1)
            except asyncio.IncompleteReadError as exc:
                raise AMQPConnectionError(
                    "Server connection unexpectedly closed. "
                    f"Read {len(exc.partial)} bytes but {exc.expected} bytes expected"
                ) from exc
            except OSError as exc:
                raise AMQPConnectionError(f"Server communication error: {exc!r}") from exc

    def _header(self, channel: int, raw: bytes) -> ReceivedFrame:
        payload = raw[7:-1]
        announced = struct.unpack_from(">Q", payload, 4)[0] if len(payload) >= 12 else 0
        try:
            _, _, frame = pamqp.frame.unmarshal(raw)
        except Exception as exc:  # RecursionError too: a table nested thousands deep
            reason = f"its headers could not be decoded ({type(exc).__name__})"
            unread = WithheldHeader(
                announced, _without_headers(payload), reason=reason, unreadable=True
            )
            return self._withhold(channel, len(raw), unread)
        if not isinstance(frame, ContentHeader):  # pragma: no cover - type 2 is a header
            raise InvalidFrameError(f"frame type 2 unmarshalled as {frame!r}")
        headers = frame.properties.headers
        if headers and len(payload) > _WALK_FROM and nests_deeper(headers, MAX_HEADER_DEPTH):
            reason = f"its headers nest deeper than {MAX_HEADER_DEPTH} levels"
            unread = WithheldHeader(
                announced, _without_headers(payload), reason=reason, unreadable=True
            )
            return self._withhold(channel, len(raw), unread)
        limit = self._connection.body_limit(channel)
        if limit is not None and frame.body_size > limit:
            reason = f"its body is {frame.body_size} bytes, over the limit of {limit}"
            large = WithheldHeader(announced, frame.properties, reason=reason, unreadable=False)
            return self._withhold(channel, len(raw), large)
        return len(raw), channel, frame

    def _withhold(self, channel: int, size: int, header: WithheldHeader) -> ReceivedFrame:
        """Deliver ``header`` in place of the real one; drop the body frames that follow."""
        if header.announced:
            self._dropping[channel] = header.announced
        return size, channel, header


class GuardedConnection(aiormq.Connection):
    """aiormq's connection reading with ``GuardedFrames``; ``limit_body`` sets a channel's
    largest body (over it, a delivery's body is dropped unread and its header withheld)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: channel number -> (the channel it was set for, its limit in bytes).
        self._limits: dict[int, tuple[AbstractChannel, int]] = {}

    def body_limit(self, channel: int) -> int | None:
        """The body limit of channel number ``channel`` (None: none), if it is still the
        channel it was set for (numbers are reused)."""
        entry = self._limits.get(channel)
        if entry is None:
            return None
        if self.channels.get(channel) is not entry[0]:
            del self._limits[channel]
            return None
        return entry[1]

    async def _Connection__reader(self, frame_receiver: FrameReceiver) -> None:
        # mypy does not mangle ``__names`` (tests/test_dependency_internals.py pins it).
        await super()._Connection__reader(  # type: ignore[misc]
            GuardedFrames(frame_receiver, self)
        )


def limit_body(channel: AbstractChannel, limit: int) -> None:
    """Deliveries on ``channel`` with a body over ``limit`` bytes arrive withheld: their body
    is dropped as it is read (on a ``GuardedConnection``; elsewhere nothing changes)."""
    connection = channel.connection
    if isinstance(connection, GuardedConnection):
        number = getattr(channel, "number", None)
        if isinstance(number, int):
            connection._limits[number] = (channel, limit)


def frame_channel(channel: AbstractChannel) -> aiormq.Channel:
    """``channel`` as aiormq's ``Channel``, whose write queue and confirmations rabbitry uses."""
    if isinstance(channel, aiormq.Channel):
        return channel
    raise BrokerError(
        f"aiormq opened a {type(channel).__module__}.{type(channel).__qualname__}, not an "
        "aiormq.Channel: this aiormq is not one rabbitry supports (see its pyproject's bound)"
    )


def delivered(message: DeliveredMessage) -> tuple[spec.Basic.Deliver, int]:
    """The ``basic.deliver`` of a consumed message, and its delivery tag."""
    frame = message.delivery
    if isinstance(frame, spec.Basic.Deliver) and frame.delivery_tag is not None:
        return frame, frame.delivery_tag
    raise BrokerError(f"a consumer got {frame!r} where a basic.deliver with a tag belongs")


def consumer_tag(ok: spec.Basic.ConsumeOk) -> str:
    """The consumer tag the broker gave in ``basic.consume-ok``."""
    if ok.consumer_tag is None:
        raise BrokerError(f"the broker's {ok!r} has no consumer tag")
    return ok.consumer_tag


def queue_name(ok: spec.Queue.DeclareOk) -> str:
    """The queue a ``queue.declare-ok`` is about (the server's name for a queue declared as "")."""
    if ok.queue is None:
        raise BrokerError(f"the broker's {ok!r} has no queue name")
    return ok.queue


def queue_counts(ok: spec.Queue.DeclareOk) -> tuple[int, int]:
    """(ready messages, consumers) of a ``queue.declare-ok``."""
    if ok.message_count is None or ok.consumer_count is None:
        raise BrokerError(f"the broker's {ok!r} has no message or consumer count")
    return ok.message_count, ok.consumer_count
