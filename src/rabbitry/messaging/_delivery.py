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

__all__ = ["Delivery", "T", "T_co"]


@dataclass(frozen=True, slots=True)
class Delivery(Generic[T_co]):
    """A received message that passed its contract: ``type`` is its name, ``body`` its payload.

    ``headers`` are all the message's headers: the routing headers the spec fills and the
    publisher's own.  ``correlation_id``, ``reply_to``, ``priority`` and ``expiration``
    (milliseconds, as published: the broker removes it from a dead-lettered message) are
    the publisher's properties, ``None`` when not sent.
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
