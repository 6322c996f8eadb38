"""Consuming by contract: strict decoding, handlers, acks, dead-lettering, shutdown.

Each consumer (and each subscription, see ``_subscription``) has a channel of
its own with its prefetch.  A delivery is decoded strictly and validated
against the schema of its ``type`` (``_decode``); then:

- valid: the handler runs; its return acks the message.  An exception is
  retried in process (``attempts`` in all, pausing ``RETRY_PAUSE`` seconds,
  doubling: long enough to outlast a peer's reconnect), then the message is
  dead-lettered with the last exception as the reason.  On a queue with
  ``retry: [5s, 30s]`` in the spec (the contract's ``retry``) there is ONE try
  per delivery instead, and no pause in process: a failed try sends a copy
  (same body and properties) through the default exchange to the retry queue
  of the next delay, with ``x-rabbitry-attempt`` (the next try's number) and
  ``x-rabbitry-error`` (why this one failed), confirmed and ``mandatory``, and
  only then acks the original; the broker dead-letters the copy back to the
  queue when the retry queue's TTL ends.  The try number is read back from
  that header (``Delivery.attempt``; a value that is not a whole number >= 1
  is 1, a larger one than the last try is the last try: nothing loops).  A
  retry queue that cannot take the copy (missing: the spec's retry topology
  was not applied) dead-letters the message with that hint, logged at ERROR;
  a passing failure (connection) requeues it.  After the last try the message
  is dead-lettered with ``x-rabbitry-attempts`` (the tries made).  A handler
  that raises ``DeadLetter`` dead-letters it at once, on any queue: no retry,
  in process or delayed.  Each try has a
  deadline (``handler_timeout``, default ``DEFAULT_HANDLER_TIMEOUT``; ``None``:
  none): a handler still running then is cancelled and counts as failed, with
  the reason "handler did not finish within N s" -- a hung handler would
  otherwise hold its prefetch slot for ever, and RabbitMQ's own
  ``consumer_timeout`` (30 min) would then close the whole channel.
- refused (bad encoding or JSON, a type the queue does not take, a schema
  fault): dead-lettered at once.  Never acked and dropped, never requeued
  for ever.

Dead-lettering, and where the reason goes (the decision): RabbitMQ's
``basic.reject`` cannot add headers, so the broker's own dead-lettering
would carry only ``x-death`` (reason "rejected"), not *why*.  So the runtime
publishes a copy — same body, same properties, the original routing key (or
the queue's dead-letter routing key) — to the queue's dead-letter
exchange (its argument, or a policy of the spec) with the headers
``x-rabbitry-error`` (the reason, a sentence), ``x-rabbitry-path`` (the JSON
Pointer of the faulty value, "" when none), ``x-rabbitry-errors`` (EVERY
fault: an array of tables ``{path, message}``, at most ``MAX_FAULTS``), ``x-rabbitry-queue``,
``x-rabbitry-exchange`` and ``x-rabbitry-routing-key`` (where it came
from), with confirms and ``mandatory``, and only THEN acks the original.
Nothing is lost: until the copy is confirmed the original stays unacked
(a crash redelivers it).  If the copy cannot be placed — the dead-letter
exchange is missing or routes nowhere — or the queue has no dead-letter
exchange, the original is rejected without requeue (what the broker's
dead-lettering would do with it) and the reason is logged at ERROR.  If the
copy fails for a passing reason (connection), the original is requeued.
The copy keeps the original's ``message_id`` (and every other property), so a
log line and its dead letter can be matched.

A copy is only sent when its content header fits in one frame (the
connection's ``frame_max``): the reason headers grow with the message (the
reason quotes values, the path names keys), and a larger frame makes the
broker close the connection, after which the same message came back on the
next one, for ever.  So the reason is shortened when the full one does not
fit, and when the message's own headers leave no room the original is
rejected instead (the broker's dead-lettering takes it).  A delivery the
frame reader withheld (``broker/_aiormq.py``: headers it could not decode, or
a body over ``MAX_BODY``, dropped unread) is rejected the same way, never
copied: nothing large is held or sent twice, and the broker dead-letters the
original once.

A channel that closes (alone, with its connection, or by the broker's
``consumer_timeout``) hands its unacked deliveries back to the queue, which
delivers them again on the next channel.  So the handlers still running on the
closed channel are cancelled then (their acks could not be taken anyway), and a
delivery whose ``message_id`` is still being handled -- a handler that takes its
time to end after its cancel -- waits for that handler to end before its own
starts: never two handler tasks for one message.

Acks are written in batches: a run of settled deliveries at the head is
one ``basic.ack`` with ``multiple``; others are acked one by one, in the
same write.  ``cancel()`` is the graceful shutdown: ``basic.cancel``, let
the handlers in flight finish within the deadline, cancel the rest, then
close the channel, which requeues whatever was not acked.

A queue deleted or replaced under its consumer is waited for and consumed
again, and an idle consumer renews its channel, because RabbitMQ does not
always say that a quorum queue went: see ``_reattach``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, ChannelFrame, DeliveredMessage
from pamqp import commands as spec
from pamqp.common import FieldArray

from rabbitry._untrusted import shown
from rabbitry.broker._aiormq import (
    WithheldHeader,
    consumer_tag,
    delivered,
    frame_channel,
    limit_body,
    withheld,
)
from rabbitry.broker._frames import HeaderTemplate, raw_header
from rabbitry.broker.amqp import broker_error
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import (
    BrokerError,
    ContractViolation,
    DeadLetter,
    Fault,
    InvalidArgument,
    NotFound,
    PublishFailed,
    PublishTimeout,
)
from rabbitry.messaging import _telemetry
from rabbitry.messaging._decode import MAX_BODY, Refusal, decode
from rabbitry.messaging._delivery import ATTEMPT, Delivery, attempt_of
from rabbitry.messaging._publisher import Publisher, prepare_raw
from rabbitry.messaging._reattach import Absence, ReattachPolicy
from rabbitry.messaging._request import reply_outgoing
from rabbitry.messaging._supervisor import Supervisor, backoff
from rabbitry.messaging.contract import MessageContract, QueueContract
from rabbitry.spec.model import retry_label

__all__ = [
    "ACK",
    "DEFAULT_HANDLER_TIMEOUT",
    "REJECT",
    "REQUEUE",
    "Consumer",
    "Inbox",
    "Link",
    "Settler",
    "concurrency_of",
    "deadline_of",
]

log = logging.getLogger("rabbitry.messaging")

PENDING, ACK, REJECT, REQUEUE, SENT = 0, 1, 2, 3, 4
#: A try failed and another follows in process (never a settlement).
_AGAIN = -1
#: The dead letter's header with the handler's tries (after the last one, or a ``DeadLetter``).
ATTEMPTS = "x-rabbitry-attempts"
#: Seconds before a failed handler's first retry (then doubling).  A handler often fails
#: on something passing: a publish ``Unroutable`` while the consumer of a run-time
#: queue reconnects (its queue is declared again within about a second).
RETRY_PAUSE = 0.5
#: Longest reason written into ``x-rabbitry-error``.
MAX_REASON = 2000
#: Most faults listed in ``x-rabbitry-errors``, and the longest message of each: the
#: headers travel in one frame (``frame_max``, 128 KiB by default) with the message's own.
MAX_FAULTS = 50
MAX_FAULT_TEXT = 500
#: Seconds one try of a handler may take before it is cancelled (``handler_timeout``).
DEFAULT_HANDLER_TIMEOUT = 300.0


class Settler:
    """The acks of one channel, written in batches, in delivery order.

    A flush is due when a quarter of the prefetch window is settled, or
    ``DELAY`` seconds after the first settlement since the last one: few
    writes under load, little delay when idle.
    """

    DELAY = 0.002

    __slots__ = ("_channel", "_due", "_settled", "_soon", "_states", "_timer")

    def __init__(self, channel: aiormq.Channel, prefetch: int) -> None:
        self._channel = channel
        self._states: dict[int, int] = {}
        self._soon = False
        self._timer: asyncio.TimerHandle | None = None
        self._settled = 0
        self._due = max(1, prefetch // 4)

    def received(self, tag: int) -> None:
        self._states[tag] = PENDING

    def settle(self, tag: int, state: int) -> None:
        if tag not in self._states:
            return
        self._states[tag] = state
        self._settled += 1
        loop = asyncio.get_running_loop()
        if self._settled >= self._due:
            if not self._soon:
                self._soon = True
                loop.call_soon(self.flush)
        elif self._timer is None and not self._soon:
            self._timer = loop.call_later(self.DELAY, self.flush)

    def flush(self) -> None:
        self._soon = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._settled = 0
        channel = self._channel
        if channel.is_closed:
            self._states.clear()  # the broker requeues what this channel did not ack
            return
        frames: list[spec.Basic.Ack | spec.Basic.Nack] = []
        states = self._states
        last_ack = 0
        head = True
        for tag, state in list(states.items()):
            if state == PENDING:
                if head and last_ack:
                    frames.append(spec.Basic.Ack(delivery_tag=last_ack, multiple=True))
                    last_ack = 0
                head = False
                continue
            if head:
                del states[tag]
                if state == ACK:
                    last_ack = tag
                elif state != SENT:
                    if last_ack:
                        frames.append(spec.Basic.Ack(delivery_tag=last_ack, multiple=True))
                        last_ack = 0
                    frames.append(_refusal(tag, state))
            elif state != SENT:
                states[tag] = SENT
                frames.append(
                    spec.Basic.Ack(delivery_tag=tag) if state == ACK else _refusal(tag, state)
                )
        if last_ack:
            frames.append(spec.Basic.Ack(delivery_tag=last_ack, multiple=True))
        if frames:
            payload = ChannelFrame.marshall(channel_number=channel.number, frames=frames)
            try:
                channel.write_queue.put_nowait(payload)
            except asyncio.QueueFull:
                asyncio.get_running_loop().create_task(channel.write_queue.put(payload))

    def pending(self) -> int:
        return sum(1 for state in self._states.values() if state == PENDING)

    @property
    def closed(self) -> bool:
        """Its channel closed: what it had not acked went back to the queue."""
        return bool(self._channel.is_closed)


def _refusal(tag: int, state: int) -> spec.Basic.Nack:
    return spec.Basic.Nack(delivery_tag=tag, multiple=False, requeue=state == REQUEUE)


class Link:
    """One consuming channel: its settler, consumer tag and the deliveries in hand on it."""

    __slots__ = (
        "abandoned",
        "active_at",
        "cancelled",
        "channel",
        "inflight",
        "renewed",
        "seen",
        "settler",
        "tag",
        "window",
    )

    def __init__(self, channel: aiormq.Channel, settler: Settler, now: float, window: int) -> None:
        self.channel = channel
        self.settler = settler
        #: Its prefetch: the client's, less what the links it replaced still hold.
        self.window = window
        self.tag: str | None = None
        self.inflight: set[asyncio.Task[Any]] = set()
        #: When it last received or finished a delivery (or was opened): the loop's clock.
        self.active_at = now
        #: The broker cancelled its consumer (no ``basic.cancel`` of ours is needed).
        self.cancelled = False
        #: Its channel closed and its handlers were cancelled (``Inbox._abandon``).
        self.abandoned = False
        #: Opened to replace an idle one (``idle_check``); ``seen``: it got a delivery since.
        self.renewed = False
        self.seen = False


class Inbox:
    """What consumers and subscriptions share: a channel, decoding, settling, dead-lettering,
    and coming back when the queue is deleted or replaced (``_reattach``)."""

    priority = 1

    @property
    def _url(self) -> BrokerURL:
        """The node in use now: errors name it, and it changes when the client moves."""
        return self._supervisor.url

    def __init__(
        self,
        supervisor: Supervisor,
        publisher: Publisher,
        queue: QueueContract,
        accepts: Mapping[str, MessageContract],
        *,
        prefetch: int,
        policy: ReattachPolicy,
    ) -> None:
        self._supervisor = supervisor
        self._publisher = publisher
        self._timeout = supervisor.timeout
        self.contract = queue
        self._accepts = dict(accepts)
        self._prefetch = prefetch
        self._policy = policy
        self._link: Link | None = None
        #: Links being retired: their handlers finish, their acks go out, then they close.
        self._old: set[Link] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._failure: BrokerError | None = None
        self._attached = asyncio.get_running_loop().create_future()
        self._done = asyncio.get_running_loop().create_future()
        self._retries = 0
        self._reattach: asyncio.Task[None] | None = None
        #: Set while the queue is gone: the loop that attaches again when it is back.
        self._comeback: asyncio.Task[None] | None = None
        self._absence: Absence | None = None
        self._watchdog: asyncio.Task[None] | None = None
        #: It consumed once: a queue missing from now on is waited for, not an error.
        self._ever = False
        self._lock = asyncio.Lock()
        #: message_id -> the task handling it now (on any link): a redelivery waits for it.
        self._handling: dict[str, asyncio.Task[Any]] = {}
        #: Called once when it stops for good (the client forgets it).
        self.on_stop: Callable[[], None] | None = None

    @property
    def queue_name(self) -> str:
        """The queue consumed from (a run-time queue's current, server-given name)."""
        return self.contract.name

    @property
    def _channel(self) -> aiormq.Channel | None:
        """The channel it consumes on now (``None`` while it has none)."""
        return self._link.channel if self._link is not None else None

    @property
    def consuming(self) -> bool:
        """Whether it consumes now: ``False`` while connecting, while its queue is gone
        (it waits for it: see ``gone_since``) and once stopped.  A readiness signal."""
        link = self._link
        return (
            link is not None
            and not link.channel.is_closed
            and self._absence is None
            and self._failure is None
            and not self._stopping
        )

    @property
    def failure(self) -> BrokerError | None:
        """Why it stopped on its own (queue gone longer than ``reattach_timeout``, access
        refused, connection given up); ``None`` while it consumes or waits for its queue."""
        return self._failure

    @property
    def gone_since(self) -> float | None:
        """When (``time.time()``) its queue went, while it waits for it; else ``None``."""
        return self._absence.began_at if self._absence is not None else None

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- life on the connection -----------------------------------------------

    async def attach(self, connection: AbstractConnection) -> None:
        async with self._lock:
            await self._attach(connection)

    async def _attach(self, connection: AbstractConnection) -> None:
        if self._stopping or self._failure is not None or self._comeback is not None:
            return  # a queue that is gone is waited for by its own loop
        current = self._link
        if current is not None and not current.channel.is_closed:
            return  # attached already (a reconnect and a channel retry can meet here)
        try:
            link = await self._open(connection)
        except Exception as exc:
            if connection.is_closed:
                raise
            error = broker_error(exc, self._url, f"consuming from queue {self.contract.name!r}")
            if isinstance(error, NotFound) and self._ever:
                self._gone(error)
            else:
                self._fail(error)
            return
        self._use(link)

    async def _open(self, connection: AbstractConnection) -> Link:
        """A new channel consuming from the queue (raises what the broker said)."""
        # Room for every frame the prefetch window can bring (3 a message): aiormq's
        # reader then hands them over without waiting for the channel's reader.
        opened = await connection.channel(
            publisher_confirms=False,
            frame_buffer_size=3 * self._prefetch + 16,
            timeout=self._timeout,
        )
        # Handlers still running on the link(s) this one replaces count against the
        # prefetch, so that no more than ``prefetch`` run at once (a worker's limit).
        current = self._link
        held = sum(len(old.inflight) for old in self._old)
        held += len(current.inflight) if current is not None else 0
        window = max(1, self._prefetch - held)
        try:
            channel = frame_channel(opened)  # the settler writes its acks on its write queue
            limit_body(channel, MAX_BODY)  # a larger body is dropped as it arrives, never held
            await channel.basic_qos(prefetch_count=window, timeout=self._timeout)
            await self._declare(channel)
            settler = Settler(channel, window)
            link = Link(channel, settler, asyncio.get_running_loop().time(), window)
            ok = await channel.basic_consume(
                self.queue_name, partial(self._deliver, link), timeout=self._timeout
            )
        except BaseException:
            await self._close(opened)
            raise
        link.tag = consumer_tag(ok)
        return link

    def _use(self, link: Link) -> None:
        """Consume on ``link`` from now on; the link it replaces is retired."""
        old, self._link = self._link, link
        if not link.renewed:  # a renewal of an idle channel is routine (DEBUG, in _check)
            log.info(
                "%s queue %r (prefetch %d)",
                "consuming again from" if self._ever else "consuming from",
                self.queue_name,
                link.window,
                extra={"queue": self.queue_name},
            )
        self._ever = True
        self._retries = 0
        channel = link.channel
        channel.on_consumer_cancel_callbacks.add(partial(self._cancelled_by_broker, link))
        channel.closing.add_done_callback(partial(self._channel_closed, link))
        absence, self._absence = self._absence, None
        if absence is not None:
            now = asyncio.get_running_loop().time()
            log.warning(
                "consuming from queue %r again, %.1f s after it went (at %s)",
                self.contract.name,
                absence.elapsed(now),
                absence.since(),
                extra={"queue": self.contract.name},
            )
        if not self._attached.done():
            self._attached.set_result(None)
        if old is not None and old is not link:
            self._retire(old)
        if self._watchdog is None and self._policy.idle_check > 0:
            self._watchdog = self._spawn(self._watch())

    async def _declare(self, channel: AbstractChannel) -> None:
        """Declare and bind what must exist before consuming (run-time queues)."""

    def detach(self, failure: BrokerError | None) -> None:
        link, self._link = self._link, None  # its channel went with the connection
        for each in (link, *self._old):
            if each is not None:
                self._abandon(each)
        if failure is not None:
            self._fail(failure)

    def _fail(self, failure: BrokerError) -> None:
        if self._failure is None and not self._stopping:
            self._failure = failure
            log.error(
                "consumer of queue %r stopped: %s",
                self.contract.name,
                failure,
                extra={"queue": self.contract.name, "reason": str(failure)},
            )
        self._supervisor.unregister(self)
        for task in (self._comeback, self._watchdog, self._reattach):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        for future in (self._attached, self._done):
            if not future.done():
                if self._failure is not None:
                    future.set_exception(self._failure)
                    future.exception()  # retrieved: nobody may be waiting
                else:
                    future.set_result(None)
        self._stopped()

    def _stopped(self) -> None:
        """The inbox will get nothing more (subscriptions also wake their reader)."""
        on_stop, self.on_stop = self.on_stop, None
        if on_stop is not None:
            on_stop()

    # -- the queue goes, and comes back ------------------------------------------

    def _cancelled_by_broker(self, link: Link, frame: spec.Basic.Cancel) -> None:
        link.cancelled = True
        if link is not self._link or self._stopping or self._failure is not None:
            return
        self._queue_lost()
        self._lost(
            link,
            NotFound(
                f"RabbitMQ at {self._url.endpoint} cancelled the consumer of queue "
                f"{self.contract.name!r}: the queue was deleted or replaced"
            ),
        )

    def _gone(self, reason: BrokerError) -> None:
        """The queue is gone: wait for it (``_come_back``), or fail after ``reattach_timeout``."""
        if self._stopping or self._failure is not None:
            return
        if self._absence is None:
            self._absence = Absence(self._policy, asyncio.get_running_loop().time())
            limit = self._policy.timeout
            log.warning(
                "%s; consuming again as soon as it exists (%s)",
                reason,
                "waiting for it for ever"
                if limit is None
                else f"giving up after {limit:g} s (reattach_timeout)",
                extra={"queue": self.contract.name, "reason": str(reason)},
            )
        if self._comeback is None:
            self._comeback = self._spawn(self._come_back(self._absence))

    def _lost(self, link: Link, reason: BrokerError) -> None:
        """``link``, the current one, receives nothing more (its queue, or an exchange bound to
        it, is gone): retire it and wait for the queue (``_gone``)."""
        self._link = None
        self._retire(link)
        self._gone(reason)

    def _queue_lost(self) -> None:
        """Hook: the queue consumed from no longer exists (a run-time one is declared anew)."""

    async def _come_back(self, absence: Absence) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        try:
            while not self._stopping and self._failure is None:
                remaining = absence.remaining(loop.time())
                if remaining is not None and remaining <= 0:
                    self._comeback = None
                    self._fail(self._gave_up(absence, loop.time()))
                    return
                pause = backoff(attempt)
                await asyncio.sleep(pause if remaining is None else min(pause, remaining))
                attempt += 1
                try:
                    connection = await self._supervisor.connection()
                except BrokerError:
                    return  # the supervisor gave up: it detaches everything with its failure
                async with self._lock:
                    if self._stopping or self._failure is not None:
                        return
                    try:
                        link = await self._open(connection)
                    except Exception as exc:
                        if connection.is_closed:
                            continue  # a reconnect follows; try on the next connection
                        what = f"consuming from queue {self.contract.name!r}"
                        error = broker_error(exc, self._url, what)
                        if not isinstance(error, NotFound):
                            self._comeback = None
                            self._fail(error)
                            return
                        now = loop.time()
                        if absence.report_due(now):
                            log.warning(
                                "queue %r has been gone for %.0f s (since %s); still trying (%s)",
                                self.contract.name,
                                absence.elapsed(now),
                                absence.since(),
                                error,
                                extra={"queue": self.contract.name, "reason": str(error)},
                            )
                        continue
                    self._comeback = None
                    self._use(link)
                    return
        finally:
            if self._comeback is asyncio.current_task():
                self._comeback = None

    def _gave_up(self, absence: Absence, now: float) -> NotFound:
        return NotFound(
            f"RabbitMQ at {self._url.endpoint}: queue {self.contract.name!r} has been gone for "
            f"{absence.elapsed(now):.0f} s (since {absence.since()}), longer than "
            f"reattach_timeout ({absence.policy.timeout:g} s), so its consumer stopped: declare "
            "it (`rabbitry apply`) and start the consumer again"
        )

    def _retire(self, link: Link) -> None:
        """Stop consuming on ``link``: its handlers finish and are acked, then it closes."""
        self._old.add(link)

        async def retire() -> None:
            channel = link.channel
            try:
                if not link.cancelled and link.tag is not None and not channel.is_closed:
                    with contextlib.suppress(Exception):
                        await channel.basic_cancel(link.tag, timeout=self._timeout)
                if link.inflight:
                    await asyncio.wait(set(link.inflight))
                link.settler.flush()
                await self._close(channel)
            finally:
                self._old.discard(link)

        self._spawn(retire())

    def _abandon(self, link: Link) -> None:
        """``link``'s channel closed: the broker takes back what it had not acked and delivers
        it again, so the handlers still running on it are cancelled (their acks would be lost
        anyway).  A redelivery waits for its predecessor to end (``_deliver``)."""
        if link.abandoned:
            return
        link.abandoned = True
        running = [task for task in link.inflight if not task.done()]
        for task in running:
            task.cancel()
        if running:
            log.warning(
                "the channel of queue %r closed with %d handler(s) running: cancelled; "
                "their messages are delivered again",
                self.queue_name,
                len(running),
                extra={"queue": self.queue_name, "reason": "channel closed"},
            )

    def _channel_closed(self, link: Link, closing: asyncio.Future[Any]) -> None:
        if not self._stopping:
            self._abandon(link)
        if link is not self._link or self._stopping:
            return
        self._link = None
        reason = None if closing.cancelled() else closing.exception()
        channel = link.channel
        if not channel.connection.is_closed and self._failure is None and self._comeback is None:
            # The channel alone closed (the connection is fine): open another.
            log.warning(
                "the channel of queue %r closed (%s)",
                self.queue_name,
                reason,
                extra={"queue": self.queue_name, "reason": str(reason)},
            )
            self._retries += 1
            self._reattach = self._spawn(self._attach_again())

    async def _attach_again(self) -> None:
        if self._retries > 5:
            self._fail(BrokerError(f"queue {self.contract.name!r}: its channel keeps closing"))
            return
        await asyncio.sleep(backoff(self._retries))
        with contextlib.suppress(BrokerError):
            await self.attach(await self._supervisor.connection())

    # -- while idle ----------------------------------------------------------------

    async def _watch(self) -> None:
        """Every ``idle_check`` seconds: ``_check`` (renew an idle channel, bind again)."""
        interval = self._policy.idle_check
        while not self._stopping and self._failure is None:
            await asyncio.sleep(interval)
            link = self._link
            if link is None or self._comeback is not None or not self._supervisor.is_connected:
                continue
            try:
                await self._check(link, interval)
            except Exception as exc:  # a passing failure: the next round tries again
                log.warning(
                    "checking queue %r: %s",
                    self.contract.name,
                    exc,
                    extra={"queue": self.contract.name, "reason": str(exc)},
                )

    async def _check(self, link: Link, interval: float) -> None:
        """Renew ``link`` when it has been idle for ``interval``: a quorum queue deleted and
        declared again leaves its consumer stuck without a cancel (see ``_reattach``).  Also
        when it has nothing in hand and a window narrowed by a link it replaced (full again).
        A link with handlers running is left alone (a renewal would exceed the prefetch)."""
        loop = asyncio.get_running_loop()
        if link.inflight:
            return
        narrow = link.window < self._prefetch and not self._old
        if not narrow and loop.time() - link.active_at < interval:
            return
        connection = await self._supervisor.connection()
        async with self._lock:
            if self._link is not link or self._stopping or self._failure is not None:
                return
            try:
                new = await self._open(connection)
            except Exception as exc:
                if connection.is_closed:
                    return
                error = broker_error(
                    exc, self._url, f"renewing the consumer of {self.queue_name!r}"
                )
                if isinstance(error, NotFound):  # gone, and no cancel came
                    self._lost(link, error)
                else:
                    log.warning(
                        "%s; keeping the current channel",
                        error,
                        extra={"queue": self.queue_name, "reason": str(error)},
                    )
                return
            new.renewed = True
            log.debug("renewed the idle consumer of queue %r", self.queue_name)
            self._use(new)

    # -- deliveries --------------------------------------------------------

    async def _deliver(self, link: Link, message: DeliveredMessage) -> None:
        """aiormq's consumer callback, one task per delivery."""
        frame, tag = delivered(message)
        settler = link.settler
        settler.received(tag)
        if link.renewed and not link.seen and frame.redelivered:
            log.warning(
                "queue %r: the first delivery after renewing its idle consumer is a "
                "redelivery: the previous consumer was likely stuck (a quorum queue deleted and "
                "declared again under it gets no cancel); consuming again",
                self.contract.name,
                extra={"queue": self.contract.name, "reason": "stuck consumer renewed"},
            )
        link.seen = True
        loop = asyncio.get_running_loop()
        link.active_at = loop.time()
        task = asyncio.current_task()
        message_id = message.header.properties.message_id
        if task is not None:
            link.inflight.add(task)
        try:
            if message_id and task is not None:
                await self._after_predecessor(message_id, task)
            if log.isEnabledFor(logging.DEBUG):  # per delivery: skip building the record
                log.debug(
                    "queue %r: delivery %s (%s)",
                    self.contract.name,
                    shown(message_id),
                    shown(message.header.properties.message_type),
                    extra={"queue": self.contract.name, "message_id": message_id},
                )
            header = withheld(message)
            if header is not None:
                settler.settle(tag, self._refuse_withheld(message, header))
                return
            result = decode(
                message.body,
                message.header.properties,
                exchange=frame.exchange,
                routing_key=frame.routing_key or "",
                redelivered=frame.redelivered,
                queue=self.contract.name,
                accepts=self._accepts,
            )
            if isinstance(result, Refusal):
                if _telemetry.ON:
                    _telemetry.refused(self.contract.name, message.header.properties.message_type)
                state: int | None = await self.dead_letter(message, result)
            elif _telemetry.ON:
                state = await _telemetry.processing(
                    partial(self._accept, result, message, settler, tag),
                    queue=self.contract.name,
                    exchange=frame.exchange,
                    routing_key=frame.routing_key or "",
                    tag=tag,
                    message_type=result.type,
                    message_id=message_id,
                    headers=message.header.properties.headers,
                )
            else:
                state = await self._accept(result, message, settler, tag)
            if state is not None:
                settler.settle(tag, state)
        finally:
            link.active_at = loop.time()
            if task is not None:
                link.inflight.discard(task)
                if message_id and self._handling.get(message_id) is task:
                    del self._handling[message_id]

    async def _after_predecessor(self, message_id: str, task: asyncio.Task[Any]) -> None:
        """Wait while another task still handles ``message_id`` (its channel closed and it was
        cancelled, but it has not ended yet; or a duplicate of the message): one at a time."""
        while (before := self._handling.get(message_id)) is not None and not before.done():
            log.warning(
                "queue %r: message %s is still being handled by the task of an earlier delivery; "
                "waiting for it to end",
                self.contract.name,
                shown(message_id),
                extra={
                    "queue": self.contract.name,
                    "message_id": message_id,
                    "reason": "still being handled",
                },
            )
            await asyncio.wait({before})
        self._handling[message_id] = task

    async def _accept(
        self, delivery: Delivery[Any], message: DeliveredMessage, settler: Settler, tag: int
    ) -> int | None:
        """Handle a valid delivery; the state to settle it with (None: settled later)."""
        raise NotImplementedError

    def _refuse_withheld(self, message: DeliveredMessage, header: WithheldHeader) -> int:
        """A delivery whose body or headers were not read (``broker/_aiormq.py``): rejected
        without requeue, so the queue's own dead-lettering takes the original, broker-side
        (no copy: there is nothing whole to copy)."""
        frame, _ = delivered(message)
        properties = header.properties
        queue = self.contract.name
        log.error(
            "queue %r refused %s (message_id %s): %s; it is rejected, so the broker "
            'dead-letters it (x-death reason "rejected") or drops it',
            queue,
            shown(properties.message_type or "a message"),
            shown(properties.message_id),
            header.reason,
            extra={
                "queue": queue,
                "exchange": frame.exchange,
                "routing_key": frame.routing_key,
                "message_id": properties.message_id,
                "message_type": properties.message_type,
                "reason": header.reason,
            },
        )
        return REJECT

    async def dead_letter(
        self, message: DeliveredMessage, refusal: Refusal, attempts: int | None = None
    ) -> int:
        """Put ``message`` where the queue's dead letters go, with ``refusal``; how to settle it.
        ``attempts``: the handler's tries, written as ``x-rabbitry-attempts`` (a refusal by
        the contract has none)."""
        frame, _ = delivered(message)
        properties = message.header.properties
        queue = self.contract.name
        what = _what(message)
        exchange = self.contract.dead_letter_exchange
        fields = {
            "queue": queue,
            "exchange": frame.exchange,
            "routing_key": frame.routing_key,
            "message_id": properties.message_id,
            "message_type": properties.message_type,
            "reason": refusal.reason,
        }
        if exchange is None:
            log.error(
                "queue %r refused %s: %s; the queue has no dead-letter exchange, so "
                "it is rejected and the broker drops it",
                queue,
                what,
                refusal.reason,
                extra=fields,
            )
            return REJECT
        routing_key = self.contract.dead_letter_routing_key or frame.routing_key or ""
        extra = {} if attempts is None else {ATTEMPTS: attempts}
        fits = _copy_headers(message, refusal, queue, frame, extra)
        if fits is None:
            log.error(
                "queue %r refused %s: %s; its dead-letter copy with the reason would not fit "
                "in one frame (frame_max %d), so it is rejected and the broker dead-letters "
                "or drops it",
                queue,
                what,
                refusal.reason,
                _frame_max(message),
                extra=fields,
            )
            return REJECT
        properties.headers = fits
        copy = prepare_raw(
            f"dead-letter copy of {what} from queue {queue!r}",
            exchange,
            routing_key,
            message.body,
            properties,
        )
        try:
            await self._publisher.send([copy], self._timeout)
        except (NotFound, PublishFailed) as exc:
            if isinstance(exc, PublishTimeout):
                log.warning("%s; the original goes back to queue %r", exc, queue, extra=fields)
                return REQUEUE
            log.error(
                "queue %r refused %s: %s; its dead-letter copy could not be placed "
                "(%s), so it is rejected and the broker dead-letters or drops it",
                queue,
                what,
                refusal.reason,
                exc,
                extra=fields,
            )
            return REJECT
        except BrokerError as exc:
            log.warning("%s; the original goes back to queue %r", exc, queue, extra=fields)
            return REQUEUE
        log.warning("queue %r dead-lettered %s: %s", queue, what, refusal.reason, extra=fields)
        return ACK

    # -- shutdown ----------------------------------------------------------

    async def _stop(self, timeout: float) -> None:
        """Stop consuming; let handlers finish within ``timeout``; the rest goes back."""
        if self._stopping:
            return
        async with self._lock:  # not while it attaches
            self._stopping = True
        self._supervisor.unregister(self)
        for task in (self._reattach, self._comeback, self._watchdog):
            if task is not None:
                task.cancel()
        link = self._link
        links = [*self._old, *([link] if link is not None else [])]
        for each in links:
            channel = each.channel
            if not each.cancelled and each.tag is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.basic_cancel(each.tag, timeout=self._timeout)
        inflight = {task for each in links for task in each.inflight}
        late: set[asyncio.Task[Any]] = set()
        if inflight:
            _, late = await asyncio.wait(inflight, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=self._timeout)
        log.info(
            "stopped consuming from queue %r: %d handler(s) finished, %d cancelled (requeued)",
            self.queue_name,
            len(inflight) - len(late),
            len(late),
            extra={"queue": self.queue_name},
        )
        for each in links:
            each.settler.flush()  # the acks go out before the channel closes
        for task in list(self._tasks):
            task.cancel()
        for each in links:
            if each is not link:
                await self._close(each.channel)
        await self._release(link.channel if link is not None else None)
        self._link = None
        for future in (self._attached, self._done):
            if not future.done():
                future.set_result(None)
        self._stopped()

    async def _release(self, channel: AbstractChannel | None) -> None:
        """Close the channel it consumed on last (a subscription also deletes its queue)."""
        await self._close(channel)

    async def _close(self, channel: AbstractChannel | None) -> None:
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), self._timeout)


def concurrency_of(limit: int | None) -> int | None:
    """A ``concurrency`` bound as a consumer takes it: ``None`` (the prefetch bounds) or >= 1."""
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise InvalidArgument(
            f"concurrency must be at least 1, not {limit} (None: as many as the prefetch)"
        )
    return limit


def deadline_of(seconds: float | None) -> float | None:
    """A handler deadline as ``asyncio.timeout`` takes it: ``None`` or ``math.inf`` is none."""
    if seconds is None or math.isinf(seconds):
        return None
    if seconds <= 0:
        raise InvalidArgument(
            f"handler_timeout must be positive, not {seconds:g} (None: no deadline)"
        )
    return seconds


#: Bytes of a content header frame besides its payload (type, channel, size, end octet).
_FRAME_OVERHEAD = 8
#: ``frame_max`` when the connection does not say (AMQP's minimum is 4096; RabbitMQ's
#: default, 131072, is what a client negotiates unless told otherwise).
_DEFAULT_FRAME_MAX = 131072
#: Longest reason, path and fault text in a copy whose full reason headers do not fit.
_SHORT = 200


def _reply_header(reply: MessageContract) -> dict[str, Any]:
    """A reply's content header: transient (direct reply-to keeps nothing on disk)."""
    return {
        "message_type": reply.name,
        "content_type": "application/json",
        "persistent": False,
        "app_id": None,
    }


def _frame_max(message: DeliveredMessage) -> int:
    """The largest frame the connection ``message`` came on takes (the copy goes to the same
    broker, on a connection tuned alike)."""
    tune = getattr(message.channel.connection, "connection_tune", None)
    frame_max = getattr(tune, "frame_max", None)
    return frame_max if isinstance(frame_max, int) and frame_max > 0 else _DEFAULT_FRAME_MAX


def _copy_headers(
    message: DeliveredMessage,
    refusal: Refusal,
    queue: str,
    frame: spec.Basic.Deliver,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The headers of ``message``'s dead-letter copy: its own and rabbitry's reason, so that
    the copy's content header fits in one frame; the reason is shortened when the full one
    does not fit, and ``None`` when not even the short one does (the original's headers fill
    the frame: the broker closes a connection that sends a larger frame, and the consumer
    would get the message again on the next one, for ever).  Every header rabbitry adds
    grows with what the message holds (the reason quotes its values, the path names its
    keys), so the size is measured, not assumed."""
    return _fit(
        message,
        (
            {
                "x-rabbitry-error": refusal.reason[: _SHORT if short else MAX_REASON],
                "x-rabbitry-path": refusal.path[:_SHORT] if short else refusal.path,
                "x-rabbitry-errors": _fault_tables(refusal, 1, _SHORT)
                if short
                else _fault_tables(refusal),
                "x-rabbitry-queue": queue,
                "x-rabbitry-exchange": frame.exchange,
                "x-rabbitry-routing-key": frame.routing_key,
                **(extra or {}),
            }
            for short in (False, True)
        ),
    )


def _retry_headers(message: DeliveredMessage, attempt: int, reason: str) -> dict[str, Any] | None:
    """The headers of ``message``'s copy for its retry queue: its own, the number of the try
    it goes back for and the reason of the failed one (shortened if the full one does not fit
    in one frame; ``None`` when not even the short one does: see ``_copy_headers``)."""
    return _fit(
        message,
        (
            {ATTEMPT: attempt, "x-rabbitry-error": reason[:longest]}
            for longest in (MAX_REASON, _SHORT)
        ),
    )


def _fit(message: DeliveredMessage, choices: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """``message``'s headers with the first of ``choices`` added whose content header fits in
    one frame (``frame_max``); ``None`` when none does."""
    properties = message.header.properties
    room = _frame_max(message) - _FRAME_OVERHEAD
    size = len(message.body)
    own = properties.headers
    for added in choices:
        headers = {**(own or {}), **added}
        properties.headers = headers
        try:
            fits = len(raw_header(size, properties)) <= room
        finally:
            properties.headers = own
        if fits:
            return headers
    return None


def _what(message: DeliveredMessage) -> str:
    """``message`` as the log lines and reasons name it: its type and ``message_id``."""
    properties = message.header.properties
    return (
        f"{shown(properties.message_type or 'a message')} "
        f"(message_id {shown(properties.message_id)})"
    )


def _delays(retry: tuple[tuple[int, str], ...]) -> str:
    """The delays of a queue's ``retry:`` as the spec writes them: ``1s, 5s``."""
    return ", ".join(retry_label(delay) for delay, _ in retry)


def _fault_tables(
    refusal: Refusal, most: int = MAX_FAULTS, longest: int = MAX_FAULT_TEXT
) -> FieldArray:
    """``x-rabbitry-errors``: every fault as ``{path, message}`` (the refusal itself if it has
    no list), at most ``MAX_FAULTS``; a last entry says how many more were left out."""
    faults = refusal.faults or (Fault(refusal.path, refusal.reason),)
    tables: FieldArray = [
        {"path": fault.path[:longest], "message": fault.reason[:longest]} for fault in faults[:most]
    ]
    if len(faults) > most:
        tables.append({"path": "", "message": f"and {len(faults) - most} more faults"})
    return tables


#: A handler's return value is ignored, save for a request (a message with a ``reply`` that
#: came with a ``reply_to``): then it is the reply's payload (``_request``).
Handler = Callable[[Delivery[Any]], Awaitable[Any]]


class Consumer(Inbox):
    """A registered consumer of a durable queue; ``cancel()`` stops it gracefully.

    Its handler gets each valid ``Delivery``; the message is acked when the
    handler returns.  An exception is retried (``attempts`` in all, in process;
    on a queue with ``retry:`` in the spec, once after each of its delays
    through its retry queues, and ``attempts`` does not apply) and the message
    then dead-lettered with the exception as the reason; ``DeadLetter`` raised
    by the handler dead-letters it at once.

    Its queue must exist when it starts (``ready()`` raises ``NotFound``
    otherwise: a deploy before ``rabbitry apply`` is a mistake to see at once).
    Once consuming, a queue deleted or replaced under it is waited for: it
    consumes again as soon as the queue exists (logged at WARNING, with the
    seconds it was gone); ``consuming`` is ``False`` and ``gone_since`` says
    since when meanwhile.  After ``reattach_timeout`` (default 300 s) it
    fails: ``wait()`` raises ``NotFound`` and ``failure`` says why, so a
    service awaiting ``wait()`` exits rather than idling.  Handlers in flight
    when the queue went finish on the old channel.  After ``idle_check``
    seconds (default 15) without a delivery it renews its channel, which also
    frees it when RabbitMQ lost track of it without a word (``_reattach``).
    Each try of the handler has ``handler_timeout`` seconds (default 300;
    ``None``: no deadline); one still running then is cancelled and counts as
    failed (retried, then dead-lettered), logged at WARNING.

    ``concurrency`` bounds the handlers running at once apart from the prefetch
    (``None``: the prefetch alone bounds them, as before).  A prefetch above it
    keeps the next messages in hand, decoded, so a freed slot starts at once
    without a round trip; the handler deadline counts from the slot, not from
    the delivery.  A delivery waiting for a slot when ``cancel()`` begins never
    starts: it is requeued (``basic.nack`` with ``requeue``) at once, and so is
    a handler cancelled at the drain deadline, before the channel closes.
    """

    def __init__(
        self,
        supervisor: Supervisor,
        publisher: Publisher,
        queue: QueueContract,
        accepts: Mapping[str, MessageContract],
        handler: Handler,
        *,
        prefetch: int,
        attempts: int,
        shutdown_timeout: float,
        policy: ReattachPolicy | None = None,
        handler_timeout: float | None = DEFAULT_HANDLER_TIMEOUT,
        concurrency: int | None = None,
        replies: Mapping[str, MessageContract] | None = None,
    ) -> None:
        policy = policy or ReattachPolicy()
        super().__init__(supervisor, publisher, queue, accepts, prefetch=prefetch, policy=policy)
        self._handler = handler
        self._attempts = max(1, attempts)
        #: Seconds one try of the handler may take (``None``: no deadline).
        self.handler_timeout = deadline_of(handler_timeout)
        self._shutdown_timeout = shutdown_timeout
        self._starting: asyncio.Task[None] | None = None
        #: Most handlers running at once (``None``: the prefetch is the bound).
        self.concurrency = concurrency_of(concurrency)
        self._slots = None if concurrency is None else asyncio.Semaphore(concurrency)
        #: Set when ``cancel()`` begins: nothing new starts, a waiting delivery is requeued.
        self._draining = asyncio.Event()
        #: Request message → its reply's contract and content header (``reply:`` in the spec).
        self._replies = {
            name: (reply, HeaderTemplate(**_reply_header(reply)))
            for name, reply in (replies or {}).items()
        }

    def __repr__(self) -> str:
        return f"<Consumer of queue {self.contract.name!r}>"

    @property
    def queue(self) -> str:
        return self.contract.name

    def _start(self) -> None:
        async def register() -> None:
            try:
                await self._supervisor.register(self)
            except BrokerError as exc:
                self._fail(exc)
            except Exception as exc:
                self._fail(broker_error(exc, self._url, f"consuming from queue {self.queue!r}"))

        self._starting = asyncio.get_running_loop().create_task(register())

    async def ready(self) -> None:
        """Wait until it consumes (raises why it could not: e.g. ``NotFound`` for its queue)."""
        await asyncio.shield(self._attached)

    async def wait(self) -> None:
        """Wait until it is cancelled; raises why, if it stopped on its own (e.g. ``NotFound``:
        its queue was gone longer than ``reattach_timeout``).  A service's main task awaits
        this (beside its shutdown signal) so that it exits when consuming ends."""
        await asyncio.shield(self._done)

    async def cancel(self, timeout: float | None = None) -> None:
        """Stop consuming; handlers in flight get ``timeout`` seconds to finish (default: the
        client's ``timeout``), the rest is cancelled and its messages requeued."""
        self._draining.set()
        if self._starting is not None and not self._starting.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._starting), self._timeout)
        await self._stop(self._shutdown_timeout if timeout is None else timeout)

    async def _accept(
        self, delivery: Delivery[Any], message: DeliveredMessage, settler: Settler, tag: int
    ) -> int | None:
        retry = self.contract.retry
        if retry:  # one try per delivery; the next comes back through a retry queue
            tries = len(retry) + 1
            attempt = min(attempt_of(delivery.headers), tries)  # a larger one: the last try
            if attempt != 1:
                delivery = replace(delivery, attempt=attempt)
            return await self._try(delivery, message, settler, tag, tries)
        tries = self._attempts
        for attempt in range(1, tries + 1):
            if attempt != 1:
                delivery = replace(delivery, attempt=attempt)
            state = await self._try(delivery, message, settler, tag, tries)
            if state != _AGAIN:
                return state
            await asyncio.sleep(RETRY_PAUSE * 2 ** (attempt - 1))
        return ACK  # pragma: no cover - the last try never returns _AGAIN

    async def _try(
        self,
        delivery: Delivery[Any],
        message: DeliveredMessage,
        settler: Settler,
        tag: int,
        tries: int,
    ) -> int:
        """Run the handler once (try ``delivery.attempt`` of ``tries``); how to settle the
        delivery, or ``_AGAIN``: try again in process."""
        if not await self._take_slot():
            return REQUEUE  # draining: it never started; back to the queue at once
        deadline = self.handler_timeout
        failure: Exception | None = None
        returned: Any = None
        try:
            async with asyncio.timeout(deadline) as scope:
                returned = await self._handler(delivery)
        except asyncio.CancelledError:
            if self._draining.is_set():  # the drain deadline: back before the channel closes
                settler.settle(tag, REQUEUE)
            raise
        except Exception as exc:
            failure = exc
        finally:
            if self._slots is not None:
                self._slots.release()
        if failure is None:
            if delivery.reply_to is not None and delivery.type in self._replies:
                return await self._answer(delivery, message, returned)
            return ACK
        attempt = delivery.attempt
        fields = {
            "queue": self.queue,
            "message_id": delivery.message_id,
            "message_type": delivery.type,
            "attempt": attempt,
        }
        if isinstance(failure, DeadLetter):
            reason = shown(failure.reason, sentence=True)
            log.warning(
                "handler of queue %r dead-lettered %s %s (attempt %d): %s",
                self.queue,
                delivery.type,
                shown(delivery.message_id),
                attempt,
                reason,
                extra={**fields, "reason": reason},
            )
            if _telemetry.ON:
                _telemetry.dead_lettered(self.queue, delivery.type, _telemetry.REFUSED)
            return await self.dead_letter(message, Refusal(reason), attempt)
        if isinstance(failure, TimeoutError) and scope.expired():
            reason = f"handler did not finish within {deadline:g} s"
        else:
            reason = f"{type(failure).__name__}: {shown(failure, sentence=True)}"
        fields["reason"] = reason
        retry = self.contract.retry
        if attempt < tries:
            if retry:
                return await self._retry_later(delivery, message, reason, tries)
            log.warning(
                "handler of queue %r failed on %s %s (attempt %d of %d): %s; retrying",
                self.queue,
                delivery.type,
                shown(delivery.message_id),
                attempt,
                tries,
                reason,
                extra=fields,
            )
            if _telemetry.ON:
                _telemetry.retried(self.queue, delivery.type, attempt + 1)
            return _AGAIN
        log.warning(
            "handler of queue %r failed on %s %s %d time(s); last: %s",
            self.queue,
            delivery.type,
            shown(delivery.message_id),
            attempt,
            reason,
            exc_info=failure if not isinstance(failure, TimeoutError) else False,
            extra=fields,
        )
        after = f" (tried again after {_delays(retry)})" if retry else ""
        refusal = Refusal(f"the handler failed {attempt} time(s){after}; last: {reason}")
        if _telemetry.ON:
            _telemetry.dead_lettered(self.queue, delivery.type, _telemetry.HANDLER)
        return await self.dead_letter(message, refusal, attempt)

    async def _retry_later(
        self, delivery: Delivery[Any], message: DeliveredMessage, reason: str, tries: int
    ) -> int:
        """Send a copy of ``message`` to the retry queue of its next delay (through the default
        exchange, confirmed and mandatory), numbered for its next try, with the reason of this
        one; then the original is acked.  The broker gives the copy back to the queue when the
        delay ends.  A retry queue that cannot take it (missing: the spec's retry topology is
        not applied) dead-letters the message; a passing failure (connection) requeues it."""
        attempt = delivery.attempt
        delay, retry_queue = self.contract.retry[attempt - 1]
        properties = message.header.properties
        what = _what(message)
        fields = {
            "queue": self.queue,
            "message_id": delivery.message_id,
            "message_type": delivery.type,
            "attempt": attempt,
            "reason": reason,
        }
        failed = f"the handler failed (attempt {attempt} of {tries}): {reason}"
        headers = _retry_headers(message, attempt + 1, reason)
        if headers is None:
            return await self.dead_letter(
                message,
                Refusal(
                    f"{failed}; its retry headers would not fit in one frame "
                    f"(frame_max {_frame_max(message)}), so it is not retried"
                ),
                attempt,
            )
        own, properties.headers = properties.headers, headers
        try:
            copy = prepare_raw(
                f"retry of {what} from queue {self.queue!r}",
                "",
                retry_queue,
                message.body,
                properties,
            )
        finally:
            properties.headers = own
        try:
            await self._publisher.send([copy], self._timeout)
        except (NotFound, PublishFailed) as exc:
            if isinstance(exc, PublishTimeout):
                log.warning("%s; the original goes back to queue %r", exc, self.queue, extra=fields)
                return REQUEUE
            hint = (
                f"{failed}; its retry queue {retry_queue!r} did not take it ({exc}): declare "
                "the spec's retry queues with `rabbitry apply`"
            )
            log.error("queue %r: %s", self.queue, hint, extra={**fields, "reason": hint})
            if _telemetry.ON:
                _telemetry.dead_lettered(self.queue, delivery.type, _telemetry.HANDLER)
            return await self.dead_letter(message, Refusal(hint), attempt)
        except BrokerError as exc:
            log.warning("%s; the original goes back to queue %r", exc, self.queue, extra=fields)
            return REQUEUE
        log.warning(
            "handler of queue %r failed on %s %s (attempt %d of %d): %s; attempt %d after %s",
            self.queue,
            delivery.type,
            shown(delivery.message_id),
            attempt,
            tries,
            reason,
            attempt + 1,
            retry_label(delay),
            extra=fields,
        )
        if _telemetry.ON:
            _telemetry.retried(self.queue, delivery.type, attempt + 1)
        return ACK

    async def _answer(
        self, delivery: Delivery[Any], message: DeliveredMessage, payload: Any
    ) -> int:
        """Send the handler's reply to the request's ``reply_to``, then ack the request.  A
        reply that breaks its schema dead-letters the request (a retry would not mend it); a
        reply that cannot be sent is logged, and the requester's deadline tells it."""
        reply, template = self._replies[delivery.type]
        try:
            out = reply_outgoing(
                reply,
                template,
                payload,
                reply_to=delivery.reply_to or "",
                correlation_id=delivery.correlation_id,
            )
        except ContractViolation as exc:
            first = exc.faults[0].path if exc.faults else ""
            refusal = Refusal(f"the handler's reply: {exc}", first, tuple(exc.faults))
            return await self.dead_letter(message, refusal)
        try:
            await self._publisher.send([out], self._timeout)
        except BrokerError as exc:
            log.warning(
                "queue %r: the reply %s to %s %s was not sent: %s",
                self.queue,
                reply.name,
                delivery.type,
                shown(delivery.message_id),
                exc,
                extra={"queue": self.queue, "message_id": delivery.message_id, "reason": str(exc)},
            )
        return ACK

    async def _take_slot(self) -> bool:
        """Wait for a free handler slot (``concurrency``); ``False`` once draining (then no
        slot is held).  The common case, a free slot, costs no task."""
        if self._draining.is_set():
            return False
        slots = self._slots
        if slots is None:
            return True
        if not slots.locked():
            await slots.acquire()  # free: returns at once
            return True
        acquire = asyncio.ensure_future(slots.acquire())
        halt = asyncio.ensure_future(self._draining.wait())
        try:
            await asyncio.wait({acquire, halt}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            if acquire.done() and not acquire.cancelled():
                slots.release()
            raise
        finally:
            halt.cancel()
            acquire.cancel()
        if acquire.cancelled() or not acquire.done():
            return False
        if self._draining.is_set():
            slots.release()
            return False
        return True
