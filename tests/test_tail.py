"""``rabbitry tail`` on the real broker: it takes nothing and spends no delivery unless told.

What looking costs is measured here on RabbitMQ 3.10.8, not assumed: a
quorum queue's ``x-delivery-count`` read by a later consume, a classic
queue's ``redelivered`` flag, a stream read twice.  The broker's dead-letter
reasons are caused for real (a TTL runs out, a reject, a full queue, a
delivery limit, a rabbitry consumer refusing a message) and read back by
tail.  Messages are published and read back raw (aiormq), not through the
code under test.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiormq
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import Vhost
from rabbitry.broker import converge
from rabbitry.broker.url import parse_url
from rabbitry.check import load_spec
from rabbitry.errors import InvalidArgument
from rabbitry.messaging._tail_cost import Cost, Spent, queue_facts, read_facts
from rabbitry.messaging._xdeath import deaths, rabbitry_reason
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract
from rabbitry.messaging.peek import Peeked, peek
from rabbitry.spec.policies import Setting
from specs import FLAGSHIP, run_cli, write_spec

SPEC = """
version: 1
exchanges:
  notes: {type: fanout}
  dead: {type: fanout}
queues:
  work.q: {type: quorum, delivery_limit: 5, dead_letter: dead}
  limit.q: {type: quorum, delivery_limit: 0, dead_letter: dead}
  nolimit.q: {type: quorum}
  drop.q: {type: quorum, delivery_limit: 0}
  work.c: {dead_letter: dead}
  ttl.c: {message_ttl: 200, dead_letter: dead}
  short.c: {max_length: 1, dead_letter: dead}
  parked: {}
  events: {type: stream}
bindings:
  - {from: notes, queue: work.q}
  - {from: notes, queue: limit.q}
  - {from: notes, queue: nolimit.q}
  - {from: notes, queue: drop.q}
  - {from: notes, queue: work.c}
  - {from: notes, queue: ttl.c}
  - {from: notes, queue: short.c}
  - {from: notes, queue: events}
  - {from: dead, queue: parked}
messages:
  Note: {schema: schemas/note.json, exchange: notes}
services:
  reader:
    publishes: [Note]
    consumes:
      work.q: [Note]
      limit.q: [Note]
      nolimit.q: [Note]
      drop.q: [Note]
      work.c: [Note]
      ttl.c: [Note]
      short.c: [Note]
      parked: [Note]
      events: [Note]
"""
NOTE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"text": {"type": "string"}, "n": {"type": "integer"}},
    "required": ["text"],
}


@pytest.fixture
def topology(vhost: Vhost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Vhost:
    """The vhost with SPEC applied; the spec is ./topology.yaml for the CLI."""
    path = write_spec(tmp_path, SPEC, {"schemas/note.json": NOTE_SCHEMA})
    asyncio.run(converge.apply(load_spec(path), parse_url(vhost.amqp_url), timeout=10))
    monkeypatch.chdir(tmp_path)
    return vhost


def note(text: str = "hello") -> bytes:
    return json.dumps({"text": text}).encode()


async def _publish(url: str, queue: str, messages: list[tuple[bytes, dict[str, Any]]]) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.confirm_delivery()
        for body, headers in messages:
            properties = aiormq.spec.Basic.Properties(
                message_type="Note",
                content_type="application/json",
                headers=headers or None,
            )
            await channel.basic_publish(body, routing_key=queue, properties=properties)
    finally:
        await connection.close()


def publish(vhost: Vhost, queue: str, *bodies: bytes) -> None:
    asyncio.run(_publish(vhost.amqp_url, queue, [(body, {}) for body in bodies]))


async def _take(url: str, queue: str) -> list[Any]:
    """Every ready message of ``queue``, acked: what a consumer gets after tail."""
    connection = await aiormq.connect(url)
    taken: list[Any] = []
    try:
        channel = await connection.channel()
        while True:
            message = await channel.basic_get(queue, no_ack=True)
            if isinstance(message.delivery, aiormq.spec.Basic.GetEmpty):
                return taken
            taken.append(message)
    finally:
        await connection.close()


def take(vhost: Vhost, queue: str) -> list[Any]:
    return asyncio.run(_take(vhost.amqp_url, queue))


async def _ready(url: str, queue: str) -> int:
    connection = await aiormq.connect(url)
    channel = await connection.channel()
    ok = await channel.queue_declare(queue, passive=True)
    await connection.close()
    return int(ok.message_count or 0)


def ready(vhost: Vhost, queue: str) -> int:
    """Messages ready in ``queue``, read raw."""
    return asyncio.run(_ready(vhost.amqp_url, queue))


def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def delivery_count(message: Any) -> int:
    """``x-delivery-count`` of a consumed message; absent is 0 (a first delivery)."""
    return int((message.header.properties.headers or {}).get("x-delivery-count") or 0)


def tail(
    vhost: Vhost, capsys: pytest.CaptureFixture[str], queue: str, *more: str
) -> tuple[int, str, str]:
    return run_cli(["tail", queue, "--url", vhost.amqp_url, "--idle", "0.5", *more], capsys)


def tail_json(
    vhost: Vhost, capsys: pytest.CaptureFixture[str], queue: str, *more: str
) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """tail with --format json: exit code, the message objects, the summary object."""
    code, out, err = tail(vhost, capsys, queue, "--format", "json", *more)
    assert code in (0, 1), err
    summary = json.loads(err.strip().splitlines()[-1])
    return code, [json.loads(line) for line in out.splitlines()], summary


def set_policy(vhost: Vhost, kind: str, name: str, body: dict[str, Any]) -> None:
    path = f"/api/{kind}/{quote(vhost.name, safe='')}/{quote(name, safe='')}"
    response = httpx.put(
        vhost.management_url + path,
        json=body,
        auth=(vhost.api.config.username, vhost.api.config.password),
        timeout=10,
    )
    assert response.status_code in (201, 204), response.text


# -- quorum queues: a look is a delivery attempt ---------------------------------


def test_quorum_tail_refuses_without_the_flag_and_leaves_the_delivery_count(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(topology, "work.q", note())
    code, out, err = tail(topology, capsys, "work.q")
    assert code == 1
    assert out == ""
    assert "'work.q' is a quorum queue with delivery limit 5" in err
    assert "counts as a delivery attempt (x-delivery-count + 1)" in err
    assert "pass --spend-delivery to look anyway" in err
    assert "rabbitmq-queues peek" in err
    (message,) = take(topology, "work.q")
    assert delivery_count(message) == 0
    assert message.delivery.redelivered is False  # never delivered before: tail got nothing


def test_six_tails_without_the_flag_never_dead_letter_the_message(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    """The field report: six tails of a delivery-limit-5 queue dead-lettered what they saw."""
    publish(topology, "work.q", note("start"))
    for _ in range(6):
        code, _, err = tail(topology, capsys, "work.q")
        assert code == 1, err
    assert ready(topology, "parked") == 0
    (message,) = take(topology, "work.q")
    assert (message.body, delivery_count(message)) == (note("start"), 0)


def test_with_the_flag_the_count_goes_up_by_exactly_what_tail_said(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(topology, "work.q", note("a"), note("b"))
    said = []
    for _ in range(2):
        code, items, summary = tail_json(topology, capsys, "work.q", "--spend-delivery")
        assert code == 0
        said.append([item["look"] for item in items])
        assert (summary["cost"], summary["seen"], summary["returned"]) == ("delivery-attempt", 2, 2)
        assert (summary["verified"], summary["ready_after"]) == (True, 2)
    first, second = said
    assert [look["delivery_count_before"] for look in first] == [0, 0]
    assert [look["delivery_count_after"] for look in first] == [1, 1]
    assert [look["deliveries_left"] for look in first] == [5, 5]
    assert [look["delivery_count_before"] for look in second] == [1, 1]
    assert [look["delivery_count_after"] for look in second] == [2, 2]
    assert [look["deliveries_left"] for look in second] == [4, 4]
    taken = take(topology, "work.q")
    assert [m.body for m in taken] == [note("a"), note("b")]  # still there, in order
    assert [delivery_count(m) for m in taken] == [2, 2]  # exactly what tail said


def test_text_output_says_per_message_how_many_deliveries_are_left(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(topology, "work.q", note())
    code, out, err = tail(topology, capsys, "work.q", "--spend-delivery")
    assert code == 0, err
    assert "look: x-delivery-count 0 → 1 of delivery limit 5: 5 deliveries left" in out
    assert "warning: 'work.q' is a quorum queue with delivery limit 5" in err
    assert "1 message back in the queue, with one delivery attempt spent" in err


def test_a_look_that_takes_a_message_over_its_limit_says_it_dead_lettered_it(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(topology, "limit.q", note("last"))
    code, (item,), summary = tail_json(topology, capsys, "limit.q", "--spend-delivery")
    assert code == 0
    assert item["look"]["dead_lettered_by_look"] is True
    assert item["look"]["deliveries_left"] == 0
    assert (summary["dead_lettered_by_look"], summary["returned"]) == (1, 0)
    assert (summary["ready_after"], summary["verified"]) == (0, True)
    until(lambda: ready(topology, "parked") == 1)
    (dead,) = take(topology, "parked")
    assert dead.body == note("last")
    assert dead.header.properties.headers["x-death"][0]["reason"] == "delivery_limit"


def test_a_dead_lettering_look_is_shown_in_text(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(topology, "limit.q", note())
    code, out, err = tail(topology, capsys, "limit.q", "--spend-delivery")
    assert code == 0, err
    assert "over delivery limit 0: dead-lettered to exchange 'dead' by this look" in out
    assert "1 message over the delivery limit: dead-lettered to exchange 'dead'" in err


def test_a_look_that_would_drop_a_message_says_dropped(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    """No dead-letter exchange: a message taken over its limit is gone, and tail says so."""
    publish(topology, "drop.q", note())
    code, _, err = tail(topology, capsys, "drop.q")
    assert code == 1
    assert "is DROPPED (the queue has no dead-letter exchange) by the look" in err
    code, out, err = tail(topology, capsys, "drop.q", "--spend-delivery")
    assert code == 0, err
    assert "over delivery limit 0: DROPPED (the queue has no dead-letter exchange)" in out
    assert ready(topology, "drop.q") == 0


def test_a_quorum_queue_without_a_limit_is_refused_too(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(topology, "nolimit.q", note())
    code, _, err = tail(topology, capsys, "nolimit.q")
    assert code == 1
    assert "quorum queue without a delivery limit" in err
    code, items, _ = tail_json(topology, capsys, "nolimit.q", "--spend-delivery")
    assert items[0]["look"]["delivery_limit"] is None
    (message,) = take(topology, "nolimit.q")
    assert delivery_count(message) == 1  # counted even without a limit


@pytest.mark.parametrize("kind", ["policies", "operator-policies"])
def test_a_lower_delivery_limit_from_a_policy_is_the_one_tail_counts_with(
    topology: Vhost, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """argument 5, policy 1: the lesser wins on 3.10, and tail predicts the dead-lettering."""
    set_policy(
        topology,
        kind,
        "low-limit",
        {"pattern": r"^work\.q$", "apply-to": "queues", "definition": {"delivery-limit": 1}},
    )
    publish(topology, "work.q", note())
    code, _, err = tail(topology, capsys, "work.q")
    assert code == 1  # refused
    source = "operator_policy" if kind == "operator-policies" else "policy"
    assert f"delivery limit 1 ({source}:low-limit)" in err
    looks = []
    for _ in range(2):
        _, items, _ = tail_json(topology, capsys, "work.q", "--spend-delivery")
        looks.append(items[0]["look"])
    assert [look["dead_lettered_by_look"] for look in looks] == [False, True]
    until(lambda: ready(topology, "parked") == 1)  # the broker agreed: gone at the second look
    assert ready(topology, "work.q") == 0


def named_policy(vhost: Vhost, queue: str) -> str | None:
    """The user policy the broker names on the queue's row (the one it applies).

    Read from the list without statistics, where it is the queue record's and
    current; the single queue's GET, with statistics, went without it for more
    than 5 s after the policies were set (3.10.8).
    """
    path = f"/api/queues/{quote(vhost.name, safe='')}?columns=name,policy&disable_stats=true"
    rows = vhost.api.get_json(path)
    return next(row.get("policy") or None for row in rows if row["name"] == queue)


def test_on_a_tie_tail_counts_with_the_policy_the_broker_names(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two policies of equal priority: the broker applies the one its queue row names, and
    tail counts with that one's limit (4), not the other's lower one (1)."""

    def limit(n: int) -> dict[str, Any]:
        return {"pattern": r"^work\.q$", "apply-to": "queues", "definition": {"delivery-limit": n}}

    set_policy(topology, "policies", "tie-a", limit(1))
    set_policy(topology, "policies", "tie-b", limit(1))
    for _ in range(10):  # give the broker's pick the higher limit, however it picks
        named = named_policy(topology, "work.q")
        assert named in ("tie-a", "tie-b")
        other = "tie-b" if named == "tie-a" else "tie-a"
        set_policy(topology, "policies", named, limit(4))
        set_policy(topology, "policies", other, limit(1))
        if named_policy(topology, "work.q") == named:
            break
    else:
        pytest.fail("the broker's pick kept moving")
    publish(topology, "work.q", note())
    looks = []
    for _ in range(2):
        _, items, summary = tail_json(topology, capsys, "work.q", "--spend-delivery")
        looks.append(items[0]["look"])
    assert (summary["delivery_limit"], summary["delivery_limit_source"]) == (4, f"policy:{named}")
    assert summary["tied_policies"] == []
    assert [look["dead_lettered_by_look"] for look in looks] == [False, False]
    assert ready(topology, "work.q") == 1  # the broker agrees: limit 1 would have taken it
    assert ready(topology, "parked") == 0


# -- classic queues and streams ------------------------------------------------------


def test_classic_tail_leaves_the_messages_and_says_so_truthfully(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(topology, "work.c", note("one"), note("two"))
    code, out, err = tail(topology, capsys, "work.c")
    assert code == 0, err
    assert len(out.splitlines()) == 2
    assert "all 2 messages back in the queue, marked redelivered" in err
    assert "(it holds 2 ready messages)" in err
    taken = take(topology, "work.c")
    assert [m.body for m in taken] == [note("one"), note("two")]
    assert all(m.delivery.redelivered for m in taken)  # the one mark a look leaves
    assert all(delivery_count(m) == 0 for m in taken)


def test_a_delivery_limit_policy_does_not_make_a_classic_queue_count(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    """On 3.10 a delivery limit is a quorum-only setting: tail needs no flag for classic."""
    set_policy(
        topology,
        "policies",
        "limit-everything",
        {"pattern": ".*", "apply-to": "queues", "definition": {"delivery-limit": 0}},
    )
    publish(topology, "work.c", note())
    for _ in range(3):
        code, _, err = tail(topology, capsys, "work.c")
        assert code == 0, err
        assert "1 message back in the queue, marked redelivered" in err
    assert ready(topology, "parked") == 0
    (message,) = take(topology, "work.c")
    assert (message.body, delivery_count(message)) == (note(), 0)


def test_tail_does_not_claim_what_it_could_not_verify(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another consumer takes what tail gives back: tail says it cannot tell it is there."""
    publish(topology, "work.c", note())
    said: list[tuple[int, str, str]] = []
    looking = threading.Thread(
        target=lambda: said.append(tail(topology, capsys, "work.c", "--idle", "1.5"))
    )
    looking.start()
    until(lambda: ready(topology, "work.c") == 0)  # tail holds it, unacked

    async def compete() -> list[Any]:
        connection = await aiormq.connect(topology.amqp_url)
        got: list[Any] = []
        await (await connection.channel()).basic_consume("work.c", got.append, no_ack=True)
        while looking.is_alive() or not got:
            await asyncio.sleep(0.05)
        await connection.close()
        return got

    (taken,) = asyncio.run(compete())  # returned by tail, straight to the other consumer
    looking.join()
    ((code, out, err),) = said
    assert code == 0, err
    assert len(out.splitlines()) == 1
    assert taken.body == note()
    assert "back in the queue" not in err
    assert "returned 1 but it holds 0 ready messages (1 consumer)" in err
    assert "tail cannot say they are all still there" in err


def test_a_stream_is_read_without_a_flag_and_keeps_everything(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(topology, "events", note("e0"), note("e1"), note("e2"))
    seen = []
    for _ in range(2):
        code, items, summary = tail_json(topology, capsys, "events")
        assert code == 0
        assert (summary["cost"], summary["seen"], summary["returned"]) == ("nothing", 3, 0)
        seen.append([(item["stream_offset"], item["body"], item["look"]) for item in items])
    assert seen[0] == seen[1]  # read twice, the same: nothing was taken
    assert [offset for offset, _, _ in seen[0]] == [0, 1, 2]
    assert all(look is None for _, _, look in seen[0])
    _, _, err = tail(topology, capsys, "events")
    assert "a stream is read from an offset, never taken from" in err


def test_without_the_management_api_the_type_is_unknown_and_treated_as_costly(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(topology, "work.c", note())
    nowhere = "http://127.0.0.1:9"
    code, out, err = tail(topology, capsys, "work.c", "--management-url", nowhere)
    assert code == 1
    assert out == ""
    assert "cannot tell what kind of queue 'work.c' is (the spec says classic)" in err
    assert "give a management API that answers (--management-url)" in err
    assert ready(topology, "work.c") == 1
    (message,) = take(topology, "work.c")
    assert message.delivery.redelivered is False
    publish(topology, "work.c", note())
    args = ("--management-url", nowhere, "--spend-delivery")
    code, out, err = tail(topology, capsys, "work.c", *args)
    assert code == 0, err
    assert "x-delivery-count 0 → 1 if it is a quorum queue (tail could not read its type)" in out
    assert "1 message back in the queue, with one delivery attempt spent if it is a quorum" in err
    assert ready(topology, "work.c") == 1


# -- why a message was dead-lettered ---------------------------------------------------


async def _reject(url: str, queue: str, *, requeue: bool) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        message = await channel.basic_get(queue, no_ack=False)
        assert isinstance(message.delivery, aiormq.spec.Basic.GetOk)
        await channel.basic_reject(message.delivery.delivery_tag or 0, requeue=requeue)
    finally:
        await connection.close()


def test_the_brokers_dead_letter_reasons_are_shown(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    url = topology.amqp_url
    publish(topology, "ttl.c", note("expired"))  # its TTL runs out
    publish(topology, "work.c", note("rejected"))
    asyncio.run(_reject(url, "work.c", requeue=False))  # a consumer rejects it
    publish(topology, "short.c", note("maxlen"), note("kept"))  # one too many
    publish(topology, "limit.q", note("delivery_limit"))
    asyncio.run(_reject(url, "limit.q", requeue=True))  # returned once: over limit 0
    until(lambda: ready(topology, "parked") == 4)
    code, items, _ = tail_json(topology, capsys, "parked")
    assert code == 0
    found = {json.loads(item["body"])["text"]: item["x_death"] for item in items}
    assert set(found) == {"expired", "rejected", "maxlen", "delivery_limit"}
    queues = {"expired": "ttl.c", "rejected": "work.c", "maxlen": "short.c"}
    queues["delivery_limit"] = "limit.q"
    for reason, (death,) in found.items():
        assert death["reason"] == reason
        assert death["queue"] == queues[reason]
        assert death["exchange"] == ""  # published to the default exchange
        assert death["routing_keys"] == [queues[reason]]
        assert death["count"] == 1
        assert death["time"] is not None
    code, out, _ = tail(topology, capsys, "parked")
    assert code == 0
    assert "dead-lettered by the broker: expired (its time to live ran out) in queue 'ttl.c'" in out
    assert "rejected (a consumer rejected it without requeue) in queue 'work.c'" in out
    assert "maxlen (the queue was over its length limit) in queue 'short.c'" in out
    assert "delivery_limit (it was returned more often than the delivery limit)" in out
    assert ready(topology, "parked") == 4


def test_rabbitrys_own_reason_is_shown_beside_the_brokers(
    topology: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rabbitry consumer refuses an invalid Note; tail of the parking queue says why."""
    contract = Contract.load(Path("topology.yaml"))

    async def refuse() -> None:
        async def handler(delivery: Delivery[Any]) -> None:
            raise AssertionError("an invalid message reached the handler")

        async with Client(contract, topology.amqp_url, service="reader") as reader:
            consumer = reader.consume("work.c", handler)
            await consumer.ready()
            await _publish(topology.amqp_url, "work.c", [(b'{"text": 7, "n": "x"}', {})])
            for _ in range(200):
                if await _ready(topology.amqp_url, "parked"):
                    break
                await asyncio.sleep(0.05)
            await consumer.cancel()

    asyncio.run(refuse())
    code, (item,), _ = tail_json(topology, capsys, "parked")
    assert code == 1  # the message itself is invalid
    reason = item["rabbitry_reason"]
    assert "Note /text: 7 is not of type" in reason["error"]
    assert (reason["path"], reason["queue"], reason["routing_key"]) == ("/text", "work.c", "work.c")
    assert item["dead_letter_reason"] == reason["error"]
    assert item["x_death"] == []  # rabbitry's copy: the broker dead-lettered nothing
    _, out, _ = tail(topology, capsys, "parked")
    assert "dead-lettered by rabbitry: Note" in out
    assert "at /text; also " in out  # every fault, not only the first
    assert "at /n; consumed from queue 'work.c'" in out
    assert [e["path"] for e in reason["errors"]] == ["/text", "/n"]


# -- every message stays, byte for byte ---------------------------------------------------

HEADER_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)
HEADERS = st.dictionaries(
    st.text(min_size=1, max_size=20).filter(lambda k: not k.startswith("x-")),
    HEADER_VALUES,
    max_size=5,
)
MESSAGES = st.lists(st.tuples(st.binary(max_size=300), HEADERS), min_size=1, max_size=5)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=MESSAGES)
def test_tail_leaves_every_message_byte_identical(
    topology: Vhost, messages: list[tuple[bytes, dict[str, Any]]]
) -> None:
    url = parse_url(topology.amqp_url)
    contract = Contract.load(Path("topology.yaml"))
    asyncio.run(_publish(topology.amqp_url, "work.c", messages))
    shown: list[Peeked] = []

    async def look() -> Any:
        facts = await read_facts(url, "work.c", "classic", timeout=10)
        return await peek(contract, url, facts, shown.append, count=len(messages), idle=1)

    outcome = asyncio.run(look())
    assert outcome.verified is True
    assert [item.body for item in shown] == [body for body, _ in messages]
    taken = take(topology, "work.c")
    assert [m.body for m in taken] == [body for body, _ in messages]
    assert [m.header.properties.headers or {} for m in taken] == [h for _, h in messages]
    assert [dict(item.headers) for item in shown] == [h for _, h in messages]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=MESSAGES)
def test_a_spending_look_at_a_quorum_queue_changes_nothing_but_the_count(
    topology: Vhost, messages: list[tuple[bytes, dict[str, Any]]]
) -> None:
    url = parse_url(topology.amqp_url)
    contract = Contract.load(Path("topology.yaml"))
    asyncio.run(_publish(topology.amqp_url, "work.q", messages))
    shown: list[Peeked] = []

    async def look() -> Any:
        facts = await read_facts(url, "work.q", "quorum", timeout=10)
        return await peek(
            contract, url, facts, shown.append, count=len(messages), idle=1, spend_delivery=True
        )

    outcome = asyncio.run(look())
    assert (outcome.verified, outcome.dead_lettered) == (True, 0)
    assert [item.spent.count_after if item.spent else None for item in shown] == [1] * len(messages)
    taken = take(topology, "work.q")
    assert [m.body for m in taken] == [body for body, _ in messages]
    headers = [dict(m.header.properties.headers or {}) for m in taken]
    assert [h.pop("x-delivery-count") for h in headers] == [1] * len(messages)
    assert headers == [h for _, h in messages]


# -- no broker: reading the headers and the queue rows ---------------------------------------


def test_a_refused_look_never_connects() -> None:
    facts = queue_facts(
        "q",
        "/",
        "quorum",
        queues=[{"name": "q", "type": "quorum", "arguments": {}}],
        policies=[],
        operator_policies=[],
    )
    assert facts is not None
    nowhere = parse_url("amqp://guest:guest@127.0.0.1:9/")
    with pytest.raises(InvalidArgument, match="quorum queue without a delivery limit"):
        asyncio.run(peek(Contract.load(FLAGSHIP), nowhere, facts, print))


@given(headers=st.dictionaries(st.sampled_from(["x-death", "x-rabbitry-error"]), HEADER_VALUES))
def test_reading_reasons_never_fails_on_any_header(headers: dict[str, Any]) -> None:
    found = deaths(headers)
    assert all(isinstance(d.count, int) for d in found)
    reason = rabbitry_reason(headers)
    assert (reason is None) == (headers.get("x-rabbitry-error") is None)


def test_policies_are_matched_as_the_broker_does() -> None:
    queue = {"name": "orders.in", "type": "quorum", "arguments": {"x-delivery-limit": 9}}

    def facts(
        *policies: dict[str, Any], ops: tuple[dict[str, Any], ...] = (), named: str = ""
    ) -> Any:
        row = {**queue, "policy": named}
        return queue_facts(
            "orders.in", "/", "quorum", queues=[row], policies=policies, operator_policies=ops
        )

    def policy(name: str, pattern: str, limit: int, **more: Any) -> dict[str, Any]:
        return {"name": name, "pattern": pattern, "definition": {"delivery-limit": limit}, **more}

    assert facts().delivery_limit.source == "argument"
    # the highest priority applies, even with a higher limit
    high = facts(policy("low", "orders", 2, priority=0), policy("high", "^orders", 7, priority=5))
    assert (high.limit, high.delivery_limit.source, high.tied) == (7, "policy:high", ())
    # equal priorities: the broker picks one; the row names it, or tail assumes the lesser
    tie = (policy("a", "in$", 4), policy("b", "orders", 3))
    assert (facts(*tie).limit, facts(*tie).tied) == (3, ("policy:a", "policy:b"))
    assert "policy:a, policy:b tie" in facts(*tie).what_a_look_costs()
    assert (facts(*tie, named="a").limit, facts(*tie, named="a").tied) == (4, ())
    assert facts(*tie, named="gone").limit == 3  # a name that is not among the tied settles nothing
    # operator policies tie too, and nothing names the broker's pick among them
    ops = (policy("o1", ".*", 5), policy("o2", ".*", 2))
    assert (facts(ops=ops).limit, facts(ops=ops).tied) == (
        2,
        ("operator_policy:o1", "operator_policy:o2"),
    )
    # apply-to exchanges does not reach a queue; a pattern that does not match neither
    assert (
        facts(policy("x", ".*", 1, **{"apply-to": "exchanges"}), policy("y", "^in", 1)).limit == 9
    )
    assert facts(policy("p", ".*", 8), ops=(policy("op", ".*", 6),)).limit == 6
    assert facts(policy("p", ".*", 1, **{"apply-to": "classic_queues"})).limit == 9
    dlx = queue_facts(
        "q",
        "/",
        "classic",
        queues=[{"name": "q", "type": "classic", "arguments": {"x-dead-letter-exchange": "a"}}],
        policies=[{"name": "p", "pattern": ".*", "definition": {"dead-letter-exchange": "b"}}],
        operator_policies=[],
    )
    assert dlx is not None
    assert dlx.dead_letter_exchange == Setting("a", "argument")  # the argument wins
    assert dlx.as_json()["dead_letter_exchange_source"] == "argument"
    assert dlx.cost is Cost.REDELIVERED_FLAG


def test_spent_matches_the_brokers_arithmetic() -> None:
    """Measured on 3.10.8: limit 3 lets a message be returned 3 times; the 4th dead-letters it."""
    looks = [Spent(count, 3) for count in range(5)]
    assert [s.dead_lettered for s in looks] == [False, False, False, True, True]
    assert [s.deliveries_left for s in looks] == [3, 2, 1, 0, 0]
    assert Spent(0, None).deliveries_left is None


def test_tail_of_a_run_time_queue_says_it_is_server_named_and_how_to_look(
    vhost: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    """The flagship's job-status is exclusive: its consumer declares it, server-named."""
    code, _, err = tail(vhost, capsys, "job-status", "--spec", str(FLAGSHIP))
    assert code != 0
    assert "run-time queue" in err
    assert "name the server picks" in err
    assert "rabbitmqctl list_queues" in err
    assert "has no queue" not in err
