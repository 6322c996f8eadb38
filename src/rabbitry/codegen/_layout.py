"""Expressions laid out as ``ruff format`` lays them out, for the shapes the generator emits.

An expression is printed flat when its line fits; otherwise each bracket that
is opened puts one element per line and ends it with a trailing comma, which
ruff's "magic trailing comma" keeps exploded whatever the width: the layout
never depends on how ruff would rebalance a line.  A union that does not fit
is parenthesised, its members on one line inside when they fit there, else
one a line, the way ruff splits a binary expression; a one-element subscript
puts its element on a line of its own (no comma: that would make it a
tuple).  Shapes ruff splits some other way (a union inside brackets) are
never exploded: the caller hoists them into a named alias instead (see
``_annotate``).  A line that no layout can shorten (a long JSON key or string
of the spec) is left long, and the rest of the file is laid out as ruff would.
"""

from __future__ import annotations

from dataclasses import dataclass

from rabbitry.codegen._literals import LINE_LENGTH, width

__all__ = ["Atom", "Call", "DictExpr", "Expr", "ListExpr", "Sub", "UnionExpr", "flat", "layout"]


@dataclass(frozen=True)
class Atom:
    text: str


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Expr, ...] = ()
    #: ``(name, value)``; the name ``**`` unpacks ``value``.
    kwargs: tuple[tuple[str, Expr], ...] = ()


@dataclass(frozen=True)
class Sub:
    base: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class UnionExpr:
    members: tuple[Expr, ...]


@dataclass(frozen=True)
class DictExpr:
    items: tuple[tuple[Expr, Expr], ...]


@dataclass(frozen=True)
class ListExpr:
    items: tuple[Expr, ...]


Expr = Atom | Call | Sub | UnionExpr | DictExpr | ListExpr


def flat(expr: Expr) -> str:
    """The expression on one line."""
    match expr:
        case Atom(text):
            return text
        case Call(func, args, kwargs):
            parts = [flat(a) for a in args] + [_keyword(k, flat(v)) for k, v in kwargs]
            return f"{func}({', '.join(parts)})"
        case Sub(base, args):
            return f"{base}[{', '.join(flat(a) for a in args)}]"
        case UnionExpr(members):
            return " | ".join(flat(m) for m in members)
        case DictExpr(items):
            return "{" + ", ".join(f"{flat(k)}: {flat(v)}" for k, v in items) + "}"
        case ListExpr(items):
            return "[" + ", ".join(flat(i) for i in items) + "]"
    raise TypeError(expr)  # pragma: no cover


def _keyword(name: str, value: str) -> str:
    """``name=value``; the name ``**`` unpacks a mapping."""
    return f"**{value}" if name == "**" else f"{name}={value}"


def fits(line: str) -> bool:
    return width(line) <= LINE_LENGTH


def layout(expr: Expr, indent: int, prefix: str = "", suffix: str = "") -> list[str]:
    """Lines (indented) for ``prefix + expr + suffix``; the first line starts at ``indent``."""
    pad = " " * indent
    line = f"{pad}{prefix}{flat(expr)}{suffix}"
    if fits(line):
        return [line]
    inner = indent + 4
    match expr:
        case Call(func, args, kwargs) if args or kwargs:
            lines = [f"{pad}{prefix}{func}("]
            for arg in args:
                lines += layout(arg, inner, "", ",")
            for name, value in kwargs:
                lines += layout(value, inner, _keyword(name, ""), ",")
            return [*lines, f"{pad}){suffix}"]
        case Sub(base, (arg,)):
            return [f"{pad}{prefix}{base}[", *layout(arg, inner), f"{pad}]{suffix}"]
        case Sub(base, args) if len(args) > 1:
            lines = [f"{pad}{prefix}{base}["]
            for arg in args:
                lines += layout(arg, inner, "", ",")
            return [*lines, f"{pad}]{suffix}"]
        case DictExpr(items) if items:
            lines = [f"{pad}{prefix}{{"]
            for key, value in items:
                lines += layout(value, inner, f"{flat(key)}: ", ",")
            return [*lines, f"{pad}}}{suffix}"]
        case ListExpr(items) if items:
            lines = [f"{pad}{prefix}["]
            for item in items:
                lines += layout(item, inner, "", ",")
            return [*lines, f"{pad}]{suffix}"]
        case UnionExpr(members) if len(members) > 1:
            one_line = f"{' ' * inner}{flat(expr)}"
            if fits(one_line):  # ruff tries the members on one line inside the parentheses first
                return [f"{pad}{prefix}(", one_line, f"{pad}){suffix}"]
            lines = [f"{pad}{prefix}("]
            for i, member in enumerate(members):
                lines += layout(member, inner, "| " if i else "")
            return [*lines, f"{pad}){suffix}"]
    return [line]
