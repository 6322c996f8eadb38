"""Delayed retries declared in the spec: ``retry: [5s, 30s, 5m]`` on a queue.

Each distinct delay becomes a retry queue (``model.retry_queue_name``): durable,
of its queue's type, with the delay as its message TTL and, as its dead-letter
route, the default exchange with the queue's name.  A consumer whose handler
fails publishes the message to the retry queue of its next delay (through the
default exchange, with the attempt in ``x-rabbitry-attempt``); when the TTL
ends, the broker dead-letters it back to the queue.  Plain RabbitMQ 3.10: no
plugin, no per-message TTL (which would block behind a longer one at the head).

The retry queues are ordinary queues of the model, so ``plan``, ``apply``, the
definitions export, the graph, the docs and the routing model see them without
knowing about retries; the writers of specs leave them out (``retry_of`` says
which they are) and write ``retry:`` instead.
"""

from __future__ import annotations

import re
from types import MappingProxyType

from rabbitry.spec.model import (
    RETRY_UNITS,
    Locs,
    Queue,
    QueueType,
    retry_label,
    retry_queue_name,
)

__all__ = ["MAX_DELAY_MS", "MAX_RETRIES", "delay_ms", "retry_queue"]

#: Most tries after the first: a longer list is a loop in disguise (dead-letter instead).
MAX_RETRIES = 25
#: RabbitMQ's TTLs are unsigned 32-bit milliseconds (about 49.7 days).
MAX_DELAY_MS = 2**32 - 1

_DELAY = re.compile(r"(\d+)\s*(ms|s|m|h)")


def delay_ms(value: object) -> int:
    """A ``retry:`` delay in milliseconds: ``"5s"``, ``"30s"``, ``"5m"``, ``"1h"``,
    ``"250ms"``, or a whole number of milliseconds.  ``ValueError`` says what is wrong."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"a delay is a duration like 5s, 30s, 5m or 1h, got {value!r}")
    if isinstance(value, int):
        ms = value
    else:
        found = _DELAY.fullmatch(value.strip())
        if found is None:
            raise ValueError(
                f"a delay is a whole number with a unit (ms, s, m, h), like 5s or 5m, got {value!r}"
            )
        ms = int(found.group(1)) * RETRY_UNITS[found.group(2)]
    if not 1 <= ms <= MAX_DELAY_MS:
        raise ValueError(
            f"a delay must be 1 ms to {MAX_DELAY_MS} ms (RabbitMQ's TTL range), got {value!r}"
        )
    return ms


def retry_queue(queue: Queue, delay: int) -> Queue:
    """The retry queue of ``queue`` for ``delay`` ms."""
    kind = QueueType.QUORUM if queue.type is QueueType.QUORUM else QueueType.CLASSIC
    return Queue(
        name=retry_queue_name(queue.name, delay),
        type=kind,
        durable=True,
        arguments=MappingProxyType(
            {
                "x-message-ttl": delay,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue.name,
            }
        ),
        description=(
            f"retries of {queue.name}: a failed message waits {retry_label(delay)} here, "
            f"then goes back to {queue.name}"
        ),
        retry_of=queue.name,
        locs=Locs(queue.locs.of("retry")),
    )
