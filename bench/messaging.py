"""Messaging speed: validation, confirmed publishing, consuming — against peers, same run.

    python bench/messaging.py [--url URL] [--messages 20000] [--rounds 5]
                              [--window 256] [--prefetch 256] [--queue-type classic]

``run.py`` calls ``bench_validation``, ``bench_publish`` and ``bench_consume``;
run alone, this prints their rounds and medians.  Every message is the seed's
``Start`` (198 bytes of JSON), persistent, ``mandatory``, with the same
properties, to one topic exchange bound to one durable queue, in a fresh
vhost of its own (deleted at the end).

validation   µs per message: ``MessageContract.validate`` (jsonschema-rs, formats
             checked), all of ``prepare`` (validate, JSON, routing key, frames), and
             jsonschema's validator of the same bundled schema with its format checker.
publishing   confirmed messages/s, each publisher in its own round-robin turn, the
             queue purged in between and counted after (every message must be there):
             - rabbitry: ``--window`` tasks each awaiting ``Client.publish`` in a loop
               (validated, confirmed); also ``Client.publish_many`` of all at once;
             - aiormq: ``--window`` tasks each awaiting ``channel.basic_publish`` with
               confirms (JSON, no validation): concurrent, at most ``--window`` in flight;
             - aio-pika: the same with ``exchange.publish``;
             - limit: a minimal publisher on its own socket (pamqp), frames marshalled
               before the clock starts, written ``LIMIT_BATCH`` messages a write, done when
               the broker has confirmed the last: the broker's own limit here.
consuming    messages/s draining the same pre-filled queue (``--messages``), prefetch
             ``--prefetch``, every message acked once handled: rabbitry's ``Client.consume``
             (strict decoding, schema validation, a no-op handler; acks written in
             batches), aio-pika (``queue.consume``, ``json.loads``, ``await message.ack()``)
             and aiormq (``basic_consume``, ``json.loads``, ``await basic_ack``); also
             aiormq's floor: a callback that only acks, 64 at a time (``multiple``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import jsonschema
import pamqp.frame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader, ProtocolHeader

from rabbitry.broker import _frames, converge
from rabbitry.broker.url import BrokerURL, parse_url
from rabbitry.check import load_spec
from rabbitry.messaging._publisher import CONTENT_TYPE, prepare
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Broker, median, ratios

EXCHANGE = "bench.jobs"
QUEUE = "bench.ready"
ROUTING_KEY = "job.render"
#: Messages per write of the limit publisher.
LIMIT_BATCH = 500

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
    """A START of the seed's size (198 bytes as JSON)."""
    return {
        "job_id": str(uuid.UUID(int=i, version=4)),
        "job_type": "render",
        "steps": 20,
        "parameters": {"scene": "intro", "quality": "high", "frames": [1, 240]},
        "submitted_at": "2024-05-01T12:00:00Z",
    }


def load_contract(queue_type: str = "classic") -> tuple[Any, Contract]:
    """The bench's spec (one exchange, one queue, ``Start``) and its contract."""
    with tempfile.TemporaryDirectory() as folder:
        shutil.copytree(ROOT / "schemas", Path(folder) / "schemas")
        path = Path(folder) / "bench.yaml"
        path.write_text(SPEC.replace("QUEUE_TYPE", queue_type))
        spec_ = load_spec(path)
        return spec_, Contract.from_spec(spec_)


def properties() -> spec.Basic.Properties:
    """What rabbitry sets on a ``Start``; the peers send the same."""
    return spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=2,
        message_id=uuid.uuid4().hex,
        timestamp=datetime.now(UTC),
        message_type="Start",
        app_id="bench",
    )


# -- validation ----------------------------------------------------------------------


def _per_call_us(fn: Callable[[], object], calls: int, repeat: int) -> list[float]:
    """µs per call, one figure per repetition of ``calls`` calls."""
    fn()  # compile, warm caches
    figures = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        figures.append((time.perf_counter() - start) / calls * 1e6)
    return figures


def bench_validation(contract: Contract, *, calls: int, repeat: int) -> dict[str, list[float]]:
    """µs per seed message: rabbitry's validation, all of ``prepare``, and jsonschema's."""
    message = contract.message("Start")
    payload = seed_start(1)
    template = _frames.HeaderTemplate(
        message_type="Start", content_type=CONTENT_TYPE, persistent=True, app_id="bench"
    )
    schema = dict(message.schema)
    cls = jsonschema.validators.validator_for(schema)
    reference = cls(schema, format_checker=cls.FORMAT_CHECKER)
    assert reference.is_valid(payload)
    return {
        "rabbitry_validate_us": _per_call_us(lambda: message.validate(payload), calls, repeat),
        "rabbitry_prepare_us": _per_call_us(
            lambda: prepare(message, template, payload), calls, repeat
        ),
        "jsonschema_us": _per_call_us(
            lambda: reference.is_valid(payload), max(1, calls // 20), repeat
        ),
    }


# -- publishing ----------------------------------------------------------------------


async def _queue_op(url: BrokerURL, purge: bool) -> int:
    connection = await aiormq.connect(url.amqp)
    try:
        channel = await connection.channel()
        if purge:
            return int((await channel.queue_purge(QUEUE)).message_count)
        return int((await channel.queue_declare(QUEUE, passive=True)).message_count)
    finally:
        await connection.close()


async def purge(url: BrokerURL) -> int:
    return await _queue_op(url, purge=True)


async def count(url: BrokerURL) -> int:
    return await _queue_op(url, purge=False)


async def pub_rabbitry(url: BrokerURL, contract: Contract, n: int, window: int) -> float:
    """``window`` tasks, each awaiting ``Client.publish`` (validated, confirmed) in turn."""
    payloads = [seed_start(i) for i in range(n)]
    async with Client(contract, url, service="bench", timeout=120) as client:

        async def worker(k: int) -> None:
            for p in payloads[k::window]:
                await client.publish("Start", p)

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(window)))
        return time.perf_counter() - start


async def pub_rabbitry_many(url: BrokerURL, contract: Contract, n: int, window: int) -> float:
    """One ``Client.publish_many`` call with every message."""
    payloads = [seed_start(i) for i in range(n)]
    async with Client(contract, url, service="bench", timeout=120) as client:
        start = time.perf_counter()
        await client.publish_many(("Start", p) for p in payloads)
        return time.perf_counter() - start


async def pub_aiormq(url: BrokerURL, n: int, window: int) -> float:
    """``window`` tasks, each awaiting a confirmed ``basic_publish`` in turn."""
    payloads = [seed_start(i) for i in range(n)]
    connection = await aiormq.connect(url.amqp)
    try:
        channel = await connection.channel(publisher_confirms=True)

        async def worker(k: int) -> None:
            for p in payloads[k::window]:
                confirmation = await channel.basic_publish(
                    json.dumps(p).encode(),
                    exchange=EXCHANGE,
                    routing_key=f"job.{p['job_type']}",
                    properties=properties(),
                    mandatory=True,
                )
                assert isinstance(confirmation, spec.Basic.Ack), confirmation

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(window)))
        return time.perf_counter() - start
    finally:
        await connection.close()


async def pub_aio_pika(url: BrokerURL, n: int, window: int) -> float:
    """``window`` tasks, each awaiting a confirmed ``exchange.publish`` in turn."""
    payloads = [seed_start(i) for i in range(n)]
    connection = await aio_pika.connect(url.amqp)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE, ensure=False)

        async def worker(k: int) -> None:
            for p in payloads[k::window]:
                await exchange.publish(
                    aio_pika.Message(
                        json.dumps(p).encode(),
                        content_type=CONTENT_TYPE,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=uuid.uuid4().hex,
                        timestamp=datetime.now(UTC),
                        type="Start",
                        app_id="bench",
                    ),
                    routing_key=f"job.{p['job_type']}",
                    mandatory=True,
                )

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(window)))
        return time.perf_counter() - start
    finally:
        await connection.close()


class _Wire:
    """The least AMQP a confirmed publisher needs, on a socket of its own (no client library)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()

    @classmethod
    async def open(cls, url: BrokerURL) -> _Wire:
        reader, writer = await asyncio.open_connection(url.host, url.port)
        wire = cls(reader, writer)
        writer.write(ProtocolHeader().marshal())
        await wire.expect(spec.Connection.Start)
        wire.send(
            0,
            spec.Connection.StartOk(
                client_properties={"product": "rabbitry bench limit"},
                mechanism="PLAIN",
                response=f"\0{url.username}\0{url.password}",
            ),
        )
        tune = await wire.expect(spec.Connection.Tune)
        wire.send(0, spec.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))
        wire.send(0, spec.Connection.Open(virtual_host=url.vhost))
        await wire.expect(spec.Connection.OpenOk)
        wire.send(1, spec.Channel.Open())
        await wire.expect(spec.Channel.OpenOk)
        wire.send(1, spec.Confirm.Select())
        await wire.expect(spec.Confirm.SelectOk)
        return wire

    def send(self, channel: int, frame: Any) -> None:
        self.writer.write(pamqp.frame.marshal(frame, channel))

    async def frame(self) -> tuple[int, bytes]:
        """The next frame's type and payload."""
        while True:
            if len(self.buffer) >= 7:
                kind, _, size = struct.unpack_from(">BHI", self.buffer)
                if len(self.buffer) >= size + 8:
                    payload = bytes(self.buffer[7 : 7 + size])
                    del self.buffer[: size + 8]
                    return kind, payload
            data = await self.reader.read(1 << 16)
            if not data:
                raise ConnectionError("the broker closed the connection")
            self.buffer += data

    async def expect(self, cls: type) -> Any:
        while True:
            kind, payload = await self.frame()
            if kind != 1:
                continue
            _, _, method = pamqp.frame.unmarshal(
                struct.pack(">BHI", kind, 0, len(payload)) + payload + b"\xce"
            )
            if isinstance(method, cls):
                return method
            if isinstance(method, spec.Connection.Close | spec.Channel.Close):
                raise ConnectionError(f"{method.reply_code} {method.reply_text}")

    async def close(self) -> None:
        self.send(
            0, spec.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
        )
        try:
            await asyncio.wait_for(self.expect(spec.Connection.CloseOk), 10)
        finally:
            self.writer.close()


_ACK = (60, 80)
_NACK = (60, 120)


async def pub_limit(url: BrokerURL, n: int, window: int = 0) -> float:
    """Pre-marshalled frames, ``LIMIT_BATCH`` messages a write, until the last is confirmed."""
    writes = []
    for first in range(0, n, LIMIT_BATCH):
        parts = []
        for i in range(first, min(n, first + LIMIT_BATCH)):
            body = json.dumps(seed_start(i)).encode()
            publish = spec.Basic.Publish(exchange=EXCHANGE, routing_key=ROUTING_KEY, mandatory=True)
            parts.append(pamqp.frame.marshal(publish, 1))
            parts.append(pamqp.frame.marshal(ContentHeader(0, len(body), properties()), 1))
            parts.append(pamqp.frame.marshal(ContentBody(body), 1))
        writes.append(b"".join(parts))
    wire = await _Wire.open(url)
    try:
        confirmed = [False] * (n + 1)
        settled = 0

        async def confirms() -> None:
            nonlocal settled
            low = 1  # every tag below it is settled
            while settled < n:
                kind, payload = await wire.frame()
                if kind != 1:
                    continue
                method = struct.unpack_from(">HH", payload)
                if method == _NACK:
                    raise RuntimeError("the broker nacked a message")
                if method != _ACK:
                    continue
                tag, multiple = struct.unpack_from(">QB", payload, 4)
                if multiple & 1:
                    for t in range(low, tag + 1):
                        if not confirmed[t]:
                            confirmed[t] = True
                            settled += 1
                    low = max(low, tag + 1)
                elif not confirmed[tag]:
                    confirmed[tag] = True
                    settled += 1

        start = time.perf_counter()
        reading = asyncio.create_task(confirms())
        for payload in writes:
            wire.writer.write(payload)
            await wire.writer.drain()
        await reading
        return time.perf_counter() - start
    finally:
        await wire.close()


#: Publishers in the order of a round (reversed every other round).
PUBLISHERS = ("rabbitry", "rabbitry_many", "aiormq", "aio_pika", "limit")


async def bench_publish(
    url: BrokerURL, contract: Contract, *, n: int, window: int, flip: bool
) -> dict[str, float]:
    """One round: confirmed messages/s of each publisher, the queue purged in between."""
    runs: dict[str, Callable[[], Awaitable[float]]] = {
        "rabbitry": lambda: pub_rabbitry(url, contract, n, window),
        "rabbitry_many": lambda: pub_rabbitry_many(url, contract, n, window),
        "aiormq": lambda: pub_aiormq(url, n, window),
        "aio_pika": lambda: pub_aio_pika(url, n, window),
        "limit": lambda: pub_limit(url, n),
    }
    rates: dict[str, float] = {}
    for name in reversed(PUBLISHERS) if flip else PUBLISHERS:
        await purge(url)
        seconds = await runs[name]()
        arrived = await count(url)
        assert arrived == n, f"{name}: {arrived} of {n} messages arrived"
        rates[name] = n / seconds
    await purge(url)
    return rates


# -- consuming -----------------------------------------------------------------------


async def fill(url: BrokerURL, contract: Contract, n: int) -> None:
    await purge(url)
    async with Client(contract, url, service="bench", timeout=120) as client:
        await client.publish_many(("Start", seed_start(i)) for i in range(n))
    deadline = time.monotonic() + 30
    while await count(url) < n:  # confirmed; the queue's count may lag a moment
        assert time.monotonic() < deadline, "the queue did not fill"
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


async def consume_aiormq(url: BrokerURL, n: int, prefetch: int) -> float:
    done = asyncio.Event()
    seen = 0
    connection = await aiormq.connect(url.amqp)
    try:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=prefetch)

        async def callback(message: aiormq.abc.DeliveredMessage) -> None:
            nonlocal seen
            json.loads(message.body)
            await channel.basic_ack(message.delivery.delivery_tag)
            seen += 1
            if seen >= n:
                done.set()

        start = time.perf_counter()
        await channel.basic_consume(QUEUE, callback)
        await asyncio.wait_for(done.wait(), 300)
        return time.perf_counter() - start
    finally:
        await connection.close()


async def consume_floor(url: BrokerURL, n: int, prefetch: int) -> float:
    """aiormq with a callback that does nothing but ack, 64 at a time (``multiple``).

    Not a peer: what aiormq's reader alone allows (no JSON, no validation, few ack
    writes), the floor under every consumer built on it, rabbitry's and aio-pika's.
    """
    done = asyncio.Event()
    seen = 0
    connection = await aiormq.connect(url.amqp)
    try:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=prefetch)

        async def callback(message: aiormq.abc.DeliveredMessage) -> None:
            nonlocal seen
            seen += 1
            if seen % 64 == 0 or seen >= n:
                await channel.basic_ack(message.delivery.delivery_tag, multiple=True)
            if seen >= n:
                done.set()

        start = time.perf_counter()
        await channel.basic_consume(QUEUE, callback)
        await asyncio.wait_for(done.wait(), 300)
        return time.perf_counter() - start
    finally:
        await connection.close()


CONSUMERS = ("rabbitry", "aio_pika", "aiormq", "aiormq_floor")


async def bench_consume(
    url: BrokerURL, contract: Contract, *, n: int, prefetch: int, flip: bool
) -> dict[str, float]:
    """One round: messages/s of each consumer draining ``n`` messages from the same queue."""
    runs: dict[str, Callable[[], Awaitable[float]]] = {
        "rabbitry": lambda: consume_rabbitry(url, contract, n, prefetch),
        "aio_pika": lambda: consume_aio_pika(url, n, prefetch),
        "aiormq": lambda: consume_aiormq(url, n, prefetch),
        "aiormq_floor": lambda: consume_floor(url, n, prefetch),
    }
    rates: dict[str, float] = {}
    for name in reversed(CONSUMERS) if flip else CONSUMERS:
        await fill(url, contract, n)
        rates[name] = n / await runs[name]()
    await purge(url)
    return rates


# -- alone ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default=None, help="AMQP URL (default $RABBITRY_URL or local)")
    parser.add_argument("--management-url", default=None)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5, help="the order alternates")
    parser.add_argument("--window", type=int, default=256, help="publishes in flight")
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--queue-type", default="classic", choices=["classic", "quorum"])
    args = parser.parse_args()

    broker = Broker(parse_url(args.url, management=args.management_url))
    spec_, contract = load_contract(args.queue_type)
    validation = bench_validation(contract, calls=20000, repeat=5)
    print(", ".join(f"{k} {median(v):.2f}" for k, v in validation.items()))
    published: list[dict[str, float]] = []
    consumed: list[dict[str, float]] = []
    with broker.fresh_vhost() as url:
        asyncio.run(converge.apply(spec_, url, timeout=30))
        for round_ in range(args.rounds):
            flip = round_ % 2 == 1
            published.append(
                asyncio.run(
                    bench_publish(url, contract, n=args.messages, window=args.window, flip=flip)
                )
            )
            consumed.append(
                asyncio.run(
                    bench_consume(url, contract, n=args.messages, prefetch=args.prefetch, flip=flip)
                )
            )
            print(
                f"round {round_ + 1}: publish "
                + ", ".join(f"{k} {v:,.0f}/s" for k, v in published[-1].items())
                + "; consume "
                + ", ".join(f"{k} {v:,.0f}/s" for k, v in consumed[-1].items()),
                flush=True,
            )
    print(
        f"publish_many: {median(ratios(published, 'rabbitry_many', 'aiormq')):.2f}x aiormq, "
        f"{median(ratios(published, 'rabbitry_many', 'limit')):.0%} of the limit; "
        f"publish calls: {median(ratios(published, 'rabbitry', 'aiormq')):.2f}x aiormq; "
        f"consume: {median(ratios(consumed, 'rabbitry', 'aio_pika')):.2f}x aio-pika, "
        f"{median(ratios(consumed, 'rabbitry', 'aiormq_floor')):.0%} of aiormq's floor"
    )


if __name__ == "__main__":
    main()
