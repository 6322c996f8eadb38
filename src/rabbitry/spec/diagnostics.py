"""Diagnostics: what ``rabbitry check`` reports, with their codes as data.

Each code has a fixed severity and a one-line summary (``CODES``); a
``Diagnostic`` is one finding at one place, saying what is wrong and what to
do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rabbitry.spec.model import Location

__all__ = ["CODES", "Code", "Diagnostic", "Severity", "did_you_mean"]


class Severity(StrEnum):
    """How bad a finding is: an ``error`` fails ``check``, a ``warning`` fails it under
    ``--strict``, an ``info`` is advice that never fails it."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Code(StrEnum):
    # reading the file
    FILE = "file"
    YAML = "yaml"
    DUPLICATE_KEY = "duplicate-key"
    # shape of the spec
    VERSION = "version"
    UNKNOWN_KEY = "unknown-key"
    MISSING_KEY = "missing-key"
    WRONG_TYPE = "wrong-type"
    BAD_VALUE = "bad-value"
    BAD_NAME = "bad-name"
    RESERVED_NAME = "reserved-name"
    NAME_TOO_LONG = "name-too-long"
    # arguments
    ARGUMENT_TYPE = "argument-type"
    SUGAR_CONFLICT = "sugar-conflict"
    QUEUE_TYPE_CONFLICT = "queue-type-conflict"
    # references
    UNKNOWN_EXCHANGE = "unknown-exchange"
    UNKNOWN_QUEUE = "unknown-queue"
    UNKNOWN_MESSAGE = "unknown-message"
    UNKNOWN_SERVICE = "unknown-service"
    # bindings and routing
    BINDING_SHAPE = "binding-shape"
    DUPLICATE_BINDING = "duplicate-binding"
    PLACEHOLDER = "placeholder"
    UNROUTABLE = "unroutable"
    UNREACHABLE_CONSUMER = "unreachable-consumer"
    UNROUTED_VALUE = "unrouted-value"
    UNSENDABLE_VALUE = "unsendable-value"
    RUNTIME_QUEUE = "runtime-queue"
    INTERNAL_EXCHANGE = "internal-exchange"
    RETRY = "retry"
    RETRY_CONSUMER = "retry-consumer"
    # schemas
    SCHEMA_FILE = "schema-file"
    SCHEMA_INVALID = "schema-invalid"
    SCHEMA_REF = "schema-ref"
    # warnings
    UNCONSUMED_QUEUE = "unconsumed-queue"
    NO_DEAD_LETTER = "no-dead-letter"
    IGNORED = "ignored"
    DEAD_LETTER_STRATEGY = "dead-letter-strategy"
    RETRY_UNCONSUMED = "retry-unconsumed"
    RETRY_POLICY = "retry-policy"
    # policies
    POLICY_SHAPE = "policy-shape"
    POLICY_KEY = "policy-key"
    POLICY_TARGET = "policy-target"
    POLICY_VERSION = "policy-version"
    POLICY_VERSION_ASSUMED = "policy-version-assumed"
    POLICY_PATTERN = "policy-pattern"
    POLICY_TIE = "policy-tie"
    POLICY_SHADOWED = "policy-shadowed"
    POLICY_OVERRIDE = "policy-override"
    POLICY_SETTABLE = "policy-settable"
    # RabbitMQ 4 (spec.rabbitmq4)
    RABBITMQ_4 = "rabbitmq-4"
    RABBITMQ_REFUSED = "rabbitmq-refused"


@dataclass(frozen=True)
class CodeInfo:
    severity: Severity
    summary: str


_E, _W, _I = Severity.ERROR, Severity.WARNING, Severity.INFO

#: Every code rabbitry reports, its severity and what it means.
CODES: dict[Code, CodeInfo] = {
    Code.FILE: CodeInfo(_E, "the spec file cannot be read"),
    Code.YAML: CodeInfo(_E, "the file is not valid YAML"),
    Code.DUPLICATE_KEY: CodeInfo(_E, "a mapping has the same key twice"),
    Code.VERSION: CodeInfo(_E, "the spec's version is missing or unsupported"),
    Code.UNKNOWN_KEY: CodeInfo(_E, "a key the spec format does not have"),
    Code.MISSING_KEY: CodeInfo(_E, "a required key is missing"),
    Code.WRONG_TYPE: CodeInfo(_E, "a value of the wrong type"),
    Code.BAD_VALUE: CodeInfo(_E, "a value outside the allowed set"),
    Code.RETRY: CodeInfo(_E, "a queue's `retry:` that cannot work as written"),
    Code.BAD_NAME: CodeInfo(_E, "a name that cannot be used"),
    Code.RESERVED_NAME: CodeInfo(_E, "a name RabbitMQ reserves for itself"),
    Code.NAME_TOO_LONG: CodeInfo(_E, "a name over 255 bytes"),
    Code.ARGUMENT_TYPE: CodeInfo(_E, "an x-argument of the wrong type or range"),
    Code.SUGAR_CONFLICT: CodeInfo(_E, "a sugar key contradicts a raw argument"),
    Code.QUEUE_TYPE_CONFLICT: CodeInfo(_E, "a setting the queue's type does not support"),
    Code.UNKNOWN_EXCHANGE: CodeInfo(_E, "an exchange the spec does not declare"),
    Code.UNKNOWN_QUEUE: CodeInfo(_E, "a queue the spec does not declare"),
    Code.UNKNOWN_MESSAGE: CodeInfo(_E, "a message the spec does not declare"),
    Code.UNKNOWN_SERVICE: CodeInfo(_E, "a service the spec does not declare"),
    Code.BINDING_SHAPE: CodeInfo(_E, "a binding whose keys do not fit its exchange"),
    Code.DUPLICATE_BINDING: CodeInfo(_E, "the same binding twice"),
    Code.PLACEHOLDER: CodeInfo(_E, "a {placeholder} the message schema cannot fill"),
    Code.UNROUTABLE: CodeInfo(_E, "a published message that reaches no queue"),
    Code.UNREACHABLE_CONSUMER: CodeInfo(_E, "a consumer waits for a message that cannot arrive"),
    Code.UNROUTED_VALUE: CodeInfo(
        _E, "a value a message field may take (enum, const) with which it reaches no queue"
    ),
    Code.UNSENDABLE_VALUE: CodeInfo(
        _E, "a value a message field may take that cannot fill its routing key or header"
    ),
    Code.RUNTIME_QUEUE: CodeInfo(_E, "a run-time (exclusive) queue that apply would have to own"),
    Code.INTERNAL_EXCHANGE: CodeInfo(_E, "a message published to an internal exchange"),
    Code.RETRY_CONSUMER: CodeInfo(
        _E, "a service consumes a retry queue (consume its queue: the retry queue brings them back)"
    ),
    Code.SCHEMA_FILE: CodeInfo(_E, "a schema file cannot be read or is not JSON"),
    Code.SCHEMA_INVALID: CodeInfo(_E, "a schema is not valid JSON Schema (draft 2020-12)"),
    Code.SCHEMA_REF: CodeInfo(_E, "a schema $ref does not resolve"),
    Code.UNCONSUMED_QUEUE: CodeInfo(_W, "a queue no service consumes"),
    Code.NO_DEAD_LETTER: CodeInfo(
        _W, "a consumed durable queue, or one with `retry:`, with nowhere to dead-letter"
    ),
    Code.IGNORED: CodeInfo(_W, "a setting the broker ignores"),
    Code.DEAD_LETTER_STRATEGY: CodeInfo(_W, "a dead-letter strategy the broker will not honour"),
    Code.RETRY_UNCONSUMED: CodeInfo(
        _W, "a queue with `retry:` that no service consumes: no handler fails, nothing retries"
    ),
    Code.RETRY_POLICY: CodeInfo(
        _W,
        "a policy whose message-ttl (lower: shortens the delay), expires, max-length or "
        "max-length-bytes takes effect on a retry queue (a policy's dead-letter-exchange "
        "does not: the retry queue's argument wins)",
    ),
    Code.POLICY_SHAPE: CodeInfo(_E, "a policy whose keys do not fit together"),
    Code.POLICY_KEY: CodeInfo(_E, "a key the broker refuses in this (operator) policy"),
    Code.POLICY_TARGET: CodeInfo(
        _E, "a policy key that does nothing on what the policy applies to"
    ),
    Code.POLICY_VERSION: CodeInfo(_E, "a policy the spec's RabbitMQ version refuses"),
    Code.POLICY_VERSION_ASSUMED: CodeInfo(
        _W, "a policy that needs a newer RabbitMQ than the spec says it targets (3.10 when unsaid)"
    ),
    Code.POLICY_PATTERN: CodeInfo(_E, "a policy pattern that is not a valid regular expression"),
    Code.POLICY_TIE: CodeInfo(_E, "two policies of equal priority apply to one object"),
    Code.POLICY_SHADOWED: CodeInfo(_W, "a policy that a higher one overrides everywhere"),
    Code.POLICY_OVERRIDE: CodeInfo(_W, "an x-argument that a policy also sets"),
    Code.POLICY_SETTABLE: CodeInfo(
        _I, "an x-argument a policy could set, so that it can change in place"
    ),
    Code.RABBITMQ_4: CodeInfo(
        _W, "a setting RabbitMQ 3.12 or 4.x ignores, changes or refuses (the version is named)"
    ),
    Code.RABBITMQ_REFUSED: CodeInfo(
        _E, "a setting the RabbitMQ the spec targets (`rabbitmq:`), or plan's broker, refuses"
    ),
}


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One finding: where, what is wrong, what to do."""

    location: Location
    code: Code
    message: str
    hint: str = ""

    @property
    def severity(self) -> Severity:
        return CODES[self.code].severity

    def render(self, *, severity: Severity | None = None) -> str:
        """``file:line:col: error: what is wrong (what to do) [code]``."""
        hint = f" ({self.hint})" if self.hint else ""
        sev = severity or self.severity
        return f"{self.location}: {sev}: {self.message}{hint} [{self.code}]"

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.location.file,
            "line": self.location.line,
            "column": self.location.column,
            "severity": str(self.severity),
            "code": str(self.code),
            "message": self.message,
            "hint": self.hint,
        }


def did_you_mean(name: str, candidates: Iterable[str], what: str) -> str:
    """A hint naming the closest candidate, or listing what there is."""
    pool = sorted(set(candidates))
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    if not pool:
        return f"the spec declares no {what}"
    shown = ", ".join(repr(c) for c in pool[:8])
    more = f" and {len(pool) - 8} more" if len(pool) > 8 else ""
    return f"declare it, or use one of: {shown}{more}"
