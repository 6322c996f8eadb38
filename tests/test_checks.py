"""``check()``: the flagship is clean, and each fault class is reported at its file and line.

Most cases are one small mutation of the flagship (copied into ``tmp_path``):
the test asserts the code, the line and column computed from the text it
wrote, and that the message and hint say what to do.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import pytest

from rabbitry.check import check, load_spec
from rabbitry.errors import SpecError
from rabbitry.spec import CODES, Code, Severity
from rabbitry.spec._schema_hints import JSON_TYPES, meta_hint
from specs import (
    DRAFT,
    at,
    copy_flagship,
    edit,
    edit_schema,
    line_of,
    object_schema,
    only,
    position_of,
    same_file,
    write_spec,
)


@pytest.fixture
def flagship(tmp_path: Path) -> Path:
    return copy_flagship(tmp_path)


def test_the_flagship_is_clean(flagship: Path) -> None:
    report = check(flagship)
    assert report.diagnostics == ()
    assert report.spec is not None
    assert load_spec(flagship) == report.spec


def test_the_flagship_passes_strict_check(
    flagship: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rabbitry.cli import main  # noqa: PLC0415 - the CLI is exercised in test_cli.py

    with pytest.raises(SystemExit) as exited:
        main(["check", "--strict", str(flagship)])
    assert exited.value.code == 0
    assert "ok" in capsys.readouterr().out


def test_every_code_has_a_severity_and_summary() -> None:
    assert set(CODES) == set(Code)
    assert all(info.summary for info in CODES.values())


# ------------------------------------------------------------- one mutation, one fault


@dataclass(frozen=True)
class Case:
    old: str
    new: str
    code: Code
    #: Text in the mutated file where the diagnostic must point (its start: line and column).
    at: str
    nth: int = 1
    message: tuple[str, ...] = ()
    hint: tuple[str, ...] = ()
    #: Check the column too (else the line only).
    column: bool = True


#: jobs.ready's first line of settings: its limits are a policy's (``_LIMITS``).
_READY = "    type: quorum\n"
_LIMITS = "    dead_letter: jobs.dead\n    delivery_limit: 5\n"
_STATUS = "  job-status:\n    exclusive: true\n    dead_letter: jobs.dead\n"
_PARKING = "  jobs.dead-letters:\n"
_NEW_BINDING = '- {from: jobs.new,     queue: jobs.ready,        key: "job.#"}'
_DEAD_BINDING = "- {from: jobs.dead,    queue: jobs.dead-letters}"
_CONTROL_BINDING = '- {from: jobs.control, queue: job-control,       key: "{job_id}"}'
_START_KEY = 'routing_key: "job.{job_type}"'

CASES = [
    pytest.param(
        Case(
            _NEW_BINDING,
            _NEW_BINDING.replace("jobs.new", "jobs.nwe"),
            Code.UNKNOWN_EXCHANGE,
            "jobs.nwe",
            message=("'jobs.nwe'",),
            hint=("did you mean 'jobs.new'?",),
        ),
        id="unknown-exchange-in-binding",
    ),
    pytest.param(
        Case(
            "exchange: jobs.control",
            "exchange: jobs.contrl",
            Code.UNKNOWN_EXCHANGE,
            "jobs.contrl",
            message=("message 'Stop'", "'jobs.contrl'"),
            hint=("did you mean 'jobs.control'?",),
        ),
        id="unknown-exchange-of-message",
    ),
    pytest.param(
        Case(
            _STATUS,
            _STATUS.replace("jobs.dead", "jobs.ded"),
            Code.UNKNOWN_EXCHANGE,
            "jobs.ded",
            message=("dead_letter",),
            hint=("did you mean 'jobs.dead'?",),
        ),
        id="unknown-dead-letter-exchange",
    ),
    pytest.param(
        Case(
            "consumes: {jobs.ready: [Start]",
            "consumes: {jobs.redy: [Start]",
            Code.UNKNOWN_QUEUE,
            "jobs.redy",
            message=("service 'worker'", "'jobs.redy'"),
            hint=("did you mean 'jobs.ready'?",),
        ),
        id="unknown-queue-consumed",
    ),
    pytest.param(
        Case(
            _DEAD_BINDING,
            _DEAD_BINDING.replace("jobs.dead-letters", "jobs.dead-leters"),
            Code.UNKNOWN_QUEUE,
            "jobs.dead-leters",
            hint=("did you mean 'jobs.dead-letters'?",),
        ),
        id="unknown-queue-bound",
    ),
    pytest.param(
        Case(
            "publishes: [Start, Stop]",
            "publishes: [Start, Stpo]",
            Code.UNKNOWN_MESSAGE,
            "Stpo",
            message=("service 'server'", "'Stpo'"),
            hint=("did you mean 'Stop'?",),
        ),
        id="unknown-message-published",
    ),
    pytest.param(
        Case(
            "[StartSuccess, Update, Finished]}",
            "[StartSuccess, Update, Finsihed]}",
            Code.UNKNOWN_MESSAGE,
            "Finsihed",
            hint=("did you mean 'Finished'?",),
        ),
        id="unknown-message-consumed",
    ),
    pytest.param(
        Case(
            "jobs.dead:    {type: fanout,",
            "jobs.dead:    {type: fanuot,",
            Code.BAD_VALUE,
            "fanuot",
            message=("exchange 'jobs.dead' type 'fanuot'",),
            hint=("did you mean 'fanout'?",),
        ),
        id="bad-exchange-type-typo",
    ),
    pytest.param(
        Case(
            "jobs.dead:    {type: fanout,",
            "jobs.dead:    {type: broadcast,",
            Code.BAD_VALUE,
            "broadcast",
            hint=("direct", "fanout", "topic", "headers"),
        ),
        id="bad-exchange-type",
    ),
    pytest.param(
        Case(
            "type: quorum",
            "type: quorom",
            Code.BAD_VALUE,
            "quorom",
            message=("queue 'jobs.ready' type 'quorom'",),
            hint=("did you mean 'quorum'?",),
        ),
        id="bad-queue-type",
    ),
    pytest.param(
        Case(
            _READY,
            _READY + '    message_ttl: "ten minutes"\n',
            Code.ARGUMENT_TYPE,
            '"ten minutes"',
            message=("message_ttl", "integer", "'ten minutes'"),
            hint=("milliseconds",),
        ),
        id="sugar-argument-of-wrong-type",
    ),
    pytest.param(
        Case(
            _READY,
            _READY + '    arguments: {x-message-ttl: "ten minutes"}\n',
            Code.ARGUMENT_TYPE,
            '"ten minutes"',
            message=("'x-message-ttl'", "integer", "'ten minutes'"),
            hint=("milliseconds",),
        ),
        id="raw-argument-of-wrong-type",
    ),
    pytest.param(
        Case(
            _READY,
            _READY + "    max_length: -1\n",
            Code.ARGUMENT_TYPE,
            "-1",
            message=("max_length", "≥ 0"),
        ),
        id="argument-out-of-range",
    ),
    pytest.param(
        Case(
            _READY,
            _READY + "    message_ttl: 5000\n    arguments: {x-message-ttl: 3000}\n",
            Code.SUGAR_CONFLICT,
            "message_ttl: 5000",
            message=("message_ttl is 5000", "x-message-ttl: 3000"),
            hint=("agree",),
            column=False,
        ),
        id="sugar-contradicts-raw-argument",
    ),
    pytest.param(
        Case(
            _PARKING + "    description:",
            _PARKING + "    delivery_limit: 3\n    description:",
            Code.QUEUE_TYPE_CONFLICT,
            "delivery_limit: 3",
            message=("classic queue 'jobs.dead-letters'", "delivery_limit"),
            hint=("quorum",),
            column=False,
        ),
        id="delivery-limit-on-classic",
    ),
    pytest.param(
        Case(
            _READY,
            _READY + "    max_priority: 5\n",
            Code.QUEUE_TYPE_CONFLICT,
            "max_priority: 5",
            message=("quorum queue 'jobs.ready'", "max_priority"),
            hint=("classic",),
            column=False,
        ),
        id="max-priority-on-quorum",
    ),
    pytest.param(
        Case(
            _READY,
            _READY + "    exclusive: true\n",
            Code.QUEUE_TYPE_CONFLICT,
            "exclusive: true",
            message=("quorum queue 'jobs.ready'", "exclusive"),
            hint=("remove `exclusive`",),
            column=False,
        ),
        id="exclusive-quorum",
    ),
    pytest.param(
        Case(
            "  jobs.dead:    {type: fanout,",
            "  amq.x: {type: fanout}\n  jobs.dead:    {type: fanout,",
            Code.RESERVED_NAME,
            "amq.x",
            message=("exchange name 'amq.x'",),
            hint=("without the 'amq.' prefix",),
        ),
        id="reserved-exchange-name",
    ),
    pytest.param(
        Case(
            _PARKING,
            "  amq.q: {}\n" + _PARKING,
            Code.RESERVED_NAME,
            "amq.q",
            message=("queue name 'amq.q'",),
            hint=("without the 'amq.' prefix",),
        ),
        id="reserved-queue-name",
    ),
    pytest.param(
        Case(
            _DEAD_BINDING,
            _DEAD_BINDING + '\n  - {from: "", queue: jobs.dead-letters, key: parked}',
            Code.RESERVED_NAME,
            '""',
            message=("default exchange",),
            hint=("bind from a declared exchange",),
        ),
        id="binding-from-default-exchange",
    ),
    pytest.param(
        Case(
            _PARKING,
            "  " + "é" * 128 + ": {}\n" + _PARKING,
            Code.NAME_TOO_LONG,
            "é" * 128,
            message=("256 bytes", "255"),
            hint=("shorten",),
        ),
        id="queue-name-of-256-utf8-bytes",
    ),
    pytest.param(
        Case(
            "  jobs.dead:    {type: fanout,",
            "  " + "x" * 256 + ": {type: fanout}\n  jobs.dead:    {type: fanout,",
            Code.NAME_TOO_LONG,
            "x" * 256,
            message=("exchange name is 256 bytes",),
        ),
        id="exchange-name-of-256-bytes",
    ),
    pytest.param(
        Case(
            _START_KEY,
            'routing_key: "job.{kind}"',
            Code.PLACEHOLDER,
            '"job.{kind}"',
            message=("{kind}", "not a property"),
            hint=("required string or integer property",),
        ),
        id="placeholder-not-a-property",
    ),
    pytest.param(
        Case(
            _START_KEY,
            'routing_key: "job-{job_type}"',
            Code.PLACEHOLDER,
            '"job-{job_type}"',
            message=("'job-{job_type}' is not a placeholder word",),
            hint=("whole word between dots",),
        ),
        id="placeholder-not-a-whole-word",
    ),
    pytest.param(
        Case(
            _START_KEY,
            'routing_key: "job.{job type}"',
            Code.PLACEHOLDER,
            '"job.{job type}"',
            message=("not a placeholder word",),
        ),
        id="placeholder-not-an-identifier",
    ),
    pytest.param(
        Case(
            _START_KEY,
            'routing_key: "task.{job_type}"',
            Code.UNROUTABLE,
            '"task.{job_type}"',
            message=("'Start'", "'jobs.new'", "reaches no queue"),
            hint=("bind a queue",),
        ),
        id="published-message-reaches-no-queue",
    ),
    pytest.param(
        Case(
            "consumes: {jobs.ready: [Start], job-control: [Stop]}",
            "consumes: {jobs.ready: [Start, Stop], job-control: [Stop]}",
            Code.UNREACHABLE_CONSUMER,
            "Stop], job-control",
            message=("service 'worker' expects 'Stop' on queue 'jobs.ready'",),
            hint=("'job-control'",),
        ),
        id="consumer-waits-for-a-message-that-cannot-arrive",
    ),
    pytest.param(
        Case(
            _CONTROL_BINDING,
            _CONTROL_BINDING.replace('"{job_id}"', "all"),
            Code.RUNTIME_QUEUE,
            "{from: jobs.control",
            message=("'job-control' is exclusive", "fixed key"),
            hint=("'{param}' key",),
        ),
        id="exclusive-queue-bound-with-a-fixed-key",
    ),
    pytest.param(
        Case(
            _READY,
            _READY + "    dead_leter: jobs.dead\n",
            Code.UNKNOWN_KEY,
            "dead_leter",
            message=("queue 'jobs.ready' has no key 'dead_leter'",),
            hint=("did you mean 'dead_letter'?",),
        ),
        id="unknown-key",
    ),
    pytest.param(
        Case(
            "services:\n",
            "services:\n  gateway: {publishs: [Start]}\n",
            Code.UNKNOWN_KEY,
            "publishs",
            hint=("did you mean 'publishes'?",),
        ),
        id="unknown-key-of-service",
    ),
    pytest.param(
        Case("version: 1\n", "version: 2\n", Code.VERSION, "2\n", message=("2",), hint=("1",)),
        id="version-2",
    ),
    pytest.param(
        Case(
            "version: 1\n",
            'version: "1"\n',
            Code.VERSION,
            '"1"',
            message=("'1'",),
        ),
        id="version-as-a-string",
    ),
    pytest.param(
        Case(
            "codegen: {package: jobs_contracts,",
            "codegen: {package: jobs-contracts,",
            Code.BAD_NAME,
            "jobs-contracts",
            hint=("jobs_contracts",),
        ),
        id="codegen-package-not-a-python-name",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_one_fault_is_reported_at_its_place(flagship: Path, case: Case) -> None:
    text = edit(flagship, case.old, case.new)
    report = check(flagship)
    found = only(report, case.code)
    assert found.location.file == str(flagship)
    line, column = position_of(text, case.at, case.nth)
    assert found.location.line == line, found.render()
    if case.column:
        assert found.location.column == column, found.render()
    for fragment in case.message:
        assert fragment in found.message
    for fragment in case.hint:
        assert fragment in found.hint
    assert found.severity is Severity.ERROR
    assert report.errors  # so `rabbitry check` exits 1


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("type: quorum", "type: quorom"),  # no "delivery_limit needs quorum" on top
        (_READY, _READY + "    exclusive: true\n"),  # no "cannot be not durable" on top
        (_NEW_BINDING, _NEW_BINDING[:-1] + ", descripton: x}"),  # no unroutable Start
        (_LIMITS, _LIMITS.replace("dead_letter:", "dead_leter:")),  # in the policy
    ],
)
def test_a_fault_does_not_drag_others_after_it(flagship: Path, old: str, new: str) -> None:
    edit(flagship, old, new)
    report = check(flagship)
    assert len(report.errors) == 1, "\n".join(d.render() for d in report.diagnostics)


def test_a_duplicate_binding_names_the_first(flagship: Path) -> None:
    text = edit(
        flagship, _DEAD_BINDING, _DEAD_BINDING + "\n  - {from: jobs.dead, queue: jobs.dead-letters}"
    )
    found = only(check(flagship), Code.DUPLICATE_BINDING)
    assert (found.location.line, found.location.column) == position_of(
        text, "{from: jobs.dead, queue"
    )
    assert f"line {line_of(text, _DEAD_BINDING)}" in found.message
    assert "remove one" in found.hint


def test_the_same_binding_with_other_headers_is_not_a_duplicate(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        version: 1
        exchanges: {h: {type: headers}}
        queues: {q: {}}
        bindings:
          - {from: h, queue: q, headers: {a: [1, 2]}}
          - {from: h, queue: q, headers: {a: [1, 3]}}
          - {from: h, queue: q, headers: {a: [1, 2]}}
        """,
    )
    text = spec.read_text(encoding="utf-8")
    found = only(check(spec), Code.DUPLICATE_BINDING)
    assert found.location.line == line_of(text, "{a: [1, 2]}", 2)
    assert f"line {line_of(text, '{a: [1, 2]}')}" in found.message


def test_a_duplicate_yaml_key_names_the_first(flagship: Path) -> None:
    text = edit(
        flagship, "    delivery_limit: 5\n", "    delivery_limit: 5\n    delivery_limit: 6\n"
    )
    report = check(flagship)
    found = only(report, Code.DUPLICATE_KEY)
    assert (found.location.line, found.location.column) == position_of(text, "delivery_limit: 6")
    assert f"first at line {line_of(text, 'delivery_limit: 5')}" in found.message
    assert "'delivery_limit'" in found.message
    assert report.spec is not None
    assert report.spec.policies["jobs-ready"].definition["delivery-limit"] == 6


def test_the_bound_name_is_counted_in_utf8_bytes_not_characters(flagship: Path) -> None:
    edit(flagship, _PARKING, "  " + "é" * 127 + ": {}\n  " + "q" * 255 + ": {}\n" + _PARKING)
    report = check(flagship)
    assert at(report, Code.NAME_TOO_LONG) == []


def test_missing_version_is_reported_at_the_top(flagship: Path) -> None:
    edit(flagship, "version: 1\n", "")
    found = only(check(flagship), Code.VERSION)
    assert (found.location.line, found.location.column) == (1, 1)
    assert "version: 1" in found.hint


def test_match_and_headers_on_a_topic_binding_are_each_reported(flagship: Path) -> None:
    text = edit(flagship, _NEW_BINDING, _NEW_BINDING[:-1] + ", match: all, headers: {a: 1}}")
    found = at(check(flagship), Code.BINDING_SHAPE)
    assert [(d.location.line, d.location.column) for d in found] == [
        position_of(text, "match: all"),
        position_of(text, "headers: {a: 1}"),
    ]
    assert "`match` is for headers exchanges; 'jobs.new' is topic" in found[0].message
    assert "`headers`" in found[1].message
    assert all("remove it" in d.hint for d in found)


# ------------------------------------------------------------------- schema faults


def _stop_key_line(text: str) -> int:
    """The line of Stop's routing key: the last of the `{job_id}` keys."""
    return line_of(text, 'routing_key: "{job_id}"', 4)


def test_placeholder_not_required(flagship: Path) -> None:
    text = flagship.read_text(encoding="utf-8")
    edit_schema(flagship, "start.json", '"job_id",\n    "job_type",', '"job_id",')
    found = only(check(flagship), Code.PLACEHOLDER)
    assert found.location.line == line_of(text, _START_KEY)
    assert "{job_type} is not a required property" in found.message


def test_placeholder_not_string_or_integer(flagship: Path) -> None:
    text = flagship.read_text(encoding="utf-8")
    edit_schema(
        flagship,
        "start.json",
        '"type": "string",\n      "pattern"',
        '"type": "number",\n      "pattern"',
    )
    found = only(check(flagship), Code.PLACEHOLDER)
    assert found.location.line == line_of(text, _START_KEY)
    assert "has type 'number'" in found.message
    assert "string or integer" in found.hint


def test_placeholder_through_a_ref_to_common_json(flagship: Path) -> None:
    text = flagship.read_text(encoding="utf-8")
    edit_schema(
        flagship, "common.json", '"$defs": {', '"$defs": {\n    "Count": {"type": "number"},'
    )
    edit_schema(flagship, "stop.json", "common.json#/$defs/JobId", "common.json#/$defs/Count")
    found = only(check(flagship), Code.PLACEHOLDER)
    assert found.location.line == _stop_key_line(text)
    assert "message 'Stop': placeholder {job_id} has type 'number'" in found.message


def test_placeholder_through_a_ref_to_an_object(flagship: Path) -> None:
    text = flagship.read_text(encoding="utf-8")
    edit_schema(
        flagship, "common.json", '"$defs": {', '"$defs": {\n    "Blob": {"type": "object"},'
    )
    edit_schema(flagship, "stop.json", "common.json#/$defs/JobId", "common.json#/$defs/Blob")
    found = only(check(flagship), Code.PLACEHOLDER)
    assert found.location.line == _stop_key_line(text)
    assert "'object'" in found.message


def test_a_placeholder_of_an_enum_of_words_is_fine(flagship: Path) -> None:
    edit_schema(
        flagship,
        "start.json",
        '"type": "string",\n      "pattern": "^[a-z][a-z0-9_-]{0,62}$"',
        '"enum": ["render", "encode"]',
    )
    assert check(flagship).diagnostics == ()


@pytest.mark.parametrize(
    "case",
    [
        (
            '"maxLength": 1024',
            '"maxLength": "x"',
            '"maxLength": "x"',
            Code.SCHEMA_INVALID,
            ("/properties/reason/maxLength",),
        ),
        (
            '"type": "string",',
            '"type": "strin",',
            '"strin"',
            Code.SCHEMA_INVALID,
            ("/properties/reason/type",),
        ),
        (
            "common.json#/$defs/Timestamp",
            "common.json#/$defs/Timestmp",
            "Timestmp",
            Code.SCHEMA_REF,
            ("/properties/requested_at/$ref", "does not resolve"),
        ),
        (
            "common.json#/$defs/Timestamp",
            "https://schemas.example.com/common.json#/$defs/Timestamp",
            "schemas.example.com",
            Code.SCHEMA_REF,
            ("/properties/requested_at/$ref", "remote"),
        ),
        (
            '"$schema": "https://json-schema.org/draft/2020-12/schema"',
            '"$schema": "http://json-schema.org/draft-04/schema#"',
            "draft-04",
            Code.SCHEMA_INVALID,
            ("draft-04", "not draft 2020-12"),
        ),
        (
            '"title": "Stop",',
            '"title": "Stop"',
            '"description"',
            Code.SCHEMA_FILE,
            ("not JSON",),
        ),
        (
            "common.json#/$defs/JobId",
            "missing.json#/$defs/JobId",
            "missing.json",
            Code.SCHEMA_FILE,
            ("missing.json", "does not exist"),
        ),
    ],
)
def test_a_schema_fault_is_located_in_the_schema_file(
    flagship: Path, case: tuple[str, str, str, Code, tuple[str, ...]]
) -> None:
    old, new, needle, code, fragments = case
    path, text = edit_schema(flagship, "stop.json", old, new)
    report = check(flagship)
    found = only(report, code)
    assert same_file(found.location.file, path)
    assert found.location.line == line_of(text, needle)
    for fragment in fragments:
        assert fragment in found.message
    assert found.hint


def test_a_missing_schema_file_is_located_at_the_spec_line(flagship: Path) -> None:
    text = edit(flagship, "schema: schemas/stop.json", "schema: schemas/stopp.json")
    found = only(check(flagship), Code.SCHEMA_FILE)
    assert found.location.file == str(flagship)
    assert (found.location.line, found.location.column) == position_of(text, "schemas/stopp.json")
    assert "does not exist" in found.message
    assert "check the path" in found.hint


# ----------------------------------------------------------------------- warnings


def test_a_queue_nobody_consumes_is_a_warning(flagship: Path) -> None:
    text = edit(flagship, _PARKING, "  lonely: {}\n" + _PARKING)
    report = check(flagship)
    found = only(report, Code.UNCONSUMED_QUEUE)
    assert found.severity is Severity.WARNING
    assert (found.location.line, found.location.column) == position_of(text, "lonely")
    assert "'lonely'" in found.message
    assert "consumes" in found.hint
    assert report.errors == ()


def test_a_consumed_durable_queue_without_dead_letter_is_a_warning(flagship: Path) -> None:
    text = edit(flagship, _LIMITS, "    delivery_limit: 5\n")
    report = check(flagship)
    found = only(report, Code.NO_DEAD_LETTER)
    assert found.severity is Severity.WARNING
    assert found.location.line == line_of(text, "  jobs.ready:")
    assert "dead_letter" in found.hint
    assert report.errors == ()


def test_a_consumed_exclusive_queue_without_dead_letter_is_not_warned(flagship: Path) -> None:
    edit(
        flagship,
        "  job-status:\n    exclusive: true\n    dead_letter: jobs.dead\n",
        "  job-status:\n    exclusive: true\n",
    )
    assert check(flagship).diagnostics == ()


def test_a_dead_letter_parking_queue_is_not_warned_but_a_plain_one_is(flagship: Path) -> None:
    # In the flagship jobs.dead-letters is bound only from jobs.dead, a dead-letter
    # exchange, and nobody consumes it: it is read by people, so no warning.
    assert at(check(flagship), Code.UNCONSUMED_QUEUE) == []
    text = edit(
        flagship, _DEAD_BINDING, _DEAD_BINDING + "\n  - {from: jobs.new, queue: jobs.dead-letters}"
    )
    found = only(check(flagship), Code.UNCONSUMED_QUEUE)
    assert found.location.line == line_of(text, _PARKING.rstrip("\n"))


def test_a_binding_key_on_a_fanout_exchange_is_ignored_and_said_so(flagship: Path) -> None:
    text = edit(flagship, _DEAD_BINDING, _DEAD_BINDING[:-1] + ", key: everything}")
    found = only(check(flagship), Code.IGNORED)
    assert found.severity is Severity.WARNING
    assert (found.location.line, found.location.column) == position_of(text, "everything")


def test_at_least_once_dead_lettering_without_reject_publish(flagship: Path) -> None:
    text = edit(flagship, _READY, _READY + "    dead_letter_strategy: at-least-once\n")
    found = only(check(flagship), Code.DEAD_LETTER_STRATEGY)
    assert found.location.line == line_of(text, "at-least-once")
    assert "overflow: reject-publish" in found.hint
    edit(flagship, "at-least-once\n", "at-least-once\n    overflow: reject-publish\n")
    assert check(flagship).diagnostics == ()


def test_publishing_to_an_internal_exchange(flagship: Path) -> None:
    text = edit(
        flagship, "jobs.control: {type: topic,", "jobs.control: {type: topic, internal: true,"
    )
    found = only(check(flagship), Code.INTERNAL_EXCHANGE)
    assert found.location.line == line_of(text, "exchange: jobs.control")


# ---------------------------------------------------------------- many faults at once


def test_every_fault_of_a_file_is_reported_sorted_by_line(flagship: Path) -> None:
    edit(flagship, "version: 1\n", "version: 2\n")
    edit(flagship, "jobs.dead:    {type: fanout,", "jobs.dead:    {type: fanuot,")
    edit(flagship, _READY, _READY + '    message_ttl: "ten minutes"\n')
    edit(
        flagship, _DEAD_BINDING, _DEAD_BINDING + "\n  - {from: jobs.dead, queue: jobs.dead-letters}"
    )
    text = edit(flagship, "publishes: [Start, Stop]", "publishes: [Start, Stpo]")
    report = check(flagship)
    expected = [
        (Code.VERSION, line_of(text, "version: 2")),
        (Code.BAD_VALUE, line_of(text, "fanuot")),
        (Code.ARGUMENT_TYPE, line_of(text, "ten minutes")),
        (Code.DUPLICATE_BINDING, line_of(text, "{from: jobs.dead, queue")),
        (Code.UNKNOWN_MESSAGE, line_of(text, "Stpo")),
    ]
    assert [(d.code, d.location.line) for d in report.diagnostics] == expected


def test_faults_in_spec_and_schemas_are_all_reported(flagship: Path) -> None:
    edit(flagship, "type: quorum", "type: quorom")
    edit_schema(flagship, "stop.json", '"maxLength": 1024', '"maxLength": "x"')
    edit_schema(flagship, "update.json", "common.json#/$defs/Timestamp", "#/nowhere")
    report = check(flagship)
    assert sorted(d.code for d in report.diagnostics) == sorted(
        [Code.BAD_VALUE, Code.SCHEMA_INVALID, Code.SCHEMA_REF]
    )
    assert list(report.diagnostics) == sorted(report.diagnostics)


def test_load_spec_raises_with_every_error(flagship: Path) -> None:
    edit(flagship, "version: 1\n", "version: 2\n")
    edit(flagship, "publishes: [Start, Stop]", "publishes: [Start, Stpo]")
    with pytest.raises(SpecError) as raised:
        load_spec(flagship)
    assert [d.code for d in raised.value.diagnostics] == [Code.VERSION, Code.UNKNOWN_MESSAGE]
    assert "(and 1 more)" in str(raised.value)


def test_a_missing_spec_file_is_one_diagnostic(tmp_path: Path) -> None:
    report = check(tmp_path / "nope.yaml")
    assert report.spec is None
    found = only(report, Code.FILE)
    assert str(tmp_path / "nope.yaml") in found.message
    assert "-f" in found.hint


def test_a_yaml_syntax_error_is_one_diagnostic_at_its_line(flagship: Path) -> None:
    text = edit(flagship, "    delivery_limit: 5\n", "    delivery_limit: 5\n   oops: [\n")
    report = check(flagship)
    assert report.spec is None
    found = only(report, Code.YAML)
    assert found.location.line >= line_of(text, "oops")


# ----------------------------------------------------------- other shapes, clean


def test_a_headers_exchange_spec_passes_clean(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        version: 1
        exchanges:
          docs: {type: headers}
          dlx: {type: fanout}
        queues:
          pdf: {dead_letter: dlx}
          images: {dead_letter: dlx}
          parked: {}
        bindings:
          - {from: docs, queue: pdf, match: all, headers: {format: pdf}}
          - {from: docs, queue: images, match: any, headers: {format: png, kind: image}}
          - {from: dlx, queue: parked}
        messages:
          Document:
            schema: schemas/document.json
            exchange: docs
            headers: {format: "{format}", source: upload}
        services:
          converter: {consumes: {pdf: [Document], images: [Document]}}
          uploader: {publishes: [Document]}
        """,
        {
            "schemas/document.json": object_schema(
                {"format": {"enum": ["pdf", "png"]}, "size": {"type": "integer"}}, ["format"]
            )
        },
    )
    assert check(spec).diagnostics == ()


def test_headers_faults_are_located(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        version: 1
        exchanges:
          docs: {type: headers}
        queues:
          pdf: {}
        bindings:
          - {from: docs, queue: pdf, match: some, headers: {format: pdf}}
        messages:
          Document: {schema: schemas/d.json, exchange: docs, headers: {format: "{size}"}}
        services:
          converter: {publishes: [Document], consumes: {pdf: [Document]}}
        """,
        {"schemas/d.json": object_schema({"size": {"type": "integer"}})},
    )
    text = spec.read_text(encoding="utf-8")
    report = check(spec)
    bad = only(report, Code.BAD_VALUE)
    assert (bad.location.line, bad.location.column) == position_of(text, "some")
    assert "all, any" in bad.hint
    placeholder = only(report, Code.PLACEHOLDER)
    assert placeholder.location.line == line_of(text, '"{size}"')
    assert "{size} is not a required property" in placeholder.message


def test_an_exchange_to_exchange_spec_passes_clean(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        version: 1
        exchanges:
          ingress: {type: topic, alternate_exchange: unrouted}
          billing: {type: direct}
          unrouted: {type: fanout}
          dlx: {type: fanout}
        queues:
          invoices: {type: quorum, dead_letter: dlx, delivery_limit: 3}
          leftovers: {dead_letter: dlx}
          parked: {}
        bindings:
          - {from: ingress, exchange: billing, key: "billing.#"}
          - {from: billing, queue: invoices, key: billing.invoice}
          - {from: unrouted, queue: leftovers}
          - {from: dlx, queue: parked}
        messages:
          Invoice: {schema: schemas/invoice.json, exchange: ingress, routing_key: billing.invoice}
          Audit: {schema: schemas/audit.json, exchange: ingress, routing_key: "audit.{kind}"}
        services:
          billing: {publishes: [Invoice], consumes: {invoices: [Invoice]}}
          janitor: {publishes: [Audit], consumes: {leftovers: [Audit]}}
        """,
        {
            "schemas/invoice.json": object_schema({"id": {"type": "integer"}}, ["id"]),
            "schemas/audit.json": object_schema({"kind": {"type": "string"}}, ["kind"]),
        },
    )
    report = check(spec)
    assert report.diagnostics == ()
    # and the routing check does look through the exchange-to-exchange hop:
    text = edit(spec, "consumes: {invoices: [Invoice]}", "consumes: {invoices: [Invoice, Audit]}")
    found = only(check(spec), Code.UNREACHABLE_CONSUMER)
    assert found.location.line == line_of(text, "[Invoice, Audit]")
    assert "'leftovers'" in found.hint


def test_an_unknown_exchange_destination_of_an_exchange_binding(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        version: 1
        exchanges:
          a: {type: topic}
          billing: {type: direct}
        bindings:
          - {from: a, exchange: biling, key: "#"}
        """,
    )
    text = spec.read_text(encoding="utf-8")
    found = only(check(spec), Code.UNKNOWN_EXCHANGE)
    assert (found.location.line, found.location.column) == position_of(text, "biling")
    assert "did you mean 'billing'?" in found.hint


def test_a_binding_needs_exactly_one_destination(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        version: 1
        exchanges:
          a: {type: topic}
        queues:
          q: {}
        bindings:
          - {from: a, queue: q, exchange: a}
          - {from: a}
        """,
    )
    text = spec.read_text(encoding="utf-8")
    found = at(check(spec), Code.BINDING_SHAPE)
    assert [d.location.line for d in found] == [
        line_of(text, "exchange: a}"),
        line_of(text, "- {from: a}"),
    ]
    assert all("exactly one of `queue` and `exchange`" in d.message for d in found)


def test_the_default_exchange_routes_by_queue_name(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        version: 1
        queues:
          tasks: {dead_letter: ""}
        messages:
          Task: {schema: schemas/task.json, exchange: "", routing_key: tasks}
        services:
          w: {publishes: [Task], consumes: {tasks: [Task]}}
        """,
        {"schemas/task.json": {"$schema": DRAFT, "type": "object"}},
    )
    assert check(spec).diagnostics == ()
    edit(spec, "routing_key: tasks", "routing_key: taks")
    assert Code.UNROUTABLE in [d.code for d in check(spec).diagnostics]


def test_a_misspelt_message_key_is_one_error_not_its_consequences(tmp_path: Path) -> None:
    # `routingkey:` leaves the message with no key; that it then reaches no queue and
    # that its consumer never sees it are consequences of the typo, not faults of their own.
    spec = write_spec(
        tmp_path,
        """
        version: 1
        exchanges:
          jobs: {type: topic}
        queues:
          work: {dead_letter: ""}
        bindings:
          - {from: jobs, queue: work, key: "job.*"}
        messages:
          Job: {schema: schemas/j.json, exchange: jobs, routing_key: job.new}
        services:
          s: {publishes: [Job], consumes: {work: [Job]}}
        """,
        {"schemas/j.json": {"$schema": DRAFT, "type": "object"}},
    )
    assert check(spec).diagnostics == ()
    text = edit(spec, "routing_key: job.new", "routingkey: job.new")
    report = check(spec)
    assert [(d.code, d.location.line) for d in report.diagnostics] == [
        (Code.UNKNOWN_KEY, line_of(text, "routingkey"))
    ]
    assert report.diagnostics[0].hint == "did you mean 'routing_key'?"


_TYPO_SPEC = """
    version: 1
    exchanges:
      jobs: {type: topic}
    queues:
      work: {dead_letter: ""}
    bindings:
      - {from: jobs, queue: work, key: "job.*"}
    messages:
      Job: {schema: schemas/j.json, exchange: jobs, routing_key: job.new}
    services:
      s: {publishes: [Job], consumes: {work: [Job]}}
    """


@pytest.mark.parametrize(
    ("typed", "hint"),
    [
        ("strng", "did you mean 'string'?"),
        (["intger", "null"], "did you mean 'integer'?"),
        ("bool", "did you mean 'boolean'?"),
    ],
)
def test_a_misspelt_schema_type_offers_the_type_meant(
    tmp_path: Path, typed: object, hint: str
) -> None:
    def schema(a: object) -> dict[str, object]:
        # a property named `type` is a name, not the keyword: it never gets the hint
        properties = {"a": {"type": a}, "type": {"type": "string"}}
        return {"$schema": DRAFT, "type": "object", "properties": properties}

    clean = write_spec(tmp_path, _TYPO_SPEC, {"schemas/j.json": schema("string")})
    assert check(clean).diagnostics == ()
    spec = write_spec(tmp_path, _TYPO_SPEC, {"schemas/j.json": schema(typed)})
    (found,) = check(spec).diagnostics
    assert (found.code, found.hint) == (Code.SCHEMA_INVALID, hint)
    assert same_file(found.location.file, spec.parent / "schemas" / "j.json")


def test_a_dangling_ref_offers_the_definition_meant(tmp_path: Path) -> None:
    local = {
        "$schema": DRAFT,
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/Thing"}, "b": {"$ref": "other.json#/$defs/Part"}},
        "$defs": {"Thing": {"type": "string"}},
    }
    other = {"$schema": DRAFT, "$defs": {"Part": {"type": "integer"}}}
    spec = write_spec(tmp_path, _TYPO_SPEC, {"schemas/j.json": local, "schemas/other.json": other})
    assert check(spec).diagnostics == ()
    edit_schema(spec, "j.json", '"#/$defs/Thing"', '"#/$defs/Thng"')
    (found,) = check(spec).diagnostics
    assert (found.code, found.hint) == (Code.SCHEMA_REF, "did you mean '#/$defs/Thing'?")
    edit_schema(spec, "j.json", '"#/$defs/Thng"', '"#/$defs/Thing"')
    edit_schema(spec, "j.json", '"other.json#/$defs/Part"', '"other.json#/$def/Prt"')
    (found,) = check(spec).diagnostics
    assert (found.code, found.hint) == (Code.SCHEMA_REF, "did you mean 'other.json#/$defs/Prt'?")


def test_every_one_letter_slip_of_a_schema_type_is_mended() -> None:
    # The whole input space: each JSON type with one letter dropped, swapped with the
    # next, or replaced by any letter; the hint must name the type that was meant.
    slips = 0
    for meant in JSON_TYPES:
        for i in range(len(meant)):
            typos = {
                meant[:i] + meant[i + 1 :],
                meant[:i] + meant[i + 1 : i + 2] + meant[i] + meant[i + 2 :],
            }
            typos |= {meant[:i] + c + meant[i + 1 :] for c in string.ascii_lowercase}
            for typo in typos - set(JSON_TYPES):
                slips += 1
                assert meta_hint(("properties", "a", "type"), typo) == f"did you mean {meant!r}?"
    assert slips > 1000
