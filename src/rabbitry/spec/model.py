"""The spec as frozen value objects.

Everything here is plain data: the loader (``_build``) constructs it from a
located YAML tree, the checks read it, and codegen, routing and the broker
layer consume it.  Every object carries ``locs``: where each of its fields was
written, for diagnostics; ``locs`` takes no part in equality.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeAlias, TypeVar, cast

from rabbitry import _bounded

__all__ = [
    "BUILTIN_EXCHANGES",
    "PLACEHOLDER",
    "ArgValue",
    "Binding",
    "Codegen",
    "Exchange",
    "ExchangeType",
    "HeadersMatch",
    "Location",
    "Locs",
    "Message",
    "Policy",
    "PolicyTarget",
    "Queue",
    "QueueType",
    "Service",
    "Spec",
    "placeholders",
    "retry_label",
    "retry_queue_name",
]

#: A value of an AMQP table as the spec can write it.
ArgValue: TypeAlias = "str | int | float | bool | list[Any] | dict[str, Any] | None"

#: A ``{name}`` placeholder in a routing key, binding key or header template.
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


_T = TypeVar("_T")


def placeholders(template: str) -> tuple[str, ...]:
    """The ``{name}`` placeholders of a routing key or header template, in order."""
    return tuple(m.group(1) for m in PLACEHOLDER.finditer(template))


@dataclass(frozen=True, order=True)
class Location:
    """A place in a file: 1-based line and column."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Locs:
    """Where an object and each of its fields were written.

    ``of("")`` is the object itself; ``of(field)`` falls back to the object.
    """

    where: Location
    fields: Mapping[str, Location] = field(default_factory=lambda: MappingProxyType({}))

    def of(self, name: str = "", *, key: bool = False) -> Location:
        """The location of ``name``'s value (or of its key with ``key=True``)."""
        if key:
            return self.fields.get(f"{name}:key", self.fields.get(name, self.where))
        return self.fields.get(name, self.where)


_NOWHERE = Locs(Location("<none>", 0, 0))


class ExchangeType(StrEnum):
    DIRECT = "direct"
    FANOUT = "fanout"
    TOPIC = "topic"
    HEADERS = "headers"


#: Exchanges every vhost has; a spec may bind from them without declaring them.
BUILTIN_EXCHANGES: Mapping[str, ExchangeType] = MappingProxyType(
    {
        "": ExchangeType.DIRECT,  # the default exchange: routes to the queue named by the key
        "amq.direct": ExchangeType.DIRECT,
        "amq.fanout": ExchangeType.FANOUT,
        "amq.topic": ExchangeType.TOPIC,
        "amq.headers": ExchangeType.HEADERS,
        "amq.match": ExchangeType.HEADERS,
    }
)


class QueueType(StrEnum):
    CLASSIC = "classic"
    QUORUM = "quorum"
    STREAM = "stream"


class HeadersMatch(StrEnum):
    """The ``x-match`` modes of a headers binding."""

    ALL = "all"
    ANY = "any"
    ALL_WITH_X = "all-with-x"
    ANY_WITH_X = "any-with-x"


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Exchange:
    name: str
    type: ExchangeType
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    #: The declared arguments, sugar folded in (``alternate_exchange`` → ``alternate-exchange``).
    arguments: Mapping[str, ArgValue] = field(default_factory=lambda: _frozen(None))
    description: str | None = None
    locs: Locs = field(default=_NOWHERE, compare=False, repr=False)

    @property
    def alternate_exchange(self) -> str | None:
        value = self.arguments.get("alternate-exchange")
        return value if isinstance(value, str) else None


#: Units a ``retry:`` delay may be written in, largest first, in milliseconds.
RETRY_UNITS: Mapping[str, int] = MappingProxyType(
    {"h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
)


def retry_label(delay_ms: int) -> str:
    """A delay as the spec would write it, in the largest unit that divides it: ``5s``, ``5m``,
    ``1500ms``.  Part of a retry queue's name, so it is the one spelling of each delay."""
    for unit, size in RETRY_UNITS.items():
        if delay_ms % size == 0:
            return f"{delay_ms // size}{unit}"
    raise AssertionError("unreachable: every delay is a whole number of ms")  # pragma: no cover


def retry_queue_name(queue: str, delay_ms: int) -> str:
    """The queue where a failed message of ``queue`` waits ``delay_ms`` before it comes back:
    ``jobs.ready.retry.5s``.  One per distinct delay, so every message in it has the same
    TTL and the head is always the first to expire (a per-queue TTL never blocks)."""
    return f"{queue}.retry.{retry_label(delay_ms)}"


@dataclass(frozen=True)
class Queue:
    name: str
    type: QueueType = QueueType.CLASSIC
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    #: The declared arguments, sugar folded in (``dead_letter`` → ``x-dead-letter-exchange``, ...);
    #: ``x-queue-type`` is not among them: it is ``type``.
    arguments: Mapping[str, ArgValue] = field(default_factory=lambda: _frozen(None))
    description: str | None = None
    #: ``retry: [5s, 30s, 5m]`` (an extension of the v1 format): the delays, in ms, after
    #: which a message whose handler failed comes back, one try after each.
    retry: tuple[int, ...] = ()
    #: Set on a retry queue the spec's ``retry:`` made (not written in the spec): the queue
    #: whose failed messages wait in it.  Its TTL is the delay; its dead-letter route, the
    #: default exchange with that queue's name, brings them back.
    retry_of: str | None = None
    locs: Locs = field(default=_NOWHERE, compare=False, repr=False)

    @property
    def runtime(self) -> bool:
        """Declared by its consumer at run time (server-named), not by ``apply``."""
        return self.exclusive

    @property
    def retry_queues(self) -> tuple[tuple[int, str], ...]:
        """``(delay_ms, retry queue)`` for each try after the first, in order (a delay
        written twice uses one queue twice)."""
        return tuple((delay, retry_queue_name(self.name, delay)) for delay in self.retry)

    @property
    def dead_letter_exchange(self) -> str | None:
        value = self.arguments.get("x-dead-letter-exchange")
        return value if isinstance(value, str) else None

    @property
    def dead_letter_routing_key(self) -> str | None:
        value = self.arguments.get("x-dead-letter-routing-key")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Binding:
    source: str
    destination: str
    #: ``"queue"`` or ``"exchange"`` (an exchange-to-exchange binding).
    destination_type: str = "queue"
    key: str = ""
    #: For a headers exchange: the ``x-match`` mode and the headers to match.
    match: HeadersMatch | None = None
    headers: Mapping[str, ArgValue] = field(default_factory=lambda: _frozen(None))
    arguments: Mapping[str, ArgValue] = field(default_factory=lambda: _frozen(None))
    locs: Locs = field(default=_NOWHERE, compare=False, repr=False)

    @property
    def params(self) -> tuple[str, ...]:
        """Placeholders of the key: non-empty means the runtime binds it with values."""
        return placeholders(self.key)

    @property
    def runtime(self) -> bool:
        return bool(self.params)

    @property
    def broker_arguments(self) -> dict[str, ArgValue]:
        """The argument table the broker sees: headers and ``x-match`` folded in."""
        table: dict[str, ArgValue] = dict(self.arguments)
        table.update(self.headers)
        if self.match is not None:
            table["x-match"] = self.match.value
        return table


@dataclass(frozen=True)
class Message:
    name: str
    schema_path: Path
    exchange: str
    routing_key: str = ""
    #: For a headers exchange: each value fixed or a ``{field}`` template.
    headers: Mapping[str, ArgValue] = field(default_factory=lambda: _frozen(None))
    description: str | None = None
    #: The message its consumer answers with (``reply:``, an extension of the spec format):
    #: sent through the default exchange to the request's ``reply_to``.
    reply: str | None = None
    #: The loaded JSON Schema (``$ref``s left in place; see ``Spec.schemas``).
    schema: Mapping[str, Any] = field(default_factory=lambda: _frozen(None), compare=False)
    locs: Locs = field(default=_NOWHERE, compare=False, repr=False)

    @property
    def params(self) -> tuple[str, ...]:
        """Message fields the routing key and headers are filled from."""
        found = list(placeholders(self.routing_key))
        for value in self.headers.values():
            if isinstance(value, str):
                found.extend(p for p in placeholders(value) if p not in found)
        return tuple(found)


@dataclass(frozen=True)
class Service:
    name: str
    publishes: tuple[str, ...] = ()
    #: queue name → the messages the service expects on it.
    consumes: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _frozen(None))
    description: str | None = None
    locs: Locs = field(default=_NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class Codegen:
    package: str
    out: Path
    locs: Locs = field(default=_NOWHERE, compare=False, repr=False)


class PolicyTarget(StrEnum):
    """The broker's ``apply-to`` values; the per-queue-type ones exist from RabbitMQ 3.12."""

    QUEUES = "queues"
    EXCHANGES = "exchanges"
    ALL = "all"
    CLASSIC_QUEUES = "classic_queues"
    QUORUM_QUEUES = "quorum_queues"
    STREAMS = "streams"

    @property
    def queue_types(self) -> frozenset[QueueType]:
        """The queue types this target reaches (none for ``exchanges``)."""
        return _TARGET_QUEUE_TYPES[self]

    @property
    def exchanges(self) -> bool:
        """Whether this target reaches exchanges."""
        return self in (PolicyTarget.EXCHANGES, PolicyTarget.ALL)


_TARGET_QUEUE_TYPES: Mapping[PolicyTarget, frozenset[QueueType]] = MappingProxyType(
    {
        PolicyTarget.QUEUES: frozenset(QueueType),
        PolicyTarget.ALL: frozenset(QueueType),
        PolicyTarget.EXCHANGES: frozenset(),
        PolicyTarget.CLASSIC_QUEUES: frozenset({QueueType.CLASSIC}),
        PolicyTarget.QUORUM_QUEUES: frozenset({QueueType.QUORUM}),
        PolicyTarget.STREAMS: frozenset({QueueType.STREAM}),
    }
)


@dataclass(frozen=True)
class Policy:
    """A user policy (``policies:``) or an operator policy (``operator_policies:``).

    ``pattern`` is what the broker gets: the ``pattern:`` written, or an anchored
    alternation made from ``queues: [...]`` / ``exchanges: [...]``.  ``definition``
    holds broker keys without ``x-`` (``{"message-ttl": 300000}``), sugar folded in.
    """

    name: str
    pattern: str
    apply_to: PolicyTarget = PolicyTarget.QUEUES
    priority: int = 0
    definition: Mapping[str, ArgValue] = field(default_factory=lambda: _frozen(None))
    operator: bool = False
    description: str | None = None
    locs: Locs = field(default=_NOWHERE, compare=False, repr=False)
    #: The exact names ``pattern`` was made from (``queues:`` / ``exchanges:``); empty
    #: for a ``pattern:`` as written.  The broker only knows the pattern.
    names: tuple[str, ...] = field(default=(), compare=False)

    def matches(self, name: str) -> bool:
        """The pattern matches ``name`` the way the broker runs it: unanchored search.

        Python's ``re`` syntax stands in for PCRE, run with a bound (``rabbitry._bounded``):
        an invalid pattern matches nothing, and so does one stopped at the bound, as the
        broker's PCRE gives up at its match limit (``check`` reports both).
        """
        return _bounded.search(self.pattern, name) is True

    def applies_to(
        self,
        kind: Literal["queue", "exchange"],
        name: str,
        queue_type: QueueType | None = None,
    ) -> bool:
        """This policy applies to the ``kind`` object ``name`` (a queue of ``queue_type``,
        classic when not given, as the broker defaults)."""
        if kind == "exchange":
            reaches = self.apply_to.exchanges
        else:
            reaches = (queue_type or QueueType.CLASSIC) in self.apply_to.queue_types
        return reaches and self.matches(name)


@dataclass(frozen=True)
class Spec:
    """A whole ``topology.yaml``."""

    path: Path
    version: int = 1
    exchanges: Mapping[str, Exchange] = field(default_factory=lambda: _frozen(None))
    queues: Mapping[str, Queue] = field(default_factory=lambda: _frozen(None))
    bindings: tuple[Binding, ...] = ()
    messages: Mapping[str, Message] = field(default_factory=lambda: _frozen(None))
    services: Mapping[str, Service] = field(default_factory=lambda: _frozen(None))
    codegen: Codegen | None = None
    #: User policies (``policies:``) and operator policies (``operator_policies:``), by name.
    policies: Mapping[str, Policy] = field(default_factory=lambda: _frozen(None))
    operator_policies: Mapping[str, Policy] = field(default_factory=lambda: _frozen(None))
    #: ``rabbitmq: "3.12"``: the oldest RabbitMQ (major, minor) the spec must work on;
    #: ``None`` means 3.10, the oldest rabbitry supports (what the checks assume).
    rabbitmq: tuple[int, int] | None = None
    #: Exchanges and queues declared with faults (already reported): they are left out
    #: of the model, but naming them elsewhere is not an "unknown" reference.
    broken_exchanges: frozenset[str] = field(default=frozenset(), compare=False)
    broken_queues: frozenset[str] = field(default=frozenset(), compare=False)
    #: How many bindings were written with faults (already reported) and left out.
    broken_bindings: int = field(default=0, compare=False)
    #: Policies and operator policies written with faults (already reported), left out.
    broken_policies: frozenset[str] = field(default=frozenset(), compare=False)
    #: Messages written with faults (already reported, e.g. a misspelt `routing_key`):
    #: kept in the model, so services naming them are not told they are unknown, but
    #: their routing is not judged, since it would judge the typo's consequence.
    broken_messages: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def complete(self) -> bool:
        """Every declared exchange, queue, binding and policy made it into the model."""
        return not (
            self.broken_exchanges
            or self.broken_queues
            or self.broken_bindings
            or self.broken_policies
        )

    locs: Locs = field(default=_NOWHERE, compare=False, repr=False)
    #: The loaded schema files (a ``rabbitry.spec.schemas.SchemaStore``), when loaded.
    schemas: Any = field(default=None, compare=False, repr=False)

    def schema_file(self, message: Message) -> Path:
        """The schema file of ``message``, relative paths taken from the spec's folder."""
        return self.root / message.schema_path

    def exchange_type(self, name: str) -> ExchangeType | None:
        """The type of a declared or built-in exchange; ``None`` if there is no such exchange."""
        if name in self.exchanges:
            return self.exchanges[name].type
        return BUILTIN_EXCHANGES.get(name)

    @property
    def root(self) -> Path:
        """The folder relative paths in the spec are resolved against."""
        return self.path.parent

    def derived(self, build: Callable[[Spec], _T]) -> _T:
        """``build(self)``, computed once for this spec and kept with it.

        The home of every index over a spec (bindings by source, routing's key
        tries, the names the checks look up): a spec is frozen, so an index can
        never go stale, and each is built once however many commands, checks and
        messages read it.  ``build`` is the key, so it must be a module-level
        function.
        """
        cache: dict[Callable[[Spec], object], object] = self.__dict__.setdefault("_derived", {})
        if build not in cache:
            cache[build] = build(self)
        return cast(_T, cache[build])

    def bindings_from(self, exchange: str) -> tuple[Binding, ...]:
        """The bindings whose source is ``exchange``, in the spec's order."""
        return self.derived(_by_source).get(exchange, ())

    def bindings_to_queue(self, queue: str) -> tuple[Binding, ...]:
        """The bindings to queue ``queue``, in the spec's order."""
        return self.derived(_to_queue).get(queue, ())

    def consumers(self, queue: str) -> tuple[str, ...]:
        """The services that consume ``queue``, in the spec's order."""
        return self.derived(_consumers).get(queue, ())


def _by_source(spec: Spec) -> Mapping[str, tuple[Binding, ...]]:
    found: dict[str, list[Binding]] = {}
    for binding in spec.bindings:
        found.setdefault(binding.source, []).append(binding)
    return MappingProxyType({name: tuple(bindings) for name, bindings in found.items()})


def _consumers(spec: Spec) -> Mapping[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for service in spec.services.values():
        for queue in service.consumes:
            found.setdefault(queue, []).append(service.name)
    return MappingProxyType({name: tuple(services) for name, services in found.items()})


def _to_queue(spec: Spec) -> Mapping[str, tuple[Binding, ...]]:
    found: dict[str, list[Binding]] = {}
    for binding in spec.bindings:
        if binding.destination_type == "queue":
            found.setdefault(binding.destination, []).append(binding)
    return MappingProxyType({name: tuple(bindings) for name, bindings in found.items()})
