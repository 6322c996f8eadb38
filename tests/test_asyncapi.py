"""``rabbitry export asyncapi``: valid AsyncAPI 3.0.0, read back into the same spec.

The round trip: a spec is loaded, exported (checked against the official
schema vendored from ``@asyncapi/specs``), read back with ``read_asyncapi``,
written with ``write_spec`` into an empty folder and loaded again; the two
``Spec``s must be equal (their paths aside), every message's schema the same
content, and every schema file (those only ``$ref``'d too) at the same
relative path with the same content.  For the flagship and for random specs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncapi_specs import assert_same_spec, spec_documents
from rabbitry.asyncapi import (
    AMQP_BINDING_VERSION,
    draft_from_asyncapi,
    export_asyncapi,
    read_asyncapi,
    schema_faults,
)
from rabbitry.check import load_spec
from rabbitry.errors import InvalidArgument
from rabbitry.spec import Spec
from rabbitry.spec.draft import write_spec as write_draft
from specs import FLAGSHIP, copy_flagship, run_cli, write_spec

Json = dict[str, Any]


def _unresolved_refs(document: Json) -> list[str]:
    """Every ``$ref`` anywhere in ``document`` that does not resolve from its root, as AsyncAPI
    tools resolve them (``@asyncapi/parser`` dereferences extensions too)."""
    found: list[str] = []
    pending: list[Any] = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            pending.extend(node.values())
            ref = node.get("$ref")
            if isinstance(ref, str) and not _resolves(document, ref):
                found.append(ref)
    return found


def _resolves(document: Json, ref: str) -> bool:
    if not ref.startswith("#/"):
        return False
    node: Any = document
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        if not (isinstance(node, dict) and key in node):
            return False
        node = node[key]
    return True


def round_trip(spec: Spec, folder: Path, *, as_yaml: bool = False) -> Spec:
    """Export ``spec`` to a file, read it back, write it into ``folder`` and load that."""
    exported = folder / ("asyncapi.yaml" if as_yaml else "asyncapi.json")
    document = export_asyncapi(spec)
    if as_yaml:
        exported.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    else:
        exported.write_text(json.dumps(document), encoding="utf-8")
    draft = read_asyncapi(exported)
    target = folder / "again" / "topology.yaml"
    write_draft(draft, target)
    return load_spec(target)


# ------------------------------------------------------------------------- the flagship


def test_the_flagship_is_valid_asyncapi_with_amqp_bindings() -> None:
    spec = load_spec(FLAGSHIP)
    document = export_asyncapi(spec)
    assert schema_faults(document) == ()
    channels = document["channels"]
    amqp = [c["bindings"]["amqp"] for c in channels.values()]
    assert {a["bindingVersion"] for a in amqp} == {AMQP_BINDING_VERSION}
    exchanges = {
        a["exchange"]["name"]: a["exchange"]["type"] for a in amqp if a["is"] == "routingKey"
    }
    assert exchanges == {
        "jobs.new": "topic",
        "jobs.status": "topic",
        "jobs.control": "topic",
        "jobs.dead": "fanout",
    }
    queues = {a["queue"]["name"]: a["queue"]["exclusive"] for a in amqp if a["is"] == "queue"}
    assert queues == {
        "jobs.ready": False,
        "jobs.dead-letters": False,
        "job-status": True,
        "job-control": True,
        # the retry queues jobs.ready's `retry:` makes, if it has one: channels of their own
        **{name: False for _, name in spec.queues["jobs.ready"].retry_queues},
    }
    # Run-time bindings say so, with their placeholders; dead-letter paths name their source.
    status = channels["queue.job-status"]
    assert status["x-rabbitry-bound-from"] == [
        {
            "from": "jobs.status",
            "queue": "job-status",
            "key": "{job_id}",
            "runtime": True,
            "placeholders": ["job_id"],
        }
    ]
    ready = channels["queue.jobs.ready"]["x-rabbitry-dead-letter"]
    assert ready == {"exchange": "jobs.dead", "exchange_from": "policy:jobs-ready"}
    # Services as operations; every payload self-contained (common.json bundled in).
    actions = {(op["x-rabbitry-service"], op["action"]) for op in document["operations"].values()}
    assert actions == {("server", "send"), ("server", "receive")} | {
        ("worker", "send"),
        ("worker", "receive"),
    }
    start = document["components"]["messages"]["Start"]
    assert "file:common.json" in start["payload"]["$defs"]
    assert "common.json" not in json.dumps(start["payload"]).replace("file:common.json", "")
    assert "schemas/common.json" in document["x-rabbitry-schema-files"]
    # Every $ref resolves from the document's root, as AsyncAPI tools resolve them.
    assert '"$ref": "#/components/messages/Start/payload/$defs/file:common.json' in json.dumps(
        start
    )
    assert _unresolved_refs(document) == []


@pytest.mark.parametrize("as_yaml", [False, True], ids=["json", "yaml"])
def test_the_flagship_comes_back_the_same(tmp_path: Path, as_yaml: bool) -> None:
    original = load_spec(FLAGSHIP)
    again = round_trip(original, tmp_path, as_yaml=as_yaml)
    assert_same_spec(original, again)
    # Sugar keys come back as sugar keys, policies by the names they were made from.
    text = (tmp_path / "again" / "topology.yaml").read_text(encoding="utf-8")
    assert "dead_letter: jobs.dead" in text
    assert "delivery_limit: 5" in text
    assert "x-dead-letter-exchange" not in text


def test_a_changed_spec_does_not_compare_equal(tmp_path: Path) -> None:
    """The comparison the round trips rely on sees a one-word change in a schema file."""
    original = load_spec(FLAGSHIP)
    spec = copy_flagship(tmp_path)
    common = spec.parent / "schemas" / "common.json"
    common.write_text(common.read_text(encoding="utf-8").replace('"uuid"', '"date"'), "utf-8")
    with pytest.raises(AssertionError):
        assert_same_spec(original, load_spec(spec))


# ------------------------------------------------------------------------- random specs


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_documents())
def test_random_specs_come_back_the_same(generated: tuple[Json, Json]) -> None:
    document, schemas = generated
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        original = load_spec(write_spec(folder, document, schemas))
        exported = export_asyncapi(original)
        assert schema_faults(exported) == ()
        assert _unresolved_refs(exported) == []
        assert_same_spec(original, round_trip(original, folder, as_yaml=len(schemas) % 2 == 0))


# ------------------------------------------------------------------------- validation


def _flagship_document() -> Json:
    return export_asyncapi(load_spec(FLAGSHIP))


def test_the_official_schema_refuses_what_it_should() -> None:
    """The vendored schema, through its registry, does check AMQP bindings and operations."""
    document = _flagship_document()
    broken = copy.deepcopy(document)
    amqp = broken["channels"]["queue.jobs.ready"]["bindings"]["amqp"]
    amqp["exchange"] = {"name": "jobs.new"}  # is: queue with an exchange: oneOf fails
    faults = schema_faults(broken)
    assert len(faults) == 1
    assert faults[0].pointer.startswith("/channels/queue.jobs.ready/bindings/amqp")
    broken = copy.deepcopy(document)
    broken["channels"]["queue.jobs.ready"]["bindings"]["amqp"]["bindingVersion"] = "0.2.0"
    assert schema_faults(broken)
    broken = copy.deepcopy(document)
    next(iter(broken["operations"].values()))["action"] = "publish"
    assert schema_faults(broken)


def test_an_asyncapi_document_rabbitry_did_not_write_is_refused(tmp_path: Path) -> None:
    foreign = {"asyncapi": "3.0.0", "info": {"title": "t", "version": "1"}, "channels": {}}
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(foreign), encoding="utf-8")
    with pytest.raises(InvalidArgument, match=r"foreign\.json was not written by"):
        read_asyncapi(path)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("{not json: [", "neither JSON nor YAML"),
        ("asyncapi: 2.6.0\ninfo: {title: t, version: '1'}\n", "not an AsyncAPI 3.0.0 document"),
        ('{"asyncapi": "3.0.0"}', "is not valid AsyncAPI 3.0.0: at /: 'info' is a required"),
        ("- a list\n", "not an AsyncAPI 3.0.0 document"),
    ],
)
def test_what_is_not_asyncapi_is_refused_naming_the_file(
    tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "doc.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidArgument) as caught:
        read_asyncapi(path)
    assert str(path) in str(caught.value)
    assert said in str(caught.value)


def test_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="folder"):
        read_asyncapi(tmp_path)


def test_a_document_missing_what_rabbitry_wrote_says_where() -> None:
    document = _flagship_document()
    del document["channels"]["queue.jobs.ready"]["x-rabbitry-queue"]
    with pytest.raises(InvalidArgument, match=r"at /channels/queue\.jobs\.ready"):
        draft_from_asyncapi(document, source="edited.json")
    document = _flagship_document()
    operation = next(iter(document["operations"].values()))
    operation["messages"] = [{"$ref": "#/channels/nowhere/messages/Start"}]
    with pytest.raises(InvalidArgument, match="points at nothing"):
        draft_from_asyncapi(document, source="edited.json")


_EDITS = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=4,
)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_hand_edited_document_is_read_or_refused_never_crashes(data: st.DataObject) -> None:
    """Replace or delete one value anywhere: a draft or ``InvalidArgument``, nothing else."""
    document = _flagship_document()
    node: Any = document
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
            node = child
            continue
        if isinstance(node, dict) and data.draw(st.booleans()):
            del node[key]
        else:
            node[key] = data.draw(_EDITS)
        break
    with contextlib.suppress(InvalidArgument):
        draft_from_asyncapi(document)


# ------------------------------------------------------------------------- the CLI


def test_the_cli_writes_json_to_standard_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["export", "asyncapi", str(FLAGSHIP)], capsys)
    assert (code, err) == (0, "")
    assert json.loads(out) == _flagship_document()


def test_the_cli_writes_yaml_for_a_yaml_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "contract.yml"
    code, out, err = run_cli(["export", "asyncapi", "-f", str(FLAGSHIP), "-o", str(target)], capsys)
    assert (code, out, err) == (0, "", "")
    text = target.read_text(encoding="utf-8")
    assert not text.startswith("{")
    assert yaml.safe_load(text) == _flagship_document()


def test_the_cli_refuses_a_broken_spec_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = copy_flagship(tmp_path)
    text = spec.read_text(encoding="utf-8").replace("exchange: jobs.new", "exchange: jobs.old")
    spec.write_text(text, encoding="utf-8")
    target = tmp_path / "out.json"
    code, _, err = run_cli(["export", "asyncapi", str(spec), "-o", str(target)], capsys)
    assert code == 1
    assert "jobs.old" in err
    assert not target.exists()
