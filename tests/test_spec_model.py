"""The spec model as the loader builds it: defaults, sugar, raw arguments, the flagship."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from rabbitry.spec import (
    Binding,
    Code,
    Diagnostic,
    ExchangeType,
    HeadersMatch,
    QueueType,
    Severity,
    Spec,
    read,
)
from rabbitry.spec.model import placeholders
from specs import copy_flagship, line_of, write_spec


def _read(tmp_path: Path, text: str) -> tuple[Spec, list[Diagnostic]]:
    spec, diagnostics = read(write_spec(tmp_path, text))
    assert spec is not None
    return spec, diagnostics


def _errors(diagnostics: list[Diagnostic]) -> list[str]:
    return [d.render() for d in diagnostics if d.severity is Severity.ERROR]


# ------------------------------------------------------------------------- defaults


def test_defaults_of_exchanges_and_queues(tmp_path: Path) -> None:
    spec, diagnostics = _read(
        tmp_path,
        """
        version: 1
        exchanges:
          plain: {type: direct}
        queues:
          work: {}
          empty:
          mine: {exclusive: true}
          kept: {exclusive: true, durable: true}
        """,
    )
    assert _errors(diagnostics) == []
    ex = spec.exchanges["plain"]
    assert (ex.type, ex.durable, ex.auto_delete, ex.internal) == (
        ExchangeType.DIRECT,
        True,
        False,
        False,
    )
    assert dict(ex.arguments) == {}
    for name in ("work", "empty"):
        queue = spec.queues[name]
        assert queue.type is QueueType.CLASSIC
        assert (queue.durable, queue.exclusive, queue.auto_delete) == (True, False, False)
        assert dict(queue.arguments) == {}
        assert not queue.runtime
    mine = spec.queues["mine"]
    assert (mine.durable, mine.exclusive, mine.runtime) == (False, True, True)
    assert spec.queues["kept"].durable is True


def test_written_flags_override_the_defaults(tmp_path: Path) -> None:
    spec, diagnostics = _read(
        tmp_path,
        """
        version: 1
        exchanges:
          e: {type: headers, durable: false, auto_delete: true, internal: true}
        queues:
          q: {durable: false, auto_delete: true}
        """,
    )
    assert _errors(diagnostics) == []
    e = spec.exchanges["e"]
    assert (e.type, e.durable, e.auto_delete, e.internal) == (
        ExchangeType.HEADERS,
        False,
        True,
        True,
    )
    q = spec.queues["q"]
    assert (q.durable, q.auto_delete) == (False, True)


# --------------------------------------------------------------- sugar and arguments

_SUGAR = [
    # sugar key, as written, argument, value, queue type
    ("message_ttl", "60000", "x-message-ttl", 60000, "classic"),
    ("expires", "1800000", "x-expires", 1800000, "classic"),
    ("max_length", "10", "x-max-length", 10, "quorum"),
    ("max_length_bytes", "1048576", "x-max-length-bytes", 1048576, "stream"),
    ("overflow", "reject-publish", "x-overflow", "reject-publish", "classic"),
    ("dead_letter", "dlx", "x-dead-letter-exchange", "dlx", "classic"),
    ("dead_letter_routing_key", "dead.q", "x-dead-letter-routing-key", "dead.q", "quorum"),
    ("delivery_limit", "5", "x-delivery-limit", 5, "quorum"),
    ("dead_letter_strategy", "at-most-once", "x-dead-letter-strategy", "at-most-once", "quorum"),
    ("max_priority", "10", "x-max-priority", 10, "classic"),
    ("queue_mode", "lazy", "x-queue-mode", "lazy", "classic"),
    ("single_active_consumer", "true", "x-single-active-consumer", True, "quorum"),
    ("max_age", "7D", "x-max-age", "7D", "stream"),
    ("max_segment_size_bytes", "500000", "x-stream-max-segment-size-bytes", 500000, "stream"),
    ("initial_cluster_size", "3", "x-initial-cluster-size", 3, "quorum"),
    ("leader_locator", "balanced", "x-queue-leader-locator", "balanced", "quorum"),
]


@pytest.mark.parametrize("case", _SUGAR, ids=[case[0] for case in _SUGAR])
def test_sugar_key_is_folded_into_the_arguments(
    tmp_path: Path, case: tuple[str, str, str, Any, str]
) -> None:
    sugar, written, argument, value, kind = case
    spec, diagnostics = _read(
        tmp_path,
        f"""
        version: 1
        exchanges:
          dlx: {{type: fanout}}
        queues:
          q:
            type: {kind}
            {sugar}: {written}
        """,
    )
    assert _errors(diagnostics) == []
    queue = spec.queues["q"]
    assert queue.type is QueueType(kind)
    assert dict(queue.arguments) == {argument: value}
    assert sugar not in queue.arguments


def test_alternate_exchange_sugar_on_an_exchange(tmp_path: Path) -> None:
    spec, diagnostics = _read(
        tmp_path,
        """
        version: 1
        exchanges:
          main: {type: direct, alternate_exchange: spill}
          spill: {type: fanout}
        """,
    )
    assert _errors(diagnostics) == []
    assert dict(spec.exchanges["main"].arguments) == {"alternate-exchange": "spill"}
    assert spec.exchanges["main"].alternate_exchange == "spill"
    assert spec.exchanges["spill"].alternate_exchange is None


def test_raw_arguments_are_kept_as_written(tmp_path: Path) -> None:
    spec, diagnostics = _read(
        tmp_path,
        """
        version: 1
        queues:
          q:
            arguments:
              x-message-ttl: 1000
              x-dead-letter-exchange: ""
              x-custom-list: [1, two]
              x-custom-table: {a: 1}
        """,
    )
    assert _errors(diagnostics) == []
    assert dict(spec.queues["q"].arguments) == {
        "x-message-ttl": 1000,
        "x-dead-letter-exchange": "",
        "x-custom-list": [1, "two"],
        "x-custom-table": {"a": 1},
    }
    assert spec.queues["q"].dead_letter_exchange == ""


def test_sugar_and_raw_argument_that_agree_are_one_argument(tmp_path: Path) -> None:
    spec, diagnostics = _read(
        tmp_path,
        """
        version: 1
        exchanges:
          dlx: {type: fanout}
        queues:
          q:
            message_ttl: 1000
            dead_letter: dlx
            arguments: {x-message-ttl: 1000, x-dead-letter-exchange: dlx}
        """,
    )
    assert _errors(diagnostics) == []
    assert dict(spec.queues["q"].arguments) == {
        "x-message-ttl": 1000,
        "x-dead-letter-exchange": "dlx",
    }


@pytest.mark.parametrize("kind", ["quorum", "stream", "classic"])
def test_x_queue_type_argument_sets_the_type(tmp_path: Path, kind: str) -> None:
    spec, diagnostics = _read(
        tmp_path,
        f"""
        version: 1
        queues:
          q: {{arguments: {{x-queue-type: {kind}}}}}
          r: {{type: {kind}, arguments: {{x-queue-type: {kind}}}}}
        """,
    )
    assert _errors(diagnostics) == []
    for name in ("q", "r"):
        assert spec.queues[name].type is QueueType(kind)
        assert "x-queue-type" not in spec.queues[name].arguments


def test_x_queue_type_contradicting_type_is_a_sugar_conflict(tmp_path: Path) -> None:
    spec, diagnostics = _read(
        tmp_path,
        """
        version: 1
        queues:
          q:
            type: quorum
            arguments: {x-queue-type: classic}
          r:
            arguments: {x-queue-type: fast}
        """,
    )
    text = spec.path.read_text(encoding="utf-8")
    found = [(d.code, d.location.line) for d in diagnostics if d.severity is Severity.ERROR]
    assert sorted(found, key=lambda f: f[1]) == [
        (Code.SUGAR_CONFLICT, line_of(text, "x-queue-type: classic")),
        (Code.BAD_VALUE, line_of(text, "x-queue-type: fast")),
    ]
    assert "q" not in spec.queues  # a queue with faults is left out of the model
    assert "q" in spec.broken_queues


# ------------------------------------------------------------------- written values


def test_numbers_written_where_text_is_expected_keep_their_text(tmp_path: Path) -> None:
    spec, diagnostics = _read(
        tmp_path,
        """
        version: 1
        exchanges:
          e: {type: direct, description: 1.10}
        queues:
          q: {description: 1.10}
        bindings:
          - {from: e, queue: q, key: 1.10}
        """,
    )
    assert _errors(diagnostics) == []
    assert spec.exchanges["e"].description == "1.10"
    assert spec.queues["q"].description == "1.10"
    assert spec.bindings[0].key == "1.10"


def test_names_that_yaml_would_turn_into_booleans_stay_names(tmp_path: Path) -> None:
    spec, diagnostics = _read(
        tmp_path,
        """
        version: 1
        exchanges:
          on: {type: fanout}
        queues:
          1: {}
          yes: {}
        bindings:
          - {from: on, queue: 1}
          - {from: on, queue: yes}
        """,
    )
    assert _errors(diagnostics) == []
    assert set(spec.exchanges) == {"on"}
    assert set(spec.queues) == {"1", "yes"}
    assert {(b.source, b.destination) for b in spec.bindings} == {("on", "1"), ("on", "yes")}


def test_one_name_without_brackets_is_a_list_of_one(tmp_path: Path) -> None:
    spec, _ = _read(
        tmp_path,
        """
        version: 1
        services:
          s: {publishes: Start, consumes: {q: Start}}
        """,
    )
    assert spec.services["s"].publishes == ("Start",)
    assert dict(spec.services["s"].consumes) == {"q": ("Start",)}


def test_headers_binding_model(tmp_path: Path) -> None:
    spec, diagnostics = _read(
        tmp_path,
        """
        version: 1
        exchanges:
          h: {type: headers}
        queues:
          pdf: {}
        bindings:
          - {from: h, queue: pdf, match: any, headers: {format: pdf, pages: 2}}
        """,
    )
    assert _errors(diagnostics) == []
    (binding,) = spec.bindings
    assert binding.match is HeadersMatch.ANY
    assert dict(binding.headers) == {"format": "pdf", "pages": 2}
    assert binding.broker_arguments == {"format": "pdf", "pages": 2, "x-match": "any"}
    assert binding.key == ""
    assert not binding.runtime


def test_exchange_to_exchange_binding_model(tmp_path: Path) -> None:
    spec, diagnostics = _read(
        tmp_path,
        """
        version: 1
        exchanges:
          a: {type: topic}
          b: {type: fanout}
        bindings:
          - {from: a, exchange: b, key: "#"}
        """,
    )
    assert _errors(diagnostics) == []
    assert spec.bindings == (
        Binding(source="a", destination="b", destination_type="exchange", key="#"),
    )


def test_placeholders_of_templates() -> None:
    assert placeholders("job.{job_type}.{job_id}") == ("job_type", "job_id")
    assert placeholders("plain.key") == ()
    assert Binding("e", "q", key="{job_id}").params == ("job_id",)
    assert Binding("e", "q", key="{job_id}").runtime
    assert not Binding("e", "q", key="job.#").runtime


# ------------------------------------------------------------------------- flagship


@pytest.fixture
def flagship(tmp_path: Path) -> Spec:
    spec, diagnostics = read(copy_flagship(tmp_path))
    assert diagnostics == []
    assert spec is not None
    return spec


def test_flagship_exchanges(flagship: Spec) -> None:
    assert {name: e.type for name, e in flagship.exchanges.items()} == {
        "jobs.new": ExchangeType.TOPIC,
        "jobs.status": ExchangeType.TOPIC,
        "jobs.control": ExchangeType.TOPIC,
        "jobs.dead": ExchangeType.FANOUT,
    }
    assert all(e.durable and not e.internal for e in flagship.exchanges.values())


def test_flagship_queues(flagship: Spec) -> None:
    assert list(flagship.queues) == [
        "jobs.ready",
        "jobs.ready.retry.1s",
        "jobs.ready.retry.5s",
        "jobs.dead-letters",
        "job-status",
        "job-control",
    ]
    ready = flagship.queues["jobs.ready"]
    assert ready.type is QueueType.QUORUM
    assert ready.durable
    assert not ready.exclusive
    assert not ready.runtime
    assert dict(ready.arguments) == {}  # its limits are a policy's, to change in place
    limits = flagship.policies["jobs-ready"]
    assert limits.applies_to("queue", "jobs.ready", QueueType.QUORUM)
    assert dict(limits.definition) == {"dead-letter-exchange": "jobs.dead", "delivery-limit": 5}
    parking = flagship.queues["jobs.dead-letters"]
    assert parking.type is QueueType.CLASSIC
    assert parking.durable
    assert dict(parking.arguments) == {}
    for name in ("job-status", "job-control"):
        queue = flagship.queues[name]
        assert queue.exclusive
        assert queue.runtime
        assert not queue.durable
        assert queue.dead_letter_exchange == "jobs.dead"


def test_flagship_bindings_and_their_runtime_flags(flagship: Spec) -> None:
    found = {(b.source, b.destination, b.key, b.runtime) for b in flagship.bindings}
    assert found == {
        ("jobs.new", "jobs.ready", "job.#", False),
        ("jobs.dead", "jobs.dead-letters", "", False),
        ("jobs.status", "job-status", "{job_id}", True),
        ("jobs.control", "job-control", "{job_id}", True),
    }
    assert all(b.destination_type == "queue" for b in flagship.bindings)
    assert flagship.bindings_to_queue("job-status")[0].params == ("job_id",)


def test_flagship_messages_and_their_schemas(flagship: Spec) -> None:
    expected = {
        "Start": ("jobs.new", "job.{job_type}", ("job_type",)),
        "StartSuccess": ("jobs.status", "{job_id}", ("job_id",)),
        "Update": ("jobs.status", "{job_id}", ("job_id",)),
        "Finished": ("jobs.status", "{job_id}", ("job_id",)),
        "Stop": ("jobs.control", "{job_id}", ("job_id",)),
    }
    assert {
        name: (m.exchange, m.routing_key, m.params) for name, m in flagship.messages.items()
    } == expected
    for name, message in flagship.messages.items():
        assert message.schema["title"] == name
        assert message.schema["type"] == "object"
        # `$ref`s stay as written; the store resolves them
        assert message.schema["properties"]["job_id"] == {"$ref": "common.json#/$defs/JobId"}
        assert flagship.schema_file(message) == flagship.root / "schemas" / message.schema_path.name
    documents = {path.name for path in flagship.schemas.documents}
    assert documents == {
        "start.json",
        "start_success.json",
        "update.json",
        "finished.json",
        "stop.json",
        "common.json",
    }


def test_flagship_services(flagship: Spec) -> None:
    server, worker = flagship.services["server"], flagship.services["worker"]
    assert server.publishes == ("Start", "Stop")
    assert dict(server.consumes) == {"job-status": ("StartSuccess", "Update", "Finished")}
    assert worker.publishes == ("StartSuccess", "Update", "Finished")
    assert dict(worker.consumes) == {"jobs.ready": ("Start",), "job-control": ("Stop",)}
    assert flagship.codegen is not None
    assert flagship.codegen.package == "jobs_contracts"
    assert flagship.codegen.out == Path("src/jobs_contracts")
    assert flagship.version == 1


def test_flagship_objects_know_where_they_are_written(flagship: Spec) -> None:
    text = flagship.path.read_text(encoding="utf-8")
    ready = flagship.queues["jobs.ready"]
    assert ready.locs.where.line == line_of(text, "  jobs.ready:")
    limits = flagship.policies["jobs-ready"]
    assert limits.locs.where.line == line_of(text, "  jobs-ready:")
    assert limits.locs.of("delivery_limit").line == line_of(text, "delivery_limit: 5")
    stop = flagship.messages["Stop"]
    assert stop.locs.of("schema").line == line_of(text, "schemas/stop.json")
    worker = flagship.services["worker"]
    assert worker.locs.of("consumes.job-control.0").line == line_of(text, "job-control: [Stop]")


def test_relative_paths_are_taken_from_the_spec_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    copy_flagship(project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec, diagnostics = read(Path("..") / "project" / "topology.yaml")
    assert diagnostics == []
    assert spec is not None
    assert spec.messages["Start"].schema["title"] == "Start"


def test_the_model_is_frozen(flagship: Spec) -> None:
    queue = flagship.queues["jobs.ready"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        queue.durable = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        queue.arguments["x-delivery-limit"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        flagship.queues["new"] = queue  # type: ignore[index]
    assert dataclasses.replace(queue, durable=False) != queue
