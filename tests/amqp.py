"""The small AMQP helpers the broker suites share: run, wait, read a queue raw, cut connections.

One home for them, beside ``broker.py`` (the vhost per test) and ``specs.py``
(the specs on disk), so that a test module imports its helpers from here and
never from another test module (importing a test module runs its collection
side effects and ties two suites together by accident).  What reached a queue
is read raw (aiormq ``basic_get``, passive declares), never through the code
under test.  The fixtures ``contract`` and ``jobs`` (the flagship on a fresh
vhost) live in ``conftest.py`` and are built from :func:`apply`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiormq
import httpx
from pamqp import commands as spec

from broker import Vhost
from rabbitry.broker import converge
from rabbitry.broker.url import parse_url
from rabbitry.check import load_spec
from rabbitry.messaging.contract import Contract

__all__ = [
    "AT",
    "Bounded",
    "apply",
    "channel_on",
    "close_connections",
    "depth",
    "drain",
    "publish_ids",
    "raw_publish",
    "start",
    "until",
]

T = TypeVar("T")

#: ``submitted_at`` of every Start the tests send.
AT = "2024-05-01T12:00:00Z"


def start(job_type: str = "render", **more: Any) -> dict[str, Any]:
    """The body of a jobs ``Start`` with a fresh ``job_id`` (the ledger key of the fault tests)."""
    return {
        "job_id": str(uuid.uuid4()),
        "job_type": job_type,
        "steps": 3,
        "submitted_at": AT,
        **more,
    }


@dataclass(frozen=True)
class Bounded:
    """``asyncio.run`` with a time limit, so that a hang fails the test instead of the run.

    Each module picks its limit once (``run = Bounded(60)``); a call that needs
    more passes its own (``run(body(), 150)``).
    """

    limit: float

    def __call__(self, coroutine: Awaitable[T], limit: float | None = None) -> T:
        seconds = self.limit if limit is None else limit

        async def bounded() -> T:
            return await asyncio.wait_for(coroutine, seconds)

        return asyncio.run(bounded())


async def until(
    check: Callable[[], bool], timeout: float, what: str = "", *, poll: float = 0.01
) -> float:
    """Seconds until ``check()`` holds; fails the test after ``timeout``.

    ``what`` completes "timed out waiting ..."; the seconds are the figure that
    recovery tests report, so the poll is short.
    """
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < timeout, f"timed out waiting {what}".rstrip()
        await asyncio.sleep(poll)
    return time.monotonic() - began


def apply(vhost: Vhost, path: Path) -> Contract:
    """Apply the spec at ``path`` to ``vhost`` (``converge.apply``); its contract."""
    spec_ = load_spec(path)
    asyncio.run(converge.apply(spec_, parse_url(vhost.amqp_url), timeout=10))
    return Contract.from_spec(spec_)


@contextlib.asynccontextmanager
async def channel_on(vhost: Vhost) -> AsyncIterator[Any]:
    """A raw channel on ``vhost``, its connection closed after."""
    connection = await aiormq.connect(vhost.amqp_url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def publish_ids(vhost: Vhost, exchange: str, routing_key: str, ids: list[str]) -> None:
    """One persistent, mandatory message per id (the id is its body and ``message_id``),
    pipelined on one channel; every confirm must be an ack."""
    async with channel_on(vhost) as channel:
        confirmations = [
            channel.basic_publish(
                i.encode(),
                exchange=exchange,
                routing_key=routing_key,
                mandatory=True,
                properties=spec.Basic.Properties(message_id=i, delivery_mode=2),
            )
            for i in ids
        ]
        for result in await asyncio.gather(*confirmations):
            assert isinstance(result, spec.Basic.Ack)


async def depth(url: str, queue: str) -> int:
    """Messages ready in ``queue``, read raw."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        ok = await channel.queue_declare(queue, passive=True)
        return int(ok.message_count)
    finally:
        await connection.close()


async def drain(url: str, queue: str, want: int, timeout: float = 10.0) -> list[Any]:
    """Take ``want`` messages from ``queue`` raw (basic_get, acked), waiting up to ``timeout``."""
    connection = await aiormq.connect(url)
    got: list[Any] = []
    try:
        channel = await connection.channel()
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < want and asyncio.get_running_loop().time() < deadline:
            message = await channel.basic_get(queue, no_ack=True)
            if isinstance(message.delivery, spec.Basic.GetEmpty):
                await asyncio.sleep(0.05)
                continue
            got.append(message)
        return got
    finally:
        await connection.close()


async def raw_publish(
    url: str, exchange: str, routing_key: str, items: list[tuple[bytes, dict[str, Any]]]
) -> None:
    """Publish bodies with the given properties, bypassing rabbitry (confirmed)."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for body, properties in items:
            await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=spec.Basic.Properties(**properties),
            )
    finally:
        await connection.close()


def close_connections(vhost: Vhost) -> None:
    """The broker closes every connection of ``vhost`` (rabbitmqctl; else the HTTP API)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    ctl = shutil.which("rabbitmqctl", path=path)
    if ctl is not None:
        done = subprocess.run(
            [ctl, "close_all_connections", "--vhost", vhost.name, "rabbitry test"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode == 0:
            return
    api = vhost.api
    for connection in api.get_json(f"/api/vhosts/{quote(vhost.name, safe='')}/connections"):
        with contextlib.suppress(httpx.HTTPError):
            api._client.delete(f"/api/connections/{quote(connection['name'], safe='')}")
