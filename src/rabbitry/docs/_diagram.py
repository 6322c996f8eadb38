"""The topology diagram as inline SVG, drawn once, when the page is written.

Graphviz's ``dot`` lays out ``rabbitry.graph``'s dot text here, so the page
needs no script, no CDN and no network when it is opened.  Each node gets a
link to its entry on the page (``URL``, added as a second statement about the
node, which dot merges with the first) and a fill by kind.

The SVG is user text laid out by another program, so it is not trusted
blindly before it goes into the page: it must parse as XML, hold only the
elements and attributes dot writes for a diagram, and link only within the
page.  Names reach it only through ``graph.dot_text`` and dot's own XML
escaping; the page's Content-Security-Policy forbids scripts besides.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from xml.etree import ElementTree

from rabbitry.errors import RabbitryError
from rabbitry.graph import Graph, NodeKind, dot

__all__ = ["DOT_TIMEOUT", "GraphvizMissing", "dot_with_links", "draw_svg", "safe_svg"]

#: Seconds dot may take; a spec of thousands of objects lays out in a few.
DOT_TIMEOUT = 120.0

#: How a node of each kind is filled (the page's legend uses the same colours).
_FILL: Mapping[NodeKind, str] = {
    NodeKind.EXCHANGE: "#fde7c8",
    NodeKind.QUEUE: "#d7ecfb",
    NodeKind.SERVICE: "#dff3df",
}

_FONT = "Helvetica,Arial,sans-serif"

_SVG = "{http://www.w3.org/2000/svg}"
_XLINK = "{http://www.w3.org/1999/xlink}"
#: The elements dot's SVG output is made of; anything else is refused.
_ELEMENTS = frozenset(
    _SVG + name
    for name in ("svg", "g", "title", "a", "text", "path", "polygon", "polyline", "ellipse")
)
_ATTRIBUTES = frozenset(
    {
        "width",
        "height",
        "viewBox",
        "id",
        "class",
        "transform",
        "fill",
        "stroke",
        "stroke-width",
        "stroke-dasharray",
        "points",
        "d",
        "cx",
        "cy",
        "rx",
        "ry",
        "x",
        "y",
        "text-anchor",
        "font-family",
        "font-size",
        "font-weight",
        "font-style",
        f"{_XLINK}href",
        f"{_XLINK}title",
        "target",
    }
)


class GraphvizMissing(RabbitryError):
    """``dot`` is not installed: the diagram cannot be drawn."""

    def __init__(self) -> None:
        super().__init__(
            "rabbitry docs draws the diagram with Graphviz's `dot`, which is not installed: "
            "install graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install "
            "graphviz; see https://graphviz.org/download/) and run it again"
        )


def dot_with_links(graph: Graph, anchors: Mapping[tuple[NodeKind, str], str]) -> str:
    """``graph.dot(graph)`` with fonts, fills and each node's link to ``#anchor``."""
    lines = dot(graph).rstrip("\n").split("\n")
    assert lines[-1] == "}", "rabbitry.graph.dot ends its digraph with a lone }"
    defaults = [  # before the nodes and edges: dot applies defaults to what follows
        f'    node [fontname="{_FONT}", fontsize=12, margin="0.12,0.06"];',
        f'    edge [fontname="{_FONT}", fontsize=10, color="#555555", fontcolor="#333333"];',
    ]
    # A graph attribute holds for the whole graph, the last statement winning: top to
    # bottom suits a page, which scrolls down (left to right grows too wide to read).
    extra = [
        f'    graph [fontname="{_FONT}", bgcolor="transparent", rankdir=TB, nodesep=0.35,'
        " ranksep=0.5];"
    ]
    for node in graph.nodes:
        style = "filled" if node.declared else "filled,dashed"
        anchor = anchors.get((node.kind, node.name))
        link = f', URL="#{anchor}", target="_self"' if anchor is not None else ""
        extra.append(f'    {node.id} [style="{style}", fillcolor="{_FILL[node.kind]}"{link}];')
    return "\n".join([*lines[:1], *defaults, *lines[1:-1], *extra, "}"]) + "\n"


def draw_svg(dot_source: str) -> str:
    """``dot -Tsvg`` of ``dot_source``: the ``<svg>`` element alone, checked by ``safe_svg``.

    ``GraphvizMissing`` when dot is not installed; ``RabbitryError`` when it fails.
    """
    program = shutil.which("dot")
    if program is None:
        raise GraphvizMissing()
    try:
        done = subprocess.run(
            [program, "-Tsvg"],
            input=dot_source.encode("utf-8"),
            capture_output=True,
            timeout=DOT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RabbitryError(
            f"Graphviz's dot did not lay out the diagram within {DOT_TIMEOUT:.0f} s"
        ) from None
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RabbitryError(
            f"Graphviz's dot failed (exit {done.returncode}): "
            f"{reason[0] if reason else 'no message'}; this is a bug in rabbitry, please report it"
        )
    return safe_svg(done.stdout.decode("utf-8"))


def safe_svg(text: str) -> str:
    """The ``<svg>`` element of dot's output (no XML prolog or DOCTYPE, which do not
    belong inside HTML), after checking it holds nothing a diagram does not need."""
    start = text.find("<svg")
    if start < 0:
        raise RabbitryError("Graphviz's dot wrote no <svg> element")
    svg = text[start:].strip()
    try:
        root = ElementTree.fromstring(svg)
    except ElementTree.ParseError as exc:
        raise RabbitryError(f"Graphviz's dot wrote SVG that does not parse: {exc}") from None
    for element in root.iter():
        if element.tag not in _ELEMENTS:
            raise RabbitryError(f"unexpected element {element.tag!r} in dot's SVG")
        for name, value in element.attrib.items():
            if name not in _ATTRIBUTES:
                raise RabbitryError(f"unexpected attribute {name!r} in dot's SVG")
            if name == f"{_XLINK}href" and not value.startswith("#"):
                raise RabbitryError(f"a link out of the page in dot's SVG: {value!r}")
    return svg
