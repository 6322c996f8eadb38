"""The connection supervisor: one aiormq connection, kept open.

aiormq has no reconnection of its own.  The supervisor

- connects to the first of its URLs that answers (``broker.endpoints``:
  several URLs are the nodes of one broker), trying them in rounds with
  capped exponential backoff and jitter between rounds (``BACKOFF_*``: at
  most 5 s), each attempt bounded by ``timeout``: a dead node costs one
  refused attempt, not a backoff.  After a loss a round starts with the URL
  after the lost one, which comes last; ``url`` is the one in use.  Refused
  credentials or a missing vhost on one URL send it to the next; when every
  URL of a round fails that way, the wait ends at once (retrying cannot fix
  them), naming each.  At start it gives up after ``connect_timeout`` (a wrong URL or a
  broker that is not there should say so, not hang).  After a loss it tries
  **for ever** by default (``reconnect_timeout=None``), saying so at WARNING
  every ``OUTAGE_REPORT_EVERY`` seconds with the outage's length, because
  the outage is the broker's: a service restarted by its own supervisor
  would only connect again, later (restart back-off), having cut short the
  work in its hands (redelivered, done twice).  ``is_connected`` is the
  readiness to expose meanwhile.  A number gives up after that many
  seconds, for a deployment that prefers its process to exit and be
  restarted; whoever waits on the client (``wait()``, a consumer's
  ``wait()``) then gets the failure;
- sets the heartbeat: aiormq drops a connection that sent nothing for
  ``(heartbeat + 1) * 3`` seconds (18 s for the default 5, 6 s for 1);
- watches the connection and, when it closes under us, reconnects and then
  *restores* every registered ``Attachment`` in order of ``priority``
  (run-time queues and their bindings, then consumers) before it opens the
  gate (``connection()``) that publishers wait at — so a message published
  by this client after a reconnect finds the queues this client consumes;
- when a reconnect does not succeed by its deadline, fails: every waiter and
  attachment gets the ``ConnectionFailed``, and so does ``wait()``;
- follows the broker's ``connection.blocked`` / ``connection.unblocked``
  (a memory or disk alarm: the broker stops reading what this connection
  publishes): ``blocked_reason`` is the broker's reason while blocked, so
  that a publish that times out can say why.

Channels are the attachments' business: each opens its own, restores its
own state on it (qos, confirms, consumers, declarations) and notices its own
channel errors.  An attachment that fails on a live connection (a queue that
is gone, an access refusal) fails alone; the others are restored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any, Protocol

from aiormq.abc import AbstractConnection
from pamqp import commands as spec

from rabbitry.broker._aiormq import GuardedConnection
from rabbitry.broker.amqp import broker_error, is_permanent
from rabbitry.broker.endpoints import Endpoints, none_answered
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import BrokerError, BrokerTimeout, ConnectionFailed, Phrase

__all__ = ["OUTAGE_REPORT_EVERY", "Attachment", "Supervisor", "backoff"]

log = logging.getLogger("rabbitry.messaging")

BACKOFF_FIRST = 0.1
BACKOFF_CAP = 5.0
#: Seconds between the WARNINGs that say a reconnect is still being tried.
OUTAGE_REPORT_EVERY = 30.0


class _BlockAwareConnection(GuardedConnection):
    """aiormq's connection (guarded: ``broker/_aiormq.py``), telling its supervisor when the
    broker blocks and unblocks it.

    aiormq 7.2 advertises the ``connection.blocked`` capability and handles the
    two frames, but only logs them: it has no callback and keeps the reason to
    itself.  Its handlers are name-mangled methods that its reader calls
    through ``self``, so a subclass overrides them by their mangled names and
    calls the originals (which also gate aiormq's writer start-up).
    """

    on_blocked: Callable[[str], None] | None = None
    on_unblocked: Callable[[], None] | None = None

    async def _Connection__handle_connection_blocked(self, frame: spec.Connection.Blocked) -> None:
        # mypy does not mangle ``__names``, so it cannot see aiormq's handler under the
        # name Python gives it (tests/test_dependency_internals.py checks that it exists).
        await super()._Connection__handle_connection_blocked(frame)  # type: ignore[misc]
        if self.on_blocked is not None:
            self.on_blocked(str(frame.reason or "no reason given"))

    async def _Connection__handle_connection_unblocked(
        self, frame: spec.Connection.Unblocked
    ) -> None:
        await super()._Connection__handle_connection_unblocked(frame)  # type: ignore[misc]
        if self.on_unblocked is not None:
            self.on_unblocked()


def backoff(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before attempt ``attempt + 1``: doubling from 0.1 s, capped, jittered.

    "Equal jitter": between half and all of the capped exponential delay, so
    clients cut off together do not come back together.
    """
    delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2.0 ** min(attempt, 16))
    return delay / 2 + rand() * delay / 2


class Attachment(Protocol):
    """Something that lives on the connection and must be restored on a new one."""

    #: Lower first: run-time queues (0), consumers (1).
    priority: int

    async def attach(self, connection: AbstractConnection) -> None:
        """Set up on ``connection`` (after each (re)connect, or at once when registered).

        Raise only when the connection itself failed; a channel-level failure
        is the attachment's own to record.
        """

    def detach(self, failure: BrokerError | None) -> None:
        """The connection is gone (``None``: a reconnect follows) or given up (``failure``)."""


class Supervisor:
    def __init__(
        self,
        endpoints: Endpoints,
        *,
        name: str,
        heartbeat: int,
        connect_timeout: float,
        reconnect_timeout: float | None,
        timeout: float,
    ) -> None:
        self.endpoints = endpoints
        #: The URL in use (or tried first, before the first connection): it changes when
        #: the connection moves to another node.
        self.url = endpoints.first
        self.timeout = timeout
        self._heartbeat = heartbeat
        self._name = name
        self._connect_timeout = connect_timeout
        self._reconnect_timeout = reconnect_timeout
        self._connection: AbstractConnection | None = None
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._attachments: list[Attachment] = []
        self._failure: BrokerError | None = None
        self._closed = False
        self._monitor: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        self._gave_up: BrokerError | None = None
        self._blocked: tuple[str, float] | None = None  # the broker's reason, since when
        #: Incremented on every new connection.
        self.generation = 0

    # -- life cycle --------------------------------------------------------

    async def start(self) -> None:
        """Connect (waiting for the broker up to ``connect_timeout``), or ``ConnectionFailed``."""
        await self._connect(self._connect_timeout)
        self._monitor = asyncio.create_task(self._watch(), name="rabbitry-supervisor")

    async def close(self) -> None:
        self._closed = True
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        failure = ConnectionFailed(f"the client of {self.url.endpoint} is closed")
        if self._failure is None:
            self._failure = failure
        self._ready.set()
        self._ended.set()
        for attachment in list(self._attachments):
            attachment.detach(failure)
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), self.timeout)

    @property
    def failure(self) -> BrokerError | None:
        """Why the supervisor gave up (or was closed); ``None`` while it has not."""
        return self._failure

    @property
    def is_connected(self) -> bool:
        return self._ready.is_set() and self._failure is None

    @property
    def blocked_reason(self) -> str | None:
        """The broker's reason (e.g. ``low on memory``) while it blocks this connection, else
        ``None``.

        A broker under a memory or disk alarm stops reading from connections that
        publish; what they publish waits, unconfirmed, until the alarm clears.
        """
        return None if self._blocked is None else self._blocked[0]

    async def wait(self) -> None:
        """Wait until closed (returns) or given up (raises why: ``ConnectionFailed``).

        A service's main task awaits this (beside its shutdown signal) so that a
        client that gave up on the broker ends the process instead of leaving it
        alive and idle.
        """
        await self._ended.wait()
        if self._gave_up is not None:
            raise self._gave_up

    async def connection(self, deadline: float | None = None) -> AbstractConnection:
        """The open connection, once restored; waits for a reconnect until ``deadline``."""
        while True:
            if self._failure is not None:
                raise self._failure
            connection = self._connection
            if connection is not None and not connection.is_closed:
                if self._ready.is_set():
                    return connection
            else:
                self._ready.clear()  # lost: the watcher is about to reconnect
            remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
            if remaining is not None and remaining <= 0:
                raise BrokerTimeout(
                    f"RabbitMQ at {self.url.endpoint}: the connection was not back in time"
                )
            try:
                await asyncio.wait_for(self._ready.wait(), remaining)
            except TimeoutError:
                raise BrokerTimeout(
                    f"RabbitMQ at {self.url.endpoint}: the connection was not back in time; "
                    "it is reconnecting"
                ) from None

    # -- attachments -------------------------------------------------------

    async def register(self, attachment: Attachment) -> None:
        """Add ``attachment`` and set it up now if connected (else at the next connect)."""
        async with self._lock:
            if self._failure is not None:
                raise self._failure
            self._attachments.append(attachment)
            self._attachments.sort(key=lambda a: a.priority)
            connection = self._connection
            if self._ready.is_set() and connection is not None and not connection.is_closed:
                await attachment.attach(connection)

    def unregister(self, attachment: Attachment) -> None:
        with contextlib.suppress(ValueError):
            self._attachments.remove(attachment)

    # -- connecting --------------------------------------------------------

    def _amqp_url(self, url: BrokerURL) -> str:
        return url.for_aiormq(heartbeat=self._heartbeat, name=self._name)

    async def _open(self, url: BrokerURL, limit: float) -> AbstractConnection:
        """One attempt: an open connection that reports being blocked, within ``limit``."""
        connection = _BlockAwareConnection(self._amqp_url(url))
        connection.on_blocked = lambda reason: self._on_blocked(connection, reason)
        connection.on_unblocked = lambda: self._on_unblocked(connection)
        await asyncio.wait_for(connection.connect(), limit)
        return connection

    async def _connect(
        self, limit: float | None, *, lost_at: float | None = None, lost: BrokerURL | None = None
    ) -> None:
        """Connect and restore, retrying until ``limit`` seconds (``None``: for ever).

        ``lost_at`` (loop time) is when the connection to ``lost`` was lost: a
        reconnect reports the outage's length, not the time spent in this call,
        and tries the URLs after ``lost`` first.
        """
        loop = asyncio.get_running_loop()
        began = loop.time() if lost_at is None else lost_at
        deadline = None if limit is None else loop.time() + limit
        report_at = began + OUTAGE_REPORT_EVERY
        order = self.endpoints.urls if lost is None else self.endpoints.after(lost)
        attempt = rounds = 0
        failures: dict[BrokerURL, BrokerError] = {}  # each URL's last failure
        while True:
            permanent = 0
            for url in order:
                remaining = None if deadline is None else deadline - loop.time()
                if self._closed or (remaining is not None and remaining <= 0):
                    raise self._no_connection(limit, attempt, order, failures)
                attempt += 1
                node = url.endpoint
                try:
                    connection = await self._open(
                        url, self.timeout if remaining is None else min(self.timeout, remaining)
                    )
                except Exception as exc:
                    failures[url] = broker_error(exc, url, f"connecting to vhost {url.vhost!r}")
                    permanent += is_permanent(exc)
                    log.debug(
                        "no connection to %s (attempt %d): %s; %s",
                        node,
                        attempt,
                        failures[url],
                        "trying the next URL" if len(order) > 1 else "retrying",
                        extra={"node": node, "attempt": attempt, "reason": str(failures[url])},
                    )
                    continue
                self.url = url
                try:
                    await self._restore(connection)
                except Exception as exc:
                    failures[url] = broker_error(exc, url, "restoring consumers and queues")
                    log.warning(
                        "%s; reconnecting",
                        failures[url],
                        extra={"node": node, "attempt": attempt, "reason": str(failures[url])},
                    )
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), 1.0)
                    continue
                moved = "" if lost is None or lost == url else f", moved from {lost.endpoint}"
                log.info(
                    "connected%s to %s (vhost %r) after %.1f s and %d attempt(s)%s",
                    "" if lost_at is None else " again",
                    node,
                    url.vhost,
                    loop.time() - began,
                    attempt,
                    moved,
                    extra={"node": node, "attempt": attempt},
                )
                return
            rounds += 1
            if permanent == len(order):
                # Every URL refused for a reason retrying cannot fix: say so now, naming each.
                one = order[0]
                if len(order) == 1:
                    raise failures[one]
                raise ConnectionFailed(none_answered([(url, failures[url]) for url in order]))
            now = loop.time()
            if now >= report_at:
                report_at = now + OUTAGE_REPORT_EVERY
                where = ", ".join(url.endpoint for url in order)
                why = none_answered([(url, failures[url]) for url in order if url in failures])
                log.warning(
                    "no connection to %s for %.0f s, %d attempts; still trying %s: %s",
                    where,
                    now - began,
                    attempt,
                    "for ever" if deadline is None else f"for up to {limit:g} s",
                    why,
                    extra={"node": where, "attempt": attempt, "reason": str(why)},
                )
            pause = backoff(rounds - 1)
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - now))
            await asyncio.sleep(pause)

    def _no_connection(
        self,
        limit: float | None,
        attempt: int,
        order: tuple[BrokerURL, ...],
        failures: dict[BrokerURL, BrokerError],
    ) -> ConnectionFailed:
        """Why the wait for a connection ended without one (its deadline, or ``close()``)."""
        seen = [(url, failures[url]) for url in order if url in failures]
        if limit is None:
            return ConnectionFailed(
                f"the client of {self.url.endpoint} was closed while connecting"
            )
        if not seen:
            where = ", ".join(url.endpoint for url in order)
            return ConnectionFailed(f"RabbitMQ at {where}: no connection within {limit:g} s")
        return ConnectionFailed(
            Phrase.of(
                f"gave up after {limit:g} s and {attempt} attempt(s) to connect: ",
                none_answered(seen),
            )
        )

    async def _restore(self, connection: AbstractConnection) -> None:
        async with self._lock:
            self._connection = connection
            self.generation += 1
            for attachment in list(self._attachments):
                try:
                    await attachment.attach(connection)
                except Exception:
                    if connection.is_closed:
                        raise
                    log.exception(
                        "could not restore %r", attachment, extra={"node": self.url.endpoint}
                    )
            self._ready.set()

    # -- the broker's flow control ---------------------------------------------

    def _on_blocked(self, connection: AbstractConnection, reason: str) -> None:
        if connection is not self._connection:
            return
        self._blocked = (reason, asyncio.get_running_loop().time())
        node = self.url.endpoint
        log.warning(
            "RabbitMQ at %s blocked this connection (%s): what it publishes waits until "
            "the alarm clears (rabbitmq-diagnostics alarms)",
            node,
            reason,
            extra={"node": node, "reason": reason},
        )

    def _on_unblocked(self, connection: AbstractConnection) -> None:
        if connection is not self._connection or self._blocked is None:
            return
        reason, since = self._blocked
        self._blocked = None
        node = self.url.endpoint
        log.info(
            "RabbitMQ at %s unblocked this connection after %.1f s (%s)",
            node,
            asyncio.get_running_loop().time() - since,
            reason,
            extra={"node": node, "reason": reason},
        )

    async def _watch(self) -> None:
        """Reconnect whenever the connection closes under us, until closed or given up.

        A bug in here must not leave the client alive and deaf: anything
        unexpected ends the client as a give-up would, so ``wait()`` raises it.
        """
        try:
            await self._keep_connected()
        except BrokerError as exc:
            if not self._closed:
                self._give_up(exc)
        except Exception as exc:
            if not self._closed:
                log.exception(
                    "the connection's supervisor failed", extra={"node": self.url.endpoint}
                )
                self._give_up(
                    ConnectionFailed(
                        f"RabbitMQ at {self.url.endpoint}: the connection's supervisor failed "
                        f"({type(exc).__name__}: {exc}); this is a bug in rabbitry"
                    )
                )

    async def _keep_connected(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            connection = self._connection
            if connection is None:  # closed meanwhile
                return
            closing = connection.closing
            await asyncio.wait([closing])
            if self._closed:
                return
            lost_at, lost = loop.time(), self.url
            node = lost.endpoint
            self._ready.clear()
            self._blocked = None  # that connection's state; a new one starts unblocked
            reason = _why_closed(closing)
            log.warning(
                "lost the connection to %s (%s); reconnecting %s",
                node,
                reason,
                "for ever"
                if self._reconnect_timeout is None
                else f"for up to {self._reconnect_timeout:g} s",
                extra={"node": node, "reason": reason},
            )
            for attachment in list(self._attachments):
                attachment.detach(None)
            await self._connect(self._reconnect_timeout, lost_at=lost_at, lost=lost)

    def _give_up(self, failure: BrokerError) -> None:
        """End the client: every waiter, attachment and ``wait()`` gets ``failure``."""
        log.error("%s", failure, extra={"node": self.url.endpoint, "reason": str(failure)})
        self._failure = self._gave_up = failure
        self._ready.set()
        self._ended.set()
        for attachment in list(self._attachments):
            attachment.detach(failure)


def _why_closed(closing: asyncio.Future[Any]) -> str:
    """What closed the connection, in one line (aiormq sets the broker's close or the error)."""
    if closing.cancelled():
        return "closed"
    exc = closing.exception()
    if exc is None:
        return "closed"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
