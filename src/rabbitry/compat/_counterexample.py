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
from rabbitry.messaging.contract import MessageContract

__all__ = ["Judge", "Verified"]

#: Candidates tried per suspect, and messages built around each.
_CANDIDATES = 40
_PER_CANDIDATE = 6
#: Messages of the writer's schema tried against the reader's when no rule pointed anywhere.
_SWEEP = 300


@dataclass(frozen=True)
class Verified:
    example: Counterexample
    #: Where the reader's validator complained (JSON Pointer).
    path: str
    #: 2: refused only at the suspect's place; 1: there among others; 0: elsewhere.
    score: int = 0
    #: Every place the reader's validator complained about.
    paths: tuple[str, ...] = ()


class Judge:
    """Both sides of one message: its bundled schemas and their real validators."""

    def __init__(self, old: MessageContract, new: MessageContract) -> None:
        self.contracts = {"old": old, "new": new}
        self.roots = {"old": Root(dict(old.schema)), "new": Root(dict(new.schema))}

    def sides(self, direction: Direction) -> tuple[str, str]:
        return direction.writer, direction.reader

    def check(
        self, instance: Any, direction: Direction, place: Path | None = None
    ) -> Verified | None:
        """``instance`` if the writer's validator accepts it and the reader's refuses it.

        With ``place``, the complaint quoted is the first one at or under it.
        """
        writer, reader = self.sides(direction)
        try:
            if self.contracts[writer].faults(instance):
                return None
            faults = self.contracts[reader].faults(instance)
        except Exception:  # a value the validator cannot take
            return None
        if not faults:
            return None
        here = [f for f in faults if place is not None and _within(f.path, place)]
        first = here[0] if here else faults[0]
        score = 0 if not here else 2 if len(here) == len(faults) else 1
        error = f"{reader} says {first}"
        paths = tuple(f.path for f in faults)
        return Verified(Counterexample(instance, writer, error), first.path, score, paths)

    def search(self, suspect: Suspect, direction: Direction) -> Verified | None:
        """A verified counterexample for ``suspect``: one refused only at its place if
        possible, else one refused there among other places, else any."""
        writer, reader = self.sides(direction)
        root_w, root_r = self.roots[writer], self.roots[reader]
        local = [
            c
            for c in suspect.candidates[:_CANDIDATES]
            if root_w.valid(suspect.a, c) is not False and root_r.valid(suspect.b, c) is not True
        ]
        best: Verified | None = None
        for instance in self._around(root_w, suspect.at, local):
            found = self.check(instance, direction, suspect.at)
            if found is None:
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


def _within(found: str, place: Path) -> bool:
    pointer = "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in place)
    return found == pointer or found.startswith(pointer + "/")
