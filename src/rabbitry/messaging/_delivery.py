"""``Delivery``: a received message that passed its contract (re-exported by ``client``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic

if TYPE_CHECKING:
    # PEP 696 defaults, for type checkers only: a bare ``Delivery`` or
    # ``Subscription`` means ``...[Any]`` without a strict-mode complaint.
    from typing_extensions import TypeVar

    T_co = TypeVar("T_co", covariant=True, default=Any)
    T = TypeVar("T", default=Any)
else:
    from typing import TypeVar

    T_co = TypeVar("T_co", covariant=True)
    T = TypeVar("T")

__all__ = ["ATTEMPT", "Delivery", "T", "T_co", "attempt_of"]

#: The header of a retried message: the number of the try it comes back for (2, 3, ...).
ATTEMPT = "x-rabbitry-attempt"


def attempt_of(headers: Mapping[str, Any] | None) -> int:
    """The try a delivery is for, from its ``x-rabbitry-attempt`` header: 1 without one.

    The header comes from whoever published the message, so any value but a whole number
    of at least 1 (a string, a negative, a bool, a float) counts as 1, the first try; the
    consumer caps a larger one at its last try (``_consumer``), so no value can loop."""
    value = headers.get(ATTEMPT) if headers else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return 1


@dataclass(frozen=True, slots=True)
class Delivery(Generic[T_co]):
    """A received message that passed its contract: ``type`` is its name, ``body`` its payload.

    ``headers`` are all the message's headers: the routing headers the spec fills and the
    publisher's own.  ``correlation_id``, ``reply_to``, ``priority`` and ``expiration``
    (milliseconds, as published: the broker removes it from a dead-lettered message) are
    the publisher's properties, ``None`` when not sent.

    ``attempt`` is the number of this try, from 1: on a queue with ``retry:`` in the spec,
    the try after the delays so far (the ``x-rabbitry-attempt`` header, 2, 3, ...); on
    one without, the consumer's in-process try.
    """

    type: str
    body: T_co
    exchange: str
    routing_key: str
    message_id: str | None = None
    timestamp: datetime | None = None
    redelivered: bool = False
    headers: Mapping[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None
    reply_to: str | None = None
    priority: int | None = None
    expiration: int | None = None
    attempt: int = 1
