"""``rabbitry check``: every offline check of a spec, the routing ones included.

``check(path)`` reports (like jsonschema's ``iter_errors``); ``load_spec(path)``
raises ``SpecError`` on the first spec with errors (like ``validate``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rabbitry import routing
from rabbitry.errors import SpecError
from rabbitry.spec import Code, Diagnostic, Message, Severity, Spec, read
from rabbitry.spec.checks import run_hints

__all__ = ["Report", "check", "load_spec"]


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


def check(path: Path | str) -> Report:
    """Read the spec at ``path`` and run every check; never raises for a bad spec."""
    spec, problems = read(path)
    if spec is not None and spec.complete and not any(d.code in _BLOCKERS for d in problems):
        problems = [*problems, *check_routing(spec)]
    hints = run_hints(spec) if spec is not None else []
    return Report(spec, tuple(sorted(set(problems))), tuple(sorted(set(hints))))


def load_spec(path: Path | str) -> Spec:
    """The spec at ``path``, or ``SpecError`` carrying every error it has."""
    report = check(path)
    if report.spec is None or report.errors:
        raise SpecError(report.errors)
    return report.spec


# Routing over a spec with dangling names or broken bindings would only guess:
# those faults are fixed first, then the routing checks run.
_BLOCKERS = frozenset(
    {Code.UNKNOWN_EXCHANGE, Code.UNKNOWN_QUEUE, Code.BINDING_SHAPE, Code.PLACEHOLDER}
)


def reach(spec: Spec, message: Message) -> set[str]:
    """Every queue ``message`` can end up in: routed there, or dead-lettered there."""
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
    return found


def check_routing(spec: Spec) -> Iterator[Diagnostic]:
    """Every message reaches a queue; every consumer's messages can reach its queue."""
    reached: dict[str, set[str]] = {}
    for message in spec.messages.values():
        if message.name in spec.broken_messages:
            continue  # its fault is reported; where the faulty message goes is its consequence
        reached[message.name] = reach(spec, message)
        if not routing.route_message(spec, message):
            yield Diagnostic(
                message.locs.of("routing_key" if message.routing_key else "exchange"),
                Code.UNROUTABLE,
                f"message {message.name!r} published to {message.exchange!r} "
                f"with key {message.routing_key!r} reaches no queue",
                "bind a queue that matches it, or fix the routing key",
            )
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
