"""Strict decoding of a received message into a ``Delivery``, or the reason it is refused.

In this order, the first failure wins: body size (``MAX_BODY`` bytes),
``content_type`` (``application/json`` or absent), UTF-8, JSON (no
``NaN``/``Infinity``), nesting depth (``MAX_DEPTH``), the ``type`` property
(a message the queue carries), then the schema of that message.  A refusal
says why and, for a schema fault, the JSON Pointer of the value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rabbitry.messaging._delivery import Delivery
from rabbitry.messaging.contract import MessageContract

__all__ = ["MAX_BODY", "MAX_DEPTH", "Refusal", "decode"]

#: Largest body accepted, in bytes.
MAX_BODY = 4 * 1024 * 1024
#: Deepest nesting of arrays and objects accepted.
MAX_DEPTH = 32
_JSON_TYPES = frozenset({"application/json"})


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message is dead-lettered: a sentence, and the JSON Pointer it concerns (or "")."""

    reason: str
    path: str = ""


class _Constant(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _Constant(name)


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # made once: loads(**kw) makes one a call


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth) for child in item)
    return deepest


def parse(body: bytes) -> Any | Refusal:
    """``body`` as strict JSON, or a ``Refusal``."""
    if len(body) > MAX_BODY:
        return Refusal(f"body is {len(body)} bytes, over the limit of {MAX_BODY}")
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        return Refusal(f"body is not UTF-8: {exc}")
    try:
        value = _DECODER.decode(text)
    except _Constant as exc:
        return Refusal(f"body is not strict JSON: {exc.args[0]} is not a JSON number")
    except RecursionError:
        return Refusal(f"body nests deeper than {MAX_DEPTH} levels")
    except ValueError as exc:
        return Refusal(f"body is not JSON: {exc}")
    # Depth can exceed MAX_DEPTH only if there are more openers than that.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        return Refusal(f"body nests deeper than {MAX_DEPTH} levels")
    return value


def decode(
    body: bytes,
    properties: Any,
    *,
    exchange: str,
    routing_key: str,
    redelivered: bool,
    queue: str,
    accepts: Mapping[str, MessageContract],
) -> Delivery[Any] | Refusal:
    """A received message (pamqp ``Basic.Properties``) as a validated ``Delivery``, or why not."""
    content_type = properties.content_type
    if content_type and content_type.split(";", 1)[0].strip().lower() not in _JSON_TYPES:
        return Refusal(f"content_type {content_type!r} is not application/json")
    value = parse(body)
    if isinstance(value, Refusal):
        return value
    name = properties.message_type
    if not name:
        return Refusal(
            "no `type` property: a message carries its name there "
            f"(queue {queue!r} takes {_names(accepts)})"
        )
    contract = accepts.get(name)
    if contract is None:
        return Refusal(f"type {name!r} is not a message queue {queue!r} takes ({_names(accepts)})")
    try:
        faults = contract.faults(value)
    except Exception as exc:  # a value the validator cannot take (e.g. a lone surrogate)
        return Refusal(f"{name} cannot be validated: {exc}")
    if faults:
        first = faults[0]
        more = f" (and {len(faults) - 1} more)" if len(faults) > 1 else ""
        return Refusal(f"{name} {first}{more}", first.path)
    timestamp = properties.timestamp
    return Delivery(
        type=name,
        body=value,
        exchange=exchange,
        routing_key=routing_key,
        message_id=properties.message_id,
        timestamp=timestamp if isinstance(timestamp, datetime) else None,
        redelivered=redelivered,
        headers=properties.headers or {},
    )


def _names(accepts: Mapping[str, MessageContract]) -> str:
    return ", ".join(sorted(accepts)) or "nothing"
