"""The topology as a diagram: a small graph model of a spec, and two renderers.

``graph_of`` reads a ``Spec`` into ``Graph`` (nodes and edges as plain data,
the one place that decides what the diagram shows); ``mermaid`` and ``dot``
only spell that graph in their syntax.  Node ids are made by the model
(``e0``, ``q0``, ``s0``: kind and position), never from a name, so no name can
collide with a keyword or break an id; names appear only inside quoted labels,
escaped by each renderer for its own quoting rules.

What is shown: exchanges and queues with their types, services; every binding
with its key (a headers binding with its match and headers), exchange to
exchange bindings included, run-time bindings (a templated key) dashed; each
queue's effective dead-letter exchange and each exchange's effective alternate
exchange (argument or policy, as ``spec.policies`` resolves them); which
service publishes which message to which exchange, and consumes which queue.
A queue's ``retry:`` is drawn as an edge to each retry queue ("retry 5s") and
one back ("after 5s"), dotted: the way back is the retry queue's dead-letter
route (the default exchange, keyed with the queue's name), shown as what it
means rather than as a dead-letter edge to the default exchange.
Exchanges named but not declared (built-in ones, the default exchange) get a
node of their own, marked not declared.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from rabbitry.errors import InvalidArgument
from rabbitry.spec.model import BUILTIN_EXCHANGES, ArgValue, Binding, Spec, retry_label
from rabbitry.spec.policies import alternate_of, dead_letter_of

__all__ = [
    "RENDERERS",
    "Edge",
    "EdgeKind",
    "Graph",
    "Node",
    "NodeKind",
    "binding_label",
    "dot",
    "dot_text",
    "graph_of",
    "mermaid",
    "mermaid_text",
    "render",
]


class NodeKind(StrEnum):
    EXCHANGE = "exchange"
    QUEUE = "queue"
    SERVICE = "service"


class EdgeKind(StrEnum):
    BINDING = "binding"
    DEAD_LETTER = "dead-letter"
    ALTERNATE = "alternate"
    PUBLISHES = "publishes"
    CONSUMES = "consumes"
    #: A queue to one of its retry queues (``retry:``): where a failed message waits.
    RETRY = "retry"
    #: A retry queue back to its queue, once the delay (its TTL) is over.
    RETRY_BACK = "retry-back"


@dataclass(frozen=True)
class Node:
    """An exchange, queue or service.  ``type`` is the exchange or queue type
    (empty for a service, or for an exchange the spec names but does not know)."""

    id: str
    kind: NodeKind
    name: str
    type: str = ""
    #: Declared by the spec (``False`` for a built-in or merely named exchange or queue).
    declared: bool = True

    @property
    def label(self) -> str:
        """What the diagram writes in the node: its name (the default exchange has
        none) and its type."""
        name = self.name if self.name or self.kind is not NodeKind.EXCHANGE else "(default)"
        return f"{name}\n({self.type})" if self.type else name


@dataclass(frozen=True)
class Edge:
    """A directed edge between two node ids.  ``runtime``: made at run time (a
    binding whose key has placeholders), drawn dashed."""

    source: str
    target: str
    kind: EdgeKind
    label: str = ""
    runtime: bool = False


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def node(self, kind: NodeKind, name: str) -> Node | None:
        """The node of the ``kind`` object ``name``, if the graph has one."""
        return next((n for n in self.nodes if n.kind is kind and n.name == name), None)


_PREFIX: Mapping[NodeKind, str] = {
    NodeKind.EXCHANGE: "e",
    NodeKind.QUEUE: "q",
    NodeKind.SERVICE: "s",
}


class _Builder:
    """Collects nodes (one per kind and name, ids by order of appearance) and edges."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[NodeKind, str], Node] = {}
        self.edges: list[Edge] = []
        self._counts: dict[NodeKind, int] = dict.fromkeys(NodeKind, 0)

    def add(self, kind: NodeKind, name: str, type_: str = "", *, declared: bool = True) -> str:
        found = self.nodes.get((kind, name))
        if found is not None:
            return found.id
        node_id = f"{_PREFIX[kind]}{self._counts[kind]}"
        self._counts[kind] += 1
        self.nodes[(kind, name)] = Node(node_id, kind, name, type_, declared)
        return node_id

    def exchange(self, name: str) -> str:
        builtin = BUILTIN_EXCHANGES.get(name)
        return self.add(NodeKind.EXCHANGE, name, builtin.value if builtin else "", declared=False)

    def queue(self, name: str) -> str:
        return self.add(NodeKind.QUEUE, name, declared=False)

    def edge(
        self, source: str, target: str, kind: EdgeKind, label: str = "", *, runtime: bool = False
    ) -> None:
        self.edges.append(Edge(source, target, kind, label, runtime))


def _value(value: ArgValue) -> str:
    return value if isinstance(value, str) else repr(value)


def binding_label(binding: Binding) -> str:
    """A binding's key, or for a headers binding its match and headers."""
    if binding.match is not None or binding.headers:
        pairs = ", ".join(f"{k}={_value(v)}" for k, v in binding.headers.items())
        match = binding.match.value if binding.match is not None else "all"
        return f"{match}: {pairs}" if pairs else match
    return binding.key


def graph_of(spec: Spec) -> Graph:
    """The spec's topology as a graph: declared objects first, in the spec's order."""
    build = _Builder()
    for exchange in spec.exchanges.values():
        build.add(NodeKind.EXCHANGE, exchange.name, exchange.type.value)
    for queue in spec.queues.values():
        build.add(NodeKind.QUEUE, queue.name, queue.type.value)
    for service in spec.services.values():
        build.add(NodeKind.SERVICE, service.name)
    for binding in spec.bindings:
        source = build.exchange(binding.source)
        if binding.destination_type == "exchange":
            target = build.exchange(binding.destination)
        else:
            target = build.queue(binding.destination)
        build.edge(
            source, target, EdgeKind.BINDING, binding_label(binding), runtime=binding.runtime
        )
    backs = _retry_backs(spec)
    for queue in spec.queues.values():
        if queue.name in backs:
            continue  # drawn as the way back from the delay, below
        dlx, dlrk = dead_letter_of(spec, queue.name)
        if dlx is not None and isinstance(dlx.value, str):
            label = "dead-letter" if dlrk is None else f"dead-letter: {_value(dlrk.value)}"
            build.edge(
                build.queue(queue.name), build.exchange(dlx.value), EdgeKind.DEAD_LETTER, label
            )
    for queue in spec.queues.values():
        for delay, name in dict.fromkeys(queue.retry_queues):
            if name in spec.queues:
                label = retry_label(delay)
                build.edge(
                    build.queue(queue.name), build.queue(name), EdgeKind.RETRY, f"retry {label}"
                )
                if name in backs:
                    build.edge(
                        build.queue(name),
                        build.queue(queue.name),
                        EdgeKind.RETRY_BACK,
                        f"after {label}",
                    )
    for exchange in spec.exchanges.values():
        alternate = alternate_of(spec, exchange.name)
        if alternate is not None and isinstance(alternate.value, str):
            build.edge(
                build.exchange(exchange.name),
                build.exchange(alternate.value),
                EdgeKind.ALTERNATE,
                "alternate",
            )
    for service in spec.services.values():
        me = build.add(NodeKind.SERVICE, service.name)
        for name in service.publishes:
            message = spec.messages.get(name)
            if message is None:
                continue
            label = f"{name}: {message.routing_key}" if message.routing_key else name
            build.edge(me, build.exchange(message.exchange), EdgeKind.PUBLISHES, label)
        for queue_name, messages in service.consumes.items():
            build.edge(build.queue(queue_name), me, EdgeKind.CONSUMES, ", ".join(messages))
    return Graph(tuple(build.nodes.values()), tuple(build.edges))


def _retry_backs(spec: Spec) -> dict[str, str]:
    """Retry queue → its queue, for each retry queue whose effective dead-letter route
    leads back to its queue (the default exchange, keyed with the queue's name)."""
    backs: dict[str, str] = {}
    for queue in spec.queues.values():
        if queue.retry_of is None:
            continue
        dlx, dlrk = dead_letter_of(spec, queue.name)
        if (
            dlx is not None
            and dlx.value == ""
            and dlrk is not None
            and dlrk.value == queue.retry_of
        ):
            backs[queue.name] = queue.retry_of
    return backs


# -- Mermaid -------------------------------------------------------------------------

#: Characters written as themselves in a quoted Mermaid label; every other ASCII
#: character (quotes, brackets, ``#``, ``|``, ``<``, ``&``, controls ...) becomes an
#: entity code ``#NN;``, which Mermaid decodes.  Non-ASCII printable text stays as is.
_MERMAID_SAFE = re.compile(r"[A-Za-z0-9 _.,:;/*+=@{}()\-]")


def mermaid_text(text: str) -> str:
    """``text`` for a quoted Mermaid label: a newline as ``<br>``, the rest safe."""
    return "<br>".join(
        "".join(
            ch
            if _MERMAID_SAFE.fullmatch(ch) or (ord(ch) > 127 and ch.isprintable())
            else f"#{ord(ch)};"
            for ch in line
        )
        for line in text.split("\n")
    )


_MERMAID_SHAPE: Mapping[NodeKind, tuple[str, str]] = {
    NodeKind.EXCHANGE: ("{{", "}}"),
    NodeKind.QUEUE: ("[(", ")]"),
    NodeKind.SERVICE: ("([", "])"),
}

_MERMAID_ARROW: Mapping[EdgeKind, str] = {
    EdgeKind.BINDING: "-->",
    EdgeKind.DEAD_LETTER: "==>",
    EdgeKind.ALTERNATE: "==>",
    EdgeKind.PUBLISHES: "-->",
    EdgeKind.CONSUMES: "-->",
    EdgeKind.RETRY: "-.->",
    EdgeKind.RETRY_BACK: "-.->",
}


def mermaid(graph: Graph) -> str:
    """The graph as a Mermaid flowchart (left to right)."""
    lines = ["flowchart LR"]
    for node in graph.nodes:
        opening, closing = _MERMAID_SHAPE[node.kind]
        lines.append(f'    {node.id}{opening}"{mermaid_text(node.label)}"{closing}')
    for edge in graph.edges:
        arrow = "-.->" if edge.runtime else _MERMAID_ARROW[edge.kind]
        label = f'|"{mermaid_text(edge.label)}"|' if edge.label else ""
        lines.append(f"    {edge.source} {arrow}{label} {edge.target}")
    return "\n".join(lines) + "\n"


# -- Graphviz dot --------------------------------------------------------------------


def dot_text(text: str) -> str:
    """``text`` for a double-quoted dot string: ``\\`` and ``"`` escaped, a newline
    as dot's ``\\n``, other control characters as U+FFFD (dot has no escape for them)."""
    out: list[str] = []
    for ch in text:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif not ch.isprintable() and ch != " ":
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


_DOT_SHAPE: Mapping[NodeKind, str] = {
    NodeKind.EXCHANGE: "hexagon",
    NodeKind.QUEUE: "cylinder",
    NodeKind.SERVICE: "box",
}

_DOT_STYLE: Mapping[EdgeKind, str] = {
    EdgeKind.BINDING: "solid",
    EdgeKind.DEAD_LETTER: "bold",
    EdgeKind.ALTERNATE: "bold",
    EdgeKind.PUBLISHES: "solid",
    EdgeKind.CONSUMES: "solid",
    EdgeKind.RETRY: "dotted",
    EdgeKind.RETRY_BACK: "dotted",
}


def dot(graph: Graph) -> str:
    """The graph as a Graphviz digraph (left to right)."""
    lines = ["digraph topology {", "    rankdir=LR;"]
    for node in graph.nodes:
        style = "" if node.declared else ", style=dashed"
        lines.append(
            f'    {node.id} [label="{dot_text(node.label)}", shape={_DOT_SHAPE[node.kind]}{style}];'
        )
    for edge in graph.edges:
        style = "dashed" if edge.runtime else _DOT_STYLE[edge.kind]
        lines.append(
            f'    {edge.source} -> {edge.target} [label="{dot_text(edge.label)}", style={style}];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


#: The renderers by ``--format`` name.
RENDERERS: Mapping[str, Callable[[Graph], str]] = {"mermaid": mermaid, "dot": dot}


def render(spec: Spec, fmt: str = "mermaid") -> str:
    """The spec's diagram in ``fmt`` (``"mermaid"`` or ``"dot"``)."""
    renderer = RENDERERS.get(fmt)
    if renderer is None:
        raise InvalidArgument(f"no diagram format {fmt!r}: use one of {', '.join(RENDERERS)}")
    return renderer(graph_of(spec))
