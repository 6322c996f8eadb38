"""A message's own properties on publish: ``correlation_id``, ``reply_to``, ``priority``,
``expiration`` and custom headers, validated before anything is sent.

The broker takes almost any value and then quietly does something else with it: a
priority above a queue's ``max_priority`` is capped, a priority on a queue without one is
ignored, a custom header named like a routing header of a headers exchange reroutes the
message, ``CC``/``BCC`` send it to other routing keys.  Each of these is refused here
(``InvalidArgument``), naming what to do, so the contract's routing stays what the spec
says.  What a queue's ``max_priority`` is and which queues a message can reach come from
the contract (``MessageContract.priorities``: the spec's ``rabbitry.check.reach``).

The properties are marshalled once, by hand, into the bytes the content header carries
between the delivery mode and the message id (``_frames.HeaderTemplate.payload``'s
``extra``): the fast path of a plain publish stays as it was.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypedDict

from pamqp import encode

from rabbitry.broker._frames import shortstr
from rabbitry.errors import InvalidArgument
from rabbitry.messaging.contract import MessageContract

__all__ = [
    "DIRECT_REPLY_TO",
    "MAX_EXPIRATION",
    "MAX_NAME",
    "Properties",
    "PublishOptions",
    "properties",
]

#: The longest per-message TTL RabbitMQ takes (``rabbit_misc:check_expiry``: 2^32 - 1 ms).
MAX_EXPIRATION = 2**32 - 1
#: RabbitMQ's direct reply-to pseudo-queue, as a publisher names it in ``reply_to``.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
#: The longest header name, in bytes (AMQP 0-9-1 field names).
MAX_NAME = 128

# Basic property flags (AMQP 0-9-1): those between delivery-mode and message-id.
_PRIORITY = 0x0800
_CORRELATION_ID = 0x0400
_REPLY_TO = 0x0200
_EXPIRATION = 0x0100

#: Headers the broker itself reads or writes: ``CC``/``BCC`` route the message to more
#: keys (sender-selected distribution), ``x-death`` and ``x-first/last-death-*`` are the
#: broker's dead-letter record that consumers read back.
_BROKER_HEADERS = frozenset({"CC", "BCC", "x-death"})
_BROKER_PREFIXES = ("x-first-death-", "x-last-death-")
#: rabbitry's own headers (a dead-letter copy's reason, ...).
_RABBITRY_PREFIX = "x-rabbitry-"


class PublishOptions(TypedDict, total=False):
    """The keyword options of ``Client.publish`` and of every generated ``publish_*`` method."""

    timeout: float | None
    correlation_id: str | None
    reply_to: str | None
    priority: int | None
    expiration: int | timedelta | None
    headers: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Properties:
    """One message's validated properties; ``extra`` is what the content header carries."""

    correlation_id: str | None = None
    reply_to: str | None = None
    priority: int | None = None
    #: Milliseconds (sent as the AMQP string).
    expiration: int | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    #: (property flags, their values marshalled in AMQP's order).
    extra: tuple[int, bytes] = (0, b"")


def properties(
    contract: MessageContract,
    *,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    priority: int | None = None,
    expiration: int | timedelta | None = None,
    headers: Mapping[str, Any] | None = None,
) -> Properties | None:
    """The validated properties of one ``contract`` message; ``None`` when none is given.

    ``InvalidArgument`` (nothing sent) for a value the broker would refuse or quietly
    change: see the module's docstring.
    """
    if (
        correlation_id is None
        and reply_to is None
        and priority is None
        and expiration is None
        and not headers
    ):
        return None
    flags = 0
    parts: list[bytes] = []
    if priority is not None:
        _check_priority(contract, priority)
        flags |= _PRIORITY
        parts.append(bytes((priority,)))
    if correlation_id is not None:
        flags |= _CORRELATION_ID
        parts.append(_short("correlation_id", correlation_id))
    if reply_to is not None:
        if reply_to == DIRECT_REPLY_TO:
            raise InvalidArgument(
                f"reply_to {DIRECT_REPLY_TO!r} (direct reply-to) works only on the channel "
                "that consumes it, which is not the publishing channel: the broker would "
                "close it; give a queue's name"
            )
        flags |= _REPLY_TO
        parts.append(_short("reply_to", reply_to))
    millis = None
    if expiration is not None:
        millis = _milliseconds(expiration)
        flags |= _EXPIRATION
        parts.append(shortstr(str(millis)))
    own = dict(headers or {})
    if own:
        _check_headers(contract, own)
    return Properties(
        correlation_id=correlation_id,
        reply_to=reply_to,
        priority=priority,
        expiration=millis,
        headers=own,
        extra=(flags, b"".join(parts)),
    )


def _short(what: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        # AMQP clients read an empty short string as no value at all (pamqp does not even
        # send it): None says "not set" without that ambiguity.
        raise InvalidArgument(f"{what} may not be empty: give None for none")
    try:
        return shortstr(value)
    except ValueError as exc:
        raise InvalidArgument(f"{what}: {exc}") from None


def _check_priority(contract: MessageContract, priority: object) -> None:
    """A priority some queue the message can reach honours; 0 (the broker's default for a
    message without one) is taken everywhere."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidArgument(f"priority must be an int, not {type(priority).__name__}")
    if not 0 <= priority <= 255:
        raise InvalidArgument(f"priority must be 0 to 255 (an AMQP octet), not {priority}")
    if priority == 0:
        return
    queues = contract.priorities
    if not queues:
        raise InvalidArgument(
            f"{contract.name} reaches no queue with a max_priority, so the broker would "
            f"ignore priority {priority}: give a queue it reaches `max_priority` in the spec, "
            "or send no priority"
        )
    if priority > max(queues.values()):
        listed = ", ".join(f"{q!r} (max_priority {n})" for q, n in sorted(queues.items()))
        raise InvalidArgument(
            f"priority {priority} of {contract.name} is above the max_priority of every "
            f"queue it reaches: {listed}; the broker would treat it as the max: send at most "
            f"{max(queues.values())}, or raise a queue's max_priority in the spec"
        )


def _milliseconds(expiration: object) -> int:
    if isinstance(expiration, timedelta):
        millis, rest = divmod(expiration, timedelta(milliseconds=1))
        if rest:
            raise InvalidArgument(
                f"expiration {expiration} is not a whole number of milliseconds (the broker's unit)"
            )
    elif isinstance(expiration, int) and not isinstance(expiration, bool):
        millis = expiration
    else:
        raise InvalidArgument(
            "expiration must be milliseconds (an int) or a timedelta, "
            f"not {type(expiration).__name__}"
        )
    if not 1 <= millis <= MAX_EXPIRATION:
        raise InvalidArgument(
            f"expiration must be 1 to {MAX_EXPIRATION} milliseconds, not {millis}"
        )
    return int(millis)


def _check_headers(contract: MessageContract, headers: dict[str, Any]) -> None:
    """Custom headers: str keys that neither routing, the broker nor rabbitry fills, and
    values AMQP can carry (encoded here once, so a bad one fails before anything is sent)."""
    _check_names(headers, "")
    for key in headers:
        if key in contract.headers:
            raise InvalidArgument(
                f"header {key!r} is a routing header of {contract.name} (the spec fills it "
                "from the payload and the exchange routes on it): change the payload, "
                "or name the custom header differently"
            )
        folded = key.lower()
        if folded.startswith(_RABBITRY_PREFIX):
            raise InvalidArgument(
                f"header {key!r}: headers starting {_RABBITRY_PREFIX!r} are rabbitry's own "
                "(a dead-letter copy's reason): name the custom header differently"
            )
        if key in _BROKER_HEADERS or folded.startswith(_BROKER_PREFIXES):
            raise InvalidArgument(
                f"header {key!r} is read or written by the broker itself (CC/BCC route to "
                "more keys; x-death records dead-lettering): name the custom header "
                "differently"
            )
    try:
        encode.field_table(headers)
    except (TypeError, ValueError, AttributeError, struct.error, OverflowError) as exc:
        raise InvalidArgument(f"headers of {contract.name}: not AMQP field values: {exc}") from None


def _check_names(value: object, where: str) -> None:
    """Every field name in ``value`` (nested tables too) is a str of at most 128 bytes
    (AMQP's limit: pamqp would cut a longer one short, silently)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgument(
                    f"header names must be str, not {type(key).__name__} ({where or 'top'})"
                )
            if len(key.encode()) > MAX_NAME:
                raise InvalidArgument(
                    f"header name {key[:40]!r}... is {len(key.encode())} bytes; AMQP allows "
                    f"{MAX_NAME}"
                )
            _check_names(item, f"{where}/{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_names(item, f"{where}/{index}")
