"""Run-time queues: exclusive, server-named, bound with the consumer's own values.

``Client.subscribe("job-status", job_id=j)`` declares a server-named
exclusive queue with the spec's arguments (its dead-letter exchange, ...),
binds it with each of the queue's run-time bindings filled with the values
(``key_for``), and yields each valid ``Delivery``; a delivery is acked when
the loop asks for the next one (its body has run).  ``bind()``/``unbind()``
follow more or fewer values while it runs.  After a reconnect the queue is
declared again and bound with every current set of values, before this
client's publishers resume.  An exclusive queue dies with its connection:
what it held then is lost, and what was published while it was gone was
``Unroutable`` to its (``mandatory``) publishers.  On exit the queue is deleted, and its bindings
with it.  Refused messages are dead-lettered as in ``_consumer``.

What goes under it while it runs (see ``_reattach``): its queue deleted (the
broker cancels the consumer) is declared anew, server-named, and bound with
every current set of values; a channel that closed alone reuses the queue,
which lives as long as the connection.  Bindings can be lost silently (an
exchange deleted and declared again, a binding deleted by hand), so every
``idle_check`` seconds it binds again on a channel of its own (a binding that
exists is left as it is); an exchange that is missing then counts as the
queue being gone: it waits for it, and after ``reattach_timeout`` iterating
raises ``NotFound``.

Deliveries waiting in the subscription when their channel closes are dropped
(the broker delivers them again on the next channel), so the loop never gets
one message twice from one cut.  A subscription has no ``handler_timeout``:
its loop body is the caller's own code in the caller's own task, which rabbitry
may not cancel; it holds one delivery at a time (acked when it asks for the next).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Generic, Self

import aiormq.exceptions as amqp_errors
from aiormq.abc import AbstractChannel, DeliveredMessage

from rabbitry._untrusted import shown
from rabbitry.broker._aiormq import queue_name
from rabbitry.broker.amqp import broker_error
from rabbitry.errors import BrokerTimeout, InvalidArgument, InvalidState, NotFound
from rabbitry.messaging._consumer import ACK, Inbox, Link, Settler
from rabbitry.messaging._delivery import Delivery, T
from rabbitry.messaging._publisher import Publisher
from rabbitry.messaging._reattach import ReattachPolicy
from rabbitry.messaging._supervisor import Supervisor
from rabbitry.messaging.contract import MessageContract, QueueContract

__all__ = ["Subscription"]

log = logging.getLogger("rabbitry.messaging")

Params = tuple[tuple[str, str | int], ...]
_END = object()


class Subscription(Inbox, Generic[T]):
    """A run-time queue: declared exclusive, bound with the consumer's values, removed at exit."""

    priority = 0  # restored before consumers, and before publishing resumes

    def __init__(
        self,
        supervisor: Supervisor,
        publisher: Publisher,
        queue: QueueContract,
        accepts: Mapping[str, MessageContract],
        *,
        prefetch: int,
        params: Mapping[str, str | int],
        policy: ReattachPolicy | None = None,
    ) -> None:
        super().__init__(
            supervisor,
            publisher,
            queue,
            accepts,
            prefetch=prefetch,
            policy=policy or ReattachPolicy(),
        )
        self._name = ""
        #: The connection (``Supervisor.generation``) its queue was declared on.
        self._generation = -1
        self._bound: list[Params] = []
        if params or not queue.params:
            self._bound.append(self._checked(params))
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        self._last: tuple[Settler, int] | None = None
        self._entered = False

    def __repr__(self) -> str:
        return f"<Subscription to {self.contract.name!r} as {self._name or '(not declared)'}>"

    @property
    def queue_name(self) -> str:
        return self._name

    @property
    def name(self) -> str:
        """The broker's name of the queue now (a new one after each reconnect)."""
        return self._name

    @property
    def bound(self) -> list[dict[str, str | int]]:
        """The sets of values it is bound with."""
        return [dict(params) for params in self._bound]

    def _checked(self, params: Mapping[str, str | int]) -> Params:
        wanted = self.contract.params
        missing = [p for p in wanted if p not in params]
        unknown = [p for p in params if p not in wanted]
        if missing or unknown:
            needs = ", ".join(wanted) or "no values"
            raise InvalidArgument(
                f"queue {self.contract.name!r} is bound with {needs}; "
                + (f"missing: {', '.join(missing)}" if missing else "")
                + ("; " if missing and unknown else "")
                + (f"unknown: {', '.join(unknown)}" if unknown else "")
            )
        for binding in self.contract.bindings:
            binding.key_for(params)  # ContractViolation for a value that cannot be a key word
        return tuple((p, params[p]) for p in wanted)

    # -- on the connection -------------------------------------------------

    async def _declare(self, channel: AbstractChannel) -> None:
        queue = self.contract
        generation = self._supervisor.generation
        if self._name and self._generation == generation:
            # Its queue lives as long as this connection: keep it (and what it holds).
            try:
                await channel.queue_declare(self._name, passive=True, timeout=self._timeout)
            except amqp_errors.ChannelNotFoundEntity:
                self._name = ""  # gone after all: the next attempt declares a new one
                raise
        else:
            ok = await channel.queue_declare(
                "",
                durable=queue.durable,
                exclusive=True,
                auto_delete=queue.auto_delete,
                arguments=dict(queue.arguments),
                timeout=self._timeout,
            )
            self._name, self._generation = queue_name(ok), generation
        for params in self._bound:
            await self._bind(channel, params, bind=True)

    def _queue_lost(self) -> None:
        self._name = ""  # declared anew, server-named, when it attaches again

    async def _check(self, link: Link, interval: float) -> None:
        """Bind again with every set of values (restores a binding lost without a word)."""
        connection = await self._supervisor.connection()
        async with self._lock:
            if self._link is not link or self._stopping or not self._name:
                return
            try:
                channel = await connection.channel(publisher_confirms=False, timeout=self._timeout)
            except Exception as exc:
                raise broker_error(exc, self._url, "opening a channel") from None
            try:
                for params in list(self._bound):
                    await self._bind(channel, params, bind=True)
            except Exception as exc:
                if connection.is_closed:
                    return
                what = f"binding queue {self.contract.name!r} again"
                error = broker_error(exc, self._url, what)
                if not isinstance(error, NotFound):
                    raise error from None
                # An exchange is missing: nothing comes until it is back.
                self._lost(link, error)
            finally:
                await self._close(channel)

    async def _bind(self, channel: AbstractChannel, params: Params, *, bind: bool) -> None:
        values = dict(params)
        for binding in self.contract.bindings:
            key = binding.key_for(values)
            arguments = dict(binding.arguments) or None
            if bind:
                await channel.queue_bind(
                    self._name,
                    binding.exchange,
                    routing_key=key,
                    arguments=arguments,
                    timeout=self._timeout,
                )
            else:
                await channel.queue_unbind(
                    self._name,
                    binding.exchange,
                    routing_key=key,
                    arguments=arguments,
                    timeout=self._timeout,
                )

    async def bind(
        self, params: Mapping[str, str | int] | None = None, /, **values: str | int
    ) -> None:
        """Also receive what is routed with these values (e.g. another job id).

        Values come as keywords (``job_id=...``) or, for any name, as a mapping.
        """
        await self._change({**(params or {}), **values}, bind=True)

    async def unbind(
        self, params: Mapping[str, str | int] | None = None, /, **values: str | int
    ) -> None:
        """Stop receiving what is routed with these values."""
        await self._change({**(params or {}), **values}, bind=False)

    async def _change(self, params: Mapping[str, str | int], *, bind: bool) -> None:
        checked = self._checked(params)
        async with self._lock:
            if (checked in self._bound) == bind:
                return
            if bind:
                self._bound.append(checked)
            else:
                self._bound.remove(checked)
            channel = self._channel
            if channel is None or channel.is_closed:
                return  # done by the next attach
            try:
                await self._bind(channel, checked, bind=bind)
            except Exception as exc:
                if bind:  # not followed after a reconnect either
                    self._bound.remove(checked)
                what = f"{'binding' if bind else 'unbinding'} {self.contract.name!r} with {params}"
                raise broker_error(exc, self._url, what) from None

    # -- deliveries --------------------------------------------------------

    async def _accept(
        self, delivery: Delivery[Any], message: DeliveredMessage, settler: Settler, tag: int
    ) -> int | None:
        self._items.put_nowait((delivery, settler, tag))
        return None  # acked when the loop asks for the next one

    def _stopped(self) -> None:
        super()._stopped()
        self._items.put_nowait(_END)

    def _settle_last(self) -> None:
        if self._last is not None:
            settler, tag = self._last
            self._last = None
            settler.settle(tag, ACK)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery[T]:
        self._settle_last()
        while True:
            item = await self._items.get()
            if item is _END:
                self._items.put_nowait(_END)  # every later call ends too
                if self._failure is not None:
                    raise self._failure
                raise StopAsyncIteration
            delivery, settler, tag = item
            if not settler.closed:
                break
            # Received on a channel that closed since: the broker delivers it again on the
            # next one, so it is not handed out twice.
            log.debug(
                "subscription to %r: dropped %s of a closed channel (delivered again)",
                self.contract.name,
                shown(delivery.message_id),
                extra={"queue": self._name, "message_id": delivery.message_id},
            )
        self._last = (settler, tag)
        result: Delivery[T] = delivery
        return result

    # -- life cycle ----------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise InvalidState("a subscription can be entered once")
        self._entered = True
        await self._supervisor.register(self)
        try:
            async with asyncio.timeout(self._timeout):  # e.g. while it reconnects
                await asyncio.shield(self._attached)
        except TimeoutError:
            await self._stop(0)
            raise BrokerTimeout(
                f"RabbitMQ at {self._url.endpoint}: queue {self.contract.name!r} was not "
                f"declared and bound within {self._timeout:g} s (is the connection back?)"
            ) from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._settle_last()
        await self._stop(self._timeout)

    async def _release(self, channel: AbstractChannel | None) -> None:
        if channel is not None and not channel.is_closed and self._name:
            with contextlib.suppress(Exception):
                await channel.queue_delete(self._name, timeout=self._timeout)
        await super()._release(channel)
