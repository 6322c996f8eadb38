"""The topology methods apply sends with ``nowait``, marshalled by hand.

``broker.apply`` writes a chunk's calls but the last as one write of method
frames on the connection's write queue, then sends the last call through
aiormq, whose reply flushes the chunk (``apply._send``).  Through aiormq each
call is a task, a lock and pamqp's marshalling: about 90 µs of client CPU a
call, measured in ``bench/scale.py``'s apply, on the two cores the broker
needs.  Only the methods apply sends with ``nowait`` are here, each with
``nowait`` set; ``tests/test_apply_methods.py`` checks every byte against
pamqp's own marshalling.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from pamqp import encode

from rabbitry.broker._frames import shortstr

__all__ = [
    "exchange_bind",
    "exchange_declare",
    "exchange_delete",
    "exchange_unbind",
    "method_frame",
    "queue_bind",
    "queue_declare",
    "queue_delete",
]

_FRAME = struct.Struct(">BHI")
_METHOD = 1
_END = b"\xce"
_NO_TICKET = b"\x00\x00"  # reserved-1 of every method below
_EXCHANGE_DECLARE = b"\x00\x28\x00\x0a" + _NO_TICKET
_EXCHANGE_DELETE = b"\x00\x28\x00\x14" + _NO_TICKET
_EXCHANGE_BIND = b"\x00\x28\x00\x1e" + _NO_TICKET
_EXCHANGE_UNBIND = b"\x00\x28\x00\x28" + _NO_TICKET
_QUEUE_DECLARE = b"\x00\x32\x00\x0a" + _NO_TICKET
_QUEUE_BIND = b"\x00\x32\x00\x14" + _NO_TICKET
_QUEUE_DELETE = b"\x00\x32\x00\x28" + _NO_TICKET


def _table(arguments: Mapping[str, Any] | None) -> bytes:
    return encode.field_table(dict(arguments or {}))


def _bits(*flags: bool) -> bytes:
    return bytes((sum(1 << i for i, flag in enumerate(flags) if flag),))


def exchange_declare(
    name: str,
    exchange_type: str,
    *,
    durable: bool,
    auto_delete: bool,
    internal: bool,
    arguments: Mapping[str, Any] | None,
) -> bytes:
    """``Exchange.Declare`` (not passive, ``nowait``)."""
    return (
        _EXCHANGE_DECLARE
        + shortstr(name)
        + shortstr(exchange_type)
        + _bits(False, durable, auto_delete, internal, True)
        + _table(arguments)
    )


def exchange_delete(name: str) -> bytes:
    """``Exchange.Delete`` (not ``if_unused``, ``nowait``)."""
    return _EXCHANGE_DELETE + shortstr(name) + _bits(False, True)


def exchange_bind(
    destination: str, source: str, routing_key: str, arguments: Mapping[str, Any] | None
) -> bytes:
    """``Exchange.Bind`` (``nowait``)."""
    return (
        _EXCHANGE_BIND
        + shortstr(destination)
        + shortstr(source)
        + shortstr(routing_key)
        + _bits(True)
        + _table(arguments)
    )


def exchange_unbind(
    destination: str, source: str, routing_key: str, arguments: Mapping[str, Any] | None
) -> bytes:
    """``Exchange.Unbind`` (``nowait``)."""
    return (
        _EXCHANGE_UNBIND
        + shortstr(destination)
        + shortstr(source)
        + shortstr(routing_key)
        + _bits(True)
        + _table(arguments)
    )


def queue_declare(
    name: str,
    *,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    arguments: Mapping[str, Any] | None,
) -> bytes:
    """``Queue.Declare`` (not passive, ``nowait``)."""
    return (
        _QUEUE_DECLARE
        + shortstr(name)
        + _bits(False, durable, exclusive, auto_delete, True)
        + _table(arguments)
    )


def queue_bind(
    queue: str, exchange: str, routing_key: str, arguments: Mapping[str, Any] | None
) -> bytes:
    """``Queue.Bind`` (``nowait``)."""
    return (
        _QUEUE_BIND
        + shortstr(queue)
        + shortstr(exchange)
        + shortstr(routing_key)
        + _bits(True)
        + _table(arguments)
    )


def queue_delete(name: str, *, if_unused: bool, if_empty: bool) -> bytes:
    """``Queue.Delete`` (``nowait``)."""
    return _QUEUE_DELETE + shortstr(name) + _bits(if_unused, if_empty, True)


def method_frame(channel: int, payload: bytes) -> bytes:
    """One method frame of ``payload`` on ``channel``."""
    return _FRAME.pack(_METHOD, channel, len(payload)) + payload + _END
