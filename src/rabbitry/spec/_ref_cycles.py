"""``$ref`` cycles that never read into the value: ``{"$ref": "#"}``, ``allOf: [{$ref: "#"}]``.

A schema may refer to itself (a tree's ``children`` are trees): each step of
such a cycle goes one level down into the value, through ``properties`` or
``items``, so validation ends where the value ends.  A cycle whose every step
applies to the *same* value (``$ref``, ``allOf``/``anyOf``/``oneOf``, ``not``,
``if``/``then``/``else``, ``dependentSchemas``) never ends: a validator, the
code generator and the compatibility check would each recurse until Python
stops them.  ``load_schemas`` reports such a cycle where its ``$ref`` is
written, so that nothing downstream ever meets one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from rabbitry.spec._walk import SCHEMA_LISTS, SCHEMA_MAPS, SCHEMA_VALUES, Parts, subschemas

__all__ = ["Cycle", "Node", "deepest_chain", "same_value_cycles"]

#: A schema object: its (resolved) file and its JSON path in that file.
Node = tuple[Path, Parts]
#: A cycle, as the nodes it goes through (the first is where it is reported).
Cycle = tuple[Node, ...]

_SAME_VALUE_LISTS = ("allOf", "anyOf", "oneOf")
_SAME_VALUE_ONE = ("not", "if", "then", "else")


def _pointer(parts: Parts) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _target(path: Path, ref: str) -> tuple[Path, str] | None:
    """The file and JSON pointer ``ref`` names from ``path``; ``None`` for an anchor or a remote."""
    uri, fragment = urldefrag(urljoin(path.as_uri(), ref))
    split = urlsplit(uri)
    if split.scheme != "file":
        return None
    fragment = unquote(fragment)
    if fragment and not fragment.startswith("/"):
        return None  # a plain-name fragment ($anchor): not followed
    return Path(unquote(split.path)), fragment


def _edges(
    path: Path, parts: Parts, schema: Mapping[str, Any], known: Mapping[tuple[Path, str], Parts]
) -> Iterator[Node]:
    for key in _SAME_VALUE_LISTS:
        value = schema.get(key)
        if isinstance(value, list):
            for index, sub in enumerate(value):
                if isinstance(sub, dict):
                    yield path, (*parts, key, index)
    for key in _SAME_VALUE_ONE:
        if isinstance(schema.get(key), dict):
            yield path, (*parts, key)
    dependent = schema.get("dependentSchemas")
    if isinstance(dependent, Mapping):
        for name, sub in dependent.items():
            if isinstance(sub, dict):
                yield path, (*parts, "dependentSchemas", name)
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = _target(path, ref)
        if target is not None and target in known:
            yield target[0], known[target]


def _children(
    path: Path, parts: Parts, schema: Mapping[str, Any], known: Mapping[tuple[Path, str], Parts]
) -> Iterator[Node]:
    """Every subschema one level down, and the ``$ref`` target: what a walker descends into."""
    for key, value in schema.items():
        if key in SCHEMA_MAPS and isinstance(value, Mapping):
            for name, sub in value.items():
                if isinstance(sub, dict):
                    yield path, (*parts, key, name)
        elif key in SCHEMA_LISTS and isinstance(value, list):
            for index, sub in enumerate(value):
                if isinstance(sub, dict):
                    yield path, (*parts, key, index)
        elif key in SCHEMA_VALUES and isinstance(value, dict):
            yield path, (*parts, key)
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = _target(path, ref)
        if target is not None and target in known:
            yield target[0], known[target]


class _Graph:
    def __init__(self, documents: Mapping[Path, Any]) -> None:
        self.known: dict[tuple[Path, str], Parts] = {}
        self.schemas: dict[Node, dict[str, Any]] = {}
        for path, contents in documents.items():
            for parts, schema in subschemas(contents):
                self.known[(path, _pointer(parts))] = parts
                self.schemas[(path, parts)] = schema

    def same_value(self, node: Node) -> Iterator[Node]:
        return _edges(node[0], node[1], self.schemas[node], self.known)

    def children(self, node: Node) -> Iterator[Node]:
        return _children(node[0], node[1], self.schemas[node], self.known)


def same_value_cycles(documents: Mapping[Path, Any]) -> list[Cycle]:
    """Every cycle (one per set of schemas) whose steps all apply to the same value.

    ``documents`` maps each resolved schema file to its contents.  The walk is
    iterative: a schema of any size or nesting is searched without recursion.
    """
    graph = _Graph(documents)
    return _cycles(list(graph.schemas), graph.same_value)


def deepest_chain(
    documents: Mapping[Path, Any], roots: list[Path], limit: int
) -> dict[Path, Cycle]:
    """Each root file from which a walker would descend more than ``limit`` schemas deep.

    A step is one subschema down or one ``$ref`` followed: ``check`` bounds one
    file's nesting, but ``$ref``s chain files and ``$defs`` into walks as deep
    as they like, and every walker over schemas (validation, codegen, ``check
    --against``) recurses at each step.  A ``$ref`` back to a schema already on
    the chain (a recursive schema) ends it, as those walkers end it.  Returns
    the root's longest chain, computed without recursion.
    """
    graph = _Graph(documents)
    height: dict[Node, int] = {}
    below: dict[Node, Node] = {}

    def lift(parent: Node, child: Node) -> None:
        if height[child] + 1 > height.get(parent, 0):
            height[parent] = height[child] + 1
            below[parent] = child

    found: dict[Path, Cycle] = {}
    for root in roots:
        start: Node = (root, ())
        if start not in graph.schemas:
            continue
        path: list[Node] = [start]
        on_path = {start}
        stack = [graph.children(start)] if start not in height else []
        while stack:
            node = path[-1]
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                height.setdefault(node, 0)
                if path:
                    lift(path[-1], node)
            elif child in on_path:
                continue
            elif child in height:
                lift(node, child)
            else:
                path.append(child)
                on_path.add(child)
                stack.append(graph.children(child))
        if height.get(start, 0) > limit:
            chain = [start]
            while chain[-1] in below and len(chain) <= limit + 1:
                chain.append(below[chain[-1]])
            found[root] = tuple(chain)
    return found


def _cycles(nodes: list[Node], edges: Callable[[Node], Iterator[Node]]) -> list[Cycle]:
    done: set[Node] = set()
    found: list[Cycle] = []
    seen_sets: set[frozenset[Node]] = set()
    for start in nodes:
        if start in done:
            continue
        path: list[Node] = [start]
        on_path = {start: 0}
        stack = [edges(start)]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                finished = path.pop()
                del on_path[finished]
                done.add(finished)
            elif nxt in on_path:
                cycle = tuple(path[on_path[nxt] :])
                if frozenset(cycle) not in seen_sets:
                    seen_sets.add(frozenset(cycle))
                    found.append(cycle)
            elif nxt not in done:
                on_path[nxt] = len(path)
                path.append(nxt)
                stack.append(edges(nxt))
    return found
