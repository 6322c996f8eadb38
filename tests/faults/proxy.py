"""A TCP fault proxy: put it between a client and a node's AMQP port, then break the line.

Why a proxy: a node can close a connection (``close_all_connections``) or go
away (a stop), but it cannot make the network lie.  The faults a real network
causes, and that only the client's own machinery (heartbeats, timeouts) can
notice, are made here:

- ``drop()``: close both sides of every open connection (a FIN each way);
- ``reset()``: abort both sides with ``SO_LINGER`` 0, so the kernel sends a
  RST (what a firewall or a crashed host's kernel does);
- ``blackhole()``: stop forwarding and keep every socket open, no FIN, no
  RST: a half-open connection; bytes are read and thrown away, so nothing
  blocks on a full buffer and nothing tells the client.  Only heartbeats
  detect it.  With ``new_too=True`` new connections are accepted and
  blackholed as well (a network partition);
- ``delay(seconds)``: add latency to every chunk, each way;
- ``heal()``: new connections pass again (a blackholed connection stays
  blackholed: its bytes are lost, its AMQP stream is broken for good).

It runs its own event loop in a daemon thread, so a synchronous test and an
``asyncio.run`` test alike can use it and the client's loop never shares a
scheduler with the fault.  Every method may be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["FaultProxy"]

T = TypeVar("T")
CHUNK = 65536


class _Link:
    """One proxied connection: the client's side, the node's side, and whether it is cut."""

    def __init__(self, client: asyncio.StreamWriter, blackholed: bool) -> None:
        self.client = client
        self.node: asyncio.StreamWriter | None = None
        self.blackholed = blackholed

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.node) if w is not None]


class FaultProxy:
    """Listens on ``127.0.0.1:port`` and forwards to ``target``; ``close()`` ends it all."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.latency = 0.0
        self._blackhole = False
        self._links: set[_Link] = set()
        #: Connections accepted since the start: a reconnect shows here.
        self.accepted = 0
        #: ``time.monotonic()`` when a connection last ended (either side, or a cut): when a
        #: fault caused elsewhere (a node closing connections) actually landed.
        self.last_end: float | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = self._call(self._listen())
        self.port: int = self._server.sockets[0].getsockname()[1]

    # -- from any thread ------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def _do(self, action: Callable[[], T]) -> T:
        async def run() -> T:
            return action()

        return self._call(run())

    def url(self, amqp_url: str) -> str:
        """``amqp_url`` (to the target) rewritten to go through the proxy."""
        host, port = self.target
        for old in (f"@{host}:{port}/", f"@localhost:{port}/"):
            if old in amqp_url:
                return amqp_url.replace(old, f"@127.0.0.1:{self.port}/")
        raise ValueError(f"{amqp_url!r} does not point at {host}:{port}")

    @property
    def open_links(self) -> int:
        """Connections open through the proxy now."""
        return self._do(lambda: len(self._links))

    def drop(self) -> int:
        """Close both sides of every open connection (FIN); how many there were."""
        return self._do(lambda: self._cut(lambda w: w.close()))

    def reset(self) -> int:
        """Abort both sides of every open connection with a RST; how many there were."""

        def abort(writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

        return self._do(lambda: self._cut(abort))

    def blackhole(self, *, new_too: bool = False) -> int:
        """Forward nothing more on the open connections, and close nothing; how many were
        open.  ``new_too``: new connections are blackholed as well (a partition, until
        ``heal()``); else they pass (a NAT entry or a peer lost: a reconnect works)."""

        def cut() -> int:
            self._blackhole = new_too
            for link in self._links:
                link.blackholed = True
            return len(self._links)

        return self._do(cut)

    def delay(self, seconds: float) -> None:
        """Hold every chunk ``seconds`` before forwarding it (0: none)."""
        self.latency = seconds

    def heal(self) -> None:
        """Forward new connections again, at no added latency."""
        self.latency = 0.0
        self._blackhole = False

    def close(self) -> None:
        """Drop every connection, stop listening and end the thread."""

        async def stop() -> None:
            self._server.close()
            self._cut(lambda w: w.transport.abort())
            await self._server.wait_closed()

        with contextlib.suppress(Exception):
            self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    # -- on the proxy's loop ------------------------------------------------------------

    def _cut(self, how: Callable[[asyncio.StreamWriter], None]) -> int:
        links, self._links = list(self._links), set()
        self.last_end = time.monotonic()
        for link in links:
            for writer in link.writers():
                with contextlib.suppress(Exception):
                    how(writer)
        return len(links)

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link(writer, self._blackhole)
        self._links.add(link)
        try:
            if not link.blackholed:  # a new connection is blackholed after blackhole(new_too=True)
                node_reader, link.node = await asyncio.open_connection(*self.target)
                if link not in self._links:  # cut while connecting
                    link.node.close()
                    return
                await asyncio.gather(
                    self._pump(reader, link.node, link), self._pump(node_reader, writer, link)
                )
            else:
                await self._pump(reader, None, link)
        except OSError:
            pass
        finally:
            if link in self._links:
                self._links.discard(link)
                self.last_end = time.monotonic()
                for w in link.writers():
                    w.close()

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter | None, link: _Link
    ) -> None:
        """Copy ``source`` to ``sink`` until either ends; a blackholed link swallows bytes.

        A side that ends closes the other, unless the link is blackholed: then the
        other side is left open (half-open) until it ends on its own or ``close()``.
        """
        try:
            while True:
                data = await source.read(CHUNK)
                if not data:
                    break
                if link.blackholed or sink is None:
                    continue
                if self.latency:
                    await asyncio.sleep(self.latency)
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        if not link.blackholed and link in self._links:
            self._links.discard(link)
            self.last_end = time.monotonic()
            for w in link.writers():
                w.close()
