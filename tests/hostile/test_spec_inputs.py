"""Items 4 and 9: a spec, a schema or a file they name must never exhaust a machine or crash.

Each attack runs the real command line in a child process under a 2 GiB
address-space limit and a timeout: it must end with exit 1 and a located
error (``FILE:LINE:COL: error: ...``), never exit 70 ("internal error"), never
a traceback.  Its peak memory is read from the child's own rusage (``wait4``).

Measured on the code before the fix (this machine, 2 shared cores):
an 830-byte alias bomb in ``arguments``, ``headers`` or ``version`` ran 19 s
to MemoryError at the 2 GiB limit (exit 70); ``schema: /dev/zero`` MemoryError
in 2 s (1.9 GB); a FIFO as a schema hung past 60 s; YAML nested 500 deep,
a schema of 100 nested ``properties``, a ``$ref`` chain 1,000 subschemas deep
(at generate) and ``allOf``/``$ref`` cycles (at ``check --against``) raised
RecursionError (exit 70); ``$ref: file:///...`` passed check and crashed
generate with KeyError.  After: each is refused in about a second, under 100 MB.
The bounds below (30 s, 400 MB) are generous multiples of that.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rabbitry.codegen import render
from rabbitry.spec import Code, read
from rabbitry.spec._files import MAX_FILE_BYTES
from rabbitry.spec._yaml import (
    MAX_ALIASED,
    MAX_DEPTH,
    YamlError,
    YMap,
    YNode,
    YSeq,
    parse_yaml,
)
from specs import write_spec

DRAFT = "https://json-schema.org/draft/2020-12/schema"
#: The child's address space: an unbounded expansion dies at this, with exit 70.
MEMORY_LIMIT = 2 << 30
SECONDS = 30.0
PEAK_MB = 400.0

SPEC = """\
version: 1
exchanges:
  ex: {type: topic}
queues:
  q: {}
bindings:
  - {from: ex, queue: q, key: "#"}
messages:
  M:
    schema: s.json
    exchange: ex
    routing_key: k
"""
OK_SCHEMA = {"$schema": DRAFT, "type": "object"}


@dataclass(frozen=True)
class Run:
    code: int | None  # None: killed by the timeout
    out: str
    err: str
    seconds: float
    peak_mb: float


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def cli_peak(folder: Path, *args: str, timeout: float = 90.0) -> Run:
    """``cli``, with the peak memory of this one child (``wait4``), not of all children."""
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "rabbitry", *args],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_limit,  # noqa: PLW1509 - sets one rlimit, touches no lock
    )
    assert child.stdout is not None
    assert child.stderr is not None
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            child.kill()
            os.wait4(child.pid, 0)
            return Run(None, "", "", time.monotonic() - started, 0.0)
        time.sleep(0.05)
    out, err = child.stdout.read().decode(), child.stderr.read().decode()
    child.stdout.close()
    child.stderr.close()
    child.returncode = os.waitstatus_to_exitcode(status)
    return Run(child.returncode, out, err, time.monotonic() - started, usage.ru_maxrss / 1024)


def refused(run: Run, where: str, *words: str) -> None:
    """Exit 1, a located error at ``where`` (``FILE:LINE``) saying ``words``, within bounds."""
    assert run.code is not None, f"still running after {run.seconds:.0f} s"
    assert run.code == 1, f"exit {run.code}: {run.err[-600:]}"
    said = run.out + run.err
    assert "Traceback" not in said, said[-600:]
    assert "internal error" not in said, said[-600:]
    located = [
        line for line in said.splitlines() if line.strip().startswith(where) and "error:" in line
    ]
    assert located, f"no error located at {where}: {said[-600:]}"
    for word in words:
        assert any(word in line for line in located), f"{word!r} not in {located}"
    assert run.seconds < SECONDS, f"took {run.seconds:.1f} s"
    assert run.peak_mb < PEAK_MB, f"peak {run.peak_mb:.0f} MB"


def bomb(levels: int = 9, fan: int = 9) -> list[str]:
    """The classic alias bomb: ``fan ** levels`` values from a few hundred bytes."""
    lines = ["a0: &a0 [" + ", ".join(["x"] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]")
    return lines


def anchors(lines: list[str]) -> str:
    return "x-anchors:\n" + "".join(f"  {line}\n" for line in lines)


def spec_dir(tmp: Path, spec: str = SPEC, schema: Any = OK_SCHEMA) -> Path:
    files = {"s.json": schema if isinstance(schema, str) else json.dumps(schema)}
    write_spec(tmp, spec, files)
    return tmp


# -- item 4: alias bombs ------------------------------------------------------------


@pytest.mark.parametrize(
    ("slot", "spec"),
    [
        ("arguments", anchors(bomb()) + SPEC.replace("  q: {}", "  q:\n    arguments: {x-b: *a8}")),
        ("headers", anchors(bomb()) + SPEC + "    headers: {h: *a8}\n"),
        ("version", anchors(bomb()) + SPEC.replace("version: 1", "version: *a8")),
    ],
)
def test_alias_bomb_is_refused_where_it_expands(tmp_path: Path, slot: str, spec: str) -> None:
    assert len(spec.split("x-anchors:", 1)[1].split("version", 1)[0]) < 1_000  # a tiny file
    run = cli_peak(spec_dir(tmp_path, spec), "check")
    refused(run, "topology.yaml:", "alias *a", f"past {MAX_ALIASED:,} values")


def test_merge_key_bomb_is_refused(tmp_path: Path) -> None:
    """``<<: [*m, *m]`` doubles at each level.  PyYAML 6.0.2+ drops the repeated keys while
    merging (older versions built 2^30 entries): the bound holds whichever PyYAML is used."""
    lines = ["m0: &m0 {k0: 1}"]
    lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}" for i in range(1, 30)]
    run = cli_peak(spec_dir(tmp_path, anchors(lines) + SPEC), "check")
    refused(run, "topology.yaml:", "alias *m")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(levels=st.integers(1, 12), fan=st.integers(1, 12))
def test_any_alias_fan_out_is_built_or_refused_in_bounds(levels: int, fan: int) -> None:
    """Whatever the fan-out and depth: either the values are built (and are few enough),
    or the document is refused at an alias, before anything large exists."""
    text = "\n".join(bomb(levels, fan)) + "\n"
    started = time.monotonic()
    try:
        tree, _ = parse_yaml(text, "t.yaml")
    except YamlError as exc:
        (problem,) = exc.diagnostics
        assert problem.code is Code.YAML
        assert "alias *a" in problem.message
        assert problem.location.line >= 1
    else:
        assert _count(tree.plain()) <= MAX_ALIASED + 2 * levels * fan
    assert time.monotonic() - started < 5.0


def _count(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + len(value) + sum(_count(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_count(v) for v in value)
    return 1


# -- item 4: files that are not files -----------------------------------------------


def test_dev_zero_as_schema_is_refused(tmp_path: Path) -> None:
    run = cli_peak(spec_dir(tmp_path, SPEC.replace("s.json", "/dev/zero")), "check")
    refused(run, "topology.yaml:10:", "/dev/zero is a device, not a regular file")


def test_fifo_as_schema_is_refused_without_waiting(tmp_path: Path) -> None:
    write_spec(tmp_path, SPEC)
    os.mkfifo(tmp_path / "s.json")
    run = cli_peak(tmp_path, "check")
    refused(run, "topology.yaml:10:", "FIFO")


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_spec_that_is_not_a_regular_file_is_refused(tmp_path: Path, special: str) -> None:
    if special == "fifo":
        os.mkfifo(tmp_path / "t.yaml")
        name = "t.yaml"
    else:
        name = special
    run = cli_peak(tmp_path, "check", "-f", name)
    refused(run, f"{name}:1:1", "not a regular file")


def test_a_schema_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    spec_dir(tmp_path)
    with (tmp_path / "s.json").open("wb") as file:  # sparse: no disk is used
        file.truncate(MAX_FILE_BYTES + 1)
    run = cli_peak(tmp_path, "check")
    refused(run, "topology.yaml:10:", "larger than 16 MiB")


# -- item 9: nesting ------------------------------------------------------------------


@pytest.mark.parametrize(("depth", "kind"), [(500, "list"), (900, "map"), (65, "list")])
def test_deep_yaml_is_refused_where_it_goes_too_deep(tmp_path: Path, depth: int, kind: str) -> None:
    value = "[" * depth + "]" * depth if kind == "list" else "{a: " * depth + "1" + "}" * depth
    spec = SPEC.replace("version: 1", f"version: 1\nx-deep: {value}")
    run = cli_peak(spec_dir(tmp_path, spec), "check")
    refused(run, "topology.yaml:2:", f"deeper than {MAX_DEPTH} levels")


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 900).flatmap(
        lambda n: st.lists(
            st.sampled_from(["list"] * 4 + ["map"] * 4 + ["alias"]), min_size=n, max_size=n
        )
    )
)
def test_any_nesting_is_built_or_refused_located(shape: list[str]) -> None:
    """Random nesting of lists, mappings and aliases (each reusing the value so far):
    either it is read and walkable (``plain``), or refused with a located error."""
    text = "base: &v0 1\n"
    value = "*v0"
    for index, kind in enumerate(shape):
        if kind == "list":
            value = f"[{value}]"
        elif kind == "map":
            value = f"{{k: {value}}}"
        else:
            text += f"n{index}: &v{index + 1} [{value}, {value}]\n"
            value = f"*v{index + 1}"
    text += f"top: {value}\n"
    try:
        tree, _ = parse_yaml(text, "t.yaml")
    except YamlError as exc:
        (problem,) = exc.diagnostics
        assert problem.location.line >= 1
        assert problem.code is Code.YAML
        assert str(MAX_DEPTH) in problem.message or f"{MAX_ALIASED:,}" in problem.message
    else:
        assert _height(tree) <= MAX_DEPTH + 1
        tree.plain()


def _height(node: YNode) -> int:
    if isinstance(node, YMap):
        return 1 + max((_height(v) for _, v in node.entries.values()), default=0)
    if isinstance(node, YSeq):
        return 1 + max((_height(v) for v in node.items), default=0)
    return 1


def nested_properties(levels: int) -> str:
    head = '{"type": "object", "properties": {"p": '
    return (
        f'{{"$schema": "{DRAFT}", "allOf": [{head * levels}{{"type": "string"}}{"}}" * levels}]}}'
    )


@pytest.mark.parametrize("levels", [100, 1000])
def test_deeply_nested_schema_is_refused_located(tmp_path: Path, levels: int) -> None:
    run = cli_peak(spec_dir(tmp_path, schema=nested_properties(levels)), "check")
    refused(run, "s.json:1:", "nests deeper than")


def ref_chain(defs: int, levels: int) -> str:
    """``$defs`` d0 → d1 → ... each nesting ``levels`` objects before its ``$ref``."""
    head = '{"type": "object", "properties": {"p": '
    body = []
    for i in range(defs):
        inner = f'{{"$ref": "#/$defs/d{i + 1}"}}' if i + 1 < defs else '{"type": "string"}'
        body.append(f'"d{i}": {head * levels}{inner}{"}}" * levels}')
    return f'{{"$schema": "{DRAFT}", "$ref": "#/$defs/d0", "$defs": {{{", ".join(body)}}}}}'


@pytest.mark.parametrize("command", ["check", "generate"])
def test_a_ref_chain_too_deep_to_walk_is_refused(tmp_path: Path, command: str) -> None:
    """Each file nests little, but the $refs chain 40 x 26 = 1,040 steps: a walker recursing
    at each step (codegen did) runs out of stack."""
    folder = spec_dir(tmp_path, schema=ref_chain(40, 25))
    run = cli_peak(folder, command, *(["--out", "out"] if command == "generate" else []))
    refused(run, "s.json:1:1", "subschemas deep")


def test_a_long_ref_chain_within_the_bound_is_generated(tmp_path: Path) -> None:
    """The bound is not a slowdown in disguise: 7 x 17 = 119 steps still generate."""
    run = cli_peak(spec_dir(tmp_path, schema=ref_chain(7, 16)), "generate", "--out", "out")
    assert run.code == 0, run.err[-600:]


# -- item 9: $ref that escapes or loops ----------------------------------------------


def test_file_uri_ref_is_refused_at_check(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"type": "string"}')
    target = (tmp_path / "c.json").as_uri()
    schema = {"$schema": DRAFT, "type": "object", "properties": {"a": {"$ref": target}}}
    folder = spec_dir(tmp_path, schema=schema)
    for command in (["check"], ["generate", "--out", "out"]):
        refused(cli_peak(folder, *command), "s.json:1:", "absolute path")
    old = tmp_path / "old"
    old.mkdir()
    spec_dir(old)
    refused(cli_peak(folder, "check", "--against", "old/topology.yaml"), "s.json:1:")


def test_absolute_path_ref_is_refused(tmp_path: Path) -> None:
    schema = {"$schema": DRAFT, "properties": {"a": {"$ref": str(tmp_path / "c.json")}}}
    (tmp_path / "c.json").write_text('{"type": "string"}')
    refused(cli_peak(spec_dir(tmp_path, schema=schema), "check"), "s.json:1:", "absolute path")


CYCLES = {
    "root": {"$ref": "#"},
    "allOf-root": {"allOf": [{"$ref": "#"}]},
    "anyOf-root": {"anyOf": [{"$ref": "#"}, {"type": "string"}]},
    "not-root": {"not": {"$ref": "#"}},
    "pair": {
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
        "$ref": "#/$defs/a",
    },
    "allOf-def": {
        "$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}},
        "type": "object",
        "properties": {"x": {"$ref": "#/$defs/a"}},
    },
    "self-property": {"type": "object", "properties": {"x": {"$ref": "#/properties/x"}}},
}


@pytest.mark.parametrize("name", sorted(CYCLES))
def test_a_cycle_that_reads_nothing_is_refused_at_check(tmp_path: Path, name: str) -> None:
    folder = spec_dir(tmp_path, schema={"$schema": DRAFT, **CYCLES[name]})
    refused(cli_peak(folder, "check"), "s.json:1:", "$ref cycle")


def test_a_cycle_in_the_old_spec_is_refused_by_check_against(tmp_path: Path) -> None:
    """``check --against`` recursed without end over ``allOf: [{$ref: '#'}]`` (exit 70)."""
    spec_dir(tmp_path, schema={"$schema": DRAFT, "properties": {"x": {"type": "string"}}})
    old = tmp_path / "old"
    old.mkdir()
    spec_dir(old, schema={"$schema": DRAFT, **CYCLES["allOf-def"]})
    refused(cli_peak(tmp_path, "check", "--against", "old/topology.yaml"), "old/s.json:1:")


def test_a_recursive_schema_that_reads_into_the_value_is_fine(tmp_path: Path) -> None:
    node = {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}
    schema = {"$schema": DRAFT, "$defs": {"node": node}, "$ref": "#/$defs/node"}
    spec, problems = read(spec_dir(tmp_path, schema=schema) / "topology.yaml")
    assert spec is not None
    assert not [p for p in problems if p.code is Code.SCHEMA_REF]


#: Keywords that apply their schema to the same value (a cycle of these never ends) and
#: keywords that go down into it (a cycle through one of these ends with the value).
SAME = ["$ref", "allOf", "anyOf", "oneOf", "not"]
DOWN = ["properties", "items"]


def _wrap(keyword: str, ref: str) -> dict[str, Any]:
    """A schema that reaches ``ref`` through ``keyword``."""
    target = {"$ref": ref}
    if keyword == "$ref":
        return target
    return {
        "allOf": {"allOf": [target]},
        "anyOf": {"anyOf": [target, {"type": "null"}]},
        "oneOf": {"oneOf": [target]},
        "not": {"not": target},
        "properties": {"type": "object", "properties": {"p": target}},
        "items": {"type": "array", "items": target},
    }[keyword]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.integers(1, 5).flatmap(
        lambda n: st.lists(
            st.tuples(st.integers(0, n - 1), st.sampled_from(SAME + DOWN)),
            min_size=n,
            max_size=n,
        )
    )
)
def test_a_ref_graph_is_refused_exactly_when_a_cycle_reads_nothing(
    tmp_path: Path, edges: list[tuple[int, str]]
) -> None:
    """``$defs`` d0..dn, each pointing at one other through one keyword: check reports a
    cycle exactly when one exists through same-value keywords only; when it reports
    none, code generation (a recursive walk over the same graph) succeeds."""
    defs: dict[str, Any] = {}
    for index, (target, keyword) in enumerate(edges):
        ref = f"#/$defs/d{target}"
        defs[f"d{index}"] = _wrap(keyword, ref)
    schema = {"$schema": DRAFT, "$defs": defs, "$ref": "#/$defs/d0"}
    folder = tmp_path / f"g{abs(hash(json.dumps(edges)))}"
    folder.mkdir(exist_ok=True)
    spec, problems = read(spec_dir(folder, schema=schema) / "topology.yaml")
    reported = any("$ref cycle" in p.message for p in problems)
    assert reported == _has_same_value_cycle(edges)
    if not [p for p in problems if p.severity.value == "error"]:
        assert spec is not None
        render(spec, "contracts")


def _has_same_value_cycle(edges: list[tuple[int, str]]) -> bool:
    for start in range(len(edges)):
        seen, node = set(), start
        while node not in seen:
            seen.add(node)
            target, keyword = edges[node]
            if keyword in DOWN:
                break
            node = target
            if node == start:
                return True
    return False
