"""An honest plan: exit 0 only for what was seen and matches; drift found over AMQP too.

Without the management API, plan reads a vhost over AMQP. It used to take
every object it found to be the spec's, and said "in sync" over a real TTL
difference. Now each object found is declared again with the spec's
properties: the broker changes nothing when they match and refuses with 406
when they differ, and ``broker.inequivalent`` reads that refusal into the plan.
What AMQP still cannot see (bindings, policies) makes plan exit 1, never 0.

The AMQP path is reached the way users reach it: a user the management API
refuses (no ``management`` tag) while the API itself is up.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import aiormq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amqp import Bounded
from broker import ManagementAPI, Vhost, fresh_vhost, made_user
from rabbitry.broker import converge, inequivalent
from rabbitry.broker.inequivalent import BrokerSaid, Inequivalent
from rabbitry.broker.live import AMQP, BlindSpot, read_live
from rabbitry.broker.plan import Action, FieldChange, Kind, diff
from rabbitry.broker.state import desired
from rabbitry.broker.url import BrokerURL, parse_url
from rabbitry.spec import Spec, read
from specs import run_cli

TIMEOUT = 10.0

SPEC = """\
version: 1
exchanges:
  orders: {type: topic}
  audit: {type: fanout, alternate_exchange: orders}
queues:
  orders.work: {message_ttl: 2000, dead_letter: audit}
  orders.quorum: {type: quorum, delivery_limit: 5}
  orders.plain: {}
bindings:
  - {from: orders, queue: orders.work, key: "order.#"}
"""


run = Bounded(60)


def write_spec(folder: Path, text: str = SPEC) -> Path:
    path = folder / "topology.yaml"
    path.write_text(text)
    return path


def load(folder: Path, text: str = SPEC) -> Spec:
    return loaded(write_spec(folder, text))


def loaded(path: Path) -> Spec:
    spec, problems = read(path)
    assert spec is not None
    assert not [p for p in problems if p.severity.value == "error"], problems
    return spec


# -- the refusal, read once --------------------------------------------------------------------

# Every shape seen from RabbitMQ 3.10.8 (a probe that declared each pair in turn).
SEEN = [
    (
        "inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': "
        "received '2000' but current is '1000'",
        Inequivalent("queue", "q", "x-message-ttl", "1000"),
    ),
    (
        "inequivalent arg 'x-message-ttl' for queue 'q' in vhost 'v': "
        "received none but current is the value '1000' of type 'short'",
        Inequivalent("queue", "q", "x-message-ttl", "1000"),
    ),
    (
        "inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': "
        "received the value '2000' of type 'short' but current is none",
        Inequivalent("queue", "q", "x-message-ttl", None),
    ),
    (
        "inequivalent arg 'x-queue-type' for queue 'a.b' in vhost '/': "
        "received none but current is the value 'quorum' of type 'longstr'",
        Inequivalent("queue", "a.b", "x-queue-type", "quorum"),
    ),
    (
        "inequivalent arg 'durable' for queue 'q' in vhost '/': "
        "received 'false' but current is 'true'",
        Inequivalent("queue", "q", "durable", "true"),
    ),
    (
        "inequivalent arg 'type' for exchange 'x' in vhost '/': "
        "received 'fanout' but current is 'topic'",
        Inequivalent("exchange", "x", "type", "topic"),
    ),
    (
        "inequivalent arg 'alternate-exchange' for exchange 'x' in vhost '/': "
        "received 'b' but current is 'a'",
        Inequivalent("exchange", "x", "alternate-exchange", "a"),
    ),
]


@pytest.mark.parametrize(("text", "expected"), SEEN)
def test_every_shape_the_broker_prints_is_read(text: str, expected: Inequivalent) -> None:
    assert inequivalent.parse("PRECONDITION_FAILED - " + text) == expected


def test_other_refusals_are_not_taken_for_one() -> None:
    assert inequivalent.parse("PRECONDITION_FAILED - unknown delivery tag 5") is None
    assert inequivalent.parse("NOT_FOUND - no queue 'q' in vhost '/'") is None


_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="'\n\r", blacklist_categories=("Cs",)),
    max_size=30,
)


def _rendered(value: str | None, typed: bool) -> str:
    if value is None:
        return "none"
    return f"the value '{value}' of type 'longstr'" if typed else f"'{value}'"


@given(
    kind=st.sampled_from(["queue", "exchange"]),
    name=_TEXT,
    vhost=_TEXT,
    field=st.text(alphabet=string.ascii_lowercase + "-_", min_size=1, max_size=30),
    received=st.none() | _TEXT,
    current=st.none() | _TEXT,
    typed=st.booleans(),
)
def test_a_refusal_reads_back_what_the_broker_printed(  # noqa: PLR0917 - hypothesis
    kind: str,
    name: str,
    vhost: str,
    field: str,
    received: str | None,
    current: str | None,
    typed: bool,
) -> None:
    text = (
        f"PRECONDITION_FAILED - inequivalent arg '{field}' for {kind} '{name}' in vhost "
        f"'{vhost}': received {_rendered(received, typed)} but current is "
        f"{_rendered(current, not typed)}"
    )
    assert inequivalent.parse(text) == Inequivalent(kind, name, field, current)


# -- drift seen over AMQP ----------------------------------------------------------------------


@pytest.fixture
def spec(tmp_path: Path) -> Spec:
    return load(tmp_path)


async def declare_as_spec_says(url: BrokerURL, spec: Spec, **overrides: dict[str, Any]) -> None:
    """Declare the spec's objects, with ``overrides`` (by name) to the declare's keywords."""
    want = desired(spec)
    connection = await aiormq.connect(url.amqp)
    try:
        channel = await connection.channel()
        for e in want.exchanges.values():
            kwargs: dict[str, Any] = {
                "exchange_type": e.type,
                "durable": e.durable,
                "auto_delete": e.auto_delete,
                "internal": e.internal,
                "arguments": e.declare_arguments(),
            }
            kwargs.update(overrides.get(e.name, {}))
            await channel.exchange_declare(e.name, **kwargs)
        for q in want.queues.values():
            kwargs = {
                "durable": q.durable,
                "auto_delete": q.auto_delete,
                "arguments": q.declare_arguments(),
            }
            kwargs.update(overrides.get(q.name, {}))
            await channel.queue_declare(q.name, **kwargs)
            await channel.basic_publish(b"kept", routing_key=q.name)
    finally:
        await connection.close()


# name → (declare keywords on the broker, the field plan must show with the broker's value)
DRIFTS: dict[str, tuple[str, dict[str, Any], FieldChange]] = {
    "ttl": (
        "orders.work",
        {"arguments": {"x-message-ttl": 1000, "x-dead-letter-exchange": "audit"}},
        FieldChange("arguments.x-message-ttl", BrokerSaid("1000"), 2000),
    ),
    "missing-dlx": (
        "orders.work",
        {"arguments": {"x-message-ttl": 2000}},
        FieldChange("arguments.x-dead-letter-exchange", None, "audit"),
    ),
    "queue-type": (
        "orders.plain",
        {"arguments": {"x-queue-type": "quorum"}},
        FieldChange("type", "quorum", "classic"),
    ),
    "delivery-limit": (
        "orders.quorum",
        {"arguments": {"x-queue-type": "quorum", "x-delivery-limit": 7}},
        FieldChange("arguments.x-delivery-limit", BrokerSaid("7"), 5),
    ),
    "durability": (
        "orders.plain",
        {"durable": False},
        FieldChange("durable", False, True),
    ),
    "exchange-type": (
        "orders",
        {"exchange_type": "direct"},
        FieldChange("type", "direct", "topic"),
    ),
    "alternate-exchange": (
        "audit",
        {"arguments": {"alternate-exchange": "elsewhere"}},
        FieldChange("arguments.alternate-exchange", BrokerSaid("elsewhere"), "orders"),
    ),
}


@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_drift_is_found_over_amqp_and_nothing_changes(drift: str, vhost: Vhost, spec: Spec) -> None:
    name, declared, expected = DRIFTS[drift]
    url = parse_url(vhost.amqp_url)
    run(declare_as_spec_says(url, spec, **{name: declared}))
    before = {q["name"]: q.get("arguments") for q in vhost.queues()}

    live = run(read_live(url, spec, management=False, timeout=TIMEOUT))
    plan = diff(desired(spec), live.topology, spec)

    replaced = [c for c in plan.changes if c.action is Action.REPLACE]
    assert [c.name for c in replaced] == [name]
    assert expected in replaced[0].fields
    if replaced[0].kind is Kind.QUEUE:
        assert replaced[0].messages == 1  # the passive declare's count, kept
    # Looking changed nothing: the same queues with the same arguments.
    assert {q["name"]: q.get("arguments") for q in vhost.queues()} == before


def test_in_sync_over_amqp_is_in_sync_but_unverified(vhost: Vhost, spec: Spec) -> None:
    url = parse_url(vhost.amqp_url)
    run(declare_as_spec_says(url, spec))
    live = run(read_live(url, spec, management=False, timeout=TIMEOUT))
    assert live.source == AMQP
    assert diff(desired(spec), live.topology, spec).empty
    assert live.unverified(spec) == (BlindSpot.BINDINGS,)  # the spec has no policies


_SETTINGS = {
    "message_ttl": ("x-message-ttl", st.integers(1, 10_000)),
    "max_length": ("x-max-length", st.integers(1, 10_000)),
    "expires": ("x-expires", st.integers(60_000, 600_000)),
    "overflow": ("x-overflow", st.sampled_from(["drop-head", "reject-publish"])),
}


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    spec_side=st.fixed_dictionaries(
        {}, optional={k: strategy for k, (_, strategy) in _SETTINGS.items()}
    ),
    broker_side=st.fixed_dictionaries(
        {}, optional={k: strategy for k, (_, strategy) in _SETTINGS.items()}
    ),
    quorum=st.booleans(),
    broker_quorum=st.booleans(),
)
def test_amqp_sees_a_difference_exactly_when_the_api_does(  # noqa: PLR0917 - hypothesis
    broker: ManagementAPI,
    tmp_path: Path,
    spec_side: dict[str, Any],
    broker_side: dict[str, Any],
    quorum: bool,
    broker_quorum: bool,
) -> None:
    """Differential: over AMQP, plan replaces the queue iff the management API's plan does."""
    queue = {"type": "quorum" if quorum else "classic", **spec_side}
    text = "version: 1\nqueues:\n  q: " + json.dumps(queue) + "\n"
    model = load(tmp_path, text)
    arguments: dict[str, Any] = {_SETTINGS[k][0]: v for k, v in broker_side.items()}
    if broker_quorum:
        arguments["x-queue-type"] = "quorum"
    for target in fresh_vhost(broker):
        url = parse_url(target.amqp_url, management=target.management_url)
        run(declare_as_spec_says(url, model, q={"arguments": arguments}))
        over_api = run(read_live(url, model, timeout=TIMEOUT))
        over_amqp = run(read_live(url, model, management=False, timeout=TIMEOUT))
        by_api = diff(desired(model), over_api.topology, model)
        by_amqp = diff(desired(model), over_amqp.topology, model)
        assert [c.name for c in by_amqp.changes] == [c.name for c in by_api.changes]
        if not by_api.empty:
            # The field the broker named is one of those the API shows as different.
            api_fields = {f.field for f in by_api.changes[0].fields}
            assert {f.field for f in by_amqp.changes[0].fields} <= api_fields


# -- the CLI's exit codes ----------------------------------------------------------------------


def test_an_explicit_management_url_that_does_not_answer_is_exit_1(
    vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec(tmp_path)
    code, out, err = run_cli(
        ["plan", str(path), "--url", vhost.amqp_url, "--management-url", "http://127.0.0.1:1"],
        capsys,
    )
    assert code == 1, out + err
    assert "in sync" not in out
    assert "given explicitly" in err
    assert "guest:guest" not in out + err


def test_the_environment_gives_the_management_url_too(
    vhost: Vhost,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_spec(tmp_path)
    monkeypatch.setenv("RABBITRY_MANAGEMENT_URL", "http://127.0.0.1:1")
    for command in ("plan", "apply"):
        code, out, err = run_cli([command, str(path), "--url", vhost.amqp_url], capsys)
        assert code == 1, out + err
        assert "127.0.0.1:1" in err
    assert vhost.queue_names() == set()  # apply did nothing


def test_plan_over_amqp_exit_codes(
    broker: ManagementAPI, vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In sync but bindings unseen: exit 1; a TTL difference: exit 3; apply then fixes it."""
    path = write_spec(tmp_path)
    model = loaded(path)
    with made_user(broker, vhost.name, tags="") as (user, password):
        url = parse_url(vhost.amqp_url)
        amqp_url = f"amqp://{user}:{password}@{url.endpoint}/{vhost.name}"
        run(declare_as_spec_says(url, model))

        code, out, err = run_cli(["plan", str(path), "--url", amqp_url], capsys)
        assert code == 1, out + err
        assert "not verified" in out
        assert "bindings" in out
        assert password not in out + err

        code, out, _ = run_cli(["plan", str(path), "--url", amqp_url, "--format", "json"], capsys)
        data = json.loads(out)
        assert code == 1
        assert data["in_sync"] is False
        assert data["unverified"] == ["bindings"]

        run(_redeclare_with_ttl(url, "orders.work", 1000))
        code, out, err = run_cli(["plan", str(path), "--url", amqp_url], capsys)
        assert code == 3, out + err
        assert "x-message-ttl: 1000 → 2000" in out

        code, out, err = run_cli(["apply", str(path), "--url", amqp_url], capsys)
        assert code == 1  # the queue holds a message: data loss refused
        assert "orders.work" in err

        code, out, err = run_cli(
            ["apply", str(path), "--url", amqp_url, "--allow-data-loss"], capsys
        )
        assert code == 0, out + err
    queues = {q["name"]: q for q in vhost.queues()}
    assert queues["orders.work"]["arguments"]["x-message-ttl"] == 2000


def test_apply_over_amqp_declares_every_binding(
    broker: ManagementAPI, vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bindings cannot be read over AMQP: one deleted by hand is put back all the same."""
    path = write_spec(tmp_path)
    url = parse_url(vhost.amqp_url)
    run(declare_as_spec_says(url, loaded(path)))  # every object, no binding
    assert not [b for b in vhost.bindings() if b["source"] == "orders"]
    with made_user(broker, vhost.name, tags="") as (user, password):
        amqp_url = f"amqp://{user}:{password}@{url.endpoint}/{vhost.name}"
        code, out, err = run_cli(["apply", str(path), "--url", amqp_url], capsys)
    assert code == 0, out + err
    assert [(b["source"], b["destination"], b["routing_key"]) for b in vhost.bindings()] == [
        ("", "orders.plain", "orders.plain"),
        ("", "orders.quorum", "orders.quorum"),
        ("", "orders.work", "orders.work"),
        ("orders", "orders.work", "order.#"),
    ]


async def _redeclare_with_ttl(url: BrokerURL, name: str, ttl: int) -> None:
    connection = await aiormq.connect(url.amqp)
    try:
        channel = await connection.channel()
        await channel.queue_delete(name)
        await channel.queue_declare(
            name,
            durable=True,
            arguments={"x-message-ttl": ttl, "x-dead-letter-exchange": "audit"},
        )
        await channel.basic_publish(b"kept", routing_key=name)
    finally:
        await connection.close()


def test_plan_with_the_api_in_sync_is_exit_0(
    vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec(tmp_path)
    target = parse_url(vhost.amqp_url, management=vhost.management_url)
    run(converge.apply(loaded(path), target, timeout=TIMEOUT))
    args = ["plan", str(path), "--url", vhost.amqp_url, "--management-url", vhost.management_url]
    code, out, err = run_cli(args, capsys)
    assert code == 0, out + err
    assert "in sync" in out


POLICY_SPEC = (
    SPEC
    + """\
policies:
  work-limits: {queues: [orders.work], max_length: 1000}
"""
)


def test_apply_without_the_api_refuses_a_spec_with_policies_and_changes_nothing(
    broker: ManagementAPI, vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Policies are the management API's alone: apply over AMQP must not report success
    for a spec it could only half apply."""
    path = write_spec(tmp_path, POLICY_SPEC)
    url = parse_url(vhost.amqp_url)
    with made_user(broker, vhost.name, tags="") as (user, password):
        amqp_url = f"amqp://{user}:{password}@{url.endpoint}/{vhost.name}"
        code, out, err = run_cli(["plan", str(path), "--url", amqp_url], capsys)
        assert code == 3, out + err  # everything to create; policies not verified
        assert "policies cannot be read over AMQP" in out
        code, out, err = run_cli(["apply", str(path), "--url", amqp_url], capsys)
    assert code == 1, out + err
    assert "the spec has policies" in err
    assert "nothing was changed" in err
    assert vhost.queue_names() == set()
    assert vhost.api.get_json(f"/api/policies/{vhost.name}") == []
