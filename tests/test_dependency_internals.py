"""What rabbitry relies on in aiormq beyond its public interface, pinned one by one.

pyproject bounds aiormq (``>=7.2,<7.3``) because the runtime uses its internals:

- the batched publisher (``messaging/_publisher.py``) and the migration's mover
  (``broker/migrate.py``) register each confirm in ``Channel.confirmations`` /
  ``Channel.message_id_delivery_tag``, count ``Channel.delivery_tag`` and write
  frames as one ``ChannelFrame`` on ``Channel.write_queue``, cut at
  ``Channel.max_content_size``;
- the consumer's acks (``Settler``) are ``ChannelFrame.marshall``-ed onto the same
  queue, and it follows ``Channel.on_consumer_cancel_callbacks`` (7.1+);
- the mover replaces ``Channel._on_return_frame`` on its channel, to see a return
  aiormq cannot match (no ``message_id``);
- the supervisor overrides ``Connection``'s name-mangled
  ``__handle_connection_blocked`` / ``__handle_connection_unblocked`` (the
  alarm itself is caused in tests/faults/test_outages.py);
- ``broker/amqp.py`` tells a refused vhost by the exception aiormq 7.2 raises;
- ``GuardedConnection`` (``broker/_aiormq.py``) overrides ``Connection``'s
  name-mangled ``__reader`` to hand it a ``GuardedFrames``, a ``FrameReceiver``
  (its ``reader``, ``started``, ``lock``) whose ``get_frame`` reads frames
  itself; a ``WithheldHeader`` has ``body_size`` 0, so that ``Channel._read_content``
  reads no body frame for it; ``limit_body`` reads ``Connection.channels``.

Each test here names the internal it checks, so that an aiormq release that
drops or changes one fails here, by name, before it fails in production.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

import aiormq
import aiormq.exceptions as amqp_errors
import pamqp.frame
import pytest
from aiormq.abc import AbstractConnection, ChannelFrame, DeliveredMessage
from aiormq.connection import FrameReceiver, ReceivedFrame
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec

from broker import Vhost
from rabbitry.broker import _frames
from rabbitry.broker._aiormq import (
    GuardedConnection,
    consumer_tag,
    delivered,
    frame_channel,
    limit_body,
    queue_counts,
    queue_name,
    withheld,
)
from rabbitry.broker.amqp import connect, is_permanent
from rabbitry.broker.url import parse_url
from rabbitry.errors import BrokerError
from rabbitry.messaging._publisher import _frame_into, prepare_raw
from rabbitry.messaging._supervisor import _BlockAwareConnection

LIMIT = 10.0
AIORMQ = version("aiormq")


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), 30)

    asyncio.run(bounded())


@asynccontextmanager
async def connection_to(vhost: Vhost) -> AsyncIterator[AbstractConnection]:
    connection = await connect(parse_url(vhost.amqp_url), timeout=LIMIT)
    try:
        yield connection
    finally:
        await connection.close()


# -- without a broker: the names are there ---------------------------------------------


@pytest.mark.parametrize(
    "name", ["_Connection__handle_connection_blocked", "_Connection__handle_connection_unblocked"]
)
def test_the_connection_handlers_the_supervisor_overrides_exist(name: str) -> None:
    original = aiormq.Connection.__dict__.get(name)
    assert inspect.iscoroutinefunction(original), (
        f"aiormq {AIORMQ}: Connection has no coroutine {name} (its reader's "
        "handler of connection.blocked/unblocked); _BlockAwareConnection overrides it"
    )
    assert len(inspect.signature(original).parameters) == 2, f"{name} takes not one frame"
    assert name in _BlockAwareConnection.__dict__  # the override has the same (mangled) name


def test_the_frame_reader_the_guarded_connection_replaces_exists() -> None:
    reader = aiormq.Connection.__dict__.get("_Connection__reader")
    assert inspect.iscoroutinefunction(reader), (
        f"aiormq {AIORMQ}: Connection has no coroutine __reader, to which GuardedConnection "
        "hands its GuardedFrames"
    )
    assert list(inspect.signature(reader).parameters) == ["self", "frame_receiver"]
    assert "_Connection__reader" in GuardedConnection.__dict__
    assert issubclass(_BlockAwareConnection, GuardedConnection)
    get_frame = FrameReceiver.__dict__.get("get_frame")
    assert inspect.iscoroutinefunction(get_frame)
    assert ReceivedFrame == tuple[int, int, pamqp.frame.FrameTypes]

    async def made() -> set[str]:
        return set(vars(FrameReceiver(asyncio.StreamReader())))

    assert {"reader", "started", "lock"} <= asyncio.run(made())
    assert "body.tell() < header.body_size" in inspect.getsource(aiormq.Channel._read_content)
    assert "if header.body_size:" in inspect.getsource(aiormq.Channel._read_content)


def test_the_return_reader_the_mover_replaces_exists() -> None:
    reader = getattr(aiormq.Channel, "_on_return_frame", None)
    assert inspect.iscoroutinefunction(reader), (
        f"aiormq {AIORMQ}: Channel has no coroutine _on_return_frame, which "
        "broker/migrate.py replaces to see every basic.return"
    )
    assert len(inspect.signature(reader).parameters) == 2  # self, the Basic.Return frame


def test_a_channel_frame_is_built_as_the_publisher_builds_it() -> None:
    drained: asyncio.Future[None] | None = None
    frame = ChannelFrame(payload=b"abc", should_close=False, drain_future=drained)
    assert (frame.payload, frame.should_close, frame.drain_future) == (b"abc", False, None)


acks = st.lists(
    # pamqp marshals a delivery tag as a signed 64-bit integer
    st.tuples(st.booleans(), st.integers(1, 2**63 - 1), st.booleans(), st.booleans()),
    min_size=1,
    max_size=20,
)


@given(acks, st.integers(1, 65535))
def test_marshall_writes_the_frames_the_settler_gives_it(
    settled: list[tuple[bool, int, bool, bool]], channel: int
) -> None:
    """``ChannelFrame.marshall`` (the acks' write) is each frame as pamqp marshals it, in order."""
    frames: list[spec.Basic.Ack | spec.Basic.Nack] = [
        spec.Basic.Ack(delivery_tag=tag, multiple=multiple)
        if ack
        else spec.Basic.Nack(delivery_tag=tag, multiple=multiple, requeue=requeue)
        for ack, tag, multiple, requeue in settled
    ]
    written = ChannelFrame.marshall(channel_number=channel, frames=frames)
    assert written.payload == b"".join(pamqp.frame.marshal(f, channel) for f in frames)
    assert not written.should_close


# -- rabbitry's own accessors of what the broker sent ----------------------------------


def test_a_frame_without_what_the_broker_always_sends_is_a_broker_error() -> None:
    with pytest.raises(BrokerError, match="no consumer tag"):
        consumer_tag(spec.Basic.ConsumeOk())
    with pytest.raises(BrokerError, match="no message or consumer count"):
        queue_counts(spec.Queue.DeclareOk(queue="q"))
    with pytest.raises(BrokerError, match="no queue name"):
        queue_name(spec.Queue.DeclareOk(message_count=0, consumer_count=0))
    assert consumer_tag(spec.Basic.ConsumeOk("ctag")) == "ctag"
    assert queue_counts(spec.Queue.DeclareOk("q", 3, 1)) == (3, 1)
    assert queue_name(spec.Queue.DeclareOk("amq.gen-1", 0, 0)) == "amq.gen-1"


# -- on the broker: the state is there and aiormq's reader keeps it -----------------


def test_a_channel_has_the_state_the_publisher_writes_into(vhost: Vhost) -> None:
    async def body() -> None:
        async with connection_to(vhost) as connection:
            channel = frame_channel(await connection.channel(publisher_confirms=True))
            assert isinstance(channel, aiormq.Channel)
            assert channel.confirmations == {}
            assert channel.message_id_delivery_tag == {}
            assert channel.delivery_tag == 0
            assert channel.write_queue is connection.write_queue
            assert isinstance(channel.write_queue, asyncio.Queue)
            # frame_max less a body frame's 8 octets of overhead (type, channel, size, end)
            assert channel.max_content_size == connection.connection_tune.frame_max - 8
            assert isinstance(channel.number, int)

    run(body)


def test_aiormq_settles_a_confirm_registered_the_publishers_way(vhost: Vhost) -> None:
    """A confirm registered in ``confirmations``/``message_id_delivery_tag`` and written as
    raw frames is settled by aiormq's reader: an ack, and a return matched by message_id."""

    async def body() -> None:
        async with connection_to(vhost) as connection:
            channel = frame_channel(await connection.channel(publisher_confirms=True))
            await channel.queue_declare("here", timeout=LIMIT)
            loop = asyncio.get_running_loop()
            futures: list[asyncio.Future[Any]] = []
            parts: list[bytes] = []
            for index, key in enumerate(["here", "nowhere"]):
                out = prepare_raw(
                    f"message {index}",
                    "",
                    key,
                    b"{}",
                    spec.Basic.Properties(message_id=f"id-{index}"),
                )
                channel.delivery_tag += 1
                future = loop.create_future()
                channel.confirmations[channel.delivery_tag] = future
                channel.message_id_delivery_tag[out.message_id] = channel.delivery_tag
                futures.append(future)
                _frame_into(parts, out, channel.number, channel.max_content_size)
            drained = loop.create_future()
            channel.write_queue.put_nowait(
                ChannelFrame(payload=b"".join(parts), should_close=False, drain_future=drained)
            )
            await asyncio.wait_for(drained, LIMIT)
            done, _ = await asyncio.wait(futures, timeout=LIMIT)
            assert len(done) == 2, "aiormq's reader did not settle the registered confirms"
            acked, returned = futures
            assert isinstance(acked.result(), spec.Basic.Ack)
            assert isinstance(returned.exception(), amqp_errors.PublishError)
            declared = await channel.queue_declare("here", passive=True, timeout=LIMIT)
            assert queue_counts(declared)[0] == 1

    run(body)


def test_a_replaced_return_reader_sees_a_return_aiormq_cannot_match(vhost: Vhost) -> None:
    """The mover's hook: a ``basic.return`` of a message without a message_id reaches the
    reader put on the channel instance (aiormq itself only logs it)."""

    async def body() -> None:
        async with connection_to(vhost) as connection:
            channel = frame_channel(await connection.channel(publisher_confirms=True))
            original = channel._on_return_frame
            seen: list[spec.Basic.Return] = []

            async def on_return(frame: spec.Basic.Return) -> None:
                seen.append(frame)
                await original(frame)

            channel._on_return_frame = on_return  # type: ignore[method-assign]
            # As the mover writes a copy: raw frames, the confirm registered by tag only
            # (aiormq's basic_publish would give the message an id).
            properties = spec.Basic.Properties()
            out = prepare_raw("a copy", "", "nowhere", b"{}", properties)
            properties.message_id = None
            out.header = _frames.raw_header(len(out.body), properties)
            loop = asyncio.get_running_loop()
            channel.delivery_tag += 1
            confirm = loop.create_future()
            channel.confirmations[channel.delivery_tag] = confirm
            parts: list[bytes] = []
            _frame_into(parts, out, channel.number, channel.max_content_size)
            channel.write_queue.put_nowait(
                ChannelFrame(payload=b"".join(parts), should_close=False, drain_future=None)
            )
            assert isinstance(await asyncio.wait_for(confirm, LIMIT), spec.Basic.Ack)
            assert [(f.reply_code, f.routing_key) for f in seen] == [(312, "nowhere")]

    run(body)


def test_a_broker_cancel_reaches_the_consumer_cancel_callbacks(vhost: Vhost) -> None:
    """``on_consumer_cancel_callbacks`` (the consumer's signal that its queue is gone)."""

    async def body() -> None:
        async with connection_to(vhost) as connection:
            channel = await connection.channel(publisher_confirms=False)
            await channel.queue_declare("going", timeout=LIMIT)
            cancelled: asyncio.Future[spec.Basic.Cancel] = (
                asyncio.get_running_loop().create_future()
            )
            channel.on_consumer_cancel_callbacks.add(cancelled.set_result)

            async def ignore(message: DeliveredMessage) -> None:
                delivered(message)

            ok = await channel.basic_consume("going", ignore, timeout=LIMIT)
            other = await connection.channel(publisher_confirms=False)
            await other.queue_delete("going", timeout=LIMIT)
            frame = await asyncio.wait_for(cancelled, LIMIT)
            assert frame.consumer_tag == consumer_tag(ok)

    run(body)


def test_a_guarded_reader_reads_what_aiormqs_reads(vhost: Vhost) -> None:
    """The same frames come through ``GuardedFrames`` as through aiormq's receiver: a
    publish, its confirm, a return, a get with its body of several frames."""

    async def body() -> None:
        connection = GuardedConnection(vhost.amqp_url)
        await connection.connect()
        try:
            assert isinstance(connection.channels, dict)
            channel = frame_channel(await connection.channel())
            await channel.queue_declare("q")
            big = bytes(range(256)) * 2000  # several body frames
            await channel.basic_publish(big, routing_key="q")
            got = await channel.basic_get("q", no_ack=True)
            assert got.body == big
            with pytest.raises(amqp_errors.PublishError):
                await channel.basic_publish(b"x", routing_key="nowhere", mandatory=True)
            limit_body(channel, 1000)
            assert connection.body_limit(channel.number) == 1000
            await channel.basic_publish(big, routing_key="q")
            await channel.basic_publish(b"small", routing_key="q")
            dropped = await channel.basic_get("q", no_ack=True)
            header = withheld(dropped)
            assert header is not None
            assert header.announced == len(big)
            assert dropped.body == b""
            assert (await channel.basic_get("q", no_ack=True)).body == b"small"
        finally:
            await connection.close()

    run(body)


def test_a_missing_vhost_is_told_apart_from_a_lost_connection(vhost: Vhost) -> None:
    """aiormq 7.2 reports the broker's close after ``connection.open`` of a vhost that does
    not exist as an unexpected frame; ``is_permanent`` must see it, or the supervisor would
    retry for ever."""
    url = parse_url(vhost.amqp_url)
    missing = url.amqp.rsplit("/", 1)[0] + "/" + f"{vhost.name}-gone"

    async def body() -> None:
        with pytest.raises(Exception) as raised:  # noqa: PT011 - aiormq's, whatever it is
            await asyncio.wait_for(aiormq.connect(missing), LIMIT)
        assert is_permanent(raised.value), f"aiormq raised {raised.value!r}"

    run(body)
