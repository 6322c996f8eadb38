"""``check --against`` judges a queue's ``retry:`` and a message's ``reply:``.

retry: a removed delay's retry queue leaves the spec with the messages waiting
in it (breaking unless empty); added or reordered delays are compatible, and
the queue itself is not re-declared for either.  reply: removed or changed is
breaking for requesters, added is compatible.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rabbitry.check import load_spec
from rabbitry.compat import Finding, Verdict, compare
from rabbitry.spec.model import retry_label, retry_queue_name
from specs import object_schema, run_cli, write_spec

SCHEMAS = {
    "schemas/job.json": object_schema({"id": {"type": "string"}}, ["id"]),
    "schemas/add.json": object_schema({"a": {"type": "integer"}}, ["a"]),
    "schemas/sum.json": object_schema({"sum": {"type": "integer"}}, ["sum"]),
}

SPEC = """\
version: 1
exchanges:
  work: {type: direct}
  dead: {type: fanout}
queues:
  jobs: {dead_letter: dead, retry: [5s, 30s, 5m]}
  add.q: {dead_letter: dead}
  parked: {}
bindings:
  - {from: work, queue: jobs, key: job}
  - {from: work, queue: add.q, key: add}
  - {from: dead, queue: parked}
messages:
  Job: {schema: schemas/job.json, exchange: work, routing_key: job}
  Add: {schema: schemas/add.json, exchange: work, routing_key: add, reply: Sum}
  Twice: {schema: schemas/add.json, exchange: work, routing_key: add, reply: Sum}
  Half: {schema: schemas/add.json, exchange: work, routing_key: add, reply: Other}
  Sum: {schema: schemas/sum.json, exchange: ""}
  Other: {schema: schemas/sum.json, exchange: ""}
services:
  worker: {consumes: {jobs: [Job], add.q: [Add, Twice, Half]}, publishes: [Job]}
"""


def compared(tmp: Path, old: str, new: str) -> list[Finding]:
    specs = []
    for side, text in (("old", old), ("new", new)):
        (tmp / side).mkdir(exist_ok=True)
        specs.append(load_spec(write_spec(tmp / side, text, SCHEMAS)))
    return compare(specs[0], specs[1])


def with_retry(delays: str, text: str = SPEC) -> str:
    return text.replace("retry: [5s, 30s, 5m]", delays)


def shown(found: list[Finding]) -> list[tuple[str, str]]:
    return [(str(f.verdict), f.subject) for f in found]


def test_the_same_spec_has_no_finding(tmp_path: Path) -> None:
    assert compared(tmp_path, SPEC, SPEC) == []


def test_a_removed_delay_is_breaking_and_names_its_retry_queue(tmp_path: Path) -> None:
    found = compared(tmp_path, SPEC, with_retry("retry: [5s, 5m]"))
    assert shown(found) == [("breaking", "queue jobs")]
    [finding] = found
    assert "retry delay 30s removed" in finding.why
    assert "'jobs.retry.30s'" in finding.why
    assert "unless it is empty" in finding.why
    assert finding.change is not None
    assert finding.change.old == {"retry": ["5s", "30s", "5m"]}
    assert finding.change.new == {"retry": ["5s", "5m"]}


def test_retry_removed_entirely_is_breaking_for_each_retry_queue(tmp_path: Path) -> None:
    found = compared(tmp_path, SPEC, with_retry("retry: null"))
    assert shown(found) == [("breaking", "queue jobs")] * 3
    assert sorted(f.why.split("'")[1] for f in found) == sorted(
        ["jobs.retry.5s", "jobs.retry.30s", "jobs.retry.5m"]
    )


@pytest.mark.parametrize(
    "delays", ["retry: [5s, 30s, 5m, 1h]", "retry: [30s, 5s, 5m]", "retry: [5s, 5s, 30s, 5m]"]
)
def test_delays_added_or_reordered_are_compatible(tmp_path: Path, delays: str) -> None:
    found = compared(tmp_path, SPEC, with_retry(delays))
    assert shown(found) == [("compatible", "queue jobs")]
    assert "every old retry queue stays" in found[0].why


def test_retry_added_to_a_consumed_queue_does_not_re_declare_it(tmp_path: Path) -> None:
    found = compared(tmp_path, with_retry("retry: null"), SPEC)
    assert shown(found) == [("compatible", "queue jobs")]


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    old=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    new=st.lists(st.integers(1, 4), min_size=1, max_size=4),
)
def test_breaking_exactly_for_each_delay_that_goes(
    tmp_path: Path, old: list[int], new: list[int]
) -> None:
    def spec(delays: list[int]) -> str:
        return with_retry(f"retry: [{', '.join(f'{d}s' for d in delays)}]")

    found = compared(tmp_path, spec(old), spec(new))
    gone = {retry_queue_name("jobs", d * 1000) for d in set(old) - set(new)}
    breaking = [f for f in found if f.verdict is Verdict.BREAKING]
    assert {f.why.split("'")[1] for f in breaking} == gone
    assert len(breaking) == len(gone)
    assert all(f.subject == "queue jobs" for f in found)
    if not gone:
        assert len(found) == (0 if old == new else 1)
    for delay in set(old) - set(new):
        assert any(f"retry delay {retry_label(delay * 1000)} removed" in f.why for f in breaking)


def test_a_removed_reply_is_breaking(tmp_path: Path) -> None:
    found = compared(
        tmp_path,
        SPEC,
        SPEC.replace("routing_key: add, reply: Sum}\n  Twice", "routing_key: add}\n  Twice"),
    )
    assert shown(found) == [("breaking", "message Add")]
    assert "reply 'Sum' removed" in found[0].why
    assert found[0].change is not None
    assert (found[0].change.old, found[0].change.new) == ({"reply": "Sum"}, {"reply": None})


def test_a_changed_reply_is_breaking(tmp_path: Path) -> None:
    found = compared(
        tmp_path, SPEC, SPEC.replace("add, reply: Sum}\n  Twice", "add, reply: Other}\n  Twice")
    )
    assert shown(found) == [("breaking", "message Add")]
    assert "'Sum' → 'Other'" in found[0].why


def test_an_added_reply_is_compatible(tmp_path: Path) -> None:
    found = compared(
        tmp_path,
        SPEC.replace("routing_key: add, reply: Sum}\n  Twice", "routing_key: add}\n  Twice"),
        SPEC,
    )
    assert shown(found) == [("compatible", "message Add")]
    assert "reply 'Sum' added" in found[0].why


def test_check_against_fails_on_a_removed_delay_and_passes_on_an_added_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = write_spec(tmp_path, SPEC, SCHEMAS, name="old.yaml")
    new = write_spec(tmp_path, with_retry("retry: [5s]"), SCHEMAS)
    code, out, _ = run_cli(["check", str(new), "--against", str(old)], capsys)
    assert code == 1
    assert "breaking: queue jobs: retry delay 30s removed" in out
    assert "breaking: queue jobs: retry delay 5m removed" in out
    assert "2 breaking, 0 unknown, 0 compatible" in out
    new.write_text(with_retry("retry: [5s, 30s, 5m, 1h]"))
    code, out, _ = run_cli(["check", str(new), "--against", str(old)], capsys)
    assert code == 0
    assert "compatible: queue jobs: retry changed" in out
    assert "0 breaking, 0 unknown, 1 compatible" in out
