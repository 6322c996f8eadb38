"""Message schemas: loading, the draft 2020-12 meta-check, ``$ref``s, each fault located."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rabbitry.check import Report, check
from rabbitry.spec import Code, Location
from rabbitry.spec.schemas import _META, _meta_valid_fast, json_path, load_schemas
from specs import (
    DRAFT,
    at,
    copy_flagship,
    line_of,
    object_schema,
    only,
    same_file,
    write_spec,
)

# One message M on a direct exchange, its schema in schemas/m.json; `key` is its routing key.
_SPEC = """
version: 1
exchanges:
  e: {{type: direct}}
  dlx: {{type: fanout}}
queues:
  q: {{dead_letter: dlx}}
  parked: {{}}
bindings:
  - {{from: e, queue: q, key: "{key}"}}
  - {{from: dlx, queue: parked}}
messages:
  M: {{schema: schemas/m.json, exchange: e, routing_key: "{key}"}}
services:
  s: {{publishes: [M], consumes: {{q: [M]}}}}
"""


def _check(
    tmp_path: Path, schema: Any, *, key: str = "k", more: dict[str, Any] | None = None
) -> tuple[Report, Path, str]:
    """Check the one-message spec with ``schema`` as schemas/m.json: report, path, text."""
    spec = write_spec(tmp_path, _SPEC.format(key=key), {"schemas/m.json": schema, **(more or {})})
    path = spec.parent / "schemas" / "m.json"
    return check(spec), path, path.read_text(encoding="utf-8")


def test_a_valid_schema_gives_no_diagnostics(tmp_path: Path) -> None:
    report, _, _ = _check(tmp_path, object_schema({"id": {"type": "string"}}, ["id"]), key="{id}")
    assert report.diagnostics == ()
    assert report.spec is not None
    assert report.spec.messages["M"].schema["properties"] == {"id": {"type": "string"}}


# ------------------------------------------------------------------------ meta-check


@pytest.mark.parametrize(
    ("keyword", "bad", "path"),
    [
        ("type", "strin", "/properties/name/type"),
        ("minimum", "x", "/properties/name/minimum"),
        ("maxLength", -1, "/properties/name/maxLength"),
        ("required", "name", "/properties/name/required"),
    ],
)
def test_an_invalid_keyword_is_named_by_file_line_and_json_path(
    tmp_path: Path, keyword: str, bad: Any, path: str
) -> None:
    schema = object_schema({"other": {"type": "string"}, "name": {keyword: bad}}, ["name"])
    report, schema_path, text = _check(tmp_path, schema)
    found = only(report, Code.SCHEMA_INVALID)
    assert same_file(found.location.file, schema_path)
    assert found.location.line == line_of(text, f'"{keyword}": {json.dumps(bad)}')
    assert found.message.startswith(f"{path}:")
    assert found.hint


def test_every_invalid_keyword_of_a_file_is_reported(tmp_path: Path) -> None:
    schema = object_schema(
        {"a": {"type": "strin"}, "b": {"type": "integer", "minimum": "x"}}, ["a"]
    )
    report, _, text = _check(tmp_path, schema)
    found = at(report, Code.SCHEMA_INVALID)
    assert [(d.location.line, d.message.split(":")[0]) for d in found] == [
        (line_of(text, '"strin"'), "/properties/a/type"),
        (line_of(text, '"minimum": "x"'), "/properties/b/minimum"),
    ]


def test_another_draft_is_refused_at_its_schema_line(tmp_path: Path) -> None:
    schema = object_schema({"id": {"type": "string"}})
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    report, schema_path, text = _check(tmp_path, schema)
    found = only(report, Code.SCHEMA_INVALID)
    assert same_file(found.location.file, schema_path)
    assert found.location.line == line_of(text, "draft-07")
    assert "2020-12" in found.message
    assert DRAFT in found.hint


def test_the_2020_12_uri_with_a_trailing_hash_is_accepted(tmp_path: Path) -> None:
    schema = object_schema({"id": {"type": "string"}})
    schema["$schema"] = DRAFT + "#"
    report, _, _ = _check(tmp_path, schema)
    assert at(report, Code.SCHEMA_INVALID) == []


def test_a_schema_uri_that_is_not_a_string_is_reported_not_raised(tmp_path: Path) -> None:
    schema = object_schema({"id": {"type": "string"}})
    schema["$schema"] = 5
    report, _, text = _check(tmp_path, schema)
    found = only(report, Code.SCHEMA_INVALID)
    assert found.location.line == line_of(text, '"$schema": 5')
    assert found.message.startswith("/$schema:")


def test_a_schema_that_is_not_an_object_is_invalid(tmp_path: Path) -> None:
    report, schema_path, _ = _check(tmp_path, "[1, 2]\n")
    found = only(report, Code.SCHEMA_INVALID)
    assert same_file(found.location.file, schema_path)
    assert found.location.line == 1
    assert "object" in found.message


def test_true_is_a_schema(tmp_path: Path) -> None:
    report, _, _ = _check(tmp_path, "true\n")
    assert report.diagnostics == ()
    assert report.spec is not None
    assert dict(report.spec.messages["M"].schema) == {}


# ------------------------------------------------------------------- reading the files


def test_a_missing_schema_file_is_located_at_the_spec_schema_line(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, _SPEC.format(key="k"))
    report = check(spec)
    found = only(report, Code.SCHEMA_FILE)
    assert found.location.file == str(spec)
    text = spec.read_text(encoding="utf-8")
    assert (found.location.line, found.location.column) == (
        line_of(text, "schemas/m.json"),
        text.splitlines()[line_of(text, "schemas/m.json") - 1].index("schemas/m.json") + 1,
    )
    assert "schemas/m.json" in found.message
    assert "does not exist" in found.message


def test_invalid_json_is_reported_at_its_line(tmp_path: Path) -> None:
    text = '{\n  "type": "object",\n  "properties": {\n    "a": {"type": "string"},\n  }\n}\n'
    report, schema_path, _ = _check(tmp_path, text)
    found = only(report, Code.SCHEMA_FILE)
    assert same_file(found.location.file, schema_path)
    assert found.location.line == 5
    assert "not JSON" in found.message


def test_a_schema_file_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, _SPEC.format(key="k"))
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "m.json").write_bytes(b'{"title": "\xff"}')
    report = check(spec)
    found = only(report, Code.SCHEMA_FILE)
    assert found.location.file == str(spec)
    assert "cannot read" in found.message


def test_a_schema_named_by_two_messages_is_read_and_reported_once(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        version: 1
        exchanges: {e: {type: fanout}}
        queues: {q: {}}
        bindings: [{from: e, queue: q}]
        messages:
          A: {schema: schemas/shared.json, exchange: e}
          B: {schema: schemas/shared.json, exchange: e}
        """,
        {"schemas/shared.json": object_schema({"x": {"type": "strin"}})},
    )
    report = check(spec)
    assert len(at(report, Code.SCHEMA_INVALID)) == 1
    assert report.spec is not None
    assert len(report.spec.schemas.documents) == 1


# ------------------------------------------------------------------------------ $ref


def _with_ref(ref: str) -> dict[str, Any]:
    return object_schema(
        {"note": {"type": "string"}, "id": {"$ref": ref}},
        ["id"],
        **{"$defs": {"Id": {"type": "string"}}},
    )


def test_a_local_ref_that_does_not_resolve_names_file_and_json_path(tmp_path: Path) -> None:
    report, schema_path, text = _check(tmp_path, _with_ref("#/$defs/Missing"), key="{id}")
    found = only(report, Code.SCHEMA_REF)
    assert same_file(found.location.file, schema_path)
    assert found.location.line == line_of(text, "#/$defs/Missing")
    assert found.message.startswith("/properties/id/$ref:")
    assert "#/$defs/Missing" in found.message
    assert "does not resolve" in found.message
    # the placeholder behind it is not blamed a second time, nor does it crash
    assert at(report, Code.PLACEHOLDER) == []


def test_a_ref_into_another_file_that_does_not_resolve(tmp_path: Path) -> None:
    common = {"$schema": DRAFT, "$defs": {"Id": {"type": "string"}}}
    report, schema_path, text = _check(
        tmp_path,
        _with_ref("common.json#/$defs/Nope"),
        key="{id}",
        more={"schemas/common.json": common},
    )
    found = only(report, Code.SCHEMA_REF)
    assert same_file(found.location.file, schema_path)
    assert found.location.line == line_of(text, "common.json#/$defs/Nope")
    assert "/properties/id/$ref" in found.message


def test_a_ref_to_a_missing_file_is_located_at_the_ref(tmp_path: Path) -> None:
    report, schema_path, text = _check(tmp_path, _with_ref("nope.json#/$defs/Id"), key="{id}")
    found = only(report, Code.SCHEMA_FILE)
    assert same_file(found.location.file, schema_path)
    assert found.location.line == line_of(text, "nope.json")
    assert "nope.json" in found.message


def test_a_pointer_into_a_list_with_a_word_does_not_crash(tmp_path: Path) -> None:
    report, _, text = _check(tmp_path, _with_ref("#/required/first"), key="{id}")
    found = only(report, Code.SCHEMA_REF)
    assert found.location.line == line_of(text, "#/required/first")


@pytest.mark.parametrize(
    "ref",
    [
        "https://example.com/schemas/id.json",
        "http://example.com/id.json#/$defs/Id",
        "urn:example:id",
        "ftp://example.com/id.json",
    ],
)
def test_a_remote_ref_is_refused(tmp_path: Path, ref: str) -> None:
    report, schema_path, text = _check(tmp_path, _with_ref(ref), key="{id}")
    found = only(report, Code.SCHEMA_REF)
    assert same_file(found.location.file, schema_path)
    assert found.location.line == line_of(text, ref)
    assert "remote" in found.message
    assert "relative path" in found.hint
    assert at(report, Code.PLACEHOLDER) == []


def test_files_reached_through_ref_are_loaded_and_meta_checked(tmp_path: Path) -> None:
    common = {"$schema": DRAFT, "$defs": {"Id": {"type": "strng"}}}
    report, _, _ = _check(
        tmp_path,
        _with_ref("common.json#/$defs/Id"),
        key="{id}",
        more={"schemas/common.json": common},
    )
    found = only(report, Code.SCHEMA_INVALID)
    common_path = tmp_path / "schemas" / "common.json"
    assert same_file(found.location.file, common_path)
    assert found.location.line == line_of(common_path.read_text(encoding="utf-8"), '"strng"')
    assert found.message.startswith("/$defs/Id/type:")


def test_a_ref_to_a_sibling_folder(tmp_path: Path) -> None:
    shared = {"$schema": DRAFT, "$defs": {"Id": {"type": "string"}}}
    report, _, _ = _check(
        tmp_path,
        _with_ref("../shared/defs.json#/$defs/Id"),
        key="{id}",
        more={"shared/defs.json": shared},
    )
    assert report.diagnostics == ()
    assert report.spec is not None
    documents = {p.name for p in report.spec.schemas.documents}
    assert documents == {"m.json", "defs.json"}


def test_a_property_named_like_a_keyword_is_still_searched_for_refs(tmp_path: Path) -> None:
    schema = object_schema({"default": {"$ref": "nope.json"}, "enum": {"$ref": "#/$defs/X"}})
    report, _, text = _check(tmp_path, schema)
    assert sorted((d.code, d.location.line) for d in report.diagnostics) == sorted(
        [
            (Code.SCHEMA_FILE, line_of(text, "nope.json")),
            (Code.SCHEMA_REF, line_of(text, "#/$defs/X")),
        ]
    )


def test_a_ref_inside_data_keywords_is_not_a_reference(tmp_path: Path) -> None:
    schema = object_schema(
        {"kind": {"enum": [{"$ref": "nope.json"}], "default": {"$ref": "#/nowhere"}}},
        examples=[{"$ref": "https://example.com"}],
    )
    report, _, _ = _check(tmp_path, schema)
    assert report.diagnostics == ()


def test_a_ref_cycle_terminates(tmp_path: Path) -> None:
    schema = object_schema(
        {"id": {"$ref": "#/$defs/A"}},
        ["id"],
        **{"$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}}},
    )
    report, _, _ = _check(tmp_path, schema, key="{id}")
    # One error, the cause, in the schema: the placeholder it leaves unresolved is its
    # consequence and is not reported again.
    found = only(report, Code.SCHEMA_REF)
    assert "$ref cycle /$defs/A -> /$defs/B -> /$defs/A" in found.message
    assert found.location.file.endswith("m.json")
    assert len(report.errors) == 1


# ----------------------------------------------------------------- the store directly


def test_store_resolves_a_ref_chain_across_files(tmp_path: Path) -> None:
    spec = copy_flagship(tmp_path)
    start = spec.parent / "schemas" / "start.json"
    store, problems = load_schemas({start: Location("topology.yaml", 1, 1)})
    assert problems == []
    contents = store.contents(start)
    path, schema = store.resolve(start, contents["properties"]["job_id"])
    assert path == (spec.parent / "schemas" / "common.json").resolve()
    assert schema["format"] == "uuid"
    assert schema["type"] == "string"
    # and a schema with no $ref is itself
    assert store.resolve(start, contents["properties"]["steps"])[1]["type"] == "integer"


def test_store_locates_json_paths(tmp_path: Path) -> None:
    spec = copy_flagship(tmp_path)
    stop = spec.parent / "schemas" / "stop.json"
    text = stop.read_text(encoding="utf-8")
    store, _ = load_schemas({stop: Location("topology.yaml", 1, 1)})
    where = store.locate(stop, ("properties", "reason", "maxLength"))
    assert where.line == line_of(text, '"maxLength": 1024')
    assert (where.column, where.line) == (
        text.splitlines()[where.line - 1].index("1024") + 1,
        where.line,
    )
    assert store.locate(stop, ("required", 1)).line == line_of(text, '"requested_at"', 2)
    # a path that goes nowhere stops at the deepest node found
    assert store.locate(stop, ("properties", "nope")).line == line_of(text, '"properties"')


def test_json_path_escapes_pointer_characters() -> None:
    assert json_path(()) == ""
    assert json_path(("properties", "a/b", "c~d", 0)) == "/properties/a~1b/c~0d/0"


# ------------------------------------------------ the fast meta-schema check agrees

_KEYWORDS = st.sampled_from(
    [
        "type", "properties", "items", "prefixItems", "required", "enum", "const", "minimum",
        "exclusiveMaximum", "maxLength", "minItems", "pattern", "format", "$ref", "$defs",
        "anyOf", "allOf", "oneOf", "not", "additionalProperties", "unevaluatedProperties",
        "dependentRequired", "$schema", "$id", "$anchor", "contentEncoding", "title", "x-own",
    ]
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-2, 2, allow_nan=False),
    st.sampled_from(["string", "object", "integer", "null", "#", "#/$defs/a", "[", "a"]),
)
_schemas = st.recursive(
    st.one_of(st.booleans(), st.just({}), _SCALARS),
    lambda inner: st.one_of(
        st.dictionaries(_KEYWORDS, inner, max_size=4),
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "type"]), inner, max_size=3),
    ),
    max_leaves=16,
)


@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_schemas)
def test_the_fast_meta_check_gives_the_reference_verdict(schema: Any) -> None:
    """jsonschema-rs's verdict on a schema is python-jsonschema's: a schema it passes is
    never checked again, so one it wrongly passed would lose its located errors."""
    assert _meta_valid_fast(schema) == _META.is_valid(schema), schema
