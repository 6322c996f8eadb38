"""What ``compare`` reports: one ``Finding`` per change, with its verdict and evidence."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Counterexample", "Direction", "Finding", "Mode", "Verdict", "show"]


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

    def as_json(self) -> dict[str, Any]:
        return {"instance": self.instance, "valid_under": self.valid_under, "error": self.error}


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
