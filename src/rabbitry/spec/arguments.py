"""The x-arguments rabbitry knows, as data: their sugar key, type and range.

A queue written as ``{dead_letter: jobs.dead, delivery_limit: 5}`` is the same
queue as ``{arguments: {x-dead-letter-exchange: jobs.dead, x-delivery-limit: 5}}``;
this table is what makes that so, what checks the types, and which queue types
support each argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from rabbitry.spec.model import QueueType

__all__ = ["EXCHANGE_ARGUMENTS", "QUEUE_ARGUMENTS", "ArgSpec", "check_value"]

_ALL = frozenset(QueueType)


@dataclass(frozen=True)
class ArgSpec:
    """One known argument: its AMQP name, the spec's sugar key for it, and its domain."""

    name: str
    sugar: str | None
    kind: type  # int, str or bool; object for a value of any shape (a policy's ha-params)
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    queue_types: frozenset[QueueType] = _ALL
    summary: str = ""

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        what = {int: "an integer", str: "a string", bool: "true or false"}.get(self.kind, "a value")
        if self.minimum is not None and self.maximum is not None:
            return f"{what} from {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f"{what} ≥ {self.minimum}"
        return what


_CLASSIC = frozenset({QueueType.CLASSIC})
_QUORUM = frozenset({QueueType.QUORUM})
_STREAM = frozenset({QueueType.STREAM})
_NOT_STREAM = frozenset({QueueType.CLASSIC, QueueType.QUORUM})

QUEUE_ARGUMENTS: dict[str, ArgSpec] = {
    a.name: a
    for a in (
        ArgSpec(
            "x-message-ttl",
            "message_ttl",
            int,
            minimum=0,
            queue_types=_NOT_STREAM,
            summary="milliseconds a message may wait in the queue",
        ),
        ArgSpec(
            "x-expires",
            "expires",
            int,
            minimum=1,
            queue_types=_NOT_STREAM,
            summary="milliseconds an unused queue lives",
        ),
        ArgSpec("x-max-length", "max_length", int, minimum=0, queue_types=_NOT_STREAM),
        ArgSpec("x-max-length-bytes", "max_length_bytes", int, minimum=0),
        ArgSpec(
            "x-overflow",
            "overflow",
            str,
            choices=("drop-head", "reject-publish", "reject-publish-dlx"),
            queue_types=_NOT_STREAM,
        ),
        ArgSpec("x-dead-letter-exchange", "dead_letter", str, queue_types=_NOT_STREAM),
        ArgSpec(
            "x-dead-letter-routing-key", "dead_letter_routing_key", str, queue_types=_NOT_STREAM
        ),
        ArgSpec(
            "x-dead-letter-strategy",
            "dead_letter_strategy",
            str,
            choices=("at-most-once", "at-least-once"),
            queue_types=_QUORUM,
        ),
        ArgSpec("x-delivery-limit", "delivery_limit", int, minimum=0, queue_types=_QUORUM),
        ArgSpec(
            "x-max-priority", "max_priority", int, minimum=1, maximum=255, queue_types=_CLASSIC
        ),
        ArgSpec(
            "x-queue-mode", "queue_mode", str, choices=("default", "lazy"), queue_types=_CLASSIC
        ),
        ArgSpec(
            "x-single-active-consumer", "single_active_consumer", bool, queue_types=_NOT_STREAM
        ),
        ArgSpec(
            "x-max-age",
            "max_age",
            str,
            queue_types=_STREAM,
            summary="e.g. 7D, 12h, 30m (Y, M, D, h, m, s)",
        ),
        ArgSpec(
            "x-stream-max-segment-size-bytes",
            "max_segment_size_bytes",
            int,
            minimum=1,
            queue_types=_STREAM,
        ),
        ArgSpec(
            "x-initial-cluster-size",
            "initial_cluster_size",
            int,
            minimum=1,
            queue_types=frozenset({QueueType.QUORUM, QueueType.STREAM}),
        ),
        ArgSpec("x-quorum-initial-group-size", None, int, minimum=1, queue_types=_QUORUM),
        ArgSpec(
            "x-queue-leader-locator",
            "leader_locator",
            str,
            choices=("client-local", "balanced"),
            queue_types=frozenset({QueueType.QUORUM, QueueType.STREAM}),
        ),
        ArgSpec(
            "x-queue-master-locator",
            None,
            str,
            choices=("client-local", "min-masters", "random"),
            queue_types=_CLASSIC,
        ),
    )
}

EXCHANGE_ARGUMENTS: dict[str, ArgSpec] = {
    "alternate-exchange": ArgSpec("alternate-exchange", "alternate_exchange", str),
}


def check_value(spec: ArgSpec, value: object) -> str | None:
    """``None`` when ``value`` fits ``spec``; else what was expected and what was got."""
    if spec.kind is object:
        return None
    kind_ok = (
        isinstance(value, bool)
        if spec.kind is bool
        else isinstance(value, spec.kind) and not isinstance(value, bool)
    )
    if not kind_ok or (spec.choices and value not in spec.choices):
        return f"expected {spec.describe()}, got {value!r}"
    if isinstance(value, int) and not isinstance(value, bool):
        too_low = spec.minimum is not None and value < spec.minimum
        too_high = spec.maximum is not None and value > spec.maximum
        if too_low or too_high:
            return f"expected {spec.describe()}, got {value!r}"
    return None
