"""Request/reply round trips per second: rabbitry, FastStream and aio-pika, same run.

    python bench/request_reply.py [--url URL] [--requests 2000] [--rounds 3]
                                  [--in-flight 100]

``run.py --only request_reply`` calls ``bench_request_reply``; run alone, this
prints each round and the medians.  Every side answers the same request (the
seed's ``Start``, 198 bytes of JSON, not persistent) with the same reply (a
``StartSuccess``, 110 bytes) through the default exchange to a durable classic
queue of its own, and runs its requester and its responder in this process,
each on a connection of its own, as a user of that library would write them:

- **rabbitry**: ``Client.request("Start", ...)`` (direct reply-to on one channel,
  replies matched by correlation id, the request and the reply validated against
  their schemas), answered by a ``Client.consume`` handler returning the reply
  (validated, sent to ``reply_to``), prefetch ``PREFETCH``;
- **FastStream**: ``RabbitBroker.request(...)`` (direct reply-to), answered by a
  ``@broker.subscriber`` handler returning the reply (FastStream publishes it to
  ``reply_to``; the body decoded by its pydantic-backed ``dict`` argument);
- **aio-pika**: RabbitMQ's RPC tutorial with asyncio futures: an exclusive,
  server-named callback queue consumed without acks, a fresh ``correlation_id``
  per request and a dict of futures keyed by it, so any number are in flight;
  the responder consumes with prefetch ``PREFETCH``, publishes the reply to
  ``reply_to`` through the default exchange and acks.

A round measures ``--in-flight`` tasks each awaiting one request after another
(100 requests in flight at any moment; also this process's CPU per round trip,
requester and responder both) and then one task (one at a time), each
side in turn, the order reversed every other round; the figure is round trips
per second, the ratio the median of the per-round ratios.  Every reply is checked
(its ``job_id`` is the request's).

A probe measures what the library lets overlap, rather than assuming it: 20
requests sent at once to a responder that sleeps ``PROBE_SLEEP`` before it
answers; ``overlap`` is 20 times the sleep ÷ the time all 20 took (20: all in flight
at once; 1: one after another) and ``most`` the largest number the responder held
at once.  FastStream's ``request()`` takes a lock for the whole round trip
(``faststream/rabbit/publisher/producer.py``, ``_RPCCallback``); the probe shows
what that does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
from faststream.rabbit import RabbitBroker, RabbitQueue

from rabbitry.broker import converge
from rabbitry.broker.url import BrokerURL, parse_url
from rabbitry.check import load_spec
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Broker, median, ratios

SIDES = ("rabbitry", "faststream", "aio_pika")
QUEUES = {side: f"bench.rpc.{side}" for side in SIDES}
#: The responders' prefetch: above the requests in flight.
PREFETCH = 256
#: Seconds a probe's responder sleeps; requests in a probe.
PROBE_SLEEP = 0.1
PROBE_REQUESTS = 20
#: Seconds any one request may take before the bench fails.
TIMEOUT = 60.0

SPEC = """
version: 1
queues:
  bench.rpc.rabbitry: {}
  bench.rpc.faststream: {}
  bench.rpc.aio_pika: {}
messages:
  Start:
    schema: schemas/start.json
    exchange: ""
    routing_key: bench.rpc.rabbitry
    reply: StartSuccess
  StartSuccess: {schema: schemas/start_success.json, exchange: ""}
services:
  server:
    consumes: {bench.rpc.rabbitry: [Start]}
  caller:
    publishes: [Start]
"""


def load_contract() -> tuple[Any, Contract]:
    """The bench's spec (three queues, ``Start`` answered by ``StartSuccess``), its contract."""
    with tempfile.TemporaryDirectory() as folder:
        shutil.copytree(ROOT / "schemas", Path(folder) / "schemas")
        path = Path(folder) / "rpc.yaml"
        path.write_text(SPEC)
        spec_ = load_spec(path)
        return spec_, Contract.from_spec(spec_)


def request(i: int) -> dict[str, Any]:
    """The seed's ``Start`` (198 bytes as JSON)."""
    return {
        "job_id": str(uuid.UUID(int=i, version=4)),
        "job_type": "render",
        "steps": 20,
        "parameters": {"scene": "intro", "quality": "high", "frames": [1, 240]},
        "submitted_at": "2024-05-01T12:00:00Z",
    }


def reply(body: dict[str, Any]) -> dict[str, Any]:
    """The ``StartSuccess`` every responder returns (110 bytes as JSON)."""
    return {
        "job_id": body["job_id"],
        "worker": "bench-worker-1",
        "started_at": "2024-05-01T12:00:01Z",
    }


class Responder:
    """What every side's handler shares: the probe's sleep and how many it holds at once."""

    def __init__(self) -> None:
        self.sleep = 0.0
        self.holding = 0
        self.most = 0

    async def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.sleep:
            self.holding += 1
            self.most = max(self.most, self.holding)
            try:
                await asyncio.sleep(self.sleep)
            finally:
                self.holding -= 1
        return reply(body)


#: A side: given a responder, set up, yield a ``call(body) -> reply body``, tear down.
Call = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Side:
    """One library's requester and responder, open for a round."""

    async def open(self, url: BrokerURL, contract: Contract, responder: Responder) -> Call:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class RabbitrySide(Side):
    async def open(self, url: BrokerURL, contract: Contract, responder: Responder) -> Call:
        self.server = Client(contract, url, service="server", prefetch=PREFETCH, timeout=TIMEOUT)
        self.caller = Client(contract, url, service="caller", timeout=TIMEOUT)
        await self.server.__aenter__()
        await self.caller.__aenter__()

        async def handle(delivery: Delivery[Any]) -> dict[str, Any]:
            return await responder.answer(delivery.body)

        await self.server.consume(QUEUES["rabbitry"], handle).ready()

        async def call(body: dict[str, Any]) -> dict[str, Any]:
            answer = await self.caller.request("Start", body, timeout=TIMEOUT)
            return dict(answer.body)

        return call

    async def close(self) -> None:
        await self.caller.__aexit__(None, None, None)
        await self.server.__aexit__(None, None, None)


class FastStreamSide(Side):
    async def open(self, url: BrokerURL, contract: Contract, responder: Responder) -> Call:
        self.server = RabbitBroker(url.amqp, logger=None)
        self.caller = RabbitBroker(url.amqp, logger=None)
        queue = RabbitQueue(QUEUES["faststream"], durable=True, declare=False)

        @self.server.subscriber(queue)
        async def handle(body: dict[str, Any]) -> dict[str, Any]:
            return await responder.answer(body)

        await self.server.start()
        await self.caller.start()

        async def call(body: dict[str, Any]) -> dict[str, Any]:
            answer = await self.caller.request(body, queue=QUEUES["faststream"], timeout=TIMEOUT)
            decoded: dict[str, Any] = json.loads(answer.body)
            return decoded

        return call

    async def close(self) -> None:
        await self.caller.stop()
        await self.server.stop()


class AioPikaSide(Side):
    """The RPC tutorial's client and server, with futures so that many are in flight."""

    async def open(self, url: BrokerURL, contract: Contract, responder: Responder) -> Call:
        self.server = await aio_pika.connect(url.amqp)
        self.caller = await aio_pika.connect(url.amqp)
        serving = await self.server.channel()
        await serving.set_qos(prefetch_count=PREFETCH)
        queue = await serving.get_queue(QUEUES["aio_pika"], ensure=False)

        async def on_request(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            answer = await responder.answer(json.loads(message.body))
            await serving.default_exchange.publish(
                aio_pika.Message(
                    json.dumps(answer).encode(),
                    content_type="application/json",
                    correlation_id=message.correlation_id,
                ),
                routing_key=str(message.reply_to),
            )
            await message.ack()

        await queue.consume(on_request)

        calling = await self.caller.channel()
        callback = await calling.declare_queue(exclusive=True)
        waiting: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            future = waiting.pop(str(message.correlation_id), None)
            if future is not None and not future.done():
                future.set_result(message.body)

        await callback.consume(on_reply, no_ack=True)
        loop = asyncio.get_running_loop()

        async def call(body: dict[str, Any]) -> dict[str, Any]:
            correlation_id = uuid.uuid4().hex
            future: asyncio.Future[bytes] = loop.create_future()
            waiting[correlation_id] = future
            await calling.default_exchange.publish(
                aio_pika.Message(
                    json.dumps(body).encode(),
                    content_type="application/json",
                    correlation_id=correlation_id,
                    reply_to=callback.name,
                ),
                routing_key=QUEUES["aio_pika"],
                mandatory=True,
            )
            try:
                decoded: dict[str, Any] = json.loads(await asyncio.wait_for(future, TIMEOUT))
            finally:
                waiting.pop(correlation_id, None)
            return decoded

        return call

    async def close(self) -> None:
        await self.caller.close()
        await self.server.close()


SIDE_CLASSES: dict[str, type[Side]] = {
    "rabbitry": RabbitrySide,
    "faststream": FastStreamSide,
    "aio_pika": AioPikaSide,
}


async def _run_requests(call: Call, n: int, in_flight: int, first: int) -> float:
    """Seconds for ``n`` requests made by ``in_flight`` tasks, each one after another."""
    return (await _timed(call, n, in_flight, first))[0]


async def _timed(call: Call, n: int, in_flight: int, first: int) -> tuple[float, float]:
    """Seconds and this process's CPU seconds for ``n`` requests (``_run_requests``)."""

    async def worker(k: int) -> None:
        for i in range(first + k, first + n, in_flight):
            body = request(i)
            answer = await call(body)
            assert answer["job_id"] == body["job_id"], (answer, body)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(k) for k in range(in_flight)))
    return time.perf_counter() - started, time.process_time() - cpu


async def bench_side(
    side: str, url: BrokerURL, contract: Contract, *, n: int, in_flight: int
) -> dict[str, float]:
    """One side: round trips/s with ``in_flight`` at once and one at a time, and the probe."""
    responder = Responder()
    opened = SIDE_CLASSES[side]()
    call = await opened.open(url, contract, responder)
    try:
        await _run_requests(call, 20, 10, 0)  # warm up: channels, caches, the reply path
        many, cpu = await _timed(call, n, in_flight, 0)
        single_n = max(10, n // 10)
        single = await _run_requests(call, single_n, 1, n)
        responder.sleep = PROBE_SLEEP
        probe = await _run_requests(call, PROBE_REQUESTS, PROBE_REQUESTS, 0)
        return {
            f"{side}_in_flight": n / many,
            f"{side}_one": single_n / single,
            f"{side}_overlap": PROBE_REQUESTS * PROBE_SLEEP / probe,
            f"{side}_most": float(responder.most),
            f"{side}_cpu_us": cpu / n * 1e6,
        }
    finally:
        await opened.close()


async def bench_request_reply(
    url: BrokerURL, contract: Contract, *, n: int, in_flight: int, flip: bool
) -> dict[str, float]:
    """One round: every side in turn (reversed when ``flip``)."""
    figures: dict[str, float] = {}
    for side in reversed(SIDES) if flip else SIDES:
        figures.update(await bench_side(side, url, contract, n=n, in_flight=in_flight))
    return figures


def summary(rounds: list[dict[str, float]]) -> dict[str, float | None]:
    """Medians of every figure, and rabbitry ÷ each peer (median of the per-round ratios)."""
    result: dict[str, float | None] = {k: median(r[k] for r in rounds) for k in rounds[0]}
    for peer in SIDES[1:]:
        for mode in ("in_flight", "one"):
            result[f"rabbitry_vs_{peer}_{mode}"] = median(
                ratios(rounds, f"rabbitry_{mode}", f"{peer}_{mode}")
            )
    return result


def table(result: dict[str, Any], in_flight: int) -> list[str]:
    """Markdown rows: one a side, then the ratios."""
    lines = [
        f"| side | {in_flight} in flight | CPU per round trip | one at a time "
        "| probe overlap | held at once |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for side in SIDES:
        lines.append(
            f"| {side} | {result[f'{side}_in_flight']:,.0f}/s "
            f"| {result[f'{side}_cpu_us']:,.0f} µs | {result[f'{side}_one']:,.0f}/s "
            f"| {result[f'{side}_overlap']:.1f} of {PROBE_REQUESTS} "
            f"| {result[f'{side}_most']:.0f} |"
        )
    for peer in SIDES[1:]:
        lines.append(
            f"| rabbitry ÷ {peer} | {result[f'rabbitry_vs_{peer}_in_flight']:.2f}x | "
            f"| {result[f'rabbitry_vs_{peer}_one']:.2f}x | | |"
        )
    return lines


async def prepare(url: BrokerURL, spec: Any) -> None:
    await converge.apply(spec, url, timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default=None, help="AMQP URL (default $RABBITRY_URL or local)")
    parser.add_argument("--management-url", default=None)
    parser.add_argument("--requests", type=int, default=2000, help="per side and round")
    parser.add_argument("--rounds", type=int, default=3, help="the order alternates")
    parser.add_argument("--in-flight", type=int, default=100)
    args = parser.parse_args()
    broker = Broker(parse_url(args.url, management=args.management_url))
    spec, contract = load_contract()
    rounds: list[dict[str, float]] = []
    with broker.fresh_vhost() as url:
        asyncio.run(prepare(url, spec))
        for round_ in range(args.rounds):
            rounds.append(
                asyncio.run(
                    bench_request_reply(
                        url,
                        contract,
                        n=args.requests,
                        in_flight=args.in_flight,
                        flip=round_ % 2 == 1,
                    )
                )
            )
            print(
                f"round {round_ + 1}: " + ", ".join(f"{k} {v:,.1f}" for k, v in rounds[-1].items()),
                flush=True,
            )
    print("\n".join(table(summary(rounds), args.in_flight)))


if __name__ == "__main__":
    main()
