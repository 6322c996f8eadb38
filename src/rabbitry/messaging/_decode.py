"""Strict decoding of a received message into a ``Delivery``, or the reason it is refused.

In this order, the first failure wins: body size (``MAX_BODY`` bytes),
``content_type`` (``application/json`` or absent), UTF-8, JSON (no
``NaN``/``Infinity``, no number past 1.8e308), nesting depth (``MAX_DEPTH``),
no lone surrogate (``json_faults``), the ``type`` property (a message
the queue carries), then the schema of that message.  A refusal says why and,
for a value's fault, the JSON Pointer of the value; a schema refusal carries
every fault, not only the first.

``json_faults`` is the rule both sides apply (I-JSON, RFC 7493): a number
must be finite -- ``1e400`` parses to infinity, which Python's encoder and
most peers refuse to write back -- and a string (a key too) must be Unicode
text: ``"\ud800"`` parses to a lone surrogate, which no UTF-8 encoder
writes.  A schema that does not constrain the value lets both through, so
the check cannot be left to the schema.  ``Publisher``'s encoder refuses the
same values (``allow_nan=False``, UTF-8 encoding); ``json_faults`` names
where they are.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pamqp import commands as spec

from rabbitry._nesting import nests_deeper
from rabbitry.errors import Fault
from rabbitry.messaging._delivery import Delivery
from rabbitry.messaging.contract import MessageContract

__all__ = ["MAX_BODY", "MAX_DEPTH", "Refusal", "decode", "json_faults", "parse"]

#: Largest body accepted, in bytes.
MAX_BODY = 4 * 1024 * 1024
#: Deepest nesting of arrays and objects accepted.
MAX_DEPTH = 32
_JSON_TYPES = frozenset({"application/json"})
#: What a body must contain to hold a lone surrogate: a ``\\uD800``-``\\uDFFF`` escape (UTF-8
#: itself cannot carry one).  Only such a body is walked for them (a valid pair, or the text
#: inside a string, costs one walk, never a refusal).  A number is checked as it is parsed.
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message is dead-lettered: a sentence, the JSON Pointer it concerns (or ""), and
    every fault found when there are several (schema faults; "" paths for the others)."""

    reason: str
    path: str = ""
    faults: tuple[Fault, ...] = ()


class _Constant(ValueError):
    pass


class _NotFinite(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _Constant(name)


def _finite(text: str) -> float:
    """A JSON number with a fraction or exponent; ``_NotFinite`` for one past 1.8e308."""
    value = float(text)
    if value in (math.inf, -math.inf):
        raise _NotFinite(text)
    return value


# Made once (loads(**kw) makes one a call).  _LOOSE reads a body _DECODER refused for a
# number that is not finite, to say where every such number is.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)
_LOOSE = json.JSONDecoder(parse_constant=_no_constant)


def _pointer(parts: list[str | int]) -> str:
    """A JSON Pointer that can be written as a header: a lone surrogate in a key is shown as
    its ``\\udXXX`` escape (an AMQP header is UTF-8)."""
    text = "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
    return text.encode("utf-8", "backslashreplace").decode()


def _text_fault(text: str) -> str | None:
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return f"holds a lone surrogate (U+{ord(text[exc.start]):04X}), which is not Unicode text"
    return None


def json_faults(value: Any) -> list[Fault]:
    """Every value in ``value`` that JSON cannot carry between programs: a number that is not
    finite, a string or key with a lone surrogate.  Each with its JSON Pointer (a faulty key:
    the pointer of its object).  Iterative: no recursion limit on deep values."""
    faults: list[Fault] = []
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                faults.append(Fault(_pointer(where), f"{item} is not a finite number"))
        elif isinstance(item, str):
            problem = _text_fault(item)
            if problem is not None:
                faults.append(Fault(_pointer(where), f"string {problem}"))
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and (problem := _text_fault(key)) is not None:
                    faults.append(Fault(_pointer(where), f"key {key!r} {problem}"))
                stack.append((child, [*where, key]))
        elif isinstance(item, list | tuple):
            stack.extend((child, [*where, i]) for i, child in enumerate(item))
    faults.sort(key=lambda fault: fault.path)
    return faults


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
    except _NotFinite as exc:
        return _not_finite(text, exc.args[0])
    except _Constant as exc:
        return Refusal(f"body is not strict JSON: {exc.args[0]} is not a JSON number")
    except RecursionError:
        return Refusal(f"body nests deeper than {MAX_DEPTH} levels")
    except ValueError as exc:
        return Refusal(f"body is not JSON: {exc}")
    # Depth can exceed MAX_DEPTH only if there are more openers than that.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and nests_deeper(value, MAX_DEPTH):
        return Refusal(f"body nests deeper than {MAX_DEPTH} levels")
    if b"\\u" in body and _SURROGATE.search(body) is not None:
        faults = json_faults(value)
        if faults:
            return _refusal("body is not portable JSON:", faults)
    return value


def _not_finite(text: str, number: str) -> Refusal:
    """The refusal of a body with a number past 1.8e308: every such number with its pointer
    (or the first one alone when the body is also not JSON further on)."""
    try:
        faults = json_faults(_LOOSE.decode(text))
    except (ValueError, RecursionError):
        faults = []
    if not faults:
        faults = [Fault("", f"{number} is not a finite number")]
    return _refusal("body is not portable JSON:", faults)


def _refusal(what: str, faults: list[Fault]) -> Refusal:
    """One refusal for several faults: ``what``, the first in the sentence, all of them in
    ``faults``."""
    first = faults[0]
    more = f" (and {len(faults) - 1} more)" if len(faults) > 1 else ""
    return Refusal(f"{what} {first}{more}", first.path, tuple(faults))


def decode(
    body: bytes,
    properties: spec.Basic.Properties,
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
        return _refusal(name, faults)
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
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        priority=properties.priority,
        expiration=_expiration(properties.expiration),
    )


def _expiration(text: str | None) -> int | None:
    """The per-message TTL in milliseconds (the broker refuses any but a decimal string)."""
    return int(text) if text is not None and text.isdecimal() else None


def _names(accepts: Mapping[str, MessageContract]) -> str:
    return ", ".join(sorted(accepts)) or "nothing"
