"""The generated types under ``mypy --strict``: the flagship, and a spec with every keyword.

Each check writes small "user" modules next to the package and type-checks
them together: lines marked ``# E`` must be errors, and nothing else may be.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, get_type_hints

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from rabbitry.check import load_spec
from rabbitry.messaging.contract import contract_data
from specs import write_spec
from test_codegen_support import (
    FLAGSHIP_PACKAGE,
    ROOT,
    SRC,
    generate_package,
    imported,
    mypy_errors,
    ruff,
)

CACHE = ROOT / ".mypy_cache" / "codegen-tests"


def expected_errors(folder: Path) -> set[tuple[str, int]]:
    return {
        (path.name, number)
        for path in folder.glob("*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if line.rstrip().endswith("# E")
    }


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


FLAGSHIP_GOOD = """
from typing import Literal, assert_type

from jobs_contracts import (
    Finished,
    FinishedOutcome,
    JobsReadyDelivery,
    Server,
    Start,
    StartSuccess,
    Update,
    Worker,
)

JOB = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
START: Start = {"job_id": JOB, "job_type": "render", "steps": 3, "submitted_at": "2024-01-01"}
FINISHED: Finished = {
    "job_id": JOB,
    "outcome": "stopped",
    "steps_done": 1,
    "finished_at": "2024-01-01T00:00:00Z",
}


async def dispatch(server: Server) -> float:
    await server.publish_start(START, timeout=5)
    await server.publish_start(START, correlation_id=JOB, expiration=5000, headers={"a": 1})
    await server.publish_stop({"job_id": JOB, "requested_at": "2024-01-01T00:00:00Z"})
    async with server.subscribe_job_status(job_id=JOB, prefetch=10) as status:
        await status.bind(job_id=JOB)
        async for delivery in status:
            if delivery.type == "Update":
                assert_type(delivery.body, Update)
                return delivery.body["progress"] + delivery.body["step"]
            elif delivery.type == "StartSuccess":
                assert_type(delivery.body, StartSuccess)
            else:
                assert_type(delivery.type, Literal["Finished"])
                assert_type(delivery.body, Finished)
                assert_type(delivery.body["outcome"], FinishedOutcome)
            match delivery.type:
                case "Finished":
                    assert_type(delivery.body, Finished)
                case _:
                    pass
    return 0.0


async def run_job(delivery: JobsReadyDelivery) -> None:
    assert_type(delivery.body, Start)
    print(delivery.body["job_type"], delivery.routing_key, delivery.redelivered)
    assert_type(delivery.correlation_id, str | None)
    assert_type(delivery.priority, int | None)


async def work(worker: Worker) -> None:
    consumer = worker.consume_jobs_ready(run_job, prefetch=1)
    await worker.publish_finished(FINISHED)
    async with worker.subscribe_job_control(job_id=JOB) as control:
        async for stop in control:
            assert_type(stop.body["job_id"], str)
    await consumer.cancel()
"""

FLAGSHIP_BAD = """
from jobs_contracts import Finished, JobStatusDelivery, Server, Start, Stop

JOB = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
wrong_type: Start = {
    "job_id": JOB,
    "job_type": "render",
    "steps": "three",  # E
    "submitted_at": "2024-01-01T00:00:00Z",
}
wrong_enum: Finished = {
    "job_id": JOB,
    "outcome": "exploded",  # E
    "steps_done": 1,
    "finished_at": "2024-01-01T00:00:00Z",
}
missing_key: Stop = {"job_id": JOB}  # E
unknown_key: Stop = {"job_id": JOB, "requested_at": "x", "urgent": True}  # E


async def misuse(server: Server, delivery: JobStatusDelivery) -> None:
    await server.publish_start({"job_id": 7, "job_type": "x", "steps": 1, "submitted_at": "x"})  # E
    await server.publish_stop(wrong_enum)  # E
    await server.publish_start(wrong_type, priority="high")  # E
    await server.publish_start(wrong_type, urgent=True)  # E
    server.subscribe_job_status(job=JOB)  # E
    server.subscribe_job_status(job_id=42)  # E
    if delivery.type == "Update":
        print(delivery.body["outcome"])  # E
    if delivery.type == "Stop":  # E
        pass
"""


def readme_example() -> str:
    """The Python example of the README's "Generated code" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Generated code", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_flagship_under_mypy_strict(tmp_path: Path) -> None:
    """The committed package type-checks; users' right code passes and wrong code fails;
    so does the README's example."""
    user = tmp_path / "user"
    good = write(user, "good.py", FLAGSHIP_GOOD)
    bad = write(user, "bad.py", FLAGSHIP_BAD)
    readme = write(user, "readme.py", readme_example())
    files = [FLAGSHIP_PACKAGE, good, bad, readme]
    errors = mypy_errors(files, search=[SRC], cache=CACHE)
    found = {(name, line) for name, line, _ in errors}
    assert found == expected_errors(user), "\n".join(map(str, errors))
    messages = " ".join(message for _, _, message in errors)
    assert 'TypedDict item "steps" has type "int"' in messages
    assert "\"Literal['completed', 'failed', 'stopped']\"" in messages
    assert 'TypedDict "Update" has no key "outcome"' in messages


# -- a spec with every supported keyword ----------------------------------------------

FEATURES_SPEC = """
version: 1
codegen: {package: features, out: features}
exchanges:
  shapes: {type: topic}
queues:
  drawings: {}
  live: {exclusive: true}
bindings:
  - {from: shapes, queue: drawings, key: "#"}
  - {from: shapes, queue: live, key: "{canvas}.{layer}"}
messages:
  Drawing: {schema: schemas/drawing.json, exchange: shapes, routing_key: "{canvas}.{layer}"}
  Tree: {schema: schemas/tree.json, exchange: shapes, routing_key: "tree.x"}
  Odd: {schema: schemas/odd.json, exchange: shapes, routing_key: "odd.x"}
services:
  painter: {publishes: [Drawing, Tree, Odd]}
  viewer: {consumes: {drawings: [Drawing, Tree, Odd], live: [Drawing]}}
"""

FEATURES_SCHEMAS: dict[str, Any] = {
    "schemas/drawing.json": {
        "type": "object",
        "properties": {
            "canvas": {"type": "string", "pattern": "^[a-z]{1,8}$"},
            "layer": {"type": "integer", "minimum": 0, "maximum": 9},
            "shapes": {
                "type": "array",
                "items": {"$ref": "common.json#/$defs/Shape"},
                "minItems": 1,
                "maxItems": 4,
            },
            "title": {"type": ["string", "null"], "maxLength": 20},
            "scale": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "origin": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
                "additionalProperties": False,
            },
            "meta": {"anyOf": [{"type": "string"}, {"type": "integer", "multipleOf": 5}]},
            "kind": {"const": "drawing"},
            "status": {"enum": ["draft", "final", 3, None]},
            "created": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "author": {"type": "string", "format": "email"},
            "host": {"type": "string", "format": "ipv4"},
            "id": {"$ref": "common.json#/$defs/Id"},
        },
        "required": ["canvas", "layer", "shapes", "kind"],
        "additionalProperties": False,
    },
    "schemas/common.json": {
        "$defs": {
            "Id": {"type": "string", "format": "uuid", "description": "An id."},
            "Shape": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {
                            "shape": {"const": "circle"},
                            "r": {"type": "number", "minimum": 0},
                        },
                        "required": ["shape", "r"],
                        "additionalProperties": False,
                    },
                    {
                        "type": "object",
                        "properties": {
                            "shape": {"const": "square"},
                            "side": {"type": "integer", "minimum": 1},
                        },
                        "required": ["shape", "side"],
                        "additionalProperties": False,
                    },
                ]
            },
        }
    },
    "schemas/tree.json": {
        "type": "object",
        "properties": {
            "label": {"type": "string", "maxLength": 5},
            "children": {"type": "array", "items": {"$ref": "#"}, "maxItems": 2},
        },
        "required": ["label"],
        "additionalProperties": False,
    },
    "schemas/odd.json": {
        "type": "object",
        "properties": {
            "ids": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
            "half": {"type": "number", "multipleOf": 0.5},
            "not3": {"type": "integer", "not": {"const": 3}},
            "addr": {"type": "string", "format": "ipv6"},
            "name with space": {"type": "string"},
            "class": {"type": "boolean"},
        },
        "required": ["ids", "name with space"],
    },
}

FEATURES_GOOD = """
from typing import assert_type

from features import Drawing, Odd, Painter, Shape, ShapeCircle, ShapeSquare, Tree, Viewer


def area(shape: Shape) -> float:
    if shape["shape"] == "circle":
        assert_type(shape, ShapeCircle)
        return 3.14 * shape["r"] ** 2
    assert_type(shape, ShapeSquare)
    return float(shape["side"] ** 2)


DRAWING: Drawing = {
    "canvas": "a",
    "layer": 1,
    "shapes": [{"shape": "circle", "r": 1}, {"shape": "square", "side": 2}],
    "kind": "drawing",
    "title": None,
    "status": 3,
    "tags": {"a": "b"},
    "origin": {"x": 1, "y": 2},
    "meta": "anything",
}
TREE: Tree = {"label": "root", "children": [{"label": "leaf", "children": []}]}
ODD: Odd = {"ids": [1, 2], "name with space": "x", "class": True}


async def paint(painter: Painter) -> None:
    await painter.publish_drawing(DRAWING)
    await painter.publish_tree(TREE)
    await painter.publish_odd(ODD)


async def watch(viewer: Viewer) -> None:
    async with viewer.subscribe_live(canvas="a", layer=1) as live:
        async for delivery in live:
            assert_type(delivery.body, Drawing)
"""

FEATURES_BAD = """
from features import Drawing, Tree, Viewer

wrong_variant: Drawing = {
    "canvas": "a",
    "layer": 1,
    "shapes": [{"shape": "triangle", "r": 1}],  # E
    "kind": "drawing",
}
wrong_const: Drawing = {"canvas": "a", "layer": 1, "shapes": [], "kind": "painting"}  # E
wrong_null: Drawing = {"canvas": "a", "layer": 1, "shapes": [], "kind": "drawing", "title": 5}  # E
wrong_child: Tree = {"label": "x", "children": [{"name": "y"}]}  # E


def subscribe(viewer: Viewer) -> None:
    viewer.subscribe_live(canvas="a", layer="1")  # E
"""


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("features")
    spec = write_spec(folder, FEATURES_SPEC, FEATURES_SCHEMAS)
    generate_package(spec, folder / "features")
    return folder


def test_features_under_mypy_strict(features: Path) -> None:
    user = features / "user"
    good = write(user, "good.py", FEATURES_GOOD)
    bad = write(user, "bad.py", FEATURES_BAD)
    errors = mypy_errors([features / "features", good, bad], search=[features], cache=CACHE)
    found = {(name, line) for name, line, _ in errors}
    assert found == expected_errors(user), "\n".join(map(str, errors))


def test_features_are_formatted_and_clean(features: Path) -> None:
    formatted = ruff("format", "--check", "--diff", features / "features")
    assert formatted.returncode == 0, formatted.stdout
    linted = ruff("check", features / "features")
    assert linted.returncode == 0, linted.stdout


def test_features_types_at_run_time(features: Path) -> None:
    with imported(features, "features") as package:
        assert package.Drawing.__required_keys__ == {"canvas", "layer", "shapes", "kind"}
        odd = package.Odd.__annotations__
        assert set(odd) == {"ids", "half", "not3", "addr", "name with space", "class"}
        assert package.Odd.__required_keys__ == {"ids", "name with space"}
        assert get_type_hints(package.Tree)["children"] == list[package.Tree]  # recursive
        assert get_type_hints(package.Viewer.subscribe_live) == {
            "canvas": str,
            "layer": int,
            "prefetch": int | None,
            "return": package.LiveSubscription,
        }


@pytest.mark.parametrize("message", ["Drawing", "Tree", "Odd"])
def test_features_strategies_make_valid_messages(features: Path, message: str) -> None:
    spec = load_spec(features / "topology.yaml")
    schema = contract_data(spec)["messages"][message]["schema"]
    reference = Draft202012Validator(schema, format_checker=FormatChecker())
    runtime = jsonschema_rs.validator_for(schema, validate_formats=True)
    with imported(features, "features") as package:
        from features import strategies  # noqa: PLC0415

        assert package is not None
        strategy = getattr(strategies, message.lower())()
        text = Path(strategies.__file__).read_text(encoding="utf-8")

        @settings(max_examples=40, database=None, suppress_health_check=list(HealthCheck))
        @given(st.data())
        def valid(data: st.DataObject) -> None:
            value = data.draw(strategy)
            assert reference.is_valid(value), next(reference.iter_errors(value)).message
            assert runtime.is_valid(value), value
            json.dumps(value)

        valid()
    # Only the message whose schema uses what the model leaves out is checked by the validator.
    assert text.count("_checked(") == 2  # the call for Odd, and the helper's definition
    assert "st.deferred(tree)" in text
