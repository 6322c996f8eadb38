"""OpenTelemetry traces and metrics of the runtime (``rabbitry.messaging._telemetry``), read
back from the SDK's in-memory exporter and reader after real publishes and deliveries, and the
runtime without the package at all."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from amqp import drain, raw_publish, start, until
from broker import Vhost
from rabbitry.errors import ContractViolation
from rabbitry.messaging import _telemetry
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract
from specs import FLAGSHIP

pytestmark = pytest.mark.skipif(not _telemetry.ON, reason="opentelemetry-api not installed")


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self, kind: SpanKind) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.kind == kind]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def total(self, name: str, **attributes: str) -> int:
        return sum(
            int(point.value)
            for point in self.points(name)
            if all(point.attributes.get(k) == v for k, v in attributes.items())
        )


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """Fresh in-memory providers for rabbitry's telemetry (the global ones stay untouched)."""
    recorded = Telemetry()
    _telemetry.configure(recorded.tracer_provider, recorded.meter_provider)
    try:
        yield recorded
    finally:
        _telemetry.configure()


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


def test_a_publish_and_its_processing_are_one_trace(
    jobs: Vhost, contract: Contract, telemetry: Telemetry
) -> None:
    seen: list[tuple[Any, dict[str, Any]]] = []

    async def handler(delivery: Delivery[Any]) -> None:
        seen.append((trace.get_current_span().get_span_context(), dict(delivery.headers or {})))

    async def body() -> None:
        tracer = telemetry.tracer_provider.get_tracer("app")
        async with (
            Client(contract, jobs.amqp_url, service="server") as server,
            Client(contract, jobs.amqp_url, service="worker") as worker,
        ):
            consumer = worker.consume("jobs.ready", handler)
            await consumer.ready()
            with tracer.start_as_current_span("request"):
                await server.publish("Start", start("render"), correlation_id="c-1")
            await server.publish_many([("Start", start("build")), ("Start", start("test"))])
            await until(lambda: len(seen) == 3, 10)
            await consumer.cancel()

    run(body)
    [app] = [s for s in telemetry.spans.get_finished_spans() if s.name == "request"]
    producers = telemetry.finished(SpanKind.PRODUCER)
    consumers = telemetry.finished(SpanKind.CONSUMER)
    assert len(producers) == len(consumers) == 3
    by_id = {span.attributes["messaging.message.id"]: span for span in producers}
    assert len(by_id) == 3
    for producer in producers:
        assert producer.name == "publish jobs.new"
        assert producer.status.status_code == StatusCode.UNSET
        attributes = dict(producer.attributes or {})
        assert attributes["messaging.system"] == "rabbitmq"
        assert attributes["messaging.destination.name"] == "jobs.new"
        assert attributes["messaging.operation.type"] == "send"
        assert str(attributes["messaging.rabbitmq.destination.routing_key"]).startswith("job.")
    # the first publish ran inside the application's span: its producer span is a child
    render = next(
        p
        for p in producers
        if p.attributes["messaging.rabbitmq.destination.routing_key"] == "job.render"
    )
    assert render.parent is not None
    assert render.parent.span_id == app.context.span_id
    assert render.context.trace_id == app.context.trace_id
    for consumer_span in consumers:
        assert consumer_span.name == "process jobs.ready"
        attributes = dict(consumer_span.attributes or {})
        producer = by_id[attributes["messaging.message.id"]]
        assert consumer_span.parent is not None
        assert consumer_span.parent.span_id == producer.context.span_id
        assert consumer_span.context.trace_id == producer.context.trace_id
        assert attributes["messaging.system"] == "rabbitmq"
        assert attributes["messaging.destination.name"] == "jobs.ready"
        assert attributes["messaging.operation.type"] == "process"
        assert attributes["messaging.rabbitmq.destination.exchange"] == "jobs.new"
        assert attributes["rabbitry.settle"] == "ack"
    # the handler runs inside its consumer span, and the headers carry W3C trace context
    spans = {span.context.span_id: span for span in consumers}
    for context, headers in seen:
        assert context.span_id in spans
        version, trace_id, parent_id, _flags = headers["traceparent"].split("-")
        assert version == "00"
        assert int(trace_id, 16) == context.trace_id
        assert int(parent_id, 16) == spans[context.span_id].parent.span_id


def test_counters_and_durations_after_messages_a_refusal_and_a_dead_letter(
    jobs: Vhost, contract: Contract, telemetry: Telemetry
) -> None:
    calls: dict[str, int] = {}

    async def handler(delivery: Delivery[Any]) -> None:
        job_type = delivery.body["job_type"]
        calls[job_type] = calls.get(job_type, 0) + 1
        if job_type == "broken":
            raise RuntimeError("boom")

    async def body() -> None:
        async with (
            Client(contract, jobs.amqp_url, service="server") as server,
            Client(contract, jobs.amqp_url, service="worker") as worker,
        ):
            with pytest.raises(ContractViolation):
                await server.publish("Start", start(steps="many"))
            consumer = worker.consume("jobs.ready", handler, attempts=2)
            await consumer.ready()
            await server.publish_many([("Start", start(f"ok{i}")) for i in range(5)])
            await server.publish("Start", start("broken"))
            bad = json.dumps(start(steps="many")).encode()
            await raw_publish(
                jobs.amqp_url, "jobs.new", "job.x", [(bad, {"message_type": "Start"})]
            )
            await until(lambda: sum(calls.values()) == 7, 10)
            await until(lambda: telemetry.total("rabbitry.messaging.dead_lettered") == 2, 10)
            await consumer.cancel()
        assert len(await drain(jobs.amqp_url, "jobs.dead-letters", 2)) == 2

    run(body)
    assert calls["broken"] == 2
    assert telemetry.total("messaging.client.sent.messages") == 6  # not the refused one
    assert (
        telemetry.total(
            "messaging.client.consumed.messages", **{"messaging.destination.name": "jobs.ready"}
        )
        == 7
    )
    assert telemetry.total("rabbitry.messaging.validation_failures") == 1
    assert telemetry.total("rabbitry.messaging.retries") == 1
    reasons = {"rabbitry.dead_letter.reason": "contract"}
    assert telemetry.total("rabbitry.messaging.dead_lettered", **reasons) == 1
    reasons = {"rabbitry.dead_letter.reason": "handler"}
    assert telemetry.total("rabbitry.messaging.dead_lettered", **reasons) == 1
    [duration] = telemetry.points("messaging.process.duration")
    assert isinstance(duration, HistogramDataPoint)
    assert duration.count == 6
    assert duration.sum >= 0.4  # the broken one paused before its retry (RETRY_PAUSE)
    [broken] = [
        span
        for span in telemetry.finished(SpanKind.CONSUMER)
        if span.status.status_code == StatusCode.ERROR
    ]
    assert broken.attributes is not None
    assert broken.attributes["rabbitry.dead_letter.reason"] == "handler"
    assert broken.attributes["rabbitry.settle"] == "ack"  # its dead-letter copy was placed


_HEADER_NAMES = st.text(min_size=1, max_size=20).filter(
    lambda name: name not in ("traceparent", "tracestate")
)


@settings(max_examples=50, deadline=None)
@given(
    headers=st.none() | st.dictionaries(_HEADER_NAMES, st.text() | st.integers(), max_size=5),
    as_bytes=st.booleans(),
)
def test_trace_context_goes_beside_any_headers_and_reads_back(
    headers: dict[str, Any] | None, as_bytes: bool
) -> None:
    recorded = Telemetry()
    _telemetry.configure(recorded.tracer_provider, recorded.meter_provider)
    try:
        span, carried = _telemetry.publishing("Start", "jobs.new", "job.x", "0" * 32, headers)
        span.end()
    finally:
        _telemetry.configure()
    assert carried is not None
    assert {k: v for k, v in carried.items() if k != "traceparent"} == (headers or {})
    if as_bytes:  # a longstr header as another client may send it
        carried = {**carried, "traceparent": carried["traceparent"].encode()}
    parent = trace.get_current_span(propagate.extract(carried, getter=_telemetry._HEADERS))
    assert parent.get_span_context().trace_id == span.get_span_context().trace_id
    assert parent.get_span_context().span_id == span.get_span_context().span_id


_WITHOUT = """
import asyncio, sys
sys.modules["opentelemetry"] = None  # importing it fails, as if it were not installed
from rabbitry.messaging import _telemetry
from rabbitry.messaging.client import Client
from rabbitry.messaging.contract import Contract

async def main(url: str, spec: str) -> None:
    got = []
    async def handler(delivery):
        got.append(delivery)
    async with Client(Contract.load(spec), url) as client:
        consumer = client.consume("jobs.ready", handler)
        await consumer.ready()
        await client.publish("Start", {start!r})
        while not got:
            await asyncio.sleep(0.01)
        await consumer.cancel()
    assert not _telemetry.ON
    assert got[0].headers is None or "traceparent" not in got[0].headers, got[0].headers
    assert not any(name.startswith("opentelemetry") and sys.modules[name] is not None
                   for name in sys.modules)
    print("ok")

asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), 30))
"""


def test_without_opentelemetry_the_client_publishes_and_consumes(jobs: Vhost) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT.format(start=start()), jobs.amqp_url, str(FLAGSHIP)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
