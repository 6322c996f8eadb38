"""The runtime's pieces without a broker: frames, strict decoding, ack batching, backoff."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pamqp.frame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from rabbitry.broker import _frames
from rabbitry.errors import (
    ContractViolation,
    Fault,
    InvalidArgument,
    NotFound,
    first_broker_error,
)
from rabbitry.messaging._consumer import (
    ACK,
    MAX_FAULT_TEXT,
    MAX_FAULTS,
    REJECT,
    REQUEUE,
    Settler,
    _fault_tables,
    deadline_of,
)
from rabbitry.messaging._decode import MAX_BODY, MAX_DEPTH, Refusal, decode, json_faults, parse
from rabbitry.messaging._publisher import prepare
from rabbitry.messaging._supervisor import BACKOFF_CAP, backoff
from rabbitry.messaging._xdeath import rabbitry_reason
from rabbitry.messaging.client import Delivery
from rabbitry.messaging.contract import Contract
from specs import FLAGSHIP

AT = "2024-05-01T12:00:00Z"
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
exchanges = st.from_regex(r"[a-zA-Z0-9_.:-]{0,127}", fullmatch=True)  # what AMQP allows


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load(FLAGSHIP)


def unmarshal_all(data: bytes) -> list[Any]:
    frames = []
    while data:
        consumed, channel, frame = pamqp.frame.unmarshal(data)
        frames.append((channel, frame))
        data = data[consumed:]
    return frames


# -- frames ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    exchange=exchanges,
    routing_key=names,
    mandatory=st.booleans(),
    channel=st.integers(1, 65535),
)
def test_publish_method_is_what_pamqp_makes(
    exchange: str, routing_key: str, mandatory: bool, channel: int
) -> None:
    ours = b"".join(
        _frames.frame(
            _frames.METHOD,
            channel,
            _frames.publish_method(exchange, routing_key, mandatory=mandatory),
        )
    )
    theirs = pamqp.frame.marshal(
        spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory),
        channel,
    )
    assert ours == theirs


@settings(max_examples=200, deadline=None)
@given(
    message_type=names.filter(bool),  # names in a spec are never empty
    app_id=st.none() | names.filter(bool),
    persistent=st.booleans(),
    size=st.integers(0, 2**40),
    stamp=st.integers(0, 2**32),
    headers=st.none() | st.dictionaries(names.filter(bool), names, max_size=4),
)
def test_content_header_is_what_pamqp_makes(
    *,
    message_type: str,
    app_id: str | None,
    persistent: bool,
    size: int,
    stamp: int,
    headers: dict[str, Any] | None,
) -> None:
    template = _frames.HeaderTemplate(
        message_type=message_type,
        content_type="application/json",
        persistent=persistent,
        app_id=app_id,
    )
    message_id = _frames.message_id()
    ours = b"".join(
        _frames.frame(_frames.HEADER, 7, template.payload(size, message_id, stamp, headers))
    )
    properties = spec.Basic.Properties(
        content_type="application/json",
        headers=headers or None,
        delivery_mode=2 if persistent else 1,
        message_id=message_id,
        timestamp=datetime.fromtimestamp(stamp, UTC),
        message_type=message_type,
        app_id=app_id,
    )
    assert ours == pamqp.frame.marshal(ContentHeader(0, size, properties), 7)


def test_a_prepared_message_unmarshals_to_what_was_published(contract: Contract) -> None:
    payload = {"job_id": str(uuid.uuid4()), "job_type": "build", "steps": 2, "submitted_at": AT}
    message = contract.message("Start")
    template = _frames.HeaderTemplate(
        message_type="Start", content_type="application/json", persistent=True, app_id="server"
    )
    out = prepare(message, template, payload)
    data = b"".join(
        part
        for kind, payload_ in (
            (_frames.METHOD, out.method),
            (_frames.HEADER, out.header),
            (_frames.BODY, out.body),
        )
        for part in _frames.frame(kind, 3, payload_)
    )
    (_, method), (_, header), (_, body) = unmarshal_all(data)
    assert method.exchange == "jobs.new"
    assert method.routing_key == "job.build"
    assert method.mandatory
    assert header.body_size == len(out.body)
    assert header.properties.message_type == "Start"
    assert header.properties.delivery_mode == 2
    assert header.properties.message_id == out.message_id
    assert isinstance(body, ContentBody)
    assert json.loads(body.value) == payload


def test_routing_keys_and_names_longer_than_255_bytes_are_refused(contract: Contract) -> None:
    with pytest.raises(ValueError, match="255"):
        _frames.shortstr("é" * 128)
    template = _frames.HeaderTemplate(
        message_type="Stop", content_type="application/json", persistent=False, app_id=None
    )
    long_id = "a" * 300
    stop = contract.message("Stop")
    # the schema refuses it first (a uuid), so fake a contract without that check
    relaxed = type(stop)(
        stop.name, stop.exchange, stop.routing_key, stop.headers, stop.persistent, {}
    )
    with pytest.raises(ContractViolation, match="routing key"):
        prepare(relaxed, template, {"job_id": long_id, "requested_at": AT})


def test_message_ids_are_uuid4_hex_and_distinct() -> None:
    ids = [_frames.message_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:50]:
        assert len(text) == 32
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


# -- strict decoding ------------------------------------------------------------------


class Props:
    def __init__(self, **values: Any) -> None:
        self.content_type = values.get("content_type")
        self.message_type = values.get("message_type")
        self.message_id = values.get("message_id")
        self.timestamp = values.get("timestamp")
        self.headers = values.get("headers")
        self.correlation_id = values.get("correlation_id")
        self.reply_to = values.get("reply_to")
        self.priority = values.get("priority")
        self.expiration = values.get("expiration")


def run_decode(contract: Contract, body: bytes, **props: Any) -> Delivery[Any] | Refusal:
    return decode(
        body,
        Props(**props),
        exchange="jobs.new",
        routing_key="job.x",
        redelivered=False,
        queue="jobs.ready",
        accepts={"Start": contract.message("Start")},
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{nope", "not JSON"),
        (b"[NaN]", "NaN is not a JSON number"),
        (b"[-Infinity]", "-Infinity"),
        (b"\xc3\x28", "not UTF-8"),
        (b"", "not JSON"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nests deeper"),
        (b"[" * 100000 + b"]" * 100000, "nests deeper"),
        (b" " * (MAX_BODY + 1), "over the limit"),
    ],
)
def test_parse_refuses(body: bytes, reason: str) -> None:
    result = parse(body)
    assert isinstance(result, Refusal)
    assert reason in result.reason


def test_parse_takes_nesting_up_to_the_limit() -> None:
    body = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert not isinstance(parse(body), Refusal)
    assert parse(b'{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}


def test_decode_validates_against_the_type(contract: Contract) -> None:
    good = {"job_id": str(uuid.uuid4()), "job_type": "x", "steps": 1, "submitted_at": AT}
    stamp = datetime(2024, 1, 1, tzinfo=UTC)
    delivery = run_decode(
        contract,
        json.dumps(good).encode(),
        message_type="Start",
        content_type="application/json; charset=utf-8",
        message_id="m1",
        timestamp=stamp,
    )
    assert isinstance(delivery, Delivery)
    assert (delivery.type, delivery.body, delivery.message_id) == ("Start", good, "m1")
    assert delivery.timestamp == stamp

    bad = run_decode(contract, json.dumps({**good, "steps": 0}).encode(), message_type="Start")
    assert isinstance(bad, Refusal)
    assert bad.path == "/steps"
    assert bad.reason.startswith("Start /steps: ")

    other = run_decode(contract, json.dumps(good).encode(), message_type="Stop")
    assert isinstance(other, Refusal)
    assert "takes (Start)" in other.reason

    untyped = run_decode(contract, json.dumps(good).encode())
    assert isinstance(untyped, Refusal)
    assert "no `type` property" in untyped.reason

    xml = run_decode(contract, b"<a/>", message_type="Start", content_type="text/xml")
    assert isinstance(xml, Refusal)
    assert "text/xml" in xml.reason

    surrogate = run_decode(contract, b'{"job_id": "\\ud800"}', message_type="Start")
    assert isinstance(surrogate, Refusal)


# -- acks -----------------------------------------------------------------------


class FakeChannel:
    number = 5
    is_closed = False

    def __init__(self) -> None:
        self.write_queue: asyncio.Queue[Any] = asyncio.Queue()

    def written(self) -> list[Any]:
        frames = []
        while not self.write_queue.empty():
            frames += [f for _, f in unmarshal_all(self.write_queue.get_nowait().payload)]
        return frames


def describe(frames: list[Any]) -> list[tuple[str, int, bool]]:
    out = []
    for frame in frames:
        if isinstance(frame, spec.Basic.Ack):
            out.append(("ack", frame.delivery_tag, frame.multiple))
        else:
            out.append(("requeue" if frame.requeue else "reject", frame.delivery_tag, False))
    return out


def test_settler_acks_a_settled_head_with_one_multiple_ack() -> None:
    async def body() -> None:
        channel = FakeChannel()
        settler = Settler(channel, prefetch=100)
        for tag in range(1, 8):
            settler.received(tag)
        for tag in (1, 2, 3):
            settler.settle(tag, ACK)
        settler.settle(4, REJECT)
        settler.settle(5, ACK)
        settler.settle(7, ACK)  # 6 still in a handler
        settler.flush()
        assert describe(channel.written()) == [
            ("ack", 3, True),
            ("reject", 4, False),
            ("ack", 5, True),
            ("ack", 7, False),
        ]
        settler.settle(6, REQUEUE)
        settler.flush()
        assert describe(channel.written()) == [("requeue", 6, False)]
        assert settler.pending() == 0
        settler.received(8)
        settler.settle(8, ACK)
        await asyncio.sleep(Settler.DELAY * 5)  # flushed by its timer
        assert describe(channel.written()) == [("ack", 8, True)]

    asyncio.run(body())


def test_settler_flushes_when_a_quarter_of_the_window_is_settled() -> None:
    async def body() -> None:
        channel = FakeChannel()
        settler = Settler(channel, prefetch=8)
        for tag in range(1, 5):
            settler.received(tag)
            settler.settle(tag, ACK)
            await asyncio.sleep(0)
        assert describe(channel.written()) == [("ack", 2, True), ("ack", 4, True)]

    asyncio.run(body())


def test_backoff_doubles_is_capped_and_jittered() -> None:
    low = [backoff(n, rand=lambda: 0.0) for n in range(12)]
    high = [backoff(n, rand=lambda: 1.0) for n in range(12)]
    assert high[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert low[:2] == pytest.approx([0.05, 0.1])
    assert max(high) == BACKOFF_CAP
    assert all(lo == hi / 2 for lo, hi in zip(low, high, strict=True))
    assert backoff(10_000) <= BACKOFF_CAP


# -- what both sides take: finite numbers, Unicode text (issue 11) ----------------------------

#: JSON values as Python holds them after a parse: with infinities and lone surrogates.
any_text = st.text(st.characters(codec=None), max_size=8)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)  # infinities included: what 1e400 parses to
    | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=12,
)


def _as_received(value: Any) -> bytes:
    """The body a peer writes for ``value``: an infinity as ``1e400`` (a JSON number that
    parses to it), a lone surrogate as its ``\\udXXX`` escape (the only way into UTF-8)."""

    def mark(item: Any) -> Any:
        if isinstance(item, float) and item in (INF, -INF):
            return f"\0{'+' if item > 0 else '-'}inf\0"
        if isinstance(item, list):
            return [mark(child) for child in item]
        if isinstance(item, dict):
            return {key: mark(child) for key, child in item.items()}
        return item

    text = json.dumps(mark(value), ensure_ascii=True)
    text = text.replace('"\\u0000+inf\\u0000"', "1E+400")
    return text.replace('"\\u0000-inf\\u0000"', "-1e400").encode()


INF = float("inf")


@pytest.mark.parametrize(
    ("body", "path", "reason"),
    [
        (b'{"parameters": {"x": 1e400}}', "/parameters/x", "inf is not a finite number"),
        (b'{"parameters": {"x": [0, -2.5E+999]}}', "/parameters/x/1", "-inf is not a finite"),
        (b'{"parameters": {"x": "a\\ud800"}}', "/parameters/x", "lone surrogate (U+D800)"),
        (b'{"parameters": {"\\udfff": 1}}', "/parameters", "key '\\udfff' holds a lone"),
        (b"[" + b"9" * 400 + b".5]", "/0", "inf is not a finite number"),
    ],
)
def test_parse_refuses_what_publish_cannot_write(body: bytes, path: str, reason: str) -> None:
    """Before: these reached handlers whenever the schema left the value free."""
    result = parse(body)
    assert isinstance(result, Refusal), result
    assert (result.path, result.faults[0].path) == (path, path)
    assert reason in result.reason
    assert result.path.encode()  # a header can carry it


def test_a_surrogate_pair_and_exponents_that_fit_are_taken() -> None:
    assert parse(b'{"a": "\\ud83d\\ude00", "b": 1e308, "c": -2E-400}') == {
        "a": "\U0001f600",
        "b": 1e308,
        "c": -0.0,
    }


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_publish_and_consume_agree_on_every_value(contract: Contract, value: Any) -> None:
    """The one rule (``json_faults``) on both sides: ``prepare`` refuses a payload exactly when
    the consumer would refuse what a peer writes for it; what ``prepare`` writes decodes
    back to the same payload; and ``parse``'s quick pre-check misses nothing."""
    payload = {
        "job_id": str(uuid.uuid4()),
        "job_type": "x",
        "steps": 1,
        "submitted_at": AT,
        "parameters": {"v": value},
    }
    faults = json_faults(payload)
    template = _frames.HeaderTemplate(
        message_type="Start", content_type="application/json", persistent=True, app_id=None
    )
    received = run_decode(contract, _as_received(payload), message_type="Start")
    if faults:
        with pytest.raises(ContractViolation):
            prepare(contract.message("Start"), template, payload)
        assert isinstance(received, Refusal)
        assert received.faults == tuple(faults)
        assert all(f.path.startswith("/parameters") for f in faults)
        return
    out = prepare(contract.message("Start"), template, payload)
    assert isinstance(received, Delivery)
    delivery = run_decode(contract, out.body, message_type="Start")
    assert isinstance(delivery, Delivery), delivery
    assert delivery.body == payload == received.body


def test_every_schema_fault_is_kept(contract: Contract) -> None:
    body = json.dumps({"job_id": 1, "job_type": "X.Y", "steps": 0, "submitted_at": AT})
    refusal = run_decode(contract, body.encode(), message_type="Start")
    assert isinstance(refusal, Refusal)
    assert {f.path for f in refusal.faults} == {"/job_id", "/job_type", "/steps"}
    assert refusal.path == refusal.faults[0].path
    assert "(and 2 more)" in refusal.reason


def test_the_dead_letter_headers_list_every_fault_within_bounds() -> None:
    many = tuple(Fault(f"/a/{i}", "x" * 2000) for i in range(MAX_FAULTS + 7))
    tables = _fault_tables(Refusal("Start /a/0: ...", "/a/0", many))
    assert len(tables) == MAX_FAULTS + 1
    assert tables[0] == {"path": "/a/0", "message": "x" * MAX_FAULT_TEXT}
    assert tables[-1] == {"path": "", "message": "and 7 more faults"}
    assert _fault_tables(Refusal("body is not JSON")) == [
        {"path": "", "message": "body is not JSON"}
    ]
    reason = rabbitry_reason({"x-rabbitry-error": "e", "x-rabbitry-errors": tables})
    assert reason is not None
    assert [f.path for f in reason.errors][:2] == ["/a/0", "/a/1"]
    assert reason.as_json()["errors"][0] == {"path": "/a/0", "message": "x" * MAX_FAULT_TEXT}


@given(errors=st.recursive(st.none() | st.integers() | st.text() | st.binary(), st.lists))
def test_reading_every_fault_never_fails_on_any_header(errors: Any) -> None:
    reason = rabbitry_reason({"x-rabbitry-error": "e", "x-rabbitry-errors": errors})
    assert reason is not None
    assert all(isinstance(f.path, str) and isinstance(f.reason, str) for f in reason.errors)


def test_handler_deadline_values() -> None:
    assert deadline_of(None) is None
    assert deadline_of(float("inf")) is None
    assert deadline_of(2.5) == 2.5
    with pytest.raises(InvalidArgument, match="positive"):
        deadline_of(0)


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"[1e400, nope", "1e400 is not a finite"), (b"[-1E999, NaN]", "-1E999 is not a finite")],
)
def test_a_number_past_the_float_range_is_refused_whatever_follows(
    body: bytes, reason: str
) -> None:
    result = parse(body)
    assert isinstance(result, Refusal)
    assert reason in result.reason


def test_first_broker_error_prefers_a_sibling_broker_error_over_a_nested_other_error() -> None:
    """A nested group that holds only a ValueError must not hide the NotFound beside it."""
    missing = NotFound("queue 'jobs' does not exist")
    group = ExceptionGroup("tasks", [ExceptionGroup("inner", [ValueError("x")]), missing])
    assert first_broker_error(group) is missing
    deep = ExceptionGroup("tasks", [ValueError("y"), ExceptionGroup("inner", [missing])])
    assert first_broker_error(deep) is missing
    plain = ValueError("z")
    assert first_broker_error(ExceptionGroup("tasks", [plain, KeyError("k")])) is plain
