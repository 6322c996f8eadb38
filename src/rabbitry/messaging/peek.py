"""Looking at what a queue holds without taking it: ``rabbitry tail``.

A temporary consumer receives each message and never acknowledges it; when
it stops (after ``count`` messages, or ``idle`` seconds without one) its
channel closes and the broker puts every message back, in order, marked
redelivered.  Each message is judged against the contract of its ``type``,
whatever queue it sits in, so a dead-letter queue reads as well as any.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rabbitry.broker.amqp import broker_error, connect
from rabbitry.broker.url import BrokerURL
from rabbitry.messaging._decode import Refusal, decode
from rabbitry.messaging.contract import Contract

__all__ = ["Peeked", "peek"]

#: Headers a rabbitry consumer puts on a message it dead-letters.
REASON_HEADERS = ("x-rabbitry-error", "x-rabbitry-path", "x-rabbitry-queue")


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
    #: Why a rabbitry consumer dead-lettered it, when it says so.
    dead_letter_reason: str = ""
    headers: Mapping[str, Any] = field(default_factory=dict)

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
            "body": self.body.decode("utf-8", errors="replace"),
        }


def _judge(contract: Contract, queue: str, number: int, message: Any) -> Peeked:
    properties = message.header.properties
    delivery = message.delivery
    found = decode(
        message.body,
        properties,
        exchange=delivery.exchange,
        routing_key=delivery.routing_key,
        redelivered=delivery.redelivered,
        queue=queue,
        accepts=contract.messages,
    )
    headers = dict(properties.headers or {})
    reason = headers.get("x-rabbitry-error")
    return Peeked(
        number=number,
        type=properties.message_type,
        exchange=delivery.exchange,
        routing_key=delivery.routing_key,
        redelivered=delivery.redelivered,
        body=message.body,
        valid=not isinstance(found, Refusal),
        problem=found.reason if isinstance(found, Refusal) else "",
        dead_letter_reason=str(reason) if reason is not None else "",
        headers=headers,
    )


async def peek(
    contract: Contract,
    url: BrokerURL,
    queue: str,
    on_message: Callable[[Peeked], None],
    *,
    count: int | None = None,
    idle: float = 2.0,
    timeout: float = 10.0,
) -> int:
    """Show ``queue``'s messages to ``on_message``; return how many were seen.

    Stops after ``count`` messages (all of them when ``None``) or ``idle``
    seconds without one; every message stays in the queue.
    """
    connection = await connect(url, timeout=timeout)
    seen = 0
    arrived: asyncio.Queue[Any] = asyncio.Queue()
    try:
        channel = await asyncio.wait_for(connection.channel(), timeout)
        await asyncio.wait_for(channel.basic_qos(prefetch_count=min(count or 1000, 1000)), timeout)
        await asyncio.wait_for(
            channel.basic_consume(queue, arrived.put_nowait, no_ack=False), timeout
        )
        while count is None or seen < count:
            try:
                message = await asyncio.wait_for(arrived.get(), idle)
            except TimeoutError:
                break
            seen += 1
            on_message(_judge(contract, queue, seen, message))
    except (TimeoutError, Exception) as exc:
        raise broker_error(exc, url, f"queue {queue!r}") from None
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), timeout)  # unacked: all requeued
    return seen
