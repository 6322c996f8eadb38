"""A RabbitMQ definitions file as one vhost's topology.

Two shapes are read: a whole-broker export (``GET /api/definitions``,
``rabbitmqctl export_definitions``), whose rows carry a ``vhost`` field and
which may hold several vhosts, and a per-vhost export
(``GET /api/definitions/{vhost}``), whose rows carry none.  Operator policies
are runtime parameters of component ``operator_policy`` in both.

The file is the user's and may be anything: it is read within a bound
(``spec._files``), and every fault of shape is an ``InvalidArgument`` naming the
file and the entry, never a ``KeyError`` from deep inside.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rabbitry.broker.state import (
    BindingState,
    ExchangeState,
    PolicyState,
    QueueState,
    Topology,
    normalise_arguments,
)
from rabbitry.errors import InvalidArgument
from rabbitry.spec._files import FileRefused, read_bounded

__all__ = ["MAX_DEFINITIONS_BYTES", "read_definitions", "topology_from_definitions"]

#: The largest definitions file read (256 MiB): a broker's export of tens of thousands
#: of queues is some tens of MiB.
MAX_DEFINITIONS_BYTES = 256 * 1024 * 1024

_SECTIONS = ("exchanges", "queues", "bindings", "policies", "parameters")
#: What a whole-broker export has beyond one vhost's topology.
_BROKER_WIDE = ("users", "permissions", "topic_permissions", "global_parameters")

Row = Mapping[str, Any]


def read_definitions(path: Path, vhost: str = "/") -> tuple[Topology, tuple[str, ...]]:
    """The topology of ``vhost`` in the definitions file at ``path``, and notes on what
    the file holds that a spec does not (users, federation parameters, ...)."""
    try:
        data = read_bounded(path, MAX_DEFINITIONS_BYTES)
    except FileRefused as exc:
        raise InvalidArgument(f"{path} {exc.reason}") from None
    except OSError as exc:
        raise InvalidArgument(f"{path} cannot be read: {exc.strerror or exc}") from None
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(
            f"{path} is not JSON ({exc}); give a RabbitMQ definitions file "
            "(rabbitmqctl export_definitions, or GET /api/definitions)"
        ) from None
    return topology_from_definitions(document, vhost=vhost, source=str(path))


def topology_from_definitions(
    document: object, *, vhost: str = "/", source: str = "the definitions"
) -> tuple[Topology, tuple[str, ...]]:
    """``document`` (parsed definitions JSON) as ``vhost``'s topology, and notes.

    Rows without a ``vhost`` field (a per-vhost export) are taken whatever ``vhost``
    says; rows with one are taken for ``vhost`` only.
    """
    if not isinstance(document, dict) or not any(k in document for k in _SECTIONS):
        raise InvalidArgument(
            f"{source} is not a RabbitMQ definitions file: expected a JSON object with "
            f"exchanges, queues, bindings and policies, got {_kind(document)}"
        )
    sections = {key: _rows(document, key, source) for key in _SECTIONS}
    named = {str(row["vhost"]) for rows in sections.values() for row in rows if "vhost" in row}
    listed = _vhosts(document, source)
    if (named or listed) and vhost not in named | listed:
        have = ", ".join(repr(v) for v in sorted(named | listed))
        raise InvalidArgument(
            f"{source} has nothing for vhost {vhost!r}; its vhosts are {have}: choose one"
        )
    mine = {
        key: [row for row in rows if row.get("vhost", vhost) == vhost]
        for key, rows in sections.items()
    }
    notes = [
        f"{source}: its {key} are left out: a spec holds one vhost's topology"
        for key in _BROKER_WIDE
        if document.get(key)
    ]
    operator: dict[str, PolicyState] = {}
    for i, row in enumerate(mine["parameters"]):
        where = _where(source, "parameters", i, row)
        component = _text(row, "component", where)
        name = _text(row, "name", where)
        if component != "operator_policy":
            notes.append(
                f"runtime parameter {component}/{name} left out: a spec has no runtime "
                "parameters (federation upstreams, shovels, ...); keep it where it is defined"
            )
            continue
        value = row.get("value")
        if not isinstance(value, dict):
            raise InvalidArgument(f"{where}: `value` must be an object, got {_kind(value)}")
        operator[name] = _policy({"name": name, **value}, where, operator=True)
    topology = Topology(
        exchanges={
            x.name: x
            for i, row in enumerate(mine["exchanges"])
            if (x := _exchange(row, _where(source, "exchanges", i, row)))
        },
        queues={
            q.name: q
            for i, row in enumerate(mine["queues"])
            if (q := _queue(row, _where(source, "queues", i, row)))
        },
        bindings=frozenset(
            _binding(row, _where(source, "bindings", i, row))
            for i, row in enumerate(mine["bindings"])
        ),
        policies={
            p.name: p
            for i, row in enumerate(mine["policies"])
            if (p := _policy(row, _where(source, "policies", i, row), operator=False))
        },
        operator_policies=operator,
    )
    return topology, tuple(notes)


def _rows(document: Mapping[str, Any], key: str, source: str) -> list[Row]:
    rows = document.get(key)
    if rows is None:
        return []
    if not isinstance(rows, list):
        raise InvalidArgument(f"{source}: `{key}` must be a list, got {_kind(rows)}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidArgument(
                f"{source}: {key} entry #{i + 1} must be an object, got {_kind(row)}"
            )
        if "vhost" in row and not isinstance(row["vhost"], str):
            raise InvalidArgument(
                f"{_where(source, key, i, row)}: `vhost` must be a string, got "
                f"{_kind(row['vhost'])}"
            )
    return rows


def _vhosts(document: Mapping[str, Any], source: str) -> set[str]:
    rows = _rows(document, "vhosts", source)
    return {_text(row, "name", _where(source, "vhosts", i, row)) for i, row in enumerate(rows)}


def _where(source: str, key: str, index: int, row: Row) -> str:
    name = row.get("name", row.get("source"))
    shown = f" ({name!r})" if isinstance(name, str) else ""
    return f"{source}: {key} entry #{index + 1}{shown}"


def _text(row: Row, key: str, where: str, default: str | None = None) -> str:
    value = row.get(key, default)
    if not isinstance(value, str):
        missing = key not in row
        raise InvalidArgument(
            f"{where}: `{key}` "
            + ("is missing" if missing else f"must be a string, got {_kind(value)}")
        )
    return value


def _flag(row: Row, key: str, where: str, default: bool) -> bool:
    value = row.get(key, default)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{where}: `{key}` must be true or false, got {_kind(value)}")
    return value


def _table(row: Row, key: str, where: str) -> dict[str, Any]:
    value = row.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where}: `{key}` must be an object, got {_kind(value)}")
    return value


def _exchange(row: Row, where: str) -> ExchangeState:
    return ExchangeState(
        name=_text(row, "name", where),
        type=_text(row, "type", where),
        durable=_flag(row, "durable", where, True),
        auto_delete=_flag(row, "auto_delete", where, False),
        internal=_flag(row, "internal", where, False),
        arguments=normalise_arguments(_table(row, "arguments", where)),
    )


def _queue(row: Row, where: str) -> QueueState:
    arguments = _table(row, "arguments", where)
    kind = row.get("type") or arguments.get("x-queue-type") or "classic"
    if not isinstance(kind, str):
        raise InvalidArgument(f"{where}: the queue type must be a string, got {_kind(kind)}")
    return QueueState(
        name=_text(row, "name", where),
        type=kind,
        durable=_flag(row, "durable", where, True),
        auto_delete=_flag(row, "auto_delete", where, False),
        exclusive=_flag(row, "exclusive", where, False),
        arguments=normalise_arguments(arguments),
    )


def _binding(row: Row, where: str) -> BindingState:
    kind = _text(row, "destination_type", where)
    if kind not in ("queue", "exchange"):
        raise InvalidArgument(
            f"{where}: `destination_type` must be 'queue' or 'exchange', got {kind!r}"
        )
    return BindingState(
        source=_text(row, "source", where),
        destination_type=kind,
        destination=_text(row, "destination", where),
        routing_key=_text(row, "routing_key", where, ""),
        arguments=normalise_arguments(_table(row, "arguments", where)),
    )


def _policy(row: Row, where: str, *, operator: bool) -> PolicyState:
    priority = row.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidArgument(f"{where}: `priority` must be an integer, got {_kind(priority)}")
    return PolicyState(
        name=_text(row, "name", where),
        pattern=_text(row, "pattern", where),
        apply_to=_text(row, "apply-to", where, "all"),
        priority=priority,
        definition=normalise_arguments(_table(row, "definition", where)),
        operator=operator,
    )


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    return f"{type(value).__name__} {value!r}"[:80]
