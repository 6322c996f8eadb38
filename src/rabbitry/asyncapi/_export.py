"""A loaded spec as an AsyncAPI 3.0.0 document, nothing of it lost.

AsyncAPI says what it can natively: each exchange is a channel with an AMQP
0.3.0 ``is: routingKey`` binding, each queue a channel with ``is: queue``,
each message a component with its self-contained payload schema
(``rabbitry.spec.bundle``), each service's publishing a ``send`` operation (one
per message, so the order of ``publishes`` is the order of the operations) and
its consuming from a queue a ``receive`` operation.  What AsyncAPI cannot say
rides in ``x-rabbitry-*`` fields, as the spec writes it: arguments, internal
exchanges, queue types, bindings with their keys and headers (and which are
made at run time, with their placeholders), policies and operator policies,
routing keys and headers of messages, a queue's ``retry:`` delays (as the spec
writes them), codegen, ``rabbitmq``, and every schema
file by its path, as JSON text (the payload is a bundle, which rewrites
``$ref``s: the files are how the spec is given back exactly).  A payload's own
references are rewritten once more to start from the document's root
(``#/components/messages/M/payload/$defs/...``): AsyncAPI resolves a ``$ref``
against the whole document, as ``@asyncapi/parser`` does.

The retry queues a ``retry:`` makes are channels like any queue (they exist on
the broker, and a reader of the document should see where failed messages
wait), each marked with the queue it serves (``retry_of``); the reader skips
them, since the ``retry:`` of their queue makes them again.

Object ids (channel, operation and message keys) are made from names with
every character outside ``[A-Za-z0-9_.-]`` replaced and a counter added when two
collide: the names themselves are always read from the fields, never from ids.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rabbitry.asyncapi._validate import ASYNCAPI_VERSION
from rabbitry.spec._walk import subschemas
from rabbitry.spec.bundle import bundle
from rabbitry.spec.model import (
    BUILTIN_EXCHANGES,
    Binding,
    Exchange,
    Message,
    Policy,
    PolicyTarget,
    Queue,
    Spec,
    retry_label,
)
from rabbitry.spec.policies import alternate_of, dead_letter_of

__all__ = ["AMQP_BINDING_VERSION", "EXTENSION", "asyncapi_document"]

#: The AMQP bindings version written on channels, operations and messages.
AMQP_BINDING_VERSION = "0.3.0"
#: The prefix of every field rabbitry adds; ``x-rabbitry-version`` marks a document it wrote.
EXTENSION = "x-rabbitry-"

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class _Ids:
    """Unique, schema-safe keys for one map of the document."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def __call__(self, *parts: str) -> str:
        base = ".".join(_ID_UNSAFE.sub("_", part) or "_" for part in parts)
        candidate, n = base, 1
        while candidate in self._taken:
            n += 1
            candidate = f"{base}-{n}"
        self._taken.add(candidate)
        return candidate


def _ref(*parts: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)}


def asyncapi_document(spec: Spec) -> dict[str, Any]:
    """``spec`` (as ``rabbitry.check.load_spec`` gives it) as an AsyncAPI 3.0.0 document.

    Not validated here: ``rabbitry.asyncapi.export_asyncapi`` validates before
    anything is written.
    """
    message_ids = _Ids()
    messages = {name: message_ids(name) for name in spec.messages}
    channel_ids = _Ids()
    exchange_channels: dict[str, str] = {}
    for name in spec.exchanges:
        exchange_channels[name] = channel_ids("exchange", name or "default")
    for message in spec.messages.values():
        if message.exchange not in exchange_channels:  # a built-in exchange
            exchange_channels[message.exchange] = channel_ids(
                "exchange", message.exchange or "default"
            )
    queue_channels = {name: channel_ids("queue", name) for name in spec.queues}
    consumed: dict[str, list[str]] = {name: [] for name in spec.queues}
    for service in spec.services.values():
        for queue, names in service.consumes.items():
            seen = consumed.setdefault(queue, [])
            seen.extend(n for n in names if n not in seen)
    for queue in consumed:
        if queue not in queue_channels:  # consumed but not declared: check refused it
            queue_channels[queue] = channel_ids("queue", queue)

    channels: dict[str, Any] = {}
    for name, channel_id in exchange_channels.items():
        on_it = [m for m in spec.messages.values() if m.exchange == name]
        channels[channel_id] = _exchange_channel(spec, name, on_it, messages)
    for name, channel_id in queue_channels.items():
        channels[channel_id] = _queue_channel(spec, name, consumed.get(name, []), messages)

    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": spec.codegen.package if spec.codegen else spec.path.stem,
            "version": str(spec.version),
            "description": f"Written by `rabbitry export asyncapi` from {spec.path.name}.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": _operations(spec, exchange_channels, queue_channels, messages),
        "components": {
            "messages": {
                messages[name]: _message(spec, message, messages[name])
                for name, message in spec.messages.items()
            }
        },
        f"{EXTENSION}version": spec.version,
    }
    if spec.rabbitmq is not None:
        document[f"{EXTENSION}rabbitmq"] = "{}.{}".format(*spec.rabbitmq)
    if spec.codegen is not None:
        document[f"{EXTENSION}codegen"] = {
            "package": spec.codegen.package,
            "out": spec.codegen.out.as_posix(),
        }
    document[f"{EXTENSION}services"] = {
        name: _described({}, service.description) for name, service in spec.services.items()
    }
    document[f"{EXTENSION}bindings"] = [_binding(b) for b in spec.bindings]
    document[f"{EXTENSION}policies"] = {n: _policy(p) for n, p in spec.policies.items()}
    document[f"{EXTENSION}operator-policies"] = {
        n: _policy(p) for n, p in spec.operator_policies.items()
    }
    document[f"{EXTENSION}schema-files"] = _schema_files(spec)
    return document


def _described(entry: dict[str, Any], description: str | None) -> dict[str, Any]:
    if description is not None:
        entry["description"] = description
    return entry


def _exchange_channel(
    spec: Spec, name: str, on_it: Iterable[Message], ids: Mapping[str, str]
) -> dict[str, Any]:
    declared = spec.exchanges.get(name)
    kind = declared.type.value if declared else BUILTIN_EXCHANGES.get(name, None)
    amqp_type = "default" if name == "" else str(kind) if kind else None
    exchange: dict[str, Any] = {"name": name}
    if amqp_type is not None:
        exchange["type"] = amqp_type
    if declared is not None:
        exchange.update(durable=declared.durable, autoDelete=declared.auto_delete)
    exchange["vhost"] = "/"
    channel: dict[str, Any] = {
        "address": None,
        "title": name or "(the default exchange)",
        "messages": {ids[m.name]: _ref("components", "messages", ids[m.name]) for m in on_it},
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": exchange,
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }
    if declared is None:
        channel[f"{EXTENSION}builtin"] = True
        return channel
    _described(channel, declared.description)
    channel[f"{EXTENSION}exchange"] = _exchange_extras(declared)
    alternate = alternate_of(spec, name)
    if alternate is not None:
        channel[f"{EXTENSION}alternate-exchange"] = {
            "exchange": alternate.value,
            "from": alternate.source,
        }
    return channel


def _exchange_extras(exchange: Exchange) -> dict[str, Any]:
    return {"internal": exchange.internal, "arguments": dict(exchange.arguments)}


def _queue_channel(
    spec: Spec, name: str, consumed: Iterable[str], ids: Mapping[str, str]
) -> dict[str, Any]:
    declared = spec.queues.get(name)
    queue: dict[str, Any] = {"name": name}
    if declared is not None:
        queue.update(
            durable=declared.durable, exclusive=declared.exclusive, autoDelete=declared.auto_delete
        )
    queue["vhost"] = "/"
    channel: dict[str, Any] = {
        # A run-time queue is server-named: its address is not known before it exists.
        "address": None if declared is None or declared.runtime else name,
        "title": name,
        "messages": {ids[m]: _ref("components", "messages", ids[m]) for m in consumed if m in ids},
        "bindings": {
            "amqp": {"is": "queue", "queue": queue, "bindingVersion": AMQP_BINDING_VERSION}
        },
    }
    if declared is None:
        channel[f"{EXTENSION}undeclared"] = True
        return channel
    _described(channel, declared.description)
    channel[f"{EXTENSION}queue"] = _queue_extras(declared)
    exchange, key = dead_letter_of(spec, name)
    if exchange is not None or key is not None:
        path: dict[str, Any] = {}
        if exchange is not None:
            path.update(exchange=exchange.value, exchange_from=exchange.source)
        if key is not None:
            path.update(routing_key=key.value, routing_key_from=key.source)
        channel[f"{EXTENSION}dead-letter"] = path
    bound = [_binding(b) for b in spec.bindings_to_queue(name)]
    if bound:
        channel[f"{EXTENSION}bound-from"] = bound
    return channel


def _queue_extras(queue: Queue) -> dict[str, Any]:
    extras: dict[str, Any] = {
        "type": queue.type.value,
        "runtime": queue.runtime,
        "arguments": dict(queue.arguments),
    }
    if queue.retry:
        extras["retry"] = [retry_label(delay) for delay in queue.retry]
    if queue.retry_of is not None:
        extras["retry_of"] = queue.retry_of
    return extras


def _binding(binding: Binding) -> dict[str, Any]:
    entry: dict[str, Any] = {"from": binding.source, binding.destination_type: binding.destination}
    if binding.key:
        entry["key"] = binding.key
    if binding.match is not None:
        entry["match"] = binding.match.value
    if binding.headers:
        entry["headers"] = dict(binding.headers)
    if binding.arguments:
        entry["arguments"] = dict(binding.arguments)
    if binding.runtime:
        entry["runtime"] = True
        entry["placeholders"] = list(binding.params)
    return entry


def _policy(policy: Policy) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if policy.names:
        key = "exchanges" if policy.apply_to is PolicyTarget.EXCHANGES else "queues"
        entry[key] = list(policy.names)
    else:
        entry["pattern"] = policy.pattern
    entry["apply_to"] = policy.apply_to.value
    entry["priority"] = policy.priority
    entry["definition"] = dict(policy.definition)
    return _described(entry, policy.description)


def _rooted(schema: Any, at: str) -> Any:
    """``schema`` with each of its own ``#...`` references made to start from the document's
    root, where AsyncAPI resolves them: ``#/$defs/X`` → ``#/components/messages/M/payload/$defs/X``.
    """
    for _, node in subschemas(schema):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            node["$ref"] = at + ref[1:]
    return schema


def _message(spec: Spec, message: Message, message_id: str) -> dict[str, Any]:
    payload_at = _ref("components", "messages", message_id, "payload")["$ref"]
    extras: dict[str, Any] = {
        "schema": message.schema_path.as_posix(),
        "exchange": message.exchange,
        "routing_key": message.routing_key,
    }
    if message.headers:
        extras["headers"] = dict(message.headers)
    if message.params:
        extras["placeholders"] = list(message.params)
    if message.reply is not None:
        extras["reply"] = message.reply
    entry: dict[str, Any] = {
        "name": message.name,
        "title": message.name,
        "contentType": "application/json",
        "payload": _rooted(bundle(spec.schemas, spec.schema_file(message)), payload_at),
        "bindings": {"amqp": {"messageType": message.name, "bindingVersion": AMQP_BINDING_VERSION}},
    }
    _described(entry, message.description)
    entry[f"{EXTENSION}message"] = extras
    return entry


def _operations(
    spec: Spec,
    exchange_channels: Mapping[str, str],
    queue_channels: Mapping[str, str],
    messages: Mapping[str, str],
) -> dict[str, Any]:
    ids = _Ids()
    operations: dict[str, Any] = {}
    for name, service in spec.services.items():
        for published in service.publishes:
            message = spec.messages.get(published)
            if message is None:  # check refused it before export
                continue
            channel = exchange_channels[message.exchange]
            operations[ids(name, "send", published)] = {
                "action": "send",
                "channel": _ref("channels", channel),
                "messages": [_ref("channels", channel, "messages", messages[published])],
                "bindings": {"amqp": {"mandatory": True, "bindingVersion": AMQP_BINDING_VERSION}},
                f"{EXTENSION}service": name,
            }
        for queue, names in service.consumes.items():
            channel = queue_channels[queue]
            operations[ids(name, "receive", queue)] = {
                "action": "receive",
                "channel": _ref("channels", channel),
                "messages": [
                    _ref("channels", channel, "messages", messages[m])
                    for m in names
                    if m in messages
                ],
                "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
                f"{EXTENSION}service": name,
                f"{EXTENSION}consumes": list(names),
            }
    return operations


def _schema_files(spec: Spec) -> dict[str, Any]:
    """Every schema file the spec reaches, by its path relative to the spec's folder, as
    JSON text: AsyncAPI tools resolve every ``$ref`` object in a document, extensions
    included, and a file's own (``common.json#/$defs/Id``) means nothing there."""
    root = spec.root.resolve()
    files = {
        Path(os.path.relpath(path, root)).as_posix(): json.dumps(
            document.contents, indent=2, ensure_ascii=False
        )
        for path, document in spec.schemas.documents.items()
    }
    return dict(sorted(files.items()))
