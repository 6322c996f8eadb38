"""What rabbitry reads from aiormq beyond its abstract interface, checked once here.

aiormq's ``connection.channel()`` is typed as its ``AbstractChannel``, which
declares no write queue, delivery tag or confirmations; the batched
publisher, the consumer's acks and the migration's mover write frames on
that queue and register confirms in that dict, so they need aiormq's own
``Channel`` (``frame_channel``).  pamqp types every field of a frame as
optional, because a frame built by hand may lack it; a frame the broker sent
has them, and the accessors below say so once, with an error that names the
frame if one ever does not.

aiormq's internals used here and elsewhere (``Channel.confirmations``,
``Channel.write_queue``, name-mangled ``Connection`` handlers, ...) are why
pyproject bounds aiormq's version; tests/test_dependency_internals.py fails
when an aiormq release no longer has one of them.
"""

from __future__ import annotations

import aiormq
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec

from rabbitry.errors import BrokerError

__all__ = ["consumer_tag", "delivered", "frame_channel", "queue_counts", "queue_name"]


def frame_channel(channel: AbstractChannel) -> aiormq.Channel:
    """``channel`` as aiormq's ``Channel``, whose write queue and confirmations rabbitry uses."""
    if isinstance(channel, aiormq.Channel):
        return channel
    raise BrokerError(
        f"aiormq opened a {type(channel).__module__}.{type(channel).__qualname__}, not an "
        "aiormq.Channel: this aiormq is not one rabbitry supports (see its pyproject's bound)"
    )


def delivered(message: DeliveredMessage) -> tuple[spec.Basic.Deliver, int]:
    """The ``basic.deliver`` of a consumed message, and its delivery tag."""
    frame = message.delivery
    if isinstance(frame, spec.Basic.Deliver) and frame.delivery_tag is not None:
        return frame, frame.delivery_tag
    raise BrokerError(f"a consumer got {frame!r} where a basic.deliver with a tag belongs")


def consumer_tag(ok: spec.Basic.ConsumeOk) -> str:
    """The consumer tag the broker gave in ``basic.consume-ok``."""
    if ok.consumer_tag is None:
        raise BrokerError(f"the broker's {ok!r} has no consumer tag")
    return ok.consumer_tag


def queue_name(ok: spec.Queue.DeclareOk) -> str:
    """The queue a ``queue.declare-ok`` is about (the server's name for a queue declared as "")."""
    if ok.queue is None:
        raise BrokerError(f"the broker's {ok!r} has no queue name")
    return ok.queue


def queue_counts(ok: spec.Queue.DeclareOk) -> tuple[int, int]:
    """(ready messages, consumers) of a ``queue.declare-ok``."""
    if ok.message_count is None or ok.consumer_count is None:
        raise BrokerError(f"the broker's {ok!r} has no message or consumer count")
    return ok.message_count, ok.consumer_count
