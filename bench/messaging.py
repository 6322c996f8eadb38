"""Messaging speed: validation, confirmed publishing, consuming — against peers, same run.

    python bench/messaging.py [--url URL] [--messages 10000] [--rounds 5]
                              [--concurrency 256] [--prefetch 256] [--queue-type classic]

In a fresh vhost of its own (deleted at the end) it declares one topic
exchange and one durable queue bound to it (``--queue-type``), with the seed's
``Start`` message and schema, then measures, each round alternating the order:

validation   µs per seed message: ``MessageContract.validate`` and all of
             ``prepare`` (validate, JSON, routing key, frames);
publishing   validated + confirmed messages/s of ``Client.publish_many``, of one
             ``Client.publish`` call a message all at once (``asyncio.gather``), of
             ``--concurrency`` tasks each calling ``Client.publish`` in a loop, of raw aiormq
             (``await channel.basic_publish(..., mandatory=True)`` with confirms,
             one await per message, as users write it; JSON but no validation)
             and of a pamqp batched-frame publisher (frames marshalled before the
             clock starts, written 500 to a write, confirms counted: the broker's
             limit here).  Every publisher sends the same body and properties
             (persistent, ``mandatory``) to the same queue, purged in between;
consuming    messages/s draining ``--messages`` from the queue: ``Client.consume``
             (strict decoding, schema validation, a no-op handler, acks) and
             aio-pika (``queue.consume``; the callback parses the JSON and acks),
             with the same prefetch.

It prints the machine, each round, then the medians and the ratios against
the targets (≥ 3x aiormq and ≥ 40 % of the batched-frame publisher; consume
≥ 2x aio-pika; validation ≤ 3 µs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import aiormq
import httpx
import pamqp.frame
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from rabbitry.broker import converge
from rabbitry.broker.url import BrokerURL, parse_url
from rabbitry.check import load_spec
from rabbitry.messaging import _frames
from rabbitry.messaging._publisher import CONTENT_TYPE, prepare
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract

ROOT = Path(__file__).resolve().parent.parent
EXCHANGE = "bench.jobs"
QUEUE = "bench.ready"
BATCH = 500

SPEC = """
version: 1
exchanges:
  bench.jobs: {type: topic}
queues:
  bench.ready: {type: QUEUE_TYPE}
bindings:
  - {from: bench.jobs, queue: bench.ready, key: "job.#"}
messages:
  Start: {schema: schemas/start.json, exchange: bench.jobs, routing_key: "job.{job_type}"}
services:
  bench:
    publishes: [Start]
    consumes: {bench.ready: [Start]}
"""


def seed_start(i: int = 0) -> dict[str, Any]:
    """A START of the seed's size."""
    return {
        "job_id": str(uuid.UUID(int=i, version=4)),
        "job_type": "render",
        "steps": 20,
        "parameters": {"scene": "intro", "quality": "high", "frames": [1, 240]},
        "submitted_at": "2024-05-01T12:00:00Z",
    }


class Broker:
    """The management API calls the bench needs."""

    def __init__(self, url: BrokerURL) -> None:
        self.url = url
        self.http = httpx.Client(
            base_url=url.management, auth=(url.username, url.password), timeout=60
        )

    def version(self) -> str:
        overview = self.http.get("/api/overview").raise_for_status().json()
        return f"RabbitMQ {overview['rabbitmq_version']}, Erlang {overview['erlang_version']}"

    @contextlib.contextmanager
    def fresh_vhost(self) -> Iterator[BrokerURL]:
        name = f"rabbitry-bench-{uuid.uuid4().hex[:8]}"
        self.http.put(f"/api/vhosts/{quote(name, safe='')}", json={}).raise_for_status()
        self.http.put(
            f"/api/permissions/{quote(name, safe='')}/{quote(self.url.username, safe='')}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()
        try:
            yield parse_url(self.url.amqp.rsplit("/", 1)[0] + "/" + quote(name, safe=""))
        finally:
            self.http.delete(f"/api/vhosts/{quote(name, safe='')}")


def machine(broker: Broker) -> str:
    return (
        f"{os.cpu_count()} cores (nproc), {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, aiormq {metadata.version('aiormq')}, "
        f"aio-pika {metadata.version('aio-pika')}, pamqp {metadata.version('pamqp')}, "
        f"{broker.version()}"
    )


def load_contract(queue_type: str, folder: Path) -> tuple[Any, Contract]:
    shutil.copytree(ROOT / "schemas", folder / "schemas")
    path = folder / "bench.yaml"
    path.write_text(SPEC.replace("QUEUE_TYPE", queue_type))
    spec_ = load_spec(path)
    return spec_, Contract.from_spec(spec_)


# -- validation ----------------------------------------------------------------


def per_call_us(fn: Callable[[], object], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def bench_validation(contract: Contract) -> tuple[float, float]:
    message = contract.message("Start")
    payload = seed_start(1)
    template = _frames.HeaderTemplate(
        message_type="Start", content_type=CONTENT_TYPE, persistent=True, app_id="bench"
    )
    validate = per_call_us(lambda: message.validate(payload), 20000)
    prepared = per_call_us(lambda: prepare(message, template, payload), 20000)
    return validate, prepared


# -- publishing ----------------------------------------------------------------


async def purge(url: BrokerURL) -> int:
    connection = await aiormq.connect(url.amqp)
    try:
        channel = await connection.channel()
        ok = await channel.queue_purge(QUEUE)
        return int(ok.message_count)
    finally:
        await connection.close()


async def count(url: BrokerURL) -> int:
    connection = await aiormq.connect(url.amqp)
    try:
        channel = await connection.channel()
        ok = await channel.queue_declare(QUEUE, passive=True)
        return int(ok.message_count)
    finally:
        await connection.close()


async def pub_many(url: BrokerURL, contract: Contract, n: int) -> float:
    payloads = [seed_start(i) for i in range(n)]
    async with Client(contract, url, service="bench", timeout=120) as client:
        start = time.perf_counter()
        await client.publish_many(("Start", p) for p in payloads)
        return time.perf_counter() - start


async def pub_concurrent(url: BrokerURL, contract: Contract, n: int, concurrency: int) -> float:
    payloads = [seed_start(i) for i in range(n)]
    async with Client(contract, url, service="bench", timeout=120) as client:

        async def worker(k: int) -> None:
            for p in payloads[k::concurrency]:
                await client.publish("Start", p)

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return time.perf_counter() - start


async def pub_gather(url: BrokerURL, contract: Contract, n: int) -> float:
    """Every message its own ``publish`` call, all at once (``asyncio.gather``)."""
    payloads = [seed_start(i) for i in range(n)]
    async with Client(contract, url, service="bench", timeout=120) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client.publish("Start", p) for p in payloads))
        return time.perf_counter() - start


def properties() -> spec.Basic.Properties:
    return spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=2,
        message_id=uuid.uuid4().hex,
        timestamp=datetime.now(UTC),
        message_type="Start",
        app_id="bench",
    )


async def pub_aiormq(url: BrokerURL, n: int) -> float:
    payloads = [seed_start(i) for i in range(n)]
    connection = await aiormq.connect(url.amqp)
    try:
        channel = await connection.channel(publisher_confirms=True)
        start = time.perf_counter()
        for p in payloads:
            await channel.basic_publish(
                json.dumps(p).encode(),
                exchange=EXCHANGE,
                routing_key=f"job.{p['job_type']}",
                properties=properties(),
                mandatory=True,
            )
        return time.perf_counter() - start
    finally:
        await connection.close()


async def pub_frames(url: BrokerURL, n: int) -> float:
    """Pre-marshalled frames, ``BATCH`` messages a write, every confirm awaited."""
    connection = await aiormq.connect(url.amqp)
    try:
        channel = await connection.channel(publisher_confirms=True)
        loop = asyncio.get_running_loop()
        batches: list[bytes] = []
        futures: list[asyncio.Future[Any]] = []
        for first in range(0, n, BATCH):
            parts = []
            for i in range(first, min(n, first + BATCH)):
                body = json.dumps(seed_start(i)).encode()
                parts.append(
                    pamqp.frame.marshal(
                        spec.Basic.Publish(
                            exchange=EXCHANGE, routing_key="job.render", mandatory=True
                        ),
                        channel.number,
                    )
                )
                parts.append(
                    pamqp.frame.marshal(ContentHeader(0, len(body), properties()), channel.number)
                )
                parts.append(pamqp.frame.marshal(ContentBody(body), channel.number))
            batches.append(b"".join(parts))
        for _ in range(n):
            channel.delivery_tag += 1
            future = loop.create_future()
            channel.confirmations[channel.delivery_tag] = future
            futures.append(future)
        start = time.perf_counter()
        for payload in batches:
            drained = loop.create_future()
            await channel.write_queue.put(
                ChannelFrame(payload=payload, should_close=False, drain_future=drained)
            )
            await drained
        await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await connection.close()


# -- consuming -----------------------------------------------------------------


async def fill(url: BrokerURL, contract: Contract, n: int) -> None:
    await purge(url)
    async with Client(contract, url, service="bench", timeout=120) as client:
        await client.publish_many(("Start", seed_start(i)) for i in range(n))
    while await count(url) < n:  # confirms came; the queue's count may lag a little
        await asyncio.sleep(0.05)


async def consume_rabbitry(url: BrokerURL, contract: Contract, n: int, prefetch: int) -> float:
    done = asyncio.Event()
    seen = 0

    async def handler(delivery: Delivery[Any]) -> None:
        nonlocal seen
        seen += 1
        if seen >= n:
            done.set()

    async with Client(contract, url, service="bench", prefetch=prefetch, timeout=120) as client:
        start = time.perf_counter()
        consumer = client.consume(QUEUE, handler)
        await asyncio.wait_for(done.wait(), 300)
        elapsed = time.perf_counter() - start
        await consumer.cancel()
    return elapsed


async def consume_aio_pika(url: BrokerURL, n: int, prefetch: int) -> float:
    done = asyncio.Event()
    seen = 0
    connection = await aio_pika.connect(url.amqp)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(QUEUE, passive=True)

        async def callback(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            json.loads(message.body)
            await message.ack()
            seen += 1
            if seen >= n:
                done.set()

        start = time.perf_counter()
        await queue.consume(callback)
        await asyncio.wait_for(done.wait(), 300)
        return time.perf_counter() - start
    finally:
        await connection.close()


# -- main ------------------------------------------------------------------------


async def one_round(
    url: BrokerURL, contract: Contract, args: argparse.Namespace, flip: bool
) -> dict[str, float]:
    n = args.messages
    publishers: list[tuple[str, Callable[[], Any]]] = [
        ("publish_many", lambda: pub_many(url, contract, n)),
        ("publish gather", lambda: pub_gather(url, contract, n)),
        (
            "publish x" + str(args.concurrency),
            lambda: pub_concurrent(url, contract, n, args.concurrency),
        ),
        ("aiormq", lambda: pub_aiormq(url, args.aiormq_messages)),
        ("batched frames", lambda: pub_frames(url, n)),
    ]
    rates: dict[str, float] = {}
    for name, run in reversed(publishers) if flip else publishers:
        await purge(url)
        elapsed = await run()
        sent = args.aiormq_messages if name == "aiormq" else n
        arrived = await count(url)
        assert arrived == sent, f"{name}: {arrived} of {sent} arrived"
        rates[name] = sent / elapsed
    consumers: list[tuple[str, Callable[[], Any]]] = [
        ("consume", lambda: consume_rabbitry(url, contract, n, args.prefetch)),
        ("aio-pika consume", lambda: consume_aio_pika(url, n, args.prefetch)),
    ]
    for name, run in reversed(consumers) if flip else consumers:
        await fill(url, contract, n)
        rates[name] = n / await run()
    await purge(url)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default=None, help="AMQP URL (default $RABBITRY_URL or local)")
    parser.add_argument("--management-url", default=None)
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument(
        "--aiormq-messages", type=int, default=3000, help="raw aiormq is slow: fewer"
    )
    parser.add_argument("--rounds", type=int, default=5, help="the order alternates")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--queue-type", default="classic", choices=["classic", "quorum"])
    args = parser.parse_args()

    broker = Broker(parse_url(args.url, management=args.management_url))
    print(machine(broker))
    with tempfile.TemporaryDirectory() as folder:
        spec_, contract = load_contract(args.queue_type, Path(folder))
    validate, prepared = bench_validation(contract)
    print(f"validation: {validate:.2f} µs per seed message (prepare, all of it: {prepared:.2f} µs)")
    print(
        f"{args.messages} messages of {len(json.dumps(seed_start()))} bytes, persistent, to a "
        f"{args.queue_type} queue; aiormq: {args.aiormq_messages}; concurrency "
        f"{args.concurrency}, prefetch {args.prefetch}"
    )
    rounds: list[dict[str, float]] = []
    with broker.fresh_vhost() as url:
        asyncio.run(converge.apply(spec_, url, timeout=30))
        for round_ in range(args.rounds):
            rates = asyncio.run(one_round(url, contract, args, flip=round_ % 2 == 1))
            rounds.append(rates)
            print(
                f"round {round_ + 1}: "
                + ", ".join(f"{name} {rate:,.0f}/s" for name, rate in rates.items()),
                flush=True,
            )

    def median(name: str) -> float:
        return statistics.median(r[name] for r in rounds)

    def ratio(name: str, peer: str) -> float:
        """The median of the per-round ratios: each round's rates share the broker's mood."""
        return statistics.median(r[name] / r[peer] for r in rounds)

    concurrent = next(name for name in rounds[0] if name.startswith("publish x"))
    print(f"medians over {len(rounds)} rounds, ratios per round (targets in brackets):")
    for name in ("publish_many", "publish gather", concurrent):
        print(
            f"  {name:16} {median(name):9,.0f}/s   {ratio(name, 'aiormq'):5.1f}x aiormq [>= 3x]"
            f"   {ratio(name, 'batched frames'):6.1%} of batched frames [>= 40 %]"
        )
    print(f"  {'aiormq':16} {median('aiormq'):9,.0f}/s   (one await per message)")
    print(f"  {'batched frames':16} {median('batched frames'):9,.0f}/s   (the broker's limit)")
    print(
        f"  {'consume':16} {median('consume'):9,.0f}/s   "
        f"{ratio('consume', 'aio-pika consume'):5.1f}x aio-pika "
        f"({median('aio-pika consume'):,.0f}/s) [>= 2x]"
    )
    print(f"  validation       {validate:9.2f} µs [<= 3 µs]")


if __name__ == "__main__":
    main()
