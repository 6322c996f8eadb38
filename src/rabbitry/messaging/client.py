"""The runtime's public face: a supervised connection that publishes and consumes by contract.

API shape (agreed with code generation; implementation in progress)::

    async with Client(contract, url, service="server") as client:
        await client.publish("Start", {...})                 # validated, confirmed, routed
        async with client.subscribe("job-status", job_id=j) as sub:
            async for delivery in sub:                      # validated by the contract
                ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from rabbitry.broker.url import BrokerURL
from rabbitry.messaging.contract import Contract

__all__ = ["Client", "Consumer", "Delivery", "Handler", "Subscription"]

T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class Delivery(Generic[T_co]):
    """A received message that passed its contract: ``type`` is its name, ``body`` its payload."""

    type: str
    body: T_co
    exchange: str
    routing_key: str
    message_id: str | None = None
    timestamp: datetime | None = None
    redelivered: bool = False
    headers: Mapping[str, Any] = field(default_factory=dict)


Handler = Callable[[Delivery[Any]], Awaitable[None]]


class Consumer:
    """A registered consumer of a durable queue; ``cancel()`` stops it."""

    async def cancel(self) -> None:
        raise NotImplementedError


class Subscription:
    """A run-time queue: declared exclusive, bound with the consumer's values, removed at exit."""

    async def __aenter__(self) -> Self:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        raise NotImplementedError

    def __aiter__(self) -> AsyncIterator[Delivery[Any]]:
        raise NotImplementedError

    async def bind(self, **params: str | int) -> None:
        """Also receive what is routed with these values (e.g. another job id)."""
        raise NotImplementedError

    async def unbind(self, **params: str | int) -> None:
        raise NotImplementedError


class Client:
    """A supervised connection to the broker, speaking one contract."""

    def __init__(
        self,
        contract: Contract,
        url: str | BrokerURL | None = None,
        *,
        service: str | None = None,
        connect_timeout: float = 30.0,
        timeout: float = 10.0,
        heartbeat: int = 5,
        prefetch: int = 64,
    ) -> None:
        self.contract = contract

    async def __aenter__(self) -> Self:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        raise NotImplementedError

    async def publish(
        self, message: str, payload: Mapping[str, Any], *, timeout: float | None = None
    ) -> None:
        """Validate, then publish with confirms and ``mandatory``; raises if not delivered."""
        raise NotImplementedError

    async def publish_many(
        self, items: Iterable[tuple[str, Mapping[str, Any]]], *, timeout: float | None = None
    ) -> None:
        raise NotImplementedError

    def consume(self, queue: str, handler: Handler, *, prefetch: int | None = None) -> Consumer:
        raise NotImplementedError

    def subscribe(
        self, queue: str, *, prefetch: int | None = None, **params: str | int
    ) -> Subscription:
        raise NotImplementedError
