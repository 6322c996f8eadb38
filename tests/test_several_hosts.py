"""Several broker URLs: parsed as one list, the first that answers used, moved on from.

Parsing is proven with hypothesis (no broker).  Moving is proven on two
RabbitMQ nodes of the module's own (``tests/nodes.py``), stand-alone, not a
cluster: the same topology is applied to both, so a client cut off from one
goes on publishing (with confirms) and consuming on the other.  A dead URL is
a port nothing listens on (what a stopped node is).  The command line is run
in-process (``specs.run_cli``) against the shared broker with dead URLs around
the live one, so that a command that took only the last ``--url``, or read
``$RABBITRY_URL`` as one URL, fails.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqp import Bounded, start, until
from broker import ManagementAPI, Vhost, made_user
from nodes import OwnNode, _require_root
from rabbitry.broker import converge
from rabbitry.broker.endpoints import Endpoints, first_answering, parse_urls, split_urls
from rabbitry.broker.url import BrokerURL, parse_url
from rabbitry.check import load_spec
from rabbitry.errors import ConnectionFailed, InvalidArgument
from rabbitry.messaging import _supervisor
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract
from specs import FLAGSHIP, run_cli

run = Bounded(90)
LOGGER = "rabbitry.messaging"


def dead_url(vhost: str = "/") -> str:
    """An AMQP URL on this machine where nothing listens: a stopped node, as a client sees it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"amqp://guest:guest@127.0.0.1:{port}/{quote(vhost, safe='')}"


def connected_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == LOGGER and r.levelno == logging.INFO and "connected" in r.getMessage()
    ]


# -- parsing: hypothesis ------------------------------------------------------------------

_HOSTS = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,8}){0,2}", fullmatch=True)
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@st.composite
def broker_urls(draw: st.DrawFn, vhost: str) -> BrokerURL:
    return BrokerURL(
        scheme=draw(st.sampled_from(["amqp", "amqps"])),
        host=draw(_HOSTS),
        port=draw(st.integers(1, 65535)),
        username=draw(_TEXT),
        password=draw(_TEXT),
        vhost=vhost,
    )


@st.composite
def url_lists(draw: st.DrawFn) -> list[BrokerURL]:
    vhost = draw(_TEXT.filter(bool) | st.just("/"))
    return draw(st.lists(broker_urls(vhost), min_size=1, max_size=4))


_SEPARATORS = st.sampled_from([",", ", ", " ,", " , ", ",\t"])
#: parse_url checks each URL's TLS files by loading them (a few ms each, more on busy cores).
_PARSING = settings(deadline=None, max_examples=60)


@_PARSING
@given(url_lists(), st.data())
def test_a_comma_separated_list_is_every_url_in_order(urls: list[BrokerURL], data: Any) -> None:
    """Any URLs (passwords and vhosts of any characters, percent-encoded as ``amqp`` writes
    them), joined by commas with blanks around them and maybe one at the end, parse back to
    the same URLs in the same order; as a sequence too."""
    text = urls[0].amqp
    for url in urls[1:]:
        text += data.draw(_SEPARATORS) + url.amqp
    text += data.draw(st.sampled_from(["", ",", " , "]))
    parsed = parse_urls(text)
    assert parsed.urls == tuple(urls)
    assert parse_urls([url.amqp for url in urls]) == parsed
    assert parse_urls(tuple(urls)) == parsed
    assert split_urls(text) == tuple(url.amqp for url in urls)


_RAW_PASSWORD = st.text(
    st.sampled_from("abcXYZ019,;!$&'()*+=-._~"), min_size=1, max_size=12
).filter(lambda p: not p.endswith(","))


@_PARSING
@given(st.lists(st.tuples(_HOSTS, _RAW_PASSWORD), min_size=1, max_size=4), _SEPARATORS)
def test_a_comma_in_a_password_stays_in_it(nodes: list[tuple[str, str]], sep: str) -> None:
    """A comma ends a URL only where the next begins (``,amqp://``): a password written
    raw, commas and all, is kept whole."""
    text = sep.join(f"amqp://user:{password}@{host}/v" for host, password in nodes)
    parsed = parse_urls(text)
    assert [(u.host, u.password) for u in parsed.urls] == nodes


@given(url_lists(), st.data())
def test_after_a_loss_every_url_is_tried_once_the_lost_one_last(
    urls: list[BrokerURL], data: Any
) -> None:
    endpoints = Endpoints(tuple(urls))
    lost = data.draw(st.sampled_from(urls))
    order = endpoints.after(lost)
    at = urls.index(lost)
    assert order == tuple(urls[at + 1 :] + urls[: at + 1])
    assert order[-1] == lost
    assert sorted(map(repr, order)) == sorted(map(repr, urls))


@_PARSING
@given(url_lists(), _TEXT.filter(bool))
def test_urls_of_different_vhosts_are_refused(urls: list[BrokerURL], other: str) -> None:
    odd = BrokerURL("amqp", "elsewhere", 5672, "guest", "guest", other)
    if other == urls[0].vhost:
        return
    for given_urls in ([*urls, odd], [odd, *urls]):
        with pytest.raises(InvalidArgument, match="different vhosts") as refused:
            parse_urls(given_urls)
        assert repr(other) in str(refused.value)


def test_rabbitry_url_may_hold_several(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RABBITRY_URL", "amqp://a:1@h1:5673/v, amqp://b:2@h2/v")
    parsed = parse_urls(None)
    assert [(u.endpoint, u.username, u.password) for u in parsed.urls] == [
        ("h1:5673", "a", "1"),
        ("h2:5672", "b", "2"),
    ]
    assert parse_urls("") == parsed
    monkeypatch.setenv("RABBITRY_URL", "amqp://h1/v,amqp://h2/w")
    with pytest.raises(InvalidArgument, match="different vhosts"):
        parse_urls(None)


def test_hosts_in_one_url_are_refused_with_the_way_to_write_them() -> None:
    with pytest.raises(InvalidArgument, match="each node needs a URL of its own"):
        parse_urls("amqp://h1,h2/v")


def test_a_client_refuses_mixed_vhosts_before_connecting(contract: Contract) -> None:
    with pytest.raises(InvalidArgument, match="different vhosts"):
        Client(contract, ["amqp://127.0.0.1:1/a", "amqp://127.0.0.1:2/b"])


# -- two nodes of the module's own ------------------------------------------------------


@pytest.fixture(scope="module")
def nodes() -> Iterator[tuple[OwnNode, OwnNode]]:
    """Two stand-alone nodes, started together; killed after the module, come what may."""
    _require_root()
    with ExitStack() as stack:
        pair = tuple(
            OwnNode(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rabbitry-node-"))))
            for _ in range(2)
        )
        for node in pair:
            stack.callback(node.kill)
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda node: node.start(), pair))
        yield pair[0], pair[1]


@pytest.fixture
def both(nodes: tuple[OwnNode, OwnNode]) -> Iterator[tuple[str, str]]:
    """One vhost name on both nodes, the flagship applied to each: the AMQP URLs."""
    name = f"rabbitry-test-{uuid.uuid4().hex[:12]}"
    apis = [ManagementAPI(node.config) for node in nodes]
    urls = []
    for node, api in zip(nodes, apis, strict=True):
        node.start()
        api.create_vhost(name)
        url = node.config.amqp_url_for(name)
        target = parse_url(url, management=node.management_url)
        asyncio.run(converge.apply(load_spec(FLAGSHIP), target, timeout=20))
        urls.append(url)
    try:
        yield urls[0], urls[1]
    finally:
        for node, api in zip(nodes, apis, strict=True):
            node.start()  # a test may leave one stopped
            api.delete_vhost(name)


def test_a_dead_first_url_is_skipped_at_once(
    both: tuple[str, str],
    contract: Contract,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refused URL costs one attempt, not a backoff: the next one is tried at once (the
    backoff comes between rounds of every URL)."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    pauses: list[int] = []

    def backoff(attempt: int) -> float:
        pauses.append(attempt)
        return _supervisor.BACKOFF_FIRST

    monkeypatch.setattr(_supervisor, "backoff", backoff)
    a, _ = both
    dead = dead_url(parse_url(a).vhost)

    async def body() -> tuple[float, str | None]:
        began = time.monotonic()
        async with Client(contract, [dead, dead_url(parse_url(a).vhost), a]) as client:
            took = time.monotonic() - began
            await client.publish("Start", start())
            return took, client.node

    took, node = run(body())
    print(f"\n[figure] two dead URLs then a live one: connected in {took:.2f} s")
    assert node == parse_url(a).endpoint
    assert took < 1.5
    assert pauses == []
    [line] = connected_lines(caplog)
    assert line.node == parse_url(a).endpoint  # type: ignore[attr-defined]
    assert f"connected to {parse_url(a).endpoint}" in line.getMessage()
    assert "3 attempt(s)" in line.getMessage()


def test_the_first_url_that_answers_is_used(both: tuple[str, str], contract: Contract) -> None:
    a, b = both

    async def body() -> list[str | None]:
        nodes = []
        for urls in ([a, b], [b, a], f"{b},{a}"):
            async with Client(contract, urls) as client:
                nodes.append(client.node)
        return nodes

    assert run(body()) == [parse_url(u).endpoint for u in (a, b, b)]


def test_bad_credentials_on_one_url_send_the_client_to_the_next(
    both: tuple[str, str], contract: Contract
) -> None:
    a, b = both
    wrong = a.replace("guest:guest@", "guest:wrong@")

    async def body() -> str | None:
        async with Client(contract, [wrong, b]) as client:
            return client.node

    assert run(body()) == parse_url(b).endpoint


def test_every_url_refusing_for_good_fails_at_once_naming_each(
    both: tuple[str, str], contract: Contract
) -> None:
    """Wrong credentials on one node and no such vhost on the other: retrying cannot fix
    either, so the client says so at once (not after connect_timeout), naming both."""
    a, b = both
    wrong_login = a.replace("guest:guest@", "guest:wrong@")
    no_vhost = b.rsplit("/", 1)[0] + "/no-such-vhost-" + uuid.uuid4().hex[:6]

    # Same vhost is required: make the wrong-login URL name the missing vhost too.
    wrong_login = wrong_login.rsplit("/", 1)[0] + "/" + no_vhost.rsplit("/", 1)[1]

    async def refused() -> float:
        began = time.monotonic()
        with pytest.raises(ConnectionFailed) as failed:
            async with Client(contract, [wrong_login, no_vhost], connect_timeout=30):
                pass
        message = str(failed.value)
        assert "none of the 2 broker URLs answered" in message
        assert parse_url(a).endpoint in message
        assert parse_url(b).endpoint in message
        assert "refused the login" in message
        assert "has no vhost" in message
        return time.monotonic() - began

    took = run(refused())
    assert took < 5, f"took {took:.1f} s: retried what cannot be fixed"


def _moving_figure(moves: list[float]) -> str:
    return ", ".join(f"{m:.2f}" for m in moves)


def test_a_client_moves_to_the_other_node_and_goes_on(
    nodes: tuple[OwnNode, OwnNode],
    both: tuple[str, str],
    contract: Contract,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A publisher (confirms) and a consumer on one client; its node is stopped (SIGTERM),
    three times, alternating: the client moves to the other node, and every message it
    published and had confirmed there is consumed there.  The time to move (stop issued
    → connected on the other node) is the figure."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    endpoints = [parse_url(u).endpoint for u in both]

    async def body() -> tuple[list[float], list[float]]:
        handled: dict[str, str | None] = {}
        moves: list[float] = []
        resumed: list[float] = []

        async def handler(delivery: Delivery[Any]) -> None:
            handled[delivery.body["job_id"]] = client.node

        async with Client(contract, list(both), heartbeat=2, timeout=30) as client:
            consumer = client.consume("jobs.ready", handler)
            await consumer.ready()
            for _ in range(3):
                here = client.node
                assert here in endpoints
                there = endpoints[1 - endpoints.index(here)]
                node = nodes[endpoints.index(here)]
                for _ in range(5):  # confirmed and consumed where the client is
                    await client.publish("Start", start())
                stopped = time.monotonic()
                stopping = asyncio.create_task(asyncio.to_thread(node.stop))
                await until(lambda: client.node == there, 30, "for the move")  # noqa: B023
                moves.append(time.monotonic() - stopped)
                on_there: set[str] = set()
                for _ in range(10):
                    payload = start()
                    await client.publish("Start", payload)
                    on_there.add(payload["job_id"])
                resumed.append(time.monotonic() - stopped)
                await until(lambda: on_there <= handled.keys(), 20, "for the jobs there")  # noqa: B023
                assert {handled[j] for j in on_there} == {there}
                await stopping
                await asyncio.to_thread(node.start)
            assert consumer.failure is None
        return moves, resumed

    moves, resumed = run(body(), 240)
    lines = connected_lines(caplog)
    assert len(lines) == 4  # the first connection, then one per move
    expected = [endpoints[0], endpoints[1], endpoints[0], endpoints[1]]
    for line, node in zip(lines, expected, strict=True):
        assert line.node == node  # type: ignore[attr-defined]
        assert f"to {node}" in line.getMessage()
    assert all("moved from" in line.getMessage() for line in lines[1:])
    lost = [
        r for r in caplog.records if r.name == LOGGER and "lost the connection" in r.getMessage()
    ]
    assert [r.node for r in lost] == expected[:3]  # type: ignore[attr-defined]
    # The client's own part: from noticing the loss to being connected on the other node.
    switches = [line.created - loss.created for loss, line in zip(lost, lines[1:], strict=True)]
    print(
        f"\n[figure] time to move to the other node: stop issued → connected there "
        f"{_moving_figure(moves)} s (median {statistics.median(moves):.2f}); loss noticed → "
        f"connected there {_moving_figure(switches)} s (median {statistics.median(switches):.3f}); "
        f"stop issued → first confirmed publish there {_moving_figure(resumed)} s"
    )
    # A bound that catches a client waiting out a backoff while another URL answers, not a
    # speed: the stop itself (the node's own shutdown) took over 5 s in a loaded CI run.
    assert statistics.median(switches) < 5, switches


def test_plan_prefers_the_node_whose_management_api_answers(
    nodes: tuple[OwnNode, OwnNode], vhost: Vhost
) -> None:
    """An own node's derived management URL is the shared broker's (``HOST:15672``); logged
    in as a user of the own node only, that API refuses it.  With the own node first, a
    command that reads the management API takes the shared broker (second), whose API
    answers; AMQP alone takes the first."""
    node = nodes[0]
    api = ManagementAPI(node.config)
    node.start()
    api.create_vhost(vhost.name)
    try:
        with made_user(api, vhost.name, tags="") as (user, password):
            own = node.config.amqp_url_for(vhost.name).replace(
                "guest:guest@", f"{user}:{password}@"
            )
            endpoints = parse_urls([own, vhost.amqp_url])
            chosen = run(first_answering(endpoints, timeout=10, management=True))
            assert chosen.endpoint == parse_url(vhost.amqp_url).endpoint
            amqp_only = run(first_answering(endpoints, timeout=10))
            assert amqp_only.endpoint == parse_url(own).endpoint
            planned = run(converge.plan(load_spec(FLAGSHIP), endpoints, timeout=10))
            assert planned.url == chosen
            assert planned.live.source == "management"
    finally:
        api.delete_vhost(vhost.name)


# -- every command, through the command line ------------------------------------------------


def _commands(jobs: Vhost) -> list[tuple[list[str], str]]:
    """Each command that talks to a broker, and what its output must say."""
    where = parse_url(jobs.amqp_url).endpoint
    body = json.dumps(start())
    return [
        (["apply", str(FLAGSHIP)], f"Applied to vhost {jobs.name!r} at {where}"),
        (["plan", str(FLAGSHIP)], f"Plan for vhost {jobs.name!r} at {where}"),
        (["publish", "Start", "--json", body, "-f", str(FLAGSHIP)], "(confirmed)"),
        (
            ["tail", "jobs.ready", "-f", str(FLAGSHIP), "--idle", "0.5", "--spend-delivery"],
            "1 message",
        ),
    ]


def test_every_command_takes_url_several_times(
    jobs: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dead URLs before and after the live one: the first that answers is used (a command
    that kept only the last --url would fail)."""
    urls = [dead_url(jobs.name), jobs.amqp_url, dead_url(jobs.name)]
    flags = [arg for url in urls for arg in ("--url", url)]
    for args, said in _commands(jobs):
        code, out, err = run_cli([*args, *flags], capsys)
        assert code == 0, (args[0], out, err)
        assert said in out + err, (args[0], out, err)


def test_every_command_takes_several_urls_in_rabbitry_url(
    jobs: Vhost, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "RABBITRY_URL", f"{dead_url(jobs.name)}, {jobs.amqp_url},{dead_url(jobs.name)}"
    )
    for args, said in _commands(jobs):
        code, out, err = run_cli(args, capsys)
        assert code == 0, (args[0], out, err)
        assert said in out + err, (args[0], out, err)


def test_a_command_given_only_dead_urls_names_each(
    jobs: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = [dead_url(jobs.name), dead_url(jobs.name)]
    code, _out, err = run_cli(["plan", str(FLAGSHIP), "--url", dead[0], "--url", dead[1]], capsys)
    assert code == 1
    assert "none of the 2 broker URLs answered" in err
    assert all(parse_url(u).endpoint in err for u in dead)


def test_a_command_refuses_urls_of_different_vhosts(
    jobs: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        ["plan", str(FLAGSHIP), "--url", jobs.amqp_url, "--url", dead_url("other")], capsys
    )
    assert code == 1
    assert "different vhosts" in err
    assert "--url / $RABBITRY_URL" in err


def test_the_generated_classes_take_several_urls(jobs: Vhost) -> None:
    from jobs_contracts.clients import Server  # noqa: PLC0415

    async def body() -> str | None:
        async with Server([dead_url(jobs.name), jobs.amqp_url]) as server:
            return server.client.node

    assert run(body()) == parse_url(jobs.amqp_url).endpoint
