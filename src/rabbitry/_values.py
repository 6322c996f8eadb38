"""Where each value of a message's finite fields goes: the facts behind ``check``'s
``unrouted-value`` and ``unsendable-value``.

Publishing is mandatory, so a valid message that reaches no queue raises
``Unroutable``.  A routing key or header filled from a field with finitely many
values (``spec._domains``) is routed once per combination of those values, each
filled exactly as the runtime fills it (``messaging.contract``: a string as it
is, an integer in decimal; anything else, or a text holding ``.``, is refused
before it is sent).  Fields whose values are open stay symbolic, so such a
message counts as reaching a queue if *some* value of them reaches one; a
run-time binding counts as made, an alternate exchange as taken when nothing
else matches, and dead-lettering is no way to reach a queue (it is not a
publish).  More than ``MAX_COMBINATIONS`` combinations are not judged at all.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from types import MappingProxyType
from typing import Any

from rabbitry import routing
from rabbitry.errors import RoutingError
from rabbitry.spec._domains import Domain, field_domain
from rabbitry.spec.model import PLACEHOLDER, ArgValue, Message, Spec, placeholders

__all__ = ["MAX_COMBINATIONS", "Outcome", "Refusal", "ValueRoutes", "value_routes"]

#: Beyond this many combinations of finite values, a message is not judged value by value.
MAX_COMBINATIONS = 256


class Refusal(Enum):
    """Why the runtime refuses to send a value the schema allows."""

    #: The text fills one routing-key word: no ``.`` (a header value may hold one).
    DOT = "dot"
    #: Only a string or an integer fills a template (not ``1.0``, ``true``, ``null``, ...).
    NOT_A_WORD = "not-a-word"


@dataclass(frozen=True)
class Outcome:
    """One combination of field values and the queues it reaches (empty: none)."""

    values: tuple[tuple[str, Any], ...]
    queues: tuple[str, ...]


@dataclass(frozen=True)
class ValueRoutes:
    """A message's finite fields, where each combination of their values goes, and the
    values the runtime refuses to send."""

    message: str
    domains: tuple[Domain, ...]
    outcomes: tuple[Outcome, ...]
    refused: tuple[tuple[str, Any, Refusal], ...]

    @property
    def unrouted(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if not o.queues)


def value_routes(spec: Spec, message: Message) -> ValueRoutes | None:
    """The routes of ``message`` value by value; ``None`` when it has no finite field, too
    many combinations, or cannot be routed at all (those faults are reported elsewhere)."""
    store = spec.schemas
    file = spec.schema_file(message)
    if store is None or file.resolve() not in store.documents:
        return None
    domains = [d for f in message.params if (d := field_domain(store, file, f)) is not None]
    if not domains:
        return None
    in_key = set(placeholders(message.routing_key))
    refused = tuple(
        (d.field, v, why)
        for d in domains
        for v in d.values
        if (why := refusal(v, in_key=d.field in in_key)) is not None
    )
    sendable = [
        [v for v in d.values if refusal(v, in_key=d.field in in_key) is None] for d in domains
    ]
    combinations = 1
    for values in sendable:
        combinations *= len(values)
    if combinations > MAX_COMBINATIONS:
        return None
    names = [d.field for d in domains]
    outcomes: list[Outcome] = []
    try:
        for combination in itertools.product(*sendable):
            wire = {n: wire_text(v) for n, v in zip(names, combination, strict=True)}
            queues = _queues(spec, message, wire)
            if queues is not None:
                outcomes.append(Outcome(tuple(zip(names, combination, strict=True)), queues))
    except RoutingError:
        return None  # an internal or unknown exchange: reported by its own check
    return ValueRoutes(message.name, tuple(domains), tuple(outcomes), refused)


def refusal(value: Any, *, in_key: bool) -> Refusal | None:
    """Why the runtime refuses to fill a template with ``value``; ``None`` if it does not.

    ``in_key``: the field fills a routing-key word (it may fill headers too).
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        return Refusal.NOT_A_WORD
    return Refusal.DOT if in_key and "." in str(value) else None


def wire_text(value: str | int) -> str:
    """The text a routing key or header gets for ``value`` (as ``messaging.contract`` fills)."""
    return str(value)


def _queues(spec: Spec, message: Message, wire: Mapping[str, str]) -> tuple[str, ...] | None:
    """The queues reached with the finite fields filled; ``None`` when it cannot be told."""
    key = _fill(message.routing_key, wire)
    headers: dict[str, ArgValue] = {
        name: _fill(value, wire) if isinstance(value, str) else value
        for name, value in message.headers.items()
    }
    open_fields = set(message.params) - set(wire)
    if not open_fields:
        found = routing.route(spec, message.exchange, key, headers)
    elif any(("{" in t or "}" in t) for t in wire.values()):
        return None  # a value that reads as a template where templates are left symbolic
    else:
        filled = replace(message, routing_key=key, headers=MappingProxyType(headers))
        found = routing.route_message(spec, filled)
    return tuple(d.queue for d in found)


def _fill(template: str, wire: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        return wire.get(match.group(1), match.group(0))

    return PLACEHOLDER.sub(value, template) if placeholders(template) else template
