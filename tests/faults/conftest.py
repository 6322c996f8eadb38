"""The fault suite's figures: one row per scenario, printed at the end and kept as JSON.

Each fault test causes one fault and measures what it cost: confirmed
messages lost (must be 0), duplicates (at-least-once delivery allows them,
so they are counted, not forbidden), and how long recovery took.  A test
records its row through the ``figures`` fixture::

    def test_something(figures: Figures) -> None:
        ...
        figures.record("broker restart during publish_many", "waited, re-sent",
                       lost=0, duplicates=2, recovery=3.1)
        assert lost == 0

Record before asserting, so that a failing scenario still shows its figures
(the table gives each row's test outcome).  At the session's end the table is
printed (``pytest_terminal_summary``) and, when ``$RABBITRY_FAULT_FIGURES``
names a file, written there as JSON: the README's "Reliability" table is made
from a CI run's file.

The fixtures of ``tests/conftest.py`` (``broker``, ``vhost``) apply here as
in every folder under it; ``own_node`` comes from ``tests/nodes.py`` through
``pytest_plugins = ["nodes"]`` in each module that uses it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["FIGURES_ENV", "Figure", "Figures"]

#: The environment variable naming the JSON file the figures are written to.
FIGURES_ENV = "RABBITRY_FAULT_FIGURES"

_ROWS: list[Figure] = []
_OUTCOMES: dict[str, str] = {}


@dataclasses.dataclass(frozen=True)
class Figure:
    """One scenario's measured outcome."""

    scenario: str
    #: What rabbitry did, in a few words (for the README's table).
    behaviour: str
    #: Messages the broker confirmed that never reached their queue or handler.
    lost: int
    #: Messages handled (or found in the queue) more than once.
    duplicates: int
    #: Seconds from the fault's end (or the fault itself, when it has no end) until work went
    #: on; ``None`` when nothing had to recover.
    recovery: float | None
    #: The test that measured it.
    test: str


class Figures:
    """The ``figures`` fixture: records the rows of one test."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.rows: list[Figure] = []

    def record(
        self,
        scenario: str,
        behaviour: str,
        *,
        lost: int,
        duplicates: int = 0,
        recovery: float | None = None,
    ) -> Figure:
        figure = Figure(
            scenario,
            behaviour,
            lost,
            duplicates,
            None if recovery is None else round(recovery, 2),
            self.test,
        )
        self.rows.append(figure)
        _ROWS.append(figure)
        print(f"\n[figure] {figure}")
        return figure


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """Where a fault test records its scenario's figures (see the module's docstring)."""
    return Figures(request.node.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    if report.when == "call" or report.outcome != "passed":
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        elif report.when != "call":
            outcome = f"{report.when} {outcome}"
        _OUTCOMES.setdefault(item.nodeid, outcome)
        if report.when == "call":
            _OUTCOMES[item.nodeid] = outcome
    return report  # type: ignore[return-value]


def _table(rows: list[dict[str, object]]) -> list[str]:
    heads = ["scenario", "behaviour", "lost", "dupes", "recovery s", "outcome"]
    cells = [
        [
            str(r["scenario"]),
            str(r["behaviour"]),
            str(r["lost"]),
            str(r["duplicates"]),
            "-" if r["recovery"] is None else f"{r['recovery']:.2f}",
            str(r["outcome"]),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    line = "  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return out


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _ROWS:
        return
    rows = [{**dataclasses.asdict(f), "outcome": _OUTCOMES.get(f.test, "unknown")} for f in _ROWS]
    terminalreporter.section("fault figures")
    for line in _table(rows):
        terminalreporter.write_line(line)
    survived = sum(1 for r in rows if r["outcome"] in ("passed", "xpassed") and r["lost"] == 0)
    terminalreporter.write_line(
        f"{survived} of {len(rows)} scenarios survived (test passed, no confirmed message lost)"
    )
    target = os.environ.get(FIGURES_ENV)
    if target:
        Path(target).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        terminalreporter.write_line(f"figures written to {target}")
