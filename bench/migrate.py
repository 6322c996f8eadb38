"""``apply --migrate`` speed: one queue of small messages replaced, against a plain aiormq mover.

    python bench/migrate.py [--messages 100000] [--rounds 1] [--size 64] [--url URL]
                            [--prefetch 2000] [--batch 500] [--peer-messages N] [--json]

Each round, in a fresh vhost (deleted after): exchange ``x`` → classic durable
queue ``q`` holding ``--messages`` persistent messages of ``--size`` bytes,
each with a ``message_id`` and a header; then the queue's ``x-message-ttl``
changes, which makes it a replace.  Timed, each on its own filled queue:

rabbitry  ``broker.migrate.migrate``: the whole state machine (M1-M10: the
          bindings read through the management API, out to the temporary queue
          and back, every copy confirmed before its original is acked).
peer      the same steps, the messages moved the way one writes it with aiormq:
          ``basic_consume`` with the same prefetch, each delivery copied with an
          awaited confirmed ``basic_publish`` (the original's properties),
          then ``basic_ack``; done when the source counts 0 with nothing in
          flight.  Same library, same broker, same guarantees (ack after confirm):
          the difference is how the copies are written (one socket write a
          message vs ``--batch`` a write) and acked (one ack a message vs one
          ``multiple`` ack per run of confirms).  Not the shovel (not installed
          here, and it moves between queues, not through a replace); not
          ``rabbitmqctl export/import_definitions`` (definitions carry no messages).

Both end with every message in the new queue (counted; a round where one is
missing fails).  Printed: seconds, messages moved per second (each message is
moved twice: out and back), CPU seconds of this process and of the broker
(``beam.smp``, when local), and rabbitry's time as a ratio of the peer's.
``--peer-messages`` runs the peer on fewer messages (its time scaled up
linearly) when it is too slow to wait for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiormq
from aiormq.abc import ChannelFrame, DeliveredMessage
from pamqp.commands import Basic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Broker, Clock, broker_pid, machine, median, versions

from rabbitry.broker import _frames, migrate
from rabbitry.broker.state import QueueState
from rabbitry.broker.url import BrokerURL, parse_url

TTL_OLD, TTL_NEW = 600_000, 1_200_000
OLD = QueueState("q", arguments=(("x-message-ttl", TTL_OLD),))
NEW = QueueState("q", arguments=(("x-message-ttl", TTL_NEW),))
TIMEOUT = 60.0


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the queue to migrate ---------------------------------------------------------------


async def prepare(url: BrokerURL, n: int, size: int) -> None:
    """``x`` → ``q`` (the old TTL) holding ``n`` messages, written in batches; waits for all."""
    connection = await aiormq.connect(url.amqp)
    try:
        channel: Any = await connection.channel(publisher_confirms=False)
        await channel.exchange_declare("x", exchange_type="direct", durable=True)
        await channel.queue_declare("q", durable=True, arguments={"x-message-ttl": TTL_OLD})
        await channel.queue_bind("q", "x", "k")
        method = _frames.publish_method("x", "k", mandatory=False)
        body = b"m" * size
        for start in range(0, n, 1000):
            parts: list[bytes] = []
            for i in range(start, min(n, start + 1000)):
                props = Basic.Properties(message_id=f"m{i}", delivery_mode=2, headers={"i": i})
                parts.extend(_frames.frame(_frames.METHOD, channel.number, method))
                parts.extend(
                    _frames.frame(_frames.HEADER, channel.number, _frames.raw_header(size, props))
                )
                parts.extend(_frames.frame(_frames.BODY, channel.number, body))
            drained = asyncio.get_running_loop().create_future()
            await channel.write_queue.put(
                ChannelFrame(payload=b"".join(parts), should_close=False, drain_future=drained)
            )
            await drained
        deadline = time.monotonic() + TIMEOUT
        while (await channel.queue_declare("q", passive=True)).message_count < n:
            if time.monotonic() > deadline:
                raise RuntimeError("the queue was not filled in time")
            await asyncio.sleep(0.05)
    finally:
        await connection.close()


async def count(url: BrokerURL, queue: str = "q") -> int:
    connection = await aiormq.connect(url.amqp)
    try:
        channel: Any = await connection.channel()
        return int((await channel.queue_declare(queue, passive=True)).message_count)
    finally:
        await connection.close()


# -- the two movers ------------------------------------------------------------------------


async def rabbitry(url: BrokerURL) -> None:
    await migrate.migrate(url, NEW, OLD, timeout=TIMEOUT)


async def peer(url: BrokerURL, prefetch: int) -> None:
    """The same steps as rabbitry's, each message moved by an awaited confirmed publish."""
    temp = migrate.temporary_queue("q")
    connection = await aiormq.connect(url.amqp)
    try:
        ch = await connection.channel()
        await ch.queue_declare(temp, durable=True)
        await ch.queue_bind(temp, "x", "k")
        await ch.queue_unbind("q", "x", "k")
        await peer_move(connection, "q", temp, prefetch)
        await ch.queue_delete("q")
        await ch.queue_declare("q", durable=True, arguments={"x-message-ttl": TTL_NEW})
        await ch.queue_bind("q", "x", "k")
        await ch.queue_unbind(temp, "x", "k")
        await peer_move(connection, temp, "q", prefetch)
        await ch.queue_delete(temp)
    finally:
        await connection.close()


async def peer_move(connection: Any, source: str, target: str, prefetch: int) -> None:
    inbound = await connection.channel()
    outbound = await connection.channel(publisher_confirms=True)
    await inbound.basic_qos(prefetch_count=prefetch)
    in_flight = 0
    idle = asyncio.Event()
    idle.set()

    async def copy(message: DeliveredMessage) -> None:
        nonlocal in_flight
        in_flight += 1
        idle.clear()
        await outbound.basic_publish(
            message.body,
            routing_key=target,
            properties=message.header.properties,
            mandatory=True,
        )
        await inbound.basic_ack(message.delivery_tag or 0)
        in_flight -= 1
        if not in_flight:
            idle.set()

    ok = await inbound.basic_consume(source, copy)
    while True:
        await idle.wait()
        if not (await inbound.queue_declare(source, passive=True)).message_count:
            break
        await asyncio.sleep(0.05)
    await inbound.basic_cancel(ok.consumer_tag)
    await idle.wait()
    await inbound.close()
    await outbound.close()


# -- rounds --------------------------------------------------------------------------------


async def timed(clock: Clock, action: Callable[[], Awaitable[None]]) -> dict[str, float | None]:
    with clock.measure() as spent:
        await action()
    return spent


def one(broker: Broker, name: str, n: int, size: int, prefetch: int) -> dict[str, float | None]:
    clock = Clock(broker_pid(broker.url))
    with broker.fresh_vhost() as url:
        asyncio.run(prepare(url, n, size))
        action: Callable[[], Awaitable[None]] = (
            (lambda: rabbitry(url)) if name == "rabbitry" else (lambda: peer(url, prefetch))
        )
        spent = asyncio.run(timed(clock, action))
        kept = asyncio.run(count(url))
        if kept < n:
            raise SystemExit(f"{name}: {kept} of {n} messages in the new queue")
        spent["messages"] = n
        spent["rate"] = 2 * n / spent["seconds"] if spent["seconds"] else None
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--peer-messages", type=int, default=None, help="default: --messages")
    parser.add_argument("--size", type=int, default=64, help="body bytes")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--prefetch", type=int, default=migrate.PREFETCH)
    parser.add_argument("--batch", type=int, default=migrate.BATCH)
    parser.add_argument("--gather", type=float, default=migrate.GATHER, help="seconds")
    parser.add_argument("--url", default=None)
    parser.add_argument("--management-url", default=None)
    parser.add_argument("--only", default="rabbitry,peer")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    args = parser.parse_args()
    migrate.PREFETCH, migrate.BATCH = args.prefetch, args.batch  # the knobs under test
    migrate.GATHER = args.gather
    broker = Broker(parse_url(args.url, management=args.management_url))
    sides = [s for s in args.only.split(",") if s]
    sizes = {"rabbitry": args.messages, "peer": args.peer_messages or args.messages}
    log(f"{machine(broker.url)}; prefetch {args.prefetch}, batch {args.batch}")
    rounds: list[dict[str, dict[str, float | None]]] = []
    for r in range(args.rounds):
        order = sides if r % 2 == 0 else sides[::-1]
        result = {}
        for name in order:
            spent = one(broker, name, sizes[name], args.size, args.prefetch)
            result[name] = spent
            log(
                f"round {r + 1} {name:8} {spent['messages']:>7} messages: "
                f"{spent['seconds']:.2f} s, "
                f"{spent['rate']:,.0f} moves/s, client CPU {spent['client_cpu_s']} s, "
                f"broker CPU {spent['broker_cpu_s']} s"
            )
        rounds.append(result)
    summary: dict[str, Any] = {}
    for name in sides:
        scale = args.messages / sizes[name]
        summary[f"{name}_s"] = median(r[name]["seconds"] for r in rounds)
        summary[f"{name}_s_at_{args.messages}"] = median(
            (r[name]["seconds"] or 0) * scale for r in rounds
        )
    if len(sides) == 2:
        ratios = [
            (r["peer"]["seconds"] or 0)
            * args.messages
            / sizes["peer"]
            / (r["rabbitry"]["seconds"] or 1)
            for r in rounds
        ]
        summary["peer_over_rabbitry"] = median(ratios)
    print(f"migrate {args.messages:,} messages of {args.size} bytes (one queue, out and back):")
    for name in sides:
        print(f"  {name:8} {summary[f'{name}_s_at_{args.messages}']:.1f} s")
    if "peer_over_rabbitry" in summary:
        print(f"  rabbitry is {summary['peer_over_rabbitry']:.1f}x faster than the peer")
    if args.json:
        report = {
            "bench": "rabbitry bench/migrate.py",
            "settings": vars(args),
            "versions": versions(broker),
            "summary": summary,
            "rounds": rounds,
        }
        print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()
