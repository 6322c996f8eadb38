"""``rabbitry publish`` and ``rabbitry tail``: the runtime from the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from rabbitry.broker.url import parse_url
from rabbitry.cli._options import connection_options, load_for_command, spec_options, which_spec
from rabbitry.errors import UsageError
from rabbitry.messaging.client import Client
from rabbitry.messaging.contract import Contract
from rabbitry.messaging.peek import Peeked, peek

__all__ = ["publish_command", "tail_command"]


def _payload(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--json") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@click.command("publish")
@click.argument("message")
@click.option("--json", "payload_text", required=True, metavar="JSON", help="The message body.")
@spec_options
@connection_options
def publish_command(
    *,
    message: str,
    payload_text: str,
    spec_option: Path | None,
    url: str | None,
    timeout: float,
) -> None:
    """Validate MESSAGE's JSON against its schema, then publish it with confirms.

    Nothing is sent when it does not fit (exit 1, naming the field); a message
    that no queue takes is an error too.
    """
    contract = Contract.from_spec(load_for_command(which_spec(None, spec_option)))
    payload = _payload(payload_text)
    target = contract.message(message)
    target.validate(payload)  # before connecting: an invalid message never needs a broker
    if not isinstance(payload, dict):
        raise UsageError(f"{message} must be a JSON object")

    async def send() -> None:
        async with Client(contract, parse_url(url), connect_timeout=timeout, timeout=timeout) as c:
            await c.publish(message, payload, timeout=timeout)

    asyncio.run(send())
    key = target.routing_key_for(payload)
    click.echo(f"published {message} to {target.exchange!r} with key {key!r} (confirmed)")


@click.command("tail")
@click.argument("queue")
@spec_options
@connection_options
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N messages.")
@click.option(
    "--idle",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Stop after this many seconds without a message.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One line per message for people, or JSON lines.",
)
def tail_command(
    *,
    queue: str,
    spec_option: Path | None,
    url: str | None,
    timeout: float,
    count: int | None,
    idle: float,
    output_format: str,
) -> None:
    """Print what QUEUE holds and what arrives on it, with each message's validity.

    Nothing is taken: every message is back in the queue when tail stops
    (marked redelivered). Exit 1 when any message is invalid.
    """
    contract = Contract.from_spec(load_for_command(which_spec(None, spec_option)))
    contract.queue(queue)  # a queue the spec does not have is a usage error
    invalid = 0

    def show(item: Peeked) -> None:
        nonlocal invalid
        invalid += not item.valid
        if output_format == "json":
            click.echo(json.dumps(item.as_json()))
        else:
            click.echo(_line(item))

    seen = asyncio.run(
        peek(contract, parse_url(url), queue, show, count=count, idle=idle, timeout=timeout)
    )
    if output_format == "text":
        click.echo(
            f"{seen} message(s) in {queue!r}, {invalid} invalid; all left in the queue", err=True
        )
    if invalid:
        raise SystemExit(1)


def _line(item: Peeked) -> str:
    verdict = (
        click.style("valid", fg="green")
        if item.valid
        else click.style(f"INVALID: {item.problem}", fg="red")
    )
    parts = [f"#{item.number}", item.type or "(no type)", verdict, f"key={item.routing_key!r}"]
    if item.dead_letter_reason:
        parts.append(click.style(f"dead-lettered: {item.dead_letter_reason}", fg="yellow"))
    body = item.body.decode("utf-8", errors="replace")
    parts.append(body if len(body) <= 200 else body[:197] + "...")
    return "  ".join(parts)
