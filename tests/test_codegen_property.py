"""Generated packages for specs nobody wrote by hand: random valid specs, and a hostile one.

Random specs come from a grammar of the keywords the generator models
(types, properties/required/additionalProperties, enum/const, bounds,
lengths, patterns, formats, arrays, free-form objects, oneOf/anyOf, $ref);
each generated package must be formatted and lint-clean under ruff's defaults
(``--isolated``: what the README promises), lint-clean under this project's
rules, import only rabbitry's public API, type-check under ``mypy --strict``,
import, and its strategies must produce instances that both jsonschema (format
checker on) and the runtime's validator accept.
"""

from __future__ import annotations

import ast
import itertools
import json
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from rabbitry.check import check, load_spec
from rabbitry.messaging.contract import contract_data
from specs import write_spec
from test_codegen_support import (
    ROOT,
    assert_passes_ruff_defaults,
    foreign_imports,
    generate_package,
    imported,
    mypy_errors,
    ruff,
)

CACHE = ROOT / ".mypy_cache" / "codegen-tests"
_COUNTER = itertools.count()

# -- a grammar of schemas --------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(
        ["id", "name", "class", "type", "job-id", "with space", "x1", "List", "__dunder", "self"]
    ),
    st.from_regex(r"[a-z][a-zA-Z0-9_]{0,10}", fullmatch=True),
)
PATTERNS = ["^[a-z]{1,5}$", "^[0-9]+$", "x", r"^\d{2}-\w+$", "^(ab|cd)*$"]
FORMATS = ["uuid", "date-time", "date", "email", "ipv4"]
SCALARS = st.one_of(
    st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=6),
    st.integers(-5, 5),
    st.booleans(),
    st.none(),
)


@st.composite
def strings(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    kind = draw(st.sampled_from(["plain", "pattern", "format"]))
    if kind == "pattern":
        schema["pattern"] = draw(st.sampled_from(PATTERNS))
    elif kind == "format":
        schema["format"] = draw(st.sampled_from(FORMATS))
    if kind != "format" and draw(st.booleans()):
        low = draw(st.integers(0, 3))
        schema["minLength"] = low
        schema["maxLength"] = low + draw(st.integers(0, 8))
    return schema


@st.composite
def numbers(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["integer", "number"]))
    schema: dict[str, Any] = {"type": kind}
    low = draw(st.integers(-100, 100))
    if draw(st.booleans()):
        schema["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = low
    if draw(st.booleans()):
        schema["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = low + draw(
            st.integers(2, 500)
        )
    if kind == "integer" and draw(st.booleans()):
        schema["multipleOf"] = draw(st.integers(1, 7))
    return schema


LEAVES = st.one_of(
    strings(),
    numbers(),
    st.just({"type": "boolean"}),
    st.lists(SCALARS, min_size=1, max_size=4, unique_by=json.dumps).map(lambda v: {"enum": v}),
    SCALARS.map(lambda v: {"const": v}),
    strings().map(lambda s: {**s, "type": ["string", "null"]}),
    st.just({"type": "object"}),
    st.just({}),
)


def objects(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        properties = draw(st.dictionaries(NAMES, children, min_size=1, max_size=3))
        required = [k for k in properties if draw(st.booleans())]
        schema = {"type": "object", "properties": properties, "required": required}
        if draw(st.booleans()):
            schema["additionalProperties"] = False
        return schema

    return build()


@st.composite
def tagged(draw: st.DrawFn, children: st.SearchStrategy[Any]) -> dict[str, Any]:
    """A oneOf of objects discriminated by a ``const`` property."""
    tags = draw(st.lists(st.sampled_from(["a", "b", "c-d", "E", "1"]), min_size=2, unique=True))
    options = []
    for tag in tags:
        option = draw(objects(children))
        option["properties"] = {"kind": {"const": tag}, **option["properties"]}
        option["required"] = ["kind", *option["required"]]
        options.append(option)
    return {"oneOf": options}


def compound(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        objects(children),
        st.builds(
            lambda item, low, more: {
                "type": "array",
                "items": item,
                "minItems": low,
                "maxItems": low + more,
            },
            children,
            st.integers(0, 2),
            st.integers(0, 3),
        ),
        tagged(children),
        st.lists(children, min_size=2, max_size=3).map(lambda options: {"anyOf": options}),
        children.map(lambda value: {"type": "object", "additionalProperties": value}),
    )


SCHEMAS = st.recursive(LEAVES, compound, max_leaves=6)


@st.composite
def specs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A spec (as data) and its schema files: shared defs, 1-3 messages, a publisher and a
    consumer of a durable queue and of a run-time queue bound by ``{job_id}``."""
    defs = draw(st.dictionaries(st.sampled_from(["Shared", "Other-def", "x"]), SCHEMAS, max_size=2))
    refs = [{"$ref": f"common.json#/$defs/{name}"} for name in defs]
    field = st.one_of(SCHEMAS, st.sampled_from(refs)) if refs else SCHEMAS
    names = draw(
        st.lists(
            st.one_of(
                st.sampled_from(["Start", "job done", "class", "Str", "Received", "x-y"]),
                st.from_regex(r"[A-Z][a-zA-Z0-9]{0,8}", fullmatch=True),
            ),
            min_size=1,
            max_size=3,
            unique_by=str.lower,
        )
    )
    schemas: dict[str, Any] = {"schemas/common.json": {"$defs": defs}}
    messages = {}
    for index, name in enumerate(names):
        properties = draw(st.dictionaries(NAMES, field, max_size=3))
        properties.pop("job_id", None)
        required = [k for k in properties if draw(st.booleans())]
        schema = {
            "type": "object",
            "properties": {"job_id": {"type": "string", "format": "uuid"}, **properties},
            "required": ["job_id", *required],
            "additionalProperties": draw(st.booleans()),
        }
        schemas[f"schemas/m{index}.json"] = schema
        messages[name] = {"schema": f"schemas/m{index}.json", "exchange": "events"}
    spec = {
        "version": 1,
        "exchanges": {"events": {"type": "topic"}},
        "queues": {"inbox": {}, "live": {"exclusive": True}},
        "bindings": [
            {"from": "events", "queue": "inbox", "key": "#"},
            {"from": "events", "queue": "live", "key": "{job_id}"},
        ],
        "messages": {name: {**m, "routing_key": "{job_id}"} for name, m in messages.items()},
        "services": {
            "producer": {"publishes": names},
            "consumer": {"consumes": {"inbox": names, "live": names[:1]}},
        },
    }
    return spec, schemas


def _validators(spec_path: Path) -> dict[str, tuple[Any, Any]]:
    data = contract_data(load_spec(spec_path))
    return {
        name: (
            Draft202012Validator(m["schema"], format_checker=FormatChecker()),
            jsonschema_rs.validator_for(m["schema"], validate_formats=True),
        )
        for name, m in data["messages"].items()
    }


def _check_package(folder: Path, package: str, data: st.DataObject) -> None:
    """Formatted, lint-clean, strict-typed, importable, and its strategies are valid."""
    out = folder / package
    assert_passes_ruff_defaults(out)
    assert not foreign_imports(out)
    # This project's rules, more of them, but for two it chooses that ruff's defaults leave
    # off: E501 (a description stays one line), E741 (a field ``l`` of the spec).
    linted = ruff("check", "--ignore", "E501,E741", out)
    assert linted.returncode == 0, linted.stdout
    errors = mypy_errors([out], search=[folder], cache=CACHE)
    assert not errors, "\n".join(map(str, errors))
    validators = _validators(folder / "topology.yaml")
    with imported(folder, package) as module:
        strategies = importlib_module(f"{package}.strategies")
        functions = {
            name: getattr(strategies, _function_name(strategies, type_name))
            for name, type_name in _message_types(module).items()
        }
        assert set(functions) == set(validators)
        for name, function in functions.items():
            reference, runtime = validators[name]
            for _ in range(4):
                value = data.draw(function())
                assert reference.is_valid(value), (
                    name,
                    value,
                    next(reference.iter_errors(value)).message,
                )
                assert runtime.is_valid(value), (name, value)
                assert not module.CONTRACT.message(name).faults(value)


def importlib_module(name: str) -> Any:
    import importlib  # noqa: PLC0415

    return importlib.import_module(name)


def _message_types(module: Any) -> dict[str, str]:
    """Message name → its type's name, read from the delivery types: ``Received[Literal[n], T]``."""
    found = {}
    for value in vars(module.deliveries).values():
        if typing.get_origin(value) is module.Received:
            name, body = typing.get_args(value)
            (message,) = typing.get_args(name)
            found[message] = body.__name__
    return found


def _function_name(strategies: Any, type_name: str) -> str:
    for name in dir(strategies):
        function = getattr(strategies, name)
        hints = getattr(function, "__annotations__", {})
        if not name.startswith("_") and callable(function) and "return" in hints:
            args = typing.get_args(hints["return"])
            if args and getattr(args[0], "__name__", None) == type_name:
                return name
    raise AssertionError(f"no strategy for {type_name}")


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # each example runs mypy: no shrinking
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=specs(), data=st.data())
def test_random_specs_generate_sound_packages(
    tmp_path_factory: pytest.TempPathFactory,
    spec: tuple[dict[str, Any], dict[str, Any]],
    data: st.DataObject,
) -> None:
    folder = tmp_path_factory.mktemp("random")
    package = f"random_{next(_COUNTER)}"
    text, schemas = spec
    path = write_spec(folder, {**text, "codegen": {"package": package, "out": package}}, schemas)
    report = check(path)
    assert not report.errors, "\n".join(d.render() for d in report.errors)
    generate_package(path, folder / package)
    _check_package(folder, package, data)


# -- hostile names and descriptions --------------------------------------------------

PWNED = "__import__('os').system('touch PWNED')"
TRIPLE = '"""); import os; os.system("touch PWNED"); ("""'
HOSTILE_STRINGS = [
    PWNED,
    TRIPLE,
    '"',
    "'",
    "\\",
    "\\x00",
    "ends with backslash \\",
    "nul\x00inside",
    "new\nline",
    "crlf\r\n",
    "tab\there",
    "\u202eevil",
    "line\u2028separator",
    "ünïcødé ☃ 名前 \U0001f600",
    "",
]
HOSTILE_KEYS = [PWNED, TRIPLE, "class", "__dunder", "a b", "ünï", "\\", "\x00", "self", "str", '"']


def hostile_spec(folder: Path) -> Path:
    description = " ".join(HOSTILE_STRINGS)
    message_schema = {
        "description": description,
        "type": "object",
        "properties": {
            "job_id": {"type": "string", "format": "uuid", "description": TRIPLE},
            **{key: {"type": "string", "description": key} for key in HOSTILE_KEYS},
            "choice": {"enum": HOSTILE_STRINGS, "description": "\\"},
            "shape": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"kind": {"const": tag}, "n": {"type": "integer"}},
                        "required": ["kind"],
                        "additionalProperties": False,
                    }
                    for tag in ['"', "\\", PWNED]
                ]
            },
            "code": {"type": "string", "pattern": '^(\\\\|"""|\\\\x00)+$'},
        },
        "required": ["job_id", "choice", PWNED, "class", "self"],
        "additionalProperties": False,
    }
    names = [PWNED, 'Evil"""\nimport os', "None", "str", "名前", "class"]
    spec = {
        "version": 1,
        "codegen": {"package": "hostile", "out": "hostile"},
        "exchanges": {TRIPLE: {"type": "topic", "description": TRIPLE}},
        "queues": {
            PWNED: {"description": TRIPLE},
            "live\\'": {"exclusive": True},
        },
        "bindings": [
            {"from": TRIPLE, "queue": PWNED, "key": "#"},
            {"from": TRIPLE, "queue": "live\\'", "key": "{job_id}.{class}.{self}"},
        ],
        "messages": {
            name: {
                "schema": "schemas/evil.json",
                "exchange": TRIPLE,
                "routing_key": "{job_id}.{class}.{self}",
                "description": description,
            }
            for name in names
        },
        "services": {
            TRIPLE: {"publishes": names, "description": description},
            "class": {"consumes": {PWNED: names, "live\\'": names[:2]}},
        },
    }
    return write_spec(folder, spec, {"schemas/evil.json": message_schema})


def test_hostile_spec_generates_safe_code(tmp_path: Path) -> None:
    path = hostile_spec(tmp_path)
    report = check(path)
    assert not report.errors, "\n".join(d.render() for d in report.errors)
    generate_package(path, tmp_path / "hostile")
    # A fresh interpreter imports everything: nothing runs, nothing is written.
    done = subprocess.run(
        [sys.executable, "-c", "import hostile, hostile.strategies"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "PWNED").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile", "schemas", "topology.yaml"]
    assert_passes_ruff_defaults(tmp_path / "hostile")
    assert not foreign_imports(tmp_path / "hostile")
    errors = mypy_errors([tmp_path / "hostile"], search=[tmp_path], cache=CACHE)
    assert not errors, "\n".join(map(str, errors))

    with imported(tmp_path, "hostile") as package:
        # Every string reached the output intact: keys, enum values, descriptions, the contract.
        assert package.CONTRACT.messages.keys() == set(load_spec(path).messages)
        assert contract_data(load_spec(path)) == package._contract.DATA
        types = _message_types(package)
        assert set(types) == {PWNED, 'Evil"""\nimport os', "None", "str", "名前", "class"}
        evil = getattr(package, types[PWNED])
        assert set(evil.__annotations__) == {"job_id", "choice", "shape", "code", *HOSTILE_KEYS}
        assert evil.__required_keys__ == {"job_id", "choice", PWNED, "class", "self"}
        choice = typing.get_type_hints(evil)["choice"]
        assert typing.get_origin(choice) is typing.Literal
        assert list(typing.get_args(choice)) == HOSTILE_STRINGS
        # Descriptions reach docstrings intact (the functional TypedDict's follows it).
        tree = ast.parse((tmp_path / "hostile" / "messages.py").read_text(encoding="utf-8"))
        docs = [
            " ".join(node.value.split())
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        ]
        described = " ".join(" ".join(HOSTILE_STRINGS).split())
        assert any(described in doc for doc in docs)
        assert any(" ".join(TRIPLE.split()) == doc for doc in docs)  # a field's description
        service = next(
            getattr(package, n)
            for n in package.__all__
            if "publish_none" in dir(getattr(package, n))
        )
        assert " ".join(" ".join(HOSTILE_STRINGS).split()) in " ".join(service.__doc__.split())
        strategies = importlib_module("hostile.strategies")
        reference, runtime = _validators(path)[PWNED]
        strategy = getattr(strategies, _function_name(strategies, types[PWNED]))()

        @settings(max_examples=30, database=None, suppress_health_check=list(HealthCheck))
        @given(strategy)
        def valid(value: dict[str, Any]) -> None:
            assert reference.is_valid(value), next(reference.iter_errors(value)).message
            assert runtime.is_valid(value)

        valid()
