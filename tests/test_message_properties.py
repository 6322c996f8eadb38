"""Message properties on publish (``correlation_id``, ``reply_to``, ``priority``,
``expiration``, custom ``headers``) and on the consumer's ``Delivery``, on the real broker.

Each property goes publish -> broker -> consumer -> ``Delivery``; a priority queue
really delivers the higher priority first, an expiration really expires; what the
broker would quietly cap, ignore or reroute is refused before anything is sent.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp.header import ContentHeader

from amqp import apply, depth, drain, until
from broker import Vhost
from rabbitry.broker import _frames
from rabbitry.errors import InvalidArgument
from rabbitry.messaging._properties import MAX_EXPIRATION, properties
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract
from specs import object_schema, write_spec

SPEC = """
version: 1
exchanges:
  work: {type: direct}
  tags: {type: headers}
queues:
  prio.q: {max_priority: 5}
  plain.q: {}
  tagged.q: {}
bindings:
  - {from: work, queue: prio.q, key: task}
  - {from: work, queue: plain.q, key: plain}
  - {from: tags, queue: tagged.q, match: all, headers: {kind: red}}
messages:
  Task: {schema: schemas/m.json, exchange: work, routing_key: task}
  Plain: {schema: schemas/m.json, exchange: work, routing_key: plain}
  Tagged: {schema: schemas/t.json, exchange: tags, headers: {kind: "{kind}"}}
services:
  app:
    publishes: [Task, Plain, Tagged]
    consumes: {prio.q: [Task], plain.q: [Plain], tagged.q: [Tagged]}
"""
SCHEMAS = {
    "schemas/m.json": object_schema({"n": {"type": "integer"}}, ["n"]),
    "schemas/t.json": object_schema(
        {"n": {"type": "integer"}, "kind": {"enum": ["red"]}}, ["n", "kind"]
    ),
}


@pytest.fixture
def contract(vhost: Vhost, tmp_path: Path) -> Contract:
    return apply(vhost, write_spec(tmp_path, SPEC, SCHEMAS))


async def consume_all(
    client: Client, queue: str, want: int, *, prefetch: int | None = None
) -> list[Delivery[Any]]:
    """The first ``want`` deliveries of ``queue`` through ``Client.consume``."""
    got: list[Delivery[Any]] = []

    async def handler(delivery: Delivery[Any]) -> None:
        got.append(delivery)

    consumer = client.consume(queue, handler, prefetch=prefetch)
    await consumer.ready()
    await until(lambda: len(got) >= want, 10)
    await consumer.cancel()
    return got


def test_each_property_reaches_the_delivery(vhost: Vhost, contract: Contract) -> None:
    headers = {"tenant": "acme", "n": 7, "nested": {"a": [1, "b"]}, "yes": True}

    async def body() -> None:
        async with Client(contract, vhost.amqp_url, service="app") as client:
            await client.publish(
                "Task",
                {"n": 1},
                correlation_id="c-1",
                reply_to="replies.q",
                priority=4,
                expiration=timedelta(minutes=1),
                headers=headers,
            )
            await client.publish("Tagged", {"n": 2, "kind": "red"}, headers={"tenant": "b"})
            await client.publish("Plain", {"n": 3})  # none: every property None
            [task] = await consume_all(client, "prio.q", 1)
            [tagged] = await consume_all(client, "tagged.q", 1)
            [plain] = await consume_all(client, "plain.q", 1)
        assert (task.correlation_id, task.reply_to) == ("c-1", "replies.q")
        assert (task.priority, task.expiration) == (4, 60_000)
        assert dict(task.headers) == headers
        # the routing header the spec fills stays beside the custom one
        assert dict(tagged.headers) == {"kind": "red", "tenant": "b"}
        assert (plain.correlation_id, plain.reply_to, plain.priority, plain.expiration) == (
            None,
            None,
            None,
            None,
        )
        assert plain.headers == {}

    asyncio.run(body())


def test_the_higher_priority_is_delivered_first(vhost: Vhost, contract: Contract) -> None:
    async def body() -> None:
        async with Client(contract, vhost.amqp_url, service="app") as client:
            # no consumer yet: both wait in the queue; the confirm says each is there
            await client.publish("Task", {"n": 1}, priority=1)
            await client.publish("Task", {"n": 2}, priority=5)
            await client.publish("Task", {"n": 3})  # none: the lowest
            got = await consume_all(client, "prio.q", 3, prefetch=1)
        assert [d.body["n"] for d in got] == [2, 1, 3]
        assert [d.priority for d in got] == [5, 1, None]

    asyncio.run(body())


def test_publish_many_sets_the_properties_of_every_item(vhost: Vhost, contract: Contract) -> None:
    async def body() -> None:
        async with Client(contract, vhost.amqp_url, service="app") as client:
            await client.publish_many(
                [("Task", {"n": 1}), ("Task", {"n": 2})], correlation_id="batch", priority=2
            )
            with pytest.raises(InvalidArgument, match=r"item 1: .*Plain reaches no queue"):
                await client.publish_many([("Task", {"n": 3}), ("Plain", {"n": 4})], priority=2)
            got = await consume_all(client, "prio.q", 2)
        assert [(d.correlation_id, d.priority) for d in got] == [("batch", 2)] * 2
        assert await depth(vhost.amqp_url, "plain.q") == 0

    asyncio.run(body())


def test_an_expired_message_is_gone(vhost: Vhost, contract: Contract) -> None:
    async def body() -> None:
        async with Client(contract, vhost.amqp_url, service="app") as client:
            # each confirmed, so each was in the queue (mandatory: a miss is Unroutable)
            await client.publish("Plain", {"n": 1}, expiration=50)
            await client.publish("Plain", {"n": 2}, expiration=timedelta(minutes=5))
        for _ in range(100):  # the broker drops the expired head within its TTL's tick
            if await depth(vhost.amqp_url, "plain.q") == 1:
                break
            await asyncio.sleep(0.05)
        [left] = await drain(vhost.amqp_url, "plain.q", 1)
        assert left.body == b'{"n":2}'
        assert left.header.properties.expiration == "300000"
        assert await depth(vhost.amqp_url, "plain.q") == 0

    asyncio.run(body())


def test_what_the_broker_would_cap_ignore_or_reroute_is_refused(
    vhost: Vhost, contract: Contract
) -> None:
    async def body() -> None:
        async with Client(contract, vhost.amqp_url, service="app") as client:
            with pytest.raises(InvalidArgument, match=r"'prio.q' \(max_priority 5\)"):
                await client.publish("Task", {"n": 1}, priority=6)
            with pytest.raises(InvalidArgument, match="Plain reaches no queue with a max_pri"):
                await client.publish("Plain", {"n": 1}, priority=1)
            with pytest.raises(InvalidArgument, match="'kind' is a routing header of Tagged"):
                await client.publish("Tagged", {"n": 1, "kind": "red"}, headers={"kind": "x"})
            for header in ("x-rabbitry-error", "X-Rabbitry-Queue", "CC", "BCC", "x-death"):
                with pytest.raises(InvalidArgument, match=header):
                    await client.publish("Plain", {"n": 1}, headers={header: "x"})
            refused: list[dict[str, Any]] = [
                {"priority": True},
                {"priority": 256},
                {"priority": -1},
                {"expiration": 0},
                {"expiration": MAX_EXPIRATION + 1},
                {"expiration": timedelta(microseconds=1500)},
                {"expiration": "100"},
                {"correlation_id": "x" * 256},
                {"correlation_id": ""},
                {"reply_to": 5},
                {"reply_to": "amq.rabbitmq.reply-to"},  # the broker would close the channel
                {"headers": {"k": object()}},
                {"headers": {"k": {"x" * 129: 1}}},
            ]
            for options in refused:
                with pytest.raises(InvalidArgument):
                    await client.publish("Task", {"n": 1}, **options)
            await client.publish("Plain", {"n": 1}, priority=0)  # the broker's default: taken
        assert await depth(vhost.amqp_url, "prio.q") == 0
        assert await depth(vhost.amqp_url, "tagged.q") == 0
        assert await depth(vhost.amqp_url, "plain.q") == 1

    asyncio.run(body())


# -- offline: the verdicts and the bytes ---------------------------------------------


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Contract:
    tmp = tmp_path_factory.mktemp("properties")
    return Contract.load(write_spec(tmp, SPEC, SCHEMAS))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(-5, 300), st.sampled_from(["Task", "Plain", "Tagged"]))
def test_a_priority_is_taken_iff_a_reachable_queue_honours_it(
    offline: Contract, priority: int, name: str
) -> None:
    message = offline.message(name)
    highest = max(message.priorities.values(), default=0)
    if 0 <= priority <= highest or priority == 0:
        made = properties(message, priority=priority)
        assert made is not None
        assert made.priority == priority
    else:
        with pytest.raises(InvalidArgument):
            properties(message, priority=priority)


_text = st.text(max_size=40)
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _text,
    # Table keys of at most 32 characters: 128 bytes even in UTF-8's widest (AMQP's limit,
    # refused above this size, as tested above).
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=32), inner, max_size=3)
    ),
    max_leaves=8,
)


_options = st.fixed_dictionaries(
    {
        "correlation_id": st.none() | st.text(min_size=1, max_size=40),
        "reply_to": st.none() | st.text(min_size=1, max_size=40),
        "priority": st.none() | st.integers(0, 5),
        "expiration": st.none() | st.integers(1, MAX_EXPIRATION),
        "headers": st.dictionaries(
            # Names the runtime refuses (tested above) are not drawn: x-* in any case
            # (x-rabbitry-*, x-death), and CC/BCC, which the broker routes by.
            st.text(min_size=1, max_size=20).filter(
                lambda k: not k.lower().startswith("x-") and k not in ("CC", "BCC")
            ),
            _values,
        ),
    }
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_options, st.booleans())
def test_the_content_header_is_what_pamqp_marshals(
    offline: Contract, options: dict[str, Any], routed: bool
) -> None:
    """Every byte of the hand-made header equals pamqp's marshalling of the same properties."""
    name = "Task"
    made = properties(offline.message(name), **options)
    template = _frames.HeaderTemplate(
        message_type=name, content_type="application/json", persistent=True, app_id="app"
    )
    routing = {"kind": "red"} if routed else {}
    everything = {**options["headers"], **routing}
    ours = template.payload(
        9, "a" * 32, 1_700_000_000, everything, (0, b"") if made is None else made.extra
    )
    expiration = options["expiration"]
    expected = spec.Basic.Properties(
        content_type="application/json",
        headers=everything or None,
        delivery_mode=2,
        priority=options["priority"],
        correlation_id=options["correlation_id"],
        reply_to=options["reply_to"],
        expiration=None if expiration is None else str(expiration),
        message_id="a" * 32,
        timestamp=datetime.fromtimestamp(1_700_000_000, UTC),
        message_type=name,
        app_id="app",
    )
    assert ours == ContentHeader(0, 9, expected).marshal()
