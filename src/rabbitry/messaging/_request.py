"""Request and reply over RabbitMQ's direct reply-to, many requests in flight at once.

A message of the spec may name its reply (``reply: MessageName``).  The requester
(``Requester``, one per client, opened at its first request) has ONE channel of its
own: it consumes the pseudo-queue ``amq.rabbitmq.reply-to`` there (no ack, as the broker
requires) and publishes every request on that same channel, because the broker sends a
reply only to the channel that consumes it and closes a channel that publishes with
``reply_to`` ``amq.rabbitmq.reply-to`` without consuming it.  Each request carries a fresh
``correlation_id``; the reply that carries it settles that request and no other, so any
number of requests are in flight at once (FastStream serialises them behind a lock).

Each request has its deadline (``RequestTimeout``, which is a ``BrokerTimeout``); a reply
that arrives after it is dropped.  A request no queue takes is ``Unroutable`` at once (the
channel publishes with confirms and ``mandatory``).  When the channel or the connection
closes, the replies of the requests in flight can no longer arrive (a reply-to address
names the channel): each fails with ``ConnectionFailed`` saying so, and the next request
opens a new channel.  A reply is validated against the reply's schema (a reply that breaks
it fails its request with ``ContractViolation``).

The consuming side (``reply_outgoing``): a handler of a message with a ``reply`` returns
the reply's payload; when the delivery has a ``reply_to`` it is validated against the
reply's schema and published through the default exchange to that address with the
request's ``correlation_id`` (``Consumer._accept``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Mapping
from typing import Any

import aiormq
import aiormq.exceptions as amqp_errors
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec

from rabbitry.broker import _frames
from rabbitry.broker.amqp import broker_error
from rabbitry.errors import (
    ConnectionFailed,
    ContractViolation,
    Fault,
    PublishNacked,
    RequestTimeout,
    Unroutable,
)
from rabbitry.messaging._decode import Refusal, decode
from rabbitry.messaging._delivery import Delivery
from rabbitry.messaging._properties import DIRECT_REPLY_TO, properties
from rabbitry.messaging._publisher import Outgoing, prepare
from rabbitry.messaging._supervisor import Supervisor
from rabbitry.messaging.contract import MessageContract

__all__ = ["Requester", "reply_outgoing"]


class Requester:
    """The client's side of request/reply: one channel, replies matched by correlation_id."""

    def __init__(self, supervisor: Supervisor, app_id: str | None) -> None:
        self._supervisor = supervisor
        self._app_id = app_id
        self._channel: aiormq.Channel | None = None
        self._opening = asyncio.Lock()
        #: correlation_id → (the request's reply contract, its future).
        self._waiting: dict[str, tuple[MessageContract, asyncio.Future[Delivery[Any]]]] = {}
        self._prefix = os.urandom(6).hex()
        self._count = itertools.count()

    @property
    def in_flight(self) -> int:
        """Requests sent whose reply has not come yet."""
        return len(self._waiting)

    async def request(
        self,
        contract: MessageContract,
        reply: MessageContract,
        payload: Mapping[str, Any],
        timeout: float,
    ) -> Delivery[Any]:
        """Send ``payload`` as ``contract``'s message and wait for its ``reply`` (see module)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Validated and encoded as a publish is (ContractViolation before anything is sent).
        template = _frames.HeaderTemplate(
            message_type=contract.name,
            content_type="application/json",
            persistent=False,
            app_id=self._app_id,
        )
        out = prepare(contract, template, payload)
        correlation_id = f"{self._prefix}.{next(self._count)}"
        future: asyncio.Future[Delivery[Any]] = loop.create_future()
        self._waiting[correlation_id] = (reply, future)
        try:
            async with asyncio.timeout_at(deadline):
                channel = await self._open(deadline)
                props = spec.Basic.Properties(
                    content_type="application/json",
                    headers=contract.headers_for(payload) if contract.headers else None,
                    delivery_mode=1,
                    correlation_id=correlation_id,
                    reply_to=DIRECT_REPLY_TO,
                    message_id=out.message_id,
                    message_type=contract.name,
                    app_id=self._app_id,
                )
                try:
                    confirm = await channel.basic_publish(
                        out.body,
                        exchange=out.exchange,
                        routing_key=out.routing_key,
                        properties=props,
                        mandatory=True,
                    )
                except amqp_errors.PublishError:
                    raise Unroutable(
                        f"request {contract.name} to exchange {out.exchange!r} with routing key "
                        f"{out.routing_key!r}: no queue is bound for it (nobody would answer): "
                        "check the spec's bindings and run `rabbitry apply`"
                    ) from None
                if isinstance(confirm, spec.Basic.Nack):
                    raise PublishNacked(f"the broker refused request {contract.name} (basic.nack)")
                return await asyncio.shield(future)
        except TimeoutError:
            raise RequestTimeout(
                f"no reply {reply.name} to request {contract.name} within {timeout:g} s "
                f"(correlation_id {correlation_id}): is its consumer running? give a longer "
                "timeout if it is slow"
            ) from None
        except (amqp_errors.AMQPError, ConnectionError) as exc:
            raise broker_error(exc, self._supervisor.url, f"request {contract.name}") from None
        finally:
            self._waiting.pop(correlation_id, None)

    async def _open(self, deadline: float) -> aiormq.Channel:
        channel = self._channel
        if channel is not None and not channel.is_closed:
            return channel
        async with self._opening:
            channel = self._channel
            if channel is not None and not channel.is_closed:
                return channel
            connection = await self._supervisor.connection(deadline)
            opened = await connection.channel(publisher_confirms=True, on_return_raises=True)
            assert isinstance(opened, aiormq.Channel)
            try:
                await opened.basic_consume(DIRECT_REPLY_TO, self._on_reply, no_ack=True)
            except BaseException:
                with contextlib.suppress(Exception):
                    await opened.close()
                raise
            opened.closing.add_done_callback(lambda closing: self._lost(opened, closing))
            self._channel = opened
            return opened

    def _lost(self, channel: AbstractChannel, closing: asyncio.Future[Any]) -> None:
        """The channel closed: the replies of the requests in flight on it cannot arrive."""
        if self._channel is channel:
            self._channel = None
        if not self._waiting:
            return
        reason = ""
        if not closing.cancelled() and closing.exception() is not None:
            reason = f" ({closing.exception()})"
        for _, future in list(self._waiting.values()):
            if not future.done():
                future.set_exception(
                    ConnectionFailed(
                        f"the request channel closed{reason} with the request in flight: its "
                        "reply can no longer arrive (a direct reply-to address names the "
                        "channel); send the request again if it is safe to repeat"
                    )
                )

    async def _on_reply(self, message: DeliveredMessage) -> None:
        properties = message.header.properties
        waiting = self._waiting.get(properties.correlation_id or "")
        if waiting is None:
            return  # a reply after its deadline, or to a request this client did not send
        reply, future = waiting
        if future.done():
            return
        frame = message.delivery
        result = decode(
            message.body,
            properties,
            exchange=getattr(frame, "exchange", "") or "",
            routing_key=getattr(frame, "routing_key", "") or "",
            redelivered=False,
            queue=DIRECT_REPLY_TO,
            accepts={reply.name: reply},
        )
        if isinstance(result, Refusal):
            faults = list(result.faults) or [Fault(result.path, result.reason)]
            future.set_exception(ContractViolation(reply.name, faults))
        else:
            future.set_result(result)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()


def reply_outgoing(
    reply: MessageContract,
    template: _frames.HeaderTemplate,
    payload: Any,
    *,
    reply_to: str,
    correlation_id: str | None,
) -> Outgoing:
    """The reply a handler returned, validated (``ContractViolation``) and addressed to
    ``reply_to`` through the default exchange, with the request's ``correlation_id``."""
    if not isinstance(payload, Mapping):
        faults = [Fault("", f"a reply payload must be an object, not {type(payload).__name__}")]
        raise ContractViolation(reply.name, faults)
    try:  # values from the wire: short strings already, so this is a formality
        props = properties(reply, correlation_id=correlation_id) if correlation_id else None
        method = _frames.publish_method("", reply_to, mandatory=False)
    except ValueError as exc:
        raise ContractViolation(reply.name, [Fault("", f"cannot be addressed: {exc}")]) from None
    out = prepare(reply, template, payload, props=props)
    out.method, out.exchange, out.routing_key = method, "", reply_to
    return out
