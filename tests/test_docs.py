"""``rabbitry docs``: the static HTML catalogue, read back and opened in Chromium.

The page is read back with a strict walk of the standard library's HTML parser
(every element closed in order, ids, links, each entry's text), and opened in
headless Chromium (``tests/browser.py``, the DevTools protocol over a pipe): it
loads with nothing on the console, the diagram is drawn, every object of the
flagship is on it.  Names and descriptions are user text: random specs of
hostile names and a ``<script>`` description must come out as text.  The
tests that need Graphviz's ``dot`` or Chromium skip, saying so, without them
(``./run test`` installs both).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from browser import chromium, open_page
from rabbitry.check import load_spec
from rabbitry.docs import GENERATOR, PAGE, build_page, diagram_svg, write_docs
from rabbitry.docs._diagram import safe_svg
from rabbitry.errors import RabbitryError
from rabbitry.graph import NodeKind, graph_of
from rabbitry.messaging.contract import Contract
from rabbitry.spec.model import (
    Binding,
    Exchange,
    ExchangeType,
    Message,
    Policy,
    Queue,
    QueueType,
    Service,
    Spec,
)
from specs import FLAGSHIP, ROOT, copy_flagship, edit, run_cli

# -- reading a page back -----------------------------------------------------------------


_VOID = frozenset({"meta", "link", "br", "img", "input", "hr", "col", "area", "base", "wbr"})


@dataclass
class PageFacts:
    #: Every element's tag, in document order (SVG ones included).
    tags: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    #: Every href and xlink:href.
    links: list[str] = field(default_factory=list)
    #: Attribute names starting with ``on`` (event handlers), which the page must not have.
    handlers: list[str] = field(default_factory=list)
    #: id of each <article> → its whole text; the <h3> heading's text alone.
    entries: dict[str, str] = field(default_factory=dict)
    headings: dict[str, str] = field(default_factory=dict)
    text: str = ""


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.facts = PageFacts()
        self.stack: list[str] = []
        self.article: str | None = None
        self.in_heading = False
        self.chunks: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.facts.tags.append(tag)
        values = dict(attrs)
        if values.get("id") is not None:
            self.facts.ids.append(str(values["id"]))
        for name, value in attrs:
            if name in ("href", "xlink:href") and value is not None:
                self.facts.links.append(value)
            if name.startswith("on"):
                self.facts.handlers.append(name)
        if tag == "article":
            self.article = str(values.get("id"))
            self.facts.entries[self.article] = ""
            self.facts.headings[self.article] = ""
        if tag == "h3":
            self.in_heading = True
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, f"</{tag}> closes nothing"
        assert self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1]}>"
        self.stack.pop()
        if tag == "article":
            self.article = None
        if tag == "h3":
            self.in_heading = False

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)
        if self.article is not None:
            self.facts.entries[self.article] += data
            if self.in_heading:
                self.facts.headings[self.article] += data


def read_page(html: str) -> PageFacts:
    """The facts of ``html``; fails if an element is closed out of order or left open."""
    reader = _Reader()
    reader.feed(html)
    reader.close()
    assert reader.stack == [], f"left open: {reader.stack}"
    reader.facts.text = "".join(reader.chunks)
    return reader.facts


def _needs_dot() -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed (the OS package graphviz; ./run test has it)")


def _needs_chromium() -> None:
    _needs_dot()
    if chromium() is None:
        pytest.skip("chromium is not installed (the OS package chromium; ./run test has it)")


def _no_dangling_links(facts: PageFacts) -> None:
    assert len(facts.ids) == len(set(facts.ids)), "an id is used twice"
    for link in facts.links:
        assert link.startswith("#"), f"a link out of the page: {link!r}"
        assert link[1:] in facts.ids, f"a link to no entry: {link!r}"


def _safe(facts: PageFacts) -> None:
    """No element that runs or loads anything, no event handler."""
    for tag in ("script", "iframe", "object", "embed", "img", "link", "foreignobject", "form"):
        assert tag not in facts.tags, f"the page has a <{tag}>"
    assert facts.handlers == []


# -- the flagship ------------------------------------------------------------------------

_FLAGSHIP_PAGE: dict[str, str] = {}


def _flagship_page(tmp: Path) -> str:
    """The flagship's page, written by the command once per session (it draws five
    examples and runs dot: a few seconds)."""
    if "page" not in _FLAGSHIP_PAGE:
        out = tmp / "flagship-docs"
        write_docs(load_spec(FLAGSHIP), out)
        _FLAGSHIP_PAGE["page"] = (out / PAGE).read_text(encoding="utf-8")
    return _FLAGSHIP_PAGE["page"]


def test_the_flagship_page_has_an_entry_for_every_object(tmp_path: Path) -> None:
    _needs_dot()
    spec = load_spec(FLAGSHIP)
    facts = read_page(_flagship_page(tmp_path))
    _no_dangling_links(facts)
    _safe(facts)
    headings = {re.sub(r"\s+", " ", h).strip() for h in facts.headings.values()}
    for name in spec.messages:
        assert f"message {name}" in headings
    for name, queue in spec.queues.items():
        assert any(h.startswith(f"queue {name} {queue.type.value}") for h in headings)
    for name, exchange in spec.exchanges.items():
        assert any(h.startswith(f"exchange {name} {exchange.type.value}") for h in headings)
    for name in spec.services:
        assert f"service {name}" in headings
    assert "policy jobs-ready priority 0" in headings
    # the policy's settings, with the policy they come from, on the queue they apply to
    ready = facts.entries["queue-jobs.ready"]
    assert "delivery-limit5policy jobs-ready" in ready
    assert "dead-letter-exchangejobs.deadpolicy jobs-ready" in ready
    assert "dead-letter-exchangejobs.deadargument" in facts.entries["queue-job-status"]
    # every node of the diagram links to its entry
    svg_links = re.findall(r'xlink:href="#([^"]+)"', _flagship_page(tmp_path))
    retry_queues = {name for _, name in spec.queues["jobs.ready"].retry_queues}
    assert len(svg_links) == len(graph_of(spec).nodes) == 10 + len(retry_queues)


def test_each_example_fits_its_schema_and_fills_its_routing_key(tmp_path: Path) -> None:
    _needs_dot()
    spec = load_spec(FLAGSHIP)
    contract = Contract.from_spec(spec)
    page = _flagship_page(tmp_path)
    examples = re.findall(r'<pre class="json example"><code>(.*?)</code></pre>', page, re.S)
    sent = re.findall(r'<p class="sent">sent with routing key <code>(.*?)</code>', page)
    assert len(examples) == len(sent) == len(spec.messages)
    for name, text, key in zip(spec.messages, examples, sent, strict=True):
        payload = json.loads(_unescape(text))
        assert contract.message(name).faults(payload) == []
        assert _unescape(key) == contract.message(name).routing_key_for(payload)
    start = json.loads(_unescape(examples[0]))
    assert set(start) >= {"job_id", "job_type", "steps", "submitted_at"}


def _unescape(text: str) -> str:
    import html  # noqa: PLC0415

    return html.unescape(text)


def test_the_same_spec_writes_the_same_bytes_in_another_process(tmp_path: Path) -> None:
    """hypothesis's find with a fixed Random and no database: the examples, and so the
    page, do not depend on the run.  Another process (and another working folder)
    writes the same bytes; hypothesis's caches do not land in the working folder."""
    _needs_dot()
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_STORAGE_DIRECTORY"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    done = subprocess.run(
        [sys.executable, "-m", "rabbitry", "docs", str(FLAGSHIP), "--out", "site"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {Path('site') / PAGE}\n"
    assert (tmp_path / "site" / PAGE).read_text(encoding="utf-8") == _flagship_page(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "site"]
    assert (tmp_path / "cache" / "rabbitry" / "hypothesis").is_dir()


# -- hostile text ------------------------------------------------------------------------

_SCRIPT = "<script>document.title='pwned'</script>"
_HOSTILE_NAMES = ['a"b', "<b>x</b>", "q&amp;", "it's", "ünï 队列 🐇", "x --> y"]


def _hostile_spec(tmp: Path) -> Path:
    spec = copy_flagship(tmp)
    edit(
        spec,
        '"Dispatches jobs, follows them, stops them."',
        f'"{_SCRIPT} <img src=x onerror=alert(1)> & \\" \'"',
    )
    edit(spec, "jobs.dead-letters:\n", '"<jobs.dead-letters onload=alert(1)>":\n')
    edit(spec, "queue: jobs.dead-letters}", 'queue: "<jobs.dead-letters onload=alert(1)>"}')
    edit(
        spec,
        'description: "START: run a job.',
        f'description: "</code></pre>{_SCRIPT}START: run a job.',
    )
    return spec


def test_a_hostile_description_and_name_are_text(tmp_path: Path) -> None:
    _needs_dot()
    out = tmp_path / "site"
    write_docs(load_spec(_hostile_spec(tmp_path)), out)
    page = (out / PAGE).read_text(encoding="utf-8")
    facts = read_page(page)
    _safe(facts)
    _no_dangling_links(facts)
    assert "<script" not in page
    assert f"{_SCRIPT} <img src=x onerror=alert(1)> & \" '" in facts.entries["service-server"]
    assert f"</code></pre>{_SCRIPT}START" in facts.entries["message-Start"]
    # a name that is no plain word gets an anchor by position, and its entry by it
    assert "queue <jobs.dead-letters onload=alert(1)> classic" in " ".join(
        re.sub(r"\s+", " ", h) for h in facts.headings.values()
    )


@dataclass(frozen=True)
class _Drawn:
    spec: Spec
    names: dict[str, list[str]] = field(default_factory=dict)


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
_WORDS = st.sampled_from([*_HOSTILE_NAMES, _SCRIPT, "plain", "a.b-c_d", "", "3", "queue~0"])
_NAMES = _WORDS | _TEXT


@st.composite
def _specs(draw: st.DrawFn) -> _Drawn:
    exchange_names = draw(st.lists(_NAMES.filter(bool), min_size=1, max_size=4, unique=True))
    queue_names = draw(st.lists(_NAMES, min_size=1, max_size=4, unique=True))
    service_names = draw(st.lists(_NAMES, max_size=3, unique=True))
    message_names = draw(st.lists(_NAMES, min_size=1, max_size=3, unique=True))
    some_exchange = st.sampled_from(exchange_names)
    description = st.none() | _NAMES | st.just(_SCRIPT)
    exchanges = {
        n: Exchange(n, draw(st.sampled_from(ExchangeType)), description=draw(description))
        for n in exchange_names
    }
    queues = {
        n: Queue(
            n,
            draw(st.sampled_from(QueueType)),
            exclusive=draw(st.booleans()),
            arguments=draw(
                st.just({}) | some_exchange.map(lambda e: {"x-dead-letter-exchange": e})
            ),
            description=draw(description),
        )
        for n in queue_names
    }
    bindings = tuple(
        Binding(draw(some_exchange), draw(st.sampled_from(queue_names)), key=draw(_NAMES))
        for _ in range(draw(st.integers(0, 5)))
    )
    messages = {
        n: Message(
            n,
            Path("s.json"),
            draw(some_exchange),
            draw(_NAMES),
            description=draw(description),
            schema={"type": "object", "description": draw(_NAMES)},
        )
        for n in message_names
    }
    services = {
        n: Service(
            n,
            publishes=tuple(draw(st.lists(st.sampled_from(message_names), unique=True))),
            consumes=draw(
                st.dictionaries(
                    st.sampled_from(queue_names),
                    st.lists(st.sampled_from(message_names), max_size=2).map(tuple),
                    max_size=2,
                )
            ),
            description=draw(description),
        )
        for n in service_names
    }
    policy_name = draw(_NAMES)
    policies = {
        policy_name: Policy(
            policy_name,
            ".*",
            definition={"message-ttl": 1000},
            description=draw(description),
        )
    }
    spec = Spec(
        Path("t.yaml"),
        exchanges=exchanges,
        queues=queues,
        bindings=bindings,
        messages=messages,
        services=services,
        policies=policies,
    )
    names = {
        "exchange": exchange_names,
        "queue": queue_names,
        "message": message_names,
        "service": service_names,
    }
    return _Drawn(spec, names)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_specs())
def test_any_names_and_descriptions_come_out_as_text(drawn: _Drawn) -> None:
    """Random specs of hostile names (no svg, no examples: the page's own text): the HTML
    parses with every element closed in order, every link lands on an entry, nothing
    runs, and each object's entry is headed by its name, character for character."""
    page = build_page(drawn.spec, "", {})
    facts = read_page(page)
    _safe(facts)
    _no_dangling_links(facts)
    assert "<script" not in page
    headings = list(facts.headings.values())
    for kind, names in drawn.names.items():
        for name in names:
            shown = "(default)" if kind == "exchange" and name == "" else name
            assert any(h.startswith(f"{kind} {shown}") for h in headings), (kind, name)
    described = [m.description for m in drawn.spec.messages.values()]
    described += [s.description for s in drawn.spec.services.values()]
    for description in described:
        if description:
            assert description in facts.text


# -- the SVG -----------------------------------------------------------------------------

_SVG_NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'


@pytest.mark.parametrize(
    "inside",
    [
        "<script>alert(1)</script>",
        '<g onload="alert(1)"/>',
        '<a xlink:href="https://example.com/"><text>x</text></a>',
        '<a xlink:href="javascript:alert(1)"><text>x</text></a>',
        "<foreignObject><div>x</div></foreignObject>",
        '<image xlink:href="data:image/png;base64,AA"/>',
        "<text>unclosed",
    ],
)
def test_an_svg_with_anything_a_diagram_does_not_need_is_refused(inside: str) -> None:
    with pytest.raises(RabbitryError):
        safe_svg(f'<?xml version="1.0"?><svg {_SVG_NS}>{inside}</svg>')


def test_the_svg_is_inlined_without_its_xml_prolog(tmp_path: Path) -> None:
    _needs_dot()
    svg = diagram_svg(load_spec(FLAGSHIP))
    assert svg.startswith("<svg ")
    assert svg.endswith("</svg>")
    assert "<?xml" not in svg
    assert "<!DOCTYPE" not in svg


# -- the command -------------------------------------------------------------------------


def test_without_dot_the_command_says_to_install_graphviz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    code, _, err = run_cli(["docs", str(FLAGSHIP), "--out", str(tmp_path / "site")], capsys)
    assert code == 1
    assert "install graphviz" in err
    assert "apt-get install graphviz" in err
    assert not (tmp_path / "site").exists()


def test_an_index_html_it_did_not_write_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _needs_dot()
    page = tmp_path / PAGE
    page.write_text("<p>someone's own page</p>", encoding="utf-8")
    code, _, err = run_cli(["docs", str(FLAGSHIP), "--out", str(tmp_path)], capsys)
    assert code == 1
    assert "refusing to overwrite" in err
    assert page.read_text(encoding="utf-8") == "<p>someone's own page</p>"
    page.write_text(f'<meta name="generator" content="{GENERATOR}">old', encoding="utf-8")
    code, out, _ = run_cli(["docs", str(FLAGSHIP), "--out", str(tmp_path)], capsys)
    assert code == 0, out
    assert page.read_text(encoding="utf-8") == _flagship_page(tmp_path)


def test_a_broken_spec_exits_1_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = copy_flagship(tmp_path)
    edit(spec, "exchange: jobs.new\n", "exchange: jobs.nowhere\n")
    code, _, err = run_cli(["docs", str(spec), "--out", str(tmp_path / "site")], capsys)
    assert code == 1
    assert "jobs.nowhere" in err
    assert not (tmp_path / "site").exists()


# -- in Chromium -------------------------------------------------------------------------

_IN_PAGE = """(() => {
  const entry = id => { const e = document.getElementById(id); return e ? e.innerText : null; };
  return {
    title: document.title,
    scripts: document.scripts.length,
    svgs: document.querySelectorAll("figure.diagram svg").length,
    nodes: [...document.querySelectorAll("svg g.node")].map(
      g => [...g.querySelectorAll("text")].map(t => t.textContent).join(" ")),
    drawn: [...document.querySelectorAll("svg g.node")].every(
      g => g.getBBox().width > 0 && g.getBBox().height > 0),
    svgWidth: document.querySelector("figure.diagram svg").getBoundingClientRect().width,
    entries: Object.fromEntries(
      [...document.querySelectorAll("article")].map(a => [a.id, entry(a.id)])),
    text: document.body.innerText,
  };
})()"""


def test_the_flagship_page_in_chromium(tmp_path: Path) -> None:
    """Loads with nothing on the console, the diagram drawn (a node for every exchange,
    queue and service, each with a size), every exchange, queue and message there."""
    _needs_chromium()
    spec = load_spec(FLAGSHIP)
    page = tmp_path / PAGE
    page.write_text(_flagship_page(tmp_path), encoding="utf-8")
    with open_page(page) as (browser, seconds):
        seen = browser.evaluate(_IN_PAGE)
        timing = browser.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
        complaints = list(browser.complaints)
    assert complaints == []
    assert seen["scripts"] == 0
    assert seen["svgs"] == 1
    assert seen["drawn"]
    assert seen["svgWidth"] > 300
    graph = graph_of(spec)
    assert len(seen["nodes"]) == len(graph.nodes)
    for node in graph.nodes:
        assert any(text.startswith(node.name) for text in seen["nodes"]), node.name
    kinds = {NodeKind.EXCHANGE: "exchange", NodeKind.QUEUE: "queue"}
    for node in graph.nodes:
        if node.kind in kinds:
            assert seen["entries"][f"{kinds[node.kind]}-{node.name}"] is not None
    for name in spec.messages:
        assert f"MESSAGE {name}" in seen["entries"][f"message-{name}"]
    load = json.loads(timing)
    size = page.stat().st_size
    print(
        f"flagship page: {size} bytes, load event {load['loadEventEnd']:.1f} ms, "
        f"navigate to load {seconds * 1000:.0f} ms"
    )


def test_a_hostile_page_in_chromium_runs_nothing(tmp_path: Path) -> None:
    _needs_chromium()
    out = tmp_path / "site"
    write_docs(load_spec(_hostile_spec(tmp_path)), out)
    with open_page(out / PAGE) as (browser, _):
        time.sleep(0.2)  # an onerror would fire after load
        seen = browser.evaluate(_IN_PAGE)
        complaints = list(browser.complaints)
    assert complaints == []
    assert seen["scripts"] == 0
    assert seen["title"] == "Catalogue of topology.yaml · rabbitry"
    assert _SCRIPT in seen["entries"]["service-server"]
    assert "<img src=x onerror=alert(1)>" in seen["entries"]["service-server"]


def test_the_readme_shows_the_command_and_its_screenshot() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "rabbitry docs" in readme
    shot = ROOT / "docs" / "images" / "docs-page.png"
    assert shot.is_file()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size < 300_000
    assert "docs/images/docs-page.png" in readme
