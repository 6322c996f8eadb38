"""Counterexamples: whole messages valid under one schema and invalid under the other.

A suspect from the rules names a place and candidate values for it.  Each
candidate that the writer's schema allows *there* and the reader's refuses
*there* is placed into whole messages built for the writer's schema
(``Synth``), and a message counts only when the real validators say so: the
same compiled jsonschema-rs validators the runtime uses (``MessageContract``),
accepting it for the writer, refusing it for the reader.  Nothing is reported
as breaking on the rules' word alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from rabbitry.compat._findings import Counterexample, Direction
from rabbitry.compat._schema import Root
from rabbitry.compat._schema_rules import Suspect
from rabbitry.compat._synth import Path, Synth
from rabbitry.messaging.contract import MessageContract, compile_schema

__all__ = ["Judge", "Verified"]

#: Candidates tried per suspect, and messages built around each.
_CANDIDATES = 40
_PER_CANDIDATE = 6
#: Messages of the writer's schema tried against the reader's when no rule pointed anywhere.
_SWEEP = 300


#: Suspects whose fault is whatever the reader's validator says at their place: the values
#: refused there, a place refused whole, combinators and keywords that read their siblings.
_ANY_KEYWORD = frozenset(
    {"values", "false", "anyOf", "oneOf", "not", "if", "contains", "patternProperties"}
    | {"dependentSchemas", "unevaluatedProperties", "unevaluatedItems", "$dynamicRef"}
)


#: jsonschema-rs error kinds whose name is not their keyword's.
_KINDS = {
    "FalseSchema": "false",
    "Constant": "const",
    "OneOfNotValid": "oneOf",
    "OneOfMultipleValid": "oneOf",
}


@dataclass(frozen=True)
class Complaint:
    """One complaint of the reader's validator: where, which keyword, and its words."""

    path: str
    keyword: str
    message: str
    #: The properties it is about: the one missing (``required``), those unexpected
    #: (``additionalProperties``); read from the error's kind, not from its words.
    names: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.path or '/'}: {self.message}"


@dataclass(frozen=True)
class Verified:
    example: Counterexample
    #: Where the reader's validator complained (JSON Pointer).
    path: str
    #: 2: refused only for the suspect's fault; 1: for it among others; 0: for others only.
    score: int = 0
    #: Every place the reader's validator complained about.
    paths: tuple[str, ...] = ()


class Judge:
    """Both sides of one message: its bundled schemas and their real validators."""

    def __init__(self, old: MessageContract, new: MessageContract) -> None:
        self.contracts = {"old": old, "new": new}
        self.roots = {"old": Root(dict(old.schema)), "new": Root(dict(new.schema))}
        # The same compilation as MessageContract's, read here for each error's keyword.
        self._validators = {side: compile_schema(c.schema) for side, c in self.contracts.items()}

    def sides(self, direction: Direction) -> tuple[str, str]:
        return direction.writer, direction.reader

    def faults(self, side: str, instance: Any) -> list[Complaint]:
        validator = self._validators[side]
        if validator.is_valid(instance):
            return []
        return [
            Complaint(_pointer(e.instance_path), _keyword(e), e.message, _names(e))
            for e in validator.iter_errors(instance)
        ]

    def check(
        self, instance: Any, direction: Direction, suspect: Suspect | None = None
    ) -> Verified | None:
        """``instance`` if the writer's validator accepts it and the reader's refuses it.

        With ``suspect``, the complaint quoted is the suspect's own fault (its place and
        keyword) when the reader's validator makes it; the score says whether it does.
        """
        writer, reader = self.sides(direction)
        try:
            if self.contracts[writer].faults(instance):
                return None
            faults = self.faults(reader, instance)
        except Exception:  # a value the validator cannot take
            return None
        if not faults:
            return None
        here = [f for f in faults if suspect is not None and shows(f, suspect)]
        first = here[0] if here else faults[0]
        score = 0 if not here else 2 if len(here) == len(faults) else 1
        example = Counterexample(
            instance, writer, f"{reader} says {first}", first.path, first.keyword
        )
        return Verified(example, first.path, score, tuple(f.path for f in faults))

    def search(self, suspect: Suspect, direction: Direction) -> Verified | None:
        """A verified counterexample for ``suspect``: one refused only for its fault if
        possible, else one refused for it among other faults; never one refused for other
        faults only (that would show a different change than the suspect's)."""
        writer, reader = self.sides(direction)
        root_w, root_r = self.roots[writer], self.roots[reader]
        local = [
            c
            for c in suspect.candidates[:_CANDIDATES]
            if root_w.valid(suspect.a, c) is not False and root_r.valid(suspect.b, c) is not True
        ]
        best: Verified | None = None
        for instance in self._around(root_w, suspect.at, local):
            found = self.check(instance, direction, suspect)
            if found is None or found.score == 0:
                continue
            if found.score == 2:
                return found
            if best is None or found.score > best.score:
                best = found
        return best

    def sweep(
        self, direction: Direction, budget: int = _SWEEP, exclude: Sequence[Path] = ()
    ) -> Verified | None:
        """Any counterexample among messages built for the writer's schema, except one
        refused only at the places ``exclude`` (open content the rules judged)."""
        writer, _ = self.sides(direction)
        root = self.roots[writer]
        for instance in islice(Synth(root).values(root.schema), budget):
            found = self.check(instance, direction)
            if found is not None and not all(
                any(_within(p, place) for place in exclude) for p in found.paths
            ):
                return found
        return None

    def _around(self, root: Root, at: Path, values: list[Any]) -> Iterator[Any]:
        synth = Synth(root)
        for value in values:
            yield from islice(synth.values(root.schema, {at: [value]}), _PER_CANDIDATE)


def shows(fault: Complaint, suspect: Suspect) -> bool:
    """Whether ``fault`` is the one ``suspect`` is about: at its place, with its keyword
    (and, for a property required or not allowed, about that property)."""
    if suspect.keyword == "required":
        return (
            fault.keyword == "required"
            and fault.path == _pointer(suspect.at)
            and suspect.reported[-1:] == fault.names
        )
    if suspect.keyword == "additionalProperties":
        if fault.keyword == "false":
            return fault.path == _pointer(suspect.at)
        return (
            fault.keyword == "additionalProperties"
            and fault.path == _pointer(suspect.at[:-1])
            and suspect.at[-1] in fault.names
        )
    if suspect.keyword == "dependentRequired":
        return fault.keyword in ("dependentRequired", "required") and fault.path == _pointer(
            suspect.at
        )
    if suspect.keyword in _ANY_KEYWORD:
        return _within(fault.path, suspect.at)
    # A keyword of the value itself (a bound, a length, type, enum): complained about there.
    if fault.path != _pointer(suspect.at):
        return False
    return fault.keyword == suspect.keyword or {fault.keyword, suspect.keyword} in (
        {"enum", "const"},
        {"minimum", "exclusiveMinimum"},
        {"maximum", "exclusiveMaximum"},
    )


def _names(error: Any) -> tuple[str, ...]:
    kind = error.kind
    if type(kind).__name__ == "Required":
        return (str(kind.property),)
    if type(kind).__name__ == "AdditionalProperties":
        return tuple(str(name) for name in kind.unexpected)
    return ()


def _keyword(error: Any) -> str:
    """The schema keyword a jsonschema-rs error is about, from its kind (``false`` for a
    false schema; a ``dependentRequired`` violation is a ``required`` one)."""
    kind = type(error.kind).__name__
    return _KINDS.get(kind, kind[:1].lower() + kind[1:])


def _pointer(parts: Sequence[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _within(found: str, place: Path) -> bool:
    pointer = _pointer(place)
    return found == pointer or found.startswith(pointer + "/")
