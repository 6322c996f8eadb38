"""The semantic checks: what a well-formed spec can still get wrong.

Each check is a function ``(spec) -> Iterator[Diagnostic]``; ``CHECKS`` runs
them in order.  They only read the model (and, for placeholders, the loaded
schemas) and never stop at the first finding.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rabbitry.spec._names import queue_names, unknown_exchange
from rabbitry.spec.diagnostics import Code, Diagnostic, did_you_mean
from rabbitry.spec.model import (
    Binding,
    ExchangeType,
    Location,
    Spec,
    placeholders,
)
from rabbitry.spec.policies import dead_letter_of
from rabbitry.spec.policy_checks import POLICY_ADVISORY, POLICY_CHECKS, POLICY_HINTS
from rabbitry.spec.retry_checks import RETRY_ADVISORY, RETRY_CHECKS
from rabbitry.spec.schemas import SchemaStore

__all__ = ["CHECKS", "HINTS", "consumed", "replies", "run_checks", "run_hints"]

Check = Callable[[Spec], Iterator[Diagnostic]]

_WORD_PLACEHOLDER = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}$")


def check_references(spec: Spec) -> Iterator[Diagnostic]:
    """Every exchange, queue and message named somewhere is declared."""
    for exchange in spec.exchanges.values():
        ae = exchange.alternate_exchange
        if ae is not None:
            field = (
                "alternate_exchange"
                if "alternate_exchange" in exchange.locs.fields
                else "arguments"
            )
            found = unknown_exchange(
                spec, ae, exchange.locs.of(field), f"exchange {exchange.name!r} alternate_exchange"
            )
            if found:
                yield found
    for queue in spec.queues.values():
        dlx = queue.dead_letter_exchange
        if dlx:  # "" is the default exchange: dead-lettering by queue name
            field = "dead_letter" if "dead_letter" in queue.locs.fields else "arguments"
            found = unknown_exchange(
                spec, dlx, queue.locs.of(field), f"queue {queue.name!r} dead_letter"
            )
            if found:
                yield found
    for binding in spec.bindings:
        yield from _binding_references(spec, binding)
    for message in spec.messages.values():
        found = unknown_exchange(
            spec, message.exchange, message.locs.of("exchange"), f"message {message.name!r}"
        )
        if found:
            yield found
        elif (target := spec.exchanges.get(message.exchange)) is not None and target.internal:
            yield Diagnostic(
                message.locs.of("exchange"),
                Code.INTERNAL_EXCHANGE,
                f"message {message.name!r} is published to internal exchange {message.exchange!r}",
                "publish to an exchange bound to it, or make it not internal",
            )
    for service in spec.services.values():
        for i, name in enumerate(service.publishes):
            if name not in spec.messages:
                yield _unknown_message(spec, name, service.locs.of(f"publishes.{i}"), service.name)
        for queue_name, messages in service.consumes.items():
            if queue_name not in queue_names(spec):
                yield Diagnostic(
                    service.locs.of(f"consumes.{queue_name}"),
                    Code.UNKNOWN_QUEUE,
                    f"service {service.name!r} consumes from undeclared queue {queue_name!r}",
                    did_you_mean(queue_name, queue_names(spec), "queues"),
                )
            for i, name in enumerate(messages):
                if name not in spec.messages:
                    where = service.locs.of(f"consumes.{queue_name}.{i}")
                    yield _unknown_message(spec, name, where, service.name)


def _unknown_message(spec: Spec, name: str, where: Location, service: str) -> Diagnostic:
    return Diagnostic(
        where,
        Code.UNKNOWN_MESSAGE,
        f"service {service!r} names message {name!r}, which the spec does not declare",
        did_you_mean(name, spec.messages, "messages"),
    )


def _binding_references(spec: Spec, binding: Binding) -> Iterator[Diagnostic]:
    if binding.source == "":
        yield Diagnostic(
            binding.locs.of("from"),
            Code.RESERVED_NAME,
            "nothing can be bound to the default exchange ''",
            "bind from a declared exchange; the default one routes to every queue by name",
        )
    elif (
        found := unknown_exchange(spec, binding.source, binding.locs.of("from"), "binding")
    ) is not None:
        yield found
    if binding.destination_type == "queue":
        if binding.destination not in queue_names(spec):
            yield Diagnostic(
                binding.locs.of("queue"),
                Code.UNKNOWN_QUEUE,
                f"binding names queue {binding.destination!r}, which the spec does not declare",
                did_you_mean(binding.destination, queue_names(spec), "queues"),
            )
    elif (
        found := unknown_exchange(spec, binding.destination, binding.locs.of("exchange"), "binding")
    ) is not None:
        yield found


def check_bindings(spec: Spec) -> Iterator[Diagnostic]:
    """Bindings fit their exchange's type, are not repeated, and keep placeholders whole."""
    seen: dict[tuple[Any, ...], Binding] = {}
    for binding in spec.bindings:
        kind = spec.exchange_type(binding.source)
        if kind is not None and kind is not ExchangeType.HEADERS:
            for field in ("match", "headers"):
                if field in binding.locs.fields:
                    yield Diagnostic(
                        binding.locs.of(field, key=True),
                        Code.BINDING_SHAPE,
                        f"`{field}` is for headers exchanges; {binding.source!r} is {kind.value}",
                        "remove it, or bind from a headers exchange",
                    )
        if kind in (ExchangeType.FANOUT, ExchangeType.HEADERS) and binding.key:
            yield Diagnostic(
                binding.locs.of("key"),
                Code.IGNORED,
                f"a {kind.value} exchange ignores the binding key {binding.key!r}",
                "remove `key`",
            )
        yield from _placeholder_words(binding.key, binding.locs.of("key"), "binding key")
        identity = (
            binding.source,
            binding.destination_type,
            binding.destination,
            binding.key,
            _frozen(binding.broker_arguments),
        )
        if (first := seen.get(identity)) is not None:
            yield Diagnostic(
                binding.locs.where,
                Code.DUPLICATE_BINDING,
                f"this binding repeats the one at line {first.locs.where.line}",
                "remove one of them",
            )
        else:
            seen[identity] = binding


def _frozen(value: object) -> object:
    """``value`` as something hashable; lists and tables inside included, types kept apart."""
    if isinstance(value, Mapping):
        return ("table", tuple(sorted((str(k), _frozen(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("array", tuple(_frozen(v) for v in value))
    return (type(value).__name__, repr(value))


def _placeholder_words(template: str, where: Location, what: str) -> Iterator[Diagnostic]:
    """Placeholders must each be a whole routing-key word with an identifier inside."""
    for word in template.split("."):
        if ("{" in word or "}" in word) and not _WORD_PLACEHOLDER.match(word):
            yield Diagnostic(
                where,
                Code.PLACEHOLDER,
                f"{what} {template!r}: {word!r} is not a placeholder word",
                "a placeholder is a whole word between dots, e.g. 'job.{job_type}'",
            )


def check_placeholders(spec: Spec) -> Iterator[Diagnostic]:
    """Each ``{field}`` of a routing key or header is a required string or integer field."""
    store: SchemaStore | None = spec.schemas
    for message in spec.messages.values():
        where = message.locs.of("routing_key")
        yield from _placeholder_words(
            message.routing_key, where, f"message {message.name!r} routing key"
        )
        schema_path = spec.schema_file(message)
        if store is None or store.real(schema_path) not in store.documents:
            continue  # the schema itself is reported
        root_path, root = store.resolve(schema_path, store.contents(schema_path))
        if root is None:
            continue  # its $ref does not resolve: reported with the schema
        for field in message.params:
            whole = _WORD_PLACEHOLDER.match(f"{{{field}}}")
            if field in placeholders(message.routing_key) and not whole:
                continue  # not a placeholder word: reported above
            problem = _field_problem(store, root_path, root, field)
            if problem:
                loc = (
                    where
                    if field in placeholders(message.routing_key)
                    else message.locs.of("headers")
                )
                yield Diagnostic(
                    loc,
                    Code.PLACEHOLDER,
                    f"message {message.name!r}: placeholder {{{field}}} {problem}",
                    f"make {field!r} a required string or integer property of the schema",
                )


def _field_problem(store: SchemaStore, path: Path, root: Any, field: str) -> str | None:
    if not isinstance(root, Mapping):
        return "cannot be filled: the schema is not an object schema"
    properties = root.get("properties")
    if not isinstance(properties, Mapping) or field not in properties:
        return "is not a property of the schema"
    required = root.get("required")
    if not isinstance(required, list) or field not in required:
        return "is not a required property: the routing key could not be filled"
    _, prop = store.resolve(path, properties[field])
    if prop is None:
        return None  # its $ref does not resolve: reported with the schema
    if not isinstance(prop, Mapping):
        return "has no usable schema"
    if "$ref" in prop:  # resolve gave up: a $ref cycle, reported with the schema
        return None
    if prop.get("type") in ("string", "integer"):
        return None
    values = prop.get("enum", [prop["const"]] if "const" in prop else None)
    if "type" not in prop and isinstance(values, list) and values and all(map(_word_value, values)):
        return None
    return f"has type {prop.get('type')!r}; a routing-key word must be a string or integer"


def _word_value(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def check_runtime_queues(spec: Spec) -> Iterator[Diagnostic]:
    """Exclusive queues are the runtime's: ``apply`` must never have to declare one."""
    for binding in spec.bindings:
        queue = (
            spec.queues.get(binding.destination) if binding.destination_type == "queue" else None
        )
        if queue is not None and queue.exclusive and not binding.runtime:
            yield Diagnostic(
                binding.locs.where,
                Code.RUNTIME_QUEUE,
                f"queue {queue.name!r} is exclusive (declared by its consumer at run time), "
                f"but this binding has a fixed key, so apply would have to declare the queue",
                "bind it with a '{param}' key the consumer fills, or make the queue not exclusive",
            )


def consumed(spec: Spec, queue: str) -> bool:
    """Some service consumes ``queue``."""
    return bool(spec.consumers(queue))


def _parking_queues(spec: Spec) -> set[str]:
    """Queues bound only from dead-letter exchanges: read by people and tools, not services."""
    dlxs = {str(dlx.value) for q in spec.queues if (dlx := dead_letter_of(spec, q)[0]) is not None}
    bound: dict[str, set[str]] = {}
    for binding in spec.bindings:
        if binding.destination_type == "queue":
            bound.setdefault(binding.destination, set()).add(binding.source)
    return {queue for queue, sources in bound.items() if sources <= dlxs}


def replies(spec: Spec) -> frozenset[str]:
    """The messages some message names as its ``reply`` (sent to a requester's reply_to)."""
    return frozenset(m.reply for m in spec.messages.values() if m.reply is not None)


def check_replies(spec: Spec) -> Iterator[Diagnostic]:
    """A ``reply:`` names a declared message, and that message says it travels the way every
    reply does: through the default exchange (``exchange: ""``, no routing key or headers),
    to the address in the request's ``reply_to`` (direct reply-to), with no binding."""
    for message in spec.messages.values():
        name = message.reply
        if name is None:
            continue
        where = message.locs.of("reply")
        reply = spec.messages.get(name)
        if reply is None:
            if name not in spec.broken_messages:
                yield Diagnostic(
                    where,
                    Code.UNKNOWN_MESSAGE,
                    f"message {message.name!r} names reply {name!r}, which the spec does not "
                    "declare",
                    did_you_mean(name, spec.messages, "messages"),
                )
            continue
        if reply.exchange != "" or reply.routing_key or reply.headers:
            yield Diagnostic(
                reply.locs.of("exchange"),
                Code.BAD_VALUE,
                f"message {name!r} is the reply of {message.name!r}, so it is sent through the "
                f"default exchange to the requester's reply_to, not to {reply.exchange!r}"
                + (" with a routing key or headers" if reply.routing_key or reply.headers else ""),
                'write `exchange: ""` (the default exchange) and no routing_key or headers',
            )


def check_warnings(spec: Spec) -> Iterator[Diagnostic]:
    """Likely mistakes that still work: unconsumed queues, nowhere to dead-letter.
    A queue with ``retry:`` and its retry queues are ``retry_checks``' to judge."""
    parking = _parking_queues(spec)
    for queue in spec.queues.values():
        if queue.retry_of is not None:
            continue  # a retry queue: nobody consumes it, by design (``retry_checks``)
        is_consumed = consumed(spec, queue.name)
        if not is_consumed and queue.name not in parking and not queue.retry:
            yield Diagnostic(
                queue.locs.where,
                Code.UNCONSUMED_QUEUE,
                f"no service consumes queue {queue.name!r}",
                "add it to a service's `consumes`, or remove the queue",
            )
        if ((is_consumed and queue.durable) or queue.retry) and dead_letter_of(spec, queue.name)[
            0
        ] is None:
            yield Diagnostic(
                queue.locs.where,
                Code.NO_DEAD_LETTER,
                f"queue {queue.name!r} has retry: but no dead_letter exchange: a message "
                "whose last try fails is dropped"
                if queue.retry
                else f"queue {queue.name!r} is consumed but has no dead_letter exchange: "
                "a message its consumer refuses is dropped",
                "add `dead_letter: EXCHANGE` (on the queue or in a policy) with a queue bound "
                "to that exchange",
            )
        strategy = queue.arguments.get("x-dead-letter-strategy")
        if strategy == "at-least-once" and queue.arguments.get("x-overflow") != "reject-publish":
            yield Diagnostic(
                queue.locs.of("dead_letter_strategy"),
                Code.DEAD_LETTER_STRATEGY,
                f"queue {queue.name!r}: at-least-once dead-lettering needs overflow "
                "reject-publish; without it RabbitMQ falls back to at-most-once",
                "add `overflow: reject-publish`",
            )


CHECKS: tuple[Check, ...] = (
    check_references,
    check_bindings,
    check_placeholders,
    check_runtime_queues,
    check_replies,
    check_warnings,
    *POLICY_CHECKS,
    *RETRY_CHECKS,
)


#: Checks that give advice (severity ``info``) rather than findings.
HINTS: tuple[Check, ...] = POLICY_HINTS


#: The checks whose findings are all warnings: a spec read only to be used
#: (``rabbitry.check.load_spec``, which fails on errors alone) skips them.
#: ``tests/test_fuzz_spec.py`` holds that skipping them never changes the errors.
ADVISORY: frozenset[Check] = frozenset({check_warnings, *POLICY_ADVISORY, *RETRY_ADVISORY})


def run_checks(spec: Spec, *, advisory: bool = True) -> list[Diagnostic]:
    """Every finding of every check, in check order (without ``advisory``, of those
    that may find an error)."""
    return [
        finding for check in CHECKS if advisory or check not in ADVISORY for finding in check(spec)
    ]


def run_hints(spec: Spec) -> list[Diagnostic]:
    """Every piece of advice (``info``): never a finding, never a failure."""
    return [hint for check in HINTS for hint in check(spec)]
