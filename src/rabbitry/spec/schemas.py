"""The message schemas: JSON Schema (draft 2020-12) files, their ``$ref``s, their faults.

Each file is registered under its ``file://`` URI, so a relative ``$ref`` such
as ``common.json#/$defs/JobId`` resolves to the sibling file.  References to
anything but local files are refused: a contract must not change because a
web server did.  Faults are located by file, line and column, and say the
JSON path of the offending keyword.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

import referencing
import referencing.exceptions
from jsonschema import Draft202012Validator
from referencing.jsonschema import DRAFT202012

from rabbitry.spec._files import REFUSED_HINT, FileRefused, read_text_bounded
from rabbitry.spec._ref_cycles import Cycle, Node, deepest_chain, same_value_cycles
from rabbitry.spec._schema_hints import meta_hint, ref_hint
from rabbitry.spec._walk import refs
from rabbitry.spec._yaml import MAX_DEPTH, YamlError, YMap, YNode, YSeq, parse_yaml
from rabbitry.spec.diagnostics import Code, Diagnostic
from rabbitry.spec.model import Location

__all__ = [
    "ANNOTATIONS",
    "DATA_KEYWORDS",
    "DRAFT_2020_12",
    "MAX_SCHEMA_STEPS",
    "SchemaStore",
    "json_path",
    "load_schemas",
]

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_META = Draft202012Validator(Draft202012Validator.META_SCHEMA)
_MAX_REF_DEPTH = 32
#: The deepest walk from a message's schema, one step per subschema or ``$ref`` followed:
#: every walker over schemas recurses at each step, and this keeps them all well inside
#: Python's recursion limit (a walk of ~1,000 steps crashed code generation).
MAX_SCHEMA_STEPS = 128

#: Keywords whose values are data, not schemas (``spec._walk`` knows which keywords hold schemas).
DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})

#: Keywords that say nothing about which values are valid (annotations, identifiers,
#: containers of definitions).
ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "$anchor",
        "$dynamicAnchor",
        "$defs",
        "definitions",
        "$vocabulary",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentMediaType",
        "contentEncoding",
        "contentSchema",
    }
)


def json_path(parts: Sequence[str | int]) -> str:
    """A JSON Pointer for ``parts`` (``/properties/job_id/type``); ``""`` is the root."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass(frozen=True)
class _Document:
    path: Path  # resolved
    display: str  # as reported: relative to the spec's folder
    contents: Any
    text: str = field(repr=False)

    @functools.cached_property
    def tree(self) -> YNode | None:
        """The same text parsed with positions, where YAML can read it: only when a
        finding needs a place (most files have none, and a read of 2,000 schema files
        spent half its time locating values nobody asked for)."""
        try:
            return parse_yaml(self.text, self.display)[0]
        except YamlError:
            return None  # valid JSON that YAML cannot read (tabs, say): positions are 1:1


@dataclass
class SchemaStore:
    """Every schema file the spec reaches, loaded once, with a registry for ``$ref``."""

    documents: dict[Path, _Document] = field(default_factory=dict)
    registry: referencing.Registry[Any] = field(default_factory=referencing.Registry)
    #: Files named but not loadable (already reported).
    missing: set[Path] = field(default_factory=set)
    #: Each path as ``Path.resolve`` gave it, asked once per store (a read of 2,000 schema
    #: files asked 34,000 times, a few system calls each).
    _real: dict[Path, Path] = field(default_factory=dict, repr=False)

    def real(self, path: Path) -> Path:
        """``path.resolve()``, once for this store."""
        found = self._real.get(path)
        if found is None:
            found = self._real[path] = path.resolve()
        return found

    def add(self, doc: _Document) -> None:
        self.documents[doc.path] = doc
        resource = DRAFT202012.create_resource(doc.contents)
        self.registry = self.registry.with_resource(doc.path.as_uri(), resource)

    def uri(self, path: Path) -> str:
        return self.real(path).as_uri()

    def contents(self, path: Path) -> Any:
        return self.documents[self.real(path)].contents

    def resolve(self, path: Path, schema: Any) -> tuple[Path, Any]:
        """Follow ``$ref`` chains from ``schema`` (in file ``path``) to a schema without one.

        A ``$ref`` that does not resolve (reported by ``load_schemas``) gives ``None``.
        """
        base = self.uri(path)
        for _ in range(_MAX_REF_DEPTH):
            if not (isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str)):
                break
            target = urljoin(base, schema["$ref"])
            schema = self.lookup(base, target)
            base = urldefrag(target).url or base
        return _path_of(base), schema

    def lookup(self, base: str, ref: str) -> Any:
        """The schema ``ref`` points at from ``base``, or ``None`` when it does not resolve.

        The registry has no ``retrieve``: a remote ``$ref`` is never fetched.
        """
        try:
            return self.registry.resolver(base_uri=base).lookup(ref).contents
        except referencing.exceptions.Unresolvable:
            return None
        except (LookupError, TypeError, ValueError):  # a JSON pointer into the wrong shape
            return None

    def locate(self, path: Path, parts: Sequence[str | int]) -> Location:
        """Line and column of the value at JSON path ``parts`` in ``path`` (best effort)."""
        doc = self.documents.get(self.real(path))
        if doc is None or doc.tree is None:
            return Location(doc.display if doc else str(path), 1, 1)
        node: YNode = doc.tree
        for part in parts:
            child: YNode | None = None
            if isinstance(node, YMap):
                child = node.get(str(part))
            elif isinstance(node, YSeq) and isinstance(part, int) and part < len(node.items):
                child = node.items[part]
            if child is None:
                break
            node = child
        return Location(doc.display, node.loc.line, node.loc.column)


def _path_of(uri: str) -> Path:
    return Path(urlsplit(uri).path)


def _read(
    path: Path, display: str, where_named: Location | Callable[[], Location]
) -> tuple[_Document | None, Diagnostic | None]:
    try:
        text = read_text_bounded(path)
    except FileNotFoundError:
        return None, Diagnostic(
            _at(where_named),
            Code.SCHEMA_FILE,
            f"schema file {display} does not exist",
            "check the path",
        )
    except FileRefused as exc:
        what = f"schema file {display} {exc.reason}"
        return None, Diagnostic(_at(where_named), Code.SCHEMA_FILE, what, REFUSED_HINT)
    except (OSError, UnicodeDecodeError) as exc:
        what = f"cannot read {display}: {exc}"
        return None, Diagnostic(_at(where_named), Code.SCHEMA_FILE, what)
    deep = _too_deep(text)
    if deep is not None:
        where = Location(display, *deep)
        what = f"the JSON nests deeper than {MAX_DEPTH} levels here"
        return None, Diagnostic(where, Code.SCHEMA_INVALID, what, _DEEP_HINT)
    try:
        contents = json.loads(text)
    except json.JSONDecodeError as exc:
        where = Location(display, exc.lineno, exc.colno)
        return None, Diagnostic(where, Code.SCHEMA_FILE, f"not JSON: {exc.msg}", "fix the syntax")
    return _Document(path.resolve(), display, contents, text), None


def _at(where: Location | Callable[[], Location]) -> Location:
    """A place given, or worked out now that a finding needs it."""
    return where() if callable(where) else where


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_DEEP_HINT = "flatten the schema: move nested parts into $defs and $ref them"


def _too_deep(text: str) -> tuple[int, int] | None:
    """Line and column where ``text`` (JSON) first nests deeper than ``MAX_DEPTH``, if it does.

    Every walk over a schema (the meta-schema check, codegen, ``check
    --against``) recurses once or more per level: a bound on the nesting keeps
    them all inside Python's recursion limit.  Scanned before ``json.loads``,
    which itself fails on a few thousand levels.
    """
    depth = 0
    for token in _TOKENS.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                at = token.start()
                line = text.count("\n", 0, at) + 1
                return line, at - (text.rfind("\n", 0, at) + 1) + 1
        elif bracket in "]}":
            depth -= 1
    return None


def load_schemas(
    paths: Mapping[Path, Location],
) -> tuple[SchemaStore, list[Diagnostic]]:
    """Load each schema file named by the spec (``path`` → where the spec names it).

    Returns the store and every fault found: unreadable files (located where
    they are named), invalid schemas and unresolvable or remote ``$ref``s
    (located in the schema file, with the JSON path).  Files reached through
    ``$ref`` are loaded and checked too.
    """
    store = SchemaStore()
    problems: list[Diagnostic] = []
    pending: list[tuple[Path, Location | Callable[[], Location]]] = list(paths.items())
    cwd = Path.cwd().resolve()
    while pending:
        path, named_at = pending.pop(0)
        real = store.real(path)
        if real in store.documents or real in store.missing:
            continue
        doc, fault = _read(path, _display(real, cwd), named_at)
        if doc is None:
            store.missing.add(real)
            problems.extend([fault] if fault else [])
            continue
        store.add(doc)
        problems.extend(_meta_problems(store, doc))
        for parts, ref in refs(doc.contents):
            target = _ref_target(doc.path, ref)
            if isinstance(target, str):
                where = store.locate(doc.path, parts)
                hint = "copy the schema into the spec's folder and refer to it by relative path"
                problems.append(
                    Diagnostic(where, Code.SCHEMA_REF, f"{json_path(parts)}: {target}", hint)
                )
            elif target is not None:
                pending.append((target, functools.partial(store.locate, doc.path, parts)))
    # Every reachable file is registered now: resolve each local reference for real.
    for doc in store.documents.values():
        for parts, ref in refs(doc.contents):
            target = _ref_target(doc.path, ref)
            if isinstance(target, str) or target in store.missing:
                continue  # reported above
            if store.lookup(doc.path.as_uri(), ref) is None:
                where = store.locate(doc.path, parts)
                what = f"{json_path(parts)}: $ref {ref!r} does not resolve"
                hint = ref_hint(doc.contents if target is None else store.contents(target), ref)
                problems.append(Diagnostic(where, Code.SCHEMA_REF, what, hint))
    contents = {path: doc.contents for path, doc in store.documents.items()}
    problems.extend(_cycle_problem(store, cycle) for cycle in same_value_cycles(contents))
    roots = list(dict.fromkeys(store.real(p) for p in paths if store.real(p) in store.documents))
    problems.extend(
        _chain_problem(store, root, chain)
        for root, chain in deepest_chain(contents, roots, MAX_SCHEMA_STEPS).items()
    )
    return store, problems


def _chain_problem(store: SchemaStore, root: Path, chain: Cycle) -> Diagnostic:
    """A walk from ``root`` deeper than ``MAX_SCHEMA_STEPS``, naming the ``$ref``s it follows."""
    hops = [
        (json_path(m[1]) or "#") if m[0] == root else f"{store.documents[m[0]].display}#"
        for n, m in itertools.pairwise(chain)
        if m[0] != n[0] or m[1][: len(n[1])] != n[1]
    ]
    what = (
        f"the schema goes more than {MAX_SCHEMA_STEPS} subschemas deep, counting each $ref "
        f"followed (through {' -> '.join(hops[:4])}{' -> ...' if len(hops) > 4 else ''})"
    )
    hint = "shorten the $ref chain, or nest fewer levels between its $refs"
    return Diagnostic(store.locate(root, ()), Code.SCHEMA_INVALID, what, hint)


def _cycle_problem(store: SchemaStore, cycle: Cycle) -> Diagnostic:
    """A cycle that never reads into the value, reported at its first ``$ref``."""
    first = next((n for n in cycle if "$ref" in _schema_at(store, n)), cycle[0])
    start = cycle.index(first)
    steps = [*cycle[start:], *cycle[:start], first]
    here = first[0]

    def named(node: Node) -> str:
        pointer = json_path(node[1]) or "#"
        return pointer if node[0] == here else f"{store.documents[node[0]].display}#{pointer}"

    parts = (*first[1], "$ref") if "$ref" in _schema_at(store, first) else first[1]
    return Diagnostic(
        store.locate(here, parts),
        Code.SCHEMA_REF,
        f"{json_path(parts)}: $ref cycle {' -> '.join(named(n) for n in steps)} applies to the "
        "same value at every step, so validating it would never end",
        "make the cycle go down into the value (through properties or items), or remove the $ref",
    )


def _schema_at(store: SchemaStore, node: Node) -> Any:
    schema = store.documents[node[0]].contents
    for part in node[1]:
        schema = schema[part]
    return schema


def _display(real: Path, cwd: Path) -> str:
    """How a schema file (its resolved path) is named in diagnostics: relative to the
    working folder (resolved) if inside it."""
    try:
        return str(real.relative_to(cwd))
    except ValueError:
        return str(real)


def _ref_target(path: Path, ref: str) -> Path | str | None:
    """The local file a ``$ref`` points into, ``None`` for the same file, or why it is refused."""
    target, _ = urldefrag(ref)
    if not target:
        return None
    if "\0" in target:
        return f"$ref {ref!r} is not a file name"
    scheme = urlsplit(target).scheme
    if scheme in ("http", "https", "ftp", "urn") or (scheme and scheme != "file"):
        return f"$ref {ref!r} is remote; remote references are refused"
    if scheme == "file" or target.startswith("/"):
        return f"$ref {ref!r} names a file by its absolute path, which only this machine has"
    return (path.parent / target).resolve()


@functools.cache
def _meta_fast() -> Any:
    """The 2020-12 meta-schema compiled by jsonschema-rs, on first use (``import rabbitry``
    loads no compiled validator): it tells a valid schema ~500 times faster than ``_META``."""
    import jsonschema_rs  # noqa: PLC0415 - see above

    return jsonschema_rs.validator_for(Draft202012Validator.META_SCHEMA)


def _meta_valid_fast(contents: Any) -> bool:
    """jsonschema-rs finds ``contents`` valid against the 2020-12 meta-schema; ``False``
    when it cannot tell (a value JSON has no type for), so that ``_META`` decides.  Only
    an invalid schema is walked again by ``_META``, for its located errors
    (``tests/test_schemas.py`` holds the two to the same verdict on random schemas)."""
    try:
        return bool(_meta_fast().is_valid(contents))
    except (ValueError, TypeError, OverflowError):
        return False


def _meta_problems(store: SchemaStore, doc: _Document) -> list[Diagnostic]:
    path, contents = doc.path, doc.contents
    problems: list[Diagnostic] = []
    if not isinstance(contents, Mapping):
        if not isinstance(contents, bool):
            problems.append(
                Diagnostic(
                    store.locate(path, ()),
                    Code.SCHEMA_INVALID,
                    "a schema must be a JSON object (or true/false)",
                )
            )
        return problems
    declared = contents.get("$schema")
    # Not a string: the meta-schema check below reports it.
    if isinstance(declared, str) and declared.rstrip("#") != DRAFT_2020_12:
        problems.append(
            Diagnostic(
                store.locate(path, ("$schema",)),
                Code.SCHEMA_INVALID,
                f"/$schema: {declared!r} is not draft 2020-12",
                f"use {DRAFT_2020_12!r} or leave $schema out",
            )
        )
    if _meta_valid_fast(contents):
        return problems
    for error in sorted(_META.iter_errors(contents), key=lambda e: list(map(str, e.absolute_path))):
        parts = tuple(error.absolute_path)
        problems.append(
            Diagnostic(
                store.locate(path, parts),
                Code.SCHEMA_INVALID,
                f"{json_path(parts) or '/'}: {error.message}",
                meta_hint(parts, error.instance),
            )
        )
    return problems
