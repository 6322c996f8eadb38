"""One walk over a schema's subschemas, shared by ``check`` and ``bundle``.

A property *named* ``enum``, ``default``, ``const`` or ``examples`` is a schema
(``properties`` maps names to schemas), so its cross-file ``$ref`` must be
resolved by ``check`` and rewritten by ``bundle`` alike; otherwise ``check``
says ok and every publish fails at run time.  A schema that cannot be compiled
fails where the contract is loaded, naming its message.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqp import apply, drain
from broker import Vhost
from rabbitry.check import check, load_spec
from rabbitry.codegen import generate
from rabbitry.errors import ContractViolation, InvalidArgument
from rabbitry.messaging.client import Client
from rabbitry.messaging.contract import Contract, MessageContract, contract_data
from rabbitry.spec import Location
from rabbitry.spec.bundle import bundle
from rabbitry.spec.schemas import load_schemas
from specs import DRAFT, object_schema, write_spec

_SPEC = """
version: 1
exchanges:
  e: {type: direct}
  dlx: {type: fanout}
queues:
  q: {dead_letter: dlx}
  parked: {}
bindings:
  - {from: e, queue: q, key: k}
  - {from: dlx, queue: parked}
messages:
  M: {schema: schemas/m.json, exchange: e, routing_key: k}
services:
  s: {publishes: [M], consumes: {q: [M]}}
"""
_COMMON = {"$schema": DRAFT, "$defs": {"Word": {"type": "string", "minLength": 1}}}
_WORD = {"$ref": "common.json#/$defs/Word"}
_DATA_NAMES = ("default", "enum", "const", "examples")
#: Names a property may have that are keywords elsewhere in a schema.
_KEYWORDS = (
    *_DATA_NAMES,
    "$ref",
    "$id",
    "$defs",
    "properties",
    "items",
    "allOf",
    "not",
    "type",
    "required",
    "additionalProperties",
    "title",
    "plain",
)


def _refs_anywhere(value: Any) -> list[str]:
    """Every ``$ref`` string in ``value``, data or not (the test's schemas hold none in data)."""
    if isinstance(value, dict):
        here = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return here + [r for v in value.values() for r in _refs_anywhere(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs_anywhere(v)]
    return []


def test_properties_named_like_data_keywords_hold_working_cross_file_refs(
    vhost: Vhost, tmp_path: Path
) -> None:
    schema = object_schema(dict.fromkeys(_DATA_NAMES, _WORD), _DATA_NAMES)
    path = write_spec(tmp_path, _SPEC, {"schemas/m.json": schema, "schemas/common.json": _COMMON})
    assert check(path).diagnostics == ()
    generate(load_spec(path), tmp_path / "out")
    contract = apply(vhost, path)
    message = contract.message("M")
    good = dict.fromkeys(_DATA_NAMES, "x")
    message.validate(good)
    with pytest.raises(ContractViolation) as refused:
        message.validate({**good, "enum": ""})
    assert [f.path for f in refused.value.faults] == ["/enum"]

    async def body() -> None:
        async with Client(contract, vhost.amqp_url, service="s") as client:
            await client.publish("M", good)
            with pytest.raises(ContractViolation) as bad:
                await client.publish("M", {**good, "const": 7})
            assert [f.path for f in bad.value.faults] == ["/const"]
        assert len(await drain(vhost.amqp_url, "q", 1)) == 1

    asyncio.run(asyncio.wait_for(body(), 60))
    assert all(ref.startswith("#") for ref in _refs_anywhere(message.schema))


_PATHS = st.lists(st.sampled_from(_KEYWORDS), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None)
@given(st.lists(_PATHS, min_size=1, max_size=4))
def test_bundle_rewrites_every_ref_that_check_resolves(paths: list[list[str]]) -> None:
    """Nested properties named after keywords, each leaf a cross-file ``$ref``."""
    schema: dict[str, Any] = object_schema({})
    for names in paths:
        node = schema
        for name in names[:-1]:
            node = node["properties"].setdefault(name, object_schema({}))
            if "properties" not in node:  # a leaf reached earlier: leave it a leaf
                break
        else:
            node["properties"][names[-1]] = dict(_WORD)
    with tempfile.TemporaryDirectory() as folder:
        path = write_spec(Path(folder), _SPEC, {"m.json": schema, "common.json": _COMMON})
        store, problems = load_schemas({path.parent / "m.json": Location("spec", 1, 1)})
        assert problems == []
        bundled = bundle(store, path.parent / "m.json")
    assert all(ref.startswith("#") for ref in _refs_anywhere(bundled))
    validator = jsonschema_rs.validator_for(bundled)
    for names in paths:
        instance: Any = 5  # not a Word
        for name in reversed(names):
            instance = {name: instance}
        leaf = _leaf(schema, names)
        if leaf:
            assert not validator.is_valid(instance), instance


def _leaf(schema: dict[str, Any], names: list[str]) -> bool:
    """Whether ``names`` leads through ``properties`` to a ``$ref`` leaf in ``schema``."""
    node: Any = schema
    for name in names:
        if not isinstance(node, dict) or name not in node.get("properties", {}):
            return False
        node = node["properties"][name]
    return node == _WORD


def test_a_schema_that_does_not_compile_fails_where_the_contract_is_loaded(
    tmp_path: Path,
) -> None:
    path = write_spec(
        tmp_path,
        _SPEC,
        {"schemas/m.json": object_schema({"id": _WORD}), "schemas/common.json": _COMMON},
    )
    data = contract_data(load_spec(path))
    data["messages"]["M"]["schema"] = object_schema({"id": {"$ref": "elsewhere.json#/X"}})
    with pytest.raises(InvalidArgument, match=r"'M'.*elsewhere\.json"):
        Contract.from_data(data)
    with pytest.raises(InvalidArgument, match="'N'"):
        MessageContract("N", "e", "k", {}, False, {"type": "strin"})
