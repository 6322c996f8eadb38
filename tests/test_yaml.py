"""The located YAML loader: positions, duplicate keys, merge keys, syntax errors, keys as text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rabbitry.spec import Code, Location
from rabbitry.spec._yaml import YamlError, YMap, YNode, YScalar, YSeq, parse_yaml

# ------------------------------------------------------------ positions, as a property

# Line breaks inside a scalar make the emitter fold it over indented lines; every
# other character is fair game, including ones that force quoting or escaping.
_CHARS = st.characters(
    blacklist_categories=("Cs", "Cc"),
    blacklist_characters="\x85\u2028\u2029\ufeff",
)
_AWKWARD = st.sampled_from(
    [
        "",
        " ",
        "on",
        "yes",
        "No",
        "null",
        "~",
        "1.10",
        "0x1f",
        "012",
        "1e3",
        ".inf",
        "- a",
        "a: b",
        "a:b",
        "#x",
        "a #b",
        "'q'",
        '"d"',
        "it's",
        "[x]",
        "{y}",
        "a,b",
        "&a",
        "*b",
        "!t",
        "%p",
        "@",
        "`",
        "? k",
        "|",
        ">",
        " lead",
        "trail ",
        "---",
        "...",
        "é",
        "日本語",
        "😀",
        "2020-01-02",
        "\\",
    ]
)
_TEXT = st.one_of(_AWKWARD, st.text(_CHARS, max_size=10))
_SCALARS = st.one_of(_TEXT, st.integers(), st.booleans(), st.none())
_TREES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(_TEXT, inner, max_size=4),
    ),
    max_leaves=16,
)
_WIDE = 1 << 30  # no folding: a scalar is written on one line


def _dump(data: Any, *, flow: bool) -> str:
    return yaml.safe_dump(
        data, default_flow_style=flow, allow_unicode=True, width=_WIDE, sort_keys=False
    )


def _written_forms(value: Any) -> set[str]:
    """Every way the emitter may write ``value`` as one scalar: plain, '...' or "..."."""
    forms = set()
    for style in (None, "'", '"'):
        dumped = yaml.safe_dump(value, default_style=style, allow_unicode=True, width=_WIDE)
        forms.add(dumped.split("\n", 1)[0])
    return {form for form in forms if yaml.safe_load(form) == value}


def _offset(text: str, loc: Location) -> int:
    lines = text.splitlines(keepends=True)
    assert 1 <= loc.line <= len(lines), loc
    assert loc.column >= 1, loc
    return sum(len(line) for line in lines[: loc.line - 1]) + loc.column - 1


def _scalars(node: YNode) -> Iterator[tuple[Location, Any]]:
    """Every scalar of the tree with where it says it is written: keys and values."""
    if isinstance(node, YScalar):
        yield node.loc, node.value
    elif isinstance(node, YSeq):
        for item in node.items:
            yield from _scalars(item)
    else:
        for key, (key_loc, value) in node.entries.items():
            yield key_loc, key
            yield from _scalars(value)


def _collections(node: YNode) -> Iterator[YMap | YSeq]:
    if isinstance(node, YSeq):
        yield node
        for item in node.items:
            yield from _collections(item)
    elif isinstance(node, YMap):
        yield node
        for _, value in node.entries.values():
            yield from _collections(value)


def _assert_written_at(text: str, loc: Location, value: Any) -> None:
    rest = text[_offset(text, loc) :]
    for form in _written_forms(value):
        after = rest[len(form) : len(form) + 1]
        if rest.startswith(form) and after in ("", "\n", " ", ",", "]", "}", ":"):
            return
    line = text.splitlines()[loc.line - 1]
    pytest.fail(f"{value!r} is not written at {loc.line}:{loc.column}: {line!r}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_TREES, flow=st.booleans())
def test_every_scalar_is_located_where_it_is_written(data: Any, flow: bool) -> None:
    text = _dump(data, flow=flow)
    tree, problems = parse_yaml(text, "doc.yaml")
    assert problems == []
    assert tree.plain() == data
    for loc, value in _scalars(tree):
        assert loc.file == "doc.yaml"
        _assert_written_at(text, loc, value)
    for node in _collections(tree):
        rest = text[_offset(text, node.loc) :]
        if isinstance(node, YMap) and node.entries and not rest.startswith("{"):
            # a block mapping starts where its first key (or that key's `?`) is written
            first_key = next(iter(node.entries.values()))[0]
            assert node.loc == first_key or rest.startswith("? "), (node.loc, rest[:20])
        elif isinstance(node, YSeq) and node.items and not rest.startswith("["):
            assert rest.startswith("-")
        else:
            assert rest[0] in "{[", (node, rest[:20])


def test_locations_are_one_based() -> None:
    tree, _ = parse_yaml("top:\n  key: value\n  list:\n    - item\n", "f.yaml")
    assert isinstance(tree, YMap)
    inner = tree.get("top")
    assert isinstance(inner, YMap)
    assert inner.key_loc("key") == Location("f.yaml", 2, 3)
    assert inner.value_loc("key") == Location("f.yaml", 2, 8)
    items = inner.get("list")
    assert isinstance(items, YSeq)
    assert items.items[0].loc == Location("f.yaml", 4, 7)


def test_missing_key_locations_fall_back_to_the_mapping() -> None:
    tree, _ = parse_yaml("a:\n  b: 1\n", "f")
    assert isinstance(tree, YMap)
    inner = tree.get("a")
    assert isinstance(inner, YMap)
    assert inner.get("nope") is None
    assert inner.key_loc("nope") == inner.value_loc("nope") == Location("f", 2, 3)


def _mapping(tree: YNode) -> dict[str, Any]:
    assert isinstance(tree, YMap)
    return tree.plain()


# ------------------------------------------------------------------- duplicate keys


def test_duplicate_key_is_reported_with_both_lines_and_the_last_value_kept() -> None:
    text = "name: first\nother: 1\nname: second\n"
    tree, problems = parse_yaml(text, "f.yaml")
    assert tree.plain() == {"name": "second", "other": 1}
    assert len(problems) == 1
    (problem,) = problems
    assert problem.code is Code.DUPLICATE_KEY
    assert problem.location == Location("f.yaml", 3, 1)
    assert "'name'" in problem.message
    assert "line 1" in problem.message
    assert problem.hint


def test_nested_duplicate_keys_are_each_reported() -> None:
    text = "a:\n  b: 1\n  c:\n    d: 1\n    d: 2\n  b: 3\n"
    tree, problems = parse_yaml(text, "f.yaml")
    assert tree.plain() == {"a": {"b": 3, "c": {"d": 2}}}
    found = sorted((p.location.line, p.location.column, p.message) for p in problems)
    assert [(line, col) for line, col, _ in found] == [(5, 5), (6, 3)]
    assert "'d'" in found[0][2]
    assert "line 4" in found[0][2]
    assert "'b'" in found[1][2]
    assert "line 2" in found[1][2]
    assert all(p.code is Code.DUPLICATE_KEY for p in problems)


def test_duplicate_key_in_a_flow_mapping() -> None:
    tree, problems = parse_yaml("q: {type: quorum, x: 1, type: classic}\n", "f")
    assert tree.plain() == {"q": {"type": "classic", "x": 1}}
    assert [(p.code, p.location.line, p.location.column) for p in problems] == [
        (Code.DUPLICATE_KEY, 1, 25)
    ]


def test_a_key_written_thrice_is_reported_twice_against_the_first() -> None:
    _, problems = parse_yaml("k: 1\nk: 2\nk: 3\n", "f")
    assert [p.location.line for p in problems] == [2, 3]
    assert all("first at line 1" in p.message for p in problems)


def test_same_key_in_sibling_mappings_is_not_a_duplicate() -> None:
    _, problems = parse_yaml("a: {type: x}\nb: {type: y}\nc:\n  - type: z\n  - type: w\n", "f")
    assert problems == []


# ---------------------------------------------------------------------- merge keys


def test_merge_key_copies_the_anchor_and_own_keys_win() -> None:
    text = (
        "base: &base {type: topic, durable: false}\n"
        "exchanges:\n"
        "  a:\n"
        "    <<: *base\n"
        "    durable: true\n"
        "  b: {<<: *base}\n"
    )
    tree, problems = parse_yaml(text, "f")
    assert problems == []
    assert _mapping(tree)["exchanges"] == {
        "a": {"type": "topic", "durable": True},
        "b": {"type": "topic", "durable": False},
    }
    assert "<<" not in _mapping(tree)["exchanges"]["a"]


def test_merged_key_is_located_at_the_anchor() -> None:
    text = "base: &base\n  type: topic\nx:\n  <<: *base\n  own: 1\n"
    tree, _ = parse_yaml(text, "f")
    assert isinstance(tree, YMap)
    x = tree.get("x")
    assert isinstance(x, YMap)
    assert x.key_loc("type").line == 2
    assert x.key_loc("own").line == 5


def test_merge_of_a_list_earlier_mappings_win() -> None:
    text = "a: &a {k: 1, only_a: x}\nb: &b {k: 2, only_b: y}\nc: {<<: [*a, *b]}\n"
    tree, problems = parse_yaml(text, "f")
    assert problems == []
    assert _mapping(tree)["c"] == {"k": 1, "only_a": "x", "only_b": "y"}


def test_a_real_duplicate_next_to_a_merge_is_still_reported() -> None:
    text = "a: &a {k: 1}\nc:\n  <<: *a\n  k: 2\n  k: 3\n"
    tree, problems = parse_yaml(text, "f")
    assert _mapping(tree)["c"] == {"k": 3}
    assert [(p.code, p.location.line) for p in problems] == [(Code.DUPLICATE_KEY, 5)]


def test_merge_of_a_scalar_is_a_located_error() -> None:
    with pytest.raises(YamlError) as caught:
        parse_yaml("a: 1\nb:\n  <<: 5\n", "f")
    (problem,) = caught.value.diagnostics
    assert problem.code is Code.YAML
    assert problem.location.line == 3


def test_aliases_share_their_value_and_recursion_terminates() -> None:
    tree, problems = parse_yaml("a: &x [1, 2]\nb: *x\nc: &r [*r]\n", "f")
    assert problems == []
    plain = _mapping(tree)
    assert plain["a"] == plain["b"] == [1, 2]
    assert isinstance(plain["c"], list)


# -------------------------------------------------------------------- syntax errors


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("version: 1\nexchanges: x\n  y: 1\n", 3),  # mapping value where none is allowed
        ("version: 1\nqueues:\n\tq: {}\n", 3),  # a tab cannot indent
        ("a: 1\nb: [1, 2\nc: 3\n", 3),  # unclosed flow sequence
        ("a: 1\n- b\n", 2),  # a list item inside a mapping
        ("a: 1\nb: *nowhere\n", 2),  # alias of no anchor
        ("a: 1\n---\nb: 2\n", 2),  # two documents
    ],
)
def test_syntax_error_is_a_yaml_error_at_its_line(text: str, line: int) -> None:
    with pytest.raises(YamlError) as caught:
        parse_yaml(text, "bad.yaml")
    (problem,) = caught.value.diagnostics
    assert problem.code is Code.YAML
    assert problem.location.file == "bad.yaml"
    assert problem.location.line == line
    assert problem.location.column >= 1
    assert f"bad.yaml:{line}:" in str(caught.value)


def test_an_empty_document_is_an_empty_mapping() -> None:
    for text in ("", "\n", "# only a comment\n"):
        tree, problems = parse_yaml(text, "f")
        assert isinstance(tree, YMap)
        assert tree.plain() == {}
        assert problems == []


def test_a_collection_as_key_is_reported_once() -> None:
    tree, problems = parse_yaml("ok: 1\n[a, b]: 2\n", "f")
    assert _mapping(tree)["ok"] == 1
    assert [(p.code, p.location.line, p.location.column) for p in problems] == [(Code.YAML, 2, 1)]


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("a: 1\nwhen: 2020-13-45\n", "2020-13-45"),  # an implicit timestamp that is no date
        ("a: 1\nn: !!int twelve\n", "twelve"),
        ("a: 1\nb: !!bool maybe\n", "maybe"),
        ("a: 1\nt: !!timestamp soon\n", "soon"),
    ],
)
def test_a_scalar_its_tag_cannot_build_is_reported_and_kept_as_text(
    text: str, written: str
) -> None:
    tree, problems = parse_yaml(text, "f")
    assert [(p.code, p.location.line) for p in problems] == [(Code.YAML, 2)]
    assert written in problems[0].message
    assert "quote" in problems[0].hint
    assert _mapping(tree)["a"] == 1
    assert written in _mapping(tree).values()


# ------------------------------------------------------------- keys and written text


@pytest.mark.parametrize(
    "key", ["on", "off", "yes", "no", "true", "1", "1.10", "null", "~", "0x10"]
)
def test_keys_stay_the_text_written(key: str) -> None:
    tree, problems = parse_yaml(f"{key}: value\n", "f")
    assert problems == []
    assert tree.plain() == {key: "value"}


def test_values_resolve_like_safe_load_but_keep_their_written_text() -> None:
    text = "a: 1.10\nb: on\nc: '1.10'\nd: 0x10\ne: ~\n"
    tree, _ = parse_yaml(text, "f")
    assert tree.plain() == yaml.safe_load(text)
    assert isinstance(tree, YMap)
    written = {}
    for key in "abcde":
        node = tree.get(key)
        assert isinstance(node, YScalar)
        written[key] = node.text
    assert written == {"a": "1.10", "b": "on", "c": "1.10", "d": "0x10", "e": "~"}
    a = tree.get("a")
    assert isinstance(a, YScalar)
    assert a.value == 1.1


# ------------------------------------------------------------ size bounds


def test_a_large_written_out_document_is_read() -> None:
    """20,000 queues and their bindings, written out: about 200,000 values, read whole
    (the aliases' bound is apart from the document's, which it once shared)."""
    lines = ["queues:"] + [f"  q{i}: {{}}" for i in range(20_000)]
    lines += ["bindings:"] + [f"  - {{from: x, queue: q{i}, key: k{i}}}" for i in range(20_000)]
    tree, problems = parse_yaml("\n".join(lines) + "\n", "big.yaml")
    assert not problems
    assert isinstance(tree, YMap)
    assert len(tree.plain()["bindings"]) == 20_000


def test_aliases_together_are_bounded_apart_from_the_document() -> None:
    """Each alias here adds 1,001 values; the hundredth crosses MAX_ALIASED (100,000),
    though no single alias is large and the document is small."""
    text = "a: &a [" + ", ".join(["x"] * 1_000) + "]\n"
    text += "b: [" + ", ".join(["*a"] * 100) + "]\n"
    with pytest.raises(YamlError) as caught:
        parse_yaml(text, "t.yaml")
    (problem,) = caught.value.diagnostics
    assert "alias *a expands past 100,000 values" in problem.message
    assert problem.location.line == 2
    parse_yaml(
        text.replace("* 100", "* 99").replace(", ".join(["*a"] * 100), ", ".join(["*a"] * 99)),
        "t.yaml",
    )
