"""``rabbitry import`` from a live vhost: a round trip through the real broker.

Topologies are declared RAW on one vhost (aiormq declarations, policies and
operator policies through the management API: nothing of rabbitry's), imported
with the CLI, applied to an empty vhost; then ``plan`` of the imported spec
against the original vhost has nothing to change, and the two vhosts, as the
management API lists them, hold the same exchanges, queues, bindings and
policies.  An exclusive queue and a server-named queue on the original vhost are
left out with a note and nothing else is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiormq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import ManagementAPI, Vhost, fresh_vhost
from rabbitry.broker import converge
from rabbitry.broker.url import parse_url
from rabbitry.check import load_spec
from rabbitry.spec import Spec
from rabbitry.spec.model import retry_label, retry_queue_name
from specs import run_cli

Json = dict[str, Any]


@dataclass(frozen=True)
class Raw:
    """A topology as raw declarations: what a team's own code made on its broker."""

    exchanges: list[Json] = field(default_factory=list)
    queues: list[Json] = field(default_factory=list)
    bindings: list[Json] = field(default_factory=list)
    policies: list[Json] = field(default_factory=list)
    operator_policies: list[Json] = field(default_factory=list)

    def objects(self) -> int:
        return sum(
            map(
                len,
                (self.exchanges, self.queues, self.bindings, self.policies, self.operator_policies),
            )
        )


_EXCHANGE_NAMES = ["orders", "orders.alt", "events_x", "e:h", "dl"]
_QUEUE_NAMES = ["work", "work.retry", "audit", "q:1", "u-1"]
_CLASSIC_ARGUMENTS = [
    {},
    {"x-message-ttl": 60000, "x-max-length": 100},
    {"x-dead-letter-exchange": "dl", "x-dead-letter-routing-key": "dead"},
    {"x-max-priority": 5, "x-overflow": "reject-publish"},
    {"x-queue-mode": "lazy", "x-expires": 3_600_000},
    {"x-single-active-consumer": True, "x-max-length-bytes": 1_000_000},
    {"x-custom": "kept raw"},
]
_QUORUM_ARGUMENTS = [
    {},
    {"x-delivery-limit": 5, "x-dead-letter-exchange": "dl"},
    {
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-dead-letter-exchange": "dl",
    },
    {"x-max-length": 10, "x-quorum-initial-group-size": 1},
]


@st.composite
def raw_topologies(draw: st.DrawFn) -> Raw:
    """Exchanges of each type (an alternate exchange, a custom argument), classic and
    quorum queues with x-arguments, bindings of each kind (keys, headers, exchange to
    exchange), policies and operator policies."""
    names = draw(st.lists(st.sampled_from(_EXCHANGE_NAMES[:-1]), unique=True, min_size=1))
    kinds = {
        name: draw(st.sampled_from(["direct", "fanout", "topic", "headers"])) for name in names
    }
    kinds["dl"] = "fanout"  # the dead-letter exchange the queue arguments name
    raw = Raw()
    for name, kind in kinds.items():
        arguments: Json = {}
        if draw(st.booleans()):
            arguments["alternate-exchange"] = draw(st.sampled_from(sorted(kinds)))
        if draw(st.integers(0, 3)) == 0:
            arguments["x-note"] = draw(st.sampled_from([1, "text"]))
        raw.exchanges.append(
            {
                "exchange": name,
                "exchange_type": kind,
                "durable": draw(st.integers(0, 3)) > 0,
                "internal": draw(st.integers(0, 4)) == 0,
                "arguments": arguments,
            }
        )
    queues = draw(st.lists(st.sampled_from(_QUEUE_NAMES), unique=True))
    for name in queues:
        quorum = draw(st.integers(0, 2)) == 0
        arguments = dict(draw(st.sampled_from(_QUORUM_ARGUMENTS if quorum else _CLASSIC_ARGUMENTS)))
        durable = True
        if quorum:
            arguments["x-queue-type"] = "quorum"
        else:
            durable = draw(st.integers(0, 3)) > 0
        raw.queues.append({"queue": name, "durable": durable, "arguments": arguments})
    if "work" in queues and draw(st.booleans()):
        raw.queues.append(_retry_queue_of_work(draw, raw))
    for _ in range(draw(st.integers(0, 6))):
        source = draw(st.sampled_from(sorted(kinds)))
        to_queue = bool(queues) and draw(st.booleans())
        target = draw(st.sampled_from(queues if to_queue else sorted(kinds)))
        key, table = "", None
        if kinds[source] == "headers":
            table = draw(
                st.sampled_from(
                    [
                        {"x-match": "all", "format": "pdf"},
                        {"x-match": "any", "a": 1, "b": "2"},
                        {"kind": "x"},
                        {"x-match": "all-with-x", "x-tag": "t"},
                    ]
                )
            )
        elif kinds[source] != "fanout":
            key = draw(st.sampled_from(["orders.created", "orders.*", "#", "a.b.#", "k k"]))
        raw.bindings.append(
            {
                "source": source,
                "to_queue": to_queue,
                "destination": target,
                "key": key,
                "arguments": table,
            }
        )
    if draw(st.booleans()):
        raw.policies.append(
            {
                "name": "ttl",
                "pattern": draw(st.sampled_from(["^work", ".*", "^q:1$"])),
                "apply-to": "queues",
                "priority": draw(st.integers(0, 5)),
                "definition": {
                    "message-ttl": draw(st.integers(1000, 9000)),
                    "dead-letter-exchange": "dl",
                },
            }
        )
    if draw(st.booleans()):
        raw.policies.append(
            {
                "name": "alt",
                "pattern": "^orders",
                "apply-to": "exchanges",
                "priority": 7,
                "definition": {"alternate-exchange": "dl"},
            }
        )
    if draw(st.booleans()):
        raw.operator_policies.append(
            {
                "name": "cap",
                "pattern": ".*",
                "apply-to": "queues",
                "priority": draw(st.integers(0, 3)),
                "definition": {"max-length": draw(st.integers(1, 1000)), "expires": 86_400_000},
            }
        )
    return raw


def _retry_queue_of_work(draw: st.DrawFn, raw: Raw) -> Json:
    """``work.retry.LABEL``: exactly a retry queue of ``work`` (imported as its ``retry:``)
    or a look-alike with another TTL (imported as a queue of its own); bound by nothing."""
    work = next(q for q in raw.queues if q["queue"] == "work")
    delay = draw(st.sampled_from([5_000, 90_000, 1_500]))
    arguments: Json = {
        "x-message-ttl": delay if draw(st.booleans()) else delay + 1,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "work",
    }
    if work["arguments"].get("x-queue-type") == "quorum":
        arguments["x-queue-type"] = "quorum"
    return {"queue": f"work.retry.{retry_label(delay)}", "durable": True, "arguments": arguments}


async def _declare(vhost: Vhost, raw: Raw) -> None:
    """``raw`` declared on ``vhost`` with aiormq and the management API alone."""
    connection = await aiormq.connect(vhost.amqp_url)
    try:
        channel = await connection.channel()
        for exchange in raw.exchanges:
            await channel.exchange_declare(**exchange)
        for queue in raw.queues:
            await channel.queue_declare(**queue)
        for b in raw.bindings:
            if b["to_queue"]:
                await channel.queue_bind(
                    b["destination"], b["source"], routing_key=b["key"], arguments=b["arguments"]
                )
            else:
                await channel.exchange_bind(
                    b["destination"], b["source"], routing_key=b["key"], arguments=b["arguments"]
                )
    finally:
        await connection.close()
    name = quote(vhost.name, safe="")
    for kind, rows in (("policies", raw.policies), ("operator-policies", raw.operator_policies)):
        for row in rows:
            body = {k: v for k, v in row.items() if k != "name"}
            vhost.api._request(
                "PUT", f"/api/{kind}/{name}/{quote(row['name'], safe='')}", json=body
            )


@contextlib.contextmanager
def _runtime_queues(vhost: Vhost) -> Iterator[None]:
    """An exclusive queue and two server-named ones on ``vhost`` while the block runs,
    held by a connection in a thread of its own (the CLI runs its own event loop)."""
    ready, done = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    async def hold() -> None:
        connection = await aiormq.connect(vhost.amqp_url)
        try:
            channel = await connection.channel()
            await channel.queue_declare("mine-alone", exclusive=True)
            await channel.queue_declare("", exclusive=True)
            await channel.queue_declare("", durable=False, auto_delete=False)
            ready.set()
            await asyncio.to_thread(done.wait)
        finally:
            await connection.close()

    def run() -> None:
        try:
            asyncio.run(hold())
        except BaseException as exc:  # reported by the test's thread
            failed.append(exc)
            ready.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert ready.wait(30)
        assert not failed, failed
        yield
    finally:
        done.set()
        thread.join(30)


def _contents(vhost: Vhost) -> Json:
    """The vhost's exchanges, queues, bindings and policies, without the vhost's name."""
    name = quote(vhost.name, safe="")
    api = vhost.api
    exchanges = sorted(
        json.dumps(
            [x[k] for k in ("name", "type", "durable", "auto_delete", "internal", "arguments")],
            sort_keys=True,
        )
        for x in vhost.exchanges()
        if x["name"] and not x["name"].startswith("amq.")
    )
    queues = sorted(
        json.dumps(
            [q[k] for k in ("name", "type", "durable", "auto_delete", "exclusive", "arguments")],
            sort_keys=True,
        )
        for q in vhost.queues()
        if not q["name"].startswith("amq.gen-")
    )
    bindings = sorted(
        json.dumps(
            [
                b[k]
                for k in ("source", "destination_type", "destination", "routing_key", "arguments")
            ],
            sort_keys=True,
        )
        for b in vhost.bindings()
        if b["source"] and not b["destination"].startswith("amq.gen-")
    )

    def policies(kind: str) -> list[str]:
        found: list[Json] = api.get_json(f"/api/{kind}/{name}")
        return sorted(json.dumps({k: v for k, v in p.items() if k != "vhost"}) for p in found)

    return {
        "exchanges": exchanges,
        "queues": queues,
        "bindings": bindings,
        "policies": policies("policies"),
        "operator_policies": policies("operator-policies"),
    }


def _pair(api: ManagementAPI) -> Iterator[tuple[Vhost, Vhost]]:
    first, second = fresh_vhost(api), fresh_vhost(api)
    try:
        yield next(first), next(second)
    finally:
        first.close()
        second.close()


def _plan(spec: Spec, vhost: Vhost) -> list[str]:
    planned = asyncio.run(converge.plan(spec, parse_url(vhost.amqp_url), timeout=30))
    return [change.describe() for change in planned.plan.changes]


def _import(
    vhost: Vhost, target: Path, capsys: pytest.CaptureFixture[str], *more: str
) -> tuple[Spec, str]:
    """``rabbitry import`` of ``vhost`` into ``target`` (``more`` may name it otherwise)."""
    url = () if "--url" in more else ("--url", vhost.amqp_url)
    code, out, err = run_cli(["import", *url, "-o", str(target), *more], capsys)
    assert code == 0, err
    assert not out
    return load_spec(target), err


def round_trip(
    api: ManagementAPI, raw: Raw, folder: Path, capsys: pytest.CaptureFixture[str]
) -> int:
    """Declare ``raw``, import it, apply it elsewhere, compare; the differences found."""
    for original, copy in _pair(api):
        asyncio.run(_declare(original, raw))
        spec, _ = _import(original, folder / "topology.yaml", capsys, "--force")
        for queue in raw.queues:  # a retry queue of work is folded into its retry:, alone
            if queue["queue"].startswith("work.retry."):
                ttl = queue["arguments"]["x-message-ttl"]
                folded = queue["queue"] == retry_queue_name("work", ttl)
                assert spec.queues["work"].retry == ((ttl,) if folded else ())
                assert spec.queues[queue["queue"]].retry_of == ("work" if folded else None)
        asyncio.run(converge.apply(spec, parse_url(copy.amqp_url), timeout=30))
        changes = _plan(spec, original)
        assert changes == []
        want, got = _contents(original), _contents(copy)
        assert got == want
        assert len(want["queues"]) == len(raw.queues)
        assert len(want["policies"]) == len(raw.policies)
        return len(changes)
    raise AssertionError("unreachable")


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=raw_topologies())
def test_raw_topologies_imported_and_applied_are_the_same_topology(
    broker: ManagementAPI,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    raw: Raw,
) -> None:
    round_trip(broker, raw, tmp_path_factory.mktemp("import"), capsys)


def test_run_time_queues_are_left_out_with_a_note(
    vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = Raw(
        exchanges=[{"exchange": "events", "exchange_type": "topic"}],
        queues=[{"queue": "kept", "durable": True}],
        bindings=[
            {
                "source": "events",
                "to_queue": True,
                "destination": "kept",
                "key": "#",
                "arguments": None,
            }
        ],
    )
    asyncio.run(_declare(vhost, raw))

    with _runtime_queues(vhost):
        spec, err = _import(vhost, tmp_path / "topology.yaml", capsys)
    assert set(spec.queues) == {"kept"}
    assert set(spec.exchanges) == {"events"}
    assert [(b.source, b.destination, b.key) for b in spec.bindings] == [("events", "kept", "#")]
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert sum("'mine-alone' left out" in n and "exclusive" in n for n in notes) == 1
    assert sum("'amq.gen-" in n and "left out" in n for n in notes) == 2
    assert any("built-in exchanges left out" in n for n in notes)
    assert "imported 1 exchange, 1 queue, 1 binding" in err


def test_the_vhost_option_reads_another_vhost_than_the_urls(
    vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_declare(vhost, Raw(exchanges=[{"exchange": "only", "exchange_type": "direct"}])))
    url = vhost.amqp_url.rsplit("/", 1)[0] + "/"
    spec, _ = _import(vhost, tmp_path / "t.yaml", capsys, "--url", url, "--vhost", vhost.name)
    assert set(spec.exchanges) == {"only"}


def test_a_vhost_that_does_not_exist_is_a_message(
    broker: ManagementAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    url = broker.config.amqp_url_for("rabbitry-no-such-vhost")
    code, out, err = run_cli(["import", "--url", url], capsys)
    assert code == 1
    assert not out
    assert "no vhost 'rabbitry-no-such-vhost'" in err
    assert "guest:guest" not in err
