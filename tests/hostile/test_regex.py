"""Item 5 (ReDoS) and item 11's quadratic enum: patterns and enums rabbitry did not write.

Every regex rabbitry runs on a string it did not write goes through
``rabbitry._bounded`` (the ``regex`` package, with a timeout): ``check --against``
on synthesised strings, the contract tests' mutations, policy patterns on names.
Each attack here is a one-line pattern that runs for hours under Python's ``re``.
Measured on the code before the fix (this machine): ``check --against`` with
``^(a|a){22,}b$`` 40 s and with ``{30,}`` hours; a 20,000-value enum 100+ s.
After: under a second each.  Bounds are generous multiples of that.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rabbitry import _bounded
from rabbitry.compat import Mode, Verdict, _regex, compare_message
from rabbitry.messaging.contract import MessageContract
from specs import write_spec

#: Backtracks ~2^n times on n ``a`` under a backtracking engine: n = 30 is hours.
HOSTILE = r"^(a|a){30,}b$"
#: Unrolls to 10^9 pieces when ``regex`` compiles it (the timeout covers matching only).
HUGE = r"((a{1000}){1000}){1000}"
#: Unrolls to 10^5 pieces (~0.3 s to compile, more than allowed); jsonschema-rs takes it.
LARGE = r"(a{1000}){100}"


def contract(schema: dict[str, Any]) -> MessageContract:
    return MessageContract("M", "x", "", {}, False, schema)


def field(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"v": schema},
        "required": ["v"],
        "additionalProperties": False,
    }


def spec_with(tmp: Path, schema: dict[str, Any]) -> Path:
    return write_spec(
        tmp,
        """
        version: 1
        exchanges: {x: {type: direct}}
        queues: {q: {}}
        bindings:
          - {from: x, queue: q, key: m}
        messages:
          M: {schema: m.json, exchange: x, routing_key: m}
        """,
        {"m.json": {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}},
    )


# -- the bounded matcher -----------------------------------------------------------------------


@pytest.mark.parametrize("pattern", [HOSTILE, r"^(a|aa)+$", r"^((a|a)*)(?=b)$", r"^(a|a)*\1$"])
def test_a_backtracking_match_stops_at_the_bound_and_is_unknown(pattern: str) -> None:
    started = time.monotonic()
    assert _bounded.search(pattern, "a" * 40 + "!") is None
    assert time.monotonic() - started < 40 * _bounded.BOUND  # measured up to 1.5 s


def test_a_pattern_too_large_to_compile_is_unknown_not_compiled() -> None:
    started = time.monotonic()
    assert _bounded.search(HUGE, "a") is None
    assert not _bounded.invalid(HUGE)  # unknown, not "not a pattern"
    assert _bounded.invalid("(")
    assert time.monotonic() - started < 5


def test_samples_of_a_huge_pattern_stop_at_their_length_cap() -> None:
    started = time.monotonic()
    assert list(_regex.samples(HUGE, 3)) == []
    assert list(_regex.samples(r"(?:){4000000000}a", 1)) == []  # repeats of nothing count
    assert time.monotonic() - started < 10


def test_sensible_patterns_keep_their_meaning() -> None:
    assert _bounded.search(r"^ab+$", "abbb") is True
    assert _bounded.search(r"^ab+$", "abc") is False
    assert _bounded.search(r"b", "abc") is True  # a search, not a full match
    assert _bounded.search(r"(?<=a)b", "ab") is True  # lookarounds, which RE2 lacks


# -- check --against ---------------------------------------------------------------------------


def test_compare_with_a_backtracking_pattern_ends_and_names_it_unknown() -> None:
    old = field({"type": "string", "pattern": HOSTILE, "maxLength": 40})
    new = field({"type": "string", "pattern": HOSTILE, "maxLength": 39})
    started = time.monotonic()
    found = compare_message(contract(old), contract(new), Mode.FULL)
    elapsed = time.monotonic() - started
    assert elapsed < 30, elapsed  # measured 0.4 s; hours before
    stopped = [f for f in found if f.verdict is Verdict.UNKNOWN and HOSTILE in f.why]
    assert stopped, [f.line() for f in found]
    assert f"{_bounded.BOUND} s" in stopped[0].why


def test_check_against_on_the_command_line_finishes_and_says_unknown(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    string = {"type": "string", "pattern": HOSTILE}
    old = spec_with(tmp_path / "old", field({**string, "maxLength": 40}))
    new = spec_with(tmp_path / "new", field({**string, "maxLength": 39}))
    done = subprocess.run(
        [sys.executable, "-m", "rabbitry", "check", str(new), "--against", str(old)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,  # measured ~2 s (interpreter start included); hours before
    )
    assert done.returncode in (0, 1), done.stderr
    assert "unknown: message M" in done.stdout
    assert HOSTILE in done.stdout


def test_compare_with_a_pattern_too_large_to_compile_names_it_unknown() -> None:
    old = field({"type": "string", "pattern": LARGE, "minLength": 2})
    new = field({"type": "string", "pattern": LARGE, "minLength": 3})
    started = time.monotonic()
    found = compare_message(contract(old), contract(new), Mode.FULL)
    assert time.monotonic() - started < 30
    assert any(f.verdict is Verdict.UNKNOWN and LARGE in f.why for f in found)


# -- item 11: the enum of 20,000 values -----------------------------------------------------


def test_an_enum_of_20000_values_is_compared_in_linear_time() -> None:
    values: list[Any] = [f"v{i}" for i in range(20_000)]
    old = field({"enum": values})
    new = field({"enum": [*values[:-1], 1.5]})
    started = time.monotonic()
    found = compare_message(contract(old), contract(new), Mode.FULL)
    elapsed = time.monotonic() - started
    assert elapsed < 20, elapsed  # measured ~1 s; 100+ s before
    lines = [f.line() for f in found]
    assert any(f.verdict is Verdict.BREAKING and '"v19999"' in f.why for f in found), lines
    assert any(f.verdict is Verdict.BREAKING and "1.5" in f.why for f in found), lines


def test_enum_membership_is_json_equality() -> None:
    """1 and 1.0 are one JSON value, ``true`` is not 1: the set keys keep that."""
    old = field({"enum": [1, True, "a"]})
    same = field({"enum": [1.0, True, "a", "b"]})
    found = compare_message(contract(old), contract(same), Mode.BACKWARD)
    assert all(f.verdict is Verdict.COMPATIBLE for f in found), [f.line() for f in found]
    narrower = field({"enum": [1, "a"]})
    found = compare_message(contract(old), contract(narrower), Mode.BACKWARD)
    assert any(f.verdict is Verdict.BREAKING and "true" in f.why for f in found), [
        f.line() for f in found
    ]


# -- the runtime validator ---------------------------------------------------------------------

#: Backtracks (a lookahead keeps it off the linear-time engine) until fancy-regex's limit.
LOOKAHEAD = r"^(?:a|a)*(?!a)x"


def test_the_runtime_refuses_a_message_of_backtracking_strings_within_a_bound() -> None:
    """A consumer validating a hostile message against a spec's backtracking pattern: each
    string stops at the contract's backtrack limit (~0.2 ms), so 1,000 of them are refused
    in well under a second — at jsonschema-rs's default limit they held it for 45 s."""
    from rabbitry.errors import ContractViolation  # noqa: PLC0415

    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string", "pattern": LOOKAHEAD}}
        },
    }
    message = contract(schema)
    hostile = {"tags": ["a" * (30 + i % 7) + "b" * i for i in range(1_000)]}
    started = time.monotonic()
    with pytest.raises(ContractViolation) as refused:
        message.validate(hostile)
    elapsed = time.monotonic() - started
    assert elapsed < 10, elapsed  # measured 0.2 s; 45 s before
    assert refused.value.faults
    assert message.faults({"tags": ["aaax"]}) == []  # a matching string still passes


# -- the contract tests' mutations (rabbitry.pytest_plugin) ------------------------------------

PLUGIN_SPEC = """\
version: 1
exchanges:
  orders: {type: topic}
queues:
  orders.created: {}
bindings:
  - {from: orders, queue: orders.created, key: "order.created"}
messages:
  OrderCreated: {schema: order.json, exchange: orders, routing_key: "order.created"}
"""
PLUGIN_SCHEMA = json.dumps(
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["id"],
        "properties": {"id": {"type": "string", "pattern": HOSTILE}},
    }
)
PLUGIN_TESTS = """\
from rabbitry.pytest_plugin import ContractTests


class TestOrders(ContractTests):
    spec = "topology.yaml"
    examples = 10
"""


def test_the_oracle_says_unknown_for_a_mutation_its_pattern_cannot_judge_in_time() -> None:
    from rabbitry.pytest_plugin import _invalid, _oracle, mutations  # noqa: PLC0415

    schema = json.loads(PLUGIN_SCHEMA)
    oracle = _oracle(schema)
    valid = {"id": "a" * 30 + "b"}
    assert not _invalid(oracle, valid)
    started = time.monotonic()
    verdicts = [_invalid(oracle, m) for m in mutations(valid)]
    assert time.monotonic() - started < 60  # measured ~2 s; hours before
    assert any(verdicts)  # the mutations it can judge are still judged
    hostile = {"id": valid["id"] * 40 + "Z"}  # one of the mutations
    assert hostile in mutations(valid)
    assert not _invalid(oracle, hostile)  # unknown: not claimed invalid
    assert _invalid(oracle, {"id": "a" * 30 + "b", "__rabbitry_unexpected__": 1})


def test_the_contract_tests_finish_on_a_spec_with_a_backtracking_pattern(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RABBITRY_CONTRACT_URL", raising=False)
    pytester.makefile(".yaml", topology=PLUGIN_SPEC)
    pytester.makefile(".json", order=PLUGIN_SCHEMA)
    pytester.makepyfile(test_contracts=PLUGIN_TESTS)
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=240)
    assert time.monotonic() - started < 240
    result.assert_outcomes(passed=3, skipped=1)


# -- policy patterns and the spec's own checks ---------------------------------------------------


def test_a_policy_pattern_that_backtracks_is_a_located_error_within_a_bound(tmp_path: Path) -> None:
    from rabbitry.check import check  # noqa: PLC0415
    from rabbitry.spec import Code  # noqa: PLC0415

    queue = "a" * 31
    spec = write_spec(
        tmp_path,
        f"""
        version: 1
        queues: {{{queue}: {{}}, b: {{}}}}
        policies:
          slow: {{pattern: "{HOSTILE}", definition: {{message-ttl: 1000}}}}
        """,
    )
    started = time.monotonic()
    report = check(spec)
    assert time.monotonic() - started < 60  # measured ~1 s; hours before
    found = [d for d in report.diagnostics if d.code is Code.POLICY_PATTERN]
    assert found, [d.render() for d in report.diagnostics]
    assert queue in found[0].message
    assert "unknown" in found[0].message
    assert report.spec is None or not report.spec.policies["slow"].applies_to("queue", queue)


def test_an_enum_checked_against_a_backtracking_pattern_in_a_routing_field(
    tmp_path: Path,
) -> None:
    from rabbitry.check import check  # noqa: PLC0415

    value = "a" * 40 + "!"
    schema = {
        "type": "object",
        "required": ["kind"],
        "properties": {"kind": {"type": "string", "enum": [value, "b"], "pattern": HOSTILE}},
    }
    spec = write_spec(
        tmp_path,
        """
        version: 1
        exchanges: {x: {type: topic}}
        queues: {q: {}}
        bindings:
          - {from: x, queue: q, key: "k.b"}
        messages:
          M: {schema: m.json, exchange: x, routing_key: "k.{kind}"}
        """,
        {"m.json": {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}},
    )
    started = time.monotonic()
    check(spec)
    assert time.monotonic() - started < 60  # measured ~1 s; hours before


def test_generate_models_an_enum_under_a_backtracking_pattern_within_a_bound(
    tmp_path: Path,
) -> None:
    """Each enum value is checked against the rest of its schema when the types are
    modelled; under Python's ``re`` this one ran for over 60 s (hours, by its size)."""
    schema = {
        "type": "object",
        "required": ["kind"],
        "properties": {
            "kind": {"type": "string", "enum": ["a" * 40 + "!", "b"], "pattern": HOSTILE}
        },
    }
    spec = write_spec(
        tmp_path,
        """
        version: 1
        exchanges: {x: {type: topic}}
        queues: {q: {}}
        bindings:
          - {from: x, queue: q, key: "k.b"}
        messages:
          M: {schema: m.json, exchange: x, routing_key: "k.{kind}"}
        """,
        {"m.json": {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}},
    )
    done = subprocess.run(
        [sys.executable, "-m", "rabbitry", "generate", str(spec), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,  # measured 2.4 s
    )
    assert done.returncode == 0, done.stderr


# -- a consumer and a hostile message (the real broker) ---------------------------------------

CONSUMER_SPEC = """
version: 1
exchanges:
  tags: {type: direct}
  dead: {type: fanout}
queues:
  tags.q: {dead_letter: dead}
  dead.q: {}
bindings:
  - {from: tags, queue: tags.q, key: t}
  - {from: dead, queue: dead.q}
messages:
  Tagged: {schema: tagged.json, exchange: tags, routing_key: t}
services:
  app: {publishes: [Tagged], consumes: {tags.q: [Tagged]}}
"""


@pytest.mark.broker
def test_a_consumer_refuses_a_message_of_backtracking_strings_and_goes_on(
    vhost: Any, tmp_path: Path
) -> None:
    """One message of 1,000 strings against a lookahead pattern: dead-lettered, and the
    next message handled, within a bound (validation held the consumer ~45 s before)."""
    import asyncio  # noqa: PLC0415

    from amqp import apply, drain, raw_publish  # noqa: PLC0415
    from rabbitry.messaging.client import Client  # noqa: PLC0415

    tagged = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string", "pattern": LOOKAHEAD}}
        },
    }
    spec_contract = apply(vhost, write_spec(tmp_path, CONSUMER_SPEC, {"tagged.json": tagged}))
    hostile = json.dumps({"tags": ["a" * (30 + i % 7) + "b" * i for i in range(1_000)]})
    handled: list[Any] = []

    async def handle(delivery: Any) -> None:
        handled.append(delivery.body)

    async def body() -> float:
        async with Client(spec_contract, vhost.amqp_url, service="app") as app:
            consumer = app.consume("tags.q", handle)
            await consumer.ready()
            started = time.monotonic()
            await raw_publish(
                vhost.amqp_url,
                "tags",
                "t",
                [
                    (hostile.encode(), {"message_type": "Tagged", "message_id": "hostile"}),
                    (b'{"tags": ["aaax"]}', {"message_type": "Tagged", "message_id": "fine"}),
                ],
            )
            [dead] = await drain(vhost.amqp_url, "dead.q", 1, timeout=60)
            while not handled and time.monotonic() - started < 60:
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - started
            await consumer.cancel()
        assert dead.header.properties.message_id == "hostile"
        return elapsed

    elapsed = asyncio.run(body())
    assert handled == [{"tags": ["aaax"]}]
    assert elapsed < 20, elapsed  # measured ~1 s
