"""``rabbitry check``: every offline check of a spec, the routing ones included.

``check(path)`` reports (like jsonschema's ``iter_errors``); ``load_spec(path)``
raises ``SpecError`` on the first spec with errors (like ``validate``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from rabbitry import _gc, routing
from rabbitry._values import Outcome, Refusal, ValueRoutes, value_routes
from rabbitry.errors import SpecError
from rabbitry.spec import Code, Diagnostic, Message, Severity, Spec, read
from rabbitry.spec._domains import Domain
from rabbitry.spec.checks import replies, run_hints
from rabbitry.spec.model import Location, placeholders
from rabbitry.spec.rabbitmq4 import check_rabbitmq4

__all__ = ["Depth", "Report", "check", "load_spec"]


@dataclass(frozen=True)
class Report:
    """What ``check`` found: the spec (``None`` if unreadable) and every diagnostic, sorted."""

    spec: Spec | None
    diagnostics: tuple[Diagnostic, ...]
    #: Advice (severity ``info``, e.g. an x-argument a policy could set so that it
    #: changes in place): apart from ``diagnostics``, never a failure, not even --strict.
    hints: tuple[Diagnostic, ...] = ()

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity is Severity.WARNING)


class Depth(Enum):
    """How much of a spec ``load_spec`` reads and checks: what a command needs.

    A command that needs less is faster on a large spec (at 20,000 queues,
    reading the schema files and routing every message is most of ``check``).
    """

    #: The YAML, the model and the checks of its names, bindings and policies
    #: (those of policies on the exchanges alone): what ``route`` needs.  No schema
    #: file is read.
    TOPOLOGY = "topology"
    #: And the message schemas with their checks: what ``publish`` and ``tail`` need.
    CONTRACT = "contract"
    #: And the routing checks (every message reaches a queue, every consumer its
    #: messages) and the RabbitMQ 4 rules: ``rabbitry check``, and every command
    #: that generates code or changes the broker.
    ALL = "all"


def check(path: Path | str, depth: Depth = Depth.ALL, *, advisory: bool = True) -> Report:
    """Read the spec at ``path`` and run the checks of ``depth`` (every check by
    default); never raises for a bad spec.  Without ``advisory``, the checks that
    find only warnings, and the hints, are skipped: the errors are the same."""
    with _gc.paused():
        return _check(path, depth, advisory)


def _check(path: Path | str, depth: Depth, advisory: bool) -> Report:
    topology = depth is Depth.TOPOLOGY
    spec, problems = read(path, schemas=not topology, advisory=advisory, for_routing=topology)
    if depth is Depth.ALL and spec is not None:
        if spec.complete and not any(d.code in _BLOCKERS for d in problems):
            problems = [*problems, *check_routing(spec)]
        problems = [*problems, *check_rabbitmq4(spec)]
    hints = run_hints(spec) if spec is not None and depth is Depth.ALL and advisory else []
    return Report(spec, tuple(sorted(set(problems))), tuple(sorted(set(hints))))


def load_spec(path: Path | str, depth: Depth = Depth.ALL) -> Spec:
    """The spec at ``path``, or ``SpecError`` carrying every error the checks of
    ``depth`` find (every check by default)."""
    report = check(path, depth, advisory=False)  # its warnings are nobody's to read
    if report.spec is None or report.errors:
        raise SpecError(report.errors)
    return report.spec


# Routing over a spec with dangling names or broken bindings would only guess:
# those faults are fixed first, then the routing checks run.
_BLOCKERS = frozenset(
    {Code.UNKNOWN_EXCHANGE, Code.UNKNOWN_QUEUE, Code.BINDING_SHAPE, Code.PLACEHOLDER}
)


def reach(spec: Spec, message: Message) -> frozenset[str]:
    """Every queue ``message`` can end up in: routed there, or dead-lettered there.

    Computed once per spec and message (``routing.route_message`` likewise).
    """
    reaches = spec.derived(_reaches)
    known = reaches.get(message.name)
    if known is not None and known[0] is message:
        return known[1]
    found = _reach(spec, message)
    reaches[message.name] = (message, found)
    return found


def _reaches(spec: Spec) -> dict[str, tuple[Message, frozenset[str]]]:
    return {}


def _reach(spec: Spec, message: Message) -> frozenset[str]:
    """Routed, dead-lettered, and retried: a queue with ``retry:`` hands a failed message
    to its retry queues (the runtime publishes it there), which hold it for the delay and
    dead-letter it back (that hop is the routing model's: the default exchange)."""
    found: set[str] = set()
    frontier = [d.queue for d in routing.route_message(spec, message)]
    while frontier:
        queue = frontier.pop()
        if queue not in found:
            found.add(queue)
            hops = routing.dead_letter_route(
                spec, queue, message.routing_key, message.headers, templates=True
            )
            frontier.extend(d.queue for d in hops)
            retried = spec.queues.get(queue)
            if retried is not None:
                frontier.extend(name for _, name in retried.retry_queues if name in spec.queues)
    return frozenset(found)


def check_routing(spec: Spec) -> Iterator[Diagnostic]:
    """Every message reaches a queue, with every value its finite fields may take
    (``_values``); every consumer's messages can reach its queue."""
    reached: dict[str, frozenset[str]] = {}
    for message in spec.messages.values():
        if message.name in spec.broken_messages:
            continue  # its fault is reported; where the faulty message goes is its consequence
        reached[message.name] = reach(spec, message)
        if message.exchange == "" and message.name in replies(spec):
            continue  # a reply goes to its requester's reply_to, bound to no queue (check_replies)
        if not routing.route_message(spec, message):
            yield Diagnostic(
                message.locs.of("routing_key" if message.routing_key else "exchange"),
                Code.UNROUTABLE,
                f"message {message.name!r} published to {message.exchange!r} "
                f"with key {message.routing_key!r} reaches no queue",
                "bind a queue that matches it, or fix the routing key",
            )
            continue  # every value reaches no queue: said once, above
        routes = value_routes(spec, message)
        if routes is not None:
            yield from _value_findings(message, routes)
    for service in spec.services.values():
        for queue, names in service.consumes.items():
            for i, name in enumerate(names):
                if name in reached and queue in spec.queues and queue not in reached[name]:
                    yield Diagnostic(
                        service.locs.of(f"consumes.{queue}.{i}"),
                        Code.UNREACHABLE_CONSUMER,
                        f"service {service.name!r} expects {name!r} on queue {queue!r}, "
                        f"but {name!r} can never reach it",
                        _where_it_goes(reached[name]),
                    )


def _where_it_goes(queues: Iterable[str]) -> str:
    found = sorted(queues)
    if not found:
        return "it reaches no queue at all"
    return "it reaches " + ", ".join(repr(q) for q in found) + "; bind the queue or consume there"


# ------------------------------------------------------------- value by value


def _value_findings(message: Message, routes: ValueRoutes) -> Iterator[Diagnostic]:
    """The finite values with which ``message`` reaches no queue or cannot be sent.

    A value explained alone (every combination holding it fails) is reported at
    its field's ``enum``; the other failing combinations together at the message.
    """
    yield from _refusals(message, routes)
    failing = routes.unrouted
    if not failing:
        return
    explained: set[Outcome] = set()
    for domain in routes.domains:
        dead = [v for v in domain.values if _all_fail(routes, domain.field, v)]
        if not dead:
            continue
        explained.update(o for o in failing if _value(o, domain.field) in dead)
        yield Diagnostic(
            domain.where or _field_location(message, domain.field),
            Code.UNROUTED_VALUE,
            f"message {message.name!r} reaches no queue when "
            f"{domain.field} = {' or '.join(_shown(v) for v in dead)} "
            f"({domain.field} may be {', '.join(_shown(v) for v in domain.values)}; "
            f"{_reached(routes, domain)})",
            f"bind a queue for {_them(dead)}, or remove {_them(dead, pronoun=True)} "
            "from the schema's values",
        )
    rest = [o for o in failing if o not in explained]
    if rest:
        shown = [" and ".join(f"{n} = {_shown(v)}" for n, v in o.values) for o in rest[:8]]
        more = f" and {len(rest) - 8} more" if len(rest) > 8 else ""
        yield Diagnostic(
            _field_location(message, rest[0].values[0][0]),
            Code.UNROUTED_VALUE,
            f"message {message.name!r} reaches no queue when "
            + "; or when ".join(shown)
            + more
            + f" ({len(routes.outcomes) - len(failing)} of {len(routes.outcomes)} "
            "combinations of its fields' values reach a queue)",
            "bind a queue for each of these combinations, or narrow the schema's values",
        )


def _refusals(message: Message, routes: ValueRoutes) -> Iterator[Diagnostic]:
    for domain in routes.domains:
        refused = [(v, why) for f, v, why in routes.refused if f == domain.field]
        if not refused:
            continue
        reasons = sorted({why for _, why in refused}, key=lambda r: r.value)
        yield Diagnostic(
            domain.where or _field_location(message, domain.field),
            Code.UNSENDABLE_VALUE,
            f"message {message.name!r}: {domain.field} may be "
            f"{' or '.join(_shown(v) for v, _ in refused)}, which publish refuses: "
            + "; ".join(_REFUSALS[r] for r in reasons),
            f"remove {_them([v for v, _ in refused], pronoun=True)} from the schema's values",
        )


_REFUSALS = {
    Refusal.DOT: "a value filling a routing-key word may not hold '.'",
    Refusal.NOT_A_WORD: "only a string or an integer fills a routing key or header",
}


def _all_fail(routes: ValueRoutes, field: str, value: object) -> bool:
    """Every combination in which ``field`` has ``value`` reaches no queue.

    The values compared are sendable ones (strings and integers, never bools), so
    Python's ``==`` is JSON's here.
    """
    holding = [o for o in routes.outcomes if _value(o, field) == value]
    return bool(holding) and all(not o.queues for o in holding)


def _value(outcome: Outcome, field: str) -> object:
    return dict(outcome.values)[field]


def _reached(routes: ValueRoutes, domain: Domain) -> str:
    """Where the field's values go, when they go somewhere: ``email reaches 'mail'``."""
    parts: list[str] = []
    for value in domain.values:
        queues = sorted(
            {q for o in routes.outcomes if _value(o, domain.field) == value for q in o.queues}
        )
        if queues:
            parts.append(f"{_shown(value)} reaches " + ", ".join(repr(q) for q in queues))
    if not parts:
        return "none of them reaches a queue"
    more = f"; and {len(parts) - 4} more" if len(parts) > 4 else ""
    return "; ".join(parts[:4]) + more


def _field_location(message: Message, field: str) -> Location:
    """Where the message says it fills ``field``: its routing key, else its headers."""
    if field in placeholders(message.routing_key):
        return message.locs.of("routing_key")
    return message.locs.of("headers")


def _shown(value: object) -> str:
    """A value as the wire shows it; quoted JSON when that would be ambiguous."""
    if isinstance(value, str) and _plain(value):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value)


def _plain(text: str) -> bool:
    """A word that reads as itself: not empty, no punctuation, not a number or JSON literal."""
    try:
        json.loads(text)
    except ValueError:
        return all(c.isalnum() or c in "-_" for c in text) and text != ""
    return False


def _them(values: list[object], *, pronoun: bool = False) -> str:
    if pronoun:
        return "it" if len(values) == 1 else "them"
    return " and ".join(_shown(v) for v in values)
