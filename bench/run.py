"""rabbitry against its peers, in one run on one broker: the figures of issue 7.

    python bench/run.py [--json] [--repeat N] [--url URL] [--quick]
                        [--management-url URL] [--only SECTION,...]

Sections (``--only`` picks some; each in fresh vhosts of its own, deleted after):

validate   µs per seed ``Start``: rabbitry's validation (jsonschema-rs), jsonschema's beside it
publish    confirmed messages/s: rabbitry (``publish_many``; and ``--window`` concurrent
           ``publish`` calls), aiormq and aio-pika (``--window`` concurrent confirmed
           publishes), and the limit (a minimal pamqp publisher, pre-marshalled frames)
consume    messages/s draining one pre-filled queue, prefetch and an ack per message:
           rabbitry, aio-pika, aiormq; and aiormq's floor (a callback that only acks)
apply      ``converge.apply`` vs ``rabbitmqctl import_definitions`` (timed until complete)
           of 2,000 queues + 2,000 bindings + 10 exchanges; the whole ``rabbitry apply``
           command; then the no-op ``rabbitry plan``
request_reply  ``bench/request_reply.py``: round trips/s with 100 requests in flight and one
           at a time: rabbitry's ``Client.request``, FastStream's ``request()``, aio-pika's
           RPC pattern (callback queue, correlation ids, futures); what each lets overlap
tracing    ``bench/tracing.py``: rabbitry's publish and consume throughput with tracing
           off (no OpenTelemetry), the API alone, the SDK recording everything
scale      ``bench/scale.py``: check, generate, route, the no-op plan and the whole
           ``rabbitry apply`` (each the CLI) beside ``import_definitions`` at 1,000, 5,000
           and 20,000 queues (quick: 200, 1,000); each step's growth, import ÷ apply

Every figure is the median of ``--repeat`` rounds (a ratio: the median of the
per-round ratios; the sides of a round alternate who goes first).  It prints a
table; with ``--json`` the last line of stdout is one JSON object: figures,
targets, medians, every raw number, versions, the core count.  ``--quick`` is a
smoke run (2,000 messages, 200 queues, one round): its figures mean little.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import apply as apply_bench
import messaging
import request_reply as request_reply_bench
import scale as scale_bench
import tracing as tracing_bench
from common import Broker, machine, median, ratios, versions

from rabbitry.broker import converge
from rabbitry.broker.url import parse_url

SECTIONS = ("validate", "publish", "consume", "apply", "request_reply", "tracing", "scale")

#: figure → (comparison, target, unit); a ratio's value is "x", a fraction "%".
TARGETS: dict[str, tuple[str, float, str]] = {
    "publish_vs_aiormq": (">=", 3.0, "x"),
    "publish_vs_limit": (">=", 0.40, "%"),
    "consume_vs_aio_pika": (">=", 2.0, "x"),
    "apply_vs_import_definitions": (">=", 4.0, "x"),
    "noop_plan_s": ("<=", 1.5, "s"),
    "validate_us": ("<=", 3.0, "µs"),
    **{f"scale_{step}_growth": ("<=", scale_bench.MAX_GROWTH, "x") for step in scale_bench.OFFLINE},
    "scale_apply_vs_import_definitions": (">=", scale_bench.MIN_APPLY_RATIO, "x"),
    "scale_check_s": ("<=", 5.0, "s"),
    "scale_route_s": ("<=", 2.0, "s"),
}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 5; quick: 1)")
    parser.add_argument("--url", default=None, help="AMQP URL (default $RABBITRY_URL or local)")
    parser.add_argument("--management-url", default=None, help="default http://HOST:15672")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    parser.add_argument("--messages", type=int, default=None, help="default 20000; quick: 2000")
    parser.add_argument("--window", type=int, default=256, help="concurrent publishes in flight")
    parser.add_argument("--prefetch", type=int, default=256)
    args = parser.parse_args()
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")

    quick = args.quick
    settings: dict[str, Any] = {
        "repeat": args.repeat or (1 if quick else 5),
        "messages": args.messages or (2000 if quick else 20000),
        "window": args.window,
        "prefetch": args.prefetch,
        "queues": 200 if quick else 2000,
        "bindings": 200 if quick else 2000,
        "exchanges": 10,
        "validate_calls": 2000 if quick else 20000,
        "requests": 200 if quick else 2000,
        "in_flight": 100,
        "tracing_messages": 1000 if quick else 10000,
        "scale_sizes": scale_bench.QUICK_SIZES if quick else scale_bench.SIZES,
        "quick": quick,
        "sections": sections,
    }
    broker = Broker(parse_url(args.url, management=args.management_url))
    started = time.perf_counter()
    report: dict[str, Any] = {
        "bench": "rabbitry bench/run.py",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": machine(broker.url)["cores"],
        "machine": machine(broker.url),
        "versions": versions(broker),
        "settings": settings,
        "raw": {},
    }
    log(_machine_line(report))
    run_sections(broker, settings, report["raw"])
    report["seconds"] = round(time.perf_counter() - started, 1)
    summarise(report)
    print_table(report)
    if args.json:
        print(json.dumps(report, separators=(",", ":")))


def run_sections(broker: Broker, settings: dict[str, Any], raw: dict[str, Any]) -> None:
    """Run the chosen sections, each round's numbers into ``raw``."""
    sections, repeat = settings["sections"], settings["repeat"]
    spec_, contract = messaging.load_contract()
    if "validate" in sections:
        log("validate ...")
        raw["validate_us"] = messaging.bench_validation(
            contract, calls=settings["validate_calls"], repeat=repeat
        )
    for section in ("publish", "consume"):
        if section not in sections:
            continue
        rounds: list[dict[str, float]] = []
        with broker.fresh_vhost() as url:
            asyncio.run(converge.apply(spec_, url, timeout=60))
            for round_ in range(repeat):
                flip = round_ % 2 == 1
                if section == "publish":
                    coro = messaging.bench_publish(
                        url, contract, n=settings["messages"], window=settings["window"], flip=flip
                    )
                else:
                    coro = messaging.bench_consume(
                        url,
                        contract,
                        n=settings["messages"],
                        prefetch=settings["prefetch"],
                        flip=flip,
                    )
                rounds.append(asyncio.run(coro))
                log(
                    f"{section} round {round_ + 1}: "
                    + ", ".join(f"{k} {v:,.0f}/s" for k, v in rounds[-1].items())
                )
        raw[f"{section}_per_s"] = rounds
    if "apply" in sections:
        applied: list[dict[str, dict[str, Any]]] = []
        with tempfile.TemporaryDirectory() as folder:
            path, spec = apply_bench.write_spec(
                Path(folder), settings["queues"], settings["bindings"], settings["exchanges"]
            )
            apply_bench.warm_up_cli(path)
            for round_ in range(repeat):
                applied.append(apply_bench.bench_apply(broker, spec, path, flip=round_ % 2 == 1))
                log(
                    f"apply round {round_ + 1}: "
                    + ", ".join(f"{k} {v['seconds']:.2f} s" for k, v in applied[-1].items())
                    + f", no-op plan {applied[-1]['apply']['noop_plan_cli_s']:.2f} s"
                )
        raw["apply"] = applied
    if "request_reply" in sections:
        raw["request_reply"] = _request_reply_rounds(broker, settings)
    if "tracing" in sections:
        raw["tracing"] = _tracing_rounds(broker, settings)
    if "scale" in sections:
        log("scale ...")
        raw["scale"] = scale_bench.bench_scale(broker, tuple(settings["scale_sizes"]), log=log)


def _request_reply_rounds(broker: Broker, settings: dict[str, Any]) -> list[dict[str, float]]:
    rounds: list[dict[str, float]] = []
    spec, contract = request_reply_bench.load_contract()
    with broker.fresh_vhost() as url:
        asyncio.run(request_reply_bench.prepare(url, spec))
        for round_ in range(settings["repeat"]):
            coro = request_reply_bench.bench_request_reply(
                url,
                contract,
                n=settings["requests"],
                in_flight=settings["in_flight"],
                flip=round_ % 2 == 1,
            )
            rounds.append(asyncio.run(coro))
            log(
                f"request_reply round {round_ + 1}: "
                + ", ".join(f"{k} {v:,.1f}" for k, v in rounds[-1].items())
            )
    return rounds


def _tracing_rounds(broker: Broker, settings: dict[str, Any]) -> list[dict[str, float]]:
    rounds: list[dict[str, float]] = []
    spec, _ = messaging.load_contract()
    with broker.fresh_vhost() as url:
        asyncio.run(converge.apply(spec, url, timeout=60))
        for round_ in range(settings["repeat"]):
            rounds.append(
                tracing_bench.bench_tracing(
                    url,
                    n=settings["tracing_messages"],
                    window=settings["window"],
                    flip=round_ % 2 == 1,
                )
            )
            log(
                f"tracing round {round_ + 1}: "
                + ", ".join(
                    f"{k} {v:,.0f}" + ("" if k.endswith("_us") else "/s")
                    for k, v in rounds[-1].items()
                )
            )
    return rounds


# -- figures ------------------------------------------------------------------------


def summarise(report: dict[str, Any]) -> None:
    """Fill ``figures``, ``targets`` and ``medians`` from ``raw``."""
    raw = report["raw"]
    figures: dict[str, float | None] = {}
    medians: dict[str, Any] = {}
    if "validate_us" in raw:
        medians["validate_us"] = {k: _round(median(v)) for k, v in raw["validate_us"].items()}
        figures["validate_us"] = medians["validate_us"]["rabbitry_validate_us"]
        figures["validate_vs_jsonschema"] = _ratio(
            medians["validate_us"]["jsonschema_us"], figures["validate_us"]
        )
    if "publish_per_s" in raw:
        rounds = raw["publish_per_s"]
        medians["publish_per_s"] = _column_medians(rounds)
        figures["publish_vs_aiormq"] = median(ratios(rounds, "rabbitry_many", "aiormq"))
        figures["publish_vs_limit"] = median(ratios(rounds, "rabbitry_many", "limit"))
        figures["publish_calls_vs_aiormq"] = median(ratios(rounds, "rabbitry", "aiormq"))
        figures["publish_calls_vs_limit"] = median(ratios(rounds, "rabbitry", "limit"))
        figures["publish_vs_aio_pika"] = median(ratios(rounds, "rabbitry_many", "aio_pika"))
        figures["limit_vs_aiormq"] = median(ratios(rounds, "limit", "aiormq"))
    if "consume_per_s" in raw:
        rounds = raw["consume_per_s"]
        medians["consume_per_s"] = _column_medians(rounds)
        figures["consume_vs_aio_pika"] = median(ratios(rounds, "rabbitry", "aio_pika"))
        figures["consume_vs_aiormq"] = median(ratios(rounds, "rabbitry", "aiormq"))
        figures["consume_vs_aiormq_floor"] = median(ratios(rounds, "rabbitry", "aiormq_floor"))
    if "apply" in raw:
        rounds = raw["apply"]
        seconds = [{side: m["seconds"] for side, m in r.items()} for r in rounds]
        figures["apply_vs_import_definitions"] = median(ratios(seconds, "import", "apply"))
        figures["apply_cli_vs_import_definitions"] = median(ratios(seconds, "import", "apply_cli"))
        figures["noop_plan_s"] = median(r["apply"]["noop_plan_cli_s"] for r in rounds)
        objects = sum(report["settings"][k] for k in ("queues", "bindings", "exchanges"))
        medians["apply"] = {
            side: {
                key: _round(median(r[side].get(key) for r in rounds))
                for key in sorted({k for r in rounds for k in r[side]})
            }
            for side in rounds[0]
        }
        for side in ("import", "apply"):
            cpu = medians["apply"][side].get("broker_cpu_s")
            medians["apply"][side]["broker_cpu_ms_per_object"] = (
                _round(cpu / objects * 1000) if cpu is not None else None
            )
    if "request_reply" in raw:
        medians["request_reply"] = request_reply_bench.summary(raw["request_reply"])
        for peer in request_reply_bench.SIDES[1:]:
            for mode in ("in_flight", "one"):
                figures[f"request_reply_vs_{peer}_{mode}"] = medians["request_reply"][
                    f"rabbitry_vs_{peer}_{mode}"
                ]
    if "tracing" in raw:
        medians["tracing"] = tracing_bench.summary(raw["tracing"])
        for mode in tracing_bench.MODES[1:]:
            for name in tracing_bench.FIGURES:
                figures[f"tracing_{mode}_vs_off_{name}"] = medians["tracing"][
                    f"{mode}_vs_off_{name}"
                ]
    if "scale" in raw:
        # One run of every size (no rounds): growth only between the two sizes.
        grown = scale_bench.growth(raw["scale"], *scale_bench.GROWTH)
        for step in scale_bench.OFFLINE:
            figures[f"scale_{step}_growth"] = None if grown is None else grown[step]
        figures["scale_apply_vs_import_definitions"] = min(
            r["apply_vs_import_definitions"] for r in raw["scale"]
        )
        largest = {r["queues"]: r for r in raw["scale"]}.get(scale_bench.GROWTH[1])
        figures["scale_check_s"] = None if largest is None else largest["check"]
        figures["scale_route_s"] = None if largest is None else largest["route"]
    report["figures"] = {k: _round(v) for k, v in figures.items()}
    report["medians"] = medians
    report["targets"] = {
        name: {
            "target": f"{op} {bound:.0%}" if unit == "%" else f"{op} {bound:g}{unit}",
            "met": None
            if report["figures"].get(name) is None
            else (
                report["figures"][name] >= bound if op == ">=" else report["figures"][name] <= bound
            ),
        }
        for name, (op, bound, unit) in TARGETS.items()
        if name in report["figures"]
    }


def _column_medians(rounds: list[dict[str, float]]) -> dict[str, float | None]:
    return {name: _round(median(r.get(name) for r in rounds)) for name in rounds[0]}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    return round(value, 3 if abs(value) < 100 else 1)


# -- the table ------------------------------------------------------------------------


def _machine_line(report: dict[str, Any]) -> str:
    v, m = report["versions"], report["machine"]
    return (
        f"{m['cores']} cores, {m['system']}; Python {v['python']}, RabbitMQ {v['rabbitmq']} "
        f"(Erlang {v['erlang']}, {'same machine' if m['broker_local'] else 'remote'}), "
        f"aiormq {v['aiormq']}, aio-pika {v['aio-pika']}, pamqp {v['pamqp']}, "
        f"jsonschema-rs {v['jsonschema-rs']}, jsonschema {v['jsonschema']}, "
        f"rabbitry {v['rabbitry']}"
    )


def print_table(report: dict[str, Any]) -> None:
    f, med, s = report["figures"], report["medians"], report["settings"]
    rows: list[tuple[str, str, str, str]] = []

    def add(name: str, shown: str, detail: str) -> None:
        target = report["targets"].get(name)
        met = "" if target is None else ("yes" if target["met"] else "**no**")
        rows.append((f"`{name}`", shown, f"{target['target']} {met}" if target else "", detail))

    fmt: dict[str, Callable[[float], str]] = {
        "x": lambda v: f"{v:.2f}x",
        "%": lambda v: f"{v:.0%}",
        "s": lambda v: f"{v:.2f} s",
        "µs": lambda v: f"{v:.2f} µs",
    }
    if "publish_per_s" in med:
        p = med["publish_per_s"]
        add(
            "publish_vs_aiormq",
            fmt["x"](f["publish_vs_aiormq"]),
            f"`publish_many` {p['rabbitry_many']:,.0f}/s vs aiormq {p['aiormq']:,.0f}/s "
            f"({s['window']} confirmed publishes in flight)",
        )
        add(
            "publish_vs_limit",
            fmt["%"](f["publish_vs_limit"]),
            f"vs the limit {p['limit']:,.0f}/s (pamqp, pre-marshalled frames, "
            f"{messaging.LIMIT_BATCH} a write); the limit is {f['limit_vs_aiormq']:.2f}x aiormq",
        )
        add(
            "publish_calls_vs_aiormq",
            fmt["x"](f["publish_calls_vs_aiormq"]),
            f"{s['window']} concurrent `publish` calls {p['rabbitry']:,.0f}/s "
            f"({f['publish_calls_vs_limit']:.0%} of the limit); "
            f"aio-pika {p['aio_pika']:,.0f}/s",
        )
    if "consume_per_s" in med:
        c = med["consume_per_s"]
        add(
            "consume_vs_aio_pika",
            fmt["x"](f["consume_vs_aio_pika"]),
            f"{c['rabbitry']:,.0f}/s vs aio-pika {c['aio_pika']:,.0f}/s, aiormq "
            f"{c['aiormq']:,.0f}/s ({f['consume_vs_aiormq']:.2f}x); prefetch {s['prefetch']}; "
            f"aiormq's floor (no-op callback, acks 64 at a time) {c['aiormq_floor']:,.0f}/s: "
            f"rabbitry at {f['consume_vs_aiormq_floor']:.0%} of it",
        )
    if "apply" in med:
        a = med["apply"]
        add(
            "apply_vs_import_definitions",
            fmt["x"](f["apply_vs_import_definitions"]),
            f"apply {a['apply']['seconds']:.2f} s vs import {a['import']['seconds']:.2f} s; "
            f"broker CPU {_ms(a['apply'])} vs {_ms(a['import'])} ms/object; "
            f"whole `rabbitry apply` {a['apply_cli']['seconds']:.2f} s "
            f"({f['apply_cli_vs_import_definitions']:.2f}x)",
        )
        add(
            "noop_plan_s",
            fmt["s"](f["noop_plan_s"]),
            "the whole `rabbitry plan` command; in process "
            f"{a['apply']['noop_plan_inprocess_s']:.2f} s",
        )
    if "request_reply" in med:
        r = med["request_reply"]
        for peer in request_reply_bench.SIDES[1:]:
            add(
                f"request_reply_vs_{peer}_in_flight",
                fmt["x"](f[f"request_reply_vs_{peer}_in_flight"]),
                f"{s['in_flight']} requests in flight: rabbitry {r['rabbitry_in_flight']:,.0f}/s "
                f"vs {peer} {r[f'{peer}_in_flight']:,.0f}/s round trips; one at a time "
                f"{r['rabbitry_one']:,.0f} vs {r[f'{peer}_one']:,.0f}/s "
                f"({f[f'request_reply_vs_{peer}_one']:.2f}x); {peer} overlapped "
                f"{r[f'{peer}_overlap']:.1f} of {request_reply_bench.PROBE_REQUESTS} "
                f"slow requests, rabbitry {r['rabbitry_overlap']:.1f}",
            )
    if "tracing" in med:
        t = med["tracing"]
        for mode in tracing_bench.MODES[1:]:
            for name in tracing_bench.FIGURES:
                add(
                    f"tracing_{mode}_vs_off_{name}",
                    fmt["%"](f[f"tracing_{mode}_vs_off_{name}"]),
                    f"`{name}` with tracing {mode} {t[f'{mode}_{name}']:,.0f}/s vs off "
                    f"{t[f'off_{name}']:,.0f}/s; client CPU a message "
                    f"{t[f'{mode}_{name}_cpu_us']:.0f} vs {t[f'off_{name}_cpu_us']:.0f} µs "
                    f"({t[f'{mode}_vs_off_{name}_cpu_us']:.2f}x)",
                )
    if "scale" in report["raw"]:
        sizes = report["raw"]["scale"]
        at = ", ".join(f"{r['queues']:,}: {r['apply_vs_import_definitions']:.2f}x" for r in sizes)
        for step in scale_bench.OFFLINE:
            if f.get(f"scale_{step}_growth") is not None:
                add(
                    f"scale_{step}_growth",
                    fmt["x"](f[f"scale_{step}_growth"]),
                    f"the `rabbitry {step}` command, {scale_bench.GROWTH[0]:,} → "
                    f"{scale_bench.GROWTH[1]:,} queues",
                )
        add(
            "scale_apply_vs_import_definitions",
            fmt["x"](f["scale_apply_vs_import_definitions"]),
            f"the lowest of import ÷ the whole `rabbitry apply` per size ({at})",
        )
        for step in ("check", "route"):
            if f.get(f"scale_{step}_s") is not None:
                add(
                    f"scale_{step}_s",
                    fmt["s"](f[f"scale_{step}_s"]),
                    f"the `rabbitry {step}` command at {scale_bench.GROWTH[1]:,} queues",
                )
    if "validate_us" in med:
        v = med["validate_us"]
        add(
            "validate_us",
            fmt["µs"](f["validate_us"]),
            f"jsonschema {v['jsonschema_us']:.1f} µs ({f['validate_vs_jsonschema']:.0f}x); "
            f"all of `prepare` {v['rabbitry_prepare_us']:.2f} µs",
        )
    print(_machine_line(report))
    print(
        f"{s['repeat']} round(s), medians; {s['messages']:,} messages; "
        f"{s['queues']:,} queues + {s['bindings']:,} bindings + {s['exchanges']} exchanges; "
        f"{report['seconds']:.0f} s in all"
    )
    print()
    header = ("figure", "value", "target", "measured")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---", "--:", "---", "---"]) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def _ms(side: dict[str, Any]) -> str:
    value = side.get("broker_cpu_ms_per_object")
    return "?" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
