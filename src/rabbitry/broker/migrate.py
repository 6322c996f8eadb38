"""``apply --migrate``: replace a queue without losing its messages, bindings or publishes.

A queue whose type, durability or arguments change must be deleted and
declared again; its messages, and its bindings the spec does not own (made at
run time), would go with it.  A migration parks them in a temporary queue
instead, and moves them back once the queue is new.

Names.  The temporary queue of queue ``Q`` is ``rabbitry.migrate.Q``; when that
is longer than AMQP's 255 bytes, ``rabbitry.migrate.`` + the SHA-256 of ``Q``
in hex (``temporary_queue``).  The name is all a later run needs to find an
unfinished migration: ``plan`` shows it as a change (``Change.drains_into``),
never as an unmanaged queue, so ``--prune`` never deletes it for being
unknown.

The state machine (Q the queue, T its temporary queue, B the bindings to
keep: those of Q and of T on the broker when the step starts, read through the
management API, as exchange → queue routes).  Every step is safe to repeat,
so a run cut anywhere (connection lost, broker restarted, process killed)
is finished by the next ``apply --migrate``::

    M1 ensure T          passive declare; if absent, declare it durable, no
                         arguments (nothing expires or overflows while parked),
                         quorum if Q was quorum (it persists every message), else
                         classic
    M2 bind T with B,    route by route: each bind of T followed at once by the
    M3 unbind Q from B   unbind of Q, so that publishes reach T and no longer Q
                         (one routed to both in between is a duplicate later)
    M4 move Q → T        consume Q; copy each message to T with publisher confirms;
                         ack the original only after its copy is confirmed
    M5 delete Q          classic: ``if_empty`` (a message that came since M4 → M4
                         again); quorum: when a passive declare counts 0 (the flag
                         is refused). Its consumers get a cancel.
    M6 declare Q         the spec's type, durability and arguments
    M7 bind Q with B,    route by route as M2/M3: publishes reach Q only
    M8 unbind T from B
    M9 move T → Q        as M4
    M10 delete T         when a passive declare counts 0 (nothing routes to it now)

``migrate`` runs M1-M10 for a queue the plan replaces; ``finish`` runs
M7-M10 for a T that a cut run left (its Q was declared by the same apply's
queue stage, or before); a T that is gone is a finished migration.  Where a
run is cut, what the broker holds says where the next one resumes: Q old
and T present → M1 (every step up to the cut repeats harmlessly); Q absent
or new → the plan creates Q, then ``finish``.

Delivery is at least once: a copy confirmed whose original's ack was lost
with the connection is moved again (a duplicate), never lost; so is a message
published in the one round trip between a route's bind and unbind (M2/M3,
M7/M8; 0-30 of ~1,900 published during a migration in the tests).
Properties and headers (``x-death`` included) are copied as the broker
delivered them, but for ``x-delivery-count``, a quorum queue's note on each
delivery (the new queue counts its own).  The queue's own settings (TTL,
length limits) count from the message's arrival in the new queue: a new
``max_length`` below what the queue holds drops (or dead-letters) the
oldest, as it says, and with ``overflow: reject-publish`` the broker's nack
stops the migration with the rest kept in T.

Limits.  A stream is refused (its messages are read by offset, never
removed), and so is an exclusive queue (its connection owns it).  Messages a
consumer of the old queue holds unacknowledged when it is deleted go with it
(they were delivered to that consumer); a publish straight to Q through the
default exchange between M5 and M6 is unroutable (returned to a ``mandatory``
publisher, which retries).  On a quorum queue, a cut run requeues the
messages in flight (at most ``PREFETCH``), which counts as a delivery
attempt against ``x-delivery-limit``.  A single-active-consumer queue whose
active consumer is another's delivers nothing to the mover: it times out.

Speed.  One connection, two channels: the source's with a prefetch of
``PREFETCH``, the target's with confirms; copies written up to ``BATCH`` in
one socket write (frames marshalled here: aiormq's ``basic_publish`` is one
write a message), with the ack of what is confirmed in the same write (one
``multiple`` ack per run of confirmed copies).  ``bench/migrate.py``, 100,000
messages of 64 bytes (2 cores, the broker on the same machine, other sessions
loading it): 41 s, ~4,900 moves/s (each message moves twice), against 102 s
for the same steps moved with aiormq's awaited confirmed ``basic_publish``
and an ack per message: 2.5x.  CPU bound: per move ~90 µs of this process
(most of it aiormq reading the delivery's three frames) and ~85 µs of the
broker.  The prefetch does not matter past a few hundred (250, 1,000, 4,000:
within the noise); 1,000 bounds what a cut run moves again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiormq
import aiormq.exceptions as amqp_errors
import pamqp.frame
from aiormq.abc import AbstractChannel, AbstractConnection, ChannelFrame, DeliveredMessage
from pamqp.commands import Basic, Queue
from pamqp.common import FieldTable

from rabbitry.broker import _frames
from rabbitry.broker._aiormq import consumer_tag, frame_channel, queue_counts
from rabbitry.broker.amqp import broker_error, connect
from rabbitry.broker.management import read_rows
from rabbitry.broker.state import BindingState, QueueState, normalise_arguments
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import (
    BrokerError,
    BrokerTimeout,
    InvalidArgument,
    NotFound,
    Option,
    Phrase,
    with_hint,
)

__all__ = [
    "BATCH",
    "GATHER",
    "PREFETCH",
    "PREFIX",
    "Migrated",
    "Moved",
    "finish",
    "migrate",
    "refusal",
    "temporary_queue",
]

PREFIX = "rabbitry.migrate."
#: Deliveries unacknowledged at once on the source (``bench/migrate.py`` chose it).
PREFETCH = 1000
#: Most copies in one socket write.
BATCH = 500
#: Seconds the writer waits for more deliveries to fill a write while copies are in flight.
GATHER = 0.002
#: AMQP's limit on a queue name, in bytes.
_NAME_LIMIT = 255
#: Seconds between counts of a source that seems drained.
_POLL = 0.05
#: Times M4/M9 and the delete are tried while messages keep arriving.
_ROUNDS = 20
#: The header a quorum queue adds to each delivery.
_DELIVERY_COUNT = "x-delivery-count"

#: ``moved(queue, messages)``: messages moved so far out of (then back into) ``queue``.
Moved = Callable[[str, int], None]
T = TypeVar("T")


def temporary_queue(queue: str) -> str:
    """Where ``apply --migrate`` parks ``queue``'s messages: ``rabbitry.migrate.<queue>``.

    A name that would pass AMQP's 255-byte limit is ``rabbitry.migrate.`` + the
    SHA-256 of ``queue`` in hex: deterministic, so a later run finds it.
    """
    name = PREFIX + queue
    if len(name.encode()) <= _NAME_LIMIT:
        return name
    return PREFIX + hashlib.sha256(queue.encode()).hexdigest()


#: How a cut or stopped migration is finished.
_AGAIN = Phrase.of("apply again with ", Option.MIGRATE)


def refusal(queue: QueueState) -> str:
    """Why the queue as the broker has it cannot be migrated; ``""`` when it can."""
    if queue.type == "stream":
        return (
            "a stream cannot be drained (its messages are read by offset, never removed); "
            "replace it losing them, or declare a new stream beside it"
        )
    if queue.exclusive:
        return "it is exclusive to a running connection, which owns it: stop that connection"
    return ""


@dataclass(frozen=True)
class Migrated:
    """What one migration did."""

    queue: str
    temporary: str
    moved_out: int  # Q → T (M4)
    moved_back: int  # T → Q (M9)
    bindings: int  # routes kept (B)
    seconds: float


async def migrate(
    url: BrokerURL,
    want: QueueState,
    before: QueueState,
    *,
    timeout: float,
    moved: Moved | None = None,
) -> Migrated:
    """Replace ``before`` (on the broker) with ``want`` (the spec's), steps M1-M10.

    ``timeout`` bounds every broker call, and every wait for the mover's
    progress; raises ``InvalidArgument`` (before touching anything) for a queue
    that cannot be migrated, else a ``BrokerError`` naming the step.
    """
    why = refusal(before)
    if why:
        raise InvalidArgument(f"queue {want.name!r} cannot be migrated: {why}")
    started = time.monotonic()
    name, temp = want.name, temporary_queue(want.name)
    routes = await _routes(url, (name, temp), timeout)
    try:
        async with _session(url, timeout) as s:
            await s.ensure_temporary(temp, quorum=before.type == "quorum")
            await s.reroute(routes, name, temp)
            out = await s.empty(name, into=temp, guard=before.type == "classic", moved=moved)
            await s.declare(want)
            await s.reroute(routes, temp, name)
            back = await s.empty(temp, into=name, guard=False, moved=moved)
    except BrokerError as exc:
        raise _cut(exc, name, temp) from None
    return Migrated(name, temp, out, back, len(routes), time.monotonic() - started)


def _cut(exc: BrokerError, queue: str, temp: str) -> BrokerError:
    """``exc`` (its type and fields kept), saying what a cut migration leaves and how to
    finish it: whoever reads only the error must know that nothing is lost."""
    return with_hint(
        exc,
        Phrase.of(
            f"the migration of queue {queue!r} is cut: what it has moved waits in {temp!r}, and ",
            _AGAIN,
            " finishes it",
        ),
    )


async def finish(
    url: BrokerURL, queue: str, *, timeout: float, moved: Moved | None = None
) -> Migrated:
    """Finish a cut migration of ``queue`` (M7-M10); nothing to do when its T is gone."""
    started = time.monotonic()
    temp = temporary_queue(queue)
    routes = await _routes(url, (temp,), timeout)
    async with _session(url, timeout) as s:
        if await s.count(temp) is None:
            return Migrated(queue, temp, 0, 0, 0, time.monotonic() - started)
        if await s.count(queue) is None:
            raise NotFound(
                Phrase.of(
                    f"RabbitMQ at {url.endpoint}: queue {queue!r} does not exist, and "
                    f"{temp!r} holds its messages from a cut migration; ",
                    _AGAIN,
                    " (it declares the queue first)",
                )
            )
        try:
            await s.reroute(routes, temp, queue)
            back = await s.empty(temp, into=queue, guard=False, moved=moved)
        except BrokerError as exc:
            raise _cut(exc, queue, temp) from None
    return Migrated(queue, temp, 0, back, len(routes), time.monotonic() - started)


# -- bindings --------------------------------------------------------------------


async def _routes(url: BrokerURL, queues: Iterable[str], timeout: float) -> tuple[_Route, ...]:
    """The exchange → queue bindings of ``queues`` now, each once (B of the state machine).

    Read through the management API: AMQP cannot list bindings, and a queue's
    bindings made at run time are not in the spec.
    """
    names = set(queues)
    try:
        rows = await read_rows(
            url,
            f"/api/bindings/{quote(url.vhost, safe='')}",
            timeout=timeout,
            query={"columns": "source,destination,destination_type,routing_key,arguments"},
        )
    except BrokerError as exc:
        raise with_hint(
            exc,
            Phrase.of(
                "a migration (",
                Option.MIGRATE,
                ") reads the bindings to keep through the management API",
            ),
        ) from None
    found = {
        _Route(row["source"], row.get("routing_key") or "", normalise_arguments(row["arguments"]))
        for row in rows
        if row["source"] and row["destination_type"] == "queue" and row["destination"] in names
    }
    return tuple(sorted(found, key=lambda r: (r.source, r.key, repr(r.arguments))))


@dataclass(frozen=True)
class _Route:
    """A binding without its queue: what B holds, applied to Q or to T."""

    source: str
    key: str
    arguments: tuple[tuple[str, Any], ...]

    def to(self, queue: str) -> BindingState:
        return BindingState(self.source, "queue", queue, self.key, self.arguments)


# -- the broker calls of one migration ---------------------------------------------


@contextlib.asynccontextmanager
async def _session(url: BrokerURL, timeout: float) -> AsyncIterator[_Session]:
    connection = await connect(url, timeout=timeout)
    try:
        yield _Session(connection, url, timeout)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), timeout)


def _queue_bind(b: BindingState) -> Callable[[AbstractChannel], Awaitable[Queue.BindOk]]:
    async def rpc(ch: AbstractChannel) -> Queue.BindOk:
        return await ch.queue_bind(
            b.destination, b.source, b.routing_key, arguments=b.declare_arguments()
        )

    return rpc


def _queue_unbind(b: BindingState) -> Callable[[AbstractChannel], Awaitable[Queue.UnbindOk]]:
    async def rpc(ch: AbstractChannel) -> Queue.UnbindOk:
        return await ch.queue_unbind(
            b.destination, b.source, b.routing_key, arguments=b.declare_arguments()
        )

    return rpc


class _Session:
    """One connection; RPCs on a control channel, reopened after an error closed it."""

    def __init__(self, connection: AbstractConnection, url: BrokerURL, timeout: float) -> None:
        self.connection = connection
        self.url = url
        self.timeout = timeout
        self._channel: AbstractChannel | None = None

    async def call(self, what: str, rpc: Callable[[AbstractChannel], Awaitable[T]]) -> T:
        try:
            if self._channel is None or self._channel.is_closed:
                self._channel = await asyncio.wait_for(
                    self.connection.channel(publisher_confirms=False), self.timeout
                )
            return await asyncio.wait_for(rpc(self._channel), self.timeout)
        except (TimeoutError, Exception) as exc:
            raise broker_error(exc, self.url, what) from None

    async def count(self, queue: str) -> int | None:
        """Ready messages in ``queue``; ``None`` when it does not exist."""
        try:
            ok = await self.call(
                f"counting queue {queue!r}", lambda ch: ch.queue_declare(queue, passive=True)
            )
        except NotFound:
            return None
        return queue_counts(ok)[0]

    async def ensure_temporary(self, temp: str, *, quorum: bool) -> None:
        """M1."""
        if await self.count(temp) is not None:
            return
        arguments: FieldTable = {"x-queue-type": "quorum"} if quorum else {}
        await self.call(
            f"declaring the temporary queue {temp!r}",
            lambda ch: ch.queue_declare(temp, durable=True, arguments=arguments),
        )

    async def declare(self, want: QueueState) -> None:
        """M6."""
        await self.call(
            f"queue {want.name!r}",
            lambda ch: ch.queue_declare(
                want.name,
                durable=want.durable,
                auto_delete=want.auto_delete,
                exclusive=False,
                arguments=want.declare_arguments(),
            ),
        )

    async def reroute(self, routes: Iterable[_Route], old: str, new: str) -> None:
        """M2+M3, M7+M8: each route bound to ``new``, then at once unbound from ``old``.

        Both are idempotent (RabbitMQ answers unbind-ok for a binding that is not
        there).  A message routed between the two reaches both queues: the window
        is one round trip per route, where a bind-all-then-unbind-all would keep
        every route doubled for the whole step.
        """
        for route in routes:
            b = route.to(new)
            await self.call(f"binding {b.describe()}", _queue_bind(b))
            b = route.to(old)
            await self.call(f"unbinding {b.describe()}", _queue_unbind(b))

    async def empty(self, source: str, *, into: str, guard: bool, moved: Moved | None) -> int:
        """M4+M5 and M9+M10: move ``source`` into ``into`` until it is empty, then delete it.

        ``guard``: delete with ``if_empty`` (classic queues only), so that a message
        that arrived after the move keeps it, and it is moved too.
        """
        total = 0
        for _ in range(_ROUNDS):
            if await self.count(source) is None:
                return total  # deleted already: a repeated step
            total += await _Mover(self, source, into, moved, total).run()
            if guard:
                try:
                    await self.call(
                        f"deleting queue {source!r}",
                        lambda ch: ch.queue_delete(source, if_empty=True),
                    )
                except BrokerError as exc:
                    if "not empty" in str(exc):
                        continue
                    raise
                return total
            if await self.count(source) == 0:
                await self.call(f"deleting queue {source!r}", lambda ch: ch.queue_delete(source))
                return total
        raise BrokerError(
            Phrase.of(
                f"RabbitMQ at {self.url.endpoint}: queue {source!r} kept getting messages "
                f"while they were moved to {into!r} ({_ROUNDS} rounds); publishers send to it "
                "straight (default exchange): stop them, then ",
                _AGAIN,
            )
        )


# -- the mover ---------------------------------------------------------------------------


class _Mover:
    """Moves every message of ``source`` to ``target`` through the default exchange.

    A copy is published ``mandatory`` with the original's properties and body;
    the original is acked once its copy is confirmed, as one ``multiple`` ack
    per run of confirmed copies.  A ``basic.return`` (``target`` is gone) or a
    ``basic.nack`` (``target`` refused it: a length limit with
    ``reject-publish``) stops the mover before it acks anything more: what is
    unacked goes back to ``source`` when the channel closes.
    """

    def __init__(
        self, session: _Session, source: str, target: str, moved: Moved | None, before: int
    ) -> None:
        self.session = session
        self.url = session.url
        self.timeout = session.timeout
        self.source = source
        self.target = target
        self.report = moved
        self.before = before
        self.method = _frames.publish_method("", target, mandatory=True)
        #: Deliveries not yet written as copies: (source tag, message).
        self.pending: deque[tuple[int, DeliveredMessage]] = deque()
        #: Copies written, in order: (target tag, source tag), until acked.
        self.written: deque[tuple[int, int]] = deque()
        self.confirmed: set[int] = set()
        self.ack_upto = 0  # highest source tag whose copy and all before it are confirmed
        self.acked = 0
        self.delivered = 0
        self.moved = 0
        self.failure: BaseException | None = None
        self.wakeup = asyncio.Event()
        self.progress = asyncio.Event()

    async def run(self) -> int:
        session = self.session
        self.inbound = await session.call(
            "opening a channel", lambda _: session.connection.channel(publisher_confirms=False)
        )
        # The copies are written as frames on its write queue, their confirms registered
        # in its confirmations: aiormq's own Channel.
        self.outbound = frame_channel(
            await session.call(
                "opening a channel", lambda _: session.connection.channel(publisher_confirms=True)
            )
        )
        returned = self.outbound._on_return_frame

        async def on_return(frame: Basic.Return) -> None:
            # aiormq matches a return to its publish by message_id, which a
            # moved message may lack: any return stops the mover, before the
            # ack of the same message (the broker sends the return first).
            self._fail(
                NotFound(
                    Phrase.of(
                        f"RabbitMQ at {self.url.endpoint}: queue {self.target!r} disappeared "
                        f"while messages of {self.source!r} were moved into it; nothing "
                        "unconfirmed was acked: ",
                        _AGAIN,
                    )
                )
            )
            await returned(frame)

        # aiormq has no hook for a return it cannot match (its on_return_callbacks need a
        # message_id), so this channel's reader method is replaced, which mypy refuses for a
        # method.  tests/test_dependency_internals.py checks that aiormq still has it.
        self.outbound._on_return_frame = on_return  # type: ignore[method-assign]
        # One observer of each channel's closing (each ``closing`` read makes another).
        self.watch = [self.inbound.closing, self.outbound.closing]
        for observer in self.watch:
            observer.add_done_callback(self._closed)
        writer = asyncio.create_task(self._write(), name="rabbitry-migrate-writer")
        try:
            await self._call(lambda: self.inbound.basic_qos(prefetch_count=PREFETCH), "prefetch")
            ok = await self._call(
                lambda: self.inbound.basic_consume(self.source, self._deliver),
                f"consuming queue {self.source!r}",
            )
            await self._until_drained()
            await self._call(
                lambda: self.inbound.basic_cancel(consumer_tag(ok)), f"cancel on {self.source!r}"
            )
            await self._until_settled()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            for observer in self.watch:
                observer.remove_done_callback(self._closed)
                observer.cancel()
            for channel in (self.inbound, self.outbound):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(channel.close(), self.timeout)
        return self.moved

    async def _call(self, rpc: Callable[[], Awaitable[T]], what: str) -> T:
        try:
            return await asyncio.wait_for(rpc(), self.timeout)
        except (TimeoutError, Exception) as exc:
            raise broker_error(exc, self.url, what) from None

    # -- aiormq's side: deliveries and confirms

    async def _deliver(self, message: DeliveredMessage) -> None:
        self.delivered += 1
        self.pending.append((message.delivery_tag or 0, message))
        self.wakeup.set()
        self.progress.set()

    def _confirmed(self, tag: int, future: asyncio.Future[Any]) -> None:
        self.progress.set()
        if self.failure is not None:
            return
        if future.cancelled():
            self._fail(BrokerError(f"the channel publishing to {self.target!r} closed"))
            return
        problem = future.exception()
        if problem is not None:
            self._fail(broker_error(problem, self.url, f"copying into queue {self.target!r}"))
            return
        self.confirmed.add(tag)
        written = self.written
        while written and written[0][0] in self.confirmed:
            done, self.ack_upto = written.popleft()
            self.confirmed.discard(done)
            self.moved += 1
        self.wakeup.set()

    def _closed(self, observer: asyncio.Future[Any]) -> None:
        """A channel closed under the mover (the broker, or the connection, went)."""
        reason = None if observer.cancelled() else observer.exception()
        self._fail(
            broker_error(
                reason or amqp_errors.ChannelInvalidStateError("channel closed"),
                self.url,
                f"moving messages from queue {self.source!r} to {self.target!r}",
            )
        )

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.progress.set()

    # -- the writer: copies out, acks back

    async def _write(self) -> None:
        """Copies and the ack of what is confirmed, in one socket write at a time."""
        loop = asyncio.get_running_loop()
        out, inbound = self.outbound, self.inbound
        while True:
            await self.wakeup.wait()
            if len(self.pending) < BATCH and self.written:
                # Copies are in flight, so waiting stalls nothing: let deliveries and
                # confirms gather into one bigger write.
                await asyncio.sleep(GATHER)
            self.wakeup.clear()
            if self.failure is not None:
                continue
            parts: list[bytes] = []
            for _ in range(min(BATCH, len(self.pending))):
                source_tag, message = self.pending.popleft()
                out.delivery_tag += 1
                tag = out.delivery_tag
                future = loop.create_future()
                future.add_done_callback(functools.partial(self._confirmed, tag))
                out.confirmations[tag] = future
                self.written.append((tag, source_tag))
                parts.extend(self._frames(out, message))
            upto = self.ack_upto if self.ack_upto > self.acked else 0
            if upto:
                ack = Basic.Ack(delivery_tag=upto, multiple=True)
                parts.append(pamqp.frame.marshal(ack, inbound.number))
            if not parts:
                continue
            if self.pending:
                self.wakeup.set()
            drained = loop.create_future()
            await out.write_queue.put(
                ChannelFrame(payload=b"".join(parts), should_close=False, drain_future=drained)
            )
            # Let the socket take it before the next write (TCP back-pressure).
            done, _ = await asyncio.wait([drained], timeout=self.timeout)
            if not done:
                self._fail(
                    BrokerTimeout(
                        f"RabbitMQ at {self.url.endpoint} took no data for {self.timeout:g} s "
                        f"while messages were moved into queue {self.target!r}; run again"
                    )
                )
                continue
            if upto:
                self.acked = upto
                self.progress.set()
                if self.report is not None:
                    try:
                        self.report(self.source, self.before + self.moved)
                    except Exception as exc:  # the caller's: it stops the migration
                        self._fail(exc)

    def _frames(self, channel: aiormq.Channel, message: DeliveredMessage) -> list[bytes]:
        number, body = channel.number, message.body
        properties = message.header.properties
        headers = properties.headers
        if headers and _DELIVERY_COUNT in headers:
            # A quorum queue's note on this delivery, not part of the message: the
            # target counts its own deliveries.
            properties.headers = {k: v for k, v in headers.items() if k != _DELIVERY_COUNT}
            properties.headers = properties.headers or None
        header = _frames.raw_header(len(body), properties)
        parts = [*_frames.frame(_frames.METHOD, number, self.method)]
        parts.extend(_frames.frame(_frames.HEADER, number, header))
        size = channel.max_content_size
        for start in range(0, len(body), size):
            parts.extend(_frames.frame(_frames.BODY, number, body[start : start + size]))
        return parts

    # -- waiting

    def _settled(self) -> bool:
        """Every delivery so far is copied, confirmed and acked."""
        return not self.pending and not self.written and self.acked == self.ack_upto

    async def _until_drained(self) -> None:
        """Until ``source`` counts no ready message while nothing is in flight."""
        quiet_since = time.monotonic()
        while True:
            self._check()
            if self._settled():
                left = await self._call(
                    lambda: self.inbound.queue_declare(self.source, passive=True),
                    f"counting queue {self.source!r}",
                )
                if not left.message_count:
                    return
            if await self._wait(_POLL):
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > self.timeout:
                raise BrokerTimeout(
                    Phrase.of(
                        f"RabbitMQ at {self.url.endpoint} delivered nothing from queue "
                        f"{self.source!r} for {self.timeout:g} s while it counts messages; a "
                        "single-active-consumer queue delivers only to its active consumer: "
                        "stop it, then ",
                        _AGAIN,
                    )
                )

    async def _until_settled(self) -> None:
        """After the cancel: until the last deliveries are copied and acked."""
        quiet_since = time.monotonic()
        while not self._settled():
            self._check()
            if await self._wait(_POLL):
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > self.timeout:
                raise BrokerTimeout(
                    Phrase.of(
                        f"RabbitMQ at {self.url.endpoint} did not confirm copies into queue "
                        f"{self.target!r} within {self.timeout:g} s; ",
                        _AGAIN,
                        " (nothing unconfirmed was acked)",
                    )
                )
        self._check()

    async def _wait(self, seconds: float) -> bool:
        """Whether something happened (a delivery, a confirm, an ack, a failure) in ``seconds``."""
        self.progress.clear()
        try:
            await asyncio.wait_for(self.progress.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure
