"""OpenTelemetry traces and metrics of publishing and consuming: optional, in one place.

``pip install 'rabbitry[otel]'`` brings ``opentelemetry-api``; rabbitry then records, through
the providers the application installed (``opentelemetry.trace.set_tracer_provider``,
``opentelemetry.metrics.set_meter_provider``, or ``configure`` here):

- a PRODUCER span per published message, ``publish <exchange>``, from the publish call until
  the broker's confirm (an error status when it was not delivered), its context injected
  into the message's headers as W3C ``traceparent``/``tracestate``;
- a CONSUMER span per handled delivery, ``process <queue>``, continuing the trace the
  headers carry (child of the producer span), over the handler's tries and the settling;
- the metrics of ``METRICS``: published, consumed, validation failures, dead-lettered (by
  ``rabbitry.dead_letter.reason``), handler duration and retries.

Without the package ``ON`` is ``False`` and the runtime's hooks are one test of that global:
nothing else runs, nothing is imported.  The import is tried once, here.  Without an SDK
the API's no-op tracer injects nothing, so messages are as before.

The attribute names are the messaging semantic conventions' (``messaging.system`` is
``rabbitmq``; ``messaging.destination.name`` is the exchange on a producer span and the
queue on a consumer span, whose exchange is ``messaging.rabbitmq.destination.exchange``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["METRICS", "ON", "configure"]

try:
    from opentelemetry import metrics as _metrics
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
    from opentelemetry.propagators.textmap import Getter as _Getter
except ImportError:  # the optional extra is not installed: every hook is skipped
    ON = False
else:
    ON = True

    class _Headers(_Getter[Mapping[str, Any]]):
        """Reads W3C trace context from AMQP headers (a longstr may arrive as bytes)."""

        def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
            value = carrier.get(key)
            if isinstance(value, bytes):
                value = value.decode("ascii", "replace")
            return [value] if isinstance(value, str) else None

        def keys(self, carrier: Mapping[str, Any]) -> list[str]:
            return list(carrier)

    _HEADERS = _Headers()

#: The instruments, by name: what each counts.
METRICS: Mapping[str, str] = {
    "messaging.client.sent.messages": "messages published and confirmed (error.type: not)",
    "messaging.client.consumed.messages": "deliveries taken from a queue",
    "rabbitry.messaging.validation_failures": "deliveries refused by the contract",
    "rabbitry.messaging.dead_lettered": "deliveries dead-lettered, by reason",
    "messaging.process.duration": "seconds from a delivery's first handler try to its verdict",
    "rabbitry.messaging.retries": "handler tries after a failed one",
}

_SYSTEM = "rabbitmq"
#: The low-cardinality reason of a dead letter (the sentence stays in the headers): the
#: contract refused it; the handler failed every try; the handler raised ``DeadLetter``.
CONTRACT = "contract"
HANDLER = "handler"
REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class _Instruments:
    tracer: Any
    sent: Any
    consumed: Any
    invalid: Any
    dead_lettered: Any
    duration: Any
    retries: Any


def _instruments(tracer_provider: Any = None, meter_provider: Any = None) -> _Instruments:
    tracer = _trace.get_tracer("rabbitry", tracer_provider=tracer_provider)
    meter = _metrics.get_meter("rabbitry", meter_provider=meter_provider)
    names = list(METRICS)
    return _Instruments(
        tracer=tracer,
        sent=meter.create_counter(names[0], unit="{message}", description=METRICS[names[0]]),
        consumed=meter.create_counter(names[1], unit="{message}", description=METRICS[names[1]]),
        invalid=meter.create_counter(names[2], unit="{message}", description=METRICS[names[2]]),
        dead_lettered=meter.create_counter(
            names[3], unit="{message}", description=METRICS[names[3]]
        ),
        duration=meter.create_histogram(names[4], unit="s", description=METRICS[names[4]]),
        retries=meter.create_counter(names[5], unit="{try}", description=METRICS[names[5]]),
    )


_now: _Instruments | None = _instruments() if ON else None


def configure(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Record through these providers instead of the global ones (``None``: the global one).

    An application that installs global providers needs no call; one that keeps rabbitry's
    telemetry apart (or a test) passes its own.
    """
    global _now  # noqa: PLW0603 - the one switch of where telemetry goes
    if ON:
        _now = _instruments(tracer_provider, meter_provider)


def publishing(
    message_type: str,
    exchange: str,
    routing_key: str,
    message_id: str,
    headers: dict[str, Any] | None,
) -> tuple[Any, dict[str, Any] | None]:
    """Start a message's PRODUCER span (ended by ``published``); its headers with the
    trace context added (``headers`` itself when there is none to add)."""
    assert _now is not None
    span = _now.tracer.start_span(
        f"publish {exchange or 'amq.default'}",
        kind=_trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": _SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": exchange,
            "messaging.rabbitmq.destination.routing_key": routing_key,
            "messaging.message.id": message_id,
            "rabbitry.message.type": message_type,
        },
    )
    carrier: dict[str, Any] = {}
    _propagate.inject(carrier, context=_trace.set_span_in_context(span))
    if not carrier:
        return span, headers
    return span, {**(headers or {}), **carrier}


def published(span: Any, message_type: str, exchange: str, failure: BaseException | None) -> None:
    """A message published with a span settled: count it, end the span."""
    assert _now is not None
    attributes = {
        "messaging.system": _SYSTEM,
        "messaging.destination.name": exchange,
        "rabbitry.message.type": message_type,
    }
    if failure is not None:
        attributes["error.type"] = type(failure).__name__
        span.set_attribute("error.type", type(failure).__name__)
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, str(failure)))
    _now.sent.add(1, attributes)
    span.end()


def refused(queue: str, message_type: str | None) -> None:
    """A delivery the contract refused (decoding, type, schema): consumed, invalid, and
    dead-lettered for it."""
    assert _now is not None
    attributes = {
        "messaging.system": _SYSTEM,
        "messaging.destination.name": queue,
        "rabbitry.message.type": message_type or "",
    }
    _now.consumed.add(1, attributes)
    _now.invalid.add(1, attributes)
    _now.dead_lettered.add(1, {**attributes, "rabbitry.dead_letter.reason": CONTRACT})


def dead_lettered(queue: str, message_type: str | None, reason: str) -> None:
    """A delivery on its way to the dead letters; ``reason`` is ``CONTRACT`` or ``HANDLER``
    (then the delivery's CONSUMER span, current here, records it as its error)."""
    assert _now is not None
    if reason != CONTRACT:
        span = _trace.get_current_span()
        span.set_attribute("rabbitry.dead_letter.reason", reason)
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, "dead-lettered"))
    _now.dead_lettered.add(
        1,
        {
            "messaging.system": _SYSTEM,
            "messaging.destination.name": queue,
            "rabbitry.message.type": message_type or "",
            "rabbitry.dead_letter.reason": reason,
        },
    )


def retried(queue: str, message_type: str, attempt: int) -> None:
    """A handler's failed try is to be followed by try number ``attempt`` (2, 3, ...): in
    process, or after a ``retry:`` delay (then counted when it was scheduled).  The attempt
    is an attribute: at most 26 values (``MAX_RETRIES``), and it shows how far messages go."""
    assert _now is not None
    _now.retries.add(
        1,
        {
            "messaging.system": _SYSTEM,
            "messaging.destination.name": queue,
            "rabbitry.message.type": message_type,
            "rabbitry.attempt": attempt,
        },
    )


async def processing(
    handle: Callable[[], Awaitable[int | None]],
    *,
    queue: str,
    exchange: str,
    routing_key: str,
    tag: int,
    message_type: str,
    message_id: str | None,
    headers: Mapping[str, Any] | None,
) -> int | None:
    """Run ``handle`` (a valid delivery's handling) in its CONSUMER span, the child of the
    context its headers carry; count it and time it."""
    assert _now is not None
    parent = _propagate.extract(headers or {}, getter=_HEADERS)
    attributes: dict[str, Any] = {
        "messaging.system": _SYSTEM,
        "messaging.destination.name": queue,
        "rabbitry.message.type": message_type,
    }
    _now.consumed.add(1, attributes)
    start = time.perf_counter()
    with _now.tracer.start_as_current_span(
        f"process {queue}",
        context=parent,
        kind=_trace.SpanKind.CONSUMER,
        attributes={
            **attributes,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.rabbitmq.destination.exchange": exchange,
            "messaging.rabbitmq.destination.routing_key": routing_key,
            "messaging.rabbitmq.message.delivery_tag": tag,
            "messaging.message.id": message_id or "",
        },
    ) as span:
        try:
            state = await handle()
        finally:
            _now.duration.record(time.perf_counter() - start, attributes)
        if state is not None:
            span.set_attribute("rabbitry.settle", _SETTLES.get(state, str(state)))
        return state


#: How ``_consumer`` settles (its ACK 1, REJECT 2, REQUEUE 3), as the span records it.
_SETTLES = {1: "ack", 2: "reject", 3: "requeue"}
