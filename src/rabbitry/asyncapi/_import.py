"""An AsyncAPI document ``rabbitry export asyncapi`` wrote, read back into a spec draft.

Names and settings AsyncAPI holds natively are read from there (the AMQP
channel bindings' exchange and queue, descriptions, message names, the
operations' channels and messages); the rest from the ``x-rabbitry-*`` fields,
and the schema files from ``x-rabbitry-schema-files`` (JSON text, by path).  Fields the
exporter adds for readers only (dead-letter paths, a binding's placeholders)
are derived again by ``rabbitry check`` and not read, and neither are the
channels of retry queues (marked ``retry_of``) that their queue's ``retry:``
makes again.  Arguments with a sugar key come back as the sugar key
(``x-dead-letter-exchange`` as ``dead_letter``), the way a spec is written by hand.

A document that is not AsyncAPI 3.0.0, or not one rabbitry wrote, is refused
with ``InvalidArgument`` naming the file and where it breaks which rule.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from rabbitry.asyncapi._export import EXTENSION
from rabbitry.asyncapi._shape import EXPORTED_SHAPE
from rabbitry.asyncapi._validate import ASYNCAPI_VERSION, SchemaFault, schema_faults
from rabbitry.errors import InvalidArgument
from rabbitry.spec._files import FileRefused, read_text_bounded
from rabbitry.spec._retry import delay_ms
from rabbitry.spec._yaml import YamlError, parse_yaml
from rabbitry.spec.arguments import EXCHANGE_ARGUMENTS, QUEUE_ARGUMENTS, ArgSpec
from rabbitry.spec.draft import SpecDraft
from rabbitry.spec.model import retry_queue_name
from rabbitry.spec.policies import POLICY_KEYS

__all__ = ["draft_from_asyncapi", "read_asyncapi"]

#: How many ``$ref`` hops the reader follows from an operation to a message's name.
_MAX_HOPS = 8


def read_asyncapi(path: Path) -> SpecDraft:
    """The spec an AsyncAPI document (JSON or YAML) written by ``rabbitry export asyncapi``
    holds; ``InvalidArgument`` for a file that cannot be read or is not such a document."""
    try:
        text = read_text_bounded(path)
    except FileRefused as exc:
        raise InvalidArgument(f"{path} {exc.reason}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"cannot read {path}: {exc}") from None
    return draft_from_asyncapi(_parsed(text, str(path)), source=str(path))


def _parsed(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        pass
    try:
        return parse_yaml(text, source)[0].plain()
    except YamlError as exc:
        where = exc.diagnostics[0].render() if exc.diagnostics else source
        raise InvalidArgument(
            f"{source} is neither JSON nor YAML rabbitry can read: {where}"
        ) from None


def draft_from_asyncapi(document: Any, *, source: str = "the AsyncAPI document") -> SpecDraft:
    """The spec ``document`` (an AsyncAPI document as plain data, as the exporter wrote it)
    holds; ``source`` names it in errors."""
    if not isinstance(document, Mapping) or document.get("asyncapi") != ASYNCAPI_VERSION:
        raise InvalidArgument(
            f"{source} is not an AsyncAPI {ASYNCAPI_VERSION} document (its `asyncapi` field "
            f"must be {ASYNCAPI_VERSION!r}); rabbitry reads back the AsyncAPI it wrote "
            "with `rabbitry export asyncapi`"
        )
    _refuse(source, f"is not valid AsyncAPI {ASYNCAPI_VERSION}", schema_faults(document))
    if f"{EXTENSION}version" not in document:
        raise InvalidArgument(
            f"{source} was not written by `rabbitry export asyncapi` (it has no "
            f"`{EXTENSION}version`): rabbitry can only read back the AsyncAPI it wrote, "
            "where nothing of the spec is lost"
        )
    _refuse(source, "lacks what `rabbitry export asyncapi` writes", _shape_faults(document))
    return _Reader(document, source).draft()


def _refuse(source: str, what: str, faults: tuple[SchemaFault, ...]) -> None:
    if faults:
        more = f" (and {len(faults) - 1} more)" if len(faults) > 1 else ""
        raise InvalidArgument(f"{source} {what}: {faults[0]}{more}")


@cache
def _shape_validator() -> Draft202012Validator:
    return Draft202012Validator(EXPORTED_SHAPE)


def _shape_faults(document: Any) -> tuple[SchemaFault, ...]:
    faults = []
    for error in sorted(
        _shape_validator().iter_errors(document), key=lambda e: list(map(str, e.path))
    ):
        specific = best_match([error]) or error
        pointer = "".join(
            "/" + str(p).replace("~", "~0").replace("/", "~1") for p in specific.absolute_path
        )
        faults.append(SchemaFault(pointer, specific.message))
    return tuple(faults)


class _Reader:
    """One document's reading: the spec's parts, each from its fields."""

    def __init__(self, document: Mapping[str, Any], source: str) -> None:
        self.document = document
        self.source = source

    def draft(self) -> SpecDraft:
        d = self.document
        spec: dict[str, Any] = {"version": d[f"{EXTENSION}version"]}
        if f"{EXTENSION}rabbitmq" in d:
            spec["rabbitmq"] = d[f"{EXTENSION}rabbitmq"]
        if f"{EXTENSION}codegen" in d:
            codegen = d[f"{EXTENSION}codegen"]
            spec["codegen"] = {"package": codegen["package"], "out": codegen["out"]}
        exchanges, queues = self.channels()
        parts: dict[str, Any] = {"exchanges": exchanges, "queues": queues}
        for key, kind in (("policies", "policies"), ("operator_policies", "operator-policies")):
            parts[key] = {n: _policy(p) for n, p in d[f"{EXTENSION}{kind}"].items()}
        parts["bindings"] = [_binding(b) for b in d[f"{EXTENSION}bindings"]]
        parts["messages"] = {m["name"]: _message(m) for m in d["components"]["messages"].values()}
        parts["services"] = self.services()
        spec.update((key, value) for key, value in parts.items() if value)
        return SpecDraft(spec, self.schema_files())

    def schema_files(self) -> dict[str, Any]:
        files: dict[str, Any] = {}
        for path, text in self.document[f"{EXTENSION}schema-files"].items():
            try:
                files[path] = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise InvalidArgument(
                    f"{self.source}: at /{EXTENSION}schema-files/{path}: the file is not JSON "
                    f"text ({exc})"
                ) from None
        return files

    def channels(self) -> tuple[dict[str, Any], dict[str, Any]]:
        exchanges: dict[str, Any] = {}
        queues: dict[str, Any] = {}
        made = _made_by_retry(self.document["channels"].values())
        for channel in self.document["channels"].values():
            amqp = channel["bindings"]["amqp"]
            if amqp["is"] == "queue":
                name = amqp["queue"]["name"]
                if not channel.get(f"{EXTENSION}undeclared") and name not in made:
                    queues[name] = _queue(channel, amqp["queue"])
            elif not channel.get(f"{EXTENSION}builtin"):
                exchanges[amqp["exchange"]["name"]] = _exchange(channel, amqp["exchange"])
        return exchanges, queues

    def services(self) -> dict[str, Any]:
        services: dict[str, dict[str, Any]] = {
            name: _described({}, entry)
            for name, entry in self.document[f"{EXTENSION}services"].items()
        }
        for op_id, operation in self.document["operations"].items():
            name = operation[f"{EXTENSION}service"]
            service = services.setdefault(name, {})
            at = f"/operations/{op_id}"
            names = [self.message_name(ref["$ref"], at) for ref in operation["messages"]]
            if operation["action"] == "send":
                service.setdefault("publishes", []).extend(names)
            else:
                channel = self.follow(operation["channel"]["$ref"], at)
                queue = channel.get("bindings", {}).get("amqp", {}).get("queue", {}).get("name")
                if not isinstance(queue, str):
                    raise InvalidArgument(
                        f"{self.source}: at {at}: a receive operation's channel must be a queue "
                        "channel (`bindings.amqp.is: queue`)"
                    )
                service.setdefault("consumes", {})[queue] = names
        return services

    def message_name(self, ref: str, at: str) -> str:
        target = self.follow(ref, at)
        name = target.get("name")
        if not isinstance(name, str):
            raise InvalidArgument(
                f"{self.source}: at {at}: {ref!r} leads to a message without a name"
            )
        return name

    def follow(self, ref: str, at: str) -> Mapping[str, Any]:
        """The object ``ref`` (a ``#/...`` pointer, itself perhaps a ``$ref``) points at."""
        node: Any = {"$ref": ref}
        for _ in range(_MAX_HOPS):
            if not (isinstance(node, Mapping) and isinstance(node.get("$ref"), str)):
                break
            node = self._pointer(node["$ref"], at)
        if not isinstance(node, Mapping) or "$ref" in node:
            raise InvalidArgument(f"{self.source}: at {at}: {ref!r} does not lead to an object")
        return node

    def _pointer(self, ref: str, at: str) -> Any:
        if not ref.startswith("#/"):
            raise InvalidArgument(
                f"{self.source}: at {at}: {ref!r} is not a reference inside the document (#/...)"
            )
        node: Any = self.document
        for part in ref[2:].split("/"):
            key = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise InvalidArgument(f"{self.source}: at {at}: {ref!r} points at nothing")
        return node


def _described(entry: dict[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    if "description" in source:
        entry["description"] = source["description"]
    return entry


def _sugared(
    entry: dict[str, Any], arguments: Mapping[str, Any], known: Mapping[str, ArgSpec]
) -> None:
    """``arguments`` into ``entry``: each under its sugar key where it has one of a fitting
    kind, the rest under ``arguments:``."""
    raw: dict[str, Any] = {}
    for key, value in arguments.items():
        spec = known.get(key)
        if spec is not None and spec.sugar and _fits(value, spec.kind):
            entry[spec.sugar] = value
        else:
            raw[key] = value
    if raw:
        entry["arguments"] = raw


def _fits(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _exchange(channel: Mapping[str, Any], amqp: Mapping[str, Any]) -> dict[str, Any]:
    extras = channel[f"{EXTENSION}exchange"]
    entry: dict[str, Any] = {"type": amqp["type"]}
    if amqp.get("durable", True) is not True:
        entry["durable"] = amqp["durable"]
    if amqp.get("autoDelete", False):
        entry["auto_delete"] = True
    if extras["internal"]:
        entry["internal"] = True
    _sugared(entry, extras["arguments"], EXCHANGE_ARGUMENTS)
    return _described(entry, channel)


def _made_by_retry(channels: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """The queues the ``retry:`` of the document's queues make: the spec never names them.
    A channel marked ``retry_of`` that no ``retry:`` makes (a hand-edited document) is
    not among them and stays a queue; a delay that does not parse makes nothing here
    (``rabbitry check`` of the spec written says what is wrong with it)."""
    made: set[str] = set()
    for channel in channels:
        amqp = channel["bindings"]["amqp"]
        if amqp["is"] != "queue" or channel.get(f"{EXTENSION}undeclared"):
            continue
        extras = channel[f"{EXTENSION}queue"]  # the shape holds: an object, labels as text
        for label in extras.get("retry", ()):
            with contextlib.suppress(ValueError):
                made.add(retry_queue_name(amqp["queue"]["name"], delay_ms(label)))
    return frozenset(made)


def _queue(channel: Mapping[str, Any], amqp: Mapping[str, Any]) -> dict[str, Any]:
    extras = channel[f"{EXTENSION}queue"]
    entry: dict[str, Any] = {}
    if extras["type"] != "classic":
        entry["type"] = extras["type"]
    exclusive = amqp.get("exclusive", False)
    if exclusive:
        entry["exclusive"] = exclusive
    durable = amqp.get("durable", not exclusive)
    if durable != (not exclusive):  # the spec's default: durable unless exclusive
        entry["durable"] = durable
    if amqp.get("autoDelete", False):
        entry["auto_delete"] = True
    _sugared(entry, extras["arguments"], QUEUE_ARGUMENTS)
    if "retry" in extras:
        entry["retry"] = list(extras["retry"])
    return _described(entry, channel)


def _policy(policy: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    implied = "queues"
    for key in ("pattern", "queues", "exchanges"):
        if key in policy:
            entry[key] = policy[key]
            implied = "exchanges" if key == "exchanges" else "queues"
    if policy["apply_to"] != implied:
        entry["apply_to"] = policy["apply_to"]
    if policy["priority"] != 0:
        entry["priority"] = policy["priority"]
    raw: dict[str, Any] = {}
    for key, value in policy["definition"].items():
        known = POLICY_KEYS.get(key)
        if known is not None and known.sugar and _fits(value, known.value.kind):
            entry[known.sugar] = value
        else:
            raw[key] = value
    if raw:
        entry["definition"] = raw
    return _described(entry, policy)


def _binding(binding: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("from", "queue", "exchange", "key", "match", "headers", "arguments")
    return {key: binding[key] for key in keys if key in binding}


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    extras = message[f"{EXTENSION}message"]
    entry: dict[str, Any] = {"schema": extras["schema"], "exchange": extras["exchange"]}
    if extras["routing_key"]:
        entry["routing_key"] = extras["routing_key"]
    if "headers" in extras:
        entry["headers"] = extras["headers"]
    if "reply" in extras:
        entry["reply"] = extras["reply"]
    return _described(entry, message)
