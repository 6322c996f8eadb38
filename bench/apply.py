"""Apply speed: rabbitry's executor against ``rabbitmqctl import_definitions``.

    python bench/apply.py [--url URL] [--queues 2000] [--bindings 2000] [--exchanges 10]
                          [--repeat 1] [--channels N] [--chunk N] [--skip-import]

Builds one topology (classic durable queues, every other one with a TTL;
topic, direct and fanout exchanges; queue bindings), then, in the same run and
on the same broker, each in a fresh vhost of its own:

(a) ``rabbitmqctl import_definitions FILE``: timed until every binding exists
    (the command returns before the import has finished; the management API is
    polled only after it returns, so that polling does not slow the import);
(b) ``execute()`` of the plan from an empty vhost (``diff`` against nothing).

It prints both times, the ratio (rabbitmqctl / rabbitry), the machine, and,
where the live reader is available, the time of a no-op plan (read the vhost
rabbitry just applied, diff: must be empty).  Its vhosts are deleted at the end.
Needs ``rabbitmqctl`` (root, or the rabbitmq user) and the management API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from importlib import metadata
from typing import Any
from urllib.parse import quote

import httpx

from rabbitry.broker import apply as applier
from rabbitry.broker.plan import diff
from rabbitry.broker.state import BindingState, ExchangeState, QueueState, Topology
from rabbitry.broker.url import BrokerURL, parse_url

EXCHANGE_TYPES = ("topic", "direct", "fanout")
TTL = 3_600_000


def topology(queues: int, bindings: int, exchanges: int) -> Topology:
    xs = {
        f"bench.x{i:02d}": ExchangeState(f"bench.x{i:02d}", EXCHANGE_TYPES[i % 3])
        for i in range(exchanges)
    }
    qs = {
        f"bench.q{i:05d}": QueueState(
            f"bench.q{i:05d}", arguments=(("x-message-ttl", TTL),) if i % 2 else ()
        )
        for i in range(queues)
    }
    x_names, q_names = sorted(xs), sorted(qs)
    bs = set()
    for i in range(bindings):
        x = xs[x_names[i % exchanges]]
        key = f"k.{i}.#" if x.type == "topic" else f"k.{i}"
        bs.add(BindingState(x.name, "queue", q_names[i % queues], key))
    return Topology(xs, qs, frozenset(bs))


def definitions(want: Topology, vhost: str) -> dict[str, Any]:
    """The same topology as a definitions file for ``rabbitmqctl import_definitions``."""
    return {
        "exchanges": [
            {
                "name": x.name,
                "vhost": vhost,
                "type": x.type,
                "durable": x.durable,
                "auto_delete": x.auto_delete,
                "internal": x.internal,
                "arguments": dict(x.arguments),
            }
            for x in want.exchanges.values()
        ],
        "queues": [
            {
                "name": q.name,
                "vhost": vhost,
                "durable": q.durable,
                "auto_delete": q.auto_delete,
                "arguments": q.declare_arguments(),
            }
            for q in want.queues.values()
        ],
        "bindings": [
            {
                "source": b.source,
                "vhost": vhost,
                "destination": b.destination,
                "destination_type": b.destination_type,
                "routing_key": b.routing_key,
                "arguments": b.declare_arguments(),
            }
            for b in sorted(want.bindings, key=BindingState.sort_key)
        ],
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
    def fresh_vhost(self) -> Iterator[str]:
        name = f"rabbitry-bench-{uuid.uuid4().hex[:8]}"
        self.http.put(f"/api/vhosts/{quote(name, safe='')}", json={}).raise_for_status()
        self.http.put(
            f"/api/permissions/{quote(name, safe='')}/{quote(self.url.username, safe='')}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()
        try:
            yield name
        finally:
            self.http.delete(f"/api/vhosts/{quote(name, safe='')}")

    def bindings(self, vhost: str) -> int:
        """Bindings in ``vhost``, the default exchange's left out."""
        rows = self.http.get(
            f"/api/bindings/{quote(vhost, safe='')}", params={"columns": "source"}
        ).raise_for_status()
        return sum(1 for row in rows.json() if row["source"])

    def queues(self, vhost: str) -> int:
        rows = self.http.get(f"/api/queues/{quote(vhost, safe='')}", params={"columns": "name"})
        return len(rows.raise_for_status().json())


def time_import(broker: Broker, want: Topology) -> float:
    with broker.fresh_vhost() as vhost:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(definitions(want, vhost), f)
        os.chmod(f.name, 0o644)  # rabbitmqctl reads it as the rabbitmq user
        try:
            started = time.perf_counter()
            done = subprocess.run(
                ["rabbitmqctl", "import_definitions", f.name],
                check=False,
                capture_output=True,
                text=True,
            )
            if done.returncode:
                sys.exit(f"rabbitmqctl import_definitions failed: {done.stderr.strip()}")
            while broker.bindings(vhost) < len(want.bindings):  # it returns before the end
                time.sleep(0.05)
            seconds = time.perf_counter() - started
        finally:
            os.unlink(f.name)
        assert broker.queues(vhost) == len(want.queues)
        return seconds


def time_rabbitry(broker: Broker, want: Topology, channels: int) -> tuple[float, float | None]:
    """The apply's seconds, and a no-op plan's right after (``None`` without the live reader)."""
    with broker.fresh_vhost() as vhost:
        url = parse_url(broker.url.amqp.rsplit("/", 1)[0] + "/" + quote(vhost, safe=""))
        url = url.with_management(broker.url.management)
        started = time.perf_counter()
        result = asyncio.run(applier.execute(diff(want, Topology()), url, channels=channels))
        seconds = time.perf_counter() - started
        assert result.applied == len(want.exchanges) + len(want.queues) + len(want.bindings)
        assert broker.bindings(vhost) == len(want.bindings)
        assert broker.queues(vhost) == len(want.queues)
        return seconds, time_noop_plan(url, want)


def time_noop_plan(url: BrokerURL, want: Topology) -> float | None:
    # HOOK(live reader): a no-op plan is "read the vhost, diff against the spec".
    # It uses rabbitry.broker.management.read_vhost where that module exists.
    try:
        from rabbitry.broker.management import read_vhost  # noqa: PLC0415
    except ImportError:
        return None
    started = time.perf_counter()
    plan = diff(want, asyncio.run(read_vhost(url, timeout=30)))
    seconds = time.perf_counter() - started
    if not plan.empty:
        print(f"  warning: the no-op plan is not empty: {plan.counts()}", file=sys.stderr)
    return seconds


def machine(broker: Broker) -> str:
    return (
        f"{os.cpu_count()} cores (nproc), {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, aiormq {metadata.version('aiormq')}, "
        f"{broker.version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="AMQP URL (default $RABBITRY_URL or local)")
    parser.add_argument("--management-url", default=None)
    parser.add_argument("--queues", type=int, default=2000)
    parser.add_argument("--bindings", type=int, default=2000)
    parser.add_argument("--exchanges", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the order alternates")
    parser.add_argument("--channels", type=int, default=applier.DEFAULT_CHANNELS)
    parser.add_argument("--chunk", type=int, default=applier.CHUNK, help="calls per flush")
    parser.add_argument("--skip-import", action="store_true", help="time rabbitry only")
    args = parser.parse_args()

    applier.CHUNK = args.chunk
    broker = Broker(parse_url(args.url, management=args.management_url))
    want = topology(args.queues, args.bindings, args.exchanges)
    print(machine(broker))
    print(
        f"topology: {len(want.queues)} queues, {len(want.bindings)} bindings, "
        f"{len(want.exchanges)} exchanges; rabbitry: {args.channels} channels, "
        f"chunks of {args.chunk}"
    )
    ratios, applies, noops = [], [], []
    for round_ in range(args.repeat):
        imported = None
        if not args.skip_import and round_ % 2 == 0:
            imported = time_import(broker, want)
        applied, noop = time_rabbitry(broker, want, args.channels)
        if not args.skip_import and round_ % 2 == 1:
            imported = time_import(broker, want)
        applies.append(applied)
        line = f"round {round_ + 1}: rabbitry apply {applied:6.2f} s"
        if imported is not None:
            ratios.append(imported / applied)
            line += f"   rabbitmqctl import_definitions {imported:6.2f} s   ratio {ratios[-1]:.2f}x"
        if noop is not None:
            noops.append(noop)
            line += f"   no-op plan {noop:5.2f} s"
        print(line, flush=True)
    if args.repeat > 1:
        summary = f"median: rabbitry apply {statistics.median(applies):.2f} s"
        if ratios:
            summary += f", ratio {statistics.median(ratios):.2f}x"
        if noops:
            summary += f", no-op plan {statistics.median(noops):.2f} s"
        print(summary)


if __name__ == "__main__":
    main()
