"""``retry: [5s, 30s, 5m]`` on a queue: parsing, the checks that know retry queues, the
routing model, ``route``, ``check``, and ``plan``/``apply`` on the broker.

Each bad value is a located error (never a traceback); each retry check is shown
firing and, with the one thing that should silence it changed, not firing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import Vhost
from rabbitry import routing
from rabbitry.check import Report, check, load_spec, reach
from rabbitry.errors import SpecError
from rabbitry.spec import Code, Severity
from rabbitry.spec._retry import MAX_DELAY_MS, MAX_RETRIES, delay_ms
from rabbitry.spec.model import RETRY_UNITS, retry_label, retry_queue_name
from specs import at, line_of, object_schema, only, run_cli, write_spec

SCHEMAS = {"schemas/job.json": object_schema({"id": {"type": "string"}}, ["id"])}

#: A worker consumes ``jobs``, which retries after 5 s, 30 s and 5 min and dead-letters
#: (through a policy, so there is no x-argument to advise about) to ``parked``.
BASE = """\
version: 1
exchanges:
  work: {type: direct}
  dead: {type: fanout}
queues:
  jobs:
    retry: [5s, 30s, 5m]
  parked: {}
policies:
  jobs-dead: {queues: [jobs], dead_letter: dead}
bindings:
  - {from: work, queue: jobs, key: job}
  - {from: dead, queue: parked}
messages:
  Job: {schema: schemas/job.json, exchange: work, routing_key: job}
services:
  worker: {consumes: {jobs: [Job]}}
"""

RETRIES = ("jobs.retry.5s", "jobs.retry.30s", "jobs.retry.5m")


def checked(tmp_path: Path, text: str) -> tuple[Report, str]:
    path = write_spec(tmp_path, text, SCHEMAS)
    return check(path), text


def changed(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# ------------------------------------------------------------------- parsing


@given(st.integers(1, MAX_DELAY_MS))
def test_a_delay_reads_back_from_its_label(ms: int) -> None:
    label = retry_label(ms)
    assert delay_ms(label) == ms
    assert re.fullmatch(r"[1-9]\d*(ms|s|m|h)", label)
    assert retry_queue_name("q", ms) == f"q.retry.{label}"


@given(st.integers(0, 10**7), st.sampled_from(sorted(RETRY_UNITS)))
def test_every_unit_reads_as_its_milliseconds_or_is_refused_out_of_range(n: int, unit: str) -> None:
    ms = n * RETRY_UNITS[unit]
    if 1 <= ms <= MAX_DELAY_MS:
        assert delay_ms(f"{n}{unit}") == ms
        assert delay_ms(f" {n} {unit} ") == ms
    else:
        with pytest.raises(ValueError, match="1 ms to"):
            delay_ms(f"{n}{unit}")


@given(st.one_of(st.text(max_size=12), st.floats(), st.booleans(), st.none(), st.integers()))
def test_any_value_is_a_delay_in_range_or_a_value_error(value: object) -> None:
    try:
        ms = delay_ms(value)
    except ValueError as exc:
        said = str(exc)
        assert said.startswith("a delay ")
        return
    assert 1 <= ms <= MAX_DELAY_MS


def test_retry_makes_one_queue_per_delay_right_after_its_queue(tmp_path: Path) -> None:
    report, _ = checked(tmp_path, BASE)
    assert report.spec is not None
    assert list(report.spec.queues) == ["jobs", *RETRIES, "parked"]
    assert report.spec.queues["jobs"].retry == (5_000, 30_000, 300_000)
    fifth = report.spec.queues["jobs.retry.5m"]
    assert fifth.retry_of == "jobs"
    assert fifth.durable
    assert dict(fifth.arguments) == {
        "x-message-ttl": 300_000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "jobs",
    }


LONG = "q" * 250

BAD = {
    "an empty list": ("retry: []", Code.RETRY, "empty list"),
    "26 delays": (f"retry: [{', '.join(['1s'] * (MAX_RETRIES + 1))}]", Code.RETRY, "26 delays"),
    "zero": ("retry: [0]", Code.RETRY, "1 ms to"),
    "2**32 ms": (f"retry: [{2**32}]", Code.RETRY, "1 ms to"),
    "5 sec": ("retry: ['5 sec']", Code.RETRY, "a whole number with a unit"),
    "-1": ("retry: [-1]", Code.RETRY, "1 ms to"),
    "true": ("retry: [true]", Code.RETRY, "a duration"),
    "a mapping": ("retry: {first: 5s}", Code.WRONG_TYPE, "retry"),
    "on a stream": ("type: stream, retry: [5s]", Code.RETRY, "stream"),
    "on an exclusive queue": ("exclusive: true, retry: [5s]", Code.RETRY, "exclusive"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_retry_is_a_located_error(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written, code, words = BAD[name]
    text = changed("  jobs:\n    retry: [5s, 30s, 5m]\n", f"  jobs: {{{written}}}\n")
    report, _ = checked(tmp_path, text)
    found = only(report, code)
    assert found.severity is Severity.ERROR
    assert found.location.line == line_of(text, "  jobs: {")
    assert words in found.message
    assert found.hint
    exit_code, out, _ = run_cli(["check", str(tmp_path / "topology.yaml")], capsys)
    assert exit_code == 1
    assert f"error: {found.message}" in out


def test_a_declared_queue_named_like_a_retry_queue_is_an_error(tmp_path: Path) -> None:
    text = changed("  parked: {}\n", "  parked: {}\n  jobs.retry.30s: {}\n")
    report, _ = checked(tmp_path, text)
    found = only(report, Code.RETRY)
    assert found.location.line == line_of(text, "retry: [5s")
    assert "'jobs.retry.30s'" in found.message
    assert "rename queue 'jobs.retry.30s'" in found.hint


def test_a_retry_queue_name_over_255_bytes_is_an_error(tmp_path: Path) -> None:
    text = BASE.replace("jobs", LONG)
    report, _ = checked(tmp_path, text)
    found = at(report, Code.NAME_TOO_LONG)
    assert [d.location.line for d in found] == [line_of(text, "retry: [5s")] * 3
    assert {d.message.split("retry queue ")[1].split("'")[1] for d in found} == {
        f"{LONG}.retry.{label}" for label in ("5s", "30s", "5m")
    }
    assert {d.code for d in report.errors} == {Code.NAME_TOO_LONG}


# ------------------------------------------------------------------- checks


def test_a_spec_with_retry_checks_clean_with_no_noise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report, _ = checked(tmp_path, BASE)
    assert report.diagnostics == ()
    assert report.hints == ()
    code, out, err = run_cli(["check", "--strict", str(tmp_path / "topology.yaml")], capsys)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{tmp_path / 'topology.yaml'}: ok (2 exchanges, 5 queues, 2 bindings, 1 message, "
        "1 service)"
    ]


def test_consuming_a_retry_queue_is_an_error(tmp_path: Path) -> None:
    text = changed("consumes: {jobs: [Job]}", "consumes: {jobs: [Job], jobs.retry.30s: [Job]}")
    report, _ = checked(tmp_path, text)
    found = only(report, Code.RETRY_CONSUMER)
    assert found.location.line == line_of(text, "worker:")
    assert "'worker'" in found.message
    assert "'jobs.retry.30s'" in found.message
    assert "consume 'jobs'" in found.hint
    assert report.errors == (found,)
    with pytest.raises(SpecError, match="retry-consumer"):
        load_spec(tmp_path / "topology.yaml")


def test_retry_on_a_queue_nobody_consumes_warns_once(tmp_path: Path) -> None:
    text = changed("  worker: {consumes: {jobs: [Job]}}\n", "")
    report, _ = checked(tmp_path, text)
    found = only(report, Code.RETRY_UNCONSUMED)
    assert found.location.line == line_of(text, "retry: [5s")
    assert at(report, Code.UNCONSUMED_QUEUE) == []  # one fact, one finding
    without = changed("    retry: [5s, 30s, 5m]\n", "", text)
    report, _ = checked(tmp_path, without)
    assert at(report, Code.RETRY_UNCONSUMED) == []
    assert only(report, Code.UNCONSUMED_QUEUE).message == "no service consumes queue 'jobs'"


def test_retry_without_a_dead_letter_exchange_warns_the_last_failure_is_dropped(
    tmp_path: Path,
) -> None:
    text = changed("  jobs-dead: {queues: [jobs], dead_letter: dead}\n", "")
    text = changed("policies:\n", "", text)
    report, _ = checked(tmp_path, text)
    found = only(report, Code.NO_DEAD_LETTER)
    assert found.location.line == line_of(text, "  jobs:")
    assert "has retry:" in found.message
    assert "last try fails is dropped" in found.message
    with_argument = changed("    retry: [5s", "    dead_letter: dead\n    retry: [5s", text)
    report, _ = checked(tmp_path, with_argument)
    assert at(report, Code.NO_DEAD_LETTER) == []
    unconsumed = changed("  worker: {consumes: {jobs: [Job]}}\n", "", text)
    report, _ = checked(tmp_path, unconsumed)  # not consumed: warned for its retry: alone
    assert "has retry:" in only(report, Code.NO_DEAD_LETTER).message


HARM = {
    "message-ttl": ("message_ttl: 1000", "lower than the delay 5s"),
    "expires": ("expires: 60000", "deletes it"),
    "max-length": ("max_length: 10", "dropped or refused"),
    "max-length-bytes": ("max_length_bytes: 1000000", "dropped or refused"),
}


@pytest.mark.parametrize("key", list(HARM))
@pytest.mark.parametrize("kind", ["policies", "operator_policies"])
def test_a_policy_setting_that_reaches_the_retry_queues_warns(
    key: str, kind: str, tmp_path: Path
) -> None:
    setting, words = HARM[key]
    text = BASE + f'{kind}:\n  caps: {{pattern: "^jobs", priority: 1, {setting}}}\n'
    report, _ = checked(tmp_path, text)
    found = only(report, Code.RETRY_POLICY)
    assert found.location.line == line_of(text, "caps:")
    what = "operator policy" if kind == "operator_policies" else "policy"
    assert found.message.startswith(f"{what} 'caps' sets {key}: ")
    assert "'jobs.retry.5s', 'jobs.retry.30s', 'jobs.retry.5m'" in found.message
    assert words in found.message
    assert at(report, Code.POLICY_OVERRIDE) == []
    narrowed = text.replace('"^jobs"', '"^jobs$"')
    report, _ = checked(tmp_path, narrowed)
    assert at(report, Code.RETRY_POLICY) == []


@settings(max_examples=25, deadline=None)
@given(ttl=st.integers(1, 10**6), delay=st.integers(1, 10**6))
def test_a_policy_ttl_warns_exactly_when_it_is_lower_than_the_delay(
    ttl: int, delay: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    text = changed("retry: [5s, 30s, 5m]", f"retry: [{delay}]")
    text += f'operator_policies:\n  ttl: {{pattern: "retry", message_ttl: {ttl}}}\n'
    report, _ = checked(tmp_path_factory.mktemp("ttl"), text)
    found = at(report, Code.RETRY_POLICY)
    assert bool(found) == (ttl < delay)
    assert report.errors == ()


def test_a_dead_letter_exchange_from_a_policy_is_harmless_on_retry_queues(
    tmp_path: Path,
) -> None:
    text = changed(
        "jobs-dead: {queues: [jobs], dead_letter: dead}",
        'jobs-dead: {pattern: "^jobs", dead_letter: dead}',
    )
    report, _ = checked(tmp_path, text)
    assert report.diagnostics == ()
    assert report.spec is not None
    for name in RETRIES:  # the argument wins: still back to jobs through the default exchange
        [back] = routing.dead_letter_route(report.spec, name, "job", {})
        assert back.queue == "jobs"


def test_retry_queues_get_no_policy_settable_hint(tmp_path: Path) -> None:
    text = changed("    retry: [5s", "    message_ttl: 60000\n    retry: [5s")
    report, _ = checked(tmp_path, text)
    [hint] = report.hints
    assert hint.code is Code.POLICY_SETTABLE
    assert "queue 'jobs'" in hint.message


# ------------------------------------------------------------------- routing


def test_a_message_reaches_the_retry_queues_and_nothing_calls_them_unreachable(
    tmp_path: Path,
) -> None:
    report, _ = checked(tmp_path, BASE)
    assert report.spec is not None
    spec = report.spec
    assert reach(spec, spec.messages["Job"]) == {"jobs", *RETRIES, "parked"}
    for name in RETRIES:  # their way back to the queue: the default exchange, by name
        [back] = routing.dead_letter_route(spec, name, "job", {})
        assert back.queue == "jobs"


def test_route_shows_the_retries_of_a_queue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, BASE, SCHEMAS)
    code, out, _ = run_cli(["route", "work", "job", "--spec", str(spec)], capsys)
    assert code == 0
    assert out.splitlines() == [
        "jobs",
        "  retries: jobs.retry.5s (5s), jobs.retry.30s (30s), jobs.retry.5m (5m) → jobs",
    ]
    code, out, _ = run_cli(
        ["route", "work", "job", "--spec", str(spec), "--format", "json"], capsys
    )
    [jobs] = json.loads(out)
    assert jobs["retries"] == [
        {"queue": "jobs.retry.5s", "delay_ms": 5_000},
        {"queue": "jobs.retry.30s", "delay_ms": 30_000},
        {"queue": "jobs.retry.5m", "delay_ms": 300_000},
    ]
    code, out, _ = run_cli(["route", "dead", "", "--spec", str(spec)], capsys)
    assert out.splitlines() == ["parked"]


# ------------------------------------------------------------------- the broker


def test_plan_shows_the_retry_queues_and_apply_makes_them(
    vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, BASE, SCHEMAS)
    code, out, err = run_cli(
        ["plan", str(spec), "--url", vhost.amqp_url, "--format", "json"], capsys
    )
    assert code == 3, err
    text = json.dumps(json.loads(out))
    for name in RETRIES:
        assert f'"{name}"' in text
    code, out, _ = run_cli(["plan", str(spec), "--url", vhost.amqp_url], capsys)
    for name in RETRIES:
        assert name in out
    assert "x-message-ttl" in out
    assert "300000" in out
    code, _, err = run_cli(["apply", str(spec), "--url", vhost.amqp_url], capsys)
    assert code == 0, err
    queues = {q["name"]: q for q in vhost.queues()}
    for delay, name in zip((5_000, 30_000, 300_000), RETRIES, strict=True):
        assert queues[name]["durable"] is True
        assert queues[name]["type"] == "classic"
        assert queues[name]["arguments"] == {
            "x-message-ttl": delay,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "jobs",
        }
    code, _, _ = run_cli(["plan", str(spec), "--url", vhost.amqp_url], capsys)
    assert code == 0
