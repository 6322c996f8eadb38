"""The shipped contract tests (``rabbitry.pytest_plugin``) run on the flagship, and on small specs.

``TestFlagshipContracts`` is how a user enables them: a subclass naming the
spec; here the round trips get a fresh vhost of the test broker each.  The
other tests run the plugin in a child pytest (``pytester``) to see what a
user sees: the tests it collects, a skip without a broker, and a failure
when the spec is broken.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from amqp import apply, depth, publish_ids
from broker import Vhost
from rabbitry.check import load_spec
from rabbitry.pytest_plugin import ContractTests, mutations, strategies_for

ROOT = Path(__file__).resolve().parent.parent


class TestFlagshipContracts(ContractTests):
    spec = ROOT / "topology.yaml"
    examples = 40
    round_trips = 4

    @pytest.fixture
    def rabbitry_url(self, vhost: Vhost) -> str:
        return vhost.amqp_url


def test_strategies_cover_every_message_of_the_flagship() -> None:
    spec = load_spec(ROOT / "topology.yaml")
    assert sorted(strategies_for(spec)) == sorted(spec.messages)


def test_mutations_change_one_place_each() -> None:
    payload = {"a": 1, "b": ["x"]}
    found = mutations(payload)
    assert {"b": ["x"]} in found  # a removed
    assert {"a": 1} in found  # b removed
    assert {"a": "x", "b": ["x"]} in found  # a retyped
    assert {"a": 1, "b": ["x", "x"]} in found  # an item repeated
    assert {"a": 1, "b": ["x"], "__rabbitry_unexpected__": 1} in found
    assert payload == {"a": 1, "b": ["x"]}  # untouched


SMALL_SPEC = """\
version: 1
exchanges:
  orders: {type: topic}
queues:
  orders.created: {}
bindings:
  - {from: orders, queue: orders.created, key: "order.created"}
messages:
  OrderCreated: {schema: order.json, exchange: orders, routing_key: "order.created"}
services:
  shop: {publishes: [OrderCreated]}
  billing: {consumes: {orders.created: [OrderCreated]}}
"""
ORDER_SCHEMA = """\
{"type": "object", "additionalProperties": false, "required": ["id", "total"],
 "properties": {"id": {"type": "string", "pattern": "^o-[0-9]+$"},
                "total": {"type": "number", "minimum": 0, "maximum": 1000000}}}
"""
USER_TESTS = """\
from rabbitry.pytest_plugin import ContractTests


class TestOrders(ContractTests):
    spec = "topology.yaml"
    examples = 20
"""


def test_a_user_suite_collects_each_test_per_message_and_skips_round_trips_without_a_broker(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RABBITRY_CONTRACT_URL", raising=False)
    pytester.makefile(".yaml", topology=SMALL_SPEC)
    pytester.makefile(".json", order=ORDER_SCHEMA)
    pytester.makepyfile(test_contracts=USER_TESTS)
    result = pytester.runpytest("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*test_spec_is_sound PASSED*",
            "*test_valid_instances_validate?OrderCreated? PASSED*",
            "*test_invalid_mutations_are_refused?OrderCreated? PASSED*",
            "*test_round_trip?OrderCreated? SKIPPED*",
        ]
    )


def test_a_broken_spec_fails_the_suite_with_its_errors(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RABBITRY_CONTRACT_URL", raising=False)
    pytester.makefile(".yaml", topology=SMALL_SPEC.replace("{type: topic}", "{type: topik}"))
    pytester.makefile(".json", order=ORDER_SCHEMA)
    pytester.makepyfile(test_contracts=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, skipped=3)
    result.stdout.fnmatch_lines(["*topology.yaml:*topik*"])


def test_a_routing_field_that_may_hold_a_dot_is_caught(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "region" fills a routing-key word, but the schema allows "eu.west": a valid message
    # that the publisher cannot send. `check` says so (unsendable-value), so the suite's
    # soundness test fails and the rest are skipped.
    monkeypatch.delenv("RABBITRY_CONTRACT_URL", raising=False)
    spec = SMALL_SPEC.replace('"order.created"}\nservices', '"order.{region}"}\nservices')
    spec = spec.replace('key: "order.created"', 'key: "order.*"')
    pytester.makefile(".yaml", topology=spec)
    schema = ORDER_SCHEMA.replace('["id", "total"]', '["id", "total", "region"]')
    region = '"region": {"type": "string", "enum": ["eu", "eu.west"]}, '
    schema = schema.replace('"properties": {', '"properties": {' + region)
    pytester.makefile(".json", order=schema)
    pytester.makepyfile(test_contracts=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, skipped=3)
    result.stdout.fnmatch_lines(["*may not hold '.'*unsendable-value*"])


def test_the_round_trip_runs_against_a_broker_given_on_the_command_line(
    pytester: pytest.Pytester, vhost: Vhost
) -> None:
    pytester.makefile(".yaml", topology=SMALL_SPEC)
    pytester.makefile(".json", order=ORDER_SCHEMA)
    pytester.makepyfile(test_contracts=USER_TESTS)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--rabbitry-url", vhost.amqp_url, "--rabbitry-round-trips", "3"
    )
    result.assert_outcomes(passed=4)


LAX_CLIENT = """\
# A Client whose publish no longer validates: the round trip must notice.
import pytest

import rabbitry.messaging.client as client_module

_prepare = client_module.prepare


class _Unchecked:
    def __init__(self, contract):
        self._contract = contract

    def __getattr__(self, name):
        return getattr(self._contract, name)

    def validate(self, payload):
        return None


@pytest.fixture(autouse=True)
def lax_publish(monkeypatch):
    monkeypatch.setattr(
        client_module, "prepare", lambda contract, *a, **k: _prepare(_Unchecked(contract), *a, **k)
    )
"""


def test_the_round_trip_fails_when_publish_stops_validating(
    pytester: pytest.Pytester, vhost: Vhost
) -> None:
    pytester.makefile(".yaml", topology=SMALL_SPEC)
    pytester.makefile(".json", order=ORDER_SCHEMA)
    pytester.makeconftest(LAX_CLIENT)
    pytester.makepyfile(test_contracts=USER_TESTS)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--rabbitry-url", vhost.amqp_url, "--rabbitry-round-trips", "2"
    )
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*DID NOT RAISE*ContractViolation*", "FAILED *test_round_trip*"])


def held_messages(pytester: pytest.Pytester, vhost: Vhost, count: int) -> None:
    """The small spec applied to ``vhost``, and ``count`` messages waiting in its queue."""
    pytester.makefile(".yaml", topology=SMALL_SPEC)
    pytester.makefile(".json", order=ORDER_SCHEMA)
    apply(vhost, pytester.path / "topology.yaml")
    ids = [f"kept-{i}" for i in range(count)]
    asyncio.run(publish_ids(vhost, "orders", "order.created", ids))


def test_a_vhost_whose_queues_hold_messages_is_refused_and_left_alone(
    pytester: pytest.Pytester, vhost: Vhost
) -> None:
    held_messages(pytester, vhost, 3)
    pytester.makepyfile(test_contracts=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--rabbitry-url", vhost.amqp_url)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        ["*'orders.created' holds 3 messages*--rabbitry-purge*purge = True*"]
    )
    assert asyncio.run(depth(vhost.amqp_url, "orders.created")) == 3


@pytest.mark.parametrize("opt_in", ["option", "attribute"])
def test_a_vhost_whose_queues_hold_messages_is_purged_on_request(
    pytester: pytest.Pytester, vhost: Vhost, opt_in: str
) -> None:
    held_messages(pytester, vhost, 2)
    tests = USER_TESTS + ("    purge = True\n" if opt_in == "attribute" else "")
    pytester.makepyfile(test_contracts=tests)
    args = ["--rabbitry-purge"] if opt_in == "option" else []
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "--rabbitry-url",
        vhost.amqp_url,
        "--rabbitry-round-trips",
        "2",
        *args,
    )
    result.assert_outcomes(passed=4)
    assert asyncio.run(depth(vhost.amqp_url, "orders.created")) == 0
