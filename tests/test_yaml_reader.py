"""``parse_yaml`` reads the parser's events once; the two-pass reader it replaced is the reference.

The reference below is the reader as it was: PyYAML's ``compose`` (the node
graph), then a walk over it into located nodes.  Only its merge keys are
worked out here by YAML's rule (own keys win, then the earlier mapping merged,
each merged mapping as it reads) rather than by PyYAML 6.0.4's
``flatten_mapping``, which keeps the first of two equal keys only when Python
happens to share their text (single characters) and the last otherwise.
Random documents mix block and flow style, anchors and aliases (recursive
ones too), merges, tags, values no tag can build, duplicate keys and lists or
mappings written as keys: the trees, their locations and the problems must be
the same, and a document one refuses the other refuses too.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from rabbitry.spec._yaml import MAX_DEPTH, YamlError, YMap, YNode, YScalar, YSeq, parse_yaml
from rabbitry.spec.diagnostics import Code, Diagnostic
from rabbitry.spec.model import Location

_MERGE = "tag:yaml.org,2002:merge"


# -- the reference: compose, then walk ------------------------------------------------


def _loc(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Reference:
    def __init__(self, file: str) -> None:
        self.file = file
        self.constructor = yaml.SafeLoader("")
        self.problems: list[Diagnostic] = []
        self.done: dict[int, YNode] = {}

    def walk(self, node: yaml.Node) -> YNode:
        known = self.done.get(id(node))
        if known is not None:
            return known
        loc = _loc(self.file, node)
        result: YNode
        if isinstance(node, yaml.MappingNode):
            self.done[id(node)] = YMap({}, loc)
            result = self.mapping(node, loc)
        elif isinstance(node, yaml.SequenceNode):
            self.done[id(node)] = YSeq((), loc)
            result = YSeq(tuple(self.walk(item) for item in node.value), loc)
        else:
            result = YScalar(self.scalar(node, loc), loc, str(node.value))
        self.done[id(node)] = result
        return result

    def scalar(self, node: yaml.Node, loc: Location) -> Any:
        if node.tag == "tag:yaml.org,2002:str":
            return node.value
        try:
            return self.constructor.construct_object(node, deep=True)
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
            self.problems.append(
                Diagnostic(
                    loc,
                    Code.YAML,
                    f"YAML: {node.value!r} cannot be read as {node.tag.rsplit(':', 1)[-1]}: {exc}",
                    "quote it to make it a string, or fix the value",
                )
            )
            return str(node.value)

    def mapping(self, node: yaml.MappingNode, loc: Location) -> YMap:
        own: dict[str, Location] = {}
        merged: dict[str, tuple[Location, YNode]] = {}
        entries: dict[str, tuple[Location, YNode]] = {}
        for key_node, value_node in node.value:
            where = _loc(self.file, key_node)
            if key_node.tag == _MERGE:  # a list or mapping not yet walked (recursion) is empty
                value = self.walk(value_node)
                for source in value.items if isinstance(value, YSeq) else (value,):
                    if not isinstance(source, YMap):
                        raise _Refused(value_node, "expected a mapping for merging")
                    for key, entry in source.entries.items():
                        merged.setdefault(key, entry)
                continue
            key = self.key(key_node)
            if key in own:
                self.problems.append(
                    Diagnostic(
                        where,
                        Code.DUPLICATE_KEY,
                        f"duplicate key {key!r} (first at line {own[key].line})",
                        "keep one of them: YAML would silently use the last",
                    )
                )
            else:
                own[key] = where
            entries[key] = (where, self.walk(value_node))
        merged.update(entries)
        return YMap(merged, loc)

    def key(self, key_node: yaml.Node) -> str:
        if isinstance(key_node, yaml.ScalarNode):
            return str(key_node.value)
        where = _loc(self.file, key_node)
        problem = Diagnostic(
            where,
            Code.YAML,
            "a mapping key must be a plain name, not a list or mapping",
            "write the key as a string",
        )
        if problem not in self.problems:
            self.problems.append(problem)
        return f"<key at {where}>"


class _Refused(Exception):
    def __init__(self, node: yaml.Node, what: str) -> None:
        self.node = node
        super().__init__(what)


def reference(text: str, file: str) -> tuple[YNode, list[Diagnostic]] | None:
    """The tree and problems as the reference reads them; ``None``: it refuses the text."""
    try:
        root = yaml.compose(text, Loader=yaml.CSafeLoader)
        if root is None:
            return YMap({}, Location(file, 1, 1)), []
        walker = _Reference(file)
        return walker.walk(root), walker.problems
    except (yaml.YAMLError, _Refused):
        return None


# -- random documents ---------------------------------------------------------------

_WORDS = ["a", "b", "k", "kk", "name", "on", "1", "1.10", "0x10", "~", "", "2020-13-45"]
_KEYS = ["a", "b", "k", "kk", "on", "1"]


class _Writer:
    """Writes a YAML document (mostly valid) left to right, so that an alias may name
    only an anchor already written, the one still open included (recursion)."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.anchors: list[str] = []

    def anchor(self) -> str:
        if self.draw(st.integers(0, 3)) != 0:
            return ""
        name = f"n{len(self.anchors) + 1}"
        self.anchors.append(name)
        return f"&{name} "

    def alias(self) -> str:
        if self.draw(st.integers(0, 29)) == 0:
            return "*nowhere"
        return "*" + self.draw(st.sampled_from(self.anchors)) if self.anchors else "{}"

    def scalar(self) -> str:
        word = self.draw(st.sampled_from(_WORDS))
        form = self.draw(st.sampled_from(["plain", "plain", "quoted", "int", "bool", "foreign"]))
        if form == "quoted" or word == "":
            return f"'{word}'"
        if form in ("int", "bool"):
            return f"!!{form} {word}"
        if form == "foreign" and self.draw(st.integers(0, 5)) == 0:
            return f"!foo {word}"
        return word

    def key(self) -> str:
        choice = self.draw(st.integers(0, 19))
        if choice == 0:
            return "[" + self.scalar() + "]"  # a list as a key
        if choice == 1 and self.anchors:
            return "*" + self.draw(st.sampled_from(self.anchors))  # an alias as a key
        if choice < 4:
            return "<<"
        return self.draw(st.sampled_from(_KEYS))

    def merge_value(self) -> str:
        choice = self.draw(st.integers(0, 11))
        if choice == 0:
            return self.scalar()
        if choice == 1:
            return "[" + ", ".join(self.alias() for _ in range(self.draw(st.integers(1, 3)))) + "]"
        if choice == 2:
            return self.flow(2)
        return self.alias()

    def flow(self, depth: int) -> str:
        choice = self.draw(st.integers(0, 9 if depth > 0 else 3))
        if choice < 2:
            return self.anchor() + self.scalar()
        if choice < 4:
            return self.alias()
        head = self.anchor()
        if choice < 7:
            items = [self.flow(depth - 1) for _ in range(self.draw(st.integers(0, 3)))]
            return head + "[" + ", ".join(items) + "]"
        pairs = []
        for _ in range(self.draw(st.integers(0, 4))):
            k = self.key()
            pairs.append(f"{k}: {self.merge_value() if k == '<<' else self.flow(depth - 1)}")
        return head + "{" + ", ".join(pairs) + "}"

    def block(self, depth: int, indent: str) -> str:
        lines = []
        for _ in range(self.draw(st.integers(1, 4))):
            k = self.draw(st.sampled_from([*_KEYS, "<<", "list"]))
            if k == "<<":
                lines.append(f"{indent}<<: {self.merge_value()}")
            elif k == "list" and depth > 0:
                lines.append(f"{indent}list:")
                lines += [
                    f"{indent}  - {self.flow(1)}" for _ in range(self.draw(st.integers(1, 3)))
                ]
            elif depth > 0 and self.draw(st.booleans()):
                lines.append(f"{indent}{k}: {self.anchor()}".rstrip())
                lines.append(self.block(depth - 1, indent + "  "))
            else:
                lines.append(f"{indent}{k}: {self.flow(2)}")
        return "\n".join(lines)


@st.composite
def documents(draw: st.DrawFn) -> str:
    return _Writer(draw).block(2, "") + "\n"


def _same(a: YNode, b: YNode, path: str = "$") -> None:
    assert type(a) is type(b), (path, a, b)
    assert a.loc == b.loc, (path, a.loc, b.loc)
    if isinstance(a, YScalar):
        assert isinstance(b, YScalar)
        assert (type(a.value), a.value, a.text) == (type(b.value), b.value, b.text), path
    elif isinstance(a, YSeq):
        assert isinstance(b, YSeq)
        assert len(a.items) == len(b.items), path
        for i, (x, y) in enumerate(zip(a.items, b.items, strict=True)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert isinstance(a, YMap)
        assert isinstance(b, YMap)
        assert list(a.entries) == list(b.entries), (path, list(a.entries), list(b.entries))
        for key, (where, value) in a.entries.items():
            assert where == b.entries[key][0], (path, key)
            _same(value, b.entries[key][1], f"{path}.{key}")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_the_one_pass_reader_reads_what_compose_and_walk_read(text: str) -> None:
    expected = reference(text, "d.yaml")
    if expected is None:
        with pytest.raises(YamlError) as caught:
            parse_yaml(text, "d.yaml")
        (problem,) = caught.value.diagnostics
        assert problem.code is Code.YAML
        assert problem.location.file == "d.yaml"
        assert problem.location.line >= 1
        return
    tree, problems = parse_yaml(text, "d.yaml")
    _same(expected[0], tree)
    assert sorted(problems) == sorted(expected[1])  # every reader of them sorts them


def test_a_merged_mapping_is_merged_as_it_reads() -> None:
    """Its own duplicate keeps the last value there, and so where it is merged (PyYAML 6.0.4
    merges the first ``k`` and the last ``kk``); the earlier of two merged mappings wins."""
    text = "a: &a {k: 1, k: 2, kk: 1, kk: 2}\nb: &b {k: 3, kk: 3}\nc: {<<: [*a, *b]}\n"
    tree, problems = parse_yaml(text, "f")
    assert isinstance(tree, YMap)
    assert tree.plain()["c"] == {"k": 2, "kk": 2} == tree.plain()["a"]
    assert [p.code for p in problems] == [Code.DUPLICATE_KEY, Code.DUPLICATE_KEY]


def test_an_anchor_defined_twice_is_refused_at_the_second() -> None:
    with pytest.raises(YamlError) as caught:
        parse_yaml("a: &x 1\nb: &x 2\nc: *x\n", "f")
    (problem,) = caught.value.diagnostics
    assert (problem.location.line, problem.location.column) == (2, 4)
    assert "&x is defined twice (first at line 1)" in problem.message


def test_a_second_document_is_refused_where_it_starts() -> None:
    with pytest.raises(YamlError) as caught:
        parse_yaml("a: 1\n---\nb: [1\n", "f")
    (problem,) = caught.value.diagnostics
    assert problem.location.line == 2
    assert "another document" in problem.message


@settings(max_examples=60, deadline=None)
@given(height=st.integers(0, 4), nesting=st.integers(56, 63), mapping=st.booleans())
def test_an_alias_nests_as_deep_as_what_it_names(height: int, nesting: int, mapping: bool) -> None:
    """``*v`` inside ``nesting`` lists (or mappings) under ``top:`` sits at level
    ``1 + nesting``; ``v`` adds its own ``height``: refused, at the alias, past MAX_DEPTH."""
    value = "*v"
    for _ in range(nesting):
        value = f"{{k: {value}}}" if mapping else f"[{value}]"
    text = f"base: &v {'[' * height}1{']' * height}\ntop: {value}\n"
    if 1 + nesting + height <= MAX_DEPTH:
        parse_yaml(text, "t.yaml")
        return
    with pytest.raises(YamlError) as caught:
        parse_yaml(text, "t.yaml")
    (problem,) = caught.value.diagnostics
    assert problem.location.line == 2
    assert text.splitlines()[1][problem.location.column - 1 :].startswith("*v")
    assert f"alias *v nests deeper than {MAX_DEPTH} levels" in problem.message
