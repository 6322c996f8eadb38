"""A vhost's topology as comparable values: what the spec wants, what the broker has.

Policies are part of it: a policy is a value of its own (``PolicyState``),
compared field by field and changed in place, never by touching a queue.

Both sides are reduced to the same frozen shapes, normalised so that nothing
shows as a false difference: integer widths and float-valued integers, a
missing queue type vs ``classic``, ``x-queue-type`` inside the arguments, the
implicit default-exchange bindings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rabbitry.spec import Policy, PolicyTarget, Spec

__all__ = [
    "BindingState",
    "ExchangeState",
    "Flag",
    "PolicyState",
    "QueueState",
    "Topology",
    "desired",
    "is_reserved_exchange",
    "normalise_arguments",
    "policy_state",
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
    #: The user policy the broker applies to it, as the broker says (``None``: none,
    #: or not known); it settles a tie between equal priorities, which the broker
    #: breaks arbitrarily.
    policy: str | None = field(default=None, compare=False)
    #: The cluster node that holds it, when that node is down (``None``: it is not).
    #: Its definition is still listed, but not its bindings (the management API
    #: hides them) nor what it holds, and no declare or bind of it works until the
    #: node is back: ``plan`` lists it as unseen (``plan.Unseen``) and changes nothing
    #: of it.  Measured on RabbitMQ 3.10.8: see ``live``'s docstring.
    down_on: str | None = field(default=None, compare=False)

    def fields(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "durable": self.durable,
            "auto_delete": self.auto_delete,
            "exclusive": self.exclusive,
            "arguments": dict(self.arguments),
        }

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


@dataclass(frozen=True)
class PolicyState:
    """A user policy or an operator policy of the vhost, as the management API writes it."""

    name: str
    pattern: str
    apply_to: str = "queues"
    priority: int = 0
    #: Broker keys without ``x-`` → normalised values, sorted.
    definition: tuple[tuple[str, Any], ...] = ()
    #: An operator policy (``/api/operator-policies``) rather than a user policy.
    operator: bool = False

    def fields(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "apply_to": self.apply_to,
            "priority": self.priority,
            "definition": dict(self.definition),
        }

    def body(self) -> dict[str, Any]:
        """The JSON the management API takes for it (PUT)."""
        return {
            "pattern": self.pattern,
            "apply-to": self.apply_to,
            "priority": self.priority,
            "definition": {k: _plain(v) for k, v in self.definition},
        }

    def as_policy(self) -> Policy:
        """The spec's model of it, so that ``spec.policies``' rules answer for it too."""
        try:
            target = PolicyTarget(self.apply_to)
        except ValueError:  # a newer broker's target: take the widest
            target = PolicyTarget.ALL
        return Policy(
            self.name,
            self.pattern,
            target,
            self.priority,
            {k: _plain(v) for k, v in self.definition},
            operator=self.operator,
        )


def policy_state(policy: Policy) -> PolicyState:
    """The spec's ``policy`` as the broker will have it."""
    return PolicyState(
        policy.name,
        policy.pattern,
        policy.apply_to.value,
        policy.priority,
        normalise_arguments(policy.definition),
        policy.operator,
    )


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
    #: User and operator policies by name; ``None`` when they could not be read (over
    #: AMQP, or a user the API does not show them to): then nothing about them is known.
    #: Left out of ``==``: a read that cannot see them (``None``) still equals the
    #: spec's topology in what it saw; ``plan.diff`` compares them itself.
    policies: Mapping[str, PolicyState] | None = field(default=None, compare=False)
    operator_policies: Mapping[str, PolicyState] | None = field(default=None, compare=False)

    @property
    def sees_policies(self) -> bool:
        """Both kinds of policies were read: plan can vouch for them."""
        return self.policies is not None and self.operator_policies is not None


def desired(spec: Spec) -> Topology:
    """What ``apply`` must make of ``spec``: run-time queues and ``{param}`` bindings left out.

    Built once per spec (``Spec.derived``) and shared, so never to be changed
    in place: plan, its live read and apply each asked for it (0.3-0.9 s apiece
    at 20,000 queues).
    """
    return spec.derived(_desired)


def _desired(spec: Spec) -> Topology:
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
    return Topology(
        exchanges,
        queues,
        bindings,
        policies={p.name: policy_state(p) for p in spec.policies.values()},
        operator_policies={p.name: policy_state(p) for p in spec.operator_policies.values()},
    )
