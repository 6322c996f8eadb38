"""Frame splitting: a node whose ``frame_max`` is 4096 bytes, and messages of 100 KB.

A body larger than the negotiated ``frame_max`` travels as many body frames
(``broker/_frames.py`` writes them on publish; aiormq reassembles them on
delivery).  The shared broker's ``frame_max`` is 128 KiB, so a test there
splits little; this module starts a node of its own configured with
``frame_max = 4096`` (the smallest RabbitMQ allows), so every message below
is cut into 25 frames or more, both ways.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import ManagementAPI, fresh_vhost
from rabbitry.broker import converge
from rabbitry.broker.url import parse_url
from rabbitry.check import load_spec
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract
from specs import FLAGSHIP

if TYPE_CHECKING:
    from conftest import Figures

import nodes

pytestmark = pytest.mark.broker

FRAME_MAX = 4096
#: Sizes of the blob in each Start: around one frame, then 100 KB and more.
SIZES = [0, FRAME_MAX - 200, FRAME_MAX, FRAME_MAX * 3 + 1, 100_000, 100_000, 250_000]


@pytest.fixture(scope="module")
def small_frames() -> Iterator[nodes.OwnNode]:
    """A node of this module's own, configured with ``frame_max = 4096``."""
    nodes._require_root()
    with tempfile.TemporaryDirectory(prefix="rabbitry-node-") as folder:
        node = nodes.OwnNode(Path(folder))
        with (node.folder / "rabbitmq.conf").open("a") as config:
            config.write(f"frame_max = {FRAME_MAX}\n")
        try:
            node.start()
            yield node
        finally:
            node.kill()


def start(blob: str) -> dict[str, Any]:
    return {
        "job_id": str(uuid.uuid4()),
        "job_type": "render",
        "steps": 1,
        "submitted_at": "2024-05-01T12:00:00Z",
        "parameters": {"blob": blob},
    }


def test_100_kb_messages_cross_a_4096_byte_frame_max_intact(
    small_frames: nodes.OwnNode, figures: Figures
) -> None:
    """Starts of up to 250 KB, one by one and in a ``publish_many``, are confirmed and handled
    byte for byte; the connection really negotiated 4096."""
    api = ManagementAPI(small_frames.config)
    vhosts = fresh_vhost(api)
    vhost = next(vhosts)
    contract = Contract.load(FLAGSHIP)
    url = parse_url(vhost.amqp_url, management=small_frames.management_url)
    got: dict[str, str] = {}
    sent: dict[str, str] = {}
    frame_maxes: list[int] = []

    async def handler(delivery: Delivery[Any]) -> None:
        got[delivery.body["job_id"]] = delivery.body["parameters"]["blob"]

    async def body() -> float:
        await converge.apply(load_spec(FLAGSHIP), url, timeout=10)
        async with Client(contract, vhost.amqp_url, timeout=30) as client:
            consumer = client.consume("jobs.ready", handler)
            await consumer.ready()
            began = time.monotonic()
            singles = [start(chr(ord("a") + i % 26) * size) for i, size in enumerate(SIZES)]
            for payload in singles:
                await client.publish("Start", payload)
            batch = [start(str(i) * 100_000) for i in range(10)]
            await client.publish_many([("Start", p) for p in batch])
            for payload in singles + batch:
                sent[payload["job_id"]] = payload["parameters"]["blob"]
            while got.keys() != sent.keys():
                assert time.monotonic() - began < 60, f"{len(sent) - len(got)} never arrived"
                await asyncio.sleep(0.05)
            took = time.monotonic() - began
            for _ in range(100):  # the management API lists a connection a few seconds late
                listed = httpx.get(
                    f"{small_frames.management_url}/api/vhosts/"
                    f"{quote(vhost.name, safe='')}/connections",
                    auth=("guest", "guest"),
                    timeout=5,
                ).json()
                if listed:
                    frame_maxes.extend(c["frame_max"] for c in listed)
                    break
                await asyncio.sleep(0.2)
            return took

    try:
        took = asyncio.run(asyncio.wait_for(body(), 120))
    finally:
        vhosts.close()
    intact = sum(got[j] == blob for j, blob in sent.items())
    figures.record(
        "frame splitting (frame_max 4096, up to 250 KB)",
        f"{intact} of {len(sent)} messages ({sum(SIZES) + 1_000_000} bytes of blob) arrived "
        f"intact in {took:.1f} s",
        lost=len(sent.keys() - got.keys()),
    )
    assert frame_maxes, "no connection was listed"
    assert set(frame_maxes) == {FRAME_MAX}
    assert intact == len(sent)


#: Text whose UTF-8 takes 1 to 4 bytes a character: a frame may end inside one.
TEXT = st.text(st.sampled_from('a\u00e9\u20ac\U0001f600"\\'), max_size=3 * FRAME_MAX)


@pytest.fixture(scope="module")
def small_frames_jobs(small_frames: nodes.OwnNode) -> Iterator[str]:
    """The AMQP URL of a vhost on the small-frames node with the flagship applied."""
    vhosts = fresh_vhost(ManagementAPI(small_frames.config))
    vhost = next(vhosts)
    url = parse_url(vhost.amqp_url, management=small_frames.management_url)
    asyncio.run(converge.apply(load_spec(FLAGSHIP), url, timeout=10))
    try:
        yield vhost.amqp_url
    finally:
        vhosts.close()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(blobs=st.lists(TEXT, min_size=1, max_size=6))
def test_any_text_crosses_frame_boundaries_intact(small_frames_jobs: str, blobs: list[str]) -> None:
    """Whatever the text, and wherever a 4096-byte frame ends (inside a multi-byte
    character too), the handler gets exactly what was published."""
    contract = Contract.load(FLAGSHIP)
    got: dict[str, str] = {}

    async def handler(delivery: Delivery[Any]) -> None:
        got[delivery.body["job_id"]] = delivery.body["parameters"]["blob"]

    async def body() -> dict[str, str]:
        async with Client(contract, small_frames_jobs, timeout=30) as client:
            consumer = client.consume("jobs.ready", handler)
            await consumer.ready()
            payloads = [start(blob) for blob in blobs]
            await client.publish_many([("Start", p) for p in payloads])
            sent = {p["job_id"]: p["parameters"]["blob"] for p in payloads}
            began = time.monotonic()
            while not sent.keys() <= got.keys():
                assert time.monotonic() - began < 20, "a message never arrived"
                await asyncio.sleep(0.02)
            return sent

    sent = asyncio.run(asyncio.wait_for(body(), 60))
    assert {j: got[j] for j in sent} == sent
