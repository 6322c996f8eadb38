"""The connection supervisor: one aiormq connection, kept open.

aiormq has no reconnection of its own.  The supervisor

- connects with capped exponential backoff and jitter (``BACKOFF_*``) until
  an overall deadline (``connect_timeout`` at start, ``reconnect_timeout``
  after a loss), each attempt bounded by ``timeout``; refused credentials or
  a missing vhost end the wait at once (retrying cannot fix them);
- sets the heartbeat: aiormq drops a connection that sent nothing for
  ``(heartbeat + 1) * 3`` seconds (18 s for the default 5, 6 s for 1);
- watches the connection and, when it closes under us, reconnects and then
  *restores* every registered ``Attachment`` in order of ``priority``
  (run-time queues and their bindings, then consumers) before it opens the
  gate (``connection()``) that publishers wait at — so a message published
  by this client after a reconnect finds the queues this client consumes;
- when a reconnect does not succeed by its deadline, fails: every waiter and
  attachment gets the ``ConnectionFailed``.

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
from urllib.parse import quote

import aiormq

from rabbitry.broker.amqp import broker_error, is_permanent
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import BrokerError, BrokerTimeout, ConnectionFailed

__all__ = ["Attachment", "Supervisor", "backoff"]

log = logging.getLogger("rabbitry.messaging")

BACKOFF_FIRST = 0.1
BACKOFF_CAP = 5.0


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

    async def attach(self, connection: Any) -> None:
        """Set up on ``connection`` (after each (re)connect, or at once when registered).

        Raise only when the connection itself failed; a channel-level failure
        is the attachment's own to record.
        """

    def detach(self, failure: BrokerError | None) -> None:
        """The connection is gone (``None``: a reconnect follows) or given up (``failure``)."""


class Supervisor:
    def __init__(
        self,
        url: BrokerURL,
        *,
        name: str,
        heartbeat: int,
        connect_timeout: float,
        reconnect_timeout: float,
        timeout: float,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._heartbeat = heartbeat
        self._name = name
        self._connect_timeout = connect_timeout
        self._reconnect_timeout = reconnect_timeout
        self._connection: Any = None
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._attachments: list[Attachment] = []
        self._failure: BrokerError | None = None
        self._closed = False
        self._monitor: asyncio.Task[None] | None = None
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

    async def connection(self, deadline: float | None = None) -> Any:
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

    def _amqp_url(self) -> str:
        query = f"heartbeat={self._heartbeat}&name={quote(self._name, safe='')}"
        return f"{self.url.amqp}?{query}"

    async def _connect(self, limit: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        attempt = 0
        last: BrokerError | None = None
        what = f"connecting to vhost {self.url.vhost!r}"
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closed:
                raise ConnectionFailed(
                    f"gave up after {limit:g} s and {attempt} attempt(s) to connect: {last}"
                    if last
                    else f"RabbitMQ at {self.url.endpoint}: no connection within {limit:g} s"
                )
            attempt += 1
            try:
                connection = await asyncio.wait_for(
                    aiormq.connect(self._amqp_url()), min(self.timeout, remaining)
                )
            except Exception as exc:
                last = broker_error(exc, self.url, what)
                if is_permanent(exc):
                    raise last from None
                log.info("rabbitry: %s (attempt %d); retrying", last, attempt)
            else:
                try:
                    await self._restore(connection)
                except Exception as exc:
                    last = broker_error(exc, self.url, "restoring consumers and queues")
                    log.warning("rabbitry: %s; reconnecting", last)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), 1.0)
                else:
                    return
            await asyncio.sleep(min(backoff(attempt - 1), max(0.0, deadline - loop.time())))

    async def _restore(self, connection: Any) -> None:
        async with self._lock:
            self._connection = connection
            self.generation += 1
            for attachment in list(self._attachments):
                try:
                    await attachment.attach(connection)
                except Exception:
                    if connection.is_closed:
                        raise
                    log.exception("rabbitry: could not restore %r", attachment)
            self._ready.set()

    async def _watch(self) -> None:
        while not self._closed:
            closing = self._connection.closing
            await asyncio.wait([closing])
            if self._closed:
                return
            self._ready.clear()
            log.warning("rabbitry: lost the connection to %s; reconnecting", self.url.masked)
            for attachment in list(self._attachments):
                attachment.detach(None)
            try:
                await self._connect(self._reconnect_timeout)
            except BrokerError as exc:
                log.error("rabbitry: %s", exc)
                self._failure = exc
                self._ready.set()
                for attachment in list(self._attachments):
                    attachment.detach(exc)
                return
            log.warning("rabbitry: connected again to %s", self.url.masked)
