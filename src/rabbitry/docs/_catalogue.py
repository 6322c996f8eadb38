"""What the page says, as plain data: one entry per exchange, queue, message,
service and policy, each with the links to the entries it names.

Everything here is read from the spec (and ``spec.policies`` for effective
settings, ``check.reach`` for where a message can end up); the template only
lays it out.  Anchors are made from kind and name only where the name is made
of plain characters (``queue-jobs.ready``); any other name gets one from kind
and position (``queue~3``), which no plain name can take, so an anchor is
never broken by, nor collides through, user text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from rabbitry.check import reach
from rabbitry.graph import Graph, NodeKind, binding_label, graph_of
from rabbitry.spec.bundle import bundle
from rabbitry.spec.model import ArgValue, Binding, Policy, Spec, retry_label
from rabbitry.spec.policies import (
    Setting,
    alternate_of,
    dead_letter_of,
    effective,
    effective_exchange,
    queue_policies,
    winning_policy,
)

__all__ = [
    "BindingEntry",
    "Catalogue",
    "ExchangeEntry",
    "Link",
    "MessageEntry",
    "PolicyEntry",
    "QueueEntry",
    "ServiceEntry",
    "SettingEntry",
    "anchors_of",
    "catalogue_of",
    "shown",
]

_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Link:
    """A name and the anchor of its entry on the page (``""``: it has none)."""

    label: str
    anchor: str = ""


@dataclass(frozen=True)
class SettingEntry:
    """An effective setting (broker key without ``x-``), its value and where it comes from."""

    key: str
    value: str
    source: Link


@dataclass(frozen=True)
class BindingEntry:
    """A binding seen from one end: the object at the other end, its key (or headers)."""

    other: Link
    key: str
    runtime: bool


@dataclass(frozen=True)
class ExchangeEntry:
    name: Link
    type: str
    declared: bool
    flags: tuple[str, ...]
    description: str
    settings: tuple[SettingEntry, ...]
    bindings: tuple[BindingEntry, ...]
    bound_from: tuple[BindingEntry, ...]
    messages: tuple[Link, ...]
    dead_letters_from: tuple[Link, ...]
    alternate_for: tuple[Link, ...]


@dataclass(frozen=True)
class QueueEntry:
    name: Link
    type: str
    flags: tuple[str, ...]
    description: str
    settings: tuple[SettingEntry, ...]
    bindings: tuple[BindingEntry, ...]
    consumers: tuple[tuple[Link, tuple[Link, ...]], ...]
    messages: tuple[Link, ...]
    #: ``retry:``: for each try after the first, its delay (``5s``) and retry queue.
    retries: tuple[tuple[str, Link], ...] = ()
    #: A retry queue: the queue whose failed messages wait in it, and for how long.
    retry_of: Link | None = None
    retry_delay: str = ""


@dataclass(frozen=True)
class MessageEntry:
    name: Link
    description: str
    exchange: Link
    routing_key: str
    headers: tuple[tuple[str, str], ...]
    publishers: tuple[Link, ...]
    consumers: tuple[tuple[Link, Link], ...]
    reaches: tuple[Link, ...]
    schema_file: str
    schema: str


@dataclass(frozen=True)
class ServiceEntry:
    name: Link
    description: str
    publishes: tuple[tuple[Link, Link, str], ...]
    consumes: tuple[tuple[Link, tuple[Link, ...]], ...]


@dataclass(frozen=True)
class PolicyEntry:
    name: Link
    operator: bool
    pattern: str
    apply_to: str
    priority: int
    definition: tuple[tuple[str, str], ...]
    description: str
    applies_to: tuple[Link, ...]


@dataclass(frozen=True)
class Catalogue:
    graph: Graph
    exchanges: tuple[ExchangeEntry, ...]
    queues: tuple[QueueEntry, ...]
    messages: tuple[MessageEntry, ...]
    services: tuple[ServiceEntry, ...]
    policies: tuple[PolicyEntry, ...]


def shown(value: ArgValue) -> str:
    """A setting's value as the page writes it: a string as itself, the rest as JSON.  The
    empty string too is JSON, ``""``, so that it shows: a retry queue's dead-letter
    exchange is the default exchange, whose name is empty."""
    if isinstance(value, str) and value:
        return value
    return json.dumps(value, ensure_ascii=False)


def _anchor(kind: str, name: str, position: int) -> str:
    return f"{kind}-{name}" if _PLAIN.fullmatch(name) else f"{kind}~{position}"


def anchors_of(spec: Spec, graph: Graph) -> dict[tuple[str, str], str]:
    """(kind, name) → anchor, for every exchange and queue of ``graph`` and every
    message, service and policy of ``spec``."""
    found: dict[tuple[str, str], str] = {}
    names: dict[str, list[str]] = {
        "exchange": [n.name for n in graph.nodes if n.kind is NodeKind.EXCHANGE],
        "queue": list(spec.queues),
        "message": list(spec.messages),
        "service": list(spec.services),
        "policy": list(spec.policies),
        "operator-policy": list(spec.operator_policies),
    }
    for kind, kind_names in names.items():
        for position, name in enumerate(kind_names):
            found[(kind, name)] = _anchor(kind, name, position)
    return found


class _Links:
    def __init__(self, anchors: Mapping[tuple[str, str], str]) -> None:
        self.anchors = anchors

    def __call__(self, kind: str, name: str) -> Link:
        label = "(default)" if kind == "exchange" and name == "" else name
        return Link(label, self.anchors.get((kind, name), ""))

    def source(self, setting: Setting, *policies: Policy | None) -> Link:
        """Where ``setting`` comes from: ``argument``, or a link to the policy."""
        for policy in policies:
            if policy is None:
                continue
            kind, token = (
                ("operator-policy", "operator_policy")
                if policy.operator
                else (
                    "policy",
                    "policy",
                )
            )
            if setting.source == f"{token}:{policy.name}":
                return Link(
                    f"{kind.replace('-', ' ')} {policy.name}", self(kind, policy.name).anchor
                )
        return Link(setting.source)


def _other_end(link: _Links, binding: Binding, *, outgoing: bool) -> Link:
    if not outgoing:
        return link("exchange", binding.source)
    kind = "exchange" if binding.destination_type == "exchange" else "queue"
    return link(kind, binding.destination)


def _binding(link: _Links, binding: Binding, *, outgoing: bool) -> BindingEntry:
    return BindingEntry(
        _other_end(link, binding, outgoing=outgoing), binding_label(binding), binding.runtime
    )


def _flags(**flags: bool) -> tuple[str, ...]:
    return tuple(name.replace("_", "-") for name, on in flags.items() if on)


def catalogue_of(spec: Spec) -> Catalogue:
    """Every entry of the page for ``spec``, in the spec's order."""
    graph = graph_of(spec)
    link = _Links(anchors_of(spec, graph))
    reached = {name: reach(spec, m) for name, m in spec.messages.items()}
    consumers = [
        (service, queue, names)
        for service in spec.services.values()
        for queue, names in service.consumes.items()
    ]
    dead_letters = {q: dead_letter_of(spec, q)[0] for q in spec.queues}

    exchanges = []
    for node in graph.nodes:
        if node.kind is not NodeKind.EXCHANGE:
            continue
        name = node.name
        declared = spec.exchanges.get(name)
        policy = winning_policy(spec.policies, "exchange", name) if name else None
        exchanges.append(
            ExchangeEntry(
                name=link("exchange", name),
                type=node.type,
                declared=declared is not None,
                flags=_flags(
                    durable=declared.durable,
                    auto_delete=declared.auto_delete,
                    internal=declared.internal,
                )
                if declared
                else (),
                description=(declared.description or "") if declared else "",
                settings=tuple(
                    SettingEntry(key, shown(s.value), link.source(s, policy))
                    for key, s in effective_exchange(spec, name).items()
                ),
                bindings=tuple(_binding(link, b, outgoing=True) for b in spec.bindings_from(name)),
                bound_from=tuple(
                    _binding(link, b, outgoing=False)
                    for b in spec.bindings
                    if b.destination_type == "exchange" and b.destination == name
                ),
                messages=tuple(
                    link("message", m.name) for m in spec.messages.values() if m.exchange == name
                ),
                dead_letters_from=tuple(
                    link("queue", q)
                    for q, dlx in dead_letters.items()
                    if dlx is not None and dlx.value == name
                ),
                alternate_for=tuple(
                    link("exchange", e)
                    for e in spec.exchanges
                    if (alt := alternate_of(spec, e)) is not None and alt.value == name
                ),
            )
        )

    waits = {
        name: retry_label(delay) for q in spec.queues.values() for delay, name in q.retry_queues
    }
    queues = []
    for queue in spec.queues.values():
        user, operator = queue_policies(spec, queue)
        queues.append(
            QueueEntry(
                name=link("queue", queue.name),
                type=queue.type.value,
                flags=_flags(
                    durable=queue.durable,
                    exclusive=queue.exclusive,
                    auto_delete=queue.auto_delete,
                    run_time=queue.runtime,
                ),
                description=queue.description or "",
                settings=tuple(
                    SettingEntry(key, shown(s.value), link.source(s, user, operator))
                    for key, s in effective(spec, queue.name).items()
                ),
                bindings=tuple(
                    _binding(link, b, outgoing=False) for b in spec.bindings_to_queue(queue.name)
                ),
                consumers=tuple(
                    (link("service", s.name), tuple(link("message", m) for m in names))
                    for s, q, names in consumers
                    if q == queue.name
                ),
                messages=tuple(
                    link("message", m) for m in spec.messages if queue.name in reached[m]
                ),
                retries=tuple(
                    (retry_label(delay), link("queue", name)) for delay, name in queue.retry_queues
                ),
                retry_of=None if queue.retry_of is None else link("queue", queue.retry_of),
                retry_delay=waits.get(queue.name, "") if queue.retry_of else "",
            )
        )

    messages = []
    for message in spec.messages.values():
        schema = bundle(spec.schemas, spec.schema_file(message)) if spec.schemas else message.schema
        messages.append(
            MessageEntry(
                name=link("message", message.name),
                description=message.description or "",
                exchange=link("exchange", message.exchange),
                routing_key=message.routing_key,
                headers=tuple((k, shown(v)) for k, v in message.headers.items()),
                publishers=tuple(
                    link("service", s.name)
                    for s in spec.services.values()
                    if message.name in s.publishes
                ),
                consumers=tuple(
                    (link("service", s.name), link("queue", q))
                    for s, q, names in consumers
                    if message.name in names
                ),
                reaches=tuple(link("queue", q) for q in spec.queues if q in reached[message.name]),
                schema_file=message.schema_path.as_posix(),
                schema=json.dumps(schema, indent=2, ensure_ascii=False),
            )
        )

    services = [
        ServiceEntry(
            name=link("service", service.name),
            description=service.description or "",
            publishes=tuple(
                (
                    link("message", m),
                    link("exchange", spec.messages[m].exchange),
                    spec.messages[m].routing_key,
                )
                for m in service.publishes
                if m in spec.messages
            ),
            consumes=tuple(
                (link("queue", q), tuple(link("message", m) for m in names))
                for q, names in service.consumes.items()
            ),
        )
        for service in spec.services.values()
    ]

    policies = [
        PolicyEntry(
            name=link("operator-policy" if policy.operator else "policy", policy.name),
            operator=policy.operator,
            pattern=policy.pattern,
            apply_to=policy.apply_to.value,
            priority=policy.priority,
            definition=tuple((k, shown(v)) for k, v in policy.definition.items()),
            description=policy.description or "",
            applies_to=tuple(
                link("queue", q.name)
                for q in spec.queues.values()
                if policy in queue_policies(spec, q)
            )
            + tuple(
                link("exchange", e)
                for e in spec.exchanges
                if not policy.operator and winning_policy(spec.policies, "exchange", e) == policy
            ),
        )
        for policy in (*spec.policies.values(), *spec.operator_policies.values())
    ]
    return Catalogue(
        graph,
        tuple(exchanges),
        tuple(queues),
        tuple(messages),
        tuple(services),
        tuple(policies),
    )
