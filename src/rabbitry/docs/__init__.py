"""``rabbitry docs``: the spec as one static HTML page, for people.

::

    page = build_page(spec, svg, examples)   # the page's text, from what was drawn
    path = write_docs(spec, out)             # draw the diagram and examples, write out/index.html

One self-contained ``index.html``: CSS inline, the topology diagram inline as
SVG (laid out by Graphviz's ``dot`` when the page is written, so opening it
needs no network, no script and no CDN), and an entry with anchored links for
every message (schema bundled, routing, an example drawn from its generated
strategy and validated), queue (effective settings with their policy, bindings,
consumers), exchange, service and policy.

Every name and description is user text: the template escapes everything
(jinja2 autoescape), the SVG is checked element by element (``_diagram``), and
the page's Content-Security-Policy allows no script at all, so a hostile
description is shown as text and could run nothing even if escaping failed.
The page depends on the spec alone (no date, no absolute path): the same spec
writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import jinja2
from markupsafe import Markup

from rabbitry import __version__
from rabbitry.broker.plan import count_of
from rabbitry.codegen import _replace
from rabbitry.docs._catalogue import Catalogue, anchors_of, catalogue_of
from rabbitry.docs._diagram import GraphvizMissing, dot_with_links, draw_svg
from rabbitry.docs._examples import DRAW_TRIES, Example, draw_examples
from rabbitry.errors import InvalidArgument
from rabbitry.graph import NodeKind
from rabbitry.spec.model import Spec

__all__ = [
    "GENERATOR",
    "PAGE",
    "Catalogue",
    "Example",
    "GraphvizMissing",
    "build_page",
    "catalogue_of",
    "diagram_svg",
    "draw_examples",
    "write_docs",
]

#: The page's file name in ``--out``.
PAGE = "index.html"
#: The ``<meta name="generator">`` of every page: a file without it is never overwritten.
GENERATOR = "rabbitry docs"


def _resource(name: str) -> str:
    """A file of this package (the template, the CSS)."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        loader=jinja2.FunctionLoader(_resource),
    )


def diagram_svg(spec: Spec) -> str:
    """The spec's topology as the page's SVG, each node linking to its entry
    (``GraphvizMissing`` without ``dot``)."""
    catalogue = catalogue_of(spec)
    anchors = anchors_of(spec, catalogue.graph)
    by_kind = {
        (kind, name): anchor
        for (word, name), anchor in anchors.items()
        for kind in NodeKind
        if kind.value == word
    }
    return draw_svg(dot_with_links(catalogue.graph, by_kind))


def build_page(spec: Spec, svg: str, examples: Mapping[str, Example | None]) -> str:
    """The page for ``spec``: ``svg`` (from ``diagram_svg``, inlined as it is) and
    each message's example (``draw_examples``; a message missing here has none)."""
    catalogue = catalogue_of(spec)
    counts = ", ".join(
        count_of(len(entries), word)
        for entries, word in (
            (catalogue.messages, "message"),
            (catalogue.queues, "queue"),
            (catalogue.exchanges, "exchange"),
            (catalogue.services, "service"),
        )
    )
    template = _environment().get_template("page.html.j2")
    return template.render(
        title=f"Catalogue of {spec.path.name}",
        spec_name=spec.path.name,
        counts=counts,
        cat=catalogue,
        svg=Markup(svg),  # checked by _diagram.safe_svg; dot escapes the labels
        examples=dict(examples),
        tries=DRAW_TRIES,
        css=Markup(_resource("style.css")),  # our own file, not user text
        generator=GENERATOR,
        version=__version__,
    )


def _ours(path: Path) -> bool:
    try:
        head = path.read_bytes()[:4096]
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">'.encode() in head


def write_docs(spec: Spec, out: Path) -> Path:
    """Draw the diagram and the examples and write ``out/index.html``; its path.

    ``out`` is made if missing.  An ``index.html`` there that ``rabbitry docs`` did
    not write is not overwritten (``InvalidArgument``).
    """
    if out.exists() and not out.is_dir():
        raise InvalidArgument(f"{out} exists and is not a folder: choose another --out")
    path = out / PAGE
    if path.exists() and not _ours(path):
        raise InvalidArgument(
            f"refusing to overwrite {path}: rabbitry docs did not write it; choose another --out"
        )
    page = build_page(spec, diagram_svg(spec), draw_examples(spec))
    try:
        out.mkdir(parents=True, exist_ok=True)
        _replace(path, page.encode("utf-8", "replace"))
    except OSError as exc:
        raise InvalidArgument(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
