"""The type model as hypothesis strategies: the statements of the ``strategies`` module.

Each def gets a function returning a strategy of *valid* values of its
schema, built from the model: bounds, lengths, patterns
(``st.from_regex(..., fullmatch=True)`` with ``re.ASCII``, so ``\\d`` and
``\\w`` mean what they mean in ECMA-262 regexes), the formats in
``FORMATS``, ``enum``/``const``, arrays, objects (required and optional keys),
unions and ``$ref`` (``st.deferred`` where a def reaches itself).  The
generated expressions only call small helpers that the template defines
(``_text``, ``_object``, ...), so the generated module stays readable and
needs no casts.

Where a message's schema uses something the model does not capture (see
``_types.MODELLED``, an unknown format, an ECMA regex Python cannot compile,
a ``oneOf`` whose options may overlap), its strategy filters what it
produces through the contract's own validator: still only valid values.

Why not hypothesis-jsonschema: verified in a throwaway venv with
hypothesis 6.170.17 (the version here) and hypothesis-jsonschema 0.23.1 (its
latest release, 2024-02): ``from_schema`` fails with ``AttributeError:
'many' object has no attribute 'more'`` as soon as it generates an object
with properties; for ``{"type": "string", "format": "uuid"}`` it generates
``''``, which is not a uuid (unknown formats need ``custom_formats``); and it
refuses the flagship's ``$ref`` to ``common.json`` ("does not fetch remote
references").  So it is not a dependency, and the strategies are derived here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rabbitry.codegen._layout import Atom, Call, DictExpr, Expr, ListExpr, fits, layout
from rabbitry.codegen._literals import docstring, py_number, py_str, py_value
from rabbitry.codegen._model import (
    AliasDef,
    AnyT,
    BoolT,
    FloatT,
    IntT,
    ListT,
    LiteralT,
    MapT,
    Model,
    NeverT,
    Node,
    NullT,
    RefT,
    StrT,
    UnionT,
)
from rabbitry.codegen._names import Namer, snake

__all__ = ["FORMATS", "HELPERS", "StrategiesModule", "render_strategies"]

#: Formats the template's ``_FORMATS`` can produce valid strings of.
FORMATS = frozenset(
    {"date", "date-time", "email", "hostname", "ipv4", "ipv6", "time", "uri", "uuid"}
)
#: Names the template's static part defines or imports (never a generated function's).
HELPERS = frozenset(
    {
        "re",
        "st",
        "Any",
        "Mapping",
        "date",
        "datetime",
        "time",
        "UTC",
        "CONTRACT",
        "STRATEGIES",
        "_FORMATS",
        "_any",
        "_arrays",
        "_booleans",
        "_checked",
        "_integers",
        "_literal",
        "_nothing",
        "_null",
        "_numbers",
        "_object",
        "_objects",
        "_one_of",
        "_text",
    }
)


def _data(value: Any) -> Expr:
    """JSON data as an expression (containers laid out like everything else)."""
    if isinstance(value, dict):
        return DictExpr(tuple((Atom(py_str(str(k))), _data(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ListExpr(tuple(_data(v) for v in value))
    return Atom(py_value(value))


@dataclass
class StrategiesModule:
    """What the ``strategies`` template needs."""

    constants: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    #: Type names the annotations use (imported from ``messages``).
    types: set[str] = field(default_factory=set)
    #: Def name → strategy function name.
    functions: dict[str, str] = field(default_factory=dict)
    #: ``STRATEGIES = {message name: its function's strategy}``, laid out.
    table: str = ""


class _Renderer:
    def __init__(self, model: Model, reserved: Iterable[str]) -> None:
        self.model = model
        self.out = StrategiesModule()
        namer = Namer([*HELPERS, *reserved])
        for name in model.order():
            self.out.functions[name] = namer.take(snake(name))
        self.recursive = model.recursive()
        self.patterns: dict[str, str] = {}
        self.gaps: dict[str, list[str]] = {}

    def gap(self, owner: str, what: str) -> None:
        found = self.gaps.setdefault(owner, [])
        if what not in found:
            found.append(what)

    def pattern(self, owner: str, pattern: str) -> str | None:
        """The module constant holding ``pattern`` compiled, or ``None`` if Python cannot."""
        if pattern not in self.patterns:
            try:
                re.compile(pattern, re.ASCII)
            except (re.error, OverflowError, RecursionError):
                self.gap(owner, f"pattern {pattern!r}, which Python's re cannot compile")
                return None
            name = f"_PATTERN_{len(self.patterns) + 1}"
            self.patterns[pattern] = name
            call = Call("re.compile", (Atom(py_str(pattern)), Atom("re.ASCII")))
            self.out.constants.append("\n".join(layout(call, 0, f"{name} = ")))
        return self.patterns[pattern]

    def expr(self, node: Node, owner: str) -> Expr:
        match node:
            case AnyT():
                return Call("_any")
            case NeverT():
                return Call("_nothing")
            case NullT():
                return Call("_null")
            case BoolT():
                return Call("_booleans")
            case IntT(lo, hi, multiple):
                bounds = (("min_value", lo), ("max_value", hi), ("multiple_of", multiple))
                return Call("_integers", kwargs=_given(bounds))
            case FloatT(lo, hi, exclude_lo, exclude_hi):
                kwargs = _given((("min_value", lo), ("max_value", hi)))
                if exclude_lo and lo is not None:
                    kwargs += (("exclude_min", Atom("True")),)
                if exclude_hi and hi is not None:
                    kwargs += (("exclude_max", Atom("True")),)
                return Call("_numbers", kwargs=kwargs)
            case StrT(min_length, max_length, pattern, fmt):
                kwargs = _given((("min_size", min_length or None), ("max_size", max_length)))
                if pattern is not None:
                    constant = self.pattern(owner, pattern)
                    kwargs += (("pattern", Atom(constant)),) if constant else ()
                if fmt is not None and fmt in FORMATS:
                    kwargs += (("fmt", Atom(py_str(fmt))),)
                elif fmt is not None:
                    self.gap(owner, f"format {fmt!r}")
                return Call("_text", kwargs=kwargs)
            case LiteralT(values):
                return Call("_literal", tuple(_data(v) for v in values))
            case ListT(item, min_items, max_items):
                sizes = _given((("min_size", min_items or None), ("max_size", max_items)))
                return Call("_arrays", (self.expr(item, owner),), sizes)
            case MapT(value, min_props, max_props):
                sizes = _given((("min_size", min_props or None), ("max_size", max_props)))
                return Call("_objects", (self.expr(value, owner),), sizes)
            case UnionT(members):
                return Call("_one_of", tuple(self.expr(m, owner) for m in members))
            case RefT(name):
                function = self.out.functions[name]
                if name in self.recursive:
                    return Call("st.deferred", (Atom(function),))
                return Call(function)
        raise TypeError(node)  # pragma: no cover

    def body(self, name: str) -> Expr:
        definition = self.model.defs[name]
        if isinstance(definition, AliasDef):
            return self.expr(definition.node, name)
        required = tuple(
            (Atom(py_str(f.key)), self.expr(f.node, name)) for f in definition.fields if f.required
        )
        optional = tuple(
            (Atom(py_str(f.key)), self.expr(f.node, name))
            for f in definition.fields
            if not f.required
        )
        kwargs = (("optional", DictExpr(optional)),) if optional else ()
        return Call("_object", (DictExpr(required),), kwargs)

    def render(self) -> StrategiesModule:
        messages = {def_name: message for message, def_name in self.model.messages.items()}
        bodies = {name: self.body(name) for name in self.model.order()}
        for name, plain in bodies.items():
            body = plain
            function = self.out.functions[name]
            reasons = [
                r for d in self.model.closure(name) for r in self.model.unsupported.get(d, [])
            ]
            reasons += [r for d in self.model.closure(name) for r in self.gaps.get(d, [])]
            kind = "messages" if name in messages else "values"
            doc = [f"Valid ``{name}`` {kind}: instances of its schema."]
            if reasons and name in messages:
                body = Call("_checked", (Atom(py_str(messages[name])), body))
                doc.append(
                    "Each one is checked by the contract's validator, since the generator "
                    "does not model: " + "; ".join(reasons) + "."
                )
            elif reasons:
                doc.append("Approximate; the generator does not model: " + "; ".join(reasons) + ".")
            self.out.types.add(name)
            lines = [f"def {function}() -> st.SearchStrategy[{name}]:"]
            if not fits(lines[0]):  # as ruff splits a return annotation that is too long
                lines = [f"def {function}() -> st.SearchStrategy[", f"    {name}", "]:"]
            lines.append(f"    {docstring(doc, 4)}")
            lines += layout(body, 4, "return ")
            self.out.blocks.append("\n".join(lines))
        table = DictExpr(
            tuple(
                (Atom(py_str(message)), Call(self.out.functions[name]))
                for message, name in sorted(self.model.messages.items())
            )
        )
        self.out.table = "\n".join(
            layout(table, 0, "STRATEGIES: Mapping[str, st.SearchStrategy[Any]] = ")
        )
        return self.out


def _given(pairs: Iterable[tuple[str, int | float | None]]) -> tuple[tuple[str, Expr], ...]:
    return tuple((key, Atom(py_number(value))) for key, value in pairs if value is not None)


def render_strategies(model: Model, reserved: Iterable[str]) -> StrategiesModule:
    """Strategy functions for every def of ``model``; ``reserved``: the type names imported."""
    return _Renderer(model, reserved).render()
