"""``rabbitry publish`` and ``rabbitry tail``: the runtime from the command line.

tail's output: one line per message on stdout (text, or a JSON object per
line), then what the look did on stderr (a sentence, or one JSON object with
``--format json``), so that a program reading stdout sees messages only.

Everything of a message is the publisher's choice (its type, body and routing
key, and the ``x-death`` and ``x-rabbitry-*`` headers, which anyone may
forge), so the text output shows each such value through
``_untrusted.shown``: a newline, carriage return or escape sequence in it is
shown escaped and cannot make a line of its own or reach the terminal.  A
message is exactly the lines its JSON says it is: one, one per ``x-death``
entry, one for rabbitry's reason (and one for what the look spent).  The JSON
output keeps every value whole; the encoder escapes it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from rabbitry._untrusted import shown
from rabbitry.broker.endpoints import first_answering
from rabbitry.check import Depth, load_spec
from rabbitry.cli._options import (
    FLAGS,
    broker_options,
    connection_options,
    endpoints,
    plural,
    spec_options,
    which_spec,
)
from rabbitry.errors import Option, UsageError
from rabbitry.messaging._tail_cost import Cost, QueueFacts, read_facts
from rabbitry.messaging._xdeath import Death, RabbitryReason
from rabbitry.messaging.client import Client
from rabbitry.messaging.contract import Contract
from rabbitry.messaging.peek import Peeked, PeekOutcome, peek

__all__ = ["publish_command", "tail_command"]

SPEND_FLAG = FLAGS[Option.SPEND_DELIVERY]
#: Characters of a body shown on its message's line.
BODY_SHOWN = 200
#: Routing keys of an ``x-death`` entry, and faults of a rabbitry reason, shown on its line
#: (a forged header may hold thousands).
KEYS_SHOWN = 10
FAULTS_SHOWN = 10


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
    url: tuple[str, ...],
    timeout: float,
) -> None:
    """Validate MESSAGE's JSON against its schema, then publish it with confirms.

    Nothing is sent when it does not fit (exit 1, naming the field); a message
    that no queue takes is an error too.
    """
    contract = Contract.from_spec(load_spec(which_spec(None, spec_option), Depth.CONTRACT))
    payload = _payload(payload_text)
    target = contract.message(message)
    target.validate(payload)  # before connecting: an invalid message never needs a broker
    if not isinstance(payload, dict):
        raise UsageError(f"{message} must be a JSON object")
    brokers = endpoints(url)

    async def send() -> None:
        async with Client(contract, brokers, connect_timeout=timeout, timeout=timeout) as c:
            await c.publish(message, payload, timeout=timeout)

    asyncio.run(send())
    key = target.routing_key_for(payload)
    click.echo(f"published {message} to {target.exchange!r} with key {key!r} (confirmed)")


@click.command("tail")
@click.argument("queue")
@spec_options
@broker_options
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
@click.option(
    SPEND_FLAG,
    "spend_delivery",
    is_flag=True,
    default=False,
    help=(
        "Look at a quorum queue (or a queue whose type the management API did not tell) "
        "although every look counts as a delivery attempt there: x-delivery-count + 1 per "
        "message, and a message at its delivery limit is dead-lettered by the look."
    ),
)
def tail_command(
    *,
    queue: str,
    spec_option: Path | None,
    url: tuple[str, ...],
    management_url: str | None,
    timeout: float,
    count: int | None,
    idle: float,
    output_format: str,
    spend_delivery: bool,
) -> None:
    """Print what QUEUE holds and what arrives on it, with each message's validity.

    Takes nothing, and spends no delivery attempt unless told to.  A stream is
    read from its first offset.  A classic queue's messages go back to their
    place, marked redelivered.  A quorum queue counts every look as a delivery
    attempt, so tail refuses it unless --spend-delivery is given; then each
    message says its x-delivery-count and how many deliveries it has left.
    The queue's type comes from the management API; when that does not answer
    the type is unknown and treated like a quorum queue's.

    Each message shows why it was dead-lettered: the broker's x-death entries
    (expired, rejected, maxlen, delivery_limit) and a rabbitry consumer's
    reason.  At the end tail reads the queue's ready count back and says
    whether everything it saw is in the queue again.  Exit 1 when any message
    is invalid.
    """
    spec = load_spec(which_spec(None, spec_option), Depth.CONTRACT)
    contract = Contract.from_spec(spec)
    contract.queue(queue)  # a queue the spec does not have is a usage error
    if spec.queues[queue].runtime:
        # Its consumer declares it with a name the server picks, exclusive to that
        # connection: the broker has no queue by the spec's name, and no other
        # connection may read it. "No queue" would send the user looking for a fault.
        raise UsageError(
            f"queue {queue!r} is a run-time queue (exclusive: true): each consumer declares "
            "its own, exclusive to its connection, with a name the server picks (amq.gen-...), "
            "so there is no queue by that name to tail and no other connection may read one; "
            "see them with `rabbitmqctl list_queues name exclusive consumers` or the "
            "management UI's Queues page, and what reaches them with `rabbitry route`"
        )
    brokers = endpoints(url, management_url)
    target = asyncio.run(first_answering(brokers, timeout=timeout, management=True))
    spec_type = spec.queues[queue].type.value
    facts = asyncio.run(read_facts(target, queue, spec_type, timeout=timeout))
    if drift := facts.drift():
        click.echo(f"warning: {drift}", err=True)
    if facts.spends_delivery and spend_delivery and output_format == "text":
        click.echo(f"warning: {facts.what_a_look_costs()}; looking anyway ({SPEND_FLAG})", err=True)
    invalid = 0

    def show(item: Peeked) -> None:
        nonlocal invalid
        invalid += not item.valid
        if output_format == "json":
            click.echo(json.dumps(item.as_json(), default=_plain))
        else:
            click.echo(_lines(item, facts))

    outcome = asyncio.run(
        peek(
            contract,
            target,
            facts,
            show,
            count=count,
            idle=idle,
            timeout=timeout,
            spend_delivery=spend_delivery,
        )
    )
    if output_format == "json":
        click.echo(json.dumps({**outcome.as_json(), "invalid": invalid}), err=True)
    else:
        click.echo(_summary(outcome, invalid), err=True)
    if invalid:
        raise SystemExit(1)


def _plain(value: Any) -> Any:
    """A header value JSON cannot hold, as text (timestamps in ISO 8601)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _lines(item: Peeked, facts: QueueFacts) -> str:
    """A message as text: one line, then one indented line per thing that happened to it."""
    verdict = (
        click.style("valid", fg="green")
        if item.valid
        else click.style(f"INVALID: {shown(item.problem, sentence=True)}", fg="red")
    )
    kind = shown(item.type) if item.type else "(no type)"
    parts = [f"#{item.number}", kind, verdict, f"key={shown(item.routing_key, quote=True)}"]
    if item.stream_offset is not None:
        parts.append(f"offset={item.stream_offset}")
    parts.append(shown(item.body, limit=BODY_SHOWN))
    lines = ["  ".join(parts)]
    if item.spent is not None:
        lines.append("    look: " + _spent(item, facts))
    lines += ["    " + _death(death) for death in item.deaths]
    if item.rabbitry is not None:
        lines.append("    " + _rabbitry(item.rabbitry))
    return "\n".join(lines)


def _spent(item: Peeked, facts: QueueFacts) -> str:
    spent = item.spent
    assert spent is not None
    counted = f"x-delivery-count {spent.count_before} → {spent.count_after}"
    if spent.assumed:
        return f"{counted} if it is a quorum queue (tail could not read its type)"
    if spent.limit is None:
        return f"{counted} (no delivery limit)"
    if spent.dead_lettered:
        return click.style(
            f"{counted}, over delivery limit {spent.limit}: {facts.at_limit()} by this look",
            fg="red",
        )
    n = spent.deliveries_left or 0
    left = f"{n} {'delivery' if n == 1 else 'deliveries'}"
    return f"{counted} of delivery limit {spent.limit}: {left} left before it is dead-lettered"


def _death(death: Death) -> str:
    when = f" at {death.time.isoformat()}" if death.time is not None else ""
    times = f", {plural(death.count, 'time')}" if death.count != 1 else ""
    keys = ", ".join(shown(key, quote=True) for key in death.routing_keys[:KEYS_SHOWN])
    if len(death.routing_keys) > KEYS_SHOWN:
        keys += f" and {len(death.routing_keys) - KEYS_SHOWN} more"
    meaning = f" ({death.meaning})" if death.meaning else ""
    return click.style(
        f"dead-lettered by the broker: {shown(death.reason)}{meaning} in queue "
        f"{shown(death.queue, quote=True)}{times}{when}; it had been published to exchange "
        f"{shown(death.exchange, quote=True)} with key {keys}",
        fg="yellow",
    )


def _rabbitry(reason: RabbitryReason) -> str:
    where = f" at {shown(reason.path)}" if reason.path else ""
    more = "".join(
        f"; also {shown(f.reason, sentence=True)}" + (f" at {shown(f.path)}" if f.path else "")
        for f in reason.errors[1:FAULTS_SHOWN]
    )
    if len(reason.errors) > FAULTS_SHOWN:
        more += f"; and {len(reason.errors) - FAULTS_SHOWN} more"
    queue, exchange, key = (
        shown(name, quote=True) for name in (reason.queue, reason.exchange, reason.routing_key)
    )
    return click.style(
        f"dead-lettered by rabbitry: {shown(reason.error, sentence=True)}{where}{more}; "
        f"consumed from queue {queue} (exchange {exchange}, key {key})",
        fg="yellow",
    )


def _summary(outcome: PeekOutcome, invalid: int) -> str:
    """What tail saw and what it verified about the queue afterwards, in one paragraph."""
    facts = outcome.facts
    name = repr(facts.name)
    seen = f"{plural(outcome.seen, 'message')} in {name}, {invalid} invalid"
    more = " (the most tail holds at once; there may be more: pass --count N to see N)"
    window = more if outcome.window_full else ""
    if facts.cost is Cost.NOTHING:
        return f"{seen}{window}; a stream is read from an offset, never taken from"
    said = [seen + window]
    if outcome.seen == 0 and outcome.ready_before:
        said.append(
            f"it held {plural(outcome.ready_before, 'ready message')} that were not delivered "
            "to tail (another consumer is active on a single-active-consumer queue, or took them)"
        )
    if outcome.dead_lettered:
        said.append(
            f"{plural(outcome.dead_lettered, 'message')} over the delivery limit: "
            f"{facts.at_limit()} by this look"
        )
    held = f"it holds {plural(outcome.ready_after or 0, 'ready message')}"
    # The consumer count only where it explains a shortfall: a quorum queue may still
    # count tail's own consumer for a moment after its cancel (seen on 3.10.8).
    consumers = plural(outcome.consumers_after or 0, "consumer")
    returned = outcome.returned
    if outcome.verified and returned:
        flag = ", marked redelivered" if facts.cost is Cost.REDELIVERED_FLAG else ""
        spent = {
            Cost.DELIVERY_ATTEMPT: ", with one delivery attempt spent",
            Cost.UNKNOWN: ", with one delivery attempt spent if it is a quorum queue",
        }.get(facts.cost, "")
        every = "all " if returned > 1 else ""
        said.append(f"{every}{plural(returned, 'message')} back in the queue{flag}{spent} ({held})")
    elif outcome.verified:
        said.append(f"nothing to give back ({held})")
    else:
        said.append(
            f"returned {returned} but {held} ({consumers}): another consumer may have taken "
            "them or they expired; tail cannot say they are all still there"
        )
    return "; ".join(said)
