"""The broker's "inequivalent arg" refusal, read once into data.

Declaring an exchange or queue that exists with other properties closes the
channel with 406 PRECONDITION_FAILED and a reply text of one fixed shape
(rabbit_misc:assert_args_equivalence, seen on 3.10.8)::

    inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/':
        received '2000' but current is '1000'
    ... received none but current is the value '1000' of type 'short'
    ... received the value '2000' of type 'short' but current is none

This is the only place that reads that sentence: ``parse`` turns it into an
``Inequivalent`` (which field, what the broker has) and ``current_state``
puts the broker's value into the object as the spec describes it, so that
``plan`` shows the difference like any other.  The broker names the first
difference it meets only; ``plan`` shows that one, and apply replaces the
object whole, so nothing else is missed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Final

from rabbitry.broker.state import ExchangeState, QueueState

__all__ = ["BrokerSaid", "Inequivalent", "current_state", "parse"]

_VALUE = r"none|the value '(?:[^']*)' of type '[^']*'|'(?:[^']*)'"
_SENTENCE: Final = re.compile(
    rf"inequivalent arg '(?P<field>[^']+)' for (?P<kind>queue|exchange) '(?P<name>.*)' "
    rf"in vhost '.*': received (?P<received>{_VALUE}) but current is (?P<current>{_VALUE})\s*$"
)
_TYPED: Final = re.compile(r"the value '(?P<text>[^']*)' of type '[^']*'")

#: The declare properties that are fields of the state, not arguments.
_FIELDS: Final = {
    "exchange": frozenset({"durable", "auto_delete", "internal"}),
    "queue": frozenset({"durable", "auto_delete", "exclusive"}),
}


@dataclass(frozen=True)
class BrokerSaid:
    """A value as the broker printed it in a 406: its type is not known, only its text."""

    text: str

    def __repr__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Inequivalent:
    kind: str  # "queue" or "exchange"
    name: str
    field: str  # as the broker names it: "durable", "x-message-ttl", "alternate-exchange", ...
    #: What the object has, as the broker printed it; ``None`` when it has none.
    current: str | None


def parse(reply_text: str) -> Inequivalent | None:
    """The refusal in ``reply_text``, or ``None`` when it is some other 406."""
    match = _SENTENCE.search(reply_text)
    if match is None:
        return None
    return Inequivalent(
        kind=match["kind"],
        name=match["name"],
        field=match["field"],
        current=_value(match["current"]),
    )


def _value(text: str) -> str | None:
    if text == "none":
        return None
    typed = _TYPED.fullmatch(text)
    return typed["text"] if typed else text[1:-1]


def current_state(
    wanted: ExchangeState | QueueState, refusal: Inequivalent
) -> ExchangeState | QueueState:
    """``wanted`` with the one field the broker refused set to what the broker has."""
    if isinstance(wanted, QueueState) and refusal.field == "x-queue-type":
        return replace(wanted, type=refusal.current or "classic")
    if isinstance(wanted, ExchangeState) and refusal.field == "type":
        return replace(wanted, type=refusal.current or "")
    if refusal.field in _FIELDS[refusal.kind]:
        flag: dict[str, Any] = {refusal.field: refusal.current == "true"}
        return replace(wanted, **flag)
    arguments = dict(wanted.arguments)
    if refusal.current is None:
        arguments.pop(refusal.field, None)
    else:
        arguments[refusal.field] = BrokerSaid(refusal.current)
    return replace(wanted, arguments=tuple(sorted(arguments.items())))
