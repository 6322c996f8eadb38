"""``load_spec``'s depth: each command reads and checks what it needs, and no less.

``route`` needs the topology (no schema file is read), ``publish`` and ``tail``
the contract (no routing checks), everything else every check.  Each depth
still refuses what it reads wrongly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rabbitry.check import Depth, check, load_spec
from rabbitry.errors import SpecError
from rabbitry.spec import Code
from specs import codes, run_cli, write_spec

SPEC = """
version: 1
exchanges:
  x: {type: topic}
queues:
  q: {}
bindings:
  - {from: x, queue: q, key: "a.*"}
messages:
  M: {schema: m.json, exchange: x, routing_key: "b.{id}"}
services:
  s: {publishes: [M], consumes: {q: [M]}}
"""
SCHEMA = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}


def test_route_reads_no_schema_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A schema file that is missing stops `check`, not a routing lookup."""
    spec = write_spec(tmp_path, SPEC)
    assert Code.SCHEMA_FILE in codes(check(spec).errors)
    assert load_spec(spec, Depth.TOPOLOGY).queues.keys() == {"q"}
    code, out, err = run_cli(["route", "-f", str(spec), "x", "a.b"], capsys)
    assert (code, out.split()) == (0, ["q"]), err


def test_the_contract_depth_skips_the_routing_checks(tmp_path: Path) -> None:
    """M reaches no queue (`b.*` is bound nowhere): an error for `check` and every
    command that changes the broker, not for reading the contract."""
    spec = write_spec(tmp_path, SPEC, {"m.json": SCHEMA})
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert {d.code for d in caught.value.diagnostics} >= {Code.UNROUTABLE}
    contract_spec = load_spec(spec, Depth.CONTRACT)
    assert contract_spec.messages["M"].schema["required"] == ["id"]


@pytest.mark.parametrize("depth", list(Depth))
def test_every_depth_refuses_a_broken_topology(tmp_path: Path, depth: Depth) -> None:
    spec = write_spec(tmp_path, SPEC.replace("queue: q,", "queue: nowhere,"), {"m.json": SCHEMA})
    with pytest.raises(SpecError) as caught:
        load_spec(spec, depth)
    assert Code.UNKNOWN_QUEUE in {d.code for d in caught.value.diagnostics}


def test_the_topology_depth_reads_the_schemas_of_no_message(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC, {"m.json": SCHEMA})
    assert dict(load_spec(spec, Depth.TOPOLOGY).messages["M"].schema) == {}
    assert dict(load_spec(spec, Depth.CONTRACT).messages["M"].schema) == SCHEMA
