"""Publish and consume throughput with tracing off, the API alone, and the SDK recording all.

    python bench/tracing.py [--url URL] [--messages 10000] [--rounds 3] [--window 256]

``run.py --only tracing`` calls ``bench_tracing``; run alone, this prints each round
and the medians.  rabbitry's telemetry (``rabbitry.messaging._telemetry``) decides at
import whether OpenTelemetry is there, so every measurement runs in a child process
of its own (this file with ``--child MODE``), in one of three modes:

- **off**: ``opentelemetry`` cannot be imported (as if ``rabbitry[otel]`` were not
  installed): every hook is one test of a global;
- **api**: the API installed, no SDK: spans and instruments are the API's no-ops and
  no trace context goes into the headers (what an application gets that installed
  the extra and configured nothing);
- **sdk**: the SDK recording everything: a ``TracerProvider`` (always sampled) with a
  ``SimpleSpanProcessor`` into an ``InMemorySpanExporter``, a ``MeterProvider`` with
  an ``InMemoryMetricReader``, both installed globally: a PRODUCER span per
  published message with ``traceparent`` in its headers, a CONSUMER span per
  delivery continuing it, every counter and the duration histogram.

Each child, on the queue of ``bench/messaging.py``'s spec (a fresh vhost per run):
publishes ``--messages`` seed ``Start`` messages (persistent, confirmed) with one
``Client.publish_many`` call, purges, publishes them again with ``--window``
concurrent ``Client.publish`` calls (so the queue is full), then consumes them all
(prefetch 256, a no-op handler, each acked), and prints messages/s of each, the
CPU it spent per message (``time.process_time``: steadier than throughput on a
busy machine) and, in sdk mode, the spans it recorded (checked: one a publish and
one a delivery).  The modes take turns in each round, the order reversed every
other round; a ratio to off is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = ("off", "api", "sdk")
FIGURES = ("publish_many", "publish", "consume")
#: Figures of client CPU per message (µs), one per figure above.
CPU = tuple(f"{name}_cpu_us" for name in FIGURES)
PREFETCH = 256


# -- the child ------------------------------------------------------------------------


def _setup(mode: str) -> Any:
    """Make ``mode`` true before rabbitry is imported; the span exporter in sdk mode."""
    if mode == "off":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]
        return None
    if mode == "api":
        return None
    # Imported here, not at the top: in "off" mode nothing may import opentelemetry.
    from opentelemetry import metrics, trace  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
        InMemorySpanExporter,
    )

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    return spans


async def _child(mode: str, url_text: str, n: int, window: int, spans: Any) -> dict[str, Any]:
    # After _setup: rabbitry's telemetry looks for opentelemetry once, at its import.
    import messaging  # noqa: PLC0415

    from rabbitry.broker.url import parse_url  # noqa: PLC0415
    from rabbitry.messaging import _telemetry  # noqa: PLC0415

    assert _telemetry.ON is (mode != "off"), (mode, _telemetry.ON)
    url = parse_url(url_text)
    _, contract = messaging.load_contract()
    figures: dict[str, Any] = {}
    recorded: dict[str, int] = {}

    def spans_of(kind: str) -> None:
        if spans is not None:
            recorded[kind] = len(spans.get_finished_spans())
            spans.clear()

    async def measure(name: str, seconds: Awaitable[float]) -> None:
        cpu = time.process_time()
        figures[name] = n / await seconds
        figures[f"{name}_cpu_us"] = (time.process_time() - cpu) / n * 1e6
        spans_of(name)

    await messaging.purge(url)
    await measure("publish_many", messaging.pub_rabbitry_many(url, contract, n, window))
    assert await messaging.purge(url) == n
    await measure("publish", messaging.pub_rabbitry(url, contract, n, window))
    deadline = time.monotonic() + 30
    while await messaging.count(url) < n:  # confirmed; the queue's count may lag a moment
        assert time.monotonic() < deadline, "the queue did not fill"
        await asyncio.sleep(0.05)
    await measure("consume", messaging.consume_rabbitry(url, contract, n, PREFETCH))
    if spans is not None:
        assert recorded == {"publish_many": n, "publish": n, "consume": n}, recorded
        figures["spans"] = recorded
    return figures


def child_main(mode: str, url: str, n: int, window: int) -> None:
    spans = _setup(mode)
    print(json.dumps(asyncio.run(_child(mode, url, n, window, spans))), flush=True)


# -- the parent -----------------------------------------------------------------------


def run_mode(mode: str, url: Any, n: int, window: int) -> dict[str, Any]:
    """One child in ``mode``: its figures."""
    done = subprocess.run(
        [
            *(sys.executable, __file__, "--child", mode, "--url", url.amqp),
            *("--messages", str(n), "--window", str(window)),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tracing bench, mode {mode}: exit {done.returncode}\n{done.stderr}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def bench_tracing(url: Any, *, n: int, window: int, flip: bool) -> dict[str, float]:
    """One round: every mode in turn (reversed when ``flip``), ``MODE_FIGURE`` per second."""
    result: dict[str, float] = {}
    for mode in reversed(MODES) if flip else MODES:
        figures = run_mode(mode, url, n, window)
        for name in FIGURES + CPU:
            result[f"{mode}_{name}"] = figures[name]
    return result


def summary(rounds: list[dict[str, float]]) -> dict[str, float | None]:
    """Medians of every figure, and each mode ÷ off (median of the per-round ratios)."""
    from common import median, ratios  # noqa: PLC0415 - it imports rabbitry (see _child)

    result: dict[str, float | None] = {k: median(r[k] for r in rounds) for k in rounds[0]}
    for mode in MODES[1:]:
        for name in FIGURES + CPU:
            result[f"{mode}_vs_off_{name}"] = median(
                ratios(rounds, f"{mode}_{name}", f"off_{name}")
            )
    return result


def table(result: dict[str, Any]) -> list[str]:
    """Markdown rows: messages/s per mode and figure, the ratio to off beside it."""
    lines = [
        "| tracing | `publish_many` | `publish`, window calls | consume "
        "| CPU/message: `publish_many` | `publish` | consume |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for mode in MODES:
        cells = []
        for name in FIGURES:
            cell = f"{result[f'{mode}_{name}']:,.0f}/s"
            if mode != "off":
                cell += f" ({result[f'{mode}_vs_off_{name}']:.0%})"
            cells.append(cell)
        for name in CPU:
            cell = f"{result[f'{mode}_{name}']:.0f} µs"
            if mode != "off":
                cell += f" ({result[f'{mode}_vs_off_{name}']:.2f}x)"
            cells.append(cell)
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default=None, help="AMQP URL (default $RABBITRY_URL or local)")
    parser.add_argument("--management-url", default=None)
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3, help="the order alternates")
    parser.add_argument("--window", type=int, default=256, help="concurrent publish calls")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.url, args.messages, args.window)
        return
    # Not at the top, where a child would import them before _setup (see _child).
    import messaging  # noqa: PLC0415
    from common import Broker  # noqa: PLC0415

    from rabbitry.broker import converge  # noqa: PLC0415
    from rabbitry.broker.url import parse_url  # noqa: PLC0415

    broker = Broker(parse_url(args.url, management=args.management_url))
    spec, _ = messaging.load_contract()
    rounds: list[dict[str, float]] = []
    with broker.fresh_vhost() as url:
        asyncio.run(converge.apply(spec, url, timeout=60))
        for round_ in range(args.rounds):
            rounds.append(
                bench_tracing(url, n=args.messages, window=args.window, flip=round_ % 2 == 1)
            )
            print(
                f"round {round_ + 1}: "
                + ", ".join(
                    f"{k} {v:,.0f}" + ("" if k.endswith("_us") else "/s")
                    for k, v in rounds[-1].items()
                ),
                flush=True,
            )
    print("\n".join(table(summary(rounds))))


if __name__ == "__main__":
    main()
