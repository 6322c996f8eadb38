"""``rabbitry route``: which queues a message reaches, offline.

A module of its own so that the lookup imports only what it needs (the spec
reader, routing and click): not ``rabbitry.compat`` (``check --against``),
nor the broker layer.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from rabbitry.check import Depth, load_spec
from rabbitry.cli._options import DEFAULT_SPEC, format_option, spec_options
from rabbitry.routing import Destination, route
from rabbitry.spec import Spec
from rabbitry.spec.model import retry_label

__all__ = ["route_command"]


def _parse_header(text: str) -> tuple[str, Any]:
    """One ``--header``: ``NAME=VALUE`` is the string typed, ``NAME:=JSON`` a typed value.

    The broker compares a header's type as well as its value (``"yes"`` is not
    ``true``, ``"1"`` is not ``1``), so what the user typed stays a string
    unless they ask for a type, as httpie does: ``urgent:=true``, ``pages:=1``,
    ``ratio:=0.5``, ``tag:=null`` (void).  ``=`` splits first, so ``a=b:=c``
    is the string ``b:=c``.
    """
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"{text!r} is not NAME=VALUE or NAME:=JSON", param_hint="--header")
    if not name.endswith(":"):
        return name, raw
    name = name[:-1]
    try:
        value = json.loads(raw)
    except ValueError:
        raise click.BadParameter(
            f"{raw!r} is not JSON: write {name}:=true, {name}:=1, {name}:=1.5, {name}:=null, "
            f"{name}:='\"text\"', or {name}={raw} for the string",
            param_hint="--header",
        ) from None
    if not name or not (value is None or isinstance(value, str | int | float | bool)):
        raise click.BadParameter(
            f"{text!r}: a header given as NAME:=JSON is a JSON string, number, true, false or null",
            param_hint="--header",
        )
    return name, value


@click.command("route")
@click.argument("exchange")
@click.argument("key", default="")
@spec_options
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="NAME=VALUE",
    help=(
        "A message header, for headers exchanges (repeatable). NAME=VALUE is always the "
        'string VALUE (urgent=yes is "yes", pages=1 is "1"); NAME:=JSON gives a typed '
        "value: pages:=1, ratio:=0.5, urgent:=true, tag:=null (void)."
    ),
)
@format_option
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
    time says so; a queue with retry: is followed by an indented line naming
    its retry queues. Exit 1 when the message reaches no queue.
    """
    spec = load_spec(spec_option or Path(DEFAULT_SPEC), Depth.TOPOLOGY)
    header_table = dict(_parse_header(h) for h in headers)
    destinations = route(spec, exchange, key, header_table)
    if output_format == "json":
        click.echo(json.dumps([_destination_json(spec, d) for d in destinations], indent=2))
    else:
        for destination in destinations:
            said = "; ".join(map(str, destination.conditions))
            note = f"\t({said})" if said else ""
            click.echo(destination.queue + note)
            retries = _retries(spec, destination.queue)
            if retries:
                shown = ", ".join(f"{name} ({retry_label(delay)})" for delay, name in retries)
                click.echo(f"  retries: {shown} → {destination.queue}")
    if not destinations:
        click.echo(
            f"no queue: a message to {exchange!r} with key {key!r} is returned to a "
            "mandatory publisher, or dropped",
            err=True,
        )
        sys.exit(1)


def _retries(spec: Spec, queue: str) -> tuple[tuple[int, str], ...]:
    """The queue's retry queues, each delay once, in the order of its tries."""
    found = spec.queues.get(queue)
    return tuple(dict.fromkeys(found.retry_queues)) if found is not None else ()


def _destination_json(spec: Spec, destination: Destination) -> dict[str, Any]:
    retries = _retries(spec, destination.queue)
    extra: dict[str, Any] = (
        {"retries": [{"queue": name, "delay_ms": delay} for delay, name in retries]}
        if retries
        else {}  # only then: the output for a spec without retries is as it was
    )
    return {
        "queue": destination.queue,
        "conditions": [
            {"side": c.side.value, "name": c.name, "value": c.value, "text": str(c)}
            for c in destination.conditions
        ],
        "path": [
            {
                "from": b.source,
                "to": b.destination,
                "to_type": b.destination_type,
                "key": b.key,
            }
            for b in destination.path
        ],
        **extra,
    }
