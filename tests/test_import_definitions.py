"""``rabbitry import --definitions``: a definitions file as a spec, offline.

The mapping is judged by what matters: the spec written passes ``rabbitry check``,
and ``broker.state.desired`` of it (what ``apply`` makes) is the file's topology,
object for object, save what a note names as left out.  Sugar keys are pinned one
by one; random topologies (hypothesis) cover the rest; a bad file is a message
naming the file, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rabbitry.broker.state import (
    BindingState,
    ExchangeState,
    PolicyState,
    QueueState,
    Topology,
    desired,
    normalise_arguments,
)
from rabbitry.check import check, load_spec
from rabbitry.importer import draft_from_topology, topology_from_definitions
from rabbitry.spec.arguments import QUEUE_ARGUMENTS, ArgSpec
from rabbitry.spec.draft import write_spec
from rabbitry.spec.model import QueueType
from rabbitry.spec.policies import POLICY_KEYS
from specs import FLAGSHIP, run_cli

Json = dict[str, Any]


def _sample(spec: ArgSpec) -> Any:
    """A value that fits ``spec``."""
    if spec.choices:
        return spec.choices[-1]
    if spec.kind is bool:
        return True
    if spec.kind is int:
        return max(spec.minimum or 0, 2)
    if spec.name.endswith(("exchange", "-exchange")):
        return "dlx"
    if spec.name == "x-max-age":
        return "7D"
    return "k"


def _type_for(spec: ArgSpec) -> str:
    return next(t.value for t in QueueType if t in spec.queue_types)


def _written(tmp: Path, topology: Topology, notes: tuple[str, ...] = ()) -> tuple[Json, Path]:
    """The spec drafted from ``topology``, written into ``tmp``: its YAML and path."""
    draft = draft_from_topology(topology, notes=notes)
    path = tmp / "topology.yaml"
    write_spec(draft, path, force=True)
    report = check(path)
    assert not report.errors, [d.render() for d in report.errors]
    return yaml.safe_load(path.read_text(encoding="utf-8")), path


def _document(**sections: list[Json]) -> Json:
    return {"rabbit_version": "3.10.8", **sections}


# -- sugar keys, one by one ---------------------------------------------------------


@pytest.mark.parametrize("argument", sorted(QUEUE_ARGUMENTS), ids=str)
def test_each_queue_argument_is_written_as_its_sugar_key(tmp_path: Path, argument: str) -> None:
    spec = QUEUE_ARGUMENTS[argument]
    value = _sample(spec)
    arguments = {argument: value, "x-queue-type": _type_for(spec)}
    document = _document(
        exchanges=[{"name": "dlx", "type": "fanout"}],
        queues=[{"name": "q", "durable": True, "auto_delete": False, "arguments": arguments}],
    )
    topology, _ = topology_from_definitions(document)
    written, path = _written(tmp_path, topology)
    body = written["queues"]["q"]
    if spec.sugar is None:
        assert body["arguments"] == {argument: value}
    else:
        assert body[spec.sugar] == value
        assert "arguments" not in body
    assert desired(load_spec(path)).queues["q"] == topology.queues["q"]


def test_an_alternate_exchange_is_sugar_and_other_arguments_stay_raw(tmp_path: Path) -> None:
    document = _document(
        exchanges=[
            {"name": "spare", "type": "fanout", "durable": False, "auto_delete": True},
            {
                "name": "main",
                "type": "topic",
                "internal": True,
                "arguments": {"alternate-exchange": "spare", "x-custom": 7},
            },
        ],
        queues=[{"name": "q", "arguments": {"x-custom": "v", "x-max-length": 3}}],
    )
    topology, _ = topology_from_definitions(document)
    written, path = _written(tmp_path, topology)
    assert written["exchanges"] == {
        "main": {
            "type": "topic",
            "internal": True,
            "alternate_exchange": "spare",
            "arguments": {"x-custom": 7},
        },
        "spare": {"type": "fanout", "durable": False, "auto_delete": True},
    }
    assert written["queues"]["q"] == {"max_length": 3, "arguments": {"x-custom": "v"}}
    assert desired(load_spec(path)) == topology


def test_bindings_of_every_kind(tmp_path: Path) -> None:
    document = _document(
        exchanges=[
            {"name": "t", "type": "topic"},
            {"name": "h", "type": "headers"},
            {"name": "f", "type": "fanout"},
        ],
        queues=[{"name": "q"}],
        bindings=[
            {"source": "t", "destination": "q", "destination_type": "queue", "routing_key": "a.#"},
            {
                "source": "h",
                "destination": "q",
                "destination_type": "queue",
                "routing_key": "",
                "arguments": {"x-match": "any", "format": "pdf", "size": 3},
            },
            {"source": "t", "destination": "f", "destination_type": "exchange", "routing_key": "#"},
            {
                "source": "amq.topic",
                "destination": "q",
                "destination_type": "queue",
                "routing_key": "k",
                "arguments": {"x-note": 1},
            },
        ],
    )
    topology, _ = topology_from_definitions(document)
    written, path = _written(tmp_path, topology)
    assert sorted(written["bindings"], key=json.dumps) == sorted(
        [
            {"from": "t", "queue": "q", "key": "a.#"},
            {"from": "h", "queue": "q", "match": "any", "headers": {"format": "pdf", "size": 3}},
            {"from": "t", "exchange": "f", "key": "#"},
            {"from": "amq.topic", "queue": "q", "key": "k", "arguments": {"x-note": 1}},
        ],
        key=json.dumps,
    )
    assert desired(load_spec(path)).bindings == topology.bindings


@pytest.mark.parametrize("key", sorted(POLICY_KEYS), ids=str)
def test_each_policy_key_is_sugar_where_the_spec_has_it(tmp_path: Path, key: str) -> None:
    known = POLICY_KEYS[key]
    value = _sample(known.value)
    target = "exchanges" if known.exchanges else "queues"
    document = _document(
        exchanges=[{"name": "dlx", "type": "fanout"}],
        policies=[{"name": "p", "pattern": "^q", "apply-to": target, "definition": {key: value}}],
    )
    if known.operator:
        row = {"pattern": ".*", "apply-to": "queues", "priority": 1, "definition": {key: value}}
        document["parameters"] = [{"component": "operator_policy", "name": "op", "value": row}]
    topology, _ = topology_from_definitions(document)
    written, path = _written(tmp_path, topology)
    policy = written["policies"]["p"]
    if known.sugar is not None:
        assert policy[known.sugar] == value
    else:
        assert policy["definition"] == {key: value}
    assert policy["pattern"] == "^q"
    model = desired(load_spec(path))
    assert model.policies == topology.policies
    assert model.operator_policies == topology.operator_policies
    assert bool(written.get("operator_policies")) == known.operator


# -- what is left out, with a note --------------------------------------------------------


def test_what_a_spec_cannot_hold_is_left_out_with_a_note(tmp_path: Path) -> None:
    document = _document(
        exchanges=[
            {"name": "amq.direct", "type": "direct"},
            {"name": "hash", "type": "x-consistent-hash"},
            {"name": "orphan", "type": "direct", "arguments": {"alternate-exchange": "hash"}},
            {"name": "t", "type": "topic"},
        ],
        queues=[
            {"name": "amq.gen-JzTY20BRgKO-HjmUJj0wLg", "durable": False},
            {"name": "mine", "exclusive": True, "durable": False},
            {"name": "dangling", "arguments": {"x-dead-letter-exchange": "nowhere"}},
            {"name": "odd", "arguments": {"x-max-length": "ten"}},
            {"name": "kept"},
        ],
        bindings=[
            {"source": "hash", "destination": "kept", "destination_type": "queue"},
            {"source": "t", "destination": "mine", "destination_type": "queue"},
            {
                "source": "t",
                "destination": "kept",
                "destination_type": "queue",
                "routing_key": "{x}",
            },
            {
                "source": "",
                "destination": "kept",
                "destination_type": "queue",
                "routing_key": "kept",
            },
            {"source": "t", "destination": "kept", "destination_type": "queue", "routing_key": "k"},
        ],
        policies=[
            {
                "name": "both-a",
                "pattern": "kept",
                "apply-to": "queues",
                "definition": {"expires": 9},
            },
            {"name": "both-b", "pattern": "^k", "apply-to": "all", "definition": {"expires": 8}},
            {"name": "unknown", "pattern": "x", "definition": {"no-such-key": 1}},
            {"name": "pcre", "pattern": "\\Qa\\E", "definition": {"expires": 1}},
            {
                "name": "pointless",
                "pattern": "t",
                "apply-to": "exchanges",
                "definition": {"message-ttl": 1},
            },
        ],
        parameters=[
            {"component": "federation-upstream", "name": "up", "value": {"uri": "amqp://"}},
        ],
        users=[{"name": "guest"}],
    )
    topology, notes = topology_from_definitions(document)
    written, _ = _written(tmp_path, topology, notes)
    assert set(written["exchanges"]) == {"t"}
    assert set(written["queues"]) == {"kept"}
    assert written["bindings"] == [{"from": "t", "queue": "kept", "key": "k"}]
    assert "policies" not in written
    draft = draft_from_topology(topology, notes=notes)
    said = "\n".join(draft.notes)
    for name in (
        "amq.direct",
        "'hash'",
        "'orphan'",
        "amq.gen-JzTY20BRgKO-HjmUJj0wLg",
        "'mine'",
        "'dangling'",
        "'odd'",
        "'{x}'",
        "default exchange",
        "'both-a'",
        "'both-b'",
        "'unknown'",
        "'pcre'",
        "'pointless'",
        "federation-upstream/up",
        "users",
    ):
        assert name in said, name
    assert "exclusive" in said
    assert "x-consistent-hash" in said
    assert "nowhere" in said


# -- whole-broker exports --------------------------------------------------------------------


def _broker_wide() -> Json:
    return {
        "rabbit_version": "3.10.8",
        "vhosts": [{"name": "/"}, {"name": "orders"}, {"name": "empty"}],
        "exchanges": [
            {"name": "root.x", "vhost": "/", "type": "fanout"},
            {"name": "orders.x", "vhost": "orders", "type": "topic"},
        ],
        "queues": [
            {"name": "root.q", "vhost": "/"},
            {"name": "orders.q", "vhost": "orders", "arguments": {"x-queue-type": "quorum"}},
        ],
        "bindings": [
            {
                "source": "orders.x",
                "vhost": "orders",
                "destination": "orders.q",
                "destination_type": "queue",
                "routing_key": "o.*",
            },
        ],
        "policies": [
            {
                "name": "ttl",
                "vhost": "orders",
                "pattern": "^orders",
                "apply-to": "queues",
                "priority": 2,
                "definition": {"message-ttl": 1000},
            },
        ],
        "parameters": [
            {
                "component": "operator_policy",
                "name": "cap",
                "vhost": "orders",
                "value": {
                    "pattern": ".*",
                    "apply-to": "queues",
                    "priority": 0,
                    "definition": {"max-length": 100},
                },
            },
        ],
    }


def test_a_whole_broker_export_gives_each_vhost_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "broker.json"
    source.write_text(json.dumps(_broker_wide()), encoding="utf-8")
    code, out, err = run_cli(["import", "--definitions", str(source), "--vhost", "orders"], capsys)
    assert code == 0, err
    orders = yaml.safe_load(out)
    assert orders["exchanges"] == {"orders.x": {"type": "topic"}}
    assert orders["queues"] == {"orders.q": {"type": "quorum"}}
    assert orders["bindings"] == [{"from": "orders.x", "queue": "orders.q", "key": "o.*"}]
    assert orders["policies"] == {
        "ttl": {"pattern": "^orders", "apply_to": "queues", "priority": 2, "message_ttl": 1000}
    }
    assert orders["operator_policies"] == {
        "cap": {"pattern": ".*", "apply_to": "queues", "max_length": 100}
    }
    assert "messages:" in out
    assert "services:" in out
    code, out, err = run_cli(["import", "--definitions", str(source)], capsys)
    assert code == 0, err
    root = yaml.safe_load(out)
    assert set(root["exchanges"]) == {"root.x"}
    assert set(root["queues"]) == {"root.q"}
    code, out, err = run_cli(["import", "--definitions", str(source), "--vhost", "empty"], capsys)
    assert code == 0, err
    assert yaml.safe_load(out) == {"version": 1}
    code, out, err = run_cli(["import", "--definitions", str(source), "--vhost", "nope"], capsys)
    assert code == 1
    assert not out
    assert str(source) in err
    assert "'orders'" in err
    assert "'nope'" in err


def test_a_per_vhost_export_is_taken_whatever_the_vhost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "vhost.json"
    document = _document(exchanges=[{"name": "x", "type": "direct"}], queues=[], bindings=[])
    source.write_text(json.dumps(document), encoding="utf-8")
    code, out, err = run_cli(["import", "--definitions", str(source), "--vhost", "any"], capsys)
    assert code == 0, err
    assert yaml.safe_load(out)["exchanges"] == {"x": {"type": "direct"}}


def test_the_file_is_written_with_force_only_over_an_existing_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "broker.json"
    source.write_text(json.dumps(_broker_wide()), encoding="utf-8")
    target = tmp_path / "out" / "topology.yaml"
    args = ["import", "--definitions", str(source), "--vhost", "orders", "-o", str(target)]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert not out
    assert "imported 1 exchange, 1 queue, 1 binding, 1 policy" in err
    first = target.read_text(encoding="utf-8")
    assert not check(target).errors
    code, _, err = run_cli(args, capsys)
    assert code == 1
    assert "--force" in err
    assert str(target) in err
    code, _, err = run_cli([*args, "--force"], capsys)
    assert code == 0, err
    assert target.read_text(encoding="utf-8") == first


# -- bad files ----------------------------------------------------------------------------------

BAD_FILES = {
    "not JSON": "{exchanges: [",
    "a list": "[]",
    "no sections": '{"users": []}',
    "queues not a list": '{"queues": {"q": {}}}',
    "an entry not an object": '{"queues": ["q"]}',
    "a name missing": '{"queues": [{"durable": true}]}',
    "a flag not boolean": '{"queues": [{"name": "q", "durable": "yes"}]}',
    "arguments not an object": '{"exchanges": [{"name": "x", "type": "direct", "arguments": []}]}',
    "a bad destination type": (
        '{"bindings": [{"source": "a", "destination": "b", "destination_type": "topic"}]}'
    ),
    "a priority not an integer": (
        '{"policies": [{"name": "p", "pattern": ".", "definition": {}, "priority": "high"}]}'
    ),
    "a vhost not a string": '{"queues": [{"name": "q", "vhost": 3}]}',
    "an operator policy without value": (
        '{"parameters": [{"component": "operator_policy", "name": "p"}]}'
    ),
    "deep nesting": "[" * 100_000,
}


@pytest.mark.parametrize("text", list(BAD_FILES.values()), ids=list(BAD_FILES))
def test_a_bad_file_is_a_message_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    source = tmp_path / "defs.json"
    source.write_text(text, encoding="utf-8")
    code, out, err = run_cli(["import", "--definitions", str(source)], capsys)
    assert code == 1
    assert not out
    assert err.startswith("error: ")
    assert str(source) in err


def test_a_missing_file_or_a_folder_is_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path, status in ((tmp_path / "missing.json", 1), (tmp_path, 2)):
        code, out, err = run_cli(["import", "--definitions", str(path)], capsys)
        assert code == status
        assert not out
        assert str(path) in err


def test_asyncapi_needs_an_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["import", "--asyncapi", str(tmp_path / "a.yaml")], capsys)
    assert code == 2
    assert "-o FILE" in err


# -- random topologies ------------------------------------------------------------------------

NAMES = st.sampled_from(
    [
        "a",
        "b.c",
        "x y",
        "é",
        "1.10",
        "yes",
        "#",
        "k:v",
        "[q]",
        "a,b",
        "{x}",
        "- y",
        "'q'",
        "amq.gen-1",
    ]
)
VALUES = {name: _sample(spec) for name, spec in QUEUE_ARGUMENTS.items()}


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    """Small topologies as a broker (or a hand-edited file) may have them, the odd included."""
    exchange_names = draw(st.lists(NAMES, unique=True, max_size=4))
    exchanges = {}
    for name in exchange_names:
        arguments: Json = {}
        if draw(st.booleans()):
            arguments["alternate-exchange"] = draw(st.sampled_from([*exchange_names, "gone"]))
        if draw(st.booleans()):
            arguments["x-custom"] = draw(st.sampled_from([1, "v", True, [1, "a"]]))
        exchanges[name] = ExchangeState(
            name,
            draw(st.sampled_from(["direct", "fanout", "topic", "headers", "x-delayed-message"])),
            draw(st.booleans()),
            draw(st.booleans()),
            draw(st.booleans()),
            normalise_arguments(arguments),
        )
    queues = {}
    for name in draw(st.lists(NAMES, unique=True, max_size=4)):
        kind = draw(st.sampled_from(["classic", "quorum", "stream"]))
        fitting = sorted(a for a, spec in QUEUE_ARGUMENTS.items() if kind in spec.queue_types)
        pool = sorted(VALUES) if draw(st.integers(0, 3)) == 0 else fitting
        chosen = draw(st.lists(st.sampled_from(pool), unique=True, max_size=3))
        arguments = {a: VALUES[a] for a in chosen}
        if "x-dead-letter-exchange" in arguments:
            arguments["x-dead-letter-exchange"] = draw(st.sampled_from([*exchange_names, ""]))
        queues[name] = QueueState(
            name,
            kind,
            durable=draw(st.integers(0, 3)) > 0,
            auto_delete=draw(st.integers(0, 3)) == 0,
            exclusive=draw(st.integers(0, 3)) == 0,
            arguments=normalise_arguments(arguments),
        )
    sources = [*exchange_names, "amq.topic", "amq.headers", ""]
    bindings = set()
    for _ in range(draw(st.integers(0, 5))):
        to_queue = draw(st.booleans()) and bool(queues)
        table: Json = draw(
            st.sampled_from(
                [{}, {"x-match": "all", "h": "v, w"}, {"h": 1}, {"x-match": "any-with-x", "x-h": 2}]
            )
        )
        bindings.add(
            BindingState(
                draw(st.sampled_from(sources)),
                "queue" if to_queue else "exchange",
                draw(st.sampled_from(sorted(queues) if to_queue else sources[:-1])),
                draw(st.sampled_from(["", "a.#", "*.b", "{id}", "x y", "a,b", "[k]: v"])),
                normalise_arguments(table),
            )
        )
    policies = {}
    for name in draw(st.lists(st.sampled_from(["p1", "p2", "p3"]), unique=True)):
        key = draw(st.sampled_from(sorted(POLICY_KEYS)))
        value = _sample(POLICY_KEYS[key].value)
        if key in ("dead-letter-exchange", "alternate-exchange"):
            value = draw(st.sampled_from([*exchange_names, "gone"]))
        policies[name] = PolicyState(
            name,
            draw(st.sampled_from(["^a", ".*", "b", "(", "^x y$"])),
            draw(st.sampled_from(["queues", "exchanges", "all"])),
            draw(st.integers(0, 1)),
            normalise_arguments({key: value}),
        )
    return Topology(exchanges, queues, frozenset(bindings), policies, {})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topology=topologies())
def test_random_topologies_become_specs_that_pass_check_and_mean_them(
    tmp_path_factory: pytest.TempPathFactory, topology: Topology
) -> None:
    folder = tmp_path_factory.mktemp("random")
    draft = draft_from_topology(topology)
    _, path = _written(folder, topology)
    made = desired(load_spec(path))
    said = "\n".join(draft.notes)
    for name, exchange in topology.exchanges.items():
        if name in made.exchanges:
            assert made.exchanges[name] == exchange
        else:
            assert repr(name) in said
    for name, queue in topology.queues.items():
        if name in made.queues:
            assert made.queues[name] == queue
        else:
            assert repr(name) in said
    assert made.bindings <= topology.bindings
    for binding in topology.bindings - made.bindings:
        assert binding.source == "" or binding.describe() in said
    assert made.policies is not None
    assert topology.policies is not None
    for name, policy in topology.policies.items():
        if name in made.policies:
            assert made.policies[name] == policy
        else:
            assert repr(name) in said


def test_an_asyncapi_document_comes_back_with_its_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = tmp_path / "asyncapi.yaml"
    code, _, err = run_cli(["export", "asyncapi", str(FLAGSHIP), "-o", str(document)], capsys)
    assert code == 0, err
    target = tmp_path / "back" / "topology.yaml"
    code, out, err = run_cli(["import", "--asyncapi", str(document), "-o", str(target)], capsys)
    assert code == 0, err
    assert not out
    original, back = load_spec(FLAGSHIP), load_spec(target)
    assert set(back.messages) == set(original.messages)
    assert set(back.services) == set(original.services)
    assert desired(back) == desired(original)
    assert f"{len(original.messages)} messages" in err
    assert "yours to add" not in err + target.read_text(encoding="utf-8")
