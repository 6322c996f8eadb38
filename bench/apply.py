"""Apply speed: rabbitry's apply against ``rabbitmqctl import_definitions``; the no-op plan.

    python bench/apply.py [--url URL] [--queues 2000] [--bindings 2000] [--exchanges 10]
                          [--repeat 3] [--channels N] [--chunk N] [--skip-import]

``run.py`` calls ``bench_apply`` once per round; run alone (with ``--channels`` and
``--chunk`` to tune the executor), this prints each round and the medians.

One spec file (classic durable queues, every other one with ``message_ttl``;
topic, direct and fanout exchanges; one binding per queue) is what both sides
create, each in a fresh vhost of its own, deleted at the end of its turn:

import      its definitions file (the same topology: ``desired(spec)``) through
            ``rabbitmqctl import_definitions FILE``, timed until every binding
            exists: the command returns before the import has finished, so the
            management API is polled every 50 ms after it returns;
apply       ``rabbitry.broker.converge.apply(spec, url)`` in this process, as
            ``rabbitry apply`` runs it once the spec is loaded: read the live vhost,
            diff, carry the plan out (connecting included);
no-op plan  right after that apply: ``converge.plan`` in this process, and the whole
            ``rabbitry plan SPEC`` command (Python start, spec check, live read, diff,
            output), which must exit 0 ("in sync");
apply (CLI) the whole ``rabbitry apply SPEC`` command into another fresh vhost.

With a local broker it also reads the ``beam.smp`` process's CPU time around
each side (``broker_cpu_s``): on a small machine that is what bounds the ratio.
Needs ``rabbitmqctl`` (root, or the rabbitmq user) and the management API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rabbitry.broker import apply as applier
from rabbitry.broker import converge
from rabbitry.broker.state import Topology, desired
from rabbitry.broker.url import BrokerURL, parse_url
from rabbitry.check import load_spec
from rabbitry.export_definitions import topology_definitions
from rabbitry.spec import Spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Broker, Clock, broker_pid, median, ratios

EXCHANGE_TYPES = ("topic", "direct", "fanout")
TTL = 3_600_000


def spec_text(queues: int, bindings: int, exchanges: int) -> str:
    """The bench topology as a rabbitry spec."""
    lines = ["version: 1", "exchanges:"]
    lines += [f"  bench.x{i:02d}: {{type: {EXCHANGE_TYPES[i % 3]}}}" for i in range(exchanges)]
    lines.append("queues:")
    lines += [
        f"  bench.q{i:05d}: {{message_ttl: {TTL}}}" if i % 2 else f"  bench.q{i:05d}: {{}}"
        for i in range(queues)
    ]
    lines.append("bindings:")
    for i in range(bindings):
        x = i % exchanges
        kind = EXCHANGE_TYPES[x % 3]
        key = {"topic": f', key: "k.{i}.#"', "direct": f', key: "k.{i}"', "fanout": ""}[kind]
        lines.append(f"  - {{from: bench.x{x:02d}, queue: bench.q{i % queues:05d}{key}}}")
    return "\n".join(lines) + "\n"


def write_spec(folder: Path, queues: int, bindings: int, exchanges: int) -> tuple[Path, Spec]:
    path = folder / "bench-topology.yaml"
    path.write_text(spec_text(queues, bindings, exchanges))
    return path, load_spec(path)


def _settle() -> None:
    """A moment for the previous vhost's teardown to leave the broker's CPU."""
    time.sleep(0.5)


def time_import(broker: Broker, clock: Clock, want: Topology) -> dict[str, Any]:
    """``rabbitmqctl import_definitions`` into a fresh vhost, until every binding exists."""
    with broker.fresh_vhost() as url, tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "definitions.json"
        path.write_text(json.dumps(topology_definitions(want, url.vhost)))
        os.chmod(folder, 0o755)  # rabbitmqctl reads the file as the rabbitmq user
        os.chmod(path, 0o644)
        _settle()
        with clock.measure() as m:
            started = time.perf_counter()
            done = subprocess.run(
                ["rabbitmqctl", "import_definitions", str(path)],
                check=False,
                capture_output=True,
                text=True,
            )
            if done.returncode:
                sys.exit(f"rabbitmqctl import_definitions failed: {done.stderr.strip()}")
            returned = time.perf_counter() - started
            while broker.bindings(url.vhost) < len(want.bindings):  # it returns before the end
                time.sleep(0.05)
        assert broker.queues(url.vhost) == len(want.queues)
        m["returned_s"] = round(returned, 3)
        return m


def time_apply(
    broker: Broker, clock: Clock, spec: Spec, spec_path: Path, channels: int
) -> dict[str, Any]:
    """``converge.apply`` into a fresh vhost, then a no-op plan (in process and the CLI)."""
    want = desired(spec)
    with broker.fresh_vhost() as url:
        _settle()
        with clock.measure() as m:
            done = asyncio.run(_apply(spec, url, channels))
        assert done.result.applied == len(want.exchanges) + len(want.queues) + len(want.bindings)
        m["execute_s"] = round(done.result.seconds, 3)
        assert broker.bindings(url.vhost) == len(want.bindings)
        assert broker.queues(url.vhost) == len(want.queues)
        started = time.perf_counter()
        planned = asyncio.run(converge.plan(spec, url, timeout=60))
        m["noop_plan_inprocess_s"] = round(time.perf_counter() - started, 3)
        assert planned.plan.empty, f"the no-op plan is not empty: {planned.plan.counts()}"
        started = time.perf_counter()
        cli = _cli("plan", spec_path, url)
        m["noop_plan_cli_s"] = round(time.perf_counter() - started, 3)
        assert cli.returncode == 0, f"rabbitry plan: exit {cli.returncode}: {cli.stdout[-500:]}"
        return m


async def _apply(spec: Spec, url: BrokerURL, channels: int) -> converge.Converged:
    if channels == applier.DEFAULT_CHANNELS:
        return await converge.apply(spec, url, timeout=60)
    # Tuning (bench/apply.py --channels): converge.apply's own steps, another pool size.
    planned = await converge.plan(spec, url, timeout=60)
    result = await applier.execute(planned.plan, url, timeout=60, channels=channels)
    return converge.Converged(planned, result)


def time_apply_cli(broker: Broker, clock: Clock, spec: Spec, spec_path: Path) -> dict[str, Any]:
    """The whole ``rabbitry apply SPEC`` command into a fresh vhost."""
    want = desired(spec)
    with broker.fresh_vhost() as url:
        _settle()
        with clock.measure() as m:
            done = _cli("apply", spec_path, url)
        assert done.returncode == 0, f"rabbitry apply: exit {done.returncode}: {done.stderr}"
        assert broker.bindings(url.vhost) == len(want.bindings)
        return m


def _cli(
    command: str, spec_path: Path, url: BrokerURL | None = None
) -> subprocess.CompletedProcess[str]:
    """``rabbitry COMMAND SPEC --url URL`` in a fresh interpreter, with bytecode caches.

    An installed package has its bytecode compiled; an environment with
    ``PYTHONDONTWRITEBYTECODE`` (this one's) would compile ~280 modules at
    every start.  So the caches go to a folder of the bench's own.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "rabbitry-bench-pycache")
    where = [] if url is None else ["--url", url.amqp]
    if url is not None and url.management_override:
        where += ["--management-url", url.management_override]
    return subprocess.run(
        [sys.executable, "-m", "rabbitry", command, str(spec_path), *where],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )


def warm_up_cli(spec_path: Path) -> None:
    """Fill the bytecode caches (``rabbitry check`` imports what ``plan`` and ``apply`` do)."""
    _cli("check", spec_path)


#: The sides of a round, in order (reversed every other round).
SIDES = ("import", "apply", "apply_cli")


def bench_apply(
    broker: Broker,
    spec: Spec,
    spec_path: Path,
    *,
    flip: bool,
    channels: int = applier.DEFAULT_CHANNELS,
    sides: tuple[str, ...] = SIDES,
) -> dict[str, dict[str, Any]]:
    """One round: each side in its own fresh vhost; seconds and CPU seconds of each."""
    clock = Clock(broker_pid(broker.url))
    want = desired(spec)
    runs = {
        "import": lambda: time_import(broker, clock, want),
        "apply": lambda: time_apply(broker, clock, spec, spec_path, channels),
        "apply_cli": lambda: time_apply_cli(broker, clock, spec, spec_path),
    }
    return {side: runs[side]() for side in (reversed(sides) if flip else sides)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default=None, help="AMQP URL (default $RABBITRY_URL or local)")
    parser.add_argument("--management-url", default=None)
    parser.add_argument("--queues", type=int, default=2000)
    parser.add_argument("--bindings", type=int, default=2000)
    parser.add_argument("--exchanges", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the order alternates")
    parser.add_argument("--channels", type=int, default=applier.DEFAULT_CHANNELS)
    parser.add_argument("--chunk", type=int, default=applier.CHUNK, help="calls per flush")
    parser.add_argument("--skip-import", action="store_true", help="time rabbitry's apply only")
    args = parser.parse_args()

    applier.CHUNK = args.chunk
    broker = Broker(parse_url(args.url, management=args.management_url))
    sides = ("apply",) if args.skip_import else ("import", "apply")
    rounds = []
    with tempfile.TemporaryDirectory() as folder:
        path, spec = write_spec(Path(folder), args.queues, args.bindings, args.exchanges)
        warm_up_cli(path)
        for round_ in range(args.repeat):
            result = bench_apply(
                broker, spec, path, flip=round_ % 2 == 1, channels=args.channels, sides=sides
            )
            rounds.append({side: m["seconds"] for side, m in result.items()})
            print(
                f"round {round_ + 1}: "
                + "   ".join(
                    f"{side} {m['seconds']:.2f} s (broker CPU {m['broker_cpu_s']} s)"
                    for side, m in result.items()
                )
                + f"   no-op plan {result['apply']['noop_plan_cli_s']:.2f} s (CLI)",
                flush=True,
            )
    if not args.skip_import:
        print(f"median ratio: {median(ratios(rounds, 'import', 'apply')):.2f}x")


if __name__ == "__main__":
    main()
