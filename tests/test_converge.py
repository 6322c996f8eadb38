"""plan / apply / prune against the real broker, each test in a fresh vhost."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiormq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import ManagementAPI, Vhost, fresh_vhost
from rabbitry.broker import converge
from rabbitry.broker.state import desired
from rabbitry.broker.url import parse_url
from rabbitry.check import load_spec
from rabbitry.errors import BrokerError
from rabbitry.spec.model import (
    Binding,
    Exchange,
    ExchangeType,
    HeadersMatch,
    Queue,
    QueueType,
    Spec,
)
from specs import RETRY_QUEUES, copy_flagship, run_cli

ROOT = Path(__file__).resolve().parent.parent

EVERYTHING = """
version: 1
exchanges:
  orders:   {type: topic, alternate_exchange: lost}
  lost:     {type: fanout}
  fan:      {type: fanout, durable: false, auto_delete: true}
  direct:   {type: direct}
  docs:     {type: headers}
  inner:    {type: topic, internal: true}
queues:
  orders.all:  {type: quorum, delivery_limit: 3, dead_letter: lost}
  orders.log:  {type: stream, max_age: 7D, max_length_bytes: 100000000}
  orders.lost: {message_ttl: 60000, max_length: 100, overflow: reject-publish}
  pdfs:        {max_priority: 5, arguments: {x-expires: 3600000}}
  inner.q:     {single_active_consumer: true}
bindings:
  - {from: orders, queue: orders.all, key: "order.#"}
  - {from: orders, queue: orders.log, key: "#"}
  - {from: orders, exchange: inner,   key: "order.*.created"}
  - {from: inner,  queue: inner.q,    key: "#"}
  - {from: lost,   queue: orders.lost}
  - {from: direct, queue: pdfs,       key: pdf}
  - {from: docs,   queue: pdfs,       match: any, headers: {format: pdf, kind: invoice}}
  - {from: fan,    queue: orders.lost}
messages: {}
"""


def write_spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    return path


def publish(url: str, exchange: str, key: str, body: bytes = b"{}") -> None:
    async def go() -> None:
        connection = await aiormq.connect(url)
        channel = await connection.channel()
        await channel.confirm_delivery()
        await channel.basic_publish(body, exchange=exchange, routing_key=key, mandatory=True)
        await connection.close()

    asyncio.run(go())


def queue_messages(vhost: Vhost, name: str, expected: int) -> int:
    """The broker's message count for ``name``, once its stats show ``expected`` (bounded)."""
    deadline = time.monotonic() + 15
    count = -1
    while time.monotonic() < deadline:
        found = {q["name"]: q for q in vhost.queues()}
        count = found[name].get("messages", -1) if name in found else -1
        if count == expected:
            break
        time.sleep(0.25)
    return count


def test_the_flagship_applies_and_then_plans_empty(
    vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = copy_flagship(tmp_path)
    code, out, err = run_cli(["apply", str(spec), "--url", vhost.amqp_url], capsys)
    assert code == 0, err
    assert "create queue jobs.ready" in out
    queues = {q["name"]: q for q in vhost.queues()}
    assert set(queues) == {"jobs.ready", "jobs.dead-letters", *RETRY_QUEUES}  # not run-time ones
    assert queues["jobs.ready"]["type"] == "quorum"
    assert queues["jobs.ready"]["arguments"] == {"x-queue-type": "quorum"}
    policies = vhost.api.get_json(f"/api/policies/{vhost.name}")
    assert [(p["name"], p["definition"]) for p in policies] == [
        ("jobs-ready", {"dead-letter-exchange": "jobs.dead", "delivery-limit": 5})
    ]
    names = {e["name"] for e in vhost.exchanges()}
    assert {"jobs.new", "jobs.status", "jobs.control", "jobs.dead"} <= names
    bindings = {(b["source"], b["destination"], b["routing_key"]) for b in vhost.bindings()}
    assert ("jobs.new", "jobs.ready", "job.#") in bindings
    assert not any("{" in b["routing_key"] for b in vhost.bindings())
    code, out, _ = run_cli(["plan", str(spec), "--url", vhost.amqp_url], capsys)
    assert code == 0
    assert "in sync" in out


def test_every_kind_of_object_applies_and_reads_back_equal(
    vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path = write_spec(tmp_path, EVERYTHING)
    code, out, err = run_cli(["plan", str(spec_path), "--url", vhost.amqp_url], capsys)
    assert code == 3, err
    assert "to create" in out
    code, _, err = run_cli(["apply", str(spec_path), "--url", vhost.amqp_url], capsys)
    assert code == 0, err
    queues = {q["name"]: q for q in vhost.queues()}
    assert queues["orders.log"]["type"] == "stream"
    assert queues["orders.log"]["arguments"]["x-max-age"] == "7D"
    assert queues["pdfs"]["arguments"] == {"x-max-priority": 5, "x-expires": 3600000}
    exchanges = {e["name"]: e for e in vhost.exchanges()}
    assert exchanges["orders"]["arguments"] == {"alternate-exchange": "lost"}
    assert exchanges["inner"]["internal"] is True
    assert exchanges["fan"]["durable"] is False
    headers = [b for b in vhost.bindings() if b["source"] == "docs"]
    assert headers[0]["arguments"] == {"format": "pdf", "kind": "invoice", "x-match": "any"}
    e2e = [b for b in vhost.bindings() if b["destination_type"] == "exchange"]
    assert [(b["source"], b["destination"]) for b in e2e] == [("orders", "inner")]
    code, out, _ = run_cli(
        ["plan", str(spec_path), "--url", vhost.amqp_url, "--format", "json"], capsys
    )
    assert code == 0
    assert json.loads(out)["in_sync"] is True


def test_a_changed_ttl_on_a_queue_with_a_message_is_refused_then_replaced_when_allowed(
    vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path = write_spec(
        tmp_path,
        """
version: 1
exchanges: {x: {type: direct}}
queues: {q: {message_ttl: 600000}}
bindings: [{from: x, queue: q, key: k}]
""",
    )
    assert run_cli(["apply", str(spec_path), "--url", vhost.amqp_url], capsys)[0] == 0
    publish(vhost.amqp_url, "x", "k")
    assert queue_messages(vhost, "q", 1) == 1
    spec_path.write_text(spec_path.read_text().replace("600000", "1200000"))

    code, out, _ = run_cli(["plan", str(spec_path), "--url", vhost.amqp_url], capsys)
    assert code == 3
    assert "replace queue q (holds 1 message," in out
    assert "arguments.x-message-ttl: 600000 → 1200000" in out

    code, out, err = run_cli(["apply", str(spec_path), "--url", vhost.amqp_url], capsys)
    assert code == 1
    assert "'q'" in err
    assert "1 message" in err
    assert "--allow-data-loss" in err
    assert "x-message-ttl" in err
    assert queue_messages(vhost, "q", 1) == 1  # untouched

    code, _, err = run_cli(
        ["apply", str(spec_path), "--url", vhost.amqp_url, "--allow-data-loss"], capsys
    )
    assert code == 0, err
    (queue,) = (q for q in vhost.queues() if q["name"] == "q")
    assert queue["arguments"]["x-message-ttl"] == 1200000
    assert ("x", "q", "k") in {
        (b["source"], b["destination"], b["routing_key"]) for b in vhost.bindings()
    }
    assert run_cli(["plan", str(spec_path), "--url", vhost.amqp_url], capsys)[0] == 0


def test_prune_removes_what_the_spec_dropped_and_nothing_else(
    vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path = copy_flagship(tmp_path)
    assert run_cli(["apply", str(spec_path), "--url", vhost.amqp_url], capsys)[0] == 0

    async def stray() -> None:
        connection = await aiormq.connect(vhost.amqp_url)
        channel = await connection.channel()
        await channel.exchange_declare("old.exchange", exchange_type="fanout", durable=True)
        await channel.queue_declare("old.queue", durable=True)
        await channel.queue_bind("old.queue", "jobs.new", routing_key="legacy.#")
        await connection.close()

    asyncio.run(stray())
    code, out, _ = run_cli(["plan", str(spec_path), "--url", vhost.amqp_url], capsys)
    assert code == 0  # without --prune, strangers are listed, not changed
    assert "not in the spec" in out
    code, out, _ = run_cli(["plan", str(spec_path), "--url", vhost.amqp_url, "--prune"], capsys)
    assert code == 3
    assert "delete queue old.queue" in out
    assert "delete exchange old.exchange" in out
    code, _, err = run_cli(["apply", str(spec_path), "--url", vhost.amqp_url, "--prune"], capsys)
    assert code == 0, err
    assert vhost.queue_names() == {"jobs.ready", "jobs.dead-letters", *RETRY_QUEUES}
    names = {e["name"] for e in vhost.exchanges()}
    assert "old.exchange" not in names
    assert "amq.topic" in names
    assert "jobs.new" in names
    assert not any(b["routing_key"] == "legacy.#" for b in vhost.bindings())
    assert run_cli(["plan", str(spec_path), "--url", vhost.amqp_url, "--prune"], capsys)[0] == 0


def test_broker_errors_are_one_line_with_the_endpoint_and_no_password(
    vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path = copy_flagship(tmp_path)
    wrong = vhost.amqp_url.replace("guest:guest@", "guest:s3cret-pw@")
    for url in (wrong, "amqp://guest:s3cret-pw@127.0.0.1:1/", vhost.amqp_url + "-missing"):
        code, out, err = run_cli(["apply", str(spec_path), "--url", url], capsys)
        assert code == 1
        assert "s3cret-pw" not in out + err
        assert "Traceback" not in err
        assert err.startswith("error: "), err
        assert len(err.strip().splitlines()) == 1, err
        assert ":5672" in err or ":1" in err or "127.0.0.1" in err


def test_a_re_run_converges_after_connections_are_closed_mid_apply(
    vhost: Vhost, tmp_path: Path
) -> None:
    queues = "\n".join(f"  q{i}: {{message_ttl: {1000 + i}}}" for i in range(600))
    bindings = "\n".join(f"  - {{from: x, queue: q{i}, key: k{i}}}" for i in range(600))
    spec_path = write_spec(
        tmp_path,
        f"version: 1\nexchanges: {{x: {{type: direct}}}}\nqueues:\n{queues}\n"
        f"bindings:\n{bindings}\n",
    )
    spec = load_spec(spec_path)
    url = parse_url(vhost.amqp_url)
    cut = []

    def cut_connections_midway(done: int, total: int) -> None:
        if done >= 100 and not cut:
            cut.append(done)
            subprocess.run(
                ["rabbitmqctl", "close_all_connections", "-p", vhost.name, "cut by the test"],
                capture_output=True,
                check=True,
            )

    with pytest.raises(BrokerError):
        asyncio.run(converge.apply(spec, url, timeout=10, progress=cut_connections_midway))
    assert cut, "the apply finished before the connections were cut"
    assert not asyncio.run(converge.plan(spec, url, timeout=10)).plan.empty
    asyncio.run(converge.apply(spec, url, timeout=10))
    assert asyncio.run(converge.plan(spec, url, timeout=10)).plan.empty
    assert len(vhost.queue_names()) == 600


# -- random topologies: apply twice, then the plan is empty and the state is the spec's --


@st.composite
def small_specs(draw: st.DrawFn) -> Spec:
    exchange_names = draw(st.lists(st.sampled_from(["ea", "eb", "ec"]), unique=True, min_size=1))
    exchanges = {
        name: Exchange(name, draw(st.sampled_from(list(ExchangeType))), draw(st.booleans()))
        for name in exchange_names
    }
    queue_kinds = st.sampled_from(
        [
            (QueueType.CLASSIC, {}),
            (QueueType.CLASSIC, {"x-message-ttl": 5000, "x-max-length": 10}),
            (QueueType.QUORUM, {"x-delivery-limit": 3}),
            (QueueType.STREAM, {"x-max-age": "1D"}),
        ]
    )
    queue_names = draw(st.lists(st.sampled_from(["qa", "qb", "qc"]), unique=True))
    queues = {}
    for name in queue_names:
        kind, arguments = draw(queue_kinds)
        queues[name] = Queue(name, kind, arguments=arguments)
    bindings = []
    for _ in range(draw(st.integers(0, 5))):
        source = draw(st.sampled_from(exchange_names))
        to_queue = bool(queue_names) and draw(st.booleans())
        target = draw(st.sampled_from(queue_names if to_queue else exchange_names))
        headers = exchanges[source].type is ExchangeType.HEADERS
        bindings.append(
            Binding(
                source,
                target,
                "queue" if to_queue else "exchange",
                key="" if headers else draw(st.sampled_from(["", "a", "a.#", "*.b"])),
                match=draw(st.sampled_from(list(HeadersMatch))) if headers else None,
                headers={"h": draw(st.sampled_from(["x", 1]))} if headers else {},
            )
        )
    return Spec(
        path=Path("random.yaml"), exchanges=exchanges, queues=queues, bindings=tuple(bindings)
    )


@pytest.fixture(scope="module")
def api(broker: ManagementAPI) -> ManagementAPI:
    return broker


def _one_vhost(api: ManagementAPI) -> Iterator[Vhost]:
    yield from fresh_vhost(api)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(spec=small_specs())
def test_random_topologies_converge_in_one_apply(api: ManagementAPI, spec: Spec) -> None:
    for vhost in _one_vhost(api):
        url = parse_url(vhost.amqp_url)
        asyncio.run(converge.apply(spec, url, timeout=10))
        asyncio.run(converge.apply(spec, url, timeout=10))
        planned = asyncio.run(converge.plan(spec, url, prune=True, timeout=10))
        assert planned.plan.empty, [c.describe() for c in planned.plan.changes]
        live = planned.live.topology
        want = desired(spec)
        assert {n: live.exchanges[n] for n in want.exchanges} == dict(want.exchanges)
        assert {n: live.queues[n] for n in want.queues} == dict(want.queues)
        assert want.bindings == live.bindings
