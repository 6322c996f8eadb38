"""Which executor shape loads the broker least: the experiments behind ``apply``'s defaults.

    python bench/apply_shapes.py [--url URL] [--repeat 3] [SHAPE ...]

A SHAPE is ``how:channels:chunk``; ``how`` is one of

rabbitry   ``rabbitry.broker.apply.execute`` itself (``chunk`` sets ``apply.CHUNK``);
frames     the same stages, but each chunk's ``nowait`` calls marshalled with pamqp
           and written as ONE frame batch, then one synchronous call (the chunk's
           last) through aiormq: the least client CPU an executor can spend;
overlap    ``frames`` without the stage barrier between queues and bindings: each
           queue's bindings follow its declare in the same chunk, on the same
           channel (a channel's frames are handled in order, so it exists).

Each run is a plan from an empty vhost (the topology of ``apply.py``) into a
fresh vhost; it prints wall seconds and the CPU seconds of the broker
(``beam.smp``, local broker only), of this process and of the whole machine,
each the median over ``--repeat`` rounds (the order alternates).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import pamqp.frame
from aiormq.abc import ChannelFrame
from pamqp import commands as spec

from rabbitry.broker import apply as applier
from rabbitry.broker.amqp import connect
from rabbitry.broker.plan import diff
from rabbitry.broker.state import Topology, desired
from rabbitry.broker.url import BrokerURL, parse_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apply import write_spec
from common import Broker, Clock, broker_pid


def _method(kind: str, obj: Any) -> Any:
    if kind == "exchange":
        return spec.Exchange.Declare(
            exchange=obj.name,
            exchange_type=obj.type,
            durable=obj.durable,
            auto_delete=obj.auto_delete,
            internal=obj.internal,
            arguments=obj.declare_arguments(),
        )
    if kind == "queue":
        return spec.Queue.Declare(
            queue=obj.name,
            durable=obj.durable,
            auto_delete=obj.auto_delete,
            arguments=obj.declare_arguments(),
        )
    return spec.Queue.Bind(
        queue=obj.destination,
        exchange=obj.source,
        routing_key=obj.routing_key,
        arguments=obj.declare_arguments(),
    )


async def frames_executor(
    want: Topology, url: BrokerURL, channels: int, chunk: int, overlap: bool
) -> None:
    """Create ``want`` (queue bindings only) in frame batches; see the module's docstring."""
    connection = await connect(url, timeout=60)
    pool = await asyncio.gather(*(connection.channel() for _ in range(channels)))
    bound: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for b in sorted(want.bindings, key=lambda b: b.sort_key()):
        bound[b.destination].append(("binding", b))
    exchanges = [[("exchange", x)] for x in want.exchanges.values()]
    queues = [("queue", q) for q in want.queues.values()]
    if overlap:
        stages = [exchanges, [[q, *bound[q[1].name]] for q in queues]]
    else:
        stages = [exchanges, [[q] for q in queues], [bound[q[1].name] for q in queues]]
    try:
        for groups in stages:
            await _stage(pool, groups, chunk)
    finally:
        await connection.close()


async def _stage(pool: list[Any], groups: list[list[tuple[str, Any]]], chunk: int) -> None:
    """Cut ``groups`` (never split) into equal chunks, as ``apply._stage`` does, and send them."""
    total = sum(map(len, groups))
    rounds = math.ceil(total / (len(pool) * chunk))
    size = math.ceil(total / (len(pool) * rounds))
    chunks: deque[list[tuple[str, Any]]] = deque()
    current: list[tuple[str, Any]] = []
    for group in groups:
        current.extend(group)
        if len(current) >= size:
            chunks.append(current)
            current = []
    if current:
        chunks.append(current)

    async def work(channel: Any) -> None:
        while chunks:
            methods = [_method(kind, obj) for kind, obj in chunks.popleft()]
            for method in methods[:-1]:
                method.nowait = True
            batch = b"".join(pamqp.frame.marshal(m, channel.number) for m in methods[:-1])
            if batch:
                await channel.write_queue.put(ChannelFrame(payload=batch, should_close=False))
            await channel.rpc(methods[-1], timeout=60)

    await asyncio.gather(*(work(ch) for ch in pool[: min(len(pool), len(chunks))]))


def run_shape(broker: Broker, want: Topology, shape: str) -> dict[str, float | None]:
    how, channels, chunk = shape.split(":")
    clock = Clock(broker_pid(broker.url))
    with broker.fresh_vhost() as url:
        with clock.measure() as m:
            if how == "rabbitry":
                applier.CHUNK = int(chunk)
                plan = diff(want, Topology())
                asyncio.run(applier.execute(plan, url, timeout=60, channels=int(channels)))
            elif how in ("frames", "overlap"):
                asyncio.run(
                    frames_executor(want, url, int(channels), int(chunk), overlap=how == "overlap")
                )
            else:
                sys.exit(f"unknown shape {shape!r}")
        assert broker.bindings(url.vhost) == len(want.bindings), shape
        assert broker.queues(url.vhost) == len(want.queues), shape
    return m


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default=None)
    parser.add_argument("--management-url", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--queues", type=int, default=2000)
    parser.add_argument("--bindings", type=int, default=2000)
    parser.add_argument("--exchanges", type=int, default=10)
    parser.add_argument(
        "shapes",
        nargs="*",
        default=["rabbitry:64:100", "frames:64:100", "overlap:64:100"],
        help="how:channels:chunk",
    )
    args = parser.parse_args()
    broker = Broker(parse_url(args.url, management=args.management_url))
    with tempfile.TemporaryDirectory() as folder:
        _, spec_ = write_spec(Path(folder), args.queues, args.bindings, args.exchanges)
    want = desired(spec_)
    results: dict[str, list[dict[str, float | None]]] = defaultdict(list)
    for round_ in range(args.repeat):
        for shape in args.shapes if round_ % 2 == 0 else reversed(args.shapes):
            m = run_shape(broker, want, shape)
            results[shape].append(m)
            print(
                f"  {shape:18} " + "  ".join(f"{k} {v:.2f}" for k, v in m.items() if v is not None),
                flush=True,
            )
    print("shape               wall s   broker CPU s   client CPU s   machine CPU s (medians)")
    for shape, runs in results.items():

        def med(key: str, runs: list[dict[str, float | None]] = runs) -> float:
            return statistics.median(float(r[key] or 0) for r in runs)

        print(
            f"{shape:18} {med('seconds'):7.2f} {med('broker_cpu_s'):14.2f} "
            f"{med('client_cpu_s'):14.2f} {med('machine_cpu_s'):15.2f}"
        )


if __name__ == "__main__":
    main()
