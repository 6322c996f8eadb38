"""The metrics a jobs process prints when it ends (the demo's server and its workers).

rabbitry records through the OpenTelemetry API (``rabbitry[otel]``); a process sees the
numbers only with an SDK behind it.  Here the SDK's ``InMemoryMetricReader`` is installed
as the global meter provider, and read once at the end: in a service, a Prometheus or
OTLP reader would take its place.  Without ``opentelemetry.sdk`` nothing is recorded and
the process says so.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["NEEDS", "record"]

#: What a process says when it cannot show metrics.
NEEDS = "metrics need `rabbitry[otel]` and opentelemetry-sdk (pip install opentelemetry-sdk)"

#: Attributes shown beside each number (the rest is the same for every line).
_SHOWN = {
    "messaging.destination.name": "to",
    "rabbitry.message.type": "type",
    "rabbitry.attempt": "attempt",
    "rabbitry.dead_letter.reason": "reason",
    "error.type": "error",
}


def record() -> Callable[[], list[str]] | None:
    """Start recording rabbitry's metrics; a function that renders them as lines (the
    counters' totals by what they count), or ``None`` without the SDK."""
    try:
        from opentelemetry import metrics  # noqa: PLC0415 - optional: rabbitry[otel]
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
        from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
            HistogramDataPoint,
            InMemoryMetricReader,
            NumberDataPoint,
        )
    except ImportError:
        return None
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    def lines() -> list[str]:
        data = reader.get_metrics_data()
        out: list[str] = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        if isinstance(point, NumberDataPoint):
                            value = str(point.value)
                        elif isinstance(point, HistogramDataPoint):
                            value = f"{point.count} ({point.sum:.2f} s in all)"
                        else:
                            continue
                        attributes = point.attributes or {}
                        labels = ", ".join(
                            f"{short}={attributes[name]!s}"
                            for name, short in _SHOWN.items()
                            if name in attributes
                        )
                        out.append(f"{metric.name}{{{labels}}} {value}")
        return sorted(out)

    return lines
