"""A vhost's topology as comparable values: what the spec wants, what the broker has.

Both sides are reduced to the same frozen shapes, normalised so that nothing
shows as a false difference: integer widths and float-valued integers, a
missing queue type vs ``classic``, ``x-queue-type`` inside the arguments, the
implicit default-exchange bindings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rabbitry.spec import Spec

__all__ = [
    "BindingState",
    "ExchangeState",
    "Flag",
    "QueueState",
    "Topology",
    "desired",
    "is_reserved_exchange",
    "normalise_arguments",
]


@dataclass(frozen=True)
class Flag:
    """A boolean argument value that never equals a number (Python's ``True == 1`` does)."""

    value: bool

    def __repr__(self) -> str:
        return repr(self.value)


def normalise_value(value: Any) -> Any:
    """One spelling per value: 5.0 → 5 (the API may give either), nested tables sorted,
    booleans kept apart from integers."""
    if isinstance(value, bool):
        return Flag(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), normalise_value(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(normalise_value(v) for v in value)
    return value


def normalise_arguments(arguments: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """An argument table as a sorted tuple of pairs, ``x-queue-type`` left out (it is ``type``)."""
    return tuple(
        sorted(
            (str(k), normalise_value(v))
            for k, v in (arguments or {}).items()
            if k != "x-queue-type"
        )
    )


def is_reserved_exchange(name: str) -> bool:
    """The default exchange and ``amq.*``: every vhost has them, nobody may declare them."""
    return name == "" or name.startswith("amq.")


@dataclass(frozen=True)
class ExchangeState:
    name: str
    type: str
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: tuple[tuple[str, Any], ...] = ()

    def fields(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "durable": self.durable,
            "auto_delete": self.auto_delete,
            "internal": self.internal,
            "arguments": dict(self.arguments),
        }

    def declare_arguments(self) -> dict[str, Any]:
        """The argument table to declare it with."""
        return {k: _plain(v) for k, v in self.arguments}


@dataclass(frozen=True)
class QueueState:
    name: str
    type: str = "classic"
    durable: bool = True
    auto_delete: bool = False
    exclusive: bool = False
    arguments: tuple[tuple[str, Any], ...] = ()
    #: What the queue holds; ``None`` where it cannot be known (the spec's side,
    #: or a broker read without the management API).
    messages: int | None = field(default=None, compare=False)
    consumers: int | None = field(default=None, compare=False)

    def fields(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "durable": self.durable,
            "auto_delete": self.auto_delete,
            "exclusive": self.exclusive,
            "arguments": dict(self.arguments),
        }

    @property
    def holds_data(self) -> bool:
        """Deleting it would lose messages or cut off consumers (unknown counts as yes)."""
        return self.messages != 0 or self.consumers != 0

    def declare_arguments(self) -> dict[str, Any]:
        """The argument table to declare it with.

        ``x-queue-type`` is sent for quorum and stream queues only: a classic
        queue is declared without one, as most clients do, so that redeclaring
        it never meets a missing-vs-explicit ``classic`` conflict.
        """
        table = {k: _plain(v) for k, v in self.arguments}
        if self.type != "classic":
            table["x-queue-type"] = self.type
        return table


@dataclass(frozen=True)
class BindingState:
    source: str
    destination_type: str  # "queue" or "exchange"
    destination: str
    routing_key: str = ""
    arguments: tuple[tuple[str, Any], ...] = ()

    def sort_key(self) -> tuple[str, str, str, str, str]:
        """A total order, whatever the argument values' types."""
        return (
            self.source,
            self.destination_type,
            self.destination,
            self.routing_key,
            repr(self.arguments),
        )

    def describe(self) -> str:
        arrow = f"{self.source} → {self.destination_type} {self.destination}"
        key = f" key {self.routing_key!r}" if self.routing_key else ""
        args = f" {dict(self.arguments)}" if self.arguments else ""
        return arrow + key + args

    def declare_arguments(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self.arguments}


def _plain(value: Any) -> Any:
    """Undo ``normalise_value`` for sending to the broker."""
    if isinstance(value, Flag):
        return value.value
    if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Topology:
    """The objects ``apply`` owns in one vhost."""

    exchanges: Mapping[str, ExchangeState] = field(default_factory=dict)
    queues: Mapping[str, QueueState] = field(default_factory=dict)
    bindings: frozenset[BindingState] = frozenset()


def desired(spec: Spec) -> Topology:
    """What ``apply`` must make of ``spec``: run-time queues and ``{param}`` bindings left out."""
    exchanges = {
        e.name: ExchangeState(
            e.name,
            e.type.value,
            e.durable,
            e.auto_delete,
            e.internal,
            normalise_arguments(e.arguments),
        )
        for e in spec.exchanges.values()
    }
    queues = {
        q.name: QueueState(
            q.name,
            q.type.value,
            q.durable,
            q.auto_delete,
            q.exclusive,
            normalise_arguments(q.arguments),
        )
        for q in spec.queues.values()
        if not q.runtime
    }
    bindings = frozenset(
        BindingState(
            b.source,
            b.destination_type,
            b.destination,
            b.key,
            normalise_arguments(b.broker_arguments),
        )
        for b in spec.bindings
        if not b.runtime and not (b.destination_type == "queue" and b.destination not in queues)
    )
    return Topology(exchanges, queues, bindings)
