"""``rabbitry check`` (with ``--against``)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from rabbitry.check import Report, check
from rabbitry.cli._options import (
    format_option,
    plural,
    spec_options,
    told,
    which_spec,
)
from rabbitry.compat import Finding, Mode, Verdict, compare, load_against
from rabbitry.errors import InvalidArgument
from rabbitry.spec import Code, Diagnostic, Severity

__all__ = ["check_command"]


@click.command("check")
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@spec_options
@format_option
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
    path = which_spec(spec, spec_option)
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
    except InvalidArgument as exc:
        raise click.UsageError(told(exc)) from None
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
            result.skipped = f"the old spec has {plural(len(old_report.errors), 'error')}"
            result.old_errors = old_report.errors
            return result
        assert old_report.spec is not None
        assert report.spec is not None
        result.findings = compare(old_report.spec, report.spec, mode)
    return result


# Errors that are consequences of routing (a message reaching no queue, ...): a spec with
# only these is still compared, so the breaking change behind them is named too.
_ROUTING_ERRORS = frozenset(
    {
        Code.UNROUTABLE,
        Code.UNROUTED_VALUE,
        Code.UNSENDABLE_VALUE,
        Code.UNREACHABLE_CONSUMER,
        Code.INTERNAL_EXCHANGE,
        Code.RUNTIME_QUEUE,
    }
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
    for hint in report.hints:  # advice: shown, never a failure, --strict or not
        head, _, tail = hint.render().partition(f": {hint.severity}:")
        click.echo(head + click.style(f": {hint.severity}:", fg="cyan") + tail)
    errors, warnings = len(report.errors), len(report.warnings)
    if strict:
        errors, warnings = errors + warnings, 0
    if report.spec is not None and not errors:
        spec = report.spec
        counts = ", ".join(
            plural(len(objects), word)
            for objects, word in (
                (spec.exchanges, "exchange"),
                (spec.queues, "queue"),
                (spec.bindings, "binding"),
                (spec.messages, "message"),
                (spec.services, "service"),
            )
        )
        suffix = f", {plural(warnings, 'warning')}" if warnings else ""
        if report.hints:
            suffix += f", {plural(len(report.hints), 'hint')}"
        click.echo(click.style(f"{path}: ok", fg="green", bold=True) + f" ({counts}){suffix}")
    else:
        summary = f"{path}: {plural(errors, 'error')}, {plural(warnings, 'warning')}"
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
        "hints": [d.as_json() for d in report.hints],
    }
