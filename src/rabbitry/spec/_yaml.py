"""YAML with positions: a tree of located nodes, duplicate keys refused.

PyYAML's ``compose`` step keeps a start mark on every node; we walk that node
graph once into ``YMap`` / ``YSeq`` / ``YScalar`` so that every value the
builder reads still knows its line and column.  Scalars are constructed with
the safe constructor, so tags and types match ``yaml.safe_load``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

import yaml

from rabbitry.spec.diagnostics import Code, Diagnostic
from rabbitry.spec.model import Location

__all__ = [
    "MAX_ALIASED",
    "MAX_DEPTH",
    "MAX_VALUES",
    "YMap",
    "YNode",
    "YScalar",
    "YSeq",
    "YamlError",
    "parse_yaml",
]

#: The deepest nesting of lists and mappings a document may have, counted as its values
#: would be built (through aliases too): far more than a spec or schema needs, and few
#: enough that every walk over the values stays well inside Python's recursion limit.
MAX_DEPTH = 64
#: The most values (scalars, lists and mappings, keys included) a document may hold once
#: its aliases are expanded: ten times what a spec of 20,000 queues with their bindings
#: writes out (about 200,000), and a few hundred MB once built.
MAX_VALUES = 1_000_000
#: The most values aliases may add, all aliases together: an alias bomb of 830 bytes
#: expands to 387 million, while a spec's own reuse (a shared ``arguments`` block)
#: adds a few thousand.
MAX_ALIASED = 100_000

try:  # the C loader is much faster; fall back to pure Python where it is not built
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader


@dataclass(frozen=True)
class YScalar:
    value: Any
    loc: Location
    #: The scalar as written (``1.10`` stays "1.10" where ``value`` is 1.1).
    text: str = ""

    def plain(self) -> Any:
        return self.value


@dataclass(frozen=True)
class YSeq:
    items: tuple[YNode, ...]
    loc: Location

    def plain(self) -> list[Any]:
        return [item.plain() for item in self.items]


@dataclass(frozen=True)
class YMap:
    #: key → (where the key is written, the value node), in file order.
    entries: dict[str, tuple[Location, YNode]] = field(hash=False)
    loc: Location

    def plain(self) -> dict[str, Any]:
        return {key: node.plain() for key, (_, node) in self.entries.items()}

    def get(self, key: str) -> YNode | None:
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def value_loc(self, key: str) -> Location:
        entry = self.entries.get(key)
        return entry[1].loc if entry else self.loc

    def key_loc(self, key: str) -> Location:
        entry = self.entries.get(key)
        return entry[0] if entry else self.loc


YNode: TypeAlias = YMap | YSeq | YScalar


class YamlError(Exception):
    """The text is not YAML we can use; ``diagnostics`` says where and why."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__(diagnostics[0].render() if diagnostics else "invalid YAML")


_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"


def _loc(file: str, node: yaml.Node) -> Location:
    mark = node.start_mark
    return Location(file, mark.line + 1, mark.column + 1)


class _Walker:
    def __init__(self, file: str) -> None:
        self.file = file
        self.constructor = yaml.SafeLoader("")  # only its construct_* methods are used
        self.problems: list[Diagnostic] = []
        self._done: dict[int, YNode] = {}

    def walk(self, node: yaml.Node) -> YNode:
        # Aliases share the node object: walk it once, and never loop on recursion.
        known = self._done.get(id(node))
        if known is not None:
            return known
        loc = _loc(self.file, node)
        result: YNode
        if isinstance(node, yaml.MappingNode):
            placeholder = YMap({}, loc)
            self._done[id(node)] = placeholder
            result = self._mapping(node, loc)
        elif isinstance(node, yaml.SequenceNode):
            self._done[id(node)] = YSeq((), loc)
            result = YSeq(tuple(self.walk(item) for item in node.value), loc)
        else:
            result = YScalar(self._scalar(node, loc), loc, str(node.value))
        self._done[id(node)] = result
        return result

    def _scalar(self, node: yaml.Node, loc: Location) -> Any:
        """The scalar's value; one its tag cannot build (``2020-13-45``, ``!!int x``) is
        reported and kept as the text written, so the rest of the file is still read."""
        if node.tag == _STR:  # a string is its text: no constructor needed
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

    def _mapping(self, node: yaml.MappingNode, loc: Location) -> YMap:
        own: dict[str, Location] = {}
        key_locs: list[Location] = []  # each key's place, in order (merge keys too)
        merges = False
        for key_node, _ in node.value:
            key_locs.append(where := _loc(self.file, key_node))
            if key_node.tag == _MERGE:
                merges = True
                continue
            key = self._key(key_node)
            if key in own:
                first = own[key]
                self.problems.append(
                    Diagnostic(
                        where,
                        Code.DUPLICATE_KEY,
                        f"duplicate key {key!r} (first at line {first.line})",
                        "keep one of them: YAML would silently use the last",
                    )
                )
            else:
                own[key] = where
        entries: dict[str, tuple[Location, YNode]] = {}
        if merges:
            self.constructor.flatten_mapping(node)  # applies `<<` merge keys, own keys win
            key_locs = [_loc(self.file, key_node) for key_node, _ in node.value]
        for (key_node, value_node), where in zip(node.value, key_locs, strict=True):
            entries[self._key(key_node)] = (where, self.walk(value_node))
        return YMap(entries, loc)

    def _key(self, key_node: yaml.Node) -> str:
        if isinstance(key_node, yaml.ScalarNode):
            # The written text, not the resolved value: `on:` stays "on", `1:` stays "1".
            return str(key_node.value)
        problem = Diagnostic(
            _loc(self.file, key_node),
            Code.YAML,
            "a mapping key must be a plain name, not a list or mapping",
            "write the key as a string",
        )
        if problem not in self.problems:  # each key is read twice: report it once
            self.problems.append(problem)
        return f"<key at {_loc(self.file, key_node)}>"


@dataclass
class _Open:
    """A list or mapping whose end has not been read yet: what it holds so far."""

    anchor: str | None
    values: int = 1
    height: int = 0


def _mark_loc(file: str, mark: Any) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


def _bounded(text: str, file: str) -> None:
    """Refuse a document that would nest deeper than ``MAX_DEPTH``, hold more than
    ``MAX_VALUES`` values, or whose aliases would add more than ``MAX_ALIASED``.

    Reads only the event stream (no nodes are built), keeping the size and
    height of each anchored value, so that an alias counts as all it expands
    to, as ``YMap.plain`` would build it.  A ``<<`` merge counts its whole source.
    """
    anchors: dict[str, tuple[int, int]] = {}
    stack: list[_Open] = [_Open(None, 0)]
    aliased = 0

    def add(values: int, height: int, event: Any, alias: str | None) -> None:
        nonlocal aliased
        parent = stack[-1]
        parent.values += values
        parent.height = max(parent.height, height)
        depth = len(stack) - 1 + height
        if depth > MAX_DEPTH:
            what = f"alias *{alias} nests" if alias else "values nest"
            _refuse(
                file,
                event,
                f"YAML: {what} deeper than {MAX_DEPTH} levels here",
                "flatten the structure" + (f", or do not reuse *{alias} here" if alias else ""),
            )
        if alias is not None:
            aliased += values
            if aliased > MAX_ALIASED:
                _refuse(
                    file,
                    event,
                    f"YAML: alias *{alias} expands past {MAX_ALIASED:,} values here "
                    "(all aliases together)",
                    "write the values out instead of nesting aliases",
                )
        if sum(o.values for o in stack) > MAX_VALUES:
            what = f"alias *{alias} expands" if alias else "the document grows"
            _refuse(
                file,
                event,
                f"YAML: {what} past {MAX_VALUES:,} values here",
                "write the values out instead of nesting aliases"
                if alias
                else f"split the file: a document holds at most {MAX_VALUES:,} values",
            )

    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            values, height = anchors.get(event.anchor or "", (1, 0))  # recursive: built empty
            add(values, height, event, event.anchor)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor:
                anchors[event.anchor] = (1, 0)
            add(1, 0, event, None)
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(stack) > MAX_DEPTH:
                add(0, 1, event, None)  # refuses: too deep
            stack.append(_Open(event.anchor))
        elif isinstance(event, yaml.CollectionEndEvent):
            done = stack.pop()
            if done.anchor:
                anchors[done.anchor] = (done.values, done.height + 1)
            add(done.values, done.height + 1, event, None)


def _refuse(file: str, event: Any, what: str, hint: str) -> None:
    raise YamlError([Diagnostic(_mark_loc(file, event.start_mark), Code.YAML, what, hint)])


def parse_yaml(text: str, file: str) -> tuple[YNode, list[Diagnostic]]:
    """Parse one YAML document into located nodes, with the duplicate keys found.

    A duplicate key is reported and the tree keeps its last value, as YAML
    loaders do, so that the rest of the document can still be checked.
    Raises ``YamlError`` for syntax errors, and for a document nested deeper
    than ``MAX_DEPTH`` or expanding (through aliases) past ``MAX_VALUES``
    values: those are refused before any node is built.  An empty document is
    an empty mapping.
    """
    try:
        _bounded(text, file)
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        what = exc.problem or exc.context or "invalid YAML"
        raise YamlError(
            [Diagnostic(where, Code.YAML, f"YAML syntax: {what}", "fix the syntax at this place")]
        ) from None
    except yaml.YAMLError as exc:
        raise YamlError([Diagnostic(Location(file, 1, 1), Code.YAML, f"YAML: {exc}")]) from None
    except RecursionError:  # the pure-Python composer, nesting under MAX_DEPTH * its frames
        what = f"YAML: values nest deeper than {MAX_DEPTH} levels"
        raise YamlError([Diagnostic(Location(file, 1, 1), Code.YAML, what)]) from None
    if root is None:
        return YMap({}, Location(file, 1, 1)), []
    walker = _Walker(file)
    try:
        tree = walker.walk(root)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        raise YamlError(
            [Diagnostic(where, Code.YAML, f"YAML: {exc.problem}", "use plain YAML values")]
        ) from None
    return tree, walker.problems
