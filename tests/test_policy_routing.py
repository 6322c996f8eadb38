"""The routing model follows policies: dead-letter and alternate exchanges set by a policy.

Offline: ``route``, ``dead_letter_route``, ``check`` (``reach``), ``check --against``
and ``rabbitry route`` take the effective exchange (argument or policy, with the
broker's precedence).  On the broker: the same spec's policies are put with the
management API (``PUT /api/policies/{vhost}/{name}``), the objects declared over
AMQP, messages rejected and published unroutable, and where each one lands is
compared with what the model says.  A second broker test proves that the
anchored pattern made from ``queues: [...]`` matches, in the broker's PCRE,
exactly the names listed, metacharacters included.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import aiormq
import httpx
import pytest
from pamqp import commands
from pamqp.commands import Basic

from broker import Vhost
from rabbitry.check import check, load_spec, reach
from rabbitry.compat import Verdict, compare
from rabbitry.routing import dead_letter_route, route
from rabbitry.spec import Code, Policy, Spec
from specs import at, run_cli, write_spec

SPEC = """\
version: 1
exchanges:
  work:      {type: direct}
  entry:     {type: direct}
  dlx.a:     {type: fanout}
  dlx.b:     {type: fanout}
  dlx.topic: {type: topic}
  ae.x:      {type: fanout}
queues:
  q1: {}
  q2: {dead_letter: dlx.b}
  q3: {}
  q4: {dead_letter: dlx.topic}
  parked.a: {}
  parked.b: {}
  parked.k1: {}
  parked.k2: {}
  unrouted: {}
bindings:
  - {from: work, queue: q1, key: q1}
  - {from: dlx.a, queue: parked.a}
  - {from: dlx.b, queue: parked.b}
  - {from: dlx.topic, queue: parked.k1, key: "k1.#"}
  - {from: dlx.topic, queue: parked.k2, key: "k2"}
  - {from: ae.x, queue: unrouted}
policies:
  dead-a:                # q2's own argument wins over this (argument precedence)
    queues: [q1, q2]
    dead_letter: dlx.a
  dead-key:              # a key for q3, and for q4 whose exchange is its argument
    queues: [q3, q4]
    dead_letter: dlx.topic
    dead_letter_routing_key: k2
  unrouted:
    exchanges: [entry, amq.direct]
    alternate_exchange: ae.x
"""


@pytest.fixture
def spec(tmp_path: Path) -> Spec:
    return load_spec(write_spec(tmp_path, SPEC))


def dead_letters(spec: Spec, queue: str, key: str) -> set[str]:
    return {d.queue for d in dead_letter_route(spec, queue, key)}


# ------------------------------------------------------------------------------ offline


def test_dead_letters_go_to_the_policys_exchange(spec: Spec) -> None:
    assert dead_letters(spec, "q1", "q1") == {"parked.a"}


def test_the_queues_own_dead_letter_exchange_wins_over_the_policys(spec: Spec) -> None:
    assert dead_letters(spec, "q2", "q2") == {"parked.b"}


def test_the_policys_dead_letter_key_replaces_the_messages_key(spec: Spec) -> None:
    assert dead_letters(spec, "q3", "k1.anything") == {"parked.k2"}
    # each key resolved on its own: q4's exchange is its argument, the key the policy's
    assert dead_letters(spec, "q4", "k1.x") == {"parked.k2"}


def test_a_queue_no_policy_reaches_does_not_dead_letter(spec: Spec) -> None:
    assert dead_letters(spec, "parked.a", "x") == set()


def test_unroutable_messages_take_the_policys_alternate_exchange(spec: Spec) -> None:
    [destination] = route(spec, "entry", "nothing")
    assert destination.queue == "unrouted"
    assert dict(destination.path[0].arguments) == {
        "alternate-exchange": "ae.x",
        "policy": "unrouted",
    }
    # a built-in exchange takes policies too; the default exchange never takes one
    assert {d.queue for d in route(spec, "amq.direct", "nothing")} == {"unrouted"}
    assert route(spec, "", "nothing") == ()
    # exchanges the policy does not name keep routing nowhere
    assert route(spec, "work", "nothing") == ()


def test_without_the_policies_the_model_routes_as_before(spec: Spec) -> None:
    bare = replace(spec, policies=MappingProxyType({}))
    assert dead_letters(bare, "q1", "q1") == set()
    assert dead_letters(bare, "q3", "k1.a") == set()
    assert route(bare, "entry", "nothing") == ()


MESSAGES = """\
messages:
  Job: {schema: job.json, exchange: work, routing_key: q1}
services:
  worker: {publishes: [Job], consumes: {q1: [Job]}}
  clerk: {consumes: {%s: [Job]}}
"""


def _with_messages(tmp_path: Path, spec_text: str, parking: str) -> Path:
    return write_spec(tmp_path, spec_text + MESSAGES % parking, {"job.json": {"type": "object"}})


def test_check_follows_a_policys_dead_letter_exchange(tmp_path: Path) -> None:
    path = _with_messages(tmp_path, SPEC, "parked.a")
    report = check(path)
    assert at(report, Code.UNREACHABLE_CONSUMER) == []
    assert report.spec is not None
    assert reach(report.spec, report.spec.messages["Job"]) == {"q1", "parked.a"}
    # the same spec without the policy's dead-letter exchange: the clerk waits in vain
    without = SPEC.replace("    dead_letter: dlx.a\n", "    message_ttl: 60000\n")
    report = check(_with_messages(tmp_path, without, "parked.a"))
    assert [d.code for d in report.errors] == [Code.UNREACHABLE_CONSUMER]


def test_check_against_sees_a_policy_diverting_a_consumers_messages(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = _with_messages(tmp_path / "old", SPEC, "parked.a")
    diverted = SPEC.replace("    dead_letter: dlx.a\n", "    dead_letter: dlx.b\n")
    new = _with_messages(tmp_path / "new", diverted, "parked.a")
    report = check(new)
    assert report.spec is not None
    found = compare(load_spec(old), report.spec)
    breaking = [f for f in found if f.verdict is Verdict.BREAKING]
    assert [f.subject for f in breaking] == ["message Job"]
    assert "no longer reaches queue 'parked.a'" in breaking[0].why
    assert ("policy dead-a", Verdict.COMPATIBLE) in {(f.subject, f.verdict) for f in found}


def test_the_route_command_follows_a_policys_alternate_exchange(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec(tmp_path, SPEC)
    code, out, _ = run_cli(["route", "-f", str(path), "entry", "nothing"], capsys)
    assert (code, out.split()) == (0, ["unrouted"])


# -------------------------------------------------------------------------- on the broker


def _policy_json(policy: Policy) -> dict[str, Any]:
    return {
        "pattern": policy.pattern,
        "apply-to": policy.apply_to.value,
        "priority": policy.priority,
        "definition": dict(policy.definition),
    }


def _management(vhost: Vhost) -> httpx.Client:
    config = vhost.api.config
    return httpx.Client(
        base_url=vhost.management_url, auth=(config.username, config.password), timeout=10
    )


def put_policies(vhost: Vhost, spec: Spec) -> None:
    """The spec's policies, put with the management API directly (not rabbitry's code)."""
    with _management(vhost) as client:
        for policy in spec.policies.values():
            url = f"/api/policies/{quote(vhost.name, safe='')}/{quote(policy.name, safe='')}"
            client.put(url, json=_policy_json(policy)).raise_for_status()


def policies_seen(vhost: Vhost) -> dict[str, str | None]:
    """Queue and exchange → the policy the broker applied to it (``None`` for none)."""
    seen: dict[str, str | None] = {}
    for kind in ("queues", "exchanges"):
        for row in getattr(vhost, kind)():
            seen[f"{kind[:-1]} {row['name']}"] = row.get("policy") or None
    return seen


async def _declare(channel: Any, spec: Spec) -> None:
    for exchange in spec.exchanges.values():
        await channel.exchange_declare(
            exchange.name, exchange_type=exchange.type.value, durable=True
        )
    for queue in spec.queues.values():
        await channel.queue_declare(
            queue.name, durable=True, arguments=dict(queue.arguments) or None
        )
    for b in spec.bindings:
        await channel.queue_bind(b.destination, b.source, b.key)


async def _drain(channel: Any, spec: Spec, where: dict[str, set[str]]) -> None:
    for queue in spec.queues:
        while True:
            got = await channel.basic_get(queue, no_ack=True)
            if isinstance(got.delivery, commands.Basic.GetEmpty):
                break
            where.setdefault(got.header.properties.message_id, set()).add(queue)


async def _observe(vhost: Vhost, spec: Spec) -> tuple[dict[str, set[str]], dict[str, str]]:
    """Reject one message from each of q1..q4 and publish one unroutable message to each
    exchange with a policy's alternate exchange; where each one ended up."""
    connection = await aiormq.connect(vhost.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await _declare(channel, spec)
        sent: dict[str, str] = {}  # message id → what was done with it
        for queue in ("q1", "q2", "q3", "q4"):
            message_id = uuid.uuid4().hex
            sent[message_id] = f"rejected from {queue}"
            await channel.basic_publish(
                b"{}",
                exchange="",
                routing_key=queue,  # dead-lettered with this key unless a key is set
                properties=Basic.Properties(message_id=message_id),
            )
            got = await channel.basic_get(queue, no_ack=False)
            assert got.header.properties.message_id == message_id
            await channel.basic_reject(got.delivery.delivery_tag, requeue=False)
        for exchange in ("entry", "amq.direct", "work"):
            message_id = uuid.uuid4().hex
            sent[message_id] = f"unroutable to {exchange}"
            confirmation = await channel.basic_publish(
                b"{}",
                exchange=exchange,
                routing_key="nothing",
                properties=Basic.Properties(message_id=message_id),
            )
            assert isinstance(confirmation, Basic.Ack)
        where: dict[str, set[str]] = {}
        deadline = time.monotonic() + 10
        expected = {m for m, what in sent.items() if what != "unroutable to work"}
        while not expected <= where.keys() and time.monotonic() < deadline:
            await _drain(channel, spec, where)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # any second copy of a dead letter
        await _drain(channel, spec, where)
        return where, sent
    finally:
        await connection.close()


def test_dead_letters_and_alternate_exchanges_land_where_the_model_says(
    vhost: Vhost, spec: Spec
) -> None:
    put_policies(vhost, spec)
    where, sent = asyncio.run(_observe(vhost, spec))
    # (exchanges show their policy at once; queues only with the next statistics, ~5 s)
    applied = policies_seen(vhost)
    assert applied["exchange entry"] == applied["exchange amq.direct"] == "unrouted"
    compared = 0
    for message_id, what in sent.items():
        verb, _, name = what.rpartition(" ")
        if verb.startswith("rejected"):
            predicted = dead_letters(spec, name, name)
        else:
            predicted = {d.queue for d in route(spec, name, "nothing")}
        assert where.get(message_id, set()) == predicted, f"{what}: broker vs model"
        compared += 1
    assert compared == 7
    # Not vacuous: each way a policy changes routing was taken on the broker.
    landed = {queue for queues in where.values() for queue in queues}
    assert landed == {"parked.a", "parked.b", "parked.k2", "unrouted"}


NAMES = [
    "orders.shipping",
    "ordersXshipping",
    "a+b",
    "aab",
    "x|y",
    "x",
    "y",
    "(p)",
    "p",
    "[q]",
    "q",
    "a\\b",
    "a$",
    "a",
    "é.ü",
    "éxü",
    "^c",
    "c",
    "d?",
    "d",
    "{e}",
    "e",
    "*",
    "-",
    "#f",
]
LISTED = [
    "orders.shipping",
    "a+b",
    "x|y",
    "(p)",
    "[q]",
    "a\\b",
    "a$",
    "é.ü",
    "^c",
    "d?",
    "{e}",
    "*",
    "#f",
]


def test_an_anchored_pattern_matches_on_the_broker_exactly_the_names_listed(
    vhost: Vhost, tmp_path: Path
) -> None:
    # Exchanges, declared with the management API: AMQP clients refuse most of these
    # characters in names, and an exchange shows its policy at once (a queue only with
    # its next statistics).  The pattern is the same as for `queues: [...]`.
    exchanges = "\n".join(f"  {_yaml_key(n)}: {{type: fanout}}" for n in NAMES)
    listed = ", ".join(_yaml_key(n) for n in LISTED)
    alternate = _yaml_key(NAMES[1])
    text = (
        f"version: 1\nexchanges:\n{exchanges}\n"
        f"policies:\n  exact: {{exchanges: [{listed}], alternate_exchange: {alternate}}}\n"
    )
    spec = load_spec(write_spec(tmp_path, text))
    policy = spec.policies["exact"]
    put_policies(vhost, spec)
    with _management(vhost) as client:
        for name in NAMES:
            url = f"/api/exchanges/{quote(vhost.name, safe='')}/{quote(name, safe='')}"
            client.put(url, json={"type": "fanout"}).raise_for_status()
    applied = policies_seen(vhost)
    for name in NAMES:
        assert applied[f"exchange {name}"] == ("exact" if name in LISTED else None), name
        assert policy.applies_to("exchange", name) == (name in LISTED), name


def _yaml_key(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
