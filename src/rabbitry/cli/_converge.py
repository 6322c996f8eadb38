"""``rabbitry plan`` and ``rabbitry apply``: the live broker against the spec."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rabbitry import _gc
from rabbitry.broker import converge
from rabbitry.broker.converge import Converged
from rabbitry.broker.endpoints import Endpoints
from rabbitry.broker.live import BlindSpot
from rabbitry.broker.plan import version_findings
from rabbitry.broker.report import (
    plan_lines,
    settings_json,
    settings_lines,
    summary,
    unseen_lines,
)
from rabbitry.broker.url import BrokerURL
from rabbitry.check import load_spec
from rabbitry.cli._options import (
    broker_options,
    endpoints,
    format_option,
    plural,
    said,
    spec_options,
    which_spec,
)

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

    from rabbitry.spec import Spec

__all__ = ["apply_command", "plan_command"]


_PRUNE_HELP = (
    "Treat the vhost as owned by the spec: also delete every exchange, queue and binding "
    "the spec does not have (amq.*, the default exchange and run-time objects excepted)."
)


@click.command("plan")
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@spec_options
@broker_options
@click.option("--prune", is_flag=True, help=_PRUNE_HELP)
@format_option
def plan_command(
    *,
    spec: Path | None,
    spec_option: Path | None,
    url: tuple[str, ...],
    management_url: str | None,
    timeout: float,
    prune: bool,
    output_format: str,
) -> None:
    """Show what apply would change on the live broker; change nothing.

    Exit 0 only when everything the spec declares was seen and matches; 3 when
    changes are pending; 1 on errors, and when something the spec declares could
    not be seen (read over AMQP, bindings and policies are not visible; in a
    cluster, a queue whose node is down and its bindings).
    """
    path = which_spec(spec, spec_option)
    brokers = endpoints(url, management_url)

    async def planning() -> tuple[Spec, converge.Planned]:
        model, looked = await _read_both(path, brokers, timeout)
        return model, await converge.plan(
            model, brokers, prune=prune, timeout=timeout, looked=looked
        )

    with _gc.paused():
        model, planned = asyncio.run(planning())
    target = planned.url
    _say_version_findings(model, planned)
    unverified = planned.live.unverified(model)
    if output_format == "json":
        click.echo(json.dumps(_plan_json(target, planned, unverified), indent=2))
    else:
        _print_plan(target, planned, unverified=unverified)
    if not planned.plan.empty:
        sys.exit(3)
    sys.exit(1 if unverified or planned.plan.unseen else 0)


@click.command("apply")
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@spec_options
@broker_options
@click.option("--prune", is_flag=True, help=_PRUNE_HELP)
@click.option(
    "--allow-data-loss",
    is_flag=True,
    help="Allow deleting or replacing queues that hold messages or have consumers.",
)
@click.option(
    "--migrate",
    is_flag=True,
    help=(
        "Replace a queue that holds messages or has consumers without losing any: its "
        "messages move to a temporary queue and back with confirms, its bindings stay."
    ),
)
@format_option
def apply_command(
    *,
    spec: Path | None,
    spec_option: Path | None,
    url: tuple[str, ...],
    management_url: str | None,
    timeout: float,
    prune: bool,
    allow_data_loss: bool,
    migrate: bool,
    output_format: str,
) -> None:
    """Converge the broker to the spec: exchanges, queues, bindings, then deletions.

    Idempotent: a second run changes nothing. A queue that holds messages or has
    consumers is never deleted or replaced without --allow-data-loss.

    In a cluster, a queue whose node is down and its bindings cannot be seen nor
    declared: apply leaves them alone, carries out the rest, says so and exits 3
    (not converged: run it again once the node is back).
    """
    path = which_spec(spec, spec_option)
    brokers = endpoints(url, management_url)

    async def applying(progress: Callable[[int, int], None] | None) -> tuple[Spec, Converged]:
        model, looked = await _read_both(path, brokers, timeout)
        return model, await converge.apply(
            model,
            brokers,
            prune=prune,
            allow_data_loss=allow_data_loss,
            migrate=migrate,
            timeout=timeout,
            progress=progress,
            looked=looked,
        )

    with _gc.paused(), _progress(enabled=output_format == "text") as progress:
        model, done = asyncio.run(applying(progress))
    target = done.planned.url
    _say_version_findings(model, done.planned)
    unverified = done.planned.live.unverified(model)
    if output_format == "json":
        data = _plan_json(target, done.planned, unverified)
        data["applied"] = done.result.applied
        data["seconds"] = round(done.result.seconds, 3)
        data["migrations"] = [
            {
                "queue": m.queue,
                "temporary": m.temporary,
                "moved_out": m.moved_out,
                "moved_back": m.moved_back,
                "bindings": m.bindings,
                "seconds": round(m.seconds, 3),
            }
            for m in done.result.migrations
        ]
        click.echo(json.dumps(data, indent=2))
        sys.exit(_LEFT_UNSEEN if done.planned.plan.unseen else 0)
    _print_plan(target, done.planned, unverified=unverified, applied=True)
    for m in done.result.migrations:
        click.echo(
            f"migrated queue {m.queue}: {plural(m.moved_out, 'message')} moved out to "
            f"{m.temporary} and {m.moved_back} back, {plural(m.bindings, 'binding')} kept, "
            f"in {m.seconds:.2f} s"
        )
    if not done.planned.plan.empty:
        click.echo(
            f"applied {plural(done.result.applied, 'change')} in {done.result.seconds:.2f} s"
        )
    unseen = done.planned.plan.unseen
    if unseen:
        nodes = ", ".join(sorted({u.node for u in unseen}))
        click.echo(
            click.style(
                f"not converged: {plural(len(unseen), 'object')} left alone, not seen because "
                f"their node is down ({nodes}); run apply again once it is back",
                fg="red",
            )
        )
        sys.exit(_LEFT_UNSEEN)


#: apply's exit code when it left objects it could not see (their node is down): what
#: it could see is converged, the rest is not verified; 1 stays "failed", 0 "converged".
_LEFT_UNSEEN = 3


_SOURCES = {"management": "the management API", "amqp": "passive declares over AMQP"}


def _print_plan(
    target: BrokerURL,
    planned: converge.Planned,
    *,
    unverified: tuple[BlindSpot, ...],
    applied: bool = False,
) -> None:
    # One write of the whole text: click.echo flushes each line, and a plan of 20,000
    # queues has some 60,000 lines (0.55 s → 0.2 s to /dev/null, measured there).
    lines: list[str] = []
    say = lines.append
    live, plan = planned.live, planned.plan
    where = f"vhost {target.vhost!r} at {target.endpoint}"
    how = _SOURCES.get(live.source, live.source)
    say(f"{'Applied to' if applied else 'Plan for'} {where} (read through {how}):")
    if live.version is not None:
        say(f"  broker: RabbitMQ {live.version}")
    if live.management is not None:
        say(f"  management API: {live.management}")
    if live.fallback is not None:
        say(click.style(f"  note: {said(live.fallback)}", fg="yellow"))
    for spot in live.blind_spots:
        say(click.style(f"  note: {spot.describe()}", fg="yellow"))
    if plan.empty and unverified:
        unseen = ", ".join(spot.value for spot in unverified)
        say(
            click.style(
                f"  not verified: no difference seen, but {unseen} could not be seen; "
                "give plan the management API (rabbitmq-plugins enable rabbitmq_management, "
                "or --management-url) to verify",
                fg="red",
            )
        )
    elif plan.empty and plan.unseen:
        say(
            click.style(
                "  not verified: no difference seen in what could be seen, but the objects "
                "below are on a node that is down",
                fg="red",
            )
        )
    elif plan.empty:
        say(click.style("  in sync: nothing to change", fg="green"))
    else:
        for line in plan_lines(plan):
            colour = {"+": "green", "~": "yellow", "-": "red"}.get(line.strip()[:1])
            say(click.style(line, fg=colour) if line.startswith("  ") else line)
    for line in unseen_lines(plan):
        say(click.style(line, fg="red"))
    settings = settings_lines(plan)
    if settings:
        pending = not applied and not plan.empty
        say("Effective settings" + (" (after apply):" if pending else ":"))
        for line in settings:
            say(line)
    if plan.unmanaged or plan.unseen or not plan.empty:
        say(summary(plan))
    click.echo("\n".join(lines))


def _say_version_findings(model: Spec, planned: converge.Planned) -> None:
    """What the broker's version ignores or changes (spec.rabbitmq4; what it refuses
    has already stopped plan), on stderr as ``check`` words it."""
    for finding in version_findings(model, planned.live):
        click.echo(finding.render(), err=True)


def _plan_json(
    target: BrokerURL, planned: converge.Planned, unverified: tuple[BlindSpot, ...]
) -> dict[str, Any]:
    return {
        "broker": target.masked,
        "vhost": target.vhost,
        "source": planned.live.source,
        "management_url": planned.live.management,
        "rabbitmq_version": planned.live.version,
        "fallback_reason": said(planned.live.fallback) if planned.live.fallback else None,
        "blind_spots": [
            {"code": spot.value, "text": spot.describe()} for spot in planned.live.blind_spots
        ],
        "unverified": [spot.value for spot in unverified],
        "in_sync": planned.plan.empty and not unverified and not planned.plan.unseen,
        "counts": planned.plan.counts(),
        "changes": [c.as_json() for c in planned.plan.changes],
        "unmanaged": list(planned.plan.unmanaged),
        # Objects on a cluster node that is down: left alone by apply, not verified.
        "unseen": [u.as_json() for u in planned.plan.unseen],
        "settings": settings_json(planned.plan),
    }


async def _read_both(
    path: Path, brokers: Endpoints, timeout: float
) -> tuple[Spec, converge.Looked]:
    """The spec, read and checked in a thread, and meanwhile the vhost (``converge.look``).

    They do not depend on each other, and the broker would otherwise wait for
    the spec (seconds at thousands of queues).  A spec with errors is raised
    (and the read dropped) before anything else; then a failed read.
    """
    looking = asyncio.create_task(converge.look(brokers, timeout=timeout))
    try:
        model = await asyncio.to_thread(load_spec, path)
    except BaseException:
        looking.cancel()
        await asyncio.gather(looking, return_exceptions=True)
        raise
    return model, await looking


@contextlib.contextmanager
def _progress(*, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr when it is a terminal and the apply is long; else nothing.

    click's bar needs its length, which the first report gives: it is made then.
    """
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    with contextlib.ExitStack() as stack:
        bars: list[ProgressBar[int]] = []

        def report(done: int, total: int) -> None:
            if total < _PROGRESS_THRESHOLD:
                return
            if not bars:
                bar = click.progressbar(length=total, label="applying", file=sys.stderr)
                bars.append(stack.enter_context(bar))
            bars[0].update(done - bars[0].pos)

        yield report


_PROGRESS_THRESHOLD = 200
