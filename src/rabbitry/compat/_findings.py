"""What ``compare`` reports: one ``Finding`` per change, with its verdict and evidence."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Change", "Counterexample", "Direction", "Fact", "Finding", "Mode", "Verdict", "show"]


class Mode(StrEnum):
    """Confluent's vocabulary: which readers must understand which writers."""

    #: New consumers read what old publishers send: what is valid under OLD is valid under NEW.
    BACKWARD = "backward"
    #: Old consumers read what new publishers send: what is valid under NEW is valid under OLD.
    FORWARD = "forward"
    #: Both.
    FULL = "full"

    @property
    def directions(self) -> tuple[Direction, ...]:
        if self is Mode.BACKWARD:
            return (Direction.BACKWARD,)
        if self is Mode.FORWARD:
            return (Direction.FORWARD,)
        return (Direction.BACKWARD, Direction.FORWARD)


class Direction(StrEnum):
    """One half of a mode: which side's instances must fit the other side's schema."""

    BACKWARD = "backward"  # OLD's instances under NEW's schema
    FORWARD = "forward"  # NEW's instances under OLD's schema

    @property
    def writer(self) -> str:
        return "old" if self is Direction.BACKWARD else "new"

    @property
    def reader(self) -> str:
        return "new" if self is Direction.BACKWARD else "old"


class Verdict(StrEnum):
    #: Proven: a concrete counterexample, checked with the real validator (or router).
    BREAKING = "breaking"
    #: Not proven safe, and no counterexample found: a person should look.
    UNKNOWN = "unknown"
    #: A change that cannot break a reader or a consumer (an addition, a wider bound, ...).
    COMPATIBLE = "compatible"


#: Aspects whose change the rules do not analyse: a counterexample decides, else unknown.
_NOT_ANALYSED = frozenset(
    {
        "contains",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
        "not",
        "if",
        "unevaluatedProperties",
        "unevaluatedItems",
        "$dynamicRef",
        "$recursiveRef",
    }
)
_BOUND_SIGNS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


@dataclass(frozen=True)
class Change:
    """One constraint as the old and the new schema have it: the fact behind a schema finding.

    ``aspect`` names what is compared — a JSON Schema keyword (``maxLength``,
    ``pattern``, ``type``, ``enum``), a bound (``lower bound``/``upper bound``,
    each side ``{"minimum": 0}`` or ``{"exclusiveMinimum": 0}``), a property
    (``property``: ``required``/``optional``/``not allowed`` on each side, ``of``
    its name), values (``value``: ``allowed``/``not allowed``, ``of`` the values)
    or a place (``anything``, ``additionalProperties``) — and ``old``/``new`` its
    value on each side, ``None`` where a side has no such constraint.  Topology
    findings use ``settings``: ``old``/``new`` map each setting that differs (a
    queue's ``type``, ``argument x-max-length``; a message's ``routing key``) to
    its value on each side.  The sentence is made here once, always old → new,
    whichever direction found it.
    """

    aspect: str
    old: Any
    new: Any
    of: Any = None

    def __str__(self) -> str:
        aspect, old, new = self.aspect, self.old, self.new
        if aspect == "settings":
            return "; ".join(
                f"{name} {setting(old.get(name))} → {setting(new.get(name))}"
                for name in dict.fromkeys([*old, *new])
            )
        if aspect in _NOT_ANALYSED:
            return f"{aspect} {_verb(old, new)} (not analysed)"
        if aspect == "patternProperties":
            return f"patternProperties {_verb(old, new)} (probed by samples)"
        if aspect == "anyOf":
            return f"anyOf {_verb(old, new)}: a value may match none of the options"
        if aspect == "oneOf":
            return (
                f"oneOf {_verb(old, new)}: a value may match none, or more than one, of the options"
            )
        if aspect == "property":
            return f"property {self.of!r}: {old} → {new}"
        if aspect == "value":
            values = list(self.of)
            shown = ", ".join(show(v, 60) for v in values[:6]) + (
                ", ..." if len(values) > 6 else ""
            )
            return f"{'value' if len(values) == 1 else 'values'} {shown}: {old} → {new}"
        if aspect == "anything":
            return f"any value here: {old} → {new}"
        if aspect == "additionalProperties":
            return f"additional properties: {old} → {new}"
        if aspect == "type":
            return f"type: {_types(old)} → {_types(new)}"
        if aspect == "enum":
            return f"allowed values: {_listed(old)} → {_listed(new)}"
        return f"{aspect} {_verb(old, new)}: {_plain(old)} → {_plain(new)}"

    def as_json(self) -> dict[str, Any]:
        return {"aspect": self.aspect, "of": self.of, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class Fact:
    """A constraint as the writer's and the reader's schema have it: a ``Change`` once a
    direction says which side is old (backward: the writer; forward: the reader)."""

    aspect: str
    writer: Any
    reader: Any
    of: Any = None

    def change(self, direction: Direction) -> Change:
        if direction is Direction.BACKWARD:
            return Change(self.aspect, self.writer, self.reader, self.of)
        return Change(self.aspect, self.reader, self.writer, self.of)


def setting(value: Any) -> str:
    """A setting's value as the spec's YAML would say it (``none`` when not set)."""
    if value is None:
        return "none"
    if isinstance(value, str):  # a StrEnum too: its value, not its Python repr
        return repr(str(value))
    if isinstance(value, Mapping):
        return show(dict(value))
    return show(value)


def _magnitude(value: Any) -> float | None:
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def _verb(old: Any, new: Any) -> str:
    if old is None:
        return "added"
    if new is None:
        return "removed"
    before, after = _magnitude(old), _magnitude(new)
    if before is not None and after is not None and before != after:
        return "raised" if after > before else "lowered"
    return "changed"


def _plain(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _BOUND_SIGNS:
        name, number = next(iter(value.items()))
        return f"{_BOUND_SIGNS[name]} {number}"
    if isinstance(value, str):
        return repr(value)
    return show(value, 80)


def _types(value: Any) -> str:
    return "any" if value is None else " or ".join(value) or "nothing"


def _listed(value: Any) -> str:
    if value is None:
        return "any"
    return ", ".join(show(v, 60) for v in value[:6]) + (", ..." if len(value) > 6 else "")


@dataclass(frozen=True)
class Counterexample:
    """A concrete message that shows the break, checked before it is reported.

    For a schema finding: ``instance`` is valid under ``valid_under`` and invalid
    under the other side (``error`` is the real validator's complaint).  For a
    topology finding: ``instance`` is routed by both specs and ``error`` says
    where each sends it.
    """

    instance: Any
    valid_under: str  # "old" | "new"
    error: str = ""
    #: The fault it demonstrates (schema findings): where the other side's validator refuses
    #: it (JSON Pointer) and with which keyword — the finding's own place and constraint.
    path: str | None = None
    keyword: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "valid_under": self.valid_under,
            "error": self.error,
            "fault": None if self.path is None else {"path": self.path, "keyword": self.keyword},
        }


@dataclass(frozen=True)
class Finding:
    verdict: Verdict
    #: What changed: ``message Start``, ``queue jobs.ready``, ``binding jobs.new -> jobs.ready``.
    subject: str
    #: JSON Pointer into the message (schema findings), or "" for the whole subject.
    path: str
    why: str
    #: Which half of the mode found it (schema findings); ``None`` for topology findings.
    direction: Direction | None = None
    counterexample: Counterexample | None = None
    #: The message concerned, if any (``None`` for queues, exchanges, bindings).
    message: str | None = None
    #: What changed, old → new (schema findings the rules pointed at); ``why`` says it.
    change: Change | None = None

    def line(self) -> str:
        """One line: ``breaking: message Start /steps: why [backward]; counterexample: {...}``."""
        where = f"{self.subject} {self.path}" if self.path else self.subject
        text = f"{self.verdict}: {where}: {self.why}"
        if self.direction is not None:
            text += f" [{self.direction}]"
        if self.counterexample is not None:
            example = self.counterexample
            text += (
                f"; counterexample (valid under {example.valid_under}): {show(example.instance)}"
            )
            if example.error:
                text += f" — {example.error}"
        return text

    def as_json(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "subject": self.subject,
            "message": self.message,
            "path": self.path,
            "why": self.why,
            "direction": None if self.direction is None else str(self.direction),
            "change": None if self.change is None else self.change.as_json(),
            "counterexample": None
            if self.counterexample is None
            else self.counterexample.as_json(),
        }


def show(value: Any, limit: int = 400) -> str:
    """Compact JSON for a line of output, shortened in the middle if very long."""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    if len(text) > limit:
        text = text[: limit // 2] + " … " + text[-limit // 2 :]
    return text
