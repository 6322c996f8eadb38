"""Publishing with confirms and ``mandatory``, in batched writes.

Every message is validated and marshalled by the caller's task (``prepare``:
nothing is queued when it fails), then queued.  One writer task takes what
is queued — one message, or hundreds from ``publish_many`` and concurrent
``publish`` calls — assigns consecutive delivery tags, registers each
message's confirmation in aiormq's own ``Channel.confirmations`` /
``Channel.message_id_delivery_tag`` (so aiormq's reader settles it: ``ack``,
``nack``, and ``basic.return``, which arrives before the ``ack`` of the same
message and marks it unroutable) and writes the whole batch's frames as ONE
``ChannelFrame`` on the connection's ``write_queue``.  Only this writer
publishes on its channel, so ``Channel.delivery_tag`` stays the broker's
count.

Every publish has a deadline.  When the channel or connection closes, the
messages written and not yet confirmed are written again (same
``message_id``) on the next channel, after the reconnect: delivery is
at-least-once.  A ``nack`` fails its message (``PublishNacked``) and retires
the channel: the next messages go on a new one (a channel opened as a quorum
queue's leader node crashed was seen nacking everything for a minute).

A message can close the channel by what it is (over the broker's
``max_message_size``; a ``user_id`` that is not the connection's user): the
broker closes the channel (406) and would close every channel it is written
on again.  So it is never written again: a close that names a size fails
every unconfirmed message over that size (``MessageTooLarge``) and the rest
is written again; a close rabbitry cannot attribute writes the unconfirmed
messages again ONE AT A TIME, each after the previous one's confirm, so the
next close finds the culprit alone and fails it (``PublishRefused``).  A
message is never written on more than ``MAX_CLOSES`` channels that closed
under it, and consecutive closes back off.  Bodies over ``MAX_BODY`` (what
consumers accept) are refused before sending.  A message still unconfirmed at its deadline raises
``PublishTimeout``: ``sent=True`` means the outcome is unknown, never that it
was delivered.  Before its first message to an exchange on a channel, the
writer checks that the exchange exists (a passive declare on a probe
channel), because a publish to a missing exchange closes the channel with
every confirm in flight on it.  A missing exchange fails the messages queued
for it then (``NotFound``) and is NOT remembered: the next message to it is
checked again, so publishing works as soon as ``rabbitry apply`` declared it,
on the same client.  An exchange that exists is remembered for the life of
the channel; if it is deleted later, the broker closes the channel and the
next one checks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import aiormq
import aiormq.exceptions as amqp_errors
from aiormq.abc import AbstractChannel, ChannelFrame
from pamqp import commands as spec

from rabbitry.broker import _frames
from rabbitry.broker._aiormq import frame_channel
from rabbitry.broker.amqp import broker_error
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import (
    BrokerError,
    ConnectionFailed,
    ContractViolation,
    Fault,
    MessageTooLarge,
    Phrase,
    PublishFailed,
    PublishManyFailed,
    PublishRefused,
    PublishTimeout,
    phrase_of,
)
from rabbitry.messaging import _telemetry
from rabbitry.messaging._decode import MAX_BODY, json_faults
from rabbitry.messaging._properties import Properties
from rabbitry.messaging._supervisor import Supervisor, backoff
from rabbitry.messaging.contract import MessageContract

__all__ = ["Outgoing", "Publisher"]

log = logging.getLogger("rabbitry.messaging")

CONTENT_TYPE = "application/json"
#: Most messages one write carries, and about the most bytes.
BATCH_MESSAGES = 512
BATCH_BYTES = 512 * 1024
#: Most unconfirmed messages on the channel; the writer waits for confirms beyond.
MAX_UNCONFIRMED = 4096
#: Most channels a message is written on that the broker closed with it unconfirmed.
MAX_CLOSES = 3

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_NAMED_EXCHANGE = re.compile(r"exchange '((?:[^'\\]|\\.)*)'")
#: RabbitMQ's 406 for a body over ``max_message_size`` (rabbit_channel:check_msg_size).
_TOO_LARGE = re.compile(r"message size (\d+) is larger than (?:configured )?max size (\d+)")


class _Waiter:
    """What one ``publish``/``publish_many`` call waits for: all its messages settled."""

    __slots__ = ("failures", "future", "pending")

    def __init__(self, future: asyncio.Future[None], count: int) -> None:
        self.future = future
        self.pending = count
        self.failures: list[tuple[int, BrokerError]] = []

    def settle(self, index: int, failure: BrokerError | None) -> None:
        if failure is not None:
            self.failures.append((index, failure))
        self.pending -= 1
        if self.pending <= 0 and not self.future.done():
            self.future.set_result(None)


class Outgoing:
    """One message on its way: payloads marshalled, framed per channel when written."""

    __slots__ = (
        "body",
        "closes",
        "done",
        "exchange",
        "future",
        "header",
        "index",
        "line",
        "message_id",
        "method",
        "name",
        "owner",
        "routing_key",
        "sent",
        "span",
        "suspect",
        "tag",
        "waiter",
    )

    def __init__(
        self,
        name: str,
        *,
        exchange: str,
        routing_key: str,
        method: bytes,
        header: bytes,
        body: bytes,
        message_id: str,
    ) -> None:
        self.name = name
        self.exchange = exchange
        self.routing_key = routing_key
        self.method = method
        self.header = header
        self.body = body
        self.message_id = message_id
        #: Its position in a ``publish_many`` (None: a single publish).
        self.index: int | None = None
        self.waiter: _Waiter | None = None
        self.owner: Publisher | None = None
        #: Ever written to a broker (then a missing confirm means: outcome unknown).
        self.sent = False
        self.done = False
        self.future: asyncio.Future[Any] | None = None
        #: The channel it is written on and awaits its confirm from (None: queued or settled).
        self.line: _Line | None = None
        self.tag = 0
        #: Channels the broker closed while it was unconfirmed on them.
        self.closes = 0
        #: Maybe what closed the last channel: written alone, after the previous confirm.
        self.suspect = False
        #: Its OpenTelemetry span (``_telemetry``), ended when it settles.
        self.span: Any = None

    def __call__(self, future: asyncio.Future[Any]) -> None:
        """Done-callback of this message's confirmation future (set by aiormq's reader)."""
        if self.owner is not None:
            self.owner._confirmed(self, future)

    def settle(self, failure: BrokerError | None) -> None:
        if self.done:
            return
        self.done = True
        if failure is not None:
            if isinstance(failure, PublishFailed):
                failure.message_name = self.name
                failure.message_id = self.message_id
                failure.index = self.index
            with contextlib.suppress(Exception):
                failure.add_note(f"message {self.name} (message_id {self.message_id})")
            log.debug(
                "%s not delivered: %s",
                self.describe(),
                failure,
                extra=self.fields(reason=str(failure)),
            )
        if self.span is not None:
            _telemetry.published(self.span, self.name, self.exchange, failure)
        if self.waiter is not None:
            self.waiter.settle(self.index or 0, failure)

    def describe(self) -> str:
        return f"{self.name} to exchange {self.exchange!r} with routing key {self.routing_key!r}"

    def fields(self, **more: object) -> dict[str, object]:
        """The structured fields of a log record about this message (``extra=``)."""
        return {
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "message_id": self.message_id,
            "message_type": self.name,
            **more,
        }


def prepare(
    contract: MessageContract,
    template: _frames.HeaderTemplate,
    payload: Mapping[str, Any],
    *,
    index: int | None = None,
    props: Properties | None = None,
) -> Outgoing:
    """Validate and marshal one message; ``ContractViolation`` (nothing queued) if it is bad.

    ``props`` are its own properties, validated already (``_properties.properties``); its
    custom headers go beside the routing headers the spec fills (never over them).
    """
    name = contract.name
    try:
        contract.validate(payload)
        routing_key = contract.routing_key_for(payload)
    except ContractViolation as exc:
        if index is None:
            raise
        raise ContractViolation(exc.message_name, exc.faults, index=index) from None
    try:
        text = _ENCODER.encode(payload)
    except (TypeError, ValueError) as exc:  # not JSON-able although the schema let it pass
        # Infinity, NaN: the rule consumers apply names where it is.
        faults = json_faults(payload) or [Fault("", f"not JSON: {exc}")]
        raise ContractViolation(name, faults, index=index) from None
    try:
        body = text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate: not UTF-8, so not JSON on the wire
        faults = json_faults(payload) or [Fault("", f"not UTF-8: {exc}")]
        raise ContractViolation(name, faults, index=index) from None
    if len(body) > MAX_BODY:
        # Consumers dead-letter a body over MAX_BODY: the broker would confirm a message no
        # consumer takes.
        reason = (
            f"the body is {len(body)} bytes, over the limit of {MAX_BODY} bytes that "
            "consumers accept (MAX_BODY): send a reference to the data instead"
        )
        raise ContractViolation(name, [Fault("", reason)], index=index)
    try:
        method = _frames.publish_method(contract.exchange, routing_key, mandatory=True)
    except ValueError as exc:
        raise ContractViolation(name, [Fault("", f"routing key: {exc}")], index=index) from None
    message_id = _frames.message_id()
    headers = contract.headers_for(payload) if contract.headers else None
    span = None
    if _telemetry.ON:
        span, headers = _telemetry.publishing(
            name, contract.exchange, routing_key, message_id, headers
        )
    if props is None:
        header = template.payload(len(body), message_id, int(time.time()), headers)
    else:
        if props.headers:
            headers = {**props.headers, **(headers or {})}
        header = template.payload(len(body), message_id, int(time.time()), headers, props.extra)
    out = Outgoing(
        name,
        exchange=contract.exchange,
        routing_key=routing_key,
        method=method,
        header=header,
        body=body,
        message_id=message_id,
    )
    out.span = span
    return out


def prepare_raw(
    what: str,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: spec.Basic.Properties,
) -> Outgoing:
    """A message with given properties (a dead-letter copy): not validated."""
    message_id = properties.message_id or _frames.message_id()
    properties.message_id = message_id
    method = _frames.publish_method(exchange, routing_key, mandatory=True)
    header = _frames.raw_header(len(body), properties)
    return Outgoing(
        what,
        exchange=exchange,
        routing_key=routing_key,
        method=method,
        header=header,
        body=body,
        message_id=message_id,
    )


class _Line:
    """One publishing channel and what is unconfirmed on it; lost once, never reused."""

    __slots__ = ("alone", "channel", "lost", "unconfirmed", "verified")

    def __init__(self, channel: aiormq.Channel) -> None:
        self.channel = channel
        self.unconfirmed: dict[int, Outgoing] = {}
        #: Exchanges seen to exist (a missing one is checked again for each message).
        self.verified: set[str] = {""}  # the default exchange always exists
        self.lost = False
        #: A suspect in flight: nothing else is written until it is confirmed.
        self.alone: Outgoing | None = None


class Publisher:
    @property
    def _url(self) -> BrokerURL:
        """The node in use now: errors name it, and it changes when the client moves."""
        return self._supervisor.url

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self._timeout = supervisor.timeout
        self._queue: deque[Outgoing] = deque()
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._line: _Line | None = None
        self._probe: AbstractChannel | None = None
        self._closed = False
        #: Channels the broker closed in a row, with no confirm in between (for backoff).
        self._closes = 0
        #: The broker's max_message_size, as its refusal said: (connection generation, bytes).
        self._size_limit: tuple[int, int] | None = None
        self._task = asyncio.create_task(self._run(), name="rabbitry-publisher")

    # -- the callers' side -------------------------------------------------

    async def send(
        self, messages: Iterable[Outgoing], timeout: float, *, many: bool = False
    ) -> None:
        """Queue ``messages`` and wait until every one is confirmed.

        A failure raises the message's own error; with ``many`` (``publish_many``),
        ``PublishManyFailed`` carrying every failure by index.
        """
        outgoing = list(messages)
        if not outgoing:
            return
        if self._closed:
            raise ConnectionFailed(f"the client of {self._url.endpoint} is closed")
        failure = self._supervisor.failure
        if failure is not None:
            raise _copy(failure)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), len(outgoing))
        for out in outgoing:
            out.waiter = waiter
            out.owner = self
        self._queue.extend(outgoing)
        self._wakeup.set()
        try:
            async with asyncio.timeout(timeout):
                await waiter.future
        except TimeoutError:
            for out in outgoing:
                out.settle(self._timed_out(out, timeout))
        except BaseException:
            for out in outgoing:  # the caller gave up: stop writing what is not written
                out.done = True
            raise
        if not waiter.failures:
            return
        if many:
            raise PublishManyFailed(len(outgoing), dict(waiter.failures))
        raise min(waiter.failures, key=lambda item: item[0])[1]

    def _timed_out(self, out: Outgoing, timeout: float) -> PublishTimeout:
        blocked = self._supervisor.blocked_reason
        if blocked is not None:
            # aiormq holds every frame while the connection is blocked: what it shows as
            # written may still be here; either way the broker has not confirmed it.
            error = PublishTimeout(
                f"{out.describe()} was not confirmed within {timeout:g} s: RabbitMQ at "
                f"{self._url.endpoint} has blocked this connection ({blocked}), a memory "
                "or disk alarm: publishing waits until it clears (see `rabbitmq-diagnostics "
                "alarms` on the broker); the outcome is UNKNOWN if it was written"
            )
            error.sent = out.sent
            return error
        if out.sent:
            error = PublishTimeout(
                f"RabbitMQ at {self._url.endpoint} did not confirm {out.describe()} within "
                f"{timeout:g} s: the outcome is UNKNOWN (it may have reached its queues; a "
                "retry may duplicate it, with the same message_id)"
            )
            error.sent = True
        else:
            error = PublishTimeout(
                f"{out.describe()} was not sent within {timeout:g} s: RabbitMQ at "
                f"{self._url.endpoint} was unreachable or blocked; nothing was delivered"
            )
            error.sent = False
        return error

    # -- the writer --------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        failure = ConnectionFailed(f"the client of {self._url.endpoint} was closed")
        line, self._line = self._line, None
        unconfirmed = list(line.unconfirmed.values()) if line is not None else []
        for out in [*unconfirmed, *self._queue]:
            out.settle(_copy(failure))
        self._queue.clear()
        for channel in (line.channel if line is not None else None, self._probe):
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(channel.close(), self._timeout)

    async def _run(self) -> None:
        attempt = 0
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            try:
                await self._write_some()
                attempt = 0
            except BrokerError as exc:
                if exc is self._supervisor.failure:
                    self._fail_all(exc)
                else:
                    attempt += 1
                    log.warning(
                        "publishing failed: %s; trying again",
                        exc,
                        extra={"reason": str(exc), "attempt": attempt},
                    )
                    await asyncio.sleep(backoff(attempt))
            except Exception as exc:  # a bug must not leave callers waiting for ever
                log.exception("the publisher failed; restarting it", extra={"reason": repr(exc)})
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    def _fail_all(self, failure: BrokerError) -> None:
        """The connection is given up: settle everything queued."""
        while self._queue:
            out = self._queue.popleft()
            if out.sent and not out.done:
                error = PublishTimeout(
                    Phrase.of(
                        phrase_of(failure),
                        f"; {out.describe()} was written but not confirmed: the outcome is UNKNOWN",
                    )
                )
                error.sent = True
                out.settle(error)
            else:
                out.settle(_copy(failure))

    async def _line_now(self) -> _Line:
        line = self._line
        if line is not None and not self._dead(line):
            return line
        if self._closes:
            # The broker closed the last channels with no confirm in between: back off.
            await asyncio.sleep(backoff(self._closes - 1))
        connection = await self._supervisor.connection()
        try:
            channel = frame_channel(
                await connection.channel(publisher_confirms=True, timeout=self._timeout)
            )
        except Exception as exc:
            raise broker_error(exc, self._url, "opening the publishing channel") from None
        line = self._line = _Line(channel)
        channel.closing.add_done_callback(lambda _: self._lose(line))
        return line

    def _dead(self, line: _Line) -> bool:
        if not line.lost and line.channel.is_closed:
            self._lose(line)  # its close callback may not have run yet
        return line.lost

    async def _write_some(self) -> None:
        line = await self._line_now()
        await self._verify_exchanges(line)
        if self._dead(line):
            return
        if (
            len(line.unconfirmed) >= MAX_UNCONFIRMED
            or line.alone is not None
            or (line.unconfirmed and self._queue and _waits_alone(self._queue[0]))
        ):
            # A suspect is written alone: wait for the confirms (or the close) before it.
            self._room.clear()
            await self._room.wait()
            return
        batch, parts = self._take_batch(line)
        if not batch:
            return
        channel = line.channel
        drained = asyncio.get_running_loop().create_future()
        payload = ChannelFrame(payload=b"".join(parts), should_close=False, drain_future=drained)
        try:
            channel.write_queue.put_nowait(payload)
        except asyncio.QueueFull:
            # The queue of a connection that died is never emptied: do not wait for ever.
            put = asyncio.ensure_future(channel.write_queue.put(payload))
            closing = channel.closing
            await asyncio.wait([put, closing], return_when=asyncio.FIRST_COMPLETED)
            closing.cancel()
            if not put.done():
                put.cancel()
                self._lose(line)  # the batch goes back to the queue, not written
                return
        for out in batch:
            out.sent = True
        # Let the socket take it before the next batch (TCP back-pressure).
        closing = channel.closing
        await asyncio.wait([drained, closing], return_when=asyncio.FIRST_COMPLETED)
        closing.cancel()

    def _take_batch(self, line: _Line) -> tuple[list[Outgoing], list[bytes]]:
        """Take what goes in one write, registering each confirmation with aiormq's channel."""
        loop = asyncio.get_running_loop()
        channel = line.channel
        number = channel.number
        max_content = channel.max_content_size
        confirmations = channel.confirmations
        ids = channel.message_id_delivery_tag
        unconfirmed = line.unconfirmed
        queue = self._queue
        parts: list[bytes] = []
        batch: list[Outgoing] = []
        size = 0
        most = min(BATCH_MESSAGES, MAX_UNCONFIRMED - len(unconfirmed))
        limit = self._known_limit()
        while queue and len(batch) < most and size < BATCH_BYTES:
            out = queue[0]
            if out.done:
                queue.popleft()
                continue
            if out.exchange not in line.verified:
                break  # verified before the next batch
            if out.suspect and (batch or unconfirmed):
                break  # written alone, once what is before it is confirmed
            queue.popleft()
            if limit is not None and len(out.body) > limit:
                out.settle(self._too_large(out, len(out.body), limit))
                continue
            if len(out.header) > max_content:  # the broker would close the connection
                out.settle(self._headers_too_large(out, max_content))
                continue
            channel.delivery_tag += 1
            tag = channel.delivery_tag
            future = loop.create_future()
            future.add_done_callback(out)
            out.future = future
            out.line = line
            out.tag = tag
            confirmations[tag] = future
            ids[out.message_id] = tag
            unconfirmed[tag] = out
            batch.append(out)
            _frame_into(parts, out, number, max_content)
            size += len(out.body) + 64
            if out.suspect:
                line.alone = out
                break
        return batch, parts

    def _known_limit(self) -> int | None:
        """The broker's ``max_message_size``, once a refusal on this connection said it."""
        known = self._size_limit
        if known is None or known[0] != self._supervisor.generation:
            return None
        return known[1]

    def _headers_too_large(self, out: Outgoing, room: int) -> MessageTooLarge:
        """A content header over ``frame_max`` (headers filled from large values): the broker
        closes the whole connection over such a frame, and it came back on the next one."""
        return MessageTooLarge(
            f"{out.describe()} was not sent: its properties and headers take "
            f"{len(out.header)} bytes, over the {room} bytes one frame carries on this "
            "connection (frame_max); send less in headers (a header filled from a field "
            "takes the field's whole value)",
            size=len(out.header),
            limit=room,
        )

    def _too_large(self, out: Outgoing, size: int, limit: int) -> MessageTooLarge:
        return MessageTooLarge(
            f"RabbitMQ at {self._url.endpoint} refused {out.describe()}: its body is "
            f"{size} bytes, over the broker's max_message_size of {limit} bytes; raise the "
            "broker's max_message_size or send less (a reference to the data); it was not "
            "written again",
            size=size,
            limit=limit,
        )

    async def _verify_exchanges(self, line: _Line) -> None:
        """Check each exchange the next batch goes to that this channel has not seen; fail
        the messages queued now for one that is missing (the next ones are checked anew)."""
        upcoming = list(itertools.islice(self._queue, BATCH_MESSAGES))
        unknown = {out.exchange for out in upcoming if not out.done} - line.verified
        for exchange in sorted(unknown):
            probe = self._probe
            try:
                if probe is None or probe.is_closed:
                    connection = await self._supervisor.connection()
                    probe = self._probe = await connection.channel(
                        publisher_confirms=False, timeout=self._timeout
                    )
                await probe.exchange_declare(exchange, passive=True, timeout=self._timeout)
            except amqp_errors.ChannelNotFoundEntity as exc:
                missing = broker_error(
                    exc,
                    self._url,
                    f"exchange {exchange!r} does not exist now: `rabbitry apply` declares it; "
                    "a later publish checks again",
                )
                for out in upcoming:
                    if out.exchange == exchange:
                        out.settle(_copy(missing))  # done: the writer drops it
            except Exception as exc:
                raise broker_error(exc, self._url, f"checking exchange {exchange!r}") from None
            else:
                line.verified.add(exchange)
            if self._dead(line):
                return

    # -- aiormq's reader's side ---------------------------------------------

    def _confirmed(self, out: Outgoing, future: asyncio.Future[Any]) -> None:
        line = out.line
        if out.future is not future or line is None:
            return  # an earlier attempt's, on a channel that is gone
        out.line = out.future = None
        if line.alone is out:
            line.alone = None
        line.unconfirmed.pop(out.tag, None)
        line.channel.message_id_delivery_tag.pop(out.message_id, None)
        if len(line.unconfirmed) < MAX_UNCONFIRMED // 2:
            self._room.set()
        if future.cancelled():
            return
        failure = future.exception()
        if isinstance(failure, amqp_errors.DeliveryError) and isinstance(
            failure.frame, spec.Basic.Nack
        ):
            # A nack (aiormq reports a return as a DeliveryError too): the message is
            # refused, the caller decides. The channel is retired, for a channel can go on
            # nacking everything: RabbitMQ 3.10 nacked every publish on a channel opened
            # just as a quorum queue's leader node crashed (9,758 nacks in 61 s) while a
            # new channel was acked at once.
            self._retire(line)
        else:
            self._closes = 0  # the broker takes messages on this channel
        if failure is None:
            out.settle(None)
        else:
            out.settle(broker_error(failure, self._url, out.describe()))

    def _retire(self, line: _Line) -> None:
        """Write on a new channel from now on; what ``line`` has unconfirmed is written again."""
        if line.lost:
            return
        self._lose(line)
        channel = line.channel
        task = asyncio.ensure_future(channel.close())
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    def _lose(self, line: _Line) -> None:
        """``line``'s channel closed: what it did not confirm is written again on the next,
        except what the broker refused for what it is (see the module's docstring)."""
        if line.lost:
            return
        line.lost = True
        if self._line is line:
            self._line = None
        closing = line.channel.closing
        reason = closing.exception() if closing.done() and not closing.cancelled() else None
        pending = [out for _, out in sorted(line.unconfirmed.items()) if out.line is line]
        line.unconfirmed = {}
        self._room.set()
        for out in pending:
            out.line = out.future = None
        pending = [out for out in pending if not out.done]
        if self._closed:
            return
        by_broker = _closed_by_broker(reason)
        if by_broker:
            self._closes += 1
        again = self._refused(pending, reason) if by_broker else pending
        if not again:
            return
        log.warning(
            "the publishing channel closed (%s); writing %d unconfirmed message(s) again%s",
            reason,
            len(again),
            ", one at a time" if again[0].suspect else "",
            extra={"reason": str(reason), "attempt": self._closes},
        )
        self._queue.extendleft(reversed(again))
        self._wakeup.set()

    def _refused(self, pending: list[Outgoing], reason: BaseException | None) -> list[Outgoing]:
        """The broker closed the channel over a message: fail the culprits, each alone, and
        return the messages to write again."""
        assert reason is not None
        refused = _refused_exchange(reason)
        too_large = _TOO_LARGE.search(_reply_text(reason))
        limit = 0
        if too_large is not None:
            limit = int(too_large.group(2))
            self._size_limit = (self._supervisor.generation, limit)
        again: list[Outgoing] = []
        culprits: list[tuple[Outgoing, PublishFailed | BrokerError]] = []
        for out in pending:
            out.closes += 1
            if refused is not None and out.exchange == refused:
                culprits.append((out, broker_error(reason, self._url, out.describe())))
            elif too_large is not None and len(out.body) > limit:
                culprits.append((out, self._too_large(out, len(out.body), limit)))
            else:
                again.append(out)
        if refused is None and too_large is None:
            if len(again) == 1:
                # The only message unconfirmed: everything before it was taken, nothing
                # after it written.  It is the one.
                culprit = again.pop()
                culprits.append((culprit, self._refusal(culprit, reason)))
            for out in list(again):
                if out.closes >= MAX_CLOSES:
                    again.remove(out)
                    culprits.append((out, self._refusal(out, reason, closes=out.closes)))
            for out in again:
                out.suspect = True
        for out, failure in culprits:
            log.warning(
                "RabbitMQ refused %s: %s",
                out.describe(),
                reason,
                extra=out.fields(reason=str(reason)),
            )
            out.settle(failure)
        return again

    def _refusal(self, out: Outgoing, reason: BaseException, *, closes: int = 1) -> PublishRefused:
        times = f" {closes} times" if closes > 1 else ""
        return PublishRefused(
            f"RabbitMQ at {self._url.endpoint} closed the publishing channel{times} over "
            f"{out.describe()}: {_reply_text(reason) or reason}; it was not written again "
            "(it would close every channel it is written on)"
        )


def _waits_alone(out: Outgoing) -> bool:
    """``out`` is written alone, once every message before it is confirmed."""
    return out.suspect and not out.done


def _frame_into(parts: list[bytes], out: Outgoing, number: int, max_content: int) -> None:
    """Append ``out``'s frames on channel ``number``: method, header, body in pieces."""
    frame = _frames.frame
    parts.extend(frame(_frames.METHOD, number, out.method))
    parts.extend(frame(_frames.HEADER, number, out.header))
    body = out.body
    if len(body) <= max_content:
        if body:
            parts.extend(frame(_frames.BODY, number, body))
    else:
        for start in range(0, len(body), max_content):
            parts.extend(frame(_frames.BODY, number, body[start : start + max_content]))


def _closed_by_broker(reason: BaseException | None) -> bool:
    """The broker closed the channel (a channel error): not the connection, not us."""
    return isinstance(reason, amqp_errors.ChannelClosed) and bool(_reply_text(reason))


def _reply_text(reason: BaseException) -> str:
    """The broker's reply text of a channel error (aiormq: the text, or (code, text))."""
    texts = [arg for arg in reason.args if isinstance(arg, str)]
    return texts[0] if texts else ""


def _refused_exchange(reason: BaseException | None) -> str | None:
    """The exchange a channel error is about, when it is a 403/404 naming one."""
    if not isinstance(reason, amqp_errors.ChannelNotFoundEntity | amqp_errors.ChannelAccessRefused):
        return None
    match = _NAMED_EXCHANGE.search(str(reason.args[0]) if reason.args else "")
    return match.group(1) if match else None


def _copy(error: BrokerError) -> BrokerError:
    """A fresh instance of ``error``, for each caller (notes and tracebacks are per raise)."""
    return type(error)(*error.args)
