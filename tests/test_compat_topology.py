"""Topology compatibility: the flagship copied, changed one way at a time, compared with itself.

Breaking: a message removed or re-routed, a consumer's queue removed or changed,
a message no longer reaching a queue its consumer reads (shown with a concrete
message the old spec routes there and the new one does not).  Compatible:
additions, widenings, changes nobody relies on.  Descriptions: nothing at all.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rabbitry import routing
from rabbitry.check import check, load_spec
from rabbitry.compat import Finding, Mode, Verdict, compare
from rabbitry.messaging.contract import Contract
from specs import copy_flagship, edit, edit_schema


@pytest.fixture
def old(tmp_path: Path) -> Path:
    (tmp_path / "old").mkdir()
    return copy_flagship(tmp_path / "old")


@pytest.fixture
def new(tmp_path: Path) -> Path:
    (tmp_path / "new").mkdir()
    return copy_flagship(tmp_path / "new")


def findings(old: Path, new: Path, mode: Mode = Mode.FULL) -> list[Finding]:
    report = check(new)
    assert report.spec is not None
    return compare(load_spec(old), report.spec, mode)


def verdicts(found: list[Finding]) -> set[tuple[str, str]]:
    return {(str(f.verdict), f.subject) for f in found}


def test_the_flagship_against_itself_has_no_finding(old: Path, new: Path) -> None:
    assert findings(old, new) == []


def test_descriptions_and_comments_are_not_findings(old: Path, new: Path) -> None:
    edit(new, 'description: "New jobs, routed by job type (job.<type>)."', 'description: "Jobs."')
    edit(new, "# The jobs system", "# The jobs system, described differently")
    edit_schema(new, "start.json", "one routing-key word, so no dots", "a single word")
    edit_schema(
        new,
        "common.json",
        '"title": "Definitions shared by the jobs messages"',
        '"title": "Shared"',
    )
    assert findings(old, new) == []


def test_a_message_added_is_compatible(old: Path, new: Path) -> None:
    shutil.copy(new.parent / "schemas" / "stop.json", new.parent / "schemas" / "ping.json")
    edit(
        new,
        "  Stop:\n",
        '  Ping: {schema: schemas/stop.json, exchange: jobs.control, routing_key: "{job_id}"}\n'
        "  Stop:\n",
    )
    edit(new, "publishes: [Start, Stop]", "publishes: [Start, Stop, Ping]")
    found = findings(old, new)
    assert verdicts(found) == {("compatible", "message Ping")}


def test_a_message_removed_is_breaking_with_an_old_message_as_evidence(
    old: Path, new: Path
) -> None:
    text = new.read_text()
    start = text.index("  Stop:\n")
    end = text.index("services:")
    new.write_text(text[:start] + "\n" + text[end:])
    edit(new, "publishes: [Start, Stop]", "publishes: [Start]")
    edit(
        new,
        "consumes: {jobs.ready: [Start], job-control: [Stop]}",
        "consumes: {jobs.ready: [Start]}",
    )
    found = findings(old, new)
    [removed] = [f for f in found if f.subject == "message Stop"]
    assert removed.verdict is Verdict.BREAKING
    assert removed.counterexample is not None
    contract = Contract.from_spec(load_spec(old)).message("Stop")
    assert contract.faults(removed.counterexample.instance) == []
    # job-control is no longer consumed: its removal from consumes is not itself breaking.
    assert all(f.verdict is not Verdict.BREAKING for f in found if f.subject != "message Stop")


def test_a_routing_key_changed_is_breaking_even_when_consumers_still_get_it(
    old: Path, new: Path
) -> None:
    edit(new, 'routing_key: "job.{job_type}"', 'routing_key: "jobs.{job_type}"')
    edit(new, 'key: "job.#"', 'key: "jobs.#"')
    found = findings(old, new)
    [changed] = [f for f in found if f.verdict is Verdict.BREAKING]
    assert changed.subject == "message Start"
    assert "routing key 'job.{job_type}' → 'jobs.{job_type}'" in changed.why
    assert changed.counterexample is not None
    assert "'job." in changed.counterexample.error
    assert "'jobs." in changed.counterexample.error


def test_a_message_moved_to_another_exchange_is_breaking(old: Path, new: Path) -> None:
    edit(
        new,
        "  jobs.dead:    {type: fanout",
        "  jobs.updates: {type: topic}\n  jobs.dead:    {type: fanout",
    )
    edit(
        new,
        "    schema: schemas/update.json\n    exchange: jobs.status",
        "    schema: schemas/update.json\n    exchange: jobs.updates",
    )
    edit(
        new,
        '  - {from: jobs.control, queue: job-control,       key: "{job_id}"}',
        '  - {from: jobs.control, queue: job-control,       key: "{job_id}"}\n'
        '  - {from: jobs.updates, queue: job-status,        key: "{job_id}"}',
    )
    found = findings(old, new)
    breaking = [f for f in found if f.verdict is Verdict.BREAKING]
    assert [f.subject for f in breaking] == ["message Update"]
    assert "exchange 'jobs.status' → 'jobs.updates'" in breaking[0].why
    assert ("compatible", "exchange jobs.updates") in verdicts(found)


def test_a_binding_narrowed_loses_messages_a_consumer_relied_on(old: Path, new: Path) -> None:
    edit(new, 'key: "job.#"', 'key: "job.render"')
    found = findings(old, new)
    [lost] = [f for f in found if f.verdict is Verdict.BREAKING]
    assert lost.subject == "message Start"
    assert "no longer reaches queue 'jobs.ready'" in lost.why
    assert lost.counterexample is not None
    instance = lost.counterexample.instance
    assert instance["job_type"] != "render"
    # The evidence is real: the routing model sends it to jobs.ready before, nowhere after.
    key = f"job.{instance['job_type']}"
    assert "jobs.ready" in {d.queue for d in routing.route(load_spec(old), "jobs.new", key)}
    assert routing.route(load_spec(new), "jobs.new", key) == ()
    # The binding it lost is not also listed as a compatible change.
    assert not any(
        f.subject.startswith("binding jobs.new")
        and f.verdict is Verdict.COMPATIBLE
        and "removed" in f.why
        for f in found
    )


def test_a_binding_widened_is_compatible(old: Path, new: Path) -> None:
    edit(new, 'key: "job.#"', 'key: "#"')
    found = findings(old, new)
    assert {str(f.verdict) for f in found} == {"compatible"}
    assert ("compatible", "binding jobs.new → queue jobs.ready key '#'") in verdicts(found)


def test_a_consumed_queue_changed_is_breaking(old: Path, new: Path) -> None:
    edit(
        new,
        "  jobs.ready:\n    type: quorum\n",
        "  jobs.ready:\n    type: quorum\n    delivery_limit: 10\n",
    )
    found = findings(old, new)
    [changed] = [f for f in found if f.verdict is Verdict.BREAKING]
    assert changed.subject == "queue jobs.ready"
    # Each argument old → new, as the spec would say it (not a Python mappingproxy).
    assert changed.why.startswith("changed (argument x-delivery-limit none → 10), but consumed by")
    assert "worker (Start)" in changed.why


def test_a_queue_nobody_consumes_changed_is_compatible(old: Path, new: Path) -> None:
    edit(
        new,
        "  jobs.dead-letters:\n",
        "  jobs.dead-letters:\n    message_ttl: 86400000\n",
    )
    found = findings(old, new)
    assert verdicts(found) == {("compatible", "queue jobs.dead-letters")}


def test_queues_bindings_and_services_added_are_compatible(old: Path, new: Path) -> None:
    edit(new, "  job-status:\n", "  jobs.audit: {}\n  job-status:\n")
    edit(
        new,
        "  - {from: jobs.dead,    queue: jobs.dead-letters}",
        "  - {from: jobs.dead,    queue: jobs.dead-letters}\n"
        '  - {from: jobs.new, queue: jobs.audit, key: "#"}',
    )
    edit(new, "services:\n", "services:\n  auditor:\n    consumes: {jobs.audit: [Start]}\n")
    found = findings(old, new)
    assert {str(f.verdict) for f in found} == {"compatible"}
    assert {f.subject for f in found} == {
        "queue jobs.audit",
        "binding jobs.new → queue jobs.audit key '#'",
        "service auditor",
    }


def test_a_schema_change_and_a_routing_change_are_both_reported(old: Path, new: Path) -> None:
    edit_schema(new, "start.json", '"maximum": 10000', '"maximum": 100')
    edit(new, 'key: "job.#"', 'key: "job.render"')
    found = findings(old, new, Mode.BACKWARD)
    breaking = sorted((f.subject, f.path) for f in found if f.verdict is Verdict.BREAKING)
    assert breaking == [("message Start", ""), ("message Start", "/steps")]


def test_a_shared_definition_changed_is_reported_for_every_message_using_it(
    old: Path, new: Path
) -> None:
    edit_schema(new, "common.json", '"maxLength": 128', '"maxLength": 64')
    found = findings(old, new, Mode.BACKWARD)
    assert [(f.subject, f.path) for f in found if f.verdict is Verdict.BREAKING] == [
        ("message StartSuccess", "/worker")
    ]


def test_an_alternate_exchange_no_longer_taken_after_a_binding_is_added(tmp_path: Path) -> None:
    # Adding a binding is not always harmless: the alternate exchange is used only when
    # nothing else matches, so a new binding can take messages away from its consumer.
    spec = """\
version: 1
exchanges:
  orders: {type: direct, alternate_exchange: orders.other}
  orders.other: {type: fanout}
queues:
  unrouted: {}
  new-queue: {}
bindings:
  - {from: orders.other, queue: unrouted}
%s
messages:
  Order: {schema: order.json, exchange: orders, routing_key: "order.{kind}"}
services:
  shop: {publishes: [Order]}
  clerk: {consumes: {unrouted: [Order]}}
%s"""
    schema = (
        '{"type": "object", "required": ["kind"], '
        '"properties": {"kind": {"enum": ["big", "small"]}}}'
    )
    binding = '  - {from: orders, queue: new-queue, key: "order.big"}'
    service = "  newcomer: {consumes: {new-queue: [Order]}}\n"
    for side, extra in (("old", ("", "")), ("new", (binding, service))):
        (tmp_path / side).mkdir()
        (tmp_path / side / "topology.yaml").write_text(spec % extra)
        (tmp_path / side / "order.json").write_text(schema)
    found = findings(tmp_path / "old" / "topology.yaml", tmp_path / "new" / "topology.yaml")
    [lost] = [f for f in found if f.verdict is Verdict.BREAKING]
    assert "no longer reaches queue 'unrouted'" in lost.why
    assert lost.counterexample is not None
    assert lost.counterexample.instance == {"kind": "big"}
