"""Breaking-change detection: ``rabbitry check NEW --against OLD [--mode M]``.

::

    findings = compare(old_spec, new_spec, Mode.FULL)
    breaking = [f for f in findings if f.verdict is Verdict.BREAKING]

For each message in both specs, its bundled schemas are compared in the
directions of the mode — backward: every message valid under OLD is valid
under NEW (new consumers read what old publishers send); forward: the
reverse; full: both — by keyword rules (``_schema_rules``).  A place the rules
cannot prove safe is *breaking* only with a counterexample: a whole message
that the real validator (jsonschema-rs, as the runtime uses it) accepts under
one schema and refuses under the other, checked before it is reported
(``_counterexample``).  Without one it is *unknown*: a warning for a person to
look at (``--strict`` makes warnings fail).  Topology changes (``_topology``)
are judged with the routing model on both specs.  Everything else is
*compatible*; a change to descriptions alone is not a finding.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rabbitry.compat import _regex
from rabbitry.compat._counterexample import Judge
from rabbitry.compat._findings import (
    Change,
    Counterexample,
    Direction,
    Finding,
    Mode,
    Verdict,
)
from rabbitry.compat._git import GitSource, Materialised, materialise, parse_git
from rabbitry.compat._schema import key
from rabbitry.compat._schema_rules import Rules, Suspect
from rabbitry.compat._topology import topology_findings
from rabbitry.messaging.contract import Contract, MessageContract
from rabbitry.spec import Spec

__all__ = [
    "Change",
    "Counterexample",
    "Direction",
    "Finding",
    "GitSource",
    "Materialised",
    "Mode",
    "Verdict",
    "compare",
    "compare_message",
    "load_against",
    "materialise",
    "parse_git",
]

_ORDER = {Verdict.BREAKING: 0, Verdict.UNKNOWN: 1, Verdict.COMPATIBLE: 2}


def compare(old: Spec, new: Spec, mode: Mode | str = Mode.FULL) -> list[Finding]:
    """Every finding between two specs (each free of errors), breaking ones first."""
    mode = Mode(mode)
    old_contract, new_contract = Contract.from_spec(old), Contract.from_spec(new)
    findings: list[Finding] = []
    for name in sorted(old.messages.keys() & new.messages.keys()):
        findings += compare_message(old_contract.messages[name], new_contract.messages[name], mode)
    findings += topology_findings(old, new, old_contract, new_contract)
    unique = list({key(f.as_json()): f for f in findings}.values())
    return sorted(unique, key=lambda f: (_ORDER[f.verdict], f.subject, f.path, f.direction or ""))


def compare_message(old: MessageContract, new: MessageContract, mode: Mode | str) -> list[Finding]:
    """The schema findings of one message, in the directions of ``mode``.

    A pattern whose evaluation was stopped at its bound (``_regex.BOUND``: it
    backtracks without end on the strings tried) is an unknown finding of its own.
    """
    with _regex.watch() as stopped:
        found = _compare_message(old, new, Mode(mode))
    return found + [
        Finding(
            Verdict.UNKNOWN,
            f"message {old.name}",
            "",
            f"pattern {pattern!r} was stopped after {_regex.BOUND} s on a candidate string "
            "(it backtracks too much to evaluate, or is too large to compile): the places "
            "it constrains are not judged by it",
            message=old.name,
        )
        for pattern in sorted(stopped)
    ]


def _compare_message(old: MessageContract, new: MessageContract, mode: Mode) -> list[Finding]:
    judge = Judge(old, new)
    roots = judge.roots
    if Rules(roots["old"], roots["new"]).same(roots["old"].schema, roots["new"].schema):
        return []  # the same constraints: documentation changes at most
    subject = f"message {old.name}"
    findings: list[Finding] = []
    for direction in mode.directions:
        writer, reader = roots[direction.writer], roots[direction.reader]
        suspects = Rules(writer, reader).compare(writer.schema, reader.schema)
        found: list[Finding] = []
        unproven: dict[int, Suspect] = {}  # id of an unknown finding → its suspect

        def finding(
            verdict: Verdict, path: str, why: str, at: Direction = direction, **extra: Any
        ) -> Finding:
            return Finding(verdict, subject, path, why, at, message=old.name, **extra)

        for suspect in suspects:
            pointer = _pointer(suspect.reported)
            change = suspect.fact.change(direction)
            if suspect.open_content is not None:
                why = (
                    f"{change}, but the {direction.writer} schema does not declare "
                    f"{suspect.open_content!r} (open content model): its messages are not "
                    "expected to carry it"
                )
                found.append(finding(Verdict.COMPATIBLE, pointer, why, change=change))
                continue
            verified = judge.search(suspect, direction)
            if verified is not None:
                found.append(
                    finding(
                        Verdict.BREAKING,
                        pointer,
                        str(change),
                        counterexample=verified.example,
                        change=change,
                    )
                )
            else:
                why = f"{change}; not proven safe, and no counterexample found"
                unknown = finding(Verdict.UNKNOWN, pointer, why, change=change)
                unproven[id(unknown)] = suspect
                found.append(unknown)
        if not any(f.verdict is Verdict.BREAKING for f in found):
            # The rules proved it, or could not decide: sample messages for a counterexample
            # the rules did not point at (never trusted over the validator either way).
            swept = judge.sweep(
                direction, exclude=[s.reported for s in suspects if s.open_content is not None]
            )
            if swept is not None:
                # An unproven suspect this message shows (its own fault among the reader's
                # complaints) is proven by it; else the message is a finding of its own.
                for unknown in [f for f in found if id(f) in unproven]:
                    shown = judge.check(swept.example.instance, direction, unproven[id(unknown)])
                    if shown is not None and shown.score > 0:
                        found.remove(unknown)
                        found.append(
                            dataclasses.replace(
                                unknown,
                                verdict=Verdict.BREAKING,
                                why=str(unknown.change),
                                counterexample=shown.example,
                            )
                        )
                        break
                else:
                    keyword = swept.example.keyword
                    why = (
                        f"a message valid under the {direction.writer} schema is refused "
                        f"by the {direction.reader} schema's {keyword!r}"
                    )
                    found.append(
                        finding(Verdict.BREAKING, swept.path, why, counterexample=swept.example)
                    )
        # The same change at the same place, proven once: its unproven twins go.
        proven = {
            (f.path, key(f.change.as_json()))
            for f in found
            if f.verdict is Verdict.BREAKING and f.change is not None
        }
        found = [
            f
            for f in found
            if f.verdict is not Verdict.UNKNOWN
            or f.change is None
            or (f.path, key(f.change.as_json())) not in proven
        ]
        if not found:
            why = (
                f"schema changed; every {direction.writer} message is valid under the "
                f"{direction.reader} schema"
            )
            found.append(finding(Verdict.COMPATIBLE, "", why))
        findings += found
    return findings


def _pointer(parts: tuple[str | int, ...]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def load_against(text: str, new_spec: Path) -> tuple[Path, str, Materialised | None]:
    """Where the old spec is: a file, or a copy out of git (kept alive by the third item)."""
    source = parse_git(text)
    if source is None:
        return Path(text), text, None
    copy = materialise(source, new_spec)
    return copy.spec, copy.display, copy
