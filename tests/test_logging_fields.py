"""Logging a service can run on: every WARNING and ERROR the runtime logs carries
structured fields through ``extra``, from one agreed set of names, and no message
starts with a ``rabbitry:`` prefix (the logger's name says whose it is).

This reads the source (``ast``), so that a new log call that forgets its fields
fails here, not in a user's log pipeline.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "rabbitry"

#: The ``extra`` keys a log record of rabbitry's may carry: what a log pipeline
#: indexes. README "Reliability" documents them.
FIELDS = frozenset(
    {
        "queue",
        "exchange",
        "routing_key",
        "message_id",
        "message_type",
        "reason",
        "attempt",
        "node",
    }
)
LEVELS = frozenset({"debug", "info", "warning", "error", "exception", "critical"})
LOUD = frozenset({"warning", "error", "exception", "critical"})


def log_calls() -> Iterator[tuple[str, ast.Call, str]]:
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in {"log", "logger"}
            ):
                yield f"{path.relative_to(SRC.parent)}:{node.lineno}", node, node.func.attr


CALLS = list(log_calls())


def test_the_runtime_logs_at_all() -> None:
    assert len([c for c in CALLS if c[2] in LOUD]) >= 20  # the scan finds them


@pytest.mark.parametrize(("where", "call", "level"), CALLS, ids=[c[0] for c in CALLS])
def test_a_log_call_has_fields_and_no_prefix(where: str, call: ast.Call, level: str) -> None:
    first = call.args[0] if call.args else None
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        assert not first.value.startswith("rabbitry:"), f"{where}: the logger's name says it"
    extra = next((k.value for k in call.keywords if k.arg == "extra"), None)
    if level in LOUD:
        assert extra is not None, f"{where}: a {level} without extra= fields"
    if isinstance(extra, ast.Dict):
        keys = {k.value for k in extra.keys if isinstance(k, ast.Constant)}
        assert keys <= FIELDS, f"{where}: fields outside the agreed set: {keys - FIELDS}"
