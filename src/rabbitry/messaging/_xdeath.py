"""Why a message was dead-lettered, as the broker and as rabbitry wrote it in its headers.

Two writers, two headers, and ``rabbitry tail`` shows both side by side:

- The broker, when it dead-letters a message itself (a TTL ran out, a
  consumer rejected it without requeue, the queue was over its length limit,
  a quorum queue's delivery limit was reached), adds an entry to the
  ``x-death`` array: ``reason``, ``queue``, ``exchange``, ``routing-keys``,
  ``count``, ``time`` (and ``original-expiration`` for a per-message TTL).
  The newest entry comes first; a message that dies twice the same way in
  the same queue has that entry's ``count`` raised instead of a new entry.
  Seen on RabbitMQ 3.10.8 for all four reasons (tests/test_tail.py).
- A rabbitry consumer that refuses a message publishes a copy to the
  dead-letter exchange itself (``_consumer.Consumer.dead_letter``: a reject
  cannot add headers), with ``x-rabbitry-error`` (the reason),
  ``x-rabbitry-path`` (the JSON Pointer of the faulty value),
  ``x-rabbitry-errors`` (every fault: an array of ``{path, message}`` tables),
  ``x-rabbitry-queue``, ``x-rabbitry-exchange`` and
  ``x-rabbitry-routing-key``.  Such a copy carries no ``x-death`` entry for
  that refusal.

Headers come from any publisher, so neither is trusted: an entry that is
not a table is skipped and a field of the wrong type reads as absent; this
never raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from rabbitry.errors import Fault

__all__ = ["Death", "DeathReason", "RabbitryReason", "deaths", "rabbitry_reason"]


class DeathReason(StrEnum):
    """The broker's words for why it dead-lettered a message (``x-death`` ``reason``)."""

    EXPIRED = "expired"
    REJECTED = "rejected"
    MAXLEN = "maxlen"
    DELIVERY_LIMIT = "delivery_limit"

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    DeathReason.EXPIRED: "its time to live ran out",
    DeathReason.REJECTED: "a consumer rejected it without requeue",
    DeathReason.MAXLEN: "the queue was over its length limit",
    DeathReason.DELIVERY_LIMIT: "it was returned more often than the delivery limit",
}


@dataclass(frozen=True)
class Death:
    """One ``x-death`` entry: a queue the message died in, why, and how many times."""

    #: A ``DeathReason`` value, or the broker's word as written when it is another one.
    reason: str
    queue: str
    #: The exchange it had been published to ("" for the default exchange).
    exchange: str
    routing_keys: tuple[str, ...]
    count: int
    time: datetime | None
    original_expiration: str | None = None

    @property
    def meaning(self) -> str:
        """What ``reason`` means, or "" for a reason rabbitry does not know."""
        try:
            return DeathReason(self.reason).meaning
        except ValueError:
            return ""

    def as_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "queue": self.queue,
            "exchange": self.exchange,
            "routing_keys": list(self.routing_keys),
            "count": self.count,
            "time": self.time.isoformat() if self.time is not None else None,
            "original_expiration": self.original_expiration,
        }


@dataclass(frozen=True)
class RabbitryReason:
    """What a rabbitry consumer wrote on the dead-letter copy of a message it refused."""

    error: str
    #: The JSON Pointer of the faulty value ("" when the fault is not in one value).
    path: str
    queue: str
    exchange: str
    routing_key: str
    #: Every fault (``x-rabbitry-errors``), the first one included; () from an older writer.
    errors: tuple[Fault, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "path": self.path,
            "queue": self.queue,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "errors": [{"path": f.path, "message": f.reason} for f in self.errors],
        }


def deaths(headers: Mapping[str, Any]) -> tuple[Death, ...]:
    """The ``x-death`` entries of ``headers``, newest first (as the broker keeps them)."""
    entries = headers.get("x-death")
    if not isinstance(entries, list | tuple):
        return ()
    return tuple(_death(entry) for entry in entries if isinstance(entry, Mapping))


def rabbitry_reason(headers: Mapping[str, Any]) -> RabbitryReason | None:
    """The reason a rabbitry consumer gave, or ``None`` when ``x-rabbitry-error`` is absent."""
    error = headers.get("x-rabbitry-error")
    if error is None:
        return None
    return RabbitryReason(
        error=_text(error),
        path=_text(headers.get("x-rabbitry-path")),
        queue=_text(headers.get("x-rabbitry-queue")),
        exchange=_text(headers.get("x-rabbitry-exchange")),
        routing_key=_text(headers.get("x-rabbitry-routing-key")),
        errors=_faults(headers.get("x-rabbitry-errors")),
    )


def _faults(entries: Any) -> tuple[Fault, ...]:
    """``x-rabbitry-errors``: the tables among ``entries`` (anything else is skipped)."""
    if not isinstance(entries, list | tuple):
        return ()
    return tuple(
        Fault(_text(entry.get("path")), _text(entry.get("message")))
        for entry in entries
        if isinstance(entry, Mapping)
    )


def _death(entry: Mapping[str, Any]) -> Death:
    keys = entry.get("routing-keys")
    count = entry.get("count")
    time = entry.get("time")
    expiration = entry.get("original-expiration")
    return Death(
        reason=_text(entry.get("reason")),
        queue=_text(entry.get("queue")),
        exchange=_text(entry.get("exchange")),
        routing_keys=tuple(_text(k) for k in keys) if isinstance(keys, list | tuple) else (),
        count=count if isinstance(count, int) and not isinstance(count, bool) else 0,
        time=time if isinstance(time, datetime) else None,
        original_expiration=_text(expiration) if expiration is not None else None,
    )


def _text(value: Any) -> str:
    """A header value as text: pamqp gives str, or bytes when it is not UTF-8."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
