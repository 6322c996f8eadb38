"""The run loop: one call runs a service until a signal, drains it, or fails it.

``await client.run()`` (a generated service class: ``await service.client.run()``)
is what every service's ``main`` otherwise writes by hand, and gets subtly wrong:

- **signals**: SIGTERM and SIGINT (the ones a supervisor and a terminal send)
  end the run; the handlers are the loop's own while it runs and the defaults
  again after, so a second Ctrl-C once it is draining still kills the process;
- **graceful drain with a deadline**: every consumer sends ``basic.cancel``
  at once (nothing new is taken; deliveries in hand that have not started, e.g.
  waiting for a ``concurrency`` slot, are requeued at once), its handlers in
  flight get ``drain_timeout`` seconds to finish and be acked, and the ones
  still running then are cancelled and their messages requeued (``basic.nack``
  with ``requeue``) so another consumer takes them.  Then ``run()`` returns and
  the ``async with`` closes the connection: exit status 0.  The default,
  ``DEFAULT_DRAIN_TIMEOUT``, fits inside Kubernetes' 30 s grace period and
  systemd's 90 s ``TimeoutStopSec``;
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


async def serve(
    client: Client,
    *,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    ready_file: str | os.PathLike[str] | None = None,
    check_every: float = DEFAULT_CHECK_EVERY,
    signals: Iterable[signal.Signals] = SIGNALS,
) -> None:
    """Run ``client``'s consumers until a signal (drain, return) or a failure (drain the
    rest, raise it).  See the module's docstring."""
    if drain_timeout < 0 or check_every <= 0:
        raise InvalidArgument(
            "drain_timeout may not be negative and check_every must be positive, not "
            f"{drain_timeout:g} and {check_every:g}"
        )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[signal.Signals] = []
    installed: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        stop.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
        installed.append(sig)
    probe = None if ready_file is None else ReadyFile(Path(ready_file))
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
                break
            if connected.done():
                failure = connected.exception()
                if failure is None:
                    return  # the client was closed under the run: nothing left to drain
                break
            for consumer, waited in list(watched.items()):
                if waited.done():
                    del watched[consumer]  # cancelled by the application, or failed
                    failure = failure or waited.exception()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if probe is not None:
            probe.down()
        pending: list[asyncio.Future[Any]] = [connected, stopping, *watched.values()]
        for waiting in pending:
            waiting.cancel()
    consumers = _consumers(client)
    log.info(
        "%s: draining %d consumer(s), %g s for the handlers in flight",
        received[0].name if received else f"stopping ({failure})",
        len(consumers),
        drain_timeout,
        extra={"reason": received[0].name if received else str(failure)},
    )
    results = await asyncio.gather(
        *(consumer.cancel(drain_timeout) for consumer in consumers), return_exceptions=True
    )
    for consumer, result in zip(consumers, results, strict=True):
        if isinstance(result, Exception):
            log.warning(
                "draining the consumer of queue %r: %s",
                consumer.queue,
                result,
                extra={"queue": consumer.queue, "reason": str(result)},
            )
    if failure is not None:
        raise failure
