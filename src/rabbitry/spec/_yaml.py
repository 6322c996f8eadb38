"""YAML with positions: a tree of located nodes, duplicate keys refused.

The parser's events (libyaml's, through PyYAML) are read once, and each value
is built from its event at once into ``YMap`` / ``YSeq`` / ``YScalar``, which
keep the line and column where it is written, and counted against the bounds
(``MAX_DEPTH``, ``MAX_VALUES``, ``MAX_ALIASED``) before the next event is read.
PyYAML's ``compose`` would build a node graph first, walked a second time, and
the bounds needed a pass of their own before it: three passes, at 20,000
queues 2.2 times the time of this one.  Scalars are resolved and constructed
as the safe loader does, so tags and types match ``yaml.safe_load``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeAlias

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
#: First characters that some implicit resolver claims (``1``, ``t``, ``~``, ``<``...): a
#: plain scalar starting with any other is a string without asking the resolver.
_RESOLVED_FIRST = frozenset(yaml.resolver.Resolver.yaml_implicit_resolvers)
_ScalarEvent = yaml.ScalarEvent
_MappingStart = yaml.MappingStartEvent
_SequenceStart = yaml.SequenceStartEvent
_CollectionEnd = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


class _Open:
    """A list or mapping whose end has not been read yet: what it holds so far."""

    __slots__ = (
        "anchor",
        "entries",
        "firsts",
        "height",
        "is_key",
        "items",
        "key",
        "loc",
        "merges",
        "start",
    )

    def __init__(self, loc: Location, anchor: str | None, start: int, mapping: bool) -> None:
        self.loc = loc
        self.anchor = anchor
        #: The document's count of values before this one began: its own count is the
        #: count at its end less this (aliases inside counted as all they expand to).
        self.start = start
        #: Levels below it (an alias counting as the height of what it names).
        self.height = 0
        self.is_key = False  # written as a mapping key (`? [a, b]`)
        self.items: list[YNode] | None = None if mapping else []
        self.entries: dict[str, tuple[Location, YNode]] | None = {} if mapping else None
        #: A mapping's key read, waiting for its value: (text, where, is a merge key).
        self.key: tuple[str, Location, bool] | None = None
        self.firsts: dict[str, Location] = {}  # a duplicated key's first place
        self.merges: list[YNode] = []  # the values of its `<<` keys, in order


class _Anchored:
    """What an anchor names: its node (a scalar written as a key is built on first use),
    and its count of values and height, which every alias of it adds."""

    __slots__ = ("event", "height", "loc", "node", "values")

    def __init__(self, node: YNode | None, event: Any, loc: Location, values: int, height: int):
        self.node = node
        self.event = event
        self.loc = loc
        self.values = values
        self.height = height


class _Reader:
    """One pass over the parser's events: the located tree built and bounded as it is read.

    Each event is read once: its value is built at once (no ``yaml.Node`` graph
    and no second walk over it), and counted against the bounds before the
    next event is read, so a document too deep or too large is refused where it
    crosses the bound, with nothing larger built.  An alias adds the count and
    height of what it names (``YMap.plain`` would build it all) and shares its
    node; an alias of a collection not finished (a recursive one) is an empty
    one, as it was built so far.
    """

    def __init__(self, text: str, file: str) -> None:
        self.file = file
        self.events = _Loader(text)
        self.problems: list[Diagnostic] = []
        self.anchors: dict[str, _Anchored] = {}
        self.stack: list[_Open] = []
        self.total = 0  # values so far, aliases expanded
        self.aliased = 0  # values the aliases added, all together
        self.in_key = 0  # open collections written as a mapping key
        self._constructor: Any = None
        self._resolver: Any = None

    def loc(self, mark: Any) -> Location:
        return Location(self.file, mark.line + 1, mark.column + 1)

    def read(self) -> YNode | None:
        get = self.events.get_event
        get()  # the stream's start
        if isinstance(get(), yaml.StreamEndEvent):
            return None
        root: YNode | None = None
        stack = self.stack
        while True:
            event = get()
            kind = type(event)
            if kind is _ScalarEvent:
                self.total += 1
                if self.total > MAX_VALUES:
                    self.refuse_size(event, None)
                parent = stack[-1] if stack else None
                if parent is not None and parent.entries is not None and parent.key is None:
                    where = self.loc(event.start_mark)
                    if event.anchor is not None:
                        self.anchor(event, _Anchored(None, event, where, 1, 0))
                    parent.key = (event.value, where, _merges(event))
                    continue
                node: YNode = self.scalar(event)
                if event.anchor is not None:
                    self.anchor(event, _Anchored(node, event, node.loc, 1, 0))
            elif kind is _MappingStart or kind is _SequenceStart:
                self.open(event, kind is _MappingStart)
                continue
            elif kind in _CollectionEnd:
                node = self.close()
            elif kind is yaml.AliasEvent:
                named = self.alias(event)
                if named is None:
                    continue  # it was a key
                node = named
            else:  # the document's end
                break
            if stack:
                self.place(stack[-1], node)
            else:
                root = node
        end = get()
        if not isinstance(end, yaml.StreamEndEvent):
            raise _syntax(self.loc(end.start_mark), "but found another document")
        return root

    # -- collections ---------------------------------------------------------------

    def open(self, event: Any, mapping: bool) -> None:
        stack = self.stack
        if len(stack) >= MAX_DEPTH:
            self.refuse_depth(event, None)
        self.total += 1
        opened = _Open(self.loc(event.start_mark), event.anchor, self.total - 1, mapping)
        parent = stack[-1] if stack else None
        if parent is not None and parent.entries is not None and parent.key is None:
            opened.is_key = True
            self.in_key += 1
        if event.anchor is not None:  # an alias inside it (recursion) gets it empty
            empty: YNode = YMap({}, opened.loc) if mapping else YSeq((), opened.loc)
            self.anchor(event, _Anchored(empty, None, opened.loc, 1, 0))
        stack.append(opened)

    def close(self) -> YNode:
        stack = self.stack
        done = stack.pop()
        node: YNode
        if done.items is not None:
            node = YSeq(tuple(done.items), done.loc)
        else:
            node = YMap(self.merged(done) if done.merges else done.entries or {}, done.loc)
        height = done.height + 1
        if stack and stack[-1].height < height:
            stack[-1].height = height
        if done.anchor is not None:
            self.anchors[done.anchor] = _Anchored(
                node, None, done.loc, self.total - done.start, height
            )
        if done.is_key:
            self.in_key -= 1
        return node

    def place(self, parent: _Open, node: YNode) -> None:
        if parent.items is not None:
            parent.items.append(node)
            return
        entries = parent.entries
        assert entries is not None
        if parent.key is None:  # a list or mapping written as a key
            parent.key = (self.bad_key(node.loc), node.loc, False)
            return
        key, where, merge = parent.key
        parent.key = None
        if merge:
            parent.merges.append(node)
            return
        known = entries.get(key)
        if known is not None and not self.in_key:
            first = parent.firsts.setdefault(key, known[0])
            self.problems.append(
                Diagnostic(
                    where,
                    Code.DUPLICATE_KEY,
                    f"duplicate key {key!r} (first at line {first.line})",
                    "keep one of them: YAML would silently use the last",
                )
            )
        entries[key] = (where, node)

    def merged(self, done: _Open) -> dict[str, tuple[Location, YNode]]:
        """The mapping's entries with its ``<<`` merges applied: its own keys win, then
        the earlier mapping merged (YAML's merge key); a merged key is located where
        its source writes it."""
        merged: dict[str, tuple[Location, YNode]] = {}
        for value in done.merges:
            sources = value.items if isinstance(value, YSeq) else (value,)
            for source in sources:
                if not isinstance(source, YMap):
                    found = {YScalar: "scalar", YSeq: "sequence"}[type(source)]
                    expected = (
                        "a mapping" if isinstance(value, YSeq) else "a mapping or list of mappings"
                    )
                    raise YamlError(
                        [
                            Diagnostic(
                                source.loc,
                                Code.YAML,
                                f"YAML: expected {expected} for merging, but found {found}",
                                "use plain YAML values",
                            )
                        ]
                    )
                for key, entry in source.entries.items():
                    merged.setdefault(key, entry)
        merged.update(done.entries or {})
        return merged

    def bad_key(self, where: Location) -> str:
        problem = Diagnostic(
            where,
            Code.YAML,
            "a mapping key must be a plain name, not a list or mapping",
            "write the key as a string",
        )
        if problem not in self.problems and not self.in_key:  # an alias may repeat it
            self.problems.append(problem)
        return f"<key at {where}>"

    # -- scalars and aliases --------------------------------------------------------

    def scalar(self, event: Any) -> YScalar:
        """A scalar's node: its value as the safe loader builds it.  One its tag cannot
        build (``2020-13-45``, ``!!int x``) is reported and kept as the text written,
        so the rest of the file is still read."""
        text: str = event.value
        where = self.loc(event.start_mark)
        tag = event.tag
        if tag is None or tag == "!":
            implicit = event.implicit
            if not implicit[0] or (text and text[0] not in _RESOLVED_FIRST):
                return YScalar(text, where, text)
            if self._resolver is None:
                self._resolver = yaml.resolver.Resolver()
            tag = self._resolver.resolve(yaml.ScalarNode, text, implicit)
        if tag == _STR:  # a string is its text: no constructor needed
            return YScalar(text, where, text)
        if self._constructor is None:
            self._constructor = yaml.SafeLoader("")  # only its construct_* methods are used
        node = yaml.ScalarNode(tag, text, event.start_mark, event.end_mark, event.style)
        try:
            value = self._constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            if not self.in_key:  # a tag no safe constructor knows: refused (parse_yaml)
                raise
            value = text
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
            if not self.in_key:  # a key's values are never used: nothing to report
                self.problems.append(
                    Diagnostic(
                        where,
                        Code.YAML,
                        f"YAML: {text!r} cannot be read as {tag.rsplit(':', 1)[-1]}: {exc}",
                        "quote it to make it a string, or fix the value",
                    )
                )
            value = text
        return YScalar(value, where, text)

    def alias(self, event: Any) -> YNode | None:
        """The node an alias names (``None`` where it is a mapping's key: the key is
        taken), counted as all it expands to."""
        name = event.anchor
        anchored = self.anchors.get(name)
        if anchored is None:
            raise _syntax(self.loc(event.start_mark), f"found undefined alias {name!r}")
        stack = self.stack
        depth = len(stack) + anchored.height
        if depth > MAX_DEPTH:
            self.refuse_depth(event, name)
        self.aliased += anchored.values
        if self.aliased > MAX_ALIASED:
            _refuse(
                self.loc(event.start_mark),
                f"YAML: alias *{name} expands past {MAX_ALIASED:,} values here "
                "(all aliases together)",
                "write the values out instead of nesting aliases",
            )
        self.total += anchored.values
        if self.total > MAX_VALUES:
            self.refuse_size(event, name)
        parent = stack[-1] if stack else None
        if parent is not None:
            parent.height = max(parent.height, anchored.height)
            if parent.entries is not None and parent.key is None:
                if anchored.event is not None:  # a scalar: the text written is the key
                    merge = _merges(anchored.event)
                    parent.key = (anchored.event.value, anchored.loc, merge)
                else:
                    parent.key = (self.bad_key(anchored.loc), anchored.loc, False)
                return None
        if anchored.node is None:  # a scalar written as a key, used as a value here
            anchored.node = self.scalar(anchored.event)
        return anchored.node

    def anchor(self, event: Any, anchored: _Anchored) -> None:
        first = self.anchors.get(event.anchor)
        if first is not None:
            raise _syntax(
                self.loc(event.start_mark),
                f"anchor &{event.anchor} is defined twice (first at line {first.loc.line})",
            )
        self.anchors[event.anchor] = anchored

    # -- bounds ----------------------------------------------------------------------

    def refuse_depth(self, event: Any, alias: str | None) -> None:
        what = f"alias *{alias} nests" if alias else "values nest"
        _refuse(
            self.loc(event.start_mark),
            f"YAML: {what} deeper than {MAX_DEPTH} levels here",
            "flatten the structure" + (f", or do not reuse *{alias} here" if alias else ""),
        )

    def refuse_size(self, event: Any, alias: str | None) -> None:
        what = f"alias *{alias} expands" if alias else "the document grows"
        _refuse(
            self.loc(event.start_mark),
            f"YAML: {what} past {MAX_VALUES:,} values here",
            "write the values out instead of nesting aliases"
            if alias
            else f"split the file: a document holds at most {MAX_VALUES:,} values",
        )


def _merges(event: Any) -> bool:
    """Whether a scalar written as a key is YAML's merge key ``<<`` (plain, or tagged)."""
    if event.tag is None or event.tag == "!":
        return bool(event.implicit[0]) and event.value == "<<"
    return bool(event.tag == _MERGE)


def _refuse(where: Location, what: str, hint: str) -> NoReturn:
    raise YamlError([Diagnostic(where, Code.YAML, what, hint)])


def _syntax(where: Location, what: str) -> YamlError:
    return YamlError(
        [Diagnostic(where, Code.YAML, f"YAML syntax: {what}", "fix the syntax at this place")]
    )


def parse_yaml(text: str, file: str) -> tuple[YNode, list[Diagnostic]]:
    """Parse one YAML document into located nodes, with the duplicate keys found.

    A duplicate key is reported and the tree keeps its last value, as YAML
    loaders do, so that the rest of the document can still be checked.
    Raises ``YamlError`` for syntax errors, and for a document nested deeper
    than ``MAX_DEPTH`` or expanding (through aliases) past ``MAX_VALUES``
    values: those are refused where they cross the bound, before anything
    larger is built.  An empty document is an empty mapping.
    """
    reader = _Reader(text, file)
    try:
        root = reader.read()
    except yaml.constructor.ConstructorError as exc:  # a tag no safe constructor knows
        mark = exc.problem_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        raise YamlError(
            [Diagnostic(where, Code.YAML, f"YAML: {exc.problem}", "use plain YAML values")]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        raise _syntax(where, exc.problem or exc.context or "invalid YAML") from None
    except yaml.YAMLError as exc:
        raise YamlError([Diagnostic(Location(file, 1, 1), Code.YAML, f"YAML: {exc}")]) from None
    if root is None:
        return YMap({}, Location(file, 1, 1)), []
    return root, reader.problems
