"""Random specs for the AsyncAPI round trip (a spec document and its schema files), and the
comparison the round trip must pass (``assert_same_spec``).

Names are drawn with characters AsyncAPI ids cannot hold (``/``, ``~``, spaces,
``é``) so that ids made from them are tested; every generated spec is meant to
pass ``rabbitry check`` (the test rejects the few that do not, and counts them).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import strategies as st

from rabbitry.spec import Spec

__all__ = ["RETRY_DELAYS", "assert_same_spec", "spec_documents"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"

_NAME = st.text(alphabet="ab.-_/ é~", min_size=1, max_size=5).filter(
    lambda s: not s.startswith("amq.") and s.strip() == s
)
_MESSAGE_NAME = st.text(alphabet="ABab_", min_size=1, max_size=5).filter(str.isidentifier)
_DESCRIPTION = st.none() | st.text(alphabet="ab é'\":#\n{}", max_size=12)
#: A ``retry:`` delay as a user may write it: a unit, a number of ms, a spelling that is not
#: the label (``60s`` is the queue ``*.retry.1m``), a delay written twice in one list.
RETRY_DELAYS = st.one_of(
    st.sampled_from(["5s", "30s", "5m", "1h", "250ms", "60s", "1500ms", "90m"]),
    st.integers(1, 10**6),
)
_CUSTOM = st.one_of(
    st.integers(-5, 5),
    st.booleans(),
    st.text(alphabet="ab{}", max_size=3),
    st.floats(0, 9, width=32),
)


def _described(draw: st.DrawFn, entry: dict[str, Any]) -> dict[str, Any]:
    description = draw(_DESCRIPTION)
    if description is not None:
        entry["description"] = description
    return entry


def _exchanges(draw: st.DrawFn) -> dict[str, Any]:
    exchange_names = draw(st.lists(_NAME, min_size=1, max_size=4, unique=True))
    exchanges: dict[str, Any] = {}
    for name in exchange_names:
        entry: dict[str, Any] = {
            "type": draw(st.sampled_from(["topic", "direct", "fanout", "headers"]))
        }
        if draw(st.booleans()):
            entry["durable"] = draw(st.booleans())
        if draw(st.booleans()):
            entry["internal"] = draw(st.booleans())
        if draw(st.booleans()):
            entry["auto_delete"] = draw(st.booleans())
        if draw(st.booleans()):
            entry["alternate_exchange"] = draw(st.sampled_from(exchange_names))
        if draw(st.booleans()):
            entry["arguments"] = {"x-custom": draw(_CUSTOM)}
        exchanges[name] = _described(draw, entry)
    return exchanges


def _queues(draw: st.DrawFn, exchange_names: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Queues, and which of them are run-time (exclusive) queues."""
    queue_names = draw(st.lists(_NAME, max_size=4, unique=True))
    queues: dict[str, Any] = {}
    runtime: list[str] = []
    for name in queue_names:
        kind = draw(st.sampled_from(["classic", "quorum", "stream"]))
        entry = {} if kind == "classic" and draw(st.booleans()) else {"type": kind}
        if kind == "classic" and draw(st.booleans()):
            entry["exclusive"] = True
            runtime.append(name)
        if kind == "classic" and draw(st.booleans()):
            entry["durable"] = draw(st.booleans())
        if kind != "stream" and draw(st.booleans()):
            entry["dead_letter"] = draw(st.sampled_from(exchange_names))
        if kind != "stream" and draw(st.booleans()):
            entry["message_ttl"] = draw(st.integers(0, 10**6))
        if kind == "quorum" and draw(st.booleans()):
            entry["delivery_limit"] = draw(st.integers(0, 9))
        if kind == "classic" and draw(st.booleans()):
            entry[draw(st.sampled_from(["max_priority", "max_length"]))] = draw(st.integers(1, 9))
            entry["overflow"] = draw(st.sampled_from(["drop-head", "reject-publish"]))
        if kind != "stream" and draw(st.booleans()):
            entry["dead_letter_routing_key"] = draw(st.sampled_from(["dead", "a.b"]))
            entry["single_active_consumer"] = draw(st.booleans())
        if kind == "stream" and draw(st.booleans()):
            entry["max_age"] = draw(st.sampled_from(["7D", "12h"]))
        if draw(st.booleans()):
            entry.setdefault("arguments", {})["x-custom"] = draw(_CUSTOM)
        if kind != "stream" and not entry.get("exclusive") and draw(st.booleans()):
            entry["retry"] = draw(st.lists(RETRY_DELAYS, min_size=1, max_size=4))
        queues[name] = _described(draw, entry)
    return queues, runtime


def _bindings(
    draw: st.DrawFn, exchanges: dict[str, Any], queue_names: list[str], runtime: list[str]
) -> list[dict[str, Any]]:
    exchange_names = list(exchanges)
    bindings: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 4))):
        source = draw(st.sampled_from(exchange_names))
        kind = exchanges[source]["type"]
        binding: dict[str, Any] = {"from": source}
        queue = draw(st.sampled_from(queue_names)) if queue_names and draw(st.booleans()) else None
        if queue is not None and queue in runtime:
            if kind not in ("topic", "direct"):
                continue
            binding.update(queue=queue, key=draw(st.sampled_from(["{id}", "a.{id}"])))
        else:
            if queue is not None:
                binding["queue"] = queue
            else:
                binding["exchange"] = draw(st.sampled_from(exchange_names))
            if kind == "headers":
                binding["match"] = draw(st.sampled_from(["all", "any", "all-with-x", "any-with-x"]))
                binding["headers"] = {"h": draw(st.sampled_from(["y", 1, True]))}
            elif kind != "fanout" and draw(st.booleans()):
                binding["key"] = draw(st.sampled_from(["a", "a.#", "*.b"]))
        if draw(st.booleans()):
            binding["arguments"] = {"x-custom": draw(_CUSTOM)}
        if binding not in bindings:
            bindings.append(binding)
    return bindings


def _policies(
    draw: st.DrawFn, queue_names: list[str], exchange_names: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Policies and operator policies."""
    policies: dict[str, Any] = {}
    for priority, name in enumerate(draw(st.lists(_NAME, max_size=2, unique=True))):
        policy: dict[str, Any] = (
            {"queues": draw(st.lists(st.sampled_from(queue_names), min_size=1, unique=True))}
            if queue_names and draw(st.booleans())
            else {"pattern": draw(st.sampled_from(["^a", ".*", "b$"]))}
        )
        if priority:  # distinct priorities: two policies on one queue must not tie
            policy["priority"] = priority
        policy["message_ttl" if draw(st.booleans()) else "max_length"] = draw(st.integers(1, 999))
        if draw(st.booleans()):
            policy["definition"] = {"queue-version": 2}
        policies[name] = _described(draw, policy)
    if draw(st.booleans()):  # an exchange policy: names made into a pattern, sugar inside
        policies["exchange policy"] = {
            "exchanges": draw(st.lists(st.sampled_from(exchange_names), min_size=1, unique=True)),
            "alternate_exchange": draw(st.sampled_from(exchange_names)),
        }
    operator_policies: dict[str, Any] = {}
    if draw(st.booleans()):
        operator_policies["cap"] = {"pattern": ".*", "max_length": draw(st.integers(1, 10**6))}
    return policies, operator_policies


def _messages(
    draw: st.DrawFn,
    exchanges: dict[str, Any],
    static: list[str],
    bindings: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]]]:
    """Messages, their schema files, and the messages each queue is sure to get (a
    binding that routes each one to its home queue is added to ``bindings``)."""
    exchange_names = list(exchanges)
    schemas: dict[str, Any] = {}
    common = draw(st.booleans())
    if common:
        schemas["schemas/common.json"] = {
            "$schema": DRAFT,
            "$defs": {"Id": {"type": "string", "minLength": 1, "pattern": "^[a-z]+$"}},
        }
    messages: dict[str, Any] = {}
    homes: dict[str, list[str]] = {}
    public = [x for x in exchange_names if not exchanges[x].get("internal")]
    public += ["amq.topic", "amq.direct", ""]  # built-in: published to, never declared
    types = {name: entry["type"] for name, entry in exchanges.items()}
    types.update({"amq.topic": "topic", "amq.direct": "direct", "": "default"})
    for i, name in enumerate(draw(st.lists(_MESSAGE_NAME, max_size=4, unique=True))):
        if not (static and public):
            break
        exchange = draw(st.sampled_from(public))
        kind = types[exchange]
        home = draw(st.sampled_from(static))
        key = {
            "fanout": "",
            "headers": "",
            "direct": draw(st.sampled_from(["a", "b.c"])),
            "default": home,
        }.get(kind, draw(st.sampled_from(["a", "a.{id}", "{id}", "b.c"])))
        properties: dict[str, Any] = {
            "id": {"$ref": "common.json#/$defs/Id"}
            if common
            else {"type": "string", "pattern": "^[a-z]+$"},
            "n": {"type": "integer"},
        }
        path = f"schemas/m{i}.json"
        schemas[path] = {
            "$schema": DRAFT,
            "type": "object",
            "properties": properties,
            "required": ["id"],
        }
        message: dict[str, Any] = {"schema": path, "exchange": exchange}
        if key:
            message["routing_key"] = key
        # Every message reaches a queue that its consumers read (check requires both).
        route: dict[str, Any] = {"from": exchange, "queue": home}
        if kind == "headers":
            message["headers"] = {"h": "x"}
            route.update(match="all", headers={"h": "x"})
        elif kind == "topic":
            route["key"] = "#"
        elif kind == "direct":
            route["key"] = key
        if kind != "default" and route not in bindings:  # the default exchange binds itself
            bindings.append(route)
        homes.setdefault(home, []).append(name)
        messages[name] = _described(draw, message)
    if messages and draw(st.booleans()):  # a request and its reply (the default exchange)
        schemas["schemas/reply.json"] = {"$schema": DRAFT, "type": "object"}
        messages[draw(st.sampled_from(sorted(messages)))]["reply"] = "TheReply"
        messages["TheReply"] = {"schema": "schemas/reply.json", "exchange": ""}
    return messages, schemas, homes


def _services(draw: st.DrawFn, messages: dict[str, Any], homes: dict[str, list[str]]) -> Any:
    services: dict[str, Any] = {}
    for name in draw(st.lists(_NAME, max_size=3, unique=True)):
        service: dict[str, Any] = {}
        if messages and draw(st.booleans()):
            service["publishes"] = draw(st.lists(st.sampled_from(list(messages)), unique=True))
        if homes and draw(st.booleans()):
            queue = draw(st.sampled_from(sorted(homes)))
            service["consumes"] = {
                queue: draw(st.lists(st.sampled_from(homes[queue]), unique=True))
            }
        services[name] = _described(draw, service)
    return services


@st.composite
def spec_documents(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A spec document (as ``topology.yaml`` holds it) and its schema files by path."""
    exchanges = _exchanges(draw)
    queues, runtime = _queues(draw, list(exchanges))
    bindings = _bindings(draw, exchanges, list(queues), runtime)
    policies, operator_policies = _policies(draw, list(queues), list(exchanges))
    static = [q for q in queues if q not in runtime]
    messages, schemas, homes = _messages(draw, exchanges, static, bindings)
    services = _services(draw, messages, homes)
    document: dict[str, Any] = {"version": 1}
    if draw(st.booleans()):
        document["rabbitmq"] = "3.12"
    if draw(st.booleans()):
        document["codegen"] = {"package": "pkg_x", "out": "out/pkg_x"}
    document.update(
        exchanges=exchanges,
        queues=queues,
        policies=policies,
        operator_policies=operator_policies,
        bindings=bindings,
        messages=messages,
        services=services,
    )
    return document, schemas


def _schema_files(spec: Spec) -> dict[str, Any]:
    root = spec.root.resolve()
    return {
        path.relative_to(root).as_posix(): doc.contents
        for path, doc in spec.schemas.documents.items()
    }


def assert_same_spec(original: Spec, again: Spec) -> None:
    """Equal as ``Spec``s (paths aside), with the same schemas at the same relative paths."""
    assert dataclasses.replace(again, path=original.path) == original
    for name, message in original.messages.items():
        assert dict(again.messages[name].schema) == dict(message.schema), name
    assert _schema_files(again) == _schema_files(original)
