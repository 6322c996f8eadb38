"""Consuming by contract: strict decoding, handlers, acks, dead-lettering, shutdown.

Each consumer (and each subscription, see ``_subscription``) has a channel of
its own with its prefetch.  A delivery is decoded strictly and validated
against the schema of its ``type`` (``_decode``); then:

- valid: the handler runs; its return acks the message.  An exception is
  retried in process (``attempts`` in all, pausing ``RETRY_PAUSE`` seconds,
  doubling: long enough to outlast a peer's reconnect), then the message is
  dead-lettered with the last exception as the reason.
- refused (bad encoding or JSON, a type the queue does not take, a schema
  fault): dead-lettered at once.  Never acked and dropped, never requeued
  for ever.

Dead-lettering, and where the reason goes (the decision): RabbitMQ's
``basic.reject`` cannot add headers, so the broker's own dead-lettering
would carry only ``x-death`` (reason "rejected"), not *why*.  So the runtime
publishes a copy — same body, same properties, the original routing key (or
the queue's ``x-dead-letter-routing-key``) — to the queue's dead-letter
exchange (``x-dead-letter-exchange``) with the headers
``x-rabbitry-error`` (the reason, a sentence), ``x-rabbitry-path`` (the JSON
Pointer of the faulty value, "" when none), ``x-rabbitry-queue``,
``x-rabbitry-exchange`` and ``x-rabbitry-routing-key`` (where it came
from), with confirms and ``mandatory``, and only THEN acks the original.
Nothing is lost: until the copy is confirmed the original stays unacked
(a crash redelivers it).  If the copy cannot be placed — the dead-letter
exchange is missing or routes nowhere — or the queue has no dead-letter
exchange, the original is rejected without requeue (what the broker's
dead-lettering would do with it) and the reason is logged at ERROR.  If the
copy fails for a passing reason (connection), the original is requeued.

Acks are written in batches: a run of settled deliveries at the head is
one ``basic.ack`` with ``multiple``; others are acked one by one, in the
same write.  ``cancel()`` is the graceful shutdown: ``basic.cancel``, let
the handlers in flight finish within the deadline, cancel the rest, then
close the channel, which requeues whatever was not acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from aiormq.abc import ChannelFrame
from pamqp import commands as spec

from rabbitry.broker.amqp import broker_error
from rabbitry.errors import BrokerError, NotFound, PublishFailed, PublishTimeout
from rabbitry.messaging._decode import Refusal, decode
from rabbitry.messaging._delivery import Delivery
from rabbitry.messaging._publisher import Publisher, prepare_raw
from rabbitry.messaging._supervisor import Supervisor, backoff
from rabbitry.messaging.contract import MessageContract, QueueContract

__all__ = ["ACK", "REJECT", "REQUEUE", "Consumer", "Inbox", "Settler"]

log = logging.getLogger("rabbitry.messaging")

PENDING, ACK, REJECT, REQUEUE, SENT = 0, 1, 2, 3, 4
#: Seconds before a failed handler's first retry (then doubling).  A handler often fails
#: on something passing: a publish ``Unroutable`` while the consumer of a run-time
#: queue reconnects (its queue is declared again within about a second).
RETRY_PAUSE = 0.5
#: Longest reason written into ``x-rabbitry-error``.
MAX_REASON = 2000


class Settler:
    """The acks of one channel, written in batches, in delivery order.

    A flush is due when a quarter of the prefetch window is settled, or
    ``DELAY`` seconds after the first settlement since the last one: few
    writes under load, little delay when idle.
    """

    DELAY = 0.002

    __slots__ = ("_channel", "_due", "_settled", "_soon", "_states", "_timer")

    def __init__(self, channel: Any, prefetch: int) -> None:
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
        frames: list[Any] = []
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


def _refusal(tag: int, state: int) -> spec.Basic.Nack:
    return spec.Basic.Nack(delivery_tag=tag, multiple=False, requeue=state == REQUEUE)


class Inbox:
    """What consumers and subscriptions share: a channel, decoding, settling, dead-lettering."""

    priority = 1

    def __init__(
        self,
        supervisor: Supervisor,
        publisher: Publisher,
        queue: QueueContract,
        accepts: Mapping[str, MessageContract],
        prefetch: int,
    ) -> None:
        self._supervisor = supervisor
        self._publisher = publisher
        self._url = supervisor.url
        self._timeout = supervisor.timeout
        self.contract = queue
        self._accepts = dict(accepts)
        self._prefetch = prefetch
        self._channel: Any = None
        self._settler: Settler | None = None
        self._consumer_tag: str | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._failure: BrokerError | None = None
        self._attached = asyncio.get_running_loop().create_future()
        self._done = asyncio.get_running_loop().create_future()
        self._retries = 0
        self._reattach: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: Called once when it stops for good (the client forgets it).
        self.on_stop: Callable[[], None] | None = None

    @property
    def queue_name(self) -> str:
        """The queue consumed from (a run-time queue's current, server-given name)."""
        return self.contract.name

    # -- life on the connection -----------------------------------------------

    async def attach(self, connection: Any) -> None:
        async with self._lock:
            await self._attach(connection)

    async def _attach(self, connection: Any) -> None:
        if self._stopping or self._failure is not None:
            return
        current = self._channel
        if current is not None and not current.is_closed:
            return  # attached already (a reconnect and a channel retry can meet here)
        try:
            # Room for every frame the prefetch window can bring (3 a message): aiormq's
            # reader then hands them over without waiting for the channel's reader.
            channel = await connection.channel(
                publisher_confirms=False,
                frame_buffer_size=3 * self._prefetch + 16,
                timeout=self._timeout,
            )
            await channel.basic_qos(prefetch_count=self._prefetch, timeout=self._timeout)
            await self._declare(channel)
            settler = Settler(channel, self._prefetch)
            ok = await channel.basic_consume(
                self.queue_name, partial(self._deliver, settler), timeout=self._timeout
            )
        except Exception as exc:
            if connection.is_closed:
                raise
            self._fail(broker_error(exc, self._url, f"consuming from queue {self.contract.name!r}"))
            return
        self._channel = channel
        self._settler = settler
        self._consumer_tag = ok.consumer_tag
        self._retries = 0
        channel.on_consumer_cancel_callbacks.add(self._cancelled_by_broker)
        channel.closing.add_done_callback(lambda closing: self._channel_closed(channel, closing))
        if not self._attached.done():
            self._attached.set_result(None)

    async def _declare(self, channel: Any) -> None:
        """Declare and bind what must exist before consuming (run-time queues)."""

    def detach(self, failure: BrokerError | None) -> None:
        self._channel = None
        if failure is not None:
            self._fail(failure)

    def _fail(self, failure: BrokerError) -> None:
        if self._failure is None and not self._stopping:
            self._failure = failure
            log.error("rabbitry: %s", failure)
        self._supervisor.unregister(self)
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

    def _cancelled_by_broker(self, frame: Any) -> None:
        self._fail(
            NotFound(
                f"RabbitMQ at {self._url.endpoint} cancelled the consumer of queue "
                f"{self.contract.name!r} (deleted?); `rabbitry apply` restores it"
            )
        )

    def _channel_closed(self, channel: Any, closing: asyncio.Future[Any]) -> None:
        if channel is not self._channel or self._stopping:
            return
        self._channel = None
        reason = None if closing.cancelled() else closing.exception()
        if not channel.connection.is_closed and self._failure is None:
            # The channel alone closed (the connection is fine): open another.
            log.warning("rabbitry: the channel of queue %r closed (%s)", self.queue_name, reason)
            self._retries += 1
            self._reattach = asyncio.get_running_loop().create_task(self._attach_again())

    async def _attach_again(self) -> None:
        if self._retries > 5:
            self._fail(BrokerError(f"queue {self.contract.name!r}: its channel keeps closing"))
            return
        await asyncio.sleep(backoff(self._retries))
        with contextlib.suppress(BrokerError):
            await self.attach(await self._supervisor.connection())

    # -- deliveries --------------------------------------------------------

    async def _deliver(self, settler: Settler, message: Any) -> None:
        """aiormq's consumer callback, one task per delivery."""
        frame = message.delivery
        tag = frame.delivery_tag
        settler.received(tag)
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            result = decode(
                message.body,
                message.header.properties,
                exchange=frame.exchange,
                routing_key=frame.routing_key,
                redelivered=frame.redelivered,
                queue=self.contract.name,
                accepts=self._accepts,
            )
            if isinstance(result, Refusal):
                state: int | None = await self.dead_letter(message, result)
            else:
                state = await self._accept(result, message, settler, tag)
            if state is not None:
                settler.settle(tag, state)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _accept(
        self, delivery: Delivery[Any], message: Any, settler: Settler, tag: int
    ) -> int | None:
        """Handle a valid delivery; the state to settle it with (None: settled later)."""
        raise NotImplementedError

    async def dead_letter(self, message: Any, refusal: Refusal) -> int:
        """Put ``message`` where the queue's dead letters go, with ``refusal``; how to settle it."""
        frame = message.delivery
        properties = message.header.properties
        queue = self.contract.name
        what = f"{properties.message_type or 'a message'} (message_id {properties.message_id})"
        arguments = self.contract.arguments
        exchange = arguments.get("x-dead-letter-exchange")
        if not isinstance(exchange, str):
            log.error(
                "rabbitry: queue %r refused %s: %s; the queue has no dead-letter exchange, so "
                "it is rejected and the broker drops it",
                queue,
                what,
                refusal.reason,
            )
            return REJECT
        routing_key = arguments.get("x-dead-letter-routing-key") or frame.routing_key
        headers = dict(properties.headers or {})
        headers.update(
            {
                "x-rabbitry-error": refusal.reason[:MAX_REASON],
                "x-rabbitry-path": refusal.path,
                "x-rabbitry-queue": queue,
                "x-rabbitry-exchange": frame.exchange,
                "x-rabbitry-routing-key": frame.routing_key,
            }
        )
        properties.headers = headers
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
                log.warning("rabbitry: %s; the original goes back to queue %r", exc, queue)
                return REQUEUE
            log.error(
                "rabbitry: queue %r refused %s: %s; its dead-letter copy could not be placed "
                "(%s), so it is rejected and the broker dead-letters or drops it",
                queue,
                what,
                refusal.reason,
                exc,
            )
            return REJECT
        except BrokerError as exc:
            log.warning("rabbitry: %s; the original goes back to queue %r", exc, queue)
            return REQUEUE
        log.warning("rabbitry: queue %r dead-lettered %s: %s", queue, what, refusal.reason)
        return ACK

    # -- shutdown ----------------------------------------------------------

    async def _stop(self, timeout: float) -> None:
        """Stop consuming; let handlers finish within ``timeout``; the rest goes back."""
        if self._stopping:
            return
        async with self._lock:  # not while it attaches
            self._stopping = True
        self._supervisor.unregister(self)
        if self._reattach is not None:
            self._reattach.cancel()
        channel, tag = self._channel, self._consumer_tag
        if channel is not None and not channel.is_closed and tag is not None:
            with contextlib.suppress(Exception):
                await channel.basic_cancel(tag, timeout=self._timeout)
        if self._inflight:
            _, late = await asyncio.wait(set(self._inflight), timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=self._timeout)
        if self._settler is not None:
            self._settler.flush()  # the acks go out before the channel closes
        await self._release(channel)
        self._channel = None
        for future in (self._attached, self._done):
            if not future.done():
                future.set_result(None)
        self._stopped()

    async def _release(self, channel: Any) -> None:
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), self._timeout)


Handler = Callable[[Delivery[Any]], Awaitable[None]]


class Consumer(Inbox):
    """A registered consumer of a durable queue; ``cancel()`` stops it gracefully.

    Its handler gets each valid ``Delivery``; the message is acked when the
    handler returns.  An exception is retried (``attempts`` in all) and the
    message then dead-lettered with the exception as the reason.
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
    ) -> None:
        super().__init__(supervisor, publisher, queue, accepts, prefetch)
        self._handler = handler
        self._attempts = max(1, attempts)
        self._shutdown_timeout = shutdown_timeout
        self._starting: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Consumer of queue {self.contract.name!r}>"

    @property
    def queue(self) -> str:
        return self.contract.name

    @property
    def failure(self) -> BrokerError | None:
        """Why it stopped on its own (queue gone, access refused, connection given up)."""
        return self._failure

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
        """Wait until it is cancelled; raises why, if it stopped on its own."""
        await asyncio.shield(self._done)

    async def cancel(self, timeout: float | None = None) -> None:
        """Stop consuming; handlers in flight get ``timeout`` seconds to finish (default: the
        client's ``timeout``), the rest is cancelled and its messages requeued."""
        if self._starting is not None and not self._starting.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._starting), self._timeout)
        await self._stop(self._shutdown_timeout if timeout is None else timeout)

    async def _accept(
        self, delivery: Delivery[Any], message: Any, settler: Settler, tag: int
    ) -> int | None:
        handler = self._handler
        attempts = self._attempts
        for attempt in range(1, attempts + 1):
            try:
                await handler(delivery)
            except Exception as exc:
                if attempt < attempts:
                    log.warning(
                        "rabbitry: handler of queue %r failed on %s %s (attempt %d of %d): "
                        "%s: %s; retrying",
                        self.queue,
                        delivery.type,
                        delivery.message_id,
                        attempt,
                        attempts,
                        type(exc).__name__,
                        exc,
                    )
                    await asyncio.sleep(RETRY_PAUSE * 2 ** (attempt - 1))
                    continue
                log.exception(
                    "rabbitry: handler of queue %r failed on %s %s %d times",
                    self.queue,
                    delivery.type,
                    delivery.message_id,
                    attempts,
                )
                refusal = Refusal(
                    f"the handler failed {attempts} time(s); last: {type(exc).__name__}: {exc}"
                )
                return await self.dead_letter(message, refusal)
            else:
                return ACK
        return ACK  # pragma: no cover - the loop always returns
