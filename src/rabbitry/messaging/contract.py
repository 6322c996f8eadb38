"""The messaging contract: what the runtime needs of a spec, compiled and ready.

A ``Contract`` knows, for each message, its exchange, how to fill its routing
key and headers, whether it is persistent, and a compiled validator of its
(bundled) schema; for each queue, which messages it carries and, for run-time
queues, how the consumer declares and binds it.  It is plain data underneath
(``to_data`` / ``from_data``), so generated code embeds it and needs neither
the spec file nor the schema files at run time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema_rs

from rabbitry.check import load_spec, reach
from rabbitry.errors import ContractViolation, Fault, InvalidArgument, UnknownName
from rabbitry.spec import Spec
from rabbitry.spec.bundle import bundle
from rabbitry.spec.model import PLACEHOLDER, placeholders
from rabbitry.spec.policies import dead_letter_of

__all__ = ["Contract", "MessageContract", "QueueContract", "RuntimeBinding"]

FORMAT = 2  # 2: queues carry their effective dead-letter exchange and key

#: How every schema is compiled (here, and by ``check --against``, which must judge with
#: the runtime's validator).  A ``pattern`` without lookarounds or back-references runs on
#: the linear-time ``regex`` crate; one with them backtracks, and fancy-regex's default
#: limit (1,000,000 steps, ~45 ms a string) let one hostile message of 1,000 strings hold
#: a consumer for 45 s.  At 10,000 steps such a string is refused in ~0.2 ms (a
#: back-reference across 5,000 characters still matches); a string that reaches the limit
#: is invalid, with the error ``BacktrackLimitExceeded``.
PATTERN_OPTIONS = jsonschema_rs.FancyRegexOptions(backtrack_limit=10_000)


def compile_schema(schema: Mapping[str, Any]) -> Any:
    """A jsonschema-rs validator of ``schema`` with formats and the bounded pattern engine."""
    return jsonschema_rs.validator_for(
        dict(schema), validate_formats=True, pattern_options=PATTERN_OPTIONS
    )


def _fill(template: str, payload: Mapping[str, Any], message: str, *, word: bool = True) -> str:
    """``template`` with each ``{field}`` replaced by the payload's value.

    In a routing key (``word``) a value fills one word, so it may not hold a
    ``.``; a header value is compared whole by the broker and may.
    """
    what = "the routing key" if word else "a header"

    def value(match: re.Match[str]) -> str:
        field = match.group(1)
        raw = payload.get(field)
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise ContractViolation(
                message, [Fault(f"/{field}", f"needed for {what}, got {raw!r}")]
            )
        text = str(raw)
        if word and "." in text:
            raise ContractViolation(
                message,
                [Fault(f"/{field}", f"{text!r} fills one routing-key word and may not hold '.'")],
            )
        return text

    return PLACEHOLDER.sub(value, template)


def _pointer(parts: Iterable[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass(frozen=True)
class MessageContract:
    name: str
    exchange: str
    routing_key: str
    headers: Mapping[str, Any]
    #: Sent with delivery mode 2 when it can reach a durable queue.
    persistent: bool
    schema: Mapping[str, Any]
    #: The queues it can reach that have a ``max_priority`` (queue → max_priority): a
    #: publish's ``priority`` is checked against them (``_properties``).
    priorities: Mapping[str, int] = field(default_factory=dict)
    #: The message its consumer answers with (the spec's ``reply:``), ``None`` for none.
    reply: str | None = None

    _validator: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled now, not at the first publish: a schema that cannot be compiled (a $ref
        # that points nowhere, say) fails where the contract is loaded, naming the message.
        try:
            validator = compile_schema(self.schema)
        except jsonschema_rs.ValidationError as exc:
            reason = str(exc).split("\n", 1)[0]
            raise InvalidArgument(
                f"the schema of message {self.name!r} does not compile: {reason}; "
                "check the spec and generate the package again"
            ) from None
        object.__setattr__(self, "_validator", validator)

    def faults(self, payload: Any) -> list[Fault]:
        """Every way ``payload`` breaks the schema, each with its JSON Pointer."""
        validator = self._validator
        if validator.is_valid(payload):
            return []
        return [Fault(_pointer(e.instance_path), e.message) for e in validator.iter_errors(payload)]

    def validate(self, payload: Any) -> None:
        """``ContractViolation`` listing every fault, or nothing."""
        if not self._validator.is_valid(payload):
            raise ContractViolation(self.name, self.faults(payload))

    def routing_key_for(self, payload: Mapping[str, Any]) -> str:
        return _fill(self.routing_key, payload, self.name)

    def headers_for(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {
            name: _fill(value, payload, self.name, word=False) if isinstance(value, str) else value
            for name, value in self.headers.items()
        }


@dataclass(frozen=True)
class RuntimeBinding:
    """A binding the consumer of a run-time queue makes with its own values."""

    exchange: str
    key: str
    arguments: Mapping[str, Any]

    @property
    def params(self) -> tuple[str, ...]:
        return placeholders(self.key)

    def key_for(self, values: Mapping[str, str | int]) -> str:
        return _fill(self.key, values, f"binding {self.exchange} {self.key}")


@dataclass(frozen=True)
class QueueContract:
    name: str
    #: The messages a consumer of this queue may receive (its ``type`` is one of these).
    accepts: tuple[str, ...]
    #: Declared by its consumer (exclusive, server-named) rather than by ``apply``.
    runtime: bool
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: Mapping[str, Any]
    bindings: tuple[RuntimeBinding, ...]
    #: Where the queue's dead letters go, from its argument or a policy of the spec
    #: (``spec.policies.dead_letter_of``): a consumer sends what it refuses there.
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    #: The spec's ``retry:``: ``(delay in ms, retry queue)`` for each try after the first
    #: (``Queue.retry_queues``).  A consumer whose handler fails sends the message to the
    #: next one's queue, which gives it back after the delay; ``()``: tries in process.
    retry: tuple[tuple[int, str], ...] = ()

    @property
    def params(self) -> tuple[str, ...]:
        """What a consumer must give to bind this queue: the union of its bindings' params."""
        found: list[str] = []
        for binding in self.bindings:
            found.extend(p for p in binding.params if p not in found)
        return tuple(found)


@dataclass(frozen=True)
class Contract:
    messages: Mapping[str, MessageContract]
    queues: Mapping[str, QueueContract]
    #: service → (messages it publishes, queue → messages it consumes there)
    services: Mapping[str, tuple[tuple[str, ...], Mapping[str, tuple[str, ...]]]]

    @classmethod
    def load(cls, path: Path | str) -> Contract:
        """The contract of the spec file at ``path`` (``SpecError`` if it has errors)."""
        return cls.from_spec(load_spec(path))

    @classmethod
    def from_spec(cls, spec: Spec) -> Contract:
        return cls.from_data(contract_data(spec))

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Contract:
        if data.get("format") != FORMAT:
            raise InvalidArgument(
                f"contract data of format {data.get('format')!r}; this rabbitry reads {FORMAT}: "
                "generate the package again with this rabbitry"
            )
        messages = {
            name: MessageContract(
                name,
                m["exchange"],
                m["routing_key"],
                m["headers"],
                m["persistent"],
                m["schema"],
                m.get("priorities", {}),
                m.get("reply"),
            )
            for name, m in data["messages"].items()
        }
        queues = {
            name: QueueContract(
                name,
                tuple(q["accepts"]),
                q["runtime"],
                q["durable"],
                q["exclusive"],
                q["auto_delete"],
                q["arguments"],
                tuple(
                    RuntimeBinding(b["exchange"], b["key"], b["arguments"]) for b in q["bindings"]
                ),
                q["dead_letter"]["exchange"],
                q["dead_letter"]["routing_key"],
                tuple((int(delay), str(retry)) for delay, retry in q.get("retry", ())),
            )
            for name, q in data["queues"].items()
        }
        services = {
            name: (tuple(s["publishes"]), {q: tuple(ms) for q, ms in s["consumes"].items()})
            for name, s in data["services"].items()
        }
        return cls(messages, queues, services)

    def message(self, name: str) -> MessageContract:
        try:
            return self.messages[name]
        except KeyError:
            raise UnknownName("message", name, list(self.messages)) from None

    def queue(self, name: str) -> QueueContract:
        try:
            return self.queues[name]
        except KeyError:
            raise UnknownName("queue", name, list(self.queues)) from None


def contract_data(spec: Spec) -> dict[str, Any]:
    """The contract of ``spec`` as plain JSON-able data (what generated code embeds)."""
    messages: dict[str, Any] = {}
    for message in sorted(spec.messages.values(), key=lambda m: m.name):
        reached = reach(spec, message)
        messages[message.name] = {
            "exchange": message.exchange,
            "routing_key": message.routing_key,
            "headers": dict(message.headers),
            "persistent": any(spec.queues[q].durable for q in reached if q in spec.queues),
            "schema": bundle(spec.schemas, spec.schema_file(message)),
            "priorities": {
                q: spec.queues[q].arguments["x-max-priority"]
                for q in sorted(reached)
                if q in spec.queues and "x-max-priority" in spec.queues[q].arguments
            },
        }
        if message.reply is not None:  # only then: the data of a spec without replies is as was
            messages[message.name]["reply"] = message.reply
    accepts: dict[str, list[str]] = {}
    for service in spec.services.values():
        for queue_name, names in service.consumes.items():
            accepts.setdefault(queue_name, [])
            accepts[queue_name].extend(n for n in names if n not in accepts[queue_name])
    queues: dict[str, Any] = {}
    for queue in sorted(spec.queues.values(), key=lambda q: q.name):
        exchange, routing_key = dead_letter_of(spec, queue.name)
        # A retry queue holds its queue's messages (so tail and peek of it decode them).
        accepted = accepts.get(queue.retry_of or queue.name, [])
        queues[queue.name] = {
            "accepts": sorted(accepted),
            "runtime": queue.runtime,
            "durable": queue.durable,
            "exclusive": queue.exclusive,
            "auto_delete": queue.auto_delete,
            "arguments": dict(queue.arguments),
            "bindings": [
                {"exchange": b.source, "key": b.key, "arguments": b.broker_arguments}
                for b in spec.bindings_to_queue(queue.name)
                if b.runtime
            ],
            "dead_letter": {
                "exchange": None if exchange is None else exchange.value,
                "routing_key": None if routing_key is None else routing_key.value,
            },
        }
        if queue.retry:  # only then: the data of a spec without retries is as it was
            queues[queue.name]["retry"] = [list(pair) for pair in queue.retry_queues]
    services = {
        name: {
            "publishes": list(s.publishes),
            "consumes": {q: list(m) for q, m in s.consumes.items()},
        }
        for name, s in sorted(spec.services.items())
    }
    return {"format": FORMAT, "messages": messages, "queues": queues, "services": services}
