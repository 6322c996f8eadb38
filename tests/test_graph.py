"""``rabbitry graph``: the graph model of a spec, and its Mermaid and dot renderings.

Each rendering is read back here by a small parser of the exact line shapes the
renderers promise (a node: id, shape, one quoted label; an edge: two ids, an
arrow, an optional quoted label), decoding each label by the format's own
escaping rules.  A name whose quotes, brackets, pipes or ``#`` leaked into the
syntax would not parse, or would decode to another name.  Graphviz itself checks
the dot output too (``./run test`` installs Graphviz; where it cannot, that test skips).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rabbitry.check import load_spec
from rabbitry.graph import (
    Edge,
    EdgeKind,
    Graph,
    Node,
    NodeKind,
    binding_label,
    dot,
    graph_of,
    mermaid,
    render,
)
from rabbitry.spec._retry import retry_queue
from rabbitry.spec.model import (
    Binding,
    Exchange,
    ExchangeType,
    HeadersMatch,
    Message,
    Queue,
    QueueType,
    Service,
    Spec,
    retry_label,
)
from specs import FLAGSHIP, run_cli, write_spec

# -- reading the renderings back --------------------------------------------------------

_MERMAID_NODE = re.compile(r'    ([a-z][0-9]+)(\{\{|\[\(|\(\[)"([^"|]*)"(\}\}|\)\]|\]\))')
_MERMAID_EDGE = re.compile(r'    ([a-z][0-9]+) (-->|==>|-\.->)(?:\|"([^"|]*)"\|)? ([a-z][0-9]+)')
_MERMAID_CLOSE = {"{{": "}}", "[(": ")]", "([": "])"}
_MERMAID_SHAPES = {"{{": NodeKind.EXCHANGE, "[(": NodeKind.QUEUE, "([": NodeKind.SERVICE}


def _mermaid_decode(text: str) -> str:
    """A quoted Mermaid label as Mermaid shows it: ``<br>`` a line break, ``#NN;`` a
    character.  Nothing else may look like markup: no raw ``<``, ``>``, ``&``, and a
    ``#`` only as an entity code."""
    lines = text.split("<br>")
    for line in lines:
        assert not re.search(r"[<>&`\x00-\x1f\x7f]", line), text
        assert re.fullmatch(r"(?:[^#]|#[0-9]+;)*", line), text
    return "\n".join(re.sub(r"#([0-9]+);", lambda m: chr(int(m.group(1))), line) for line in lines)


def _read_mermaid(text: str) -> tuple[dict[str, tuple[NodeKind, str]], list[Any]]:
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    nodes: dict[str, tuple[NodeKind, str]] = {}
    edges: list[tuple[str, str, str, str]] = []
    for line in lines[1:]:
        node = _MERMAID_NODE.fullmatch(line)
        edge = _MERMAID_EDGE.fullmatch(line)
        assert node or edge, f"not a node or edge line: {line!r}"
        if node:
            node_id, opening, label, closing = node.groups()
            assert _MERMAID_CLOSE[opening] == closing
            assert node_id not in nodes
            nodes[node_id] = (_MERMAID_SHAPES[opening], _mermaid_decode(label))
        elif edge:
            source, arrow, label, target = edge.groups()
            edges.append((source, arrow, _mermaid_decode(label or ""), target))
    return nodes, edges


_DOT_STRING = r'"((?:[^"\\\n]|\\.)*)"'
_DOT_NODE = re.compile(
    rf"    ([a-z][0-9]+) \[label={_DOT_STRING}, shape=(hexagon|cylinder|box)(, style=dashed)?\];"
)
_DOT_EDGE = re.compile(
    rf"    ([a-z][0-9]+) -> ([a-z][0-9]+) \[label={_DOT_STRING}, "
    r"style=(solid|bold|dashed|dotted)\];"
)
_DOT_SHAPES = {"hexagon": NodeKind.EXCHANGE, "cylinder": NodeKind.QUEUE, "box": NodeKind.SERVICE}


def _dot_decode(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def _read_dot(text: str) -> tuple[dict[str, tuple[NodeKind, str]], list[Any]]:
    lines = text.splitlines()
    assert lines[:2] == ["digraph topology {", "    rankdir=LR;"]
    assert lines[-1] == "}"
    nodes: dict[str, tuple[NodeKind, str]] = {}
    edges: list[tuple[str, str, str, str]] = []
    for line in lines[2:-1]:
        node = _DOT_NODE.fullmatch(line)
        edge = _DOT_EDGE.fullmatch(line)
        assert node or edge, f"not a node or edge line: {line!r}"
        if node:
            node_id, label, shape, _ = node.groups()
            assert node_id not in nodes
            nodes[node_id] = (_DOT_SHAPES[shape], _dot_decode(label))
        elif edge:
            source, target, label, style = edge.groups()
            edges.append((source, style, _dot_decode(label), target))
    return nodes, edges


def _agrees(graph: Graph) -> None:
    """Both renderings hold exactly the graph's nodes and edges, labels intact."""
    for read, shown in ((_read_mermaid(mermaid(graph)), str), (_read_dot(dot(graph)), _in_dot)):
        nodes, edges = read
        assert nodes == {n.id: (n.kind, shown(n.label)) for n in graph.nodes}
        assert Counter((s, label, t) for s, _, label, t in edges) == Counter(
            (e.source, shown(e.label), e.target) for e in graph.edges
        )


def _in_dot(text: str) -> str:
    """What dot shows of ``text``: it has no escape for a control character other than
    a newline, so the renderer writes U+FFFD for one."""
    return "".join(ch if ch.isprintable() or ch in " \n" else "\ufffd" for ch in text)


def _dot_parses(text: str, tmp: Path) -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed (the OS package graphviz; .ci/run has none)")
    source = tmp / "graph.dot"
    source.write_text(text, encoding="utf-8")
    done = subprocess.run(
        ["dot", "-Tsvg", str(source)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "<svg" in done.stdout


# -- the flagship -----------------------------------------------------------------------


def _edges(graph: Graph, kind: EdgeKind) -> set[tuple[str, str, str]]:
    names = {n.id: n.name for n in graph.nodes}
    return {(names[e.source], e.label, names[e.target]) for e in graph.edges if e.kind is kind}


def test_the_flagship_diagram_holds_the_whole_topology() -> None:
    spec = load_spec(FLAGSHIP)
    graph = graph_of(spec)
    assert {(n.kind, n.name, n.type) for n in graph.nodes} == {
        *((NodeKind.EXCHANGE, e.name, e.type.value) for e in spec.exchanges.values()),
        *((NodeKind.QUEUE, q.name, q.type.value) for q in spec.queues.values()),
        *((NodeKind.SERVICE, s, "") for s in spec.services),
    }
    assert _edges(graph, EdgeKind.BINDING) == {
        ("jobs.new", "job.#", "jobs.ready"),
        ("jobs.dead", "", "jobs.dead-letters"),
        ("jobs.status", "{job_id}", "job-status"),
        ("jobs.control", "{job_id}", "job-control"),
    }
    runtime = {(e.source, e.target) for e in graph.edges if e.runtime}
    assert len(runtime) == 2
    retries = _retry_edges(spec)
    # jobs.ready's dead-letter exchange is set by a policy, the other two by argument.
    assert _edges(graph, EdgeKind.DEAD_LETTER) == {
        (q, "dead-letter", "jobs.dead") for q in ("jobs.ready", "job-status", "job-control")
    }
    assert _edges(graph, EdgeKind.PUBLISHES) == {
        ("server", "Start: job.{job_type}", "jobs.new"),
        ("server", "Stop: {job_id}", "jobs.control"),
        ("worker", "StartSuccess: {job_id}", "jobs.status"),
        ("worker", "Update: {job_id}", "jobs.status"),
        ("worker", "Finished: {job_id}", "jobs.status"),
    }
    assert _edges(graph, EdgeKind.CONSUMES) == {
        ("job-status", "StartSuccess, Update, Finished", "server"),
        ("jobs.ready", "Start", "worker"),
        ("job-control", "Stop", "worker"),
    }
    assert (_edges(graph, EdgeKind.RETRY), _edges(graph, EdgeKind.RETRY_BACK)) == retries
    _agrees(graph)
    text = mermaid(graph)
    assert text.count("-.->") == 2 + 2 * len(retries[0])
    assert text.count("==>") == 3


def _retry_edges(spec: Spec) -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str]]]:
    """The retry edges a spec's ``retry:`` lists should give: to each retry queue, and back."""
    pairs = {
        (q.name, retry_label(delay), name)
        for q in spec.queues.values()
        for delay, name in q.retry_queues
    }
    return (
        {(q, f"retry {label}", r) for q, label, r in pairs},
        {(r, f"after {label}", q) for q, label, r in pairs if spec.queues[r].retry_of == q},
    )


def test_the_flagship_dot_parses_with_graphviz(tmp_path: Path) -> None:
    _dot_parses(render(load_spec(FLAGSHIP), "dot"), tmp_path)


# -- hostile names ----------------------------------------------------------------------

_HOSTILE = [
    'say "hi"',
    "a]b[c",
    "x{{y}}z",
    "([q])",
    "pipe|name",
    "end",
    "#quot;",
    "a#35;b",
    "<b>bold</b> & co",
    "back\\slash\\n",
    "`tick`",
    "ünïcödé → 队列 🐇",
    "semi;colon -->",
    "graph LR",
    "tab\there\nnew line\x1f",
]


def _hostile_spec() -> Spec:
    exchanges = {
        name: Exchange(name, ExchangeType.TOPIC, arguments={"alternate-exchange": _HOSTILE[0]})
        for name in _HOSTILE
    }
    queues = {
        name: Queue(
            name,
            QueueType.QUORUM,
            arguments={"x-dead-letter-exchange": name, "x-dead-letter-routing-key": name},
        )
        for name in _HOSTILE
    }
    bindings = tuple(Binding(name, name, key=f"{name}.{{id}}") for name in _HOSTILE)
    messages = {name: Message(name, Path("s.json"), name, routing_key=name) for name in _HOSTILE}
    services = {
        name: Service(name, publishes=(name,), consumes={name: (name,)}) for name in _HOSTILE
    }
    return Spec(
        Path("topology.yaml"),
        exchanges=exchanges,
        queues=queues,
        bindings=bindings,
        messages=messages,
        services=services,
    )


def test_names_with_quotes_brackets_and_unicode_survive_both_formats() -> None:
    graph = graph_of(_hostile_spec())
    assert len(graph.nodes) == 3 * len(_HOSTILE)
    assert all(re.fullmatch(r"[eqs][0-9]+", n.id) for n in graph.nodes)
    _agrees(graph)
    assert "🐇" in mermaid(graph)
    assert "队列" in dot(graph)


def test_hostile_names_in_dot_parse_with_graphviz(tmp_path: Path) -> None:
    _dot_parses(dot(graph_of(_hostile_spec())), tmp_path)


def test_a_headers_binding_shows_its_match_and_headers() -> None:
    binding = Binding(
        "h", "q", match=HeadersMatch.ANY, headers={"format": "pdf", "size": 3, "flag": True}
    )
    assert binding_label(binding) == "any: format=pdf, size=3, flag=True"
    spec = Spec(
        Path("t.yaml"),
        exchanges={"h": Exchange("h", ExchangeType.HEADERS)},
        queues={"q": Queue("q")},
        bindings=(binding,),
    )
    assert _edges(graph_of(spec), EdgeKind.BINDING) == {("h", binding_label(binding), "q")}


def test_named_but_undeclared_exchanges_get_one_node_each() -> None:
    spec = Spec(
        Path("t.yaml"),
        queues={"q": Queue("q", arguments={"x-dead-letter-exchange": ""})},
        bindings=(Binding("amq.topic", "q", key="a.*"), Binding("amq.topic", "q", key="b.*")),
    )
    graph = graph_of(spec)
    assert {(n.name, n.type, n.declared) for n in graph.nodes} == {
        ("q", "classic", True),
        ("amq.topic", "topic", False),
        ("", "direct", False),
    }
    default = graph.node(NodeKind.EXCHANGE, "")
    assert default is not None
    assert default.label == "(default)\n(direct)"
    assert ", style=dashed];" in dot(graph)


# -- random specs -----------------------------------------------------------------------

_NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=12)


@st.composite
def _specs(draw: st.DrawFn) -> Spec:
    exchange_names = draw(st.lists(_NAMES.filter(bool), min_size=1, max_size=5, unique=True))
    queue_names = draw(st.lists(_NAMES, min_size=1, max_size=5, unique=True))
    service_names = draw(st.lists(_NAMES, max_size=3, unique=True))
    some_exchange = st.sampled_from(exchange_names)
    exchanges = {
        name: Exchange(
            name,
            draw(st.sampled_from(ExchangeType)),
            arguments=draw(
                st.one_of(st.just({}), some_exchange.map(lambda a: {"alternate-exchange": a}))
            ),
        )
        for name in exchange_names
    }
    queues: dict[str, Queue] = {}
    for name in queue_names:
        arguments: dict[str, Any] = {}
        if draw(st.booleans()):
            arguments["x-dead-letter-exchange"] = draw(some_exchange)
            if draw(st.booleans()):
                arguments["x-dead-letter-routing-key"] = draw(_NAMES)
        kind = draw(st.sampled_from(QueueType))
        delays = draw(st.lists(st.integers(1, 10**7), max_size=3)) if kind != "stream" else []
        queues[name] = Queue(name, kind, arguments=arguments, retry=tuple(delays))
        for delay in dict.fromkeys(delays):
            waiting = retry_queue(queues[name], delay)
            queues.setdefault(waiting.name, waiting)
    bindings = []
    for _ in range(draw(st.integers(0, 8))):
        to_exchange = draw(st.booleans())
        destination = draw(some_exchange if to_exchange else st.sampled_from(queue_names))
        headers = draw(st.dictionaries(_NAMES, _NAMES | st.integers(), max_size=2))
        bindings.append(
            Binding(
                draw(some_exchange),
                destination,
                "exchange" if to_exchange else "queue",
                key=draw(_NAMES | _NAMES.map(lambda k: k + "{id}")),
                match=draw(st.none() | st.sampled_from(HeadersMatch)) if headers else None,
                headers=headers,
            )
        )
    messages = {
        f"M{n}": Message(f"M{n}", Path("s.json"), draw(some_exchange), draw(_NAMES))
        for n in range(3)
    }
    services = {
        name: Service(
            name,
            publishes=tuple(draw(st.lists(st.sampled_from(sorted(messages)), unique=True))),
            consumes=draw(
                st.dictionaries(
                    st.sampled_from(queue_names),
                    st.lists(st.sampled_from(sorted(messages)), max_size=2).map(tuple),
                    max_size=2,
                )
            ),
        )
        for name in service_names
    }
    return Spec(
        Path("t.yaml"),
        exchanges=exchanges,
        queues=queues,
        bindings=tuple(bindings),
        messages=messages,
        services=services,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_specs())
def test_every_object_is_one_node_and_every_binding_one_edge(spec: Spec) -> None:
    graph = graph_of(spec)
    assert len({n.id for n in graph.nodes}) == len(graph.nodes)
    counts = Counter((n.kind, n.name) for n in graph.nodes)
    for kind, names in (
        (NodeKind.EXCHANGE, spec.exchanges),
        (NodeKind.QUEUE, spec.queues),
        (NodeKind.SERVICE, spec.services),
    ):
        for name in names:
            assert counts[(kind, name)] == 1
    assert all(count == 1 for count in counts.values())
    nodes = {n.id: n for n in graph.nodes}

    def named(edge: Edge) -> tuple[str, str, str, str, bool]:
        source, target = nodes[edge.source], nodes[edge.target]
        return (source.name, target.kind.value, target.name, edge.label, edge.runtime)

    bindings = [e for e in graph.edges if e.kind is EdgeKind.BINDING]
    assert Counter(named(e) for e in bindings) == Counter(
        (b.source, b.destination_type, b.destination, binding_label(b), b.runtime)
        for b in spec.bindings
    )
    dead_letters = {
        (nodes[e.source].name, nodes[e.target].name)
        for e in graph.edges
        if e.kind is EdgeKind.DEAD_LETTER
    }
    retries = _retry_edges(spec)
    backs = {r for r, _, _ in retries[1]}
    assert dead_letters == {
        (q.name, q.dead_letter_exchange)
        for q in spec.queues.values()
        if q.dead_letter_exchange and q.name not in backs
    }
    # A retry queue's way back (the default exchange, keyed with its queue) is drawn as
    # what it means, not as a dead-letter edge to the default exchange.
    assert (_edges(graph, EdgeKind.RETRY), _edges(graph, EdgeKind.RETRY_BACK)) == retries
    alternates = {
        (nodes[e.source].name, nodes[e.target].name)
        for e in graph.edges
        if e.kind is EdgeKind.ALTERNATE
    }
    assert alternates == {
        (x.name, x.alternate_exchange) for x in spec.exchanges.values() if x.alternate_exchange
    }
    _agrees(graph)


def _node(graph: Graph, kind: NodeKind, name: str) -> Node:
    found = graph.node(kind, name)
    assert found is not None
    return found


# -- the command ------------------------------------------------------------------------


def test_cli_prints_mermaid_and_writes_dot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = load_spec(FLAGSHIP)
    code, out, err = run_cli(["graph", str(FLAGSHIP)], capsys)
    assert (code, err) == (0, "")
    assert out == mermaid(graph_of(spec))
    target = tmp_path / "t.dot"
    code, out, err = run_cli(
        ["graph", "-f", str(FLAGSHIP), "--format", "dot", "-o", str(target)], capsys
    )
    assert (code, out, err) == (0, "", "")
    assert target.read_text(encoding="utf-8") == dot(graph_of(spec))


def test_cli_shows_a_policy_alternate_and_a_dead_letter_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec(
        tmp_path,
        """
        version: 1
        exchanges:
          orders: {type: direct}
          unrouted: {type: fanout}
        queues:
          orders.in: {dead_letter: unrouted, dead_letter_routing_key: "dead.orders"}
          lost: {}
        policies:
          catch-all:
            exchanges: [orders]
            apply_to: exchanges
            alternate_exchange: unrouted
        bindings:
          - {from: orders, queue: orders.in, key: "new"}
          - {from: unrouted, queue: lost}
        """,
    )
    code, out, err = run_cli(["graph", str(path)], capsys)
    assert code == 0, err
    graph = graph_of(load_spec(path))
    assert _edges(graph, EdgeKind.ALTERNATE) == {("orders", "alternate", "unrouted")}
    assert _edges(graph, EdgeKind.DEAD_LETTER) == {
        ("orders.in", "dead-letter: dead.orders", "unrouted")
    }
    orders = _node(graph, NodeKind.EXCHANGE, "orders")
    unrouted = _node(graph, NodeKind.EXCHANGE, "unrouted")
    assert f'{orders.id} ==>|"alternate"| {unrouted.id}' in out


def test_retries_are_dotted_edges_to_each_retry_queue_and_back(tmp_path: Path) -> None:
    path = write_spec(
        tmp_path,
        """
        version: 1
        exchanges:
          dl: {type: fanout}
        queues:
          jobs: {type: quorum, dead_letter: dl, retry: [5s, 30s, 5s]}
        """,
    )
    graph = graph_of(load_spec(path))
    assert _edges(graph, EdgeKind.RETRY) == {
        ("jobs", "retry 5s", "jobs.retry.5s"),
        ("jobs", "retry 30s", "jobs.retry.30s"),
    }
    assert _edges(graph, EdgeKind.RETRY_BACK) == {
        ("jobs.retry.5s", "after 5s", "jobs"),
        ("jobs.retry.30s", "after 30s", "jobs"),
    }
    # The way back is the retry queue's dead-letter route, drawn for what it means: no
    # dead-letter edge to the default exchange, which gets no node.
    assert _edges(graph, EdgeKind.DEAD_LETTER) == {("jobs", "dead-letter", "dl")}
    assert graph.node(NodeKind.EXCHANGE, "") is None
    assert len(graph.edges) == 5  # a delay written twice is one retry queue, drawn once
    _agrees(graph)
    ids = {n.name: n.id for n in graph.nodes}
    jobs, waiting = ids["jobs"], ids["jobs.retry.5s"]
    assert f'    {jobs} -.->|"retry 5s"| {waiting}' in mermaid(graph).splitlines()
    assert f'    {waiting} -> {jobs} [label="after 5s", style=dotted];' in dot(graph).splitlines()
    assert f'    {jobs} -> {ids["dl"]} [label="dead-letter", style=bold];' in dot(graph)
    _dot_parses(dot(graph), tmp_path)


def test_cli_on_a_broken_spec_exits_1_without_a_diagram(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec(tmp_path, "version: 1\nbindings:\n  - {from: nowhere, queue: none}\n")
    code, out, err = run_cli(["graph", str(path)], capsys)
    assert code == 1
    assert out == ""
    assert "nowhere" in err


def test_cli_on_an_unwritable_output_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["graph", str(FLAGSHIP), "-o", "/proc/rabbitry-graph.mmd"], capsys)
    assert code == 1
    assert out == ""
    assert "/proc/rabbitry-graph.mmd" in err


def test_the_readme_shows_the_flagship_diagram_as_it_is() -> None:
    readme = (FLAGSHIP.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### `rabbitry graph") :]
    block = section[section.index("```mermaid\n") + len("```mermaid\n") :]
    assert block[: block.index("```")] == render(load_spec(FLAGSHIP))
