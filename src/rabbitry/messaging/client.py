"""The runtime's public face: a supervised connection that publishes and consumes by contract.

::

    async with Client(contract, url, service="server") as client:
        await client.publish("Start", {...})                 # validated, confirmed, routed
        async with client.subscribe("job-status", job_id=j) as sub:
            async for delivery in sub:                      # validated by the contract
                ...

The pieces, each in a private module: ``_supervisor`` (the connection,
reconnecting and restoring), ``_publisher`` (confirms, ``mandatory``, batched
writes), ``_consumer`` (strict decoding, handlers, acks, dead-lettering),
``_subscription`` (run-time queues), ``_decode`` and ``_frames``.  Errors are
rabbitry's (``rabbitry.errors``): ``ContractViolation``, ``Unroutable``,
``PublishNacked``, ``PublishTimeout``, ``ConnectionFailed``, ...
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, TypedDict

from rabbitry.broker import _frames
from rabbitry.broker.endpoints import Endpoints, URLs, parse_urls
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import InvalidArgument, InvalidState, UnknownName
from rabbitry.messaging._consumer import (
    DEFAULT_HANDLER_TIMEOUT,
    Consumer,
    Handler,
    concurrency_of,
)
from rabbitry.messaging._delivery import Delivery
from rabbitry.messaging._properties import PublishOptions, properties
from rabbitry.messaging._publisher import CONTENT_TYPE, Outgoing, Publisher, prepare
from rabbitry.messaging._reattach import (
    DEFAULT_IDLE_CHECK,
    DEFAULT_REATTACH_TIMEOUT,
    ReattachPolicy,
)
from rabbitry.messaging._request import Requester
from rabbitry.messaging._run import DEFAULT_CHECK_EVERY, DEFAULT_DRAIN_TIMEOUT, SIGNALS, serve
from rabbitry.messaging._subscription import Subscription
from rabbitry.messaging._supervisor import Supervisor
from rabbitry.messaging.contract import Contract, MessageContract

__all__ = [
    "Client",
    "ClientOptions",
    "Consumer",
    "Delivery",
    "Handler",
    "PublishOptions",
    "Subscription",
]


class ClientOptions(TypedDict, total=False):
    """``Client``'s keyword options; generated service classes take and pass them through."""

    connect_timeout: float
    timeout: float
    heartbeat: int
    prefetch: int
    reconnect_timeout: float | None
    attempts: int
    reattach_timeout: float | None
    idle_check: float
    handler_timeout: float | None
    concurrency: int | None


class Client:
    """A supervised connection to the broker, speaking one contract.

    ``service`` (a service of the spec) limits the client to what that service
    publishes and consumes, and names its connection.  ``connect_timeout``
    bounds the wait for the broker at start (a wrong URL should fail, not hang).
    After a connection loss the client reconnects **for ever** by default
    (``reconnect_timeout=None``), at most 5 s apart, with a WARNING every 30 s
    that gives the outage's length: the outage is the broker's, and a process
    restarted by its supervisor would only connect again, later, having
    dropped the work in its hands.  A number gives up after that many seconds
    of outage: everything then fails with ``ConnectionFailed``, and ``wait()``
    (and every consumer's ``wait()``) raises it, so a service that prefers to
    exit and be restarted does.  ``timeout`` is the deadline of every other
    operation (a publish, a declaration) unless given per call; ``heartbeat``
    (seconds) gets a dead peer noticed after ``(heartbeat + 1) * 3`` seconds of silence.

    Consumers and subscriptions whose queue is deleted or replaced while they
    run wait for it and consume again when it exists; ``reattach_timeout``
    (default 300 s; ``None``: for ever) bounds that wait, after which they
    fail (``Consumer.wait()`` raises ``NotFound``).  ``idle_check`` (default
    15 s; 0: off) is how long a consumer may receive nothing before it renews
    its channel (RabbitMQ sends no cancel to a consumer of a quorum queue that
    is deleted and declared again at once: see ``_reattach``) and how often a
    subscription binds its queue again.

    ``url`` is one URL or several (a sequence, or one string with commas between
    them; ``None``: ``$RABBITRY_URL``, then the local default): the nodes of one
    broker, all with the same vhost (``InvalidArgument`` otherwise), each with its
    own credentials.  The client connects to the first that answers; when the
    connection is lost it tries the URLs after the lost one first, that one last,
    and stays where it lands.  ``node`` says which node it is on; the log says
    ``connected to HOST:PORT`` (field ``node``) each time.
    """

    def __init__(
        self,
        contract: Contract,
        url: URLs = None,
        *,
        service: str | None = None,
        connect_timeout: float = 30.0,
        timeout: float = 10.0,
        heartbeat: int = 5,
        prefetch: int = 64,
        reconnect_timeout: float | None = None,
        attempts: int = 3,
        reattach_timeout: float | None = DEFAULT_REATTACH_TIMEOUT,
        idle_check: float = DEFAULT_IDLE_CHECK,
        handler_timeout: float | None = DEFAULT_HANDLER_TIMEOUT,
        concurrency: int | None = None,
    ) -> None:
        self.contract = contract
        #: Every URL the client may use, in the order it tries them.
        self.urls: Endpoints = parse_urls(url)
        if service is not None and service not in contract.services:
            raise UnknownName("service", service, list(contract.services))
        if prefetch < 1:
            raise InvalidArgument(f"prefetch must be at least 1, not {prefetch}")
        if idle_check < 0 or (reattach_timeout is not None and reattach_timeout < 0):
            raise InvalidArgument("idle_check and reattach_timeout may not be negative")
        if reconnect_timeout is not None and reconnect_timeout < 0:
            raise InvalidArgument(
                "reconnect_timeout may not be negative (None: reconnect for ever)"
            )
        self.service = service
        self.timeout = timeout
        self.prefetch = prefetch
        #: How many times a consumer's handler is tried on one message before it is dead-lettered.
        self.attempts = attempts
        #: Seconds one try of a consumer's handler may take (``None``: no deadline); a
        #: handler still running then is cancelled and counts as failed.
        self.handler_timeout = handler_timeout
        #: Most handlers of one consumer running at once (``None``: its prefetch bounds them).
        self.concurrency = concurrency_of(concurrency)
        self._connect_timeout = connect_timeout
        self._reconnect_timeout = reconnect_timeout
        self._heartbeat = heartbeat
        #: How consumers and subscriptions come back when their queue goes.
        self.reattach = ReattachPolicy(timeout=reattach_timeout, idle_check=idle_check)
        self._templates: dict[str, _frames.HeaderTemplate] = {}
        self._supervisor: Supervisor | None = None
        self._publisher: Publisher | None = None
        self._inboxes: list[Consumer | Subscription[Any]] = []
        self._requester: Requester | None = None

    def __repr__(self) -> str:
        return f"<Client {self.service or '(any service)'} at {self.url.masked}>"

    @property
    def url(self) -> BrokerURL:
        """The URL of the node in use (before the client is opened: the first it will try)."""
        return self.urls.first if self._supervisor is None else self._supervisor.url

    @property
    def node(self) -> str | None:
        """``host:port`` of the node the client is connected to; ``None`` while it is not."""
        supervisor = self._supervisor
        return (
            supervisor.url.endpoint if supervisor is not None and supervisor.is_connected else None
        )

    # -- life cycle --------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._supervisor is not None:
            raise InvalidState("this client is already open")
        supervisor = Supervisor(
            self.urls,
            name=f"rabbitry {self.service}" if self.service else "rabbitry",
            heartbeat=self._heartbeat,
            connect_timeout=self._connect_timeout,
            reconnect_timeout=self._reconnect_timeout,
            timeout=self.timeout,
        )
        await supervisor.start()
        self._supervisor = supervisor
        self._publisher = Publisher(supervisor)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop consumers and subscriptions gracefully, then close the connection."""
        supervisor, publisher = self._supervisor, self._publisher
        if supervisor is None or publisher is None:
            return
        for inbox in reversed(list(self._inboxes)):
            with contextlib.suppress(Exception):
                if isinstance(inbox, Consumer):
                    await inbox.cancel()
                else:
                    await inbox._stop(self.timeout)
        self._inboxes.clear()
        if self._requester is not None:
            await self._requester.close()
            self._requester = None
        await publisher.close()
        await supervisor.close()
        self._supervisor = self._publisher = None

    async def wait(self) -> None:
        """Wait until the client is closed (returns) or gives up on the broker (raises why).

        It gives up only with a finite ``reconnect_timeout`` (``ConnectionFailed``
        after that long an outage).  A service's main task awaits this beside its
        shutdown signal, so that it exits non-zero rather than stay alive and idle.
        """
        supervisor, _ = self._open()
        await supervisor.wait()

    @property
    def is_connected(self) -> bool:
        """Whether the connection is up and restored: the readiness a probe would read."""
        return self._supervisor is not None and self._supervisor.is_connected

    @property
    def blocked_reason(self) -> str | None:
        """The broker's reason while it blocks this client's connection (a memory or disk
        alarm: publishing waits), else ``None``."""
        return None if self._supervisor is None else self._supervisor.blocked_reason

    def _open(self) -> tuple[Supervisor, Publisher]:
        if self._supervisor is None or self._publisher is None:
            raise InvalidState("the client is not open: use `async with Client(...) as client`")
        return self._supervisor, self._publisher

    # -- publishing ----------------------------------------------------------

    def _message(self, name: str) -> tuple[MessageContract, _frames.HeaderTemplate]:
        template = self._templates.get(name)
        contract = self.contract.message(name)
        if template is None:
            if self.service is not None:
                publishes = self.contract.services[self.service][0]
                if name not in publishes:
                    raise InvalidArgument(
                        f"service {self.service!r} does not publish {name}; it publishes: "
                        f"{', '.join(publishes) or 'nothing'} (see the spec's services)"
                    )
            template = _frames.HeaderTemplate(
                message_type=name,
                content_type=CONTENT_TYPE,
                persistent=contract.persistent,
                app_id=self.service,
            )
            self._templates[name] = template
        return contract, template

    async def publish(
        self,
        message: str,
        payload: Mapping[str, Any],
        *,
        timeout: float | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        priority: int | None = None,
        expiration: int | timedelta | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Validate, then publish with confirms and ``mandatory``; raises if not delivered.

        ``correlation_id``, ``reply_to``, ``priority`` (0-255, at most the highest
        ``max_priority`` of the queues the message can reach), ``expiration`` (a per-message
        TTL: milliseconds or a ``timedelta``) and custom ``headers`` (never a routing
        header, ``CC``/``BCC``, ``x-death`` or ``x-rabbitry-*``) are the message's
        properties; a bad one is ``InvalidArgument``, before anything is sent.

        ``ContractViolation`` (nothing sent) when ``payload`` breaks the schema
        or its body is over ``MAX_BODY`` (what consumers accept);
        ``Unroutable`` when no queue is bound for it; ``PublishNacked`` when the
        broker refused it; ``MessageTooLarge`` (a ``PublishRefused``) when it is
        over the broker's ``max_message_size``; ``PublishTimeout`` when no
        confirm came by the deadline (``sent=True``: the outcome is unknown; it
        says so when the broker blocked the connection: a memory or disk
        alarm).  A connection lost in between is waited out and the message
        written again (same message_id).
        """
        _, publisher = self._open()
        contract, template = self._message(message)
        props = properties(
            contract,
            correlation_id=correlation_id,
            reply_to=reply_to,
            priority=priority,
            expiration=expiration,
            headers=headers,
        )
        outgoing = prepare(contract, template, payload, props=props)
        await publisher.send((outgoing,), self.timeout if timeout is None else timeout)

    async def publish_many(
        self,
        items: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        timeout: float | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        priority: int | None = None,
        expiration: int | timedelta | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Validate every item first (nothing is sent if one is bad: ``ContractViolation`` with
        its ``index``), then publish them all in batched writes and wait for every confirm.

        The properties (as ``publish`` takes them) apply to every item; one that does not
        fit an item's message is ``InvalidArgument`` naming the item's index.

        ``timeout`` bounds the whole call (default: the client's ``timeout`` plus one second
        per 1,000 messages).  When some fail, ``PublishManyFailed`` is raised once all are
        settled: its ``failures`` maps each failed item's index to its own error (as
        ``publish`` would raise it); the others were confirmed.
        """
        _, publisher = self._open()
        outgoing: list[Outgoing] = []
        for index, (name, payload) in enumerate(items):
            contract, template = self._message(name)
            try:
                props = properties(
                    contract,
                    correlation_id=correlation_id,
                    reply_to=reply_to,
                    priority=priority,
                    expiration=expiration,
                    headers=headers,
                )
            except InvalidArgument as exc:
                raise InvalidArgument(f"item {index}: {exc}") from None
            out = prepare(contract, template, payload, index=index, props=props)
            out.index = index
            outgoing.append(out)
        if timeout is None:
            timeout = self.timeout + len(outgoing) / 1000
        await publisher.send(outgoing, timeout, many=True)

    async def request(
        self, message: str, payload: Mapping[str, Any], *, timeout: float | None = None
    ) -> Delivery[Any]:
        """Send ``message`` (one whose spec names a ``reply``) and return its validated reply.

        Any number of requests may be in flight at once (direct reply-to on one channel of
        the client's, replies matched by ``correlation_id``: ``_request``).  ``timeout``
        (default: the client's) bounds the whole round trip: ``RequestTimeout`` when no
        reply came by then.  ``Unroutable`` when no queue takes the request;
        ``ContractViolation`` when the request (nothing sent) or the reply breaks its
        schema; ``ConnectionFailed`` when the connection is lost with it in flight.
        """
        supervisor, _ = self._open()
        contract, _ = self._message(message)
        if contract.reply is None:
            raise InvalidArgument(
                f"message {message} names no reply in the spec: publish it, or give it "
                "`reply: MESSAGE` in the spec"
            )
        reply = self.contract.message(contract.reply)
        if self._requester is None:
            self._requester = Requester(supervisor, self.service)
        return await self._requester.request(
            contract, reply, payload, self.timeout if timeout is None else timeout
        )

    # -- consuming -----------------------------------------------------------

    def _accepts(self, queue: str) -> dict[str, MessageContract]:
        contract = self.contract.queue(queue)
        names: tuple[str, ...] = contract.accepts
        if self.service is not None:
            consumes = self.contract.services[self.service][1]
            if queue not in consumes:
                raise InvalidArgument(
                    f"service {self.service!r} does not consume queue {queue!r}; it consumes: "
                    f"{', '.join(consumes) or 'nothing'} (see the spec's services)"
                )
            names = consumes[queue]
        return {name: self.contract.message(name) for name in names}

    def consume(
        self,
        queue: str,
        handler: Handler,
        *,
        prefetch: int | None = None,
        attempts: int | None = None,
        handler_timeout: float | None = None,
        concurrency: int | None = None,
    ) -> Consumer:
        """Call ``handler`` with each valid message of ``queue`` (a queue ``apply`` declares).

        Returns at once; the consumer starts in the background (``await
        consumer.ready()`` to wait for it, or to learn that the queue is missing).
        A queue deleted or replaced later is waited for (``reattach_timeout``) and
        consumed again; ``await consumer.wait()`` raises if it stops on its own.
        Handlers run concurrently, up to ``prefetch`` at a time (default: the client's).
        The message is acked when the handler returns; an exception is retried
        (``attempts`` in all, default the client's; on a queue with ``retry:`` in the
        spec, once after each delay through its retry queues instead, and ``attempts``
        does not apply) and the message then dead-lettered, as are messages that fail
        decoding or validation and those whose handler raises ``DeadLetter``.
        Each try may take ``handler_timeout`` seconds (default: the client's, 300 s;
        ``math.inf`` for none on this consumer); a handler still running then is
        cancelled and counts as failed.  ``concurrency`` (default: the client's; ``None``:
        the prefetch) bounds the handlers running at once apart from the prefetch.
        """
        supervisor, publisher = self._open()
        contract = self.contract.queue(queue)
        if contract.runtime:
            raise InvalidArgument(
                f"queue {queue!r} is a run-time queue (exclusive, bound with values): use "
                f"subscribe({queue!r}, {', '.join(f'{p}=...' for p in contract.params)})"
            )
        accepts = self._accepts(queue)
        consumer = Consumer(
            supervisor,
            publisher,
            contract,
            accepts,
            handler,
            prefetch=prefetch or self.prefetch,
            attempts=self.attempts if attempts is None else attempts,
            handler_timeout=self.handler_timeout if handler_timeout is None else handler_timeout,
            shutdown_timeout=self.timeout,
            policy=self.reattach,
            concurrency=self.concurrency if concurrency is None else concurrency,
            replies={n: self.contract.message(m.reply) for n, m in accepts.items() if m.reply},
        )
        self._keep(consumer)
        consumer._start()
        return consumer

    def subscribe(
        self,
        queue: str,
        params: Mapping[str, str | int] | None = None,
        /,
        *,
        prefetch: int | None = None,
        **values: str | int,
    ) -> Subscription[Any]:
        """A run-time queue bound with its values (``job_id=...``); use ``async with``.

        Values come as keywords or, for any name (``prefetch`` included), as the
        ``params`` mapping.

        Iterating it yields each valid ``Delivery``, acked when the next one is
        asked for; ``bind()``/``unbind()`` change the values it follows.
        """
        supervisor, publisher = self._open()
        contract = self.contract.queue(queue)
        if not contract.runtime:
            raise InvalidArgument(
                f"queue {queue!r} is declared by apply, not at run time: use "
                f"consume({queue!r}, handler)"
            )
        subscription: Subscription[Any] = Subscription(
            supervisor,
            publisher,
            contract,
            self._accepts(queue),
            prefetch=prefetch or self.prefetch,
            params={**(params or {}), **values},
            policy=self.reattach,
        )
        self._keep(subscription)
        return subscription

    def _keep(self, inbox: Consumer | Subscription[Any]) -> None:
        self._inboxes.append(inbox)

        def forget() -> None:
            with contextlib.suppress(ValueError):
                self._inboxes.remove(inbox)

        inbox.on_stop = forget

    # -- running as a service --------------------------------------------------

    async def run(
        self,
        *,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        ready_file: str | os.PathLike[str] | None = None,
        check_every: float = DEFAULT_CHECK_EVERY,
        signals: Iterable[signal.Signals] = SIGNALS,
    ) -> None:
        """Run this client's consumers as a service until SIGTERM or SIGINT, then drain.

        ::

            async with Worker(url, concurrency=4) as worker:
                worker.consume_jobs_ready(handle)
                await worker.client.run(ready_file="/tmp/worker.ready")

        On a signal: every consumer stops taking messages (``basic.cancel``), its
        handlers in flight get ``drain_timeout`` seconds to finish, the rest are
        cancelled and their messages requeued; then it returns (exit status 0).
        ``ready_file`` exists while the client is connected and every consumer
        consumes, refreshed every ``check_every`` seconds, and is removed otherwise.
        When the client gives up on the broker (``reconnect_timeout``) or a consumer
        stops for good (``reattach_timeout``), the rest are drained and it raises why:
        the process exits non-zero instead of staying alive and idle.
        """
        await serve(
            self,
            drain_timeout=drain_timeout,
            ready_file=ready_file,
            check_every=check_every,
            signals=signals,
        )
