"""Looking at what a queue holds without taking it: ``rabbitry tail``.

What a look costs depends on the queue type (``_tail_cost`` has the
measurements): a stream is read from its first offset and nothing happens
to it; a classic queue's messages are delivered to a consumer that never
acknowledges them and then returned, back in their place, marked
redelivered; a quorum queue counts each return as a delivery attempt, so
``peek`` refuses it (and a queue whose type it could not read) unless the
caller passes ``spend_delivery=True``.

The return is explicit: ``basic.cancel`` first (so that nothing returned is
delivered to tail again, which on a quorum queue would cost a second
attempt), every delivery that arrived before the cancel took effect shown
too (it is returned, so it costs), then one ``basic.nack`` of everything
with requeue.  Then the queue's ready count is read back on the same
channel until it holds what was returned (bounded): ``PeekOutcome.verified``
says whether it does, so tail never claims what it did not see.

Each message is judged against the contract of its ``type``, whatever
queue it sits in, so a dead-letter queue reads as well as any; the
broker's ``x-death`` and rabbitry's own dead-letter reason are read from its
headers (``_xdeath``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage

from rabbitry.broker._aiormq import consumer_tag, delivered, queue_counts, withheld
from rabbitry.broker.amqp import broker_error, connect
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import InvalidArgument
from rabbitry.messaging._decode import Refusal, decode
from rabbitry.messaging._tail_cost import Cost, QueueFacts, Spent
from rabbitry.messaging._xdeath import Death, RabbitryReason, deaths, rabbitry_reason
from rabbitry.messaging.contract import Contract

__all__ = ["PeekOutcome", "Peeked", "peek"]

#: Most messages held at once when no count is given (the consumer's prefetch).
WINDOW = 1000
#: Seconds to wait for the returned messages to show in the queue's ready count.
READ_BACK = 3.0


@dataclass(frozen=True)
class Peeked:
    number: int
    type: str | None
    exchange: str
    routing_key: str
    redelivered: bool
    body: bytes
    valid: bool
    #: Why it is not valid ("" when it is).
    problem: str = ""
    headers: Mapping[str, Any] = field(default_factory=dict)
    #: The broker's dead-letter history (``x-death``), newest first.
    deaths: tuple[Death, ...] = ()
    #: Why a rabbitry consumer dead-lettered it, when one did.
    rabbitry: RabbitryReason | None = None
    #: What this look did to it on a queue that counts deliveries (``None``: nothing counted).
    spent: Spent | None = None
    #: Its offset, when it was read from a stream.
    stream_offset: int | None = None

    @property
    def dead_letter_reason(self) -> str:
        """rabbitry's reason for dead-lettering it ("" when none)."""
        return self.rabbitry.error if self.rabbitry is not None else ""

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "type": self.type,
            "valid": self.valid,
            "problem": self.problem,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "redelivered": self.redelivered,
            "dead_letter_reason": self.dead_letter_reason,
            "rabbitry_reason": self.rabbitry.as_json() if self.rabbitry else None,
            "x_death": [death.as_json() for death in self.deaths],
            "look": self.spent.as_json() if self.spent else None,
            "stream_offset": self.stream_offset,
            "headers": dict(self.headers),
            "body": self.body.decode("utf-8", errors="replace"),
        }


@dataclass(frozen=True)
class PeekOutcome:
    """What a look saw and did, and what the queue held afterwards."""

    facts: QueueFacts
    seen: int
    #: Ready messages when tail began and after it returned what it saw (``None``: a stream,
    #: whose count AMQP does not give).
    ready_before: int | None
    ready_after: int | None
    consumers_after: int | None
    #: Messages this look took over their delivery limit (the broker dead-letters them).
    dead_lettered: int
    #: Tail stopped holding a full window of messages: there may be more (never for a
    #: stream, where each message read is acked and the window moves on).
    window_full: bool

    @property
    def returned(self) -> int:
        """Messages given back to the queue (none for a stream: nothing was taken)."""
        return 0 if self.facts.cost is Cost.NOTHING else self.seen - self.dead_lettered

    @property
    def verified(self) -> bool | None:
        """The queue's ready count shows every returned message (``None``: a stream)."""
        if self.ready_after is None:
            return None
        return self.ready_after >= self.returned

    def as_json(self) -> dict[str, Any]:
        return {
            **self.facts.as_json(),
            "seen": self.seen,
            "returned": self.returned,
            "dead_lettered_by_look": self.dead_lettered,
            "ready_before": self.ready_before,
            "ready_after": self.ready_after,
            "consumers_after": self.consumers_after,
            "verified": self.verified,
            "window_full": self.window_full,
        }


def _judge(contract: Contract, facts: QueueFacts, number: int, message: DeliveredMessage) -> Peeked:
    properties = message.header.properties
    delivery, _ = delivered(message)
    routing_key = delivery.routing_key or ""
    unread = withheld(message)  # headers it could not decode (broker/_aiormq.py)
    found = (
        Refusal(f"could not be read: {unread.reason}")
        if unread is not None
        else decode(
            message.body,
            properties,
            exchange=delivery.exchange,
            routing_key=routing_key,
            redelivered=delivery.redelivered,
            queue=facts.name,
            accepts=contract.messages,
        )
    )
    headers = dict(properties.headers or {})
    offset = headers.pop("x-stream-offset", None) if facts.cost is Cost.NOTHING else None
    count = headers.get("x-delivery-count")
    return Peeked(
        number=number,
        type=properties.message_type,
        exchange=delivery.exchange,
        routing_key=routing_key,
        redelivered=delivery.redelivered,
        body=message.body,
        valid=not isinstance(found, Refusal),
        problem=found.reason if isinstance(found, Refusal) else "",
        headers=headers,
        deaths=deaths(headers),
        rabbitry=rabbitry_reason(headers),
        spent=facts.spent(count if isinstance(count, int) and not isinstance(count, bool) else 0),
        stream_offset=offset if isinstance(offset, int) else None,
    )


async def peek(
    contract: Contract,
    url: BrokerURL,
    facts: QueueFacts,
    on_message: Callable[[Peeked], None],
    *,
    count: int | None = None,
    idle: float = 2.0,
    timeout: float = 10.0,
    spend_delivery: bool = False,
) -> PeekOutcome:
    """Show the messages of the queue ``facts`` describe to ``on_message``.

    Stops after ``count`` messages (a window of ``WINDOW`` when ``None``) or
    ``idle`` seconds without one.  A queue where looking spends a delivery
    attempt (``facts.spends_delivery``) is refused with ``InvalidArgument``
    before anything is read, unless ``spend_delivery``.
    """
    if facts.spends_delivery and not spend_delivery:
        raise InvalidArgument(facts.refusal())
    stream = facts.cost is Cost.NOTHING
    window = min(count, 65535) if count is not None else WINDOW
    arrived: asyncio.Queue[DeliveredMessage] = asyncio.Queue()
    shown: list[Peeked] = []

    async def arrive(message: DeliveredMessage) -> None:
        arrived.put_nowait(message)

    def show(message: DeliveredMessage) -> None:
        item = _judge(contract, facts, len(shown) + 1, message)
        shown.append(item)
        on_message(item)

    connection = await connect(url, timeout=timeout, guarded=True)
    try:
        channel = await asyncio.wait_for(connection.channel(), timeout)
        declared = await asyncio.wait_for(channel.queue_declare(facts.name, passive=True), timeout)
        await asyncio.wait_for(channel.basic_qos(prefetch_count=window), timeout)
        ok = await asyncio.wait_for(
            channel.basic_consume(
                facts.name,
                arrive,
                no_ack=False,
                arguments={"x-stream-offset": "first"} if stream else None,
            ),
            timeout,
        )
        while count is None or len(shown) < count:
            try:
                message = await asyncio.wait_for(arrived.get(), idle)
            except TimeoutError:
                break
            show(message)
            if stream:  # a stream keeps it: the ack is only credit for the next one
                await channel.basic_ack(delivered(message)[1])
        await asyncio.wait_for(channel.basic_cancel(consumer_tag(ok)), timeout)
        while not stream and not arrived.empty():  # delivered before the cancel: returned too
            show(arrived.get_nowait())
        dead = sum(1 for item in shown if item.spent is not None and item.spent.dead_lettered)
        if stream:
            ready_after, consumers_after = None, None
        else:
            if shown:
                await channel.basic_nack(0, multiple=True, requeue=True)
            ready_after, consumers_after = await _read_back(
                channel, facts.name, len(shown) - dead, timeout
            )
    except (TimeoutError, Exception) as exc:
        raise broker_error(exc, url, f"queue {facts.name!r}") from None
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), timeout)
    return PeekOutcome(
        facts=facts,
        seen=len(shown),
        ready_before=None if stream else queue_counts(declared)[0],
        ready_after=ready_after,
        consumers_after=consumers_after,
        dead_lettered=dead,
        window_full=not stream and count is None and len(shown) >= window,
    )


async def _read_back(
    channel: AbstractChannel, queue: str, returned: int, timeout: float
) -> tuple[int, int]:
    """The queue's (ready, consumers) once it shows ``returned`` ready messages, or at the deadline.

    A return is applied by the queue after the channel has sent it (a quorum
    queue through its log), so the first count read may be short of it.
    """
    deadline = time.monotonic() + min(READ_BACK, timeout)
    while True:
        declared = await asyncio.wait_for(channel.queue_declare(queue, passive=True), timeout)
        ready, consumers = queue_counts(declared)
        if ready >= returned or time.monotonic() >= deadline:
            return ready, consumers
        await asyncio.sleep(0.05)
