"""JSON Schema (draft 2020-12) → the type model, for every message of a spec.

Each message's schema becomes a def named after the message; each ``$ref``
target becomes one def, shared by everything that refers to it (its identity
is its file and JSON pointer, so two messages referring to
``common.json#/$defs/JobId`` get the same ``JobId``); each inline object with
properties becomes a def with a derived name (``StartParameters``: parent and
property; ``...Item`` for array items; the discriminating ``const`` value,
or ``OptionN``, for the options of a union).

Keywords the model does not capture are recorded per def as "unsupported":
the types stay an approximation there, and the strategies check their
output against the real validator.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import jsonschema.exceptions
import referencing.exceptions

from rabbitry import _bounded
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
)
from rabbitry.codegen._names import Namer, pascal
from rabbitry.errors import SpecError
from rabbitry.spec import Code, Diagnostic, Location, Message, Spec
from rabbitry.spec.schemas import ANNOTATIONS, SchemaStore, json_path

__all__ = ["ANNOTATIONS", "MODELLED", "build_model", "constraint_notes"]

#: Keywords the model captures (``multipleOf`` for integers only, ``allOf`` of objects only).
MODELLED = frozenset(
    {
        "$ref",
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "minProperties",
        "maxProperties",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "items",
        "minItems",
        "maxItems",
        "oneOf",
        "anyOf",
        "allOf",
    }
)
_OBJECT_KEYS = ("properties", "required", "additionalProperties", "minProperties", "maxProperties")
_ARRAY_KEYS = ("items", "minItems", "maxItems")
_STRING_KEYS = ("minLength", "maxLength", "pattern", "format")
_NUMBER_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_JSON_TYPES = ("null", "boolean", "object", "array", "number", "integer", "string")

Where = tuple[Path, tuple[str | int, ...]]


def constraint_notes(schema: Any) -> str:
    """The constraints of one schema (not following ``$ref``), for a docstring."""
    if not isinstance(schema, Mapping):
        return ""
    notes: list[str] = []

    def has(key: str) -> bool:
        return key in schema and not isinstance(schema[key], Mapping | list)

    if has("format"):
        notes.append(f"Format: {schema['format']}.")
    if has("pattern"):
        notes.append(f"Pattern: ``{schema['pattern']}``.")
    for low, high, what in (
        ("minLength", "maxLength", "Length"),
        ("minItems", "maxItems", "Items"),
        ("minProperties", "maxProperties", "Properties"),
    ):
        bounds = [f"at least {schema[low]}"] if has(low) else []
        bounds += [f"at most {schema[high]}"] if has(high) else []
        if bounds:
            notes.append(f"{what}: {', '.join(bounds)}.")
    for key, what in (
        ("minimum", "Minimum"),
        ("exclusiveMinimum", "Greater than"),
        ("maximum", "Maximum"),
        ("exclusiveMaximum", "Less than"),
        ("multipleOf", "Multiple of"),
    ):
        if has(key):
            notes.append(f"{what}: {schema[key]}.")
    if "default" in schema:
        notes.append(f"Default: {schema['default']!r}.")
    return " ".join(notes)


def _description(schema: Any) -> str:
    value = schema.get("description") if isinstance(schema, Mapping) else None
    return value if isinstance(value, str) else ""


class _Builder:
    def __init__(self, spec: Spec, namer: Namer) -> None:
        self.spec = spec
        self.store: SchemaStore = spec.schemas
        self.root = spec.root.resolve()
        self.namer = namer
        self.model = Model()
        self.memo: dict[tuple[Path, str], str] = {}
        self.current: list[str] = []
        #: The message whose schema is being modelled (named when it nests too deeply).
        self.message: Message | None = None

    # -- bookkeeping ----------------------------------------------------------

    def display(self, where: Where) -> str:
        path, parts = where
        try:
            shown = path.relative_to(self.root).as_posix()
        except ValueError:
            shown = path.as_posix()
        return shown + (f"#{json_path(parts)}" if parts else "")

    def unsupported(self, what: str, where: Where) -> None:
        owner = self.current[-1] if self.current else ""
        reasons = self.model.unsupported.setdefault(owner, [])
        text = f"{what} at {self.display(where)}"
        if text not in reasons:
            reasons.append(text)

    # -- messages and refs ----------------------------------------------------

    def messages(self) -> Model:
        messages = sorted(self.spec.messages.values(), key=lambda m: m.name)
        for message in messages:
            key = (self.spec.schema_file(message).resolve(), "")
            if key in self.memo:
                self.model.messages[message.name] = self.namer.take(pascal(message.name))
            else:
                self.memo[key] = self.model.messages[message.name] = self.namer.take(
                    pascal(message.name)
                )
        for message in messages:
            self.message = message
            path = self.spec.schema_file(message).resolve()
            name = self.model.messages[message.name]
            first = self.memo[(path, "")]
            if name != first:  # two messages with one schema file: the second is an alias
                self.model.defs[name] = AliasDef(name, RefT(first), [])
            elif name not in self.model.defs:
                where = f"Message ``{message.name}``: published to ``{message.exchange}``"
                where += (
                    f" with routing key ``{message.routing_key}``" if message.routing_key else ""
                )
                self.define(
                    name,
                    self.store.contents(path),
                    (path, ()),
                    lead=[message.description or ""],
                    tail=[f"{where}; schema ``{self.display((path, ()))}``."],
                )
        return self.model

    def define(
        self,
        name: str,
        schema: Any,
        where: Where,
        *,
        lead: Sequence[str] = (),
        tail: Sequence[str] = (),
    ) -> None:
        """Define ``name``; its docstring: ``lead``, description, constraints, ``tail``."""
        self.current.append(name)
        try:
            node = self.node(schema, where, name, own=name)
        finally:
            self.current.pop()
        description = _description(schema)
        notes = [*lead, "" if description in lead else description]
        existing = self.model.defs.get(name)
        if node == RefT(name) and isinstance(existing, ObjectDef):
            existing.doc = [*notes, *existing.doc, *tail]
        else:
            doc = [*notes, constraint_notes(schema), *tail]
            self.model.defs[name] = AliasDef(name, node, doc)

    def resolve(self, ref: str, where: Where) -> tuple[Where, str, Any] | None:
        """The target of ``ref`` written in ``where``'s file: its place, identity and schema."""
        path = where[0]
        target = urljoin(path.as_uri(), ref)
        uri, fragment = urldefrag(target)
        file = Path(unquote(urlsplit(uri).path)) if uri else path
        try:
            contents = self.store.registry.resolver(base_uri=file.as_uri()).lookup("#" + fragment)
        except (referencing.exceptions.Unresolvable, LookupError, TypeError, ValueError):
            return None
        parts: tuple[str | int, ...] = ()
        if fragment.startswith("/"):
            parts = tuple(
                unquote(p).replace("~1", "/").replace("~0", "~") for p in fragment[1:].split("/")
            )
        return (file, parts), fragment, contents.contents

    def ref(self, ref: str, where: Where) -> Node:
        found = self.resolve(ref, where)
        if found is None:
            self.unsupported(f"$ref {ref!r} that does not resolve", where)
            return AnyT()
        target, fragment, schema = found
        key = (target[0], fragment)
        if key not in self.memo:
            if target[1]:
                hint = pascal(str(target[1][-1]))
            else:
                title = schema.get("title") if isinstance(schema, Mapping) else None
                hint = pascal(title if isinstance(title, str) else target[0].stem)
            self.memo[key] = name = self.namer.take(hint)
            self.define(name, schema, target, tail=[f"Schema: ``{self.display(target)}``."])
        return RefT(self.memo[key])

    # -- schemas --------------------------------------------------------------

    def node(self, schema: Any, where: Where, hint: str, own: str | None = None) -> Node:
        if schema is True:
            return AnyT()
        if schema is False:
            return NeverT()
        if not isinstance(schema, Mapping):
            self.unsupported("a schema that is not an object", where)
            return AnyT()
        for key in schema:
            if key not in MODELLED and key not in ANNOTATIONS:
                self.unsupported(f"keyword {key!r}", where)
        validation = [k for k in schema if k not in ANNOTATIONS]
        if "$ref" in schema:
            if any(k != "$ref" for k in validation):
                self.unsupported("keywords beside $ref", where)
            ref = schema["$ref"]
            return self.ref(ref, where) if isinstance(ref, str) else AnyT()
        if "allOf" in schema:
            merged = self.merge_all(schema, where)
            if merged is None:
                return AnyT()
            schema = merged
        if "enum" in schema or "const" in schema:
            literal = self.literal(schema, where)
            if own is None and isinstance(literal, LiteralT) and len(literal.values) > 1:
                name = self.namer.take(hint)  # an enum gets a name users can annotate with
                self.model.defs[name] = AliasDef(name, literal, [_description(schema)])
                return RefT(name)
            return literal
        if "oneOf" in schema or "anyOf" in schema:
            return self.union(schema, where, hint, own)
        return self.typed(schema, where, hint, own)

    def literal(self, schema: Mapping[str, Any], where: Where) -> Node:
        values: list[Any] = list(schema["enum"]) if isinstance(schema.get("enum"), list) else []
        if "const" in schema:
            values = [schema["const"]] if "enum" not in schema else values
            values = [v for v in values if v == schema["const"]]
        rest = {
            k: v for k, v in schema.items() if k not in ("enum", "const", "$ref", "$dynamicRef")
        }
        kept: list[Any] = []
        for value in values:
            try:
                ok = _bounded.jsonschema_validator()(rest).is_valid(value)  # bounded patterns
            except (
                _bounded.Unknown,
                referencing.exceptions.Unresolvable,
                jsonschema.exceptions.SchemaError,
                LookupError,
            ):
                ok = True  # the rest refers elsewhere: the value is kept
            if ok and not any(_same_json(value, v) for v in kept):
                kept.append(value)
        return LiteralT(tuple(kept)) if kept else NeverT()

    def merge_all(self, schema: Mapping[str, Any], where: Where) -> dict[str, Any] | None:
        """``allOf`` of object schemas in one file, merged into one schema; else ``None``."""
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        parts = schema["allOf"] if isinstance(schema["allOf"], list) else []
        for index, written in enumerate(parts):
            part = written
            if isinstance(written, Mapping) and isinstance(written.get("$ref"), str):
                found = self.resolve(written["$ref"], where)
                if found is None or found[0][0] != where[0]:
                    self.unsupported("allOf with a $ref into another file", where)
                    return None
                part = found[2]
            if not isinstance(part, Mapping) or any(
                k in part for k in ("$ref", "allOf", "oneOf", "anyOf", "enum", "const")
            ):
                self.unsupported(f"allOf/{index} that is not a plain schema", where)
                return None
            for key, value in part.items():
                if key == "properties" and isinstance(value, Mapping):
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required" and isinstance(value, list):
                    have = list(merged.get("required", []))
                    merged["required"] = have + [r for r in value if r not in have]
                elif key in merged and merged[key] != value and key not in ANNOTATIONS:
                    self.unsupported(f"allOf/{index}: {key} differs from its siblings'", where)
                    return None
                else:
                    merged.setdefault(key, value)
        return merged

    def union(self, schema: Mapping[str, Any], where: Where, hint: str, own: str | None) -> Node:
        keyword = "oneOf" if "oneOf" in schema else "anyOf"
        if "oneOf" in schema and "anyOf" in schema:
            self.unsupported("oneOf and anyOf together", where)
        options = schema[keyword] if isinstance(schema[keyword], list) else []
        base = {
            k: v for k, v in schema.items() if k not in ("oneOf", "anyOf") and k not in ANNOTATIONS
        }
        resolved = [self.deref(option, where) for option in options]
        discriminator = _discriminator(resolved, base)
        members: list[Node] = []
        for index, written in enumerate(options):
            option = written
            if base and isinstance(written, Mapping) and "$ref" not in written:
                option = _merge_base(base, written)
            elif base:
                self.unsupported(f"{keyword} beside other keywords", where)
            if discriminator is not None and isinstance(resolved[index], Mapping):
                value = resolved[index]["properties"][discriminator]
                tag = value["const"] if "const" in value else value["enum"][0]
                name = hint + pascal(str(tag), fallback="Option")
            else:
                name = f"{hint}Option{index + 1}"
            members.append(self.node(option, (where[0], (*where[1], keyword, index)), name))
        if keyword == "oneOf" and discriminator is None and not _disjoint(resolved):
            self.unsupported("oneOf whose options may overlap", where)
        if not members:
            return NeverT()
        return members[0] if len(members) == 1 else UnionT(tuple(members))

    def deref(self, schema: Any, where: Where) -> Any:
        for _ in range(16):
            if not (isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str)):
                break
            found = self.resolve(schema["$ref"], where)
            if found is None:
                return None
            where, _, schema = found
        return schema

    def typed(self, schema: Mapping[str, Any], where: Where, hint: str, own: str | None) -> Node:
        declared = schema.get("type")
        if isinstance(declared, str):
            types = [declared]
        elif isinstance(declared, list):
            types = [t for t in _JSON_TYPES if t in declared]
        else:
            types = [
                kind
                for kind, keys in (
                    ("object", _OBJECT_KEYS),
                    ("array", _ARRAY_KEYS),
                    ("string", _STRING_KEYS),
                    ("number", _NUMBER_KEYS),
                )
                if any(k in schema for k in keys)
            ]
            if not types:
                return AnyT()
        if "integer" in types and "number" in types:
            types.remove("integer")
        if len(types) > 1:  # the def's own name is the union's, not the object's
            own, hint = None, f"{hint}Object" if own is not None else hint
        nodes = [self.one_type(t, schema, where, hint, own) for t in types]
        if len(nodes) == 1:
            return nodes[0]
        return UnionT(tuple(nodes)) if nodes else NeverT()

    def one_type(
        self, kind: str, schema: Mapping[str, Any], where: Where, hint: str, own: str | None
    ) -> Node:
        if kind == "null":
            return NullT()
        if kind == "boolean":
            return BoolT()
        if kind == "integer":
            return self.integer(schema, where)
        if kind == "number":
            return self.number(schema, where)
        if kind == "string":
            return StrT(
                min_length=_int(schema.get("minLength")) or 0,
                max_length=_int(schema.get("maxLength")),
                pattern=schema["pattern"] if isinstance(schema.get("pattern"), str) else None,
                format=schema["format"] if isinstance(schema.get("format"), str) else None,
            )
        if kind == "array":
            items = schema.get("items", True)
            item = self.node(items, (where[0], (*where[1], "items")), f"{hint}Item")
            max_items = _int(schema.get("maxItems"))
            if items is False:
                max_items = 0
            return ListT(item, _int(schema.get("minItems")) or 0, max_items)
        return self.object(schema, where, hint, own)

    def integer(self, schema: Mapping[str, Any], where: Where) -> Node:
        lows, highs = [], []
        if _num(schema.get("minimum")) is not None:
            lows.append(math.ceil(schema["minimum"]))
        if _num(schema.get("exclusiveMinimum")) is not None:
            lows.append(math.floor(schema["exclusiveMinimum"]) + 1)
        if _num(schema.get("maximum")) is not None:
            highs.append(math.floor(schema["maximum"]))
        if _num(schema.get("exclusiveMaximum")) is not None:
            highs.append(math.ceil(schema["exclusiveMaximum"]) - 1)
        lo, hi = (max(lows) if lows else None), (min(highs) if highs else None)
        step = _num(schema.get("multipleOf"))
        multiple: int | None = None
        if step is not None:
            if float(step).is_integer() and step > 0:
                multiple = int(step)
            else:
                self.unsupported("multipleOf that is not a whole number", where)
        if lo is not None and hi is not None and lo > hi:
            return NeverT()
        return IntT(lo, hi, multiple)

    def number(self, schema: Mapping[str, Any], where: Where) -> Node:
        if "multipleOf" in schema:
            self.unsupported("multipleOf on a number", where)
        lo, exclude_lo = _bound(schema, "minimum", "exclusiveMinimum", max)
        hi, exclude_hi = _bound(schema, "maximum", "exclusiveMaximum", min)
        if (
            lo is not None
            and hi is not None
            and (lo > hi or (lo == hi and (exclude_lo or exclude_hi)))
        ):
            return NeverT()
        return FloatT(lo, hi, exclude_lo, exclude_hi)

    def object(self, schema: Mapping[str, Any], where: Where, hint: str, own: str | None) -> Node:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = [r for r in schema.get("required", []) if isinstance(r, str)]
        extra = schema.get("additionalProperties", True)
        path = where[0]
        if not properties and not required and extra is not False:
            value = self.node(extra, (path, (*where[1], "additionalProperties")), f"{hint}Value")
            return MapT(
                value, _int(schema.get("minProperties")) or 0, _int(schema.get("maxProperties"))
            )
        if "minProperties" in schema or "maxProperties" in schema:
            self.unsupported("minProperties/maxProperties beside properties", where)
        name = own if own is not None else self.namer.take(hint)
        definition = ObjectDef(name)
        self.model.defs[name] = definition
        for key, sub in properties.items():
            at = (path, (*where[1], "properties", key))
            node = self.node(sub, at, name + pascal(key, fallback="Field"))
            doc = [_description(sub), constraint_notes(sub)]
            definition.fields.append(Field(key, node, key in required, doc))
        for key in required:
            if key not in properties:
                node = (
                    self.node(extra, (path, (*where[1], "additionalProperties")), f"{name}Value")
                    if isinstance(extra, Mapping)
                    else AnyT()
                )
                definition.fields.append(Field(key, node, True, ["Required; any value."]))
        return RefT(name)


def _int(value: Any) -> int | None:
    number = _num(value)
    return int(number) if number is not None and float(number).is_integer() else None


def _num(value: Any) -> int | float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _bound(
    schema: Mapping[str, Any], inclusive: str, exclusive: str, pick: Any
) -> tuple[Any, bool]:
    bound, excluded = _num(schema.get(inclusive)), False
    other = _num(schema.get(exclusive))
    if other is not None and (bound is None or pick(bound, other) == other):
        bound, excluded = other, True
    return bound, excluded


def _same_json(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _merge_base(base: Mapping[str, Any], option: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**base, **option}
    if isinstance(base.get("properties"), Mapping):
        merged["properties"] = {**base["properties"], **option.get("properties", {})}
    if isinstance(base.get("required"), list):
        have = list(option.get("required", []))
        merged["required"] = have + [r for r in base["required"] if r not in have]
    return merged


def _discriminator(options: Sequence[Any], base: Mapping[str, Any]) -> str | None:
    """A required property whose single allowed value differs in every option, if any."""
    if len(options) < 2 or not all(isinstance(o, Mapping) for o in options):
        return None

    def tag(option: Mapping[str, Any], key: str) -> Any:
        props = option.get("properties")
        sub = props.get(key) if isinstance(props, Mapping) else None
        if not isinstance(sub, Mapping):
            return None
        if "const" in sub:
            return (sub["const"],)
        enum = sub.get("enum")
        return (enum[0],) if isinstance(enum, list) and len(enum) == 1 else None

    first = options[0].get("properties")
    if not isinstance(first, Mapping):
        return None
    for key in first:
        tags = [tag(o, key) for o in options]
        required = all(key in _required(o) or key in _required(base) for o in options)
        if required and all(t is not None for t in tags):
            values = [json.dumps(t[0], sort_keys=True) for t in tags if t is not None]
            if len(set(values)) == len(values):
                return str(key)
    return None


def _required(schema: Mapping[str, Any]) -> list[Any]:
    required = schema.get("required")
    return required if isinstance(required, list) else []


def _disjoint(options: Sequence[Any]) -> bool:
    """Options whose ``type``s can never hold the same value (so exactly one matches)."""
    kinds: list[set[str]] = []
    for option in options:
        if not isinstance(option, Mapping) or option.get("type") is None:
            return False
        declared = option["type"]
        kind = {declared} if isinstance(declared, str) else set(declared)
        if "number" in kind:
            kind.add("integer")
        kinds.append(kind)
    return all(not (a & b) for i, a in enumerate(kinds) for b in kinds[i + 1 :])


def build_model(spec: Spec, namer: Namer) -> Model:
    """The type model of every message of ``spec`` (checked: its schemas are loaded and sound).

    ``check`` bounds how deeply one schema file nests, but a chain of ``$ref``s
    from file to file (or ``$defs`` to ``$defs``), each nesting further, can
    still go deeper than the recursive walk here can: that is reported as a
    ``SpecError`` located at the message's ``schema:``, never a ``RecursionError``.
    """
    builder = _Builder(spec, namer)
    try:
        return builder.messages()
    except RecursionError:
        message = builder.message
        where = message.locs.of("schema") if message else Location(str(spec.path), 1, 1)
        what = (
            f"message {message.name if message else '?'}: its schema nests too deeply "
            "through $ref chains for code generation"
        )
        hint = "flatten the schema: fewer levels between its $refs, or shorter $ref chains"
        raise SpecError([Diagnostic(where, Code.SCHEMA_INVALID, what, hint)]) from None
