"""Policies through plan and apply, on the real broker: create, update in place, prune,
operator policies, what cannot be seen without the management API, and each queue's
effective settings with their sources."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiormq
import httpx
import pytest

from amqp import Bounded
from broker import ManagementAPI, Vhost, made_user
from rabbitry.broker import converge
from rabbitry.broker.live import BlindSpot
from rabbitry.broker.plan import Action, Kind
from rabbitry.broker.report import plan_lines, settings_json, settings_lines, summary
from rabbitry.broker.url import BrokerURL, parse_url
from rabbitry.check import load_spec
from rabbitry.errors import AccessRefused
from rabbitry.spec.policies import Setting
from specs import edit, run_cli

TIMEOUT = 10.0
DEADLINE = 60.0

SPEC = """\
version: 1
exchanges:
  dead: {type: fanout}
  dead2: {type: fanout}
queues:
  orders.shipping: {max_length: 100, dead_letter: dead}
  jobs: {type: quorum, delivery_limit: 5}
policies:
  shipping-ttl:
    queues: [orders.shipping]
    priority: 10
    message_ttl: 600000
    max_length: 50
    dead_letter: dead2
operator_policies:
  cap:
    pattern: "^jobs$"
    delivery_limit: 3
messages: {}
"""


run = Bounded(DEADLINE)


def url_of(vhost: Vhost, **changes: Any) -> BrokerURL:
    return replace(parse_url(vhost.amqp_url, management=vhost.management_url), **changes)


def write(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def api(vhost: Vhost, kind: str) -> dict[str, dict[str, Any]]:
    """The broker's policies (``kind``: ``policies`` or ``operator-policies``) by name."""
    rows = vhost.api.get_json(f"/api/{kind}/{quote(vhost.name, safe='')}")
    return {row["name"]: row for row in rows}


def put(vhost: Vhost, kind: str, name: str, definition: dict[str, Any], pattern: str) -> None:
    config = vhost.api.config
    response = httpx.put(
        f"{vhost.management_url}/api/{kind}/{quote(vhost.name, safe='')}/{name}",
        auth=(config.username, config.password),
        json={"pattern": pattern, "definition": definition, "apply-to": "queues"},
    )
    assert response.status_code in (201, 204), response.text


def publish(vhost: Vhost, queue: str, n: int) -> None:
    async def go() -> None:
        connection = await aiormq.connect(vhost.amqp_url)
        channel = await connection.channel()
        for _ in range(n):
            await channel.basic_publish(b"{}", routing_key=queue, mandatory=True)
        await connection.close()

    run(go())


def held(vhost: Vhost, queue: str) -> int:
    async def go() -> int:
        connection = await aiormq.connect(vhost.amqp_url)
        channel = await connection.channel()
        ok = await channel.queue_declare(queue, passive=True)
        await connection.close()
        return int(ok.message_count)

    return run(go())


def plan(path: Path, url: BrokerURL, *, prune: bool = False) -> converge.Planned:
    return run(converge.plan(load_spec(path), url, prune=prune, timeout=TIMEOUT))


def apply(path: Path, url: BrokerURL, *, prune: bool = False) -> converge.Converged:
    return run(converge.apply(load_spec(path), url, prune=prune, timeout=TIMEOUT))


def policy_changes(planned: converge.Planned) -> list[tuple[Action, Kind, str]]:
    return [
        (c.action, c.kind, c.name)
        for c in planned.plan.changes
        if c.kind in (Kind.POLICY, Kind.OPERATOR_POLICY)
    ]


def test_plan_shows_policies_to_create_and_apply_creates_them(vhost: Vhost, tmp_path: Path) -> None:
    path, url = write(tmp_path), url_of(vhost)

    before = plan(path, url)
    assert policy_changes(before) == [
        (Action.CREATE, Kind.POLICY, "shipping-ttl"),
        (Action.CREATE, Kind.OPERATOR_POLICY, "cap"),
    ]
    lines = plan_lines(before.plan)
    assert any("+ create policy shipping-ttl (pattern" in line for line in lines), lines
    assert any("+ create operator policy cap" in line for line in lines), lines

    done = apply(path, url)

    assert done.result.applied == len(before.plan.changes)
    user, operator = api(vhost, "policies"), api(vhost, "operator-policies")
    assert user["shipping-ttl"]["definition"] == {
        "message-ttl": 600000,
        "max-length": 50,
        "dead-letter-exchange": "dead2",
    }
    assert user["shipping-ttl"]["priority"] == 10
    assert operator["cap"]["definition"] == {"delivery-limit": 3}
    assert plan(path, url).plan.empty


def test_changing_a_policy_is_one_update_in_place_and_the_queue_keeps_its_messages(
    vhost: Vhost, tmp_path: Path
) -> None:
    path, url = write(tmp_path), url_of(vhost)
    apply(path, url)
    publish(vhost, "orders.shipping", 3)
    edit(path, "message_ttl: 600000", "message_ttl: 900000")

    planned = plan(path, url)

    (change,) = planned.plan.changes
    assert (change.action, change.kind, change.name) == (Action.UPDATE, Kind.POLICY, "shipping-ttl")
    assert [f.describe() for f in change.fields] == ["definition.message-ttl: 600000 → 900000"]
    assert not planned.plan.data_loss
    assert "1 to update in place" in summary(planned.plan)

    done = apply(path, url)  # no --allow-data-loss needed

    assert done.result.applied == 1
    assert api(vhost, "policies")["shipping-ttl"]["definition"]["message-ttl"] == 900000
    assert held(vhost, "orders.shipping") == 3
    assert plan(path, url).plan.empty


def test_an_operator_policy_changes_in_place_too(vhost: Vhost, tmp_path: Path) -> None:
    path, url = write(tmp_path), url_of(vhost)
    apply(path, url)
    edit(path, "delivery_limit: 3", "delivery_limit: 2")

    planned = plan(path, url)

    assert policy_changes(planned) == [(Action.UPDATE, Kind.OPERATOR_POLICY, "cap")]
    apply(path, url)
    assert api(vhost, "operator-policies")["cap"]["definition"] == {"delivery-limit": 2}
    assert plan(path, url).plan.empty


def test_prune_deletes_foreign_policies_and_leaves_them_without_prune(
    vhost: Vhost, tmp_path: Path
) -> None:
    path, url = write(tmp_path), url_of(vhost)
    apply(path, url)
    put(vhost, "policies", "foreign", {"max-length": 7}, "^other$")
    put(vhost, "operator-policies", "foreign-cap", {"max-length": 9}, "^other$")

    kept = plan(path, url)
    assert kept.plan.empty
    assert set(kept.plan.unmanaged) == {"policy foreign", "operator_policy foreign-cap"}
    apply(path, url)
    assert set(api(vhost, "policies")) == {"shipping-ttl", "foreign"}

    pruning = plan(path, url, prune=True)
    assert policy_changes(pruning) == [
        (Action.DELETE, Kind.POLICY, "foreign"),
        (Action.DELETE, Kind.OPERATOR_POLICY, "foreign-cap"),
    ]
    apply(path, url, prune=True)

    assert set(api(vhost, "policies")) == {"shipping-ttl"}
    assert set(api(vhost, "operator-policies")) == {"cap"}
    assert plan(path, url, prune=True).plan.empty


def test_effective_settings_with_their_sources(vhost: Vhost, tmp_path: Path) -> None:
    """Argument against user and operator policy with the broker's precedence, and a
    policy the spec does not have (kept without prune) counted as the broker's."""
    path, url = write(tmp_path), url_of(vhost)
    apply(path, url)
    put(vhost, "operator-policies", "foreign-cap", {"max-length": 20}, "^orders\\.")

    planned = plan(path, url)

    shipping = planned.plan.settings["orders.shipping"]
    assert shipping["message-ttl"] == Setting(600000, "policy:shipping-ttl")
    assert shipping["max-length"] == Setting(20, "operator_policy:foreign-cap")
    assert shipping["dead-letter-exchange"] == Setting("dead", "argument")
    jobs = planned.plan.settings["jobs"]
    assert jobs["delivery-limit"] == Setting(3, "operator_policy:cap")
    lines = settings_lines(planned.plan)
    assert "  jobs: delivery-limit=3 (operator_policy:cap)" in lines
    assert settings_json(planned.plan)["orders.shipping"]["max-length"] == {
        "value": 20,
        "source": "operator_policy:foreign-cap",
    }
    # With prune, the foreign cap goes, and the user policy's 50 is in force.
    pruned = plan(path, url, prune=True).plan.settings["orders.shipping"]
    assert pruned["max-length"] == Setting(50, "policy:shipping-ttl")

    # What the broker does agrees: orders.shipping keeps 20 of 30.
    publish(vhost, "orders.shipping", 30)
    assert held(vhost, "orders.shipping") == 20


def test_without_the_management_api_policies_are_a_blind_spot_not_a_change(
    broker: ManagementAPI, vhost: Vhost, tmp_path: Path
) -> None:
    path = write(tmp_path)
    apply(path, url_of(vhost))
    put(vhost, "policies", "shipping-ttl", {"max-length": 1}, "^nothing$")  # drifted
    with made_user(broker, vhost.name, tags="") as (name, password):
        # A management URL that was not asked for explicitly: plan falls back to AMQP.
        url = url_of(vhost, username=name, password=password, management_required=False)
        planned = plan(path, url)

    assert planned.live.topology.policies is None
    assert policy_changes(planned) == []
    assert BlindSpot.POLICIES in planned.live.unverified(load_spec(path))
    # Effective settings are then the spec's own.
    assert planned.plan.settings["orders.shipping"]["max-length"] == Setting(
        50, "policy:shipping-ttl"
    )


WRITERS = [
    # (the user's tags, the spec has operator policies, the tag asked for, the policy named)
    ("management", False, "policymaker", "policy 'shipping-ttl'"),
    ("policymaker", True, "administrator", "operator policy 'cap'"),
]


@pytest.mark.parametrize("case", WRITERS, ids=["user-policy", "operator-policy"])
def test_a_user_who_may_not_write_policies_is_told_which_tag_it_needs(
    broker: ManagementAPI, vhost: Vhost, tmp_path: Path, case: tuple[str, bool, str, str]
) -> None:
    tags, operator_policies, needed, named = case
    text = SPEC
    if not operator_policies:
        text = SPEC.split("operator_policies:", maxsplit=1)[0] + "messages: {}\n"
    path = write(tmp_path, text)
    with (
        made_user(broker, vhost.name, tags=tags) as (name, password),
        pytest.raises(AccessRefused, match=f"give it the '{needed}' tag") as caught,
    ):
        apply(path, url_of(vhost, username=name, password=password))
    assert password not in str(caught.value)
    assert named in str(caught.value)


def test_the_cli_plans_applies_and_plans_empty(
    vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path)
    target = ["--url", vhost.amqp_url, "--management-url", vhost.management_url]

    code, out, _ = run_cli(["plan", str(path), *target], capsys)
    assert code == 3
    assert "create policy shipping-ttl" in out
    assert "create operator policy cap" in out

    code, out, _ = run_cli(["apply", str(path), *target], capsys)
    assert code == 0, out
    edit(path, "message_ttl: 600000", "message_ttl: 900000")

    code, out, _ = run_cli(["plan", str(path), *target, "--format", "json"], capsys)
    assert code == 3
    changes = json.loads(out)["changes"]
    assert [(c["action"], c["kind"], c["name"]) for c in changes] == [
        ("update", "policy", "shipping-ttl")
    ]

    code, out, _ = run_cli(["apply", str(path), *target], capsys)
    assert code == 0, out
    code, out, _ = run_cli(["plan", str(path), *target], capsys)
    assert code == 0, out
    assert "in sync" in out
