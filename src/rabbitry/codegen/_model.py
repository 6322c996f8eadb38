"""The type model: what the generator knows of a JSON Schema, independent of Python syntax.

A ``Node`` is a value's type together with the constraints a strategy needs
to produce valid values of it; a ``Def`` is a named type (a message, a
shared ``$ref`` target, a nested object).  ``_types`` builds the model from
the schemas; ``_annotate`` prints it as Python types and ``_strategies`` as
hypothesis strategies.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AliasDef",
    "AnyT",
    "BoolT",
    "Def",
    "Field",
    "FloatT",
    "IntT",
    "ListT",
    "LiteralT",
    "MapT",
    "Model",
    "NeverT",
    "Node",
    "NullT",
    "ObjectDef",
    "RefT",
    "StrT",
    "UnionT",
    "refs",
]


@dataclass(frozen=True)
class AnyT:
    """Any JSON value."""


@dataclass(frozen=True)
class NeverT:
    """No value at all (the schema ``false``, or contradictory bounds)."""


@dataclass(frozen=True)
class NullT:
    pass


@dataclass(frozen=True)
class BoolT:
    pass


@dataclass(frozen=True)
class IntT:
    lo: int | None = None
    hi: int | None = None
    multiple_of: int | None = None


@dataclass(frozen=True)
class FloatT:
    lo: float | None = None
    hi: float | None = None
    exclude_lo: bool = False
    exclude_hi: bool = False


@dataclass(frozen=True)
class StrT:
    min_length: int = 0
    max_length: int | None = None
    pattern: str | None = None
    format: str | None = None


@dataclass(frozen=True, eq=False)
class LiteralT:
    """One of these JSON values (``enum``, ``const``)."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class ListT:
    item: Node
    min_items: int = 0
    max_items: int | None = None


@dataclass(frozen=True)
class MapT:
    """A free-form object: any keys, each value a ``value``."""

    value: Node
    min_props: int = 0
    max_props: int | None = None


@dataclass(frozen=True)
class UnionT:
    members: tuple[Node, ...]


@dataclass(frozen=True)
class RefT:
    """The named type ``name`` (a ``Def`` of the model)."""

    name: str


Node = (
    AnyT | NeverT | NullT | BoolT | IntT | FloatT | StrT | LiteralT | ListT | MapT | UnionT | RefT
)


@dataclass
class Field:
    key: str
    node: Node
    required: bool
    doc: list[str] = field(default_factory=list)


@dataclass
class ObjectDef:
    """An object with known properties: a ``TypedDict``."""

    name: str
    fields: list[Field] = field(default_factory=list)
    doc: list[str] = field(default_factory=list)


@dataclass
class AliasDef:
    """Any other named type: a type alias."""

    name: str
    node: Node
    doc: list[str] = field(default_factory=list)


Def = ObjectDef | AliasDef


@dataclass
class Model:
    #: Every named type, by name.
    defs: dict[str, Def] = field(default_factory=dict)
    #: Message name (as in the spec) → the name of its type.
    messages: dict[str, str] = field(default_factory=dict)
    #: Def name → what of its schema the model leaves out (keywords it does not model).
    unsupported: dict[str, list[str]] = field(default_factory=dict)

    def deps(self, name: str) -> list[str]:
        """The named types ``name`` refers to directly, in order, each once."""
        found: list[str] = []
        definition = self.defs[name]
        nodes = (
            [f.node for f in definition.fields]
            if isinstance(definition, ObjectDef)
            else [definition.node]
        )
        for node in nodes:
            found.extend(r for r in refs(node) if r not in found)
        return found

    def closure(self, name: str) -> list[str]:
        """``name`` and every named type it reaches, in first-visit order."""
        seen: list[str] = []
        pending = [name]
        while pending:
            current = pending.pop(0)
            if current not in seen:
                seen.append(current)
                pending.extend(self.deps(current))
        return seen

    def order(self) -> list[str]:
        """Every def, dependencies before their users where there is no cycle.

        Depth-first from the messages (sorted by name), then from any def left.
        """
        done: list[str] = []
        active: set[str] = set()

        def visit(name: str) -> None:
            if name in done or name in active:
                return
            active.add(name)
            for dep in self.deps(name):
                visit(dep)
            active.discard(name)
            done.append(name)

        for message in sorted(self.messages):
            visit(self.messages[message])
        for name in self.defs:
            visit(name)
        return done

    def recursive(self) -> set[str]:
        """Defs that reach themselves (their strategies must be deferred)."""
        return {n for n in self.defs if any(n in self.closure(d) for d in self.deps(n))}


def refs(node: Node) -> Iterator[str]:
    """Names of the defs ``node`` refers to, in order."""
    match node:
        case RefT(name):
            yield name
        case ListT(item):
            yield from refs(item)
        case MapT(value):
            yield from refs(value)
        case UnionT(members):
            for member in members:
                yield from refs(member)
