"""rabbitry at 1,000, 5,000 and 20,000 queues: each step's seconds and growth, apply vs import.

    python bench/scale.py [--sizes 1000,5000,20000] [--quick] [--json] [--offline]
                          [--url URL] [--management-url URL]

For each size, in one run, on a spec this file writes (``spec_text``): the
commands a user runs, each as ``.venv/bin/rabbitry`` in a subprocess, so what
is timed is what the user waits for (Python's start and imports included, with
bytecode caches as an installed package has them):

check      ``rabbitry check SPEC`` (every offline check; exit 0)
generate   ``rabbitry generate SPEC --out TMP`` (the typed package, into a temp folder)
route      ``rabbitry route -f SPEC EXCHANGE KEY`` (one lookup)
apply      the whole ``rabbitry apply SPEC`` into a fresh, empty vhost
import     ``rabbitmqctl import_definitions`` of the same topology (``rabbitry export
           definitions`` of the spec) into another fresh vhost, timed until every
           queue and binding exists (it may return before the import has finished)
plan       the no-op ``rabbitry plan SPEC`` right after the apply (must exit 0, in sync)

Each command's CPU seconds (user + system, of the process and its children) are
kept beside its seconds (``<step>_cpu`` in the JSON): on a loaded machine the
wall clock measures the neighbours too.  ``--offline`` runs only the steps that
need no broker (check, generate, route), each ``--repeat`` times (median),
and prints their seconds and CPU per size and their growth.

apply and import alternate who goes first from one size to the next.  It
prints each step's seconds per size, each step's growth from 5,000 to 20,000
queues (target: at most 5x for 4x the queues) and import ÷ apply per size
(target: apply at least 2x faster).  Every vhost is named ``rabbitry-bench-*``
and deleted before it exits, on failure too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Broker, Clock, broker_pid, machine, versions

from rabbitry.broker.url import BrokerURL, parse_url

__all__ = [
    "GROWTH",
    "OFFLINE",
    "SIZES",
    "STEPS",
    "bench_offline",
    "bench_scale",
    "growth",
    "spec_text",
    "write_spec",
]

SIZES = (1_000, 5_000, 20_000)
QUICK_SIZES = (200, 1_000)
#: Every step, in the order of the table.
STEPS = ("check", "generate", "route", "plan", "apply", "import")
#: The steps that must grow at most ``MAX_GROWTH`` times from ``GROWTH[0]`` to ``GROWTH[1]``.
OFFLINE = ("check", "generate", "route", "plan")
GROWTH = (5_000, 20_000)
MAX_GROWTH = 5.0
MIN_APPLY_RATIO = 2.0

EXCHANGES = 10
SERVICES = 5
#: Queues per message: one message's key reaches a group of this many queues.
GROUP = 10
#: Every AUDIT-th of the first AUDITED queues is also bound with ``*.audit`` (two per
#: exchange): every key's first word meets a wildcard, and a message's fan-out stays
#: the same at every size (with every 50th queue bound, what each message reaches
#: grew with the size, and the routing checks' output with its square).
AUDIT = 50
AUDITED = 1_000
RABBITRY = ROOT / ".venv" / "bin" / "rabbitry"
#: Seconds any one command may take before the bench gives up on it (and exits non-zero).
COMMAND_TIMEOUT = 1800


# -- the spec ------------------------------------------------------------------------


def spec_text(queues: int) -> str:
    """A spec of ``queues`` queues over ten topic exchanges, deterministic in ``queues``.

    Queue ``i`` is in group ``g = i // 10``, bound to exchange ``g % 10`` with
    ``k{g}.#``; message ``M{g}`` (``queues / 10`` of them) is published there with
    ``k{g}.{region}`` and reaches its group, and with region ``audit`` the two
    queues of its exchange bound ``*.audit`` too.  Five services share the
    messages and the queues.  Policies: a dead-letter exchange for every queue,
    four tiers of TTL by the name's last digit (a higher priority, so they
    shadow it there), and an alternate exchange on every topic exchange; the
    dead-letter and unrouted queues are consumed like the others.
    """
    groups = (queues + GROUP - 1) // GROUP
    lines = ["version: 1", "codegen: {package: scale_contracts, out: scale_contracts}"]
    lines.append("exchanges:")
    lines += [f"  scale.e{x}: {{type: topic}}" for x in range(EXCHANGES)]
    lines += ["  scale.dead: {type: fanout}", "  scale.unrouted: {type: fanout}"]
    lines.append("queues:")
    lines += [f"  {_queue(i)}: {{}}" for i in range(queues)]
    lines += ["  scale.dead-letters: {}", "  scale.unrouted: {}"]
    lines.append("policies:")
    lines.append(
        '  scale-dead: {pattern: "^scale\\\\.(q|unrouted$)", priority: 0, dead_letter: scale.dead}'
    )
    lines += [
        f'  scale-ttl-{t}: {{pattern: "^scale\\\\.q\\\\d*{t}$", priority: 1, '
        f"dead_letter: scale.dead, message_ttl: {(t + 1) * 3_600_000}}}"
        for t in range(4)
    ]
    lines.append(
        '  scale-unrouted: {pattern: "^scale\\\\.e\\\\d+$", apply_to: exchanges, '
        "alternate_exchange: scale.unrouted}"
    )
    lines.append("bindings:")
    for i in range(queues):
        g = i // GROUP
        lines.append(f'  - {{from: scale.e{g % EXCHANGES}, queue: {_queue(i)}, key: "k{g}.#"}}')
        if i % AUDIT == AUDIT - 1 and i < AUDITED:
            x = i // AUDIT % EXCHANGES
            lines.append(f'  - {{from: scale.e{x}, queue: {_queue(i)}, key: "*.audit"}}')
    lines += [
        "  - {from: scale.dead, queue: scale.dead-letters}",
        "  - {from: scale.unrouted, queue: scale.unrouted}",
    ]
    lines.append("messages:")
    lines += [
        f"  M{g}: {{schema: schemas/m{g}.json, exchange: scale.e{g % EXCHANGES}, "
        f'routing_key: "k{g}.{{region}}"}}'
        for g in range(groups)
    ]
    lines.append(
        '  Stray: {schema: schemas/m0.json, exchange: scale.e0, routing_key: "stray.{region}"}'
    )
    lines.append("services:")
    for s in range(SERVICES):
        mine = [f"M{g}" for g in range(groups) if g % SERVICES == s]
        consumes = {
            _queue(i): [f"M{i // GROUP}"] for i in range(queues) if (i // GROUP) % SERVICES == s
        }
        if s == 0:
            mine.append("Stray")
            consumes["scale.unrouted"] = ["Stray"]
        lines.append(f"  s{s}:")
        lines.append(f"    publishes: [{', '.join(mine)}]")
        lines.append(f"    consumes: {json.dumps(consumes)}")
    return "\n".join(lines) + "\n"


def _queue(i: int) -> str:
    return f"scale.q{i:05d}"


def schema(g: int) -> dict[str, Any]:
    """Message ``M{g}``'s small schema: an id, a region (the key's word), an amount."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"M{g}",
        "type": "object",
        "properties": {
            "id": {"type": "string", "minLength": 1},
            "region": {"type": "string", "pattern": "^[a-z]{2,8}$"},
            "amount": {"type": "integer", "minimum": 0},
        },
        "required": ["id", "region"],
        "additionalProperties": False,
    }


def write_spec(folder: Path, queues: int) -> Path:
    """The spec and its schema files in ``folder``; the spec's path."""
    (folder / "schemas").mkdir(parents=True, exist_ok=True)
    for g in range((queues + GROUP - 1) // GROUP):
        (folder / "schemas" / f"m{g}.json").write_text(json.dumps(schema(g)))
    path = folder / "topology.yaml"
    path.write_text(spec_text(queues))
    return path


# -- the steps -----------------------------------------------------------------------


def rabbitry(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    """``.venv/bin/rabbitry ARGS`` as a user runs it: seconds until it exits, and its result."""
    seconds, _, done = rabbitry_cpu(*args)
    return seconds, done


def rabbitry_cpu(*args: str) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """``.venv/bin/rabbitry ARGS`` as a user runs it: seconds until it exits, its CPU
    seconds (user + system, its children's included), and its result.

    With bytecode caches (``PYTHONPYCACHEPREFIX``, as ``bench/apply.py`` does):
    an installed package has its bytecode compiled, and this sandbox's
    ``PYTHONDONTWRITEBYTECODE`` would add the compiling to every start.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "rabbitry-bench-pycache")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [str(RABBITRY), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=COMMAND_TIMEOUT,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu, done


def _ok(what: str, done: subprocess.CompletedProcess[str], code: int = 0) -> None:
    if done.returncode != code:
        raise SystemExit(
            f"bench: {what}: exit {done.returncode} (expected {code})\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )


def _where(url: BrokerURL) -> list[str]:
    where = ["--url", url.amqp]
    if url.management_override:
        where += ["--management-url", url.management_override]
    return where


class Vhosts:
    """Fresh vhosts, each remembered until it is gone: ``close`` deletes what is left.

    ``Broker.fresh_vhost`` deletes its vhost on exit, but a delete that timed
    out (20,000 queues take a while) would leave it behind on a shared broker.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.made: set[str] = set()

    @contextlib.contextmanager
    def fresh(self) -> Iterator[BrokerURL]:
        with self.broker.fresh_vhost() as url:
            self.made.add(url.vhost)
            yield url

    def close(self) -> list[str]:
        """Delete every vhost made here that still exists; the names that could not be."""
        left = []
        for name in sorted(self.made):
            path = f"/api/vhosts/{quote(name, safe='')}"
            for attempt in range(4):
                try:
                    if self.broker.http.get(path).status_code == 404:
                        break
                    if attempt < 3:
                        self.broker.http.delete(path, timeout=600)
                except Exception:  # the broker busy or away: try again, then name it
                    time.sleep(2)
            else:
                left.append(name)
        return left


def time_import(
    broker: Broker, vhosts: Vhosts, clock: Clock, document: dict[str, Any]
) -> dict[str, Any]:
    """``rabbitmqctl import_definitions`` into a fresh vhost, until every object exists.

    The command may return before the broker has finished (``bench/apply.py``
    saw it at 2,000 queues): the bindings, the last to be made, are counted
    every 50 ms after it returns until all are there (``polls``: how often).
    """
    with vhosts.fresh() as url, tempfile.TemporaryDirectory() as folder:
        for kind in ("exchanges", "queues", "bindings", "policies"):
            for item in document[kind]:
                item["vhost"] = url.vhost
        path = Path(folder) / "definitions.json"
        path.write_text(json.dumps(document))
        os.chmod(folder, 0o755)  # rabbitmqctl reads the file as the rabbitmq user
        os.chmod(path, 0o644)
        time.sleep(0.5)
        with clock.measure() as m:
            started = time.perf_counter()
            done = subprocess.run(
                ["rabbitmqctl", "import_definitions", str(path)],
                check=False,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
            )
            _ok("rabbitmqctl import_definitions", done)
            returned = time.perf_counter() - started
            polls = 0
            while broker.bindings(url.vhost) < len(document["bindings"]):
                polls += 1
                time.sleep(0.05)
                if time.perf_counter() - started > COMMAND_TIMEOUT:
                    raise SystemExit("bench: import_definitions never finished")
        if broker.queues(url.vhost) != len(document["queues"]):
            raise SystemExit("bench: import_definitions made the bindings but not every queue")
        m["returned_s"] = round(returned, 3)
        m["polls"] = polls
        return m


def time_apply(
    broker: Broker, vhosts: Vhosts, clock: Clock, spec: Path, document: dict[str, Any]
) -> dict[str, Any]:
    """The whole ``rabbitry apply SPEC`` into a fresh vhost, then the no-op ``rabbitry plan``."""
    with vhosts.fresh() as url:
        time.sleep(0.5)
        with clock.measure() as m:
            _, done = rabbitry("apply", str(spec), *_where(url))
        _ok("rabbitry apply", done)
        if broker.bindings(url.vhost) != len(document["bindings"]):
            raise SystemExit("bench: rabbitry apply did not make every binding")
        if broker.queues(url.vhost) != len(document["queues"]):
            raise SystemExit("bench: rabbitry apply did not make every queue")
        seconds, done = rabbitry("plan", str(spec), *_where(url))
        _ok("rabbitry plan (no-op, right after apply)", done)
        m["noop_plan_s"] = seconds
        return m


def bench_size(
    broker: Broker, vhosts: Vhosts, folder: Path, queues: int, *, flip: bool
) -> dict[str, Any]:
    """Every step at one size; seconds per step and what else each measured."""
    spec = write_spec(folder, queues)
    found: dict[str, Any] = {"queues": queues, **offline_steps(spec, folder, queues)}
    _, done = rabbitry("export", "definitions", str(spec), "-o", str(folder / "definitions.json"))
    _ok("rabbitry export definitions", done)
    document: dict[str, Any] = json.loads((folder / "definitions.json").read_text())
    found["objects"] = {
        k: len(document[k]) for k in ("exchanges", "queues", "bindings", "policies")
    }
    clock = Clock(broker_pid(broker.url))
    sides = ["import", "apply"]
    for side in reversed(sides) if flip else sides:
        if side == "import":
            found["import_detail"] = time_import(broker, vhosts, clock, document)
            found["import"] = found["import_detail"]["seconds"]
        else:
            found["apply_detail"] = time_apply(broker, vhosts, clock, spec, document)
            found["apply"] = found["apply_detail"]["seconds"]
            found["plan"] = found["apply_detail"]["noop_plan_s"]
    found["first"] = "apply" if flip else "import"
    found["apply_vs_import_definitions"] = found["import"] / found["apply"]
    return found


def offline_steps(spec: Path, folder: Path, queues: int, repeat: int = 1) -> dict[str, Any]:
    """check, generate and route of ``spec``, each ``repeat`` times: the median seconds
    and CPU seconds of each (``<step>`` and ``<step>_cpu``)."""
    g = queues // GROUP // 2
    commands = {
        "check": ("check", str(spec)),
        "generate": ("generate", str(spec), "--out", str(folder / "generated")),
        "route": ("route", "-f", str(spec), f"scale.e{g % EXCHANGES}", f"k{g}.audit"),
    }
    found: dict[str, Any] = {}
    for step, args in commands.items():
        runs = []
        for _ in range(repeat):
            seconds, cpu, done = rabbitry_cpu(*args)
            _ok(f"rabbitry {step}", done)
            runs.append((seconds, cpu))
        found[step] = statistics.median(seconds for seconds, _ in runs)
        found[f"{step}_cpu"] = statistics.median(cpu for _, cpu in runs)
        if step == "route":
            found["route_reached"] = len(done.stdout.split())
    return found


def bench_offline(
    sizes: tuple[int, ...], repeat: int = 3, log: Any = print
) -> list[dict[str, Any]]:
    """The steps that need no broker at each size (after a warm-up on a small spec)."""
    results = []
    with tempfile.TemporaryDirectory() as folder:
        warm = write_spec(Path(folder) / "warm-up", 20)
        offline_steps(warm, Path(folder) / "warm-up", 20)
        for queues in sizes:
            here = Path(folder) / str(queues)
            results.append(
                {"queues": queues, **offline_steps(write_spec(here, queues), here, queues, repeat)}
            )
            log(_offline_line(results[-1]))
    return results


def warm_up(vhosts: Vhosts, folder: Path) -> None:
    """Every command once on a small spec: the bytecode caches filled before any clock."""
    spec = write_spec(folder, 20)
    rabbitry("check", str(spec))
    rabbitry("generate", str(spec), "--out", str(folder / "generated"))
    rabbitry("route", "-f", str(spec), "scale.e0", "k0.eu")
    with vhosts.fresh() as url:
        rabbitry("plan", str(spec), *_where(url))
        rabbitry("apply", str(spec), *_where(url))


def bench_scale(broker: Broker, sizes: tuple[int, ...], log: Any = print) -> list[dict[str, Any]]:
    """Every size in turn (apply and import alternate who goes first); one dict per size.

    Every vhost made is gone when it returns or raises.
    """
    vhosts = Vhosts(broker)
    results = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            warm_up(vhosts, Path(folder) / "warm-up")
            for n, queues in enumerate(sizes):
                here = Path(folder) / str(queues)
                results.append(bench_size(broker, vhosts, here, queues, flip=n % 2 == 1))
                log(_line(results[-1]))
    finally:
        left = vhosts.close()
        if left:
            log(f"bench: could not delete the vhost(s) {', '.join(left)}: delete them by hand")
    return results


def growth(results: list[dict[str, Any]], small: int, large: int) -> dict[str, float] | None:
    """Each step's seconds at ``large`` ÷ at ``small``, when both sizes ran."""
    at = {r["queues"]: r for r in results}
    if small not in at or large not in at:
        return None
    return {step: at[large][step] / at[small][step] for step in STEPS}


# -- the output ----------------------------------------------------------------------


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['queues']:>6,} queues: "
        + "  ".join(f"{step} {r[step]:.2f} s" for step in STEPS)
        + f"  (import / apply {r['apply_vs_import_definitions']:.2f}x, {r['first']} first)"
    )


def _offline_line(r: dict[str, Any]) -> str:
    steps = ("check", "generate", "route")
    return f"{r['queues']:>6,} queues: " + "  ".join(
        f"{step} {r[step]:.2f} s (CPU {r[f'{step}_cpu']:.2f} s)" for step in steps
    )


def offline_table(results: list[dict[str, Any]], sizes: tuple[int, int]) -> list[str]:
    """The Markdown table of ``--offline``: seconds and CPU seconds per step, the growth
    row (of the CPU seconds: the wall clock of a loaded machine measures the neighbours)."""
    steps = ("check", "generate", "route")
    header = ["queues", *(f"{s} (CPU)" for s in steps)]
    rows = ["| " + " | ".join(header) + " |", "|" + "--:|" * len(header)]
    for r in results:
        cells = [f"{r[s]:.2f} s ({r[f'{s}_cpu']:.2f} s)" for s in steps]
        rows.append("| " + " | ".join([f"{r['queues']:,}", *cells]) + " |")
    at = {r["queues"]: r for r in results}
    small, large = sizes
    if small != large and small in at and large in at:
        cells = []
        for s in steps:
            grown = at[large][f"{s}_cpu"] / at[small][f"{s}_cpu"]
            cells.append(f"{grown:.2f}x" + (" **no**" if grown > MAX_GROWTH else ""))
        rows.append("| " + " | ".join([f"{small:,} → {large:,} (CPU)", *cells]) + " |")
    return rows


def table(results: list[dict[str, Any]], sizes: tuple[int, int]) -> list[str]:
    """The Markdown table: a row per size, the growth row, the targets."""
    header = ["queues", *STEPS, "import ÷ apply"]
    rows = ["| " + " | ".join(header) + " |", "|" + "--:|" * len(header)]
    for r in results:
        cells = [f"{r['queues']:,}", *(f"{r[s]:.2f} s" for s in STEPS)]
        ratio = r["apply_vs_import_definitions"]
        met = "" if ratio >= MIN_APPLY_RATIO else " **no**"
        rows.append("| " + " | ".join([*cells, f"{ratio:.2f}x{met}"]) + " |")
    grown = growth(results, *sizes) if sizes[0] != sizes[1] else None
    if grown is not None:
        cells = [
            f"{grown[s]:.2f}x" + (" **no**" if s in OFFLINE and grown[s] > MAX_GROWTH else "")
            for s in STEPS
        ]
        rows.append("| " + " | ".join([f"{sizes[0]:,} → {sizes[1]:,}", *cells, ""]) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default=None, help="AMQP URL (default $RABBITRY_URL or local)")
    parser.add_argument("--management-url", default=None, help="default http://HOST:15672")
    parser.add_argument("--sizes", default=None, help="queue counts, comma-separated")
    parser.add_argument("--quick", action="store_true", help="200 and 1,000 queues")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    parser.add_argument(
        "--offline", action="store_true", help="check, generate and route only: no broker"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each step with --offline (median)"
    )
    args = parser.parse_args()
    if args.sizes:
        sizes = tuple(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip())
    else:
        sizes = QUICK_SIZES if args.quick else SIZES
    pair = GROWTH if set(GROWTH) <= set(sizes) else (sizes[0], sizes[-1])
    # SIGTERM (a timeout, an operator) ends it through the finally that deletes the vhosts.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.offline:
        started = time.perf_counter()
        print(
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f}; Python {sys.version.split()[0]}; offline steps, "
            f"median of {args.repeat}",
            flush=True,
        )
        found = bench_offline(sizes, args.repeat, log=lambda s: print(s, flush=True))
        print(f"\n{time.perf_counter() - started:.0f} s in all\n")
        print("\n".join(offline_table(found, pair)))
        if args.json:
            print(json.dumps({"sizes": found}))
        return
    broker = Broker(parse_url(args.url, management=args.management_url))
    info, started = machine(broker.url), time.perf_counter()
    v = versions(broker)
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {info['cores']} cores, {info['system']}, "
        f"load average {info['load_average_at_start']}; Python {v['python']}, "
        f"RabbitMQ {v['rabbitmq']} (Erlang {v['erlang']}), rabbitry {v['rabbitry']}",
        flush=True,
    )
    results = bench_scale(broker, sizes, log=lambda s: print(s, flush=True))
    print(f"\n{time.perf_counter() - started:.0f} s in all; each step the CLI a user runs\n")
    print("\n".join(table(results, pair)))
    if args.json:
        print(json.dumps({"machine": info, "versions": v, "sizes": results}))


if __name__ == "__main__":
    main()
