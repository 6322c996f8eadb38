"""The runtime when the connection fails: reconnecting, restoring, waiting, giving up.

The broker closes the connections (``rabbitmqctl close_all_connections
--vhost``), or a small TCP proxy on this machine stands between the client and
the broker and comes late, freezes (a dead peer: only heartbeats notice) or
goes away for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from typing import Any
from urllib.parse import quote

import pytest

from amqp import AT, close_connections, drain, start, until
from broker import Vhost
from rabbitry.broker.url import parse_url
from rabbitry.errors import ConnectionFailed, PublishTimeout
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract


def generation(client: Client) -> int:
    supervisor = client._supervisor
    assert supervisor is not None
    return supervisor.generation


def test_connections_closed_by_the_broker_mid_stream(jobs: Vhost, contract: Contract) -> None:
    """Reconnect, restore consumer and subscription; every confirmed message arrives."""
    job_id = str(uuid.uuid4())

    async def body() -> None:
        confirmed: set[str] = set()
        unknown: list[PublishTimeout] = []
        received: set[str] = set()

        async def handler(delivery: Delivery[Any]) -> None:
            received.add(delivery.body["job_id"])

        server = Client(contract, jobs.amqp_url, service="server", timeout=20, heartbeat=2)
        worker = Client(contract, jobs.amqp_url, service="worker", timeout=20, heartbeat=2)
        async with server, worker, server.subscribe("job-status", job_id=job_id) as status:
            worker.consume("jobs.ready", handler)
            stop = asyncio.Event()

            async def produce() -> None:
                while not stop.is_set():
                    payload = start()
                    try:
                        await server.publish("Start", payload)
                    except PublishTimeout as exc:  # allowed: reported, never silent
                        unknown.append(exc)
                    else:
                        confirmed.add(payload["job_id"])
                    await asyncio.sleep(0.002)

            producers = [asyncio.create_task(produce()) for _ in range(4)]
            await until(lambda: len(received) >= 50, 15, what="for the first deliveries")
            before = generation(server), generation(worker)
            await asyncio.to_thread(close_connections, jobs)
            await until(
                lambda: generation(server) > before[0] and generation(worker) > before[1],
                15,
                what="for both clients to reconnect",
            )
            sent = len(confirmed)
            await until(lambda: len(confirmed) >= sent + 50, 15, what="for publishing to resume")
            stop.set()
            await asyncio.gather(*producers)
            await until(lambda: confirmed <= received, 15, what="for every confirmed message")
            # the subscription was declared and bound again
            await worker.publish(
                "StartSuccess", {"job_id": job_id, "worker": "w", "started_at": AT}
            )
            delivery = await asyncio.wait_for(anext(status), 10)
            assert delivery.type == "StartSuccess"
        assert all(exc.sent for exc in unknown)
        assert len(confirmed) > 100

    asyncio.run(body())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Proxy:
    """A TCP proxy to the broker, on this machine, that can come late, freeze or go away."""

    def __init__(self, target: tuple[str, int], port: int) -> None:
        self.target = target
        self.port = port
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.frozen: set[int] = set()  # ids of links that no longer pass bytes
        self.links = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.links += 1
        link = self.links
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while True:
                    while link in self.frozen:  # hold everything, close nothing: a dead peer
                        await asyncio.sleep(0.05)
                    data = await source.read(65536)
                    if not data:
                        break
                    sink.write(data)
                    await sink.drain()
            if link not in self.frozen:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def freeze(self) -> None:
        self.frozen.update(range(1, self.links + 1))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.close()
        self.frozen.clear()


def proxied(url: str, port: int) -> str:
    parsed = parse_url(url)
    vhost = quote(parsed.vhost, safe="")
    return f"amqp://{parsed.username}:{parsed.password}@127.0.0.1:{port}/{vhost}"


def test_a_broker_down_at_start_is_waited_for_then_a_clear_error(contract: Contract) -> None:
    port = free_port()

    async def body() -> None:
        began = time.monotonic()
        with pytest.raises(ConnectionFailed) as failed:
            async with Client(
                contract, f"amqp://guest:guest@127.0.0.1:{port}/", connect_timeout=1.5
            ):
                pass
        waited = time.monotonic() - began
        assert 1.4 <= waited < 5
        text = str(failed.value)
        assert f"127.0.0.1:{port}" in text
        assert "gave up after 1.5 s" in text
        assert "check that it is running" in text
        assert "guest:guest" not in text

    asyncio.run(body())


def test_a_broker_that_comes_late_is_connected_to(jobs: Vhost, contract: Contract) -> None:
    port = free_port()
    target = parse_url(jobs.amqp_url)
    proxy = Proxy((target.host, target.port), port)

    async def body() -> None:
        async def open_late() -> None:
            await asyncio.sleep(1.0)
            await proxy.start()

        opener = asyncio.create_task(open_late())
        payload = start()
        began = time.monotonic()
        try:
            async with Client(
                contract, proxied(jobs.amqp_url, port), service="server", connect_timeout=10
            ) as client:
                # Connected, through the proxy that opened a second after the first attempt.
                assert time.monotonic() - began >= 1.0
                assert proxy.links >= 1
                assert generation(client) == 1
                await client.publish("Start", payload)
        finally:
            await opener
            await proxy.stop()
        # The message sent over the late connection is in the queue the spec routes it to.
        [message] = await drain(jobs.amqp_url, "jobs.ready", want=1)
        assert json.loads(message.body) == payload

    asyncio.run(body())


def test_wrong_credentials_fail_at_once(jobs: Vhost, contract: Contract) -> None:
    url = parse_url(jobs.amqp_url)
    wrong = f"amqp://{url.username}:not-the-password@{url.host}:{url.port}/"

    async def body() -> None:
        began = time.monotonic()
        with pytest.raises(ConnectionFailed, match="refused the login") as failed:
            async with Client(contract, wrong, connect_timeout=30):
                pass
        assert time.monotonic() - began < 10
        assert "not-the-password" not in str(failed.value)

    asyncio.run(body())


def test_a_dead_peer_is_noticed_by_heartbeat(jobs: Vhost, contract: Contract) -> None:
    port = free_port()
    target = parse_url(jobs.amqp_url)
    proxy = Proxy((target.host, target.port), port)

    async def body() -> None:
        await proxy.start()
        try:
            async with Client(
                contract, proxied(jobs.amqp_url, port), service="server", heartbeat=1, timeout=20
            ) as client:
                await client.publish("Start", start())
                proxy.freeze()
                began = time.monotonic()
                await until(lambda: generation(client) == 2, timeout=15, what="for a reconnect")
                assert time.monotonic() - began < 10
                await client.publish("Start", start())
        finally:
            await proxy.stop()

    asyncio.run(body())


def test_a_reconnect_that_never_succeeds_fails_everything(jobs: Vhost, contract: Contract) -> None:
    port = free_port()
    target = parse_url(jobs.amqp_url)
    proxy = Proxy((target.host, target.port), port)

    async def handler(delivery: Delivery[Any]) -> None:
        return None

    async def body() -> None:
        await proxy.start()
        async with Client(
            contract, proxied(jobs.amqp_url, port), service="worker", reconnect_timeout=1.0
        ) as client:
            consumer = client.consume("jobs.ready", handler)
            await consumer.ready()
            await proxy.stop()
            with pytest.raises(ConnectionFailed, match="gave up after 1 s"):
                await asyncio.wait_for(consumer.wait(), 10)
            with pytest.raises(ConnectionFailed):
                await client.publish(
                    "Update", {"job_id": str(uuid.uuid4()), "step": 1, "progress": 1, "at": AT}
                )

    asyncio.run(body())
