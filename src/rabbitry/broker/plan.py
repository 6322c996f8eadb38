"""The diff between what the spec wants and what a vhost has: ``rabbitry plan``.

A plan is a list of ``Change``s in the order ``apply`` carries them out:
exchanges, queues, bindings to create or replace, then (with prune)
deletions in reverse order; then policies and operator policies to create,
update (in place: a policy never touches a queue's messages) or, with prune,
delete.  ``Plan.settings`` is each spec queue's effective settings after the
apply, and where each comes from.  Nothing here talks to a broker.

A queue whose cluster node is down (``QueueState.down_on``) is not seen: the
management API lists its definition but hides its bindings, and every declare
or bind of it fails with NOT_FOUND until the node is back (measured: ``live``'s
docstring).  The plan changes nothing of it and lists it, with the spec's
bindings to it, in ``Plan.unseen`` with the node: never a false "create binding"
that apply would fail on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from rabbitry import _bounded
from rabbitry.broker.live import LiveState
from rabbitry.broker.migrate import temporary_queue
from rabbitry.broker.settings import effective_settings
from rabbitry.broker.state import (
    BindingState,
    ExchangeState,
    PolicyState,
    QueueState,
    Topology,
    is_reserved_exchange,
)
from rabbitry.errors import SpecError
from rabbitry.spec import Binding as SpecBinding
from rabbitry.spec import Diagnostic, Policy, Severity, Spec
from rabbitry.spec.policies import Setting
from rabbitry.spec.rabbitmq4 import findings, judge

__all__ = [
    "POLICY_KINDS",
    "Action",
    "Change",
    "FieldChange",
    "Kind",
    "Plan",
    "Settings",
    "Unseen",
    "count_of",
    "diff",
    "refuse_what_the_broker_refuses",
    "version_findings",
]


class Action(StrEnum):
    CREATE = "create"
    REPLACE = "replace"  # an immutable property differs: delete, then declare again
    UPDATE = "update"  # changed in place (policies): nothing is deleted
    DELETE = "delete"


class Kind(StrEnum):
    EXCHANGE = "exchange"
    QUEUE = "queue"
    BINDING = "binding"
    POLICY = "policy"
    OPERATOR_POLICY = "operator_policy"


#: The kinds written through the management API, not over AMQP.
POLICY_KINDS = frozenset({Kind.POLICY, Kind.OPERATOR_POLICY})

#: Queue → its effective settings (broker keys without ``x-``) with their sources.
Settings = Mapping[str, Mapping[str, Setting]]


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any

    def describe(self) -> str:
        return f"{self.field}: {_show(self.old)} → {_show(self.new)}"


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Change:
    action: Action
    kind: Kind
    name: str
    fields: tuple[FieldChange, ...] = ()
    #: The object as the spec wants it (create, replace) or as the broker has it (delete).
    exchange: ExchangeState | None = None
    queue: QueueState | None = None
    binding: BindingState | None = None
    policy: PolicyState | None = None
    #: The object as the broker has it now (replace, update).
    before: ExchangeState | QueueState | PolicyState | None = None
    #: For a queue that is replaced or deleted: what the broker says it holds.
    messages: int | None = None
    consumers: int | None = None
    #: For an exchange that is replaced: its bindings the spec does not own (run-time
    #: ones among them), which deleting it drops and apply does not put back.
    lost_bindings: int = 0
    #: A temporary queue a cut ``apply --migrate`` left (``broker.migrate``): the queue
    #: its messages go back to; ``apply --migrate`` moves them and then deletes it.
    drains_into: str | None = None
    #: For a binding the broker already has that is created again only because an end
    #: of it is replaced (deleting an object drops its bindings): that object, as
    #: ``"queue q"`` or ``"exchange x"``. Shown as a rebind, not as a new binding.
    remade_with: str | None = None

    @property
    def loses_data(self) -> bool:
        """Carrying this out would drop messages, consumers or foreign bindings.

        Unknown counts count as data.
        """
        if self.action is Action.CREATE:
            return False
        if self.kind is Kind.EXCHANGE:
            return self.lost_bindings > 0
        if self.kind is Kind.QUEUE:
            return self.messages != 0 or self.consumers != 0
        return False

    def describe(self) -> str:
        if self.remade_with is not None:
            return f"rebind {self.name} (re-made with the replace of {self.remade_with})"
        head = f"{self.action.value} {self.kind.value.replace('_', ' ')} {self.name}"
        if self.kind is Kind.QUEUE and self.action is not Action.CREATE:
            holds = f"{count_of(self.messages, 'message')}, {count_of(self.consumers, 'consumer')}"
            head += f" (holds {holds})"
        if self.lost_bindings:
            head += f" (drops {count_of(self.lost_bindings, 'binding')} the spec does not own)"
        if self.drains_into is not None:
            head += f" (a cut migration of {self.drains_into}: apply --migrate moves them back)"
        return head

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "action": self.action.value,
            "kind": self.kind.value,
            "name": self.name,
            "fields": [{"field": f.field, "old": f.old, "new": f.new} for f in self.fields],
        }
        if self.kind is Kind.QUEUE and self.action is not Action.CREATE:
            data["messages"] = self.messages
            data["consumers"] = self.consumers
        if self.drains_into is not None:
            data["drains_into"] = self.drains_into
        if self.remade_with is not None:
            data["remade_with"] = self.remade_with
        if self.policy is not None:
            data["policy"] = self.policy.body()  # what the management API gets (or had)
        return data


def count_of(n: int | None, noun: str) -> str:
    """``1 message``, ``3 messages``, ``? messages`` (unknown)."""
    if n is None:
        return f"? {noun}s"
    return f"{n} {noun}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class Unseen:
    """An object plan could not see because the cluster node that holds it is down: the
    plan neither creates, replaces nor deletes it, and cannot say it is in sync."""

    kind: Kind  # QUEUE or BINDING (a binding to such a queue)
    name: str
    #: The node that is down.
    node: str
    #: The spec's binding, for a binding.
    binding: BindingState | None = None

    def describe(self) -> str:
        return f"{self.kind.value} {self.name} (node {self.node} is down)"

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind.value, "name": self.name, "node": self.node}


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...] = ()
    #: Objects on the broker that the spec does not have, left alone without prune.
    unmanaged: tuple[str, ...] = field(default=())
    #: Each spec queue's effective settings once the plan is carried out.
    settings: Settings = field(default_factory=dict)
    #: What could not be seen because its node is down: left alone, unverified.
    unseen: tuple[Unseen, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.changes

    @property
    def data_loss(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.loses_data)

    def counts(self) -> dict[str, int]:
        found = {a.value: 0 for a in Action}
        for change in self.changes:
            found[change.action.value] += 1
        return found


def diff(want: Topology, have: Topology, spec: Spec | None = None, *, prune: bool = False) -> Plan:
    """The changes that turn ``have`` into ``want``.

    ``spec`` lets run-time bindings on the broker (made by consumers from a
    ``{param}`` binding) be recognised, so that they are never pruned.
    """
    down = {name: q.down_on for name, q in have.queues.items() if q.down_on is not None}
    unseen = _unseen(want, down, prune=prune)
    whole_want, whole_have = want, have
    if down:
        want, have = _without(want, down), _without(have, down)
    changes: list[Change] = []
    changes.extend(_exchanges(want, have))
    replaced_queues = set()
    for change in _queues(want.queues, have.queues):
        changes.append(change)
        if change.action is Action.REPLACE:
            replaced_queues.add(change.name)
    replaced_exchanges = {
        c.name for c in changes if c.kind is Kind.EXCHANGE and c.action is Action.REPLACE
    }
    changes.extend(_bindings(want.bindings, have.bindings, replaced_queues, replaced_exchanges))
    changes.extend(_cut_migrations(want, have))
    changes.extend(_policies(want.policies, have.policies, Kind.POLICY))
    changes.extend(_policies(want.operator_policies, have.operator_policies, Kind.OPERATOR_POLICY))
    # Without prune a down queue the spec lacks is still listed (it is there, unmanaged).
    owned_down = {n: node for n, node in down.items() if n in whole_want.queues}
    unmanaged = _unmanaged(want, have if prune else _without(whole_have, owned_down), spec)
    if prune:
        changes.extend(_deletions(unmanaged, have))
    names = tuple(sorted(f"{kind.value} {name}" for kind, name, _ in unmanaged))
    settings = _settings(whole_want, whole_have, prune=prune)
    return Plan(tuple(changes), () if prune else names, settings, unseen)


def _unseen(want: Topology, down: Mapping[str, str], *, prune: bool) -> tuple[Unseen, ...]:
    """The spec's queues whose node is down and the spec's bindings to them; with
    ``prune`` also the broker's other queues there (they cannot be deleted now)."""
    found = [
        Unseen(Kind.QUEUE, name, node)
        for name, node in sorted(down.items())
        if prune or name in want.queues
    ]
    found.extend(
        Unseen(Kind.BINDING, b.describe(), down[b.destination], b)
        for b in sorted(want.bindings, key=BindingState.sort_key)
        if b.destination_type == "queue" and b.destination in down
    )
    return tuple(found)


def _without(topology: Topology, down: Mapping[str, str]) -> Topology:
    """``topology`` without the queues whose node is down, nor bindings to them."""
    return replace(
        topology,
        queues={n: q for n, q in topology.queues.items() if n not in down},
        bindings=frozenset(
            b
            for b in topology.bindings
            if not (b.destination_type == "queue" and b.destination in down)
        ),
    )


def _differences(want: Mapping[str, Any], have: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    """Field by field, old → new; argument tables argument by argument."""
    found: list[FieldChange] = []
    for name, new in want.items():
        old = have.get(name)
        if isinstance(new, Mapping) and isinstance(old, Mapping):
            for key in sorted(set(new) | set(old)):
                if new.get(key) != old.get(key):
                    found.append(FieldChange(f"{name}.{key}", old.get(key), new.get(key)))
        elif new != old:
            found.append(FieldChange(name, old, new))
    return tuple(found)


def _exchanges(want: Topology, have: Topology) -> Iterable[Change]:
    for name in sorted(want.exchanges):
        target, current = want.exchanges[name], have.exchanges.get(name)
        if current is None:
            yield Change(Action.CREATE, Kind.EXCHANGE, name, exchange=target)
        elif target != current:
            fields = _differences(target.fields(), current.fields())
            foreign = [
                b
                for b in have.bindings - want.bindings
                if b.source == name or (b.destination_type == "exchange" and b.destination == name)
            ]
            yield Change(
                Action.REPLACE,
                Kind.EXCHANGE,
                name,
                fields,
                exchange=target,
                before=current,
                lost_bindings=len(foreign),
            )


def _queues(want: Mapping[str, QueueState], have: Mapping[str, QueueState]) -> Iterable[Change]:
    for name in sorted(want):
        target, current = want[name], have.get(name)
        if current is None:
            yield Change(Action.CREATE, Kind.QUEUE, name, queue=target)
        elif target != current:
            fields = _differences(target.fields(), current.fields())
            yield Change(
                Action.REPLACE,
                Kind.QUEUE,
                name,
                fields,
                queue=target,
                before=current,
                messages=current.messages,
                consumers=current.consumers,
            )


def _policies(
    want: Mapping[str, PolicyState] | None, have: Mapping[str, PolicyState] | None, kind: Kind
) -> Iterable[Change]:
    """Policies to create or update in place; none when either side is unknown."""
    if want is None or have is None:
        return
    for name in sorted(want):
        target, current = want[name], have.get(name)
        if current is None:
            yield Change(Action.CREATE, kind, name, policy=target)
        elif target != current:
            fields = _differences(target.fields(), current.fields())
            yield Change(Action.UPDATE, kind, name, fields, policy=target, before=current)


def _bindings(
    want: frozenset[BindingState],
    have: frozenset[BindingState],
    replaced_queues: set[str],
    replaced_exchanges: set[str],
) -> Iterable[Change]:
    """Bindings to create: missing ones, and those a replaced object loses when deleted."""
    for binding in sorted(want, key=BindingState.sort_key):
        ends = [("exchange", binding.source), (binding.destination_type, binding.destination)]
        replaced = [
            f"{kind} {name}"
            for kind, name in ends
            if name in (replaced_queues if kind == "queue" else replaced_exchanges)
        ]
        if binding not in have:
            yield Change(Action.CREATE, Kind.BINDING, binding.describe(), binding=binding)
        elif replaced:
            yield Change(
                Action.CREATE,
                Kind.BINDING,
                binding.describe(),
                binding=binding,
                remade_with=replaced[0],
            )


_Unmanaged = tuple[Kind, str, Any]


def _unmanaged(want: Topology, have: Topology, spec: Spec | None) -> list[_Unmanaged]:
    """What the broker has and the spec does not (reserved and run-time objects excepted)."""
    found: list[_Unmanaged] = []
    runtime_queues = {name for name, q in have.queues.items() if q.exclusive}
    runtime_queues |= set(_temporary(want, have))  # apply --migrate's: see _cut_migrations
    for binding in sorted(have.bindings - want.bindings, key=BindingState.sort_key):
        if binding.source == "" or _made_at_run_time(binding, spec, runtime_queues):
            continue
        found.append((Kind.BINDING, binding.describe(), binding))
    for name in sorted(set(have.queues) - set(want.queues)):
        owned_elsewhere = name in runtime_queues or name.startswith("amq.")
        if not owned_elsewhere and (spec is None or name not in spec.queues):
            found.append((Kind.QUEUE, name, have.queues[name]))
    for name in sorted(set(have.exchanges) - set(want.exchanges)):
        if not is_reserved_exchange(name):
            found.append((Kind.EXCHANGE, name, have.exchanges[name]))
    for kind, wanted, present in (
        (Kind.POLICY, want.policies, have.policies),
        (Kind.OPERATOR_POLICY, want.operator_policies, have.operator_policies),
    ):
        if wanted is None or present is None:
            continue
        if kind is Kind.OPERATOR_POLICY and not wanted:
            # Operator policies are the operator's caps: a spec that declares none
            # does not own them, so they are neither listed nor pruned.
            continue
        found.extend((kind, name, present[name]) for name in sorted(set(present) - set(wanted)))
    return found


def _temporary(want: Topology, have: Topology) -> dict[str, str]:
    """The temporary queues of cut migrations on the broker → the spec queue each drains into."""
    found = {temporary_queue(name): name for name in want.queues}
    return {t: q for t, q in found.items() if t in have.queues and t not in want.queues}


def _cut_migrations(want: Topology, have: Topology) -> Iterable[Change]:
    """A temporary queue of a cut ``apply --migrate``: never unmanaged, never pruned as
    unknown; deleting it loses data while it holds messages, unless they are moved back."""
    for temp, queue in sorted(_temporary(want, have).items()):
        state = have.queues[temp]
        yield Change(
            Action.DELETE,
            Kind.QUEUE,
            temp,
            queue=state,
            messages=state.messages,
            consumers=state.consumers,
            drains_into=queue,
        )


def _made_at_run_time(binding: BindingState, spec: Spec | None, runtime_queues: set[str]) -> bool:
    if binding.destination_type == "queue" and binding.destination in runtime_queues:
        return True
    if spec is None:
        return False
    templates = spec.derived(_runtime_templates).get((binding.source, binding.destination_type))
    return any(
        (binding.destination_type == "queue" or template.destination == binding.destination)
        and pattern.fullmatch(binding.routing_key) is not None
        for template, pattern in templates or ()
    )


def _runtime_templates(
    spec: Spec,
) -> dict[tuple[str, str], list[tuple[SpecBinding, re.Pattern[str]]]]:
    """The spec's run-time bindings by source and destination type, each with the pattern
    of the keys a consumer may fill it with (``{param}`` is one word): built once, where
    each unmanaged binding once compiled every template's pattern again."""
    found: dict[tuple[str, str], list[tuple[SpecBinding, re.Pattern[str]]]] = {}
    for template in spec.bindings:
        if template.runtime:
            pattern = "".join(
                "[^.]*" if part.startswith("{") else re.escape(part)
                for part in re.split(r"(\{[^{}]*\})", template.key)
                if part
            )
            key = (template.source, template.destination_type)
            found.setdefault(key, []).append((template, re.compile(pattern)))
    return found


def _deletions(unmanaged: list[_Unmanaged], have: Topology) -> Iterable[Change]:
    """Deletions in reverse order: bindings, then queues, then exchanges."""
    for kind, name, state in unmanaged:
        if kind is Kind.BINDING:
            yield Change(Action.DELETE, kind, name, binding=state)
    for kind, name, state in unmanaged:
        if kind is Kind.QUEUE:
            yield Change(
                Action.DELETE,
                kind,
                name,
                queue=state,
                messages=state.messages,
                consumers=state.consumers,
            )
    for kind, name, state in unmanaged:
        if kind is Kind.EXCHANGE:
            yield Change(Action.DELETE, kind, name, exchange=state)
    for kind, name, state in unmanaged:
        if kind in POLICY_KINDS:
            yield Change(Action.DELETE, kind, name, policy=state)


def _settings(want: Topology, have: Topology, *, prune: bool) -> Settings:
    """Each queue of ``want``: its effective settings once ``want`` is applied.

    The policies then on the broker are the spec's, and (without prune) the
    broker's others, which apply stays away from; where policies of equal
    priority tie, the one the broker names on the queue now is taken (the
    broker breaks such ties arbitrarily, and ``check`` calls them an error).
    Without a view of the broker's policies, the spec's alone are used.
    """
    users = _after(want.policies, have.policies, prune)
    operators = _after(want.operator_policies, have.operator_policies, prune)
    # Each pattern compiled once here: with a policy per queue, thousands of patterns
    # would thrash any shared cache of compiled patterns (2,000 queues and 2,000
    # policies: 209 s through ``Policy.matches``, 1.6 s this way, measured here).
    patterns = {p.pattern: _compile(p.pattern) for p in [*users.values(), *operators.values()]}

    def reaching(policies: Mapping[str, Policy], name: str) -> dict[str, Policy]:
        return {
            n: p
            for n, p in policies.items()
            if (pattern := patterns[p.pattern]) is not None and _bounded.search(pattern, name)
        }

    # A queue's settings follow from its type, its arguments, the policies that reach
    # it and the one the broker names: at scale most queues share all four, so each
    # distinct set is worked out once (20,000 queues, six policies, profiled: 5.6 s → 0.4 s).
    known: dict[tuple[Any, ...], Mapping[str, Setting]] = {}
    found: dict[str, Mapping[str, Setting]] = {}
    for name, queue in want.queues.items():
        live = have.queues.get(name)
        named = live.policy if live else None
        mine, theirs = reaching(users, name), reaching(operators, name)
        key = (queue.type, queue.arguments, tuple(mine), tuple(theirs), named)
        settings = known.get(key)
        if settings is None:
            settings = known[key] = effective_settings(queue, mine, theirs, named=named)
        found[name] = settings
    return found


def _compile(pattern: str) -> _bounded.Pattern[str] | None:
    """``re``'s syntax standing in for the broker's PCRE, run with a bound, as
    ``Policy.matches`` does: a policy already on the broker is not rabbitry's to trust."""
    return _bounded.compiled(pattern)


def _after(
    want: Mapping[str, PolicyState] | None, have: Mapping[str, PolicyState] | None, prune: bool
) -> dict[str, Policy]:
    kept = {} if prune or have is None else {n: p for n, p in have.items() if n not in (want or {})}
    return {n: p.as_policy() for n, p in {**kept, **(want or {})}.items()}


# ------------------------------------------------------------ the broker's version


def version_findings(spec: Spec, live: LiveState) -> tuple[Diagnostic, ...]:
    """``spec.rabbitmq4``'s table judged against the broker ``live`` was read from:
    an error for what its version refuses, a warning for the rest.

    A broker whose version could not be read is judged as ``check`` judges the
    spec: against ``rabbitmq:`` (whose refusals ``load_spec`` has already raised).
    """
    release = live.release
    if release is None:
        return tuple(judge(found, spec.rabbitmq) for found in findings(spec))
    return tuple(judge(found, release, running=live.version) for found in findings(spec))


def refuse_what_the_broker_refuses(spec: Spec, live: LiveState) -> tuple[Diagnostic, ...]:
    """The warnings of ``version_findings``; ``SpecError`` with its errors if there are any.

    Raised before anything is changed: apply would otherwise stop half-way at the
    broker's own refusal (a 406 that closes the channel, a 541 that closes the
    connection, a 400 for a policy).
    """
    found = version_findings(spec, live)
    refused = [d for d in found if d.severity is Severity.ERROR]
    if refused:
        raise SpecError(refused)
    return found
