"""The ``rabbitry`` command line.

Exit codes: 0 fine, 1 problems found or the operation failed, 2 usage error.
Bad input never shows a traceback: every expected failure is a
``RabbitryError`` (or a ``SpecError`` carrying located diagnostics), turned
into one clear message here, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from rabbitry import __version__
from rabbitry._cli_messaging import publish_command, tail_command
from rabbitry.broker import converge
from rabbitry.broker.amqp import DEFAULT_TIMEOUT
from rabbitry.broker.report import plan_lines, summary
from rabbitry.broker.url import DEFAULT_URL, BrokerURL, parse_url
from rabbitry.check import Report, check
from rabbitry.codegen import check_fresh, generate, target
from rabbitry.compat import Finding, Mode, Verdict, compare, load_against
from rabbitry.errors import ContractViolation, DataLossRefused, RabbitryError, SpecError, UsageError
from rabbitry.routing import Destination, route
from rabbitry.spec import Code, Diagnostic, Severity

__all__ = ["main"]

DEFAULT_SPEC = "topology.yaml"

F = TypeVar("F", bound=Callable[..., Any])


def _spec_options(func: F) -> F:
    """``-f/--spec FILE`` on every command that reads the spec."""
    return click.option(
        "-f",
        "--spec",
        "spec_option",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"The spec file [default: ./{DEFAULT_SPEC}].",
    )(func)


def _format_option(func: F) -> F:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Output for people, or JSON for programs.",
    )(func)


def _which_spec(positional: Path | None, option: Path | None) -> Path:
    if positional is not None and option is not None and positional != option:
        raise click.UsageError(f"two specs given: {positional} and -f {option}; pass one")
    return positional or option or Path(DEFAULT_SPEC)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rabbitry")
def cli() -> None:
    """RabbitMQ topology-as-code and message contracts.

    One YAML spec says which exchanges, queues and bindings exist, which
    messages travel where and what each must look like.
    """


# -- check ------------------------------------------------------------------


@cli.command("check")
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@_spec_options
@_format_option
@click.option("--strict", is_flag=True, help="Treat warnings (and unknown changes) as errors.")
@click.option(
    "--against",
    metavar="OLD",
    default=None,
    help="Also find breaking changes from OLD: a spec file, or git:REF[:PATH] "
    "(PATH defaults to this spec's path in the repository).",
)
@click.option(
    "--mode",
    type=click.Choice([m.value for m in Mode]),
    default=None,
    help="With --against: backward (new consumers read old messages), forward (old "
    "consumers read new messages) or full (both) [default: full].",
)
def check_command(
    *,
    spec: Path | None,
    spec_option: Path | None,
    output_format: str,
    strict: bool,
    against: str | None,
    mode: str | None,
) -> None:
    """Run every offline check of the spec; with --against, find breaking changes too.

    Reports every problem as FILE:LINE:COL: SEVERITY: WHAT (WHAT TO DO) [CODE],
    then, with --against, one line per change: VERDICT: SUBJECT PATH: WHY
    [DIRECTION]; counterexample. Exit 0 when clean (warnings and unknown changes
    allowed unless --strict), 1 on errors or a breaking change, 2 on bad usage.
    """
    if mode is not None and against is None:
        raise click.UsageError("--mode applies to --against OLD; pass the old spec too")
    path = _which_spec(spec, spec_option)
    report = check(path)
    compat = _compare_against(path, report, against, Mode(mode or Mode.FULL)) if against else None
    failed = bool(report.errors) or (strict and bool(report.warnings))
    if compat is not None:
        failed = failed or compat.failed(strict)
    if output_format == "json":
        data = _report_json(path, report, failed, strict)
        if compat is not None:
            data["against"] = compat.as_json()
        click.echo(json.dumps(data, indent=2))
    else:
        _print_report(path, report, strict)
        if compat is not None:
            compat.print()
    sys.exit(1 if failed else 0)


@dataclass
class _Compat:
    """What ``check --against`` found, or why it could not compare."""

    old: str
    mode: Mode
    findings: list[Finding] = field(default_factory=list)
    #: Why nothing was compared (the new or the old spec has errors), else "".
    skipped: str = ""
    old_errors: tuple[Diagnostic, ...] = ()
    #: (temporary folder, how to name it): the old spec's diagnostics name git, not /tmp.
    rename: tuple[str, str] = ("", "")

    def renamed(self, text: str) -> str:
        folder, name = self.rename
        return text.replace(folder, name) if folder else text

    def render(self, diagnostic: Diagnostic) -> str:
        return self.renamed(diagnostic.render())

    def count(self, verdict: Verdict) -> int:
        return sum(1 for f in self.findings if f.verdict is verdict)

    def failed(self, strict: bool) -> bool:
        unknown = strict and self.count(Verdict.UNKNOWN) > 0
        return bool(self.old_errors) or self.count(Verdict.BREAKING) > 0 or unknown

    def summary(self) -> str:
        counts = ", ".join(f"{self.count(v)} {v}" for v in Verdict)
        return f"against {self.old} (mode {self.mode}): {counts}"

    def print(self) -> None:
        if self.skipped:
            click.echo(click.style(f"against {self.old}: {self.skipped}", fg="red"), err=True)
            for diagnostic in self.old_errors:
                click.echo(f"  {self.render(diagnostic)}", err=True)
            return
        colours = {Verdict.BREAKING: "red", Verdict.UNKNOWN: "yellow", Verdict.COMPATIBLE: "green"}
        for finding in self.findings:
            line = finding.line()
            head, sep, tail = line.partition(":")
            click.echo(click.style(head, fg=colours[finding.verdict], bold=True) + sep + tail)
        colour = "red" if self.count(Verdict.BREAKING) else "green"
        click.echo(click.style(self.summary(), fg=colour, bold=True))

    def as_json(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "mode": str(self.mode),
            "compared": not self.skipped,
            "skipped": self.skipped,
            "old_errors": [
                {k: self.renamed(v) if isinstance(v, str) else v for k, v in d.as_json().items()}
                for d in self.old_errors
            ],
            **{str(v): self.count(v) for v in Verdict},
            "findings": [f.as_json() for f in self.findings],
        }


def _compare_against(path: Path, report: Report, against: str, mode: Mode) -> _Compat:
    """Load OLD (a file or git:REF[:PATH]) and compare it with the checked spec."""
    try:
        old_path, display, keep = load_against(against, path)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    if keep is None and not old_path.is_file():
        raise click.UsageError(
            f"--against {against}: no spec file there; pass a file or git:REF[:PATH]"
        )
    result = _Compat(display, mode)
    if keep is not None:
        result.rename = (str(Path(keep.folder.name).resolve()) + os.sep, f"git:{keep.commit[:12]}:")
    with keep.folder if keep is not None else contextlib.nullcontext():
        if not _comparable(report):
            result.skipped = "not compared: fix the errors of the new spec first"
            return result
        old_report = check(old_path)
        if not _comparable(old_report):
            result.skipped = f"the old spec has {_plural(len(old_report.errors), 'error')}"
            result.old_errors = old_report.errors
            return result
        assert old_report.spec is not None
        assert report.spec is not None
        result.findings = compare(old_report.spec, report.spec, mode)
    return result


# Errors that are consequences of routing (a message reaching no queue, ...): a spec with
# only these is still compared, so the breaking change behind them is named too.
_ROUTING_ERRORS = frozenset(
    {Code.UNROUTABLE, Code.UNREACHABLE_CONSUMER, Code.INTERNAL_EXCHANGE, Code.RUNTIME_QUEUE}
)


def _comparable(report: Report) -> bool:
    return (
        report.spec is not None
        and report.spec.complete
        and all(d.code in _ROUTING_ERRORS for d in report.errors)
    )


def _print_report(path: Path, report: Report, strict: bool) -> None:
    for diagnostic in report.diagnostics:
        severity = Severity.ERROR if strict else diagnostic.severity
        colour = "red" if severity is Severity.ERROR else "yellow"
        line = diagnostic.render(severity=severity)
        head, _, tail = line.partition(f": {severity}:")
        click.echo(head + click.style(f": {severity}:", fg=colour, bold=True) + tail)
    errors, warnings = len(report.errors), len(report.warnings)
    if strict:
        errors, warnings = errors + warnings, 0
    if report.spec is not None and not errors:
        spec = report.spec
        counts = ", ".join(
            _plural(len(objects), word)
            for objects, word in (
                (spec.exchanges, "exchange"),
                (spec.queues, "queue"),
                (spec.bindings, "binding"),
                (spec.messages, "message"),
                (spec.services, "service"),
            )
        )
        suffix = f", {_plural(warnings, 'warning')}" if warnings else ""
        click.echo(click.style(f"{path}: ok", fg="green", bold=True) + f" ({counts}){suffix}")
    else:
        summary = f"{path}: {_plural(errors, 'error')}, {_plural(warnings, 'warning')}"
        click.echo(click.style(summary, fg="red", bold=True), err=True)


def _report_json(path: Path, report: Report, failed: bool, strict: bool) -> dict[str, Any]:
    def entry(d: Diagnostic) -> dict[str, Any]:
        data = d.as_json()
        if strict:
            data["severity"] = str(Severity.ERROR)
        return data

    return {
        "spec": str(path),
        "ok": not failed,
        "errors": len(report.errors) + (len(report.warnings) if strict else 0),
        "warnings": 0 if strict else len(report.warnings),
        "diagnostics": [entry(d) for d in report.diagnostics],
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# -- route ------------------------------------------------------------------


def _parse_header(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"{text!r} is not NAME=VALUE", param_hint="--header")
    # Values read as the spec reads them: 5 is a number, "5" (quoted) a string.
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    if not isinstance(value, str | int | float | bool) and value is not None:
        value = raw
    return name, value


@cli.command("route")
@click.argument("exchange")
@click.argument("key", default="")
@_spec_options
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="NAME=VALUE",
    help="A message header, for headers exchanges (repeatable). 5 is a number, '\"5\"' a string.",
)
@_format_option
def route_command(
    *,
    exchange: str,
    key: str,
    spec_option: Path | None,
    headers: Sequence[str],
    output_format: str,
) -> None:
    """Which queues a message published to EXCHANGE with KEY reaches, offline.

    One queue per line; a queue reached only through a binding made at run
    time says so. Exit 1 when the message reaches no queue.
    """
    spec = _load_for_command(spec_option or Path(DEFAULT_SPEC))
    header_table = dict(_parse_header(h) for h in headers)
    destinations = route(spec, exchange, key, header_table)
    if output_format == "json":
        click.echo(json.dumps([_destination_json(d) for d in destinations], indent=2))
    else:
        for destination in destinations:
            note = f"\t({'; '.join(destination.conditions)})" if destination.conditions else ""
            click.echo(destination.queue + note)
    if not destinations:
        click.echo(
            f"no queue: a message to {exchange!r} with key {key!r} is returned to a "
            "mandatory publisher, or dropped",
            err=True,
        )
        sys.exit(1)


def _destination_json(destination: Destination) -> dict[str, Any]:
    return {
        "queue": destination.queue,
        "conditions": list(destination.conditions),
        "path": [
            {
                "from": b.source,
                "to": b.destination,
                "to_type": b.destination_type,
                "key": b.key,
            }
            for b in destination.path
        ],
    }


def _load_for_command(path: Path) -> Any:
    """The spec, for commands that use it: its errors stop the command with exit 1."""
    report = check(path)
    if report.spec is None or report.errors:
        raise SpecError(report.errors)
    return report.spec


# -- generate ----------------------------------------------------------------


@cli.command("generate")
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@_spec_options
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The package's folder [default: the spec's codegen.out, relative to the spec's folder].",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; exit 1 naming each stale, missing or extra file (for CI).",
)
@_format_option
def generate_command(
    *,
    spec: Path | None,
    spec_option: Path | None,
    out: Path | None,
    check_only: bool,
    output_format: str,
) -> None:
    """Generate the spec's typed Python package: messages, clients, strategies.

    The package is named by the spec's `codegen: {package, out}`. Only files
    whose text changes are written; the output depends on the spec and its
    schemas alone. Exit 0 when done (or, with --check, up to date), 1 when
    stale or on errors, 2 when the spec says nowhere to generate to.
    """
    path = _which_spec(spec, spec_option)
    model = _load_for_command(path)
    try:
        folder, package = target(model, out)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    if check_only:
        fresh = check_fresh(model, out)
        problems = {"stale": fresh.stale, "missing": fresh.missing, "extra": fresh.extra}
        if output_format == "json":
            data = {"spec": str(path), "out": str(folder), "package": package, "fresh": fresh.fresh}
            click.echo(json.dumps({**data, **_paths_json(problems)}, indent=2))
        elif fresh.fresh:
            up_to_date = click.style(f"{folder}: up to date", fg="green", bold=True)
            click.echo(f"{up_to_date} with {path}")
        else:
            for kind, paths in problems.items():
                for file in paths:
                    click.echo(f"{kind}: {file}")
            click.echo(
                click.style(f"{folder} is out of date with {path}", fg="red", bold=True)
                + ": run `rabbitry generate`",
                err=True,
            )
        sys.exit(0 if fresh.fresh else 1)
    done = generate(model, out)
    files = {
        "written": done.written,
        "unchanged": done.unchanged,
        "removed": done.removed,
        "foreign": done.foreign,
    }
    if output_format == "json":
        data = {"spec": str(path), "out": str(folder), "package": package}
        click.echo(json.dumps({**data, **_paths_json(files)}, indent=2))
        return
    for file in done.written:
        click.echo(f"wrote {file}")
    for file in done.removed:
        click.echo(f"removed {file} (no longer generated)")
    for file in done.foreign:
        click.echo(click.style(f"left alone: {file} (not generated by rabbitry)", fg="yellow"))
    total = len(done.written) + len(done.unchanged)
    click.echo(
        click.style(f"{folder}: package {package!r}", fg="green", bold=True)
        + f" ({_plural(total, 'file')}, {len(done.written)} written)"
    )


def _paths_json(groups: dict[str, tuple[Path, ...]]) -> dict[str, list[str]]:
    return {kind: [str(p) for p in paths] for kind, paths in groups.items()}


# -- plan and apply ---------------------------------------------------------------


def _broker_options(func: F) -> F:
    """``--url``, ``--management-url`` and ``--timeout``: where the broker is."""
    func = click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        help="Seconds any one broker call may take.",
    )(func)
    func = click.option(
        "--management-url",
        metavar="URL",
        default=None,
        help="The management HTTP API [default: http://HOST:15672, from --url].",
    )(func)
    return click.option(
        "--url",
        metavar="URL",
        default=None,
        help=f"The broker; its path is the vhost [default: $RABBITRY_URL, then {DEFAULT_URL}].",
    )(func)


_PRUNE_HELP = (
    "Treat the vhost as owned by the spec: also delete every exchange, queue and binding "
    "the spec does not have (amq.*, the default exchange and run-time objects excepted)."
)


@cli.command("plan")
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@_spec_options
@_broker_options
@click.option("--prune", is_flag=True, help=_PRUNE_HELP)
@_format_option
def plan_command(
    *,
    spec: Path | None,
    spec_option: Path | None,
    url: str | None,
    management_url: str | None,
    timeout: float,
    prune: bool,
    output_format: str,
) -> None:
    """Show what apply would change on the live broker; change nothing.

    Exit 0 when the broker matches the spec, 3 when changes are pending, 1 on errors.
    """
    model = _load_for_command(_which_spec(spec, spec_option))
    target = parse_url(url, management=management_url)
    planned = asyncio.run(converge.plan(model, target, prune=prune, timeout=timeout))
    if output_format == "json":
        click.echo(json.dumps(_plan_json(target, planned), indent=2))
    else:
        _print_plan(target, planned)
    sys.exit(0 if planned.plan.empty else 3)


@cli.command("apply")
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@_spec_options
@_broker_options
@click.option("--prune", is_flag=True, help=_PRUNE_HELP)
@click.option(
    "--allow-data-loss",
    is_flag=True,
    help="Allow deleting or replacing queues that hold messages or have consumers.",
)
@_format_option
def apply_command(
    *,
    spec: Path | None,
    spec_option: Path | None,
    url: str | None,
    management_url: str | None,
    timeout: float,
    prune: bool,
    allow_data_loss: bool,
    output_format: str,
) -> None:
    """Converge the broker to the spec: exchanges, queues, bindings, then deletions.

    Idempotent: a second run changes nothing. A queue that holds messages or has
    consumers is never deleted or replaced without --allow-data-loss.
    """
    model = _load_for_command(_which_spec(spec, spec_option))
    target = parse_url(url, management=management_url)
    with _progress(enabled=output_format == "text") as progress:
        done = asyncio.run(
            converge.apply(
                model,
                target,
                prune=prune,
                allow_data_loss=allow_data_loss,
                timeout=timeout,
                progress=progress,
            )
        )
    if output_format == "json":
        data = _plan_json(target, done.planned)
        data["applied"] = done.result.applied
        data["seconds"] = round(done.result.seconds, 3)
        click.echo(json.dumps(data, indent=2))
        return
    _print_plan(target, done.planned, applied=True)
    if not done.planned.plan.empty:
        click.echo(
            f"applied {_plural(done.result.applied, 'change')} in {done.result.seconds:.2f} s"
        )


_SOURCES = {"management": "the management API", "amqp": "passive declares over AMQP"}


def _print_plan(target: BrokerURL, planned: converge.Planned, *, applied: bool = False) -> None:
    live, plan = planned.live, planned.plan
    where = f"vhost {target.vhost!r} at {target.endpoint}"
    how = _SOURCES.get(live.source, live.source)
    click.echo(f"{'Applied to' if applied else 'Plan for'} {where} (read through {how}):")
    for note in live.blind_spots:
        click.echo(click.style(f"  note: {note}", fg="yellow"))
    if plan.empty:
        click.echo(click.style("  in sync: nothing to change", fg="green"))
    else:
        for line in plan_lines(plan):
            colour = {"+": "green", "~": "yellow", "-": "red"}.get(line.strip()[:1])
            click.echo(click.style(line, fg=colour) if line.startswith("  ") else line)
    if plan.unmanaged or not plan.empty:
        click.echo(summary(plan))


def _plan_json(target: BrokerURL, planned: converge.Planned) -> dict[str, Any]:
    return {
        "broker": target.masked,
        "vhost": target.vhost,
        "source": planned.live.source,
        "blind_spots": list(planned.live.blind_spots),
        "in_sync": planned.plan.empty,
        "counts": planned.plan.counts(),
        "changes": [c.as_json() for c in planned.plan.changes],
        "unmanaged": list(planned.plan.unmanaged),
    }


@contextlib.contextmanager
def _progress(*, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr when it is a terminal and the apply is long; else nothing."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    # Only for terminals: keep start-up light.
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import Progress  # noqa: PLC0415

    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("applying", total=None)

        def report(done: int, total: int) -> None:
            if total >= _PROGRESS_THRESHOLD:
                bar.update(task, completed=done, total=total)

        yield report


_PROGRESS_THRESHOLD = 200


# -- publish and tail ------------------------------------------------------------

cli.add_command(publish_command)
cli.add_command(tail_command)


# -- entry point --------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: run the CLI, mapping every expected failure to a message."""
    # aiormq logs what it also raises; the raised error is reported once, below.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="rabbitry",
            standalone_mode=False,
        )
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SpecError as exc:
        for diagnostic in exc.diagnostics:
            click.echo(diagnostic.render(), err=True)
        click.echo(
            f"the spec has {_plural(len(exc.diagnostics), 'error')}; "
            "`rabbitry check` shows them all",
            err=True,
        )
        sys.exit(1)
    except ContractViolation as exc:
        click.echo(
            f"error: {exc.message_name} does not fit its schema; nothing was sent:", err=True
        )
        for fault in exc.faults:
            click.echo(f"  {fault}", err=True)
        sys.exit(1)
    except DataLossRefused as exc:
        click.echo(f"refused: {exc}", err=True)
        sys.exit(1)
    except RabbitryError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        if os.environ.get("RABBITRY_DEBUG"):
            raise
        click.echo(
            f"internal error: {type(exc).__name__}: {exc} — this is a bug in rabbitry; "
            "rerun with RABBITRY_DEBUG=1 for the traceback and report it",
            err=True,
        )
        sys.exit(70)
