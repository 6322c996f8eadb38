"""The services of a spec as typed client classes: what each publishes, consumes, subscribes to.

- every message gets a delivery type, ``Received[Literal["Name"], Name]``,
  so ``delivery.type == "Name"`` narrows ``delivery.body`` to ``Name``;
- every queue a service consumes gets the union of the deliveries it may see
  there (``JobStatusDelivery``);
- a durable queue is consumed with a handler typed by that union; a run-time
  queue (exclusive, bound with ``{param}`` keys) is subscribed to with its
  params as keyword arguments, typed by the field they are filled from, and
  yields that union.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rabbitry.codegen._annotate import annotation
from rabbitry.codegen._layout import Atom, UnionExpr, flat
from rabbitry.codegen._model import (
    AliasDef,
    IntT,
    LiteralT,
    MapT,
    Model,
    Node,
    ObjectDef,
    RefT,
    StrT,
    UnionT,
    refs,
)
from rabbitry.codegen._names import Namer, pascal, snake
from rabbitry.spec import Spec
from rabbitry.spec.model import placeholders

__all__ = ["Clients", "Param", "Service", "SubscriptionClass", "build_clients"]


@dataclass
class Param:
    #: The keyword argument; ``key`` is the binding's placeholder it fills.
    name: str
    key: str
    annotation: str


@dataclass
class Publish:
    method: str
    message: str
    type_name: str
    doc: list[str]


@dataclass
class Request:
    """``request_<message>()``: a message with a ``reply`` (an extension of the spec format)."""

    method: str
    message: str
    type_name: str
    #: The reply's delivery type, what the method returns.
    reply: str
    doc: list[str]


@dataclass
class Consume:
    method: str
    queue: str
    delivery: str
    doc: list[str]
    #: What the handler returns: the replies of the requests the queue carries, or None.
    returns: str = "None"


@dataclass
class SubscriptionClass:
    name: str
    queue: str
    delivery: str
    params: list[Param]
    doc: list[str]

    @property
    def simple(self) -> bool:
        """Every param is passed as ``key=value`` (else as ``**{"key": value}``)."""
        return all(p.name == p.key for p in self.params)


@dataclass
class Subscribe:
    method: str
    subscription: SubscriptionClass
    doc: list[str]


@dataclass
class Service:
    name: str
    service: str
    doc: list[str]
    publishes: list[Publish] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    consumes: list[Consume] = field(default_factory=list)
    subscribes: list[Subscribe] = field(default_factory=list)


@dataclass
class QueueUnion:
    name: str
    members: list[str]
    doc: list[str]


@dataclass
class Clients:
    #: Message name → its delivery type's name.
    deliveries: dict[str, str] = field(default_factory=dict)
    unions: list[QueueUnion] = field(default_factory=list)
    subscriptions: list[SubscriptionClass] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    #: Type names (from ``messages``) the param annotations use.
    types: set[str] = field(default_factory=set)


def _mapping(model: Model, node: Node) -> bool:
    """Values of ``node`` are JSON objects (what ``Client.publish`` takes)."""
    match node:
        case MapT():
            return True
        case RefT(name):
            definition = model.defs[name]
            return isinstance(definition, ObjectDef) or _mapping(model, definition.node)
        case UnionT(members):
            return all(_mapping(model, m) for m in members)
    return False


def _key_like(model: Model, node: Node) -> bool:
    """Values of ``node`` are strings or integers (what fills a binding key)."""
    match node:
        case StrT() | IntT():
            return True
        case LiteralT(values):
            return all(isinstance(v, str | int) and not isinstance(v, bool) for v in values)
        case RefT(name):
            definition = model.defs[name]
            return isinstance(definition, AliasDef) and _key_like(model, definition.node)
        case UnionT(members):
            return all(_key_like(model, m) for m in members)
    return False


class _Builder:
    def __init__(self, spec: Spec, model: Model, namer: Namer) -> None:
        self.spec = spec
        self.model = model
        self.namer = namer
        self.out = Clients()

    def param_type(self, key: str, messages: list[str]) -> str:
        """The type of field ``key`` in ``messages`` (all have it, key-like), else ``str | int``."""
        nodes: list[Node] = []
        for message in messages:
            definition = self.model.defs.get(self.model.messages.get(message, ""))
            fields = (
                {f.key: f.node for f in definition.fields}
                if isinstance(definition, ObjectDef)
                else {}
            )
            if key not in fields or not _key_like(self.model, fields[key]):
                return "str | int"
            nodes.append(fields[key])
        if not nodes:
            return "str | int"
        exprs = [annotation(node, set()) for node in nodes]
        texts = list(dict.fromkeys(flat(e) for e in exprs))
        self.out.types.update(name for node in nodes for name in refs(node))
        return texts[0] if len(texts) == 1 else flat(UnionExpr(tuple(Atom(t) for t in texts)))

    def build(self) -> Clients:
        spec = self.spec
        services = sorted(spec.services.values(), key=lambda s: s.name)
        classes = {s.name: self.namer.take(pascal(s.name, fallback="Service")) for s in services}
        for message in sorted(spec.messages):
            type_name = self.model.messages[message]
            self.out.deliveries[message] = self.namer.take(f"{type_name}Delivery")
        # One union per queue and message list: a queue two services read differently
        # gets one per service.
        seen: dict[tuple[str, tuple[str, ...]], str] = {}
        by_queue: dict[str, set[tuple[str, ...]]] = {}
        for service in services:
            for queue, names in service.consumes.items():
                by_queue.setdefault(queue, set()).add(tuple(names))
        for service in services:
            for queue, names in sorted(service.consumes.items()):
                key = (queue, tuple(names))
                if key in seen:
                    continue
                prefix = pascal(service.name) if len(by_queue[queue]) > 1 else ""
                base = prefix + pascal(queue, fallback="Queue")
                seen[key] = self.namer.take(f"{base}Delivery")
                members = [self.out.deliveries[n] for n in names if n in self.out.deliveries]
                doc = [f"What a consumer of ``{queue}`` receives: one of {_list(names)}."]
                self.out.unions.append(QueueUnion(seen[key], members, doc))
                if queue in spec.queues and spec.queues[queue].runtime:
                    self.out.subscriptions.append(self.subscription(queue, names, base, seen[key]))
        subscriptions = {(s.queue, s.delivery): s for s in self.out.subscriptions}
        for service in services:
            self.out.services.append(
                self.service(service.name, classes[service.name], seen, subscriptions)
            )
        return self.out

    def subscription(
        self, queue: str, names: tuple[str, ...], base: str, delivery: str
    ) -> SubscriptionClass:
        keys: list[str] = []
        for binding in self.spec.bindings_to_queue(queue):
            keys.extend(p for p in placeholders(binding.key) if p not in keys)
        local = Namer(["self", "prefetch"])
        params = []
        for key in keys:
            simple = key.isascii() and key.isidentifier() and key not in local
            name = local.take(key if simple else snake(key, fallback="param"))
            params.append(Param(name, key, self.param_type(key, list(names))))
        bindings = [
            f"``{b.source}`` with ``{b.key}``"
            for b in self.spec.bindings_to_queue(queue)
            if b.runtime
        ]
        doc = [
            f"The run-time queue ``{queue}``, carrying {_list(names)}.",
            "Use it with ``async with`` (it is declared, exclusive, and bound on entry, "
            "removed on exit) and iterate over it."
            + (f" Bound to {', '.join(bindings)}." if bindings else ""),
        ]
        name = self.namer.take(f"{base}Subscription")
        return SubscriptionClass(name, queue, delivery, params, doc)

    def service(
        self,
        service_name: str,
        class_name: str,
        unions: Mapping[tuple[str, tuple[str, ...]], str],
        subscriptions: Mapping[tuple[str, str], SubscriptionClass],
    ) -> Service:
        spec = self.spec
        service = spec.services[service_name]
        methods = Namer(["client", "service"])
        skipped = []
        out = Service(class_name, service_name, [])
        for message in service.publishes:
            if message not in spec.messages:
                continue
            type_name = self.model.messages[message]
            if not _mapping(self.model, RefT(type_name)):
                skipped.append(message)
                continue
            m = spec.messages[message]
            where = f"Validated, then published to exchange ``{m.exchange}``"
            where += f" with routing key ``{m.routing_key}``" if m.routing_key else ""
            where += f" and headers ``{dict(m.headers)}``" if m.headers else ""
            doc = [
                m.description or "",
                f"{where}; returns once the broker has confirmed it.  ``options``: "
                "``timeout`` and the message's properties (``rabbitry.PublishOptions``).",
            ]
            method = methods.take(f"publish_{snake(message)}")
            out.publishes.append(Publish(method, message, type_name, doc))
            if m.reply is not None and m.reply in spec.messages:
                doc = [
                    m.description or "",
                    f"Send it as a request (validated, routed as ``{method}`` does) and return "
                    f"its reply ``{m.reply}``, validated; ``RequestTimeout`` when none came "
                    "within ``timeout`` seconds (default: the client's).",
                ]
                reply = self.out.deliveries[m.reply]
                request = methods.take(f"request_{snake(message)}")
                out.requests.append(Request(request, message, type_name, reply, doc))
        for queue, names in service.consumes.items():
            delivery = unions[(queue, tuple(names))]
            description = spec.queues[queue].description if queue in spec.queues else None
            if (queue, delivery) in subscriptions:
                method = methods.take(f"subscribe_{snake(queue)}")
                sub = subscriptions[(queue, delivery)]
                doc = [description or "", f"Subscribe to ``{queue}``: {_list(names)}, typed."]
                out.subscribes.append(Subscribe(method, sub, doc))
            else:
                method = methods.take(f"consume_{snake(queue)}")
                doc = [
                    description or "",
                    f"Consume ``{queue}`` with ``handler``: it gets {_list(names)}, each "
                    "validated; a message is acknowledged when the handler returns.",
                ]
                replies = self.replies(names)
                if replies:
                    doc.append(
                        "A request (sent with ``request_*``) is answered with what the handler "
                        "returns, validated against the reply's schema."
                    )
                returns = " | ".join([*replies, "None"])
                out.consumes.append(Consume(method, queue, delivery, doc, returns))
        summary = f"The service ``{service_name}``"
        summary += f": publishes {_list(service.publishes)}" if service.publishes else ""
        summary += f"; consumes {_list(service.consumes)}" if service.consumes else ""
        out.doc = [service.description or "", summary + "."]
        if skipped:
            out.doc.append(
                f"Not published here: {_list(skipped)} (not object messages; "
                "``client.publish`` takes objects)."
            )
        return out

    def replies(self, names: Iterable[str]) -> list[str]:
        """The type names of the replies of ``names`` (in order, once each)."""
        found: list[str] = []
        for name in names:
            message = self.spec.messages.get(name)
            reply = None if message is None else message.reply
            if reply is not None and reply in self.model.messages:
                type_name = self.model.messages[reply]
                if type_name not in found:
                    found.append(type_name)
        self.out.types.update(found)
        return found


def _list(names: Iterable[str]) -> str:
    return ", ".join(f"``{n}``" for n in names)


def build_clients(spec: Spec, model: Model, namer: Namer) -> Clients:
    """The client model of ``spec``'s services (names taken from ``namer``, in sorted order)."""
    return _Builder(spec, model, namer).build()
