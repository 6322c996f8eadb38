"""The generator's building blocks: identifiers, literals, docstrings, layout, imports."""

from __future__ import annotations

import ast
import keyword
import math

from hypothesis import given
from hypothesis import strategies as st

from rabbitry.codegen._layout import Atom, Call, DictExpr, Sub, UnionExpr, flat, layout
from rabbitry.codegen._literals import (
    LINE_LENGTH,
    comment_text,
    data_lines,
    docstring,
    py_number,
    py_str,
)
from rabbitry.codegen._names import MAX_LENGTH, Namer, pascal, snake
from rabbitry.codegen._render import dunder_all_key, import_block, isort_key

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]))


@given(TEXT)
def test_string_literals_round_trip_in_ascii(text: str) -> None:
    literal = py_str(text)
    assert literal.isascii()
    assert "\n" not in literal
    assert ast.literal_eval(literal) == text
    assert literal[0] == ("'" if text.count('"') > text.count("'") else '"')


@given(st.floats() | st.integers())
def test_numbers_round_trip(value: float) -> None:
    literal = py_number(value)
    assert "e+" not in literal
    result = eval(literal, {"__builtins__": {"float": float}})
    assert result == value or (math.isnan(value) and math.isnan(result))


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    )
)
def test_data_lines_round_trip(value: object) -> None:
    source = "\n".join(data_lines(value, 0, "x = "))
    namespace: dict[str, object] = {}
    exec(compile(source, "<data>", "exec"), {"float": float}, namespace)
    assert namespace["x"] == value


@given(st.lists(TEXT, max_size=3), st.sampled_from([0, 4, 8]))
def test_docstrings_hold_any_text(paragraphs: list[str], indent: int) -> None:
    text = docstring(paragraphs, indent)
    if not text:
        assert all(not p.split() for p in paragraphs)
        return
    source = f"def f():\n{' ' * indent}{text}\n" if indent else f"{text}\n"
    tree = ast.parse(source)
    node = tree.body[0].body[0] if indent else tree.body[0]  # type: ignore[attr-defined]
    assert isinstance(node, ast.Expr)
    value = node.value.value  # type: ignore[attr-defined]
    # Whitespace is reflowed (and a word too long for a line is cut); nothing else changes.
    assert "".join(value.split()) == "".join("".join(p.split()) for p in paragraphs)
    for line in source.splitlines():
        assert len(line.encode("utf-16-le")) // 2 <= LINE_LENGTH * 2


def test_docstring_shapes() -> None:
    assert docstring(["One line."], 4) == '"""One line."""'
    assert docstring(['Ends with a quote"'], 0) == '"""Ends with a quote\\""""'
    assert docstring(["a", "b"], 4) == '"""a\n\n    b\n    """'
    assert docstring(["", "  "], 0) == ""
    long = docstring(["word " * 40], 4)
    assert all(len(line) <= LINE_LENGTH for line in long.splitlines())


def test_one_paragraph_takes_one_line_with_its_quotes_or_two_lines() -> None:
    """ruff format puts the closing quotes of ONE line of text back on that line, however
    long it is: a docstring of one text line and its quotes on the next is never written."""
    for size in range(60, 100):
        text = ("ab " * size)[:size].strip() + "."
        lines = docstring([text], 4).splitlines()
        assert len(lines) == 1 or len(lines) >= 3, (size, lines)


@given(TEXT)
def test_comments_stay_on_one_line(text: str) -> None:
    line = comment_text(text)
    assert "\n" not in line
    assert "\r" not in line
    assert all(ch.isprintable() for ch in line)


@given(TEXT)
def test_identifiers_are_ascii_identifiers(text: str) -> None:
    for name in (pascal(text), snake(text)):
        assert name.isascii()
        assert name.isidentifier()
        assert len(name) <= MAX_LENGTH


def test_identifier_conversions() -> None:
    assert pascal("job-status") == "JobStatus"
    assert pascal("START_SUCCESS") == "StartSuccess"
    assert pascal("jobId") == "JobId"
    assert pascal("1st place") == "T1stPlace"
    assert pascal("ünïcødé") == "Unicde"  # accents dropped, and letters without an ASCII form
    assert pascal("") == "Type"
    assert snake("StartSuccess") == "start_success"
    assert snake("jobs.ready") == "jobs_ready"
    assert snake("JobID") == "job_id"
    assert snake("9lives") == "v_9lives"


def test_namer_resolves_collisions_in_order() -> None:
    namer = Namer(["Received"])
    assert [namer.take(n) for n in ["Start", "Start", "Start", "Received", "None", "str"]] == [
        "Start",
        "Start2",
        "Start3",
        "Received2",
        "None_",
        "str_",
    ]
    assert all(not keyword.iskeyword(n) for n in ["None_", "str_"])
    assert namer.take("x" * 100) == "x" * MAX_LENGTH


def test_layout_explodes_with_magic_trailing_commas() -> None:
    call = Call(
        "f", (Atom("a" * 60), Atom("b" * 60)), (("key", DictExpr(((Atom('"k"'), Atom("v")),))),)
    )
    assert layout(call, 4, "return ") == [
        "    return f(",
        f"        {'a' * 60},",
        f"        {'b' * 60},",
        '        key={"k": v},',
        "    )",
    ]
    union = UnionExpr(tuple(Atom(n * 30) for n in "abcd"))
    assert layout(union, 0, "X: TypeAlias = ")[0] == "X: TypeAlias = ("
    assert layout(Sub("list", (Atom("y" * 95),)), 0, "X = ") == [
        "X = list[",
        f"    {'y' * 95}",
        "]",
    ]


def test_import_ordering_matches_ruff() -> None:
    assert sorted(["cast", "TypedDict", "TYPE_CHECKING", "Any", "TypeVar"], key=isort_key) == [
        "TYPE_CHECKING",
        "Any",
        "TypedDict",
        "TypeVar",
        "cast",
    ]
    assert sorted(["JobsReady", "JobStatus"], key=isort_key) == ["JobsReady", "JobStatus"]
    assert sorted(["JobsReady", "JobStatus"], key=dunder_all_key) == ["JobStatus", "JobsReady"]
    block = import_block([[("typing", ["Any"]), ("collections.abc", ["Mapping"])], [(".m", [])]])
    assert block == "from collections.abc import Mapping\nfrom typing import Any"


def test_a_union_holds_one_literal() -> None:
    """``Literal[False] | Literal[-4]`` is a finding under ruff's defaults (PYI030)."""
    from rabbitry.codegen._annotate import annotation  # noqa: PLC0415
    from rabbitry.codegen._model import LiteralT, StrT, UnionT  # noqa: PLC0415

    node = UnionT((LiteralT((False,)), StrT(), UnionT((LiteralT((-4, False)), LiteralT((None,))))))
    assert flat(annotation(node, set())) == "Literal[False, -4] | str | None"
