"""The type model as Python: annotations, and the statements of the ``messages`` module.

An object def is a ``TypedDict`` (class syntax when every key can be a class
attribute, the functional syntax otherwise: keys with spaces, keywords,
``__``-names); any other def is a ``TypeAlias``.  Statements come in
dependency order, so every alias value and field annotation is evaluated
after what it names; a reference that cannot be (a cycle) is written as a
string.  A field whose line would be
too long gets its type hoisted into an alias named after the field.
"""

from __future__ import annotations

import keyword
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rabbitry.codegen._layout import Atom, Call, DictExpr, Expr, Sub, UnionExpr, fits, flat, layout
from rabbitry.codegen._literals import docstring, py_str, py_value
from rabbitry.codegen._model import (
    AliasDef,
    AnyT,
    BoolT,
    Field,
    FloatT,
    IntT,
    ListT,
    LiteralT,
    MapT,
    Model,
    NeverT,
    Node,
    NullT,
    ObjectDef,
    RefT,
    StrT,
    UnionT,
    refs,
)
from rabbitry.codegen._names import Namer, pascal

__all__ = ["TypesModule", "annotation", "render_types"]


def annotation(node: Node, used: set[str]) -> Expr:
    """The Python type of ``node``; typing names it needs are added to ``used``."""
    match node:
        case AnyT():
            used.add("Any")
            return Atom("Any")
        case NeverT():
            used.add("Never")
            return Atom("Never")
        case NullT():
            return Atom("None")
        case BoolT():
            return Atom("bool")
        case IntT():
            return Atom("int")
        case FloatT():
            return Atom("float")
        case StrT():
            return Atom("str")
        case RefT(name):
            return Atom(name)
        case ListT(item):
            return Sub("list", (annotation(item, used),))
        case MapT(value):
            return Sub("dict", (Atom("str"), annotation(value, used)))
        case LiteralT(values):
            return _literal(values, used)
        case UnionT(members):
            return _union([annotation(m, used) for m in members])
    raise TypeError(node)  # pragma: no cover


def _literal(values: Iterable[Any], used: set[str]) -> Expr:
    literals: list[Expr] = []
    others: list[Expr] = []
    for value in values:
        if value is None:
            others.append(Atom("None"))
        elif isinstance(value, str | bool | int):
            literals.append(Atom(py_value(value)))
        elif isinstance(value, float):
            others.append(Atom("float"))
        elif isinstance(value, list):
            used.add("Any")
            others.append(Sub("list", (Atom("Any"),)))
        else:
            used.add("Any")
            others.append(Sub("dict", (Atom("str"), Atom("Any"))))
    members: list[Expr] = []
    if literals:
        used.add("Literal")
        members.append(Sub("Literal", tuple(literals)))
    return _union(members + others)


def _union(members: Iterable[Expr]) -> Expr:
    """The members as one union: nested unions flattened, duplicates dropped, ``None`` last,
    and every ``Literal[...]`` merged into the first (``Literal[False, -4]``, never
    ``Literal[False] | Literal[-4]``: ruff's default PYI030 flags that)."""
    flat_members: list[Expr] = []
    literal: list[Expr] | None = None
    for member in members:
        for one in member.members if isinstance(member, UnionExpr) else (member,):
            if isinstance(one, Sub) and one.base == "Literal":
                if literal is None:
                    literal = []
                    flat_members.append(one)  # the merged Literal's place
                literal += [v for v in one.args if flat(v) not in {flat(x) for x in literal}]
            else:
                flat_members.append(one)
    if literal is not None:
        flat_members = [
            Sub("Literal", tuple(literal)) if isinstance(m, Sub) and m.base == "Literal" else m
            for m in flat_members
        ]
    unique: dict[str, Expr] = {}
    for member in flat_members:
        unique.setdefault(flat(member), member)
    if "None" in unique:  # ``X | None``, as people write it
        unique["None"] = unique.pop("None")
    if not unique:
        return Atom("Never")
    ordered = list(unique.values())
    return ordered[0] if len(ordered) == 1 else UnionExpr(tuple(ordered))


@dataclass
class TypesModule:
    """What the ``messages`` template needs: statements, typing imports, public names."""

    blocks: list[str] = field(default_factory=list)
    typing: set[str] = field(default_factory=set)
    exports: list[str] = field(default_factory=list)


class _Renderer:
    def __init__(self, model: Model, namer: Namer) -> None:
        self.model = model
        self.namer = namer
        self.out = TypesModule()
        self.defined: set[str] = set()

    def expr(self, node: Node) -> Expr:
        """``node``'s annotation, as a string if it names something not defined yet."""
        result = annotation(node, self.out.typing)
        if any(name not in self.defined for name in refs(node)):
            return Atom(py_str(flat(result)))
        return result

    def alias(self, name: str, value: Expr, doc: list[str]) -> None:
        self.out.typing.add("TypeAlias")
        lines = layout(value, 0, f"{name}: TypeAlias = ")
        text = docstring(doc, 0)
        self.out.blocks.append("\n".join(lines) + (f"\n{text}" if text else ""))
        self.out.exports.append(name)
        self.defined.add(name)

    def hoist(self, owner: str, item: Field, value: Expr, avoid: set[str]) -> Expr:
        """``value`` as a new alias named after the field (for a line that would be too long)."""
        name = self.namer.take(owner + pascal(item.key, fallback="Field"))
        while name in avoid:  # never a name the class body's keys would shadow
            name = self.namer.take(name)
        self.alias(name, value, [f"The type of ``{owner}[{item.key!r}]``."])
        return Atom(name)

    def field_type(self, owner: ObjectDef, item: Field, indent: int, head: str) -> Expr:
        value = self.expr(item.node)
        hoistable = not isinstance(value, Atom) or value.text.startswith(("'", '"'))
        if hoistable and not fits(" " * indent + head + flat(_wrap(value, item.required))):
            value = self.hoist(owner.name, item, value, {f.key for f in owner.fields})
        return _wrap(value, item.required)

    def render(self) -> TypesModule:
        for name in self.model.order():
            definition = self.model.defs[name]
            if isinstance(definition, AliasDef):
                self.alias(name, self.expr(definition.node), definition.doc)
            elif self.class_syntax(definition):
                self.typed_class(definition)
            else:
                self.typed_call(definition)
        return self.out

    def typed_class(self, definition: ObjectDef) -> None:
        lines = [f"class {definition.name}(TypedDict):"]
        doc = docstring(definition.doc, 4)
        if doc:
            lines += [f"    {doc}", ""] if definition.fields else [f"    {doc}"]
        elif not definition.fields:
            lines.append("    pass")
        for item in definition.fields:
            lines += _class_field(item.key, self.field_type(definition, item, 4, f"{item.key}: "))
            text = docstring(item.doc, 4)
            if text:
                lines.append(f"    {text}")
        self.finish(definition, "\n".join(lines))

    def typed_call(self, definition: ObjectDef) -> None:
        name = definition.name
        items = tuple(
            (Atom(py_str(item.key)), self.field_type(definition, item, 8, f"{py_str(item.key)}: "))
            for item in definition.fields
        )
        call = Call("TypedDict", (Atom(py_str(name)), DictExpr(items)))
        doc = [
            *definition.doc,
            *(
                f"``{item.key}``: {' '.join(item.doc)}"
                for item in definition.fields
                if any(item.doc)
            ),
        ]
        text = docstring(doc, 0)
        self.finish(
            definition, "\n".join(layout(call, 0, f"{name} = ")) + (f"\n{text}" if text else "")
        )

    def class_syntax(self, definition: ObjectDef) -> bool:
        """Every key can be a class attribute: an identifier that NFKC leaves alone (Python
        normalises identifiers), not a keyword, and not ``__name`` (it would be mangled).
        A key pycodestyle calls ambiguous (``l``, ``O``, ``I``) is the spec's, and stays an
        attribute with no ``noqa``: ruff's defaults want class syntax (UP013) and leave E741
        off, so a ``noqa`` for it would itself be a finding (RUF100).

        A key may be the name of a type the annotations use (``str: int`` then ``b: str``):
        an annotation alone binds nothing in the class body, for Python and for mypy.
        """
        return all(
            item.key.isidentifier()
            and unicodedata.normalize("NFKC", item.key) == item.key
            and not keyword.iskeyword(item.key)
            and not item.key.startswith("__")
            for item in definition.fields
        )

    def finish(self, definition: ObjectDef, block: str) -> None:
        self.out.typing.add("TypedDict")
        if any(not item.required for item in definition.fields):
            self.out.typing.add("NotRequired")
        self.out.blocks.append(block)
        self.out.exports.append(definition.name)
        self.defined.add(definition.name)


def _wrap(value: Expr, required: bool) -> Expr:
    return value if required else Sub("NotRequired", (value,))


def _class_field(key: str, value: Expr) -> list[str]:
    """``key: value`` in a class body, split the way ruff splits it when it is too long."""
    line = f"    {key}: {flat(value)}"
    if fits(line) or not isinstance(value, Sub):
        return [line]
    head = f"    {key}: {value.base}["
    if fits(head) and len(value.args) == 1:
        return [head, *layout(value.args[0], 8), "    ]"]
    return [f"    {key}: (", *layout(value, 8), "    )"]


def render_types(model: Model, namer: Namer) -> TypesModule:
    """The statements of the ``messages`` module, in order."""
    return _Renderer(model, namer).render()
