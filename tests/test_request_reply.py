"""Typed request/reply (``reply:`` in the spec, ``Client.request``) on the real broker.

A request goes to its queue with direct reply-to; the consumer's handler returns the reply,
which is validated against the reply's schema and sent back with the request's
correlation_id.  Many requests are in flight at once on one channel; each has its deadline;
a reply that breaks its schema dead-letters the request; a lost connection fails the
requests in flight.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands as spec

from amqp import apply, channel_on, close_connections, drain, until
from broker import Vhost
from rabbitry.check import load_spec
from rabbitry.errors import (
    ConnectionFailed,
    ContractViolation,
    InvalidArgument,
    RequestTimeout,
    SpecError,
    Unroutable,
)
from rabbitry.messaging._xdeath import rabbitry_reason
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract
from rabbitry.spec import Code, Severity
from specs import object_schema, write_spec
from test_codegen_support import ROOT, generate_package, imported, mypy_errors, ruff

SPEC = """
version: 1
exchanges:
  rpc: {type: direct}
  dlx: {type: fanout}
queues:
  add.q: {dead_letter: dlx}
  dead.q: {}
bindings:
  - {from: rpc, queue: add.q, key: add}
  - {from: dlx, queue: dead.q}
messages:
  Add: {schema: schemas/add.json, exchange: rpc, routing_key: add, reply: Sum}
  Sum: {schema: schemas/sum.json, exchange: ""}
services:
  server:
    consumes: {add.q: [Add]}
  caller:
    publishes: [Add]
"""
CACHE = ROOT / ".mypy_cache" / "codegen-tests"
SCHEMAS = {
    "schemas/add.json": object_schema(
        {"a": {"type": "integer"}, "b": {"type": "integer"}}, ["a", "b"]
    ),
    "schemas/sum.json": object_schema({"sum": {"type": "integer"}}, ["sum"]),
}


@pytest.fixture
def contract(vhost: Vhost, tmp_path: Path) -> Contract:
    return apply(vhost, write_spec(tmp_path, SPEC, SCHEMAS))


def test_a_hundred_requests_in_flight_at_once_are_all_answered_and_matched(
    vhost: Vhost, contract: Contract
) -> None:
    running = 0
    most = 0
    seen: list[Delivery[Any]] = []

    async def add(delivery: Delivery[Any]) -> dict[str, int]:
        nonlocal running, most
        seen.append(delivery)
        running += 1
        most = max(most, running)
        try:
            # the later requests are answered first: a reply goes to its own request
            await asyncio.sleep(0.3 - delivery.body["a"] / 1000)
        finally:
            running -= 1
        return {"sum": delivery.body["a"] + delivery.body["b"]}

    async def body() -> None:
        async with (
            Client(contract, vhost.amqp_url, service="server", prefetch=200) as server,
            Client(contract, vhost.amqp_url, service="caller") as caller,
        ):
            consumer = server.consume("add.q", add)
            await consumer.ready()
            started = time.monotonic()
            replies = await asyncio.gather(
                *(caller.request("Add", {"a": i, "b": 1000 * i}, timeout=10) for i in range(100))
            )
            took = time.monotonic() - started
        assert [r.body for r in replies] == [{"sum": 1001 * i} for i in range(100)]
        assert {r.type for r in replies} == {"Sum"}
        assert most >= 50, f"at most {most} requests were handled at once"
        assert took < 5, f"100 requests of 0.3 s took {took:.1f} s: they were not in flight at once"
        assert all(d.reply_to and d.reply_to.startswith("amq.rabbitmq.reply-to.") for d in seen)
        assert len({d.correlation_id for d in seen}) == 100
        assert {r.correlation_id for r in replies} == {d.correlation_id for d in seen}

    asyncio.run(body())


def test_no_reply_by_the_deadline_is_request_timeout_and_a_late_reply_is_dropped(
    vhost: Vhost, contract: Contract
) -> None:
    async def slow(delivery: Delivery[Any]) -> dict[str, int]:
        await asyncio.sleep(0.5 if delivery.body["a"] == 0 else 0)
        return {"sum": delivery.body["a"] + delivery.body["b"]}

    async def body() -> None:
        async with (
            Client(contract, vhost.amqp_url, service="server") as server,
            Client(contract, vhost.amqp_url, service="caller") as caller,
        ):
            await server.consume("add.q", slow).ready()
            started = time.monotonic()
            with pytest.raises(RequestTimeout, match=r"no reply Sum to request Add within 0\.2 s"):
                await caller.request("Add", {"a": 0, "b": 1}, timeout=0.2)
            assert time.monotonic() - started < 0.45
            await asyncio.sleep(0.5)  # its reply comes late and is dropped
            reply = await caller.request("Add", {"a": 2, "b": 3}, timeout=5)
            assert reply.body == {"sum": 5}
            with pytest.raises(ContractViolation):
                await caller.request("Add", {"a": "x", "b": 1})  # nothing sent

    asyncio.run(body())


def test_a_request_no_queue_takes_is_unroutable_at_once(vhost: Vhost, contract: Contract) -> None:
    async def body() -> None:
        async with channel_on(vhost) as channel:
            await channel.queue_unbind("add.q", "rpc", "add")
        async with Client(contract, vhost.amqp_url, service="caller") as caller:
            started = time.monotonic()
            with pytest.raises(Unroutable, match="no queue is bound for it"):
                await caller.request("Add", {"a": 1, "b": 2}, timeout=5)
            assert time.monotonic() - started < 2
            assert caller.is_connected

    asyncio.run(body())


def test_a_reply_that_breaks_its_schema_dead_letters_the_request(
    vhost: Vhost, contract: Contract
) -> None:
    async def wrong(delivery: Delivery[Any]) -> dict[str, str]:
        return {"sum": "not a number"}

    async def body() -> None:
        async with (
            Client(contract, vhost.amqp_url, service="server") as server,
            Client(contract, vhost.amqp_url, service="caller") as caller,
        ):
            await server.consume("add.q", wrong).ready()
            with pytest.raises(RequestTimeout):
                await caller.request("Add", {"a": 1, "b": 2}, timeout=0.5)
        [dead] = await drain(vhost.amqp_url, "dead.q", 1)
        assert dead.header.properties.message_type == "Add"
        reason = rabbitry_reason(dead.header.properties.headers)
        assert reason is not None
        assert "reply" in reason.error
        assert "Sum" in reason.error
        assert reason.path == "/sum"

    asyncio.run(body())


def test_a_reply_from_elsewhere_that_breaks_its_schema_fails_its_request(
    vhost: Vhost, contract: Contract
) -> None:
    """A responder that is not rabbitry's (a raw channel here) answers with a bad body."""

    async def respond() -> None:
        async with channel_on(vhost) as channel:
            while True:
                got = await channel.basic_get("add.q", no_ack=True)
                if isinstance(got.delivery, spec.Basic.GetOk):
                    break
                await asyncio.sleep(0.02)
            asked = got.header.properties
            await channel.basic_publish(
                b'{"sum": "three"}',
                exchange="",
                routing_key=asked.reply_to,
                properties=spec.Basic.Properties(
                    message_type="Sum", correlation_id=asked.correlation_id
                ),
            )

    async def body() -> None:
        async with Client(contract, vhost.amqp_url, service="caller") as caller:
            responder = asyncio.ensure_future(respond())
            with pytest.raises(ContractViolation) as bad:
                await caller.request("Add", {"a": 1, "b": 2}, timeout=5)
            await responder
        assert bad.value.message_name == "Sum"
        assert bad.value.path == "/sum"

    asyncio.run(body())


def test_a_lost_connection_fails_the_requests_in_flight(vhost: Vhost, contract: Contract) -> None:
    handled: list[int] = []
    release = asyncio.Event()

    async def stuck(delivery: Delivery[Any]) -> dict[str, int]:
        handled.append(delivery.body["a"])
        await release.wait()
        return {"sum": 0}

    async def body() -> None:
        async with (
            Client(contract, vhost.amqp_url, service="server", handler_timeout=60) as server,
            Client(contract, vhost.amqp_url, service="caller") as caller,
        ):
            await server.consume("add.q", stuck).ready()
            requests = [
                asyncio.ensure_future(caller.request("Add", {"a": i, "b": 0}, timeout=20))
                for i in range(5)
            ]
            await until(lambda: len(handled) == 5, 10)
            started = time.monotonic()
            await asyncio.to_thread(close_connections, vhost)
            outcomes = await asyncio.gather(*requests, return_exceptions=True)
            assert time.monotonic() - started < 5
            assert all(isinstance(o, ConnectionFailed) for o in outcomes), outcomes
            assert "reply can no longer arrive" in str(outcomes[0])
            await until(lambda: caller.is_connected, 15)
            # the next request opens a new channel and is answered
            release.set()
            reply = await caller.request("Add", {"a": 7, "b": 1}, timeout=10)
            assert reply.body == {"sum": 0}

    asyncio.run(body())


def test_request_of_a_message_without_a_reply_is_refused(vhost: Vhost, tmp_path: Path) -> None:
    spec = SPEC.replace(", reply: Sum", "").replace(
        'exchange: ""', "exchange: rpc, routing_key: add"
    )
    contract = Contract.from_spec(load_spec(write_spec(tmp_path, spec, SCHEMAS)))

    async def body() -> None:
        async with Client(contract, vhost.amqp_url) as client:
            with pytest.raises(InvalidArgument, match="names no reply"):
                await client.request("Add", {"a": 1, "b": 2})

    asyncio.run(body())


# -- the spec -------------------------------------------------------------------------


def errors_of(tmp: Path, spec: str) -> list[tuple[Code, str]]:
    try:
        load_spec(write_spec(tmp, spec, SCHEMAS))
    except SpecError as exc:
        return [(d.code, d.message) for d in exc.diagnostics if d.severity is Severity.ERROR]
    return []


def test_the_spec_check_of_replies(tmp_path: Path) -> None:
    assert errors_of(tmp_path, SPEC) == []  # a reply is bound to no queue: not unroutable
    contract = Contract.from_spec(load_spec(write_spec(tmp_path, SPEC, SCHEMAS)))
    assert contract.messages["Add"].reply == "Sum"
    assert contract.messages["Sum"].reply is None

    found = errors_of(tmp_path, SPEC.replace("reply: Sum", "reply: Summ"))
    unknown = [text for code, text in found if code is Code.UNKNOWN_MESSAGE]
    assert unknown == ["message 'Add' names reply 'Summ', which the spec does not declare"]

    routed = SPEC.replace('exchange: ""}', "exchange: rpc, routing_key: add}")
    found = errors_of(tmp_path, routed)
    assert [c for c, _ in found] == [Code.BAD_VALUE]
    assert "reply of 'Add'" in found[0][1]
    assert "default exchange" in found[0][1]


@settings(max_examples=30, deadline=None)
@given(name=st.from_regex(r"[A-Z][A-Za-z0-9]{0,12}", fullmatch=True))
def test_a_reply_naming_any_undeclared_message_is_an_error(name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        found = errors_of(Path(tmp), SPEC.replace("reply: Sum", f"reply: {name}"))
    if name in ("Add", "Sum"):
        assert Code.UNKNOWN_MESSAGE not in [c for c, _ in found]
    else:
        assert (
            Code.UNKNOWN_MESSAGE,
            f"message 'Add' names reply {name!r}, which the spec does not declare",
        ) in found


# -- the generated client -----------------------------------------------------------

GOOD = """
from typing import assert_type

from rpc import AddQDelivery, Caller, Server, Sum, SumDelivery


async def ask(caller: Caller) -> int:
    reply = await caller.request_add({"a": 1, "b": 2}, timeout=5)
    assert_type(reply, SumDelivery)
    assert_type(reply.body, Sum)
    return reply.body["sum"]


async def answer(delivery: AddQDelivery) -> Sum:
    return {"sum": delivery.body["a"] + delivery.body["b"]}


def serve(server: Server) -> None:
    server.consume_add_q(answer)
"""
BAD = """
from rpc import AddQDelivery, Caller, Server


async def ask(caller: Caller) -> str:
    reply = await caller.request_add({"a": "1", "b": 2})  # E
    return reply.body["sum"]  # E


async def wrong(delivery: AddQDelivery) -> dict[str, str]:
    return {"sum": "x"}


def serve(server: Server) -> None:
    server.consume_add_q(wrong)  # E
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rpc")
    generate_package(write_spec(folder, SPEC, SCHEMAS), folder / "rpc")
    return folder


def test_the_generated_request_method_is_typed(package: Path) -> None:
    user = package / "user"
    user.mkdir(exist_ok=True)
    expected = set()
    for name, text in (("good.py", GOOD), ("bad.py", BAD)):
        lines = text.lstrip().splitlines()
        (user / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        expected |= {(name, n) for n, line in enumerate(lines, 1) if line.endswith("# E")}
    errors = mypy_errors(
        [package / "rpc", user / "good.py", user / "bad.py"], search=[package], cache=CACHE
    )
    assert {(name, line) for name, line, _ in errors} == expected, errors
    linted = ruff("check", package / "rpc")
    assert linted.returncode == 0, linted.stdout


def test_the_generated_clients_request_and_answer(vhost: Vhost, package: Path) -> None:
    with imported(package, "rpc") as rpc:
        apply(vhost, package / "topology.yaml")

        async def answer(delivery: Any) -> dict[str, int]:
            return {"sum": delivery.body["a"] * delivery.body["b"]}

        async def body() -> None:
            async with rpc.Server(vhost.amqp_url) as server, rpc.Caller(vhost.amqp_url) as caller:
                await server.consume_add_q(answer).ready()
                replies = await asyncio.gather(
                    *(caller.request_add({"a": i, "b": 3}) for i in range(20))
                )
            assert [r.body["sum"] for r in replies] == [3 * i for i in range(20)]

        asyncio.run(body())
