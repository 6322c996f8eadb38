"""The run loop: one call runs a service until a signal, drains it, or fails it.

``await client.run()`` (a generated service class: ``await service.client.run()``)
is what every service's ``main`` otherwise writes by hand, and gets subtly wrong:

- **signals**: SIGTERM and SIGINT (the ones a supervisor and a terminal send)
  end the run; the handlers are the loop's own until the drain is over, and
  Python's defaults again after;
- **graceful drain with a deadline**: every consumer sends ``basic.cancel``
  at once (nothing new is taken; deliveries in hand that have not started, e.g.
  waiting for a ``concurrency`` slot, are requeued at once), its handlers in
  flight get ``drain_timeout`` seconds to finish and be acked, and the ones
  still running then are cancelled and their messages requeued (``basic.nack``
  with ``requeue``) so another consumer takes them.  Then ``run()`` returns and
  the ``async with`` closes the connection: exit status 0.  The default,
  ``DEFAULT_DRAIN_TIMEOUT``, fits inside Kubernetes' 30 s grace period and
  systemd's 90 s ``TimeoutStopSec``;
- **a second signal during the drain stops at once**: whoever sends it (an
  impatient Ctrl-C, a supervisor's second SIGTERM) wants the process gone
  now, yet killing it outright would leave the requeueing to the broker's
  notice of a dead connection.  The handlers still running are cancelled
  there and then, their messages requeued (``basic.nack``, before the channel
  closes), the connection closed, and ``run()`` raises ``SystemExit`` with
  ``128 + the signal's number`` (130 for SIGINT, 143 for SIGTERM): the status
  a shell gives a process ended by that signal, so a supervisor sees a stop
  that was cut short, never a clean 0 (work was abandoned) nor a crash's 1.
  The defaults are back from then on: a third signal is Python's (Ctrl-C
  raises ``KeyboardInterrupt`` wherever the loop is, SIGTERM kills);
- **a readiness / liveness file** (``ready_file``): present while the client is
  connected and every consumer consumes, its modification time refreshed every
  ``check_every`` seconds; absent otherwise (connecting, reconnecting, a queue
  gone and waited for, draining, stopped).  A file, not an HTTP endpoint: it
  needs no port, no server in the process and no network policy, every
  supervisor can read it (a Kubernetes ``exec`` probe ``test -f``, or ``find
  FILE -newermt '-10 seconds'`` for liveness: a stale file means a blocked
  event loop; a Docker ``HEALTHCHECK``; systemd ``ExecCondition``), and an
  HTTP probe can be a one-line sidecar over it, while the reverse is not true;
- **failing, never idling**: when the client gives up on the broker (an outage
  longer than ``reconnect_timeout``) or a consumer stops for good (its queue
  gone longer than ``reattach_timeout``, access refused), the other consumers
  are drained the same way and ``run()`` raises why (``ConnectionFailed``,
  ``NotFound``, ...): uncaught, the process exits 1.

Subscriptions (run-time queues) are the application's own: they are not part
of readiness (a worker opens one per job) and close with the client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rabbitry.errors import InvalidArgument
from rabbitry.messaging._consumer import Consumer

if TYPE_CHECKING:
    from rabbitry.messaging.client import Client

__all__ = ["DEFAULT_CHECK_EVERY", "DEFAULT_DRAIN_TIMEOUT", "SIGNALS", "ReadyFile", "serve"]

log = logging.getLogger("rabbitry.messaging")

#: Seconds the handlers in flight get to finish once a signal came.
DEFAULT_DRAIN_TIMEOUT = 20.0
#: Seconds between health checks (and refreshes of the ready file).
DEFAULT_CHECK_EVERY = 1.0
#: Seconds between cancelling the handlers in flight once a second signal came.
HURRY_EVERY = 0.05
#: The signals that end a run: a supervisor's (SIGTERM) and a terminal's (SIGINT).
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ReadyFile:
    """A file that exists exactly while the service is healthy, touched on every check."""

    __slots__ = ("path", "up")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.up = False

    def set(self, healthy: bool) -> None:
        if healthy:
            if self.up and self.path.exists():
                os.utime(self.path)  # liveness: a fresh time means the loop runs
                return
            staged = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            staged.write_text(f"{os.getpid()}\n")
            os.replace(staged, self.path)  # appears whole, never half-written
            self.up = True
        else:
            self.down()

    def down(self) -> None:
        self.path.unlink(missing_ok=True)
        self.up = False


def _consumers(client: Client) -> list[Consumer]:
    return [inbox for inbox in client._inboxes if isinstance(inbox, Consumer)]


def _healthy(client: Client, consumers: Iterable[Consumer]) -> bool:
    return client.is_connected and all(consumer.consuming for consumer in consumers)


class _Signals:
    """The run's signal handlers, installed for the run and its drain, the defaults after.

    The first signal sets ``stop`` (drain); one more while draining sets ``hurry``."""

    def __init__(self, signals: Iterable[signal.Signals]) -> None:
        self.stop = asyncio.Event()
        self.hurry = asyncio.Event()
        self.received: list[signal.Signals] = []
        self._loop = asyncio.get_running_loop()
        self._installed: list[signal.Signals] = []
        for sig in signals:
            self._loop.add_signal_handler(sig, self._on_signal, sig)
            self._installed.append(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self.received.append(sig)
        if self.stop.is_set():
            self.hurry.set()  # a second signal: stop the drain at once (see the module)
        self.stop.set()

    def restore(self) -> None:
        while self._installed:
            self._loop.remove_signal_handler(self._installed.pop())


async def serve(
    client: Client,
    *,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    ready_file: str | os.PathLike[str] | None = None,
    check_every: float = DEFAULT_CHECK_EVERY,
    signals: Iterable[signal.Signals] = SIGNALS,
) -> None:
    """Run ``client``'s consumers until a signal (drain, return) or a failure (drain the
    rest, raise it); a second signal during the drain cuts it short (``SystemExit`` with
    128 + its number).  See the module's docstring."""
    if drain_timeout < 0 or check_every <= 0:
        raise InvalidArgument(
            "drain_timeout may not be negative and check_every must be positive, not "
            f"{drain_timeout:g} and {check_every:g}"
        )
    handlers = _Signals(signals)
    try:
        probe = None if ready_file is None else ReadyFile(Path(ready_file))
        failure = await _watch(client, probe, check_every, handlers.stop)
        if failure is None and not handlers.stop.is_set():
            return  # the client was closed under the run: nothing left to drain
        received = handlers.received
        consumers = _consumers(client)
        log.info(
            "%s: draining %d consumer(s), %g s for the handlers in flight",
            received[0].name if received else f"stopping ({failure})",
            len(consumers),
            drain_timeout,
            extra={"reason": received[0].name if received else str(failure)},
        )
        results = await _drain(consumers, drain_timeout, handlers.hurry)
    finally:
        handlers.restore()
    for consumer, result in zip(consumers, results, strict=True):
        if isinstance(result, Exception):
            log.warning(
                "draining the consumer of queue %r: %s",
                consumer.queue,
                result,
                extra={"queue": consumer.queue, "reason": str(result)},
            )
    if handlers.hurry.is_set():
        second = received[-1]
        log.warning(
            "%s again during the drain: the handlers in flight were cancelled and their "
            "messages requeued; exit status %d",
            second.name,
            128 + second,
            extra={"reason": second.name},
        )
        raise SystemExit(128 + second)
    if failure is not None:
        raise failure


async def _watch(
    client: Client, probe: ReadyFile | None, check_every: float, stop: asyncio.Event
) -> BaseException | None:
    """Watch the client and its consumers until ``stop`` (``None``), the client closed
    (``None``, ``stop`` unset) or a failure (returned); the ready file follows them."""
    connected = asyncio.ensure_future(client.wait())
    stopping = asyncio.ensure_future(stop.wait())
    watched: dict[Consumer, asyncio.Future[None]] = {}
    failure: BaseException | None = None
    try:
        while failure is None:
            for consumer in _consumers(client):
                if consumer not in watched:
                    watched[consumer] = asyncio.ensure_future(consumer.wait())
            if probe is not None:
                probe.set(_healthy(client, watched))
            waits: set[asyncio.Future[Any]] = {connected, stopping, *watched.values()}
            await asyncio.wait(waits, timeout=check_every, return_when=asyncio.FIRST_COMPLETED)
            if stopping.done():
                return None
            if connected.done():
                return connected.exception()
            for consumer, waited in list(watched.items()):
                if waited.done():
                    del watched[consumer]  # cancelled by the application, or failed
                    failure = failure or waited.exception()
        return failure
    finally:
        if probe is not None:
            probe.down()
        pending: list[asyncio.Future[Any]] = [connected, stopping, *watched.values()]
        for waiting in pending:
            waiting.cancel()


async def _drain(
    consumers: list[Consumer], drain_timeout: float, hurry: asyncio.Event
) -> list[BaseException | None]:
    """Cancel every consumer, its handlers given ``drain_timeout``; when ``hurry`` is set
    (a second signal) before that, the handlers still running are cancelled at once: the
    drain then ends as at its deadline (requeued, channel closed) without waiting for it."""
    draining: asyncio.Future[list[BaseException | None]] = asyncio.gather(
        *(consumer.cancel(drain_timeout) for consumer in consumers), return_exceptions=True
    )
    hurried: asyncio.Future[Any] = asyncio.ensure_future(hurry.wait())
    try:
        await asyncio.wait({draining, hurried}, return_when=asyncio.FIRST_COMPLETED)
        while not draining.done():
            # Again until the drain ends: a delivery that arrived before basic.cancel-ok
            # starts after the first round.
            for consumer in consumers:
                for task in _handlers(consumer):
                    task.cancel()
            await asyncio.wait({draining}, timeout=HURRY_EVERY)
        return await draining
    finally:
        hurried.cancel()
        draining.cancel()  # done by now, unless the run itself was cancelled


def _handlers(consumer: Consumer) -> list[asyncio.Task[Any]]:
    """The consumer's deliveries in flight (being handled or waiting for a slot): cancelled
    while it drains, each requeues its message (``Consumer._accept``) and the drain's wait
    for them ends."""
    links = [*consumer._old, *([consumer._link] if consumer._link is not None else [])]
    return [task for link in links for task in link.inflight]
