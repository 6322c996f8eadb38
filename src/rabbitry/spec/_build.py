"""From a located YAML tree to the model, reporting every fault of shape.

The builder never stops at the first problem: each section, object and field
is read on its own, faults are collected, and whatever could be read is still
built so that the semantic checks can run over it.
"""

from __future__ import annotations

import difflib
import keyword
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from rabbitry.spec._retry import MAX_RETRIES, delay_ms, retry_queue
from rabbitry.spec._yaml import YMap, YNode, YScalar, YSeq
from rabbitry.spec.arguments import EXCHANGE_ARGUMENTS, QUEUE_ARGUMENTS, ArgSpec, check_value
from rabbitry.spec.diagnostics import Code, Diagnostic, did_you_mean
from rabbitry.spec.model import (
    ArgValue,
    Binding,
    Codegen,
    Exchange,
    ExchangeType,
    HeadersMatch,
    Location,
    Locs,
    Message,
    Policy,
    PolicyTarget,
    Queue,
    QueueType,
    Service,
    Spec,
)
from rabbitry.spec.policies import POLICY_KEYS, POLICY_SUGAR, anchored_pattern

__all__ = ["build_spec"]

SUPPORTED_VERSIONS = (1,)
_MAX_NAME_BYTES = 255

_TOP_KEYS = (
    "version",
    "codegen",
    "exchanges",
    "queues",
    "bindings",
    "messages",
    "services",
    "policies",
    "operator_policies",
    "rabbitmq",
    "description",
)
_EXCHANGE_KEYS = (
    "type",
    "durable",
    "auto_delete",
    "internal",
    "arguments",
    "description",
    *(a.sugar for a in EXCHANGE_ARGUMENTS.values() if a.sugar),
)
_QUEUE_KEYS = (
    "type",
    "durable",
    "exclusive",
    "auto_delete",
    "arguments",
    "description",
    "retry",
    *(a.sugar for a in QUEUE_ARGUMENTS.values() if a.sugar),
)
_BINDING_KEYS = ("from", "queue", "exchange", "key", "match", "headers", "arguments", "description")
_MESSAGE_KEYS = ("schema", "exchange", "routing_key", "headers", "description", "reply")
_SERVICE_KEYS = ("publishes", "consumes", "description")
_CODEGEN_KEYS = ("package", "out")
#: Queue sugar keys that are not policy keys: fixed when the queue is declared.
_DECLARE_ONLY_SUGAR = {
    a.sugar: a.name for a in QUEUE_ARGUMENTS.values() if a.sugar and a.sugar not in POLICY_SUGAR
}
_POLICY_KEYS = (
    "pattern",
    "queues",
    "exchanges",
    "apply_to",
    "priority",
    "definition",
    "description",
    *POLICY_SUGAR,
    *_DECLARE_ONLY_SUGAR,
)
#: The ``apply_to`` values a policy of ``queues: [...]`` may have: those that reach no exchange.
_QUEUE_TARGETS = frozenset(t for t in PolicyTarget if not t.exchanges)

E = TypeVar("E", ExchangeType, QueueType, HeadersMatch, PolicyTarget)
T = TypeVar("T")


class _Builder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[Diagnostic] = []

    # -- reporting --------------------------------------------------------

    def fault(self, where: Location, code: Code, message: str, hint: str = "") -> None:
        self.problems.append(Diagnostic(where, code, message, hint))

    # -- generic readers ---------------------------------------------------

    def mapping(self, node: YNode | None, what: str, keys: tuple[str, ...] | None) -> YMap | None:
        """``node`` as a mapping (only ``keys`` unless ``None``); else ``None`` and a fault."""
        if node is None:
            return None
        if isinstance(node, YScalar) and node.value is None:
            return YMap({}, node.loc)  # `queue-name:` with nothing after it: all defaults
        if not isinstance(node, YMap):
            self.fault(
                node.loc,
                Code.WRONG_TYPE,
                f"{what} must be a mapping, got {_kind(node)}",
                "write it as `key: value` lines or `{key: value}`",
            )
            return None
        for key in node.entries:
            if keys is not None and key not in keys:
                self.fault(
                    node.key_loc(key),
                    Code.UNKNOWN_KEY,
                    f"{what} has no key {key!r}",
                    did_you_mean(key, keys, "keys"),
                )
        return node

    def sequence(self, node: YNode | None, what: str) -> tuple[YNode, ...]:
        if node is None or (isinstance(node, YScalar) and node.value is None):
            return ()
        if not isinstance(node, YSeq):
            self.fault(
                node.loc,
                Code.WRONG_TYPE,
                f"{what} must be a list, got {_kind(node)}",
                "write it as `[a, b]` or `- item` lines",
            )
            return ()
        return node.items

    def text(self, node: YNode | None, what: str, *, default: str | None = None) -> str | None:
        """A string; a number or boolean written plainly is taken as written (``1.10``)."""
        if node is None:
            return default
        if isinstance(node, YScalar) and isinstance(node.value, str):
            return node.value
        if isinstance(node, YScalar) and isinstance(node.value, int | float | bool):
            return node.text
        self.fault(
            node.loc, Code.WRONG_TYPE, f"{what} must be a string, got {_kind(node)}", "quote it"
        )
        return default

    def flag(self, node: YNode | None, what: str, default: bool) -> bool:
        if node is None:
            return default
        if isinstance(node, YScalar) and isinstance(node.value, bool):
            return node.value
        self.fault(node.loc, Code.WRONG_TYPE, f"{what} must be true or false, got {_kind(node)}")
        return default

    def choice(self, node: YNode | None, what: str, enum: type[E], default: E | None) -> E | None:
        raw = self.text(node, what)
        if raw is None:
            return default
        try:
            return enum(raw)
        except ValueError:
            choices = [e.value for e in enum]
            assert node is not None
            hint = did_you_mean(raw, choices, "values")
            if not hint.startswith("did you"):
                hint = "use one of: " + ", ".join(choices)
            self.fault(node.loc, Code.BAD_VALUE, f"{what} {raw!r} is not valid", hint)
            return default

    def table(self, node: YNode | None, what: str) -> dict[str, ArgValue]:
        """An AMQP table (arguments, headers): a mapping of names to plain values."""
        found = self.mapping(node, what, keys=None)
        if found is None:
            return {}
        # Arbitrary keys are fine in a table; only the shape is checked.
        return {key: value.plain() for key, (_, value) in found.entries.items()}

    def name(self, key: str, where: Location, what: str, *, amqp: bool = True) -> bool:
        """Check an object's name; ``False`` when it cannot be used at all."""
        if not key:
            self.fault(where, Code.BAD_NAME, f"{what} name is empty", "give it a name")
            return False
        if len(key.encode()) > _MAX_NAME_BYTES:
            self.fault(
                where,
                Code.NAME_TOO_LONG,
                f"{what} name is {len(key.encode())} bytes long; AMQP allows 255",
                "shorten it",
            )
        if amqp and key.startswith("amq."):
            self.fault(
                where,
                Code.RESERVED_NAME,
                f"{what} name {key!r} starts with 'amq.', which RabbitMQ reserves",
                "pick a name without the 'amq.' prefix",
            )
        return True

    def section(self, root: YMap, key: str, what: str) -> YMap:
        node = root.get(key)
        if node is None or (isinstance(node, YScalar) and node.value is None):
            return YMap({}, root.key_loc(key))
        if not isinstance(node, YMap):
            self.fault(
                node.loc,
                Code.WRONG_TYPE,
                f"`{key}` must be a mapping of {what} names, got {_kind(node)}",
            )
            return YMap({}, node.loc)
        return node

    def locs(self, node: YMap, where: Location) -> Locs:
        fields: dict[str, Location] = {}
        for key, (key_loc, value) in node.entries.items():
            fields[key] = value.loc
            fields[f"{key}:key"] = key_loc
        return Locs(where, MappingProxyType(fields))

    # -- arguments and their sugar ------------------------------------------

    def arguments(self, node: YMap, what: str, known: Mapping[str, ArgSpec]) -> dict[str, ArgValue]:
        """Raw ``arguments`` merged with sugar keys; types checked, contradictions reported."""
        raw_node = node.get("arguments")
        raw = self.table(raw_node, f"{what} arguments")
        raw_map = raw_node if isinstance(raw_node, YMap) else None
        for name, value in raw.items():
            spec = known.get(name)
            if spec is not None and (problem := check_value(spec, value)) is not None:
                where = raw_map.value_loc(name) if raw_map else node.loc
                self.fault(
                    where,
                    Code.ARGUMENT_TYPE,
                    f"{what} argument {name!r}: {problem}",
                    spec.summary or f"give {spec.describe()}",
                )
        merged = dict(raw)
        for spec in known.values():
            if spec.sugar is None or (sugar_node := node.get(spec.sugar)) is None:
                continue
            value = sugar_node.plain()
            if (problem := check_value(spec, value)) is not None:
                self.fault(
                    sugar_node.loc,
                    Code.ARGUMENT_TYPE,
                    f"{what} {spec.sugar}: {problem}",
                    spec.summary or f"give {spec.describe()}",
                )
                continue
            if spec.name in raw and raw[spec.name] != value:
                self.fault(
                    sugar_node.loc,
                    Code.SUGAR_CONFLICT,
                    f"{what} {spec.sugar} is {value!r} but arguments say "
                    f"{spec.name}: {raw[spec.name]!r}",
                    "keep one of the two, or make them agree",
                )
                continue
            merged[spec.name] = value
        return merged

    # -- sections ----------------------------------------------------------

    def exchange(self, name: str, node: YNode, key_loc: Location) -> Exchange | None:
        what = f"exchange {name!r}"
        if not self.name(name, key_loc, "exchange"):
            return None
        body = self.mapping(node, what, _EXCHANGE_KEYS)
        if body is None:
            return None
        if body.get("type") is None:
            self.fault(
                key_loc,
                Code.MISSING_KEY,
                f"{what} has no type",
                "add `type: direct`, `fanout`, `topic` or `headers`",
            )
        kind = self.choice(body.get("type"), f"{what} type", ExchangeType, ExchangeType.DIRECT)
        assert kind is not None
        return Exchange(
            name=name,
            type=kind,
            durable=self.flag(body.get("durable"), f"{what} durable", True),
            auto_delete=self.flag(body.get("auto_delete"), f"{what} auto_delete", False),
            internal=self.flag(body.get("internal"), f"{what} internal", False),
            arguments=MappingProxyType(self.arguments(body, what, EXCHANGE_ARGUMENTS)),
            description=self.text(body.get("description"), f"{what} description"),
            locs=self.locs(body, key_loc),
        )

    def queue(self, name: str, node: YNode, key_loc: Location) -> Queue | None:
        what = f"queue {name!r}"
        if not self.name(name, key_loc, "queue"):
            return None
        body = self.mapping(node, what, _QUEUE_KEYS)
        if body is None:
            return None
        arguments = self.arguments(body, what, QUEUE_ARGUMENTS)
        before = len(self.problems)
        kind = self.choice(body.get("type"), f"{what} type", QueueType, None)
        written = arguments.pop("x-queue-type", None)
        raw = body.get("arguments")
        written_at = raw.value_loc("x-queue-type") if isinstance(raw, YMap) else body.loc
        if written is not None and kind is not None and written != kind.value:
            self.fault(
                written_at,
                Code.SUGAR_CONFLICT,
                f"{what} type is {kind.value!r} but arguments say x-queue-type: {written!r}",
                "keep one of the two, or make them agree",
            )
        elif written is not None and kind is None:
            kind = _queue_type(written)
            if kind is None:
                self.fault(
                    written_at,
                    Code.BAD_VALUE,
                    f"{what} x-queue-type {written!r} is not valid",
                    "use one of: classic, quorum, stream",
                )
        # With its type unknown (reported), what the type supports cannot be judged.
        type_known = len(self.problems) == before
        kind = kind or QueueType.CLASSIC
        exclusive = self.flag(body.get("exclusive"), f"{what} exclusive", False)
        queue = Queue(
            name=name,
            type=kind,
            durable=self.flag(body.get("durable"), f"{what} durable", not exclusive),
            exclusive=exclusive,
            auto_delete=self.flag(body.get("auto_delete"), f"{what} auto_delete", False),
            arguments=MappingProxyType(arguments),
            description=self.text(body.get("description"), f"{what} description"),
            retry=self.retry(body.get("retry"), what, kind, exclusive),
            locs=self.locs(body, key_loc),
        )
        if type_known:
            self.queue_type_faults(queue, body)
        return queue

    def retry(
        self, node: YNode | None, what: str, kind: QueueType, exclusive: bool
    ) -> tuple[int, ...]:
        """``retry: [5s, 30s, 5m]``: the delays in ms (``_retry``); faults for the rest."""
        if node is None or (isinstance(node, YScalar) and node.value is None):
            return ()
        items = self.sequence(node, f"{what} retry")
        if not isinstance(node, YSeq):
            return ()
        problem = ""
        if not items:
            problem = "is an empty list"
        elif len(items) > MAX_RETRIES:
            problem = f"has {len(items)} delays, more than {MAX_RETRIES}"
        elif kind is QueueType.STREAM:
            problem = "is on a stream, whose messages are never acked or taken away"
        elif exclusive and kind is QueueType.CLASSIC:  # other types: a fault of its own already
            problem = "is on an exclusive queue, which its retry queues would outlive"
        if problem:
            self.fault(
                node.loc,
                Code.RETRY,
                f"{what} retry {problem}",
                "list 1 to 25 delays, e.g. `retry: [5s, 30s, 5m]`, on a durable classic or "
                "quorum queue",
            )
            return ()
        delays: list[int] = []
        for item in items:
            try:
                delays.append(delay_ms(item.plain()))
            except ValueError as exc:
                self.fault(item.loc, Code.RETRY, f"{what} retry: {exc}", "e.g. 5s, 30s, 5m, 1h")
        return tuple(delays) if len(delays) == len(items) else ()

    def queue_type_faults(self, queue: Queue, body: YMap) -> None:
        what = f"{queue.type.value} queue {queue.name!r}"
        if queue.type is not QueueType.CLASSIC:
            for attr, bad in (("durable", False), ("exclusive", True), ("auto_delete", True)):
                # Not durable only because exclusive: that is the fault, reported once.
                implied = attr == "durable" and attr not in queue.locs.fields
                if getattr(queue, attr) is bad and not implied:
                    self.fault(
                        queue.locs.of(attr),
                        Code.QUEUE_TYPE_CONFLICT,
                        f"{what} cannot be {'not durable' if attr == 'durable' else attr}",
                        f"remove `{attr}` or use a classic queue",
                    )
        for name in queue.arguments:
            spec = QUEUE_ARGUMENTS.get(name)
            if spec is not None and queue.type not in spec.queue_types:
                field_name = spec.sugar if spec.sugar and body.get(spec.sugar) else "arguments"
                supported = ", ".join(sorted(t.value for t in spec.queue_types))
                self.fault(
                    queue.locs.of(field_name),
                    Code.QUEUE_TYPE_CONFLICT,
                    f"{what}: {spec.sugar or name} is not supported by {queue.type.value} queues",
                    f"it works on: {supported}",
                )

    def binding(self, index: int, node: YNode) -> Binding | None:
        body = self.mapping(node, f"binding #{index + 1}", _BINDING_KEYS)
        if body is None:
            return None
        what = f"binding #{index + 1}"
        source = self.text(body.get("from"), f"{what} from")
        if body.get("from") is None:
            self.fault(
                body.loc,
                Code.MISSING_KEY,
                f"{what} has no `from`",
                "name the exchange it binds from: `from: EXCHANGE`",
            )
        queue, exchange = body.get("queue"), body.get("exchange")
        if (queue is None) == (exchange is None):
            self.fault(
                body.loc,
                Code.BINDING_SHAPE,
                f"{what} needs exactly one of `queue` and `exchange`",
                "`queue: NAME` binds a queue, `exchange: NAME` binds an exchange to an exchange",
            )
            return None
        destination = self.text(queue or exchange, f"{what} destination")
        if source is None or destination is None:
            return None
        match = self.choice(body.get("match"), f"{what} match", HeadersMatch, None)
        return Binding(
            source=source,
            destination=destination,
            destination_type="queue" if queue is not None else "exchange",
            key=self.text(body.get("key"), f"{what} key", default="") or "",
            match=match,
            headers=MappingProxyType(self.table(body.get("headers"), f"{what} headers")),
            arguments=MappingProxyType(self.table(body.get("arguments"), f"{what} arguments")),
            locs=self.locs(body, body.loc),
        )

    def message(self, name: str, node: YNode, key_loc: Location) -> Message | None:
        what = f"message {name!r}"
        if not self.name(name, key_loc, "message", amqp=False):
            return None
        body = self.mapping(node, what, _MESSAGE_KEYS)
        if body is None:
            return None
        for required in ("schema", "exchange"):
            if body.get(required) is None:
                self.fault(
                    key_loc,
                    Code.MISSING_KEY,
                    f"{what} has no `{required}`",
                    "add `schema: schemas/FILE.json`"
                    if required == "schema"
                    else "add `exchange: NAME` (the exchange it is published to)",
                )
        schema = self.text(body.get("schema"), f"{what} schema")
        exchange = self.text(body.get("exchange"), f"{what} exchange")
        if schema is not None and "\0" in schema:
            self.fault(
                body.value_loc("schema"),
                Code.BAD_VALUE,
                f"{what} schema {schema!r} is not a file name",
                "remove the NUL character",
            )
            return None
        if schema is None or exchange is None:
            return None
        return Message(
            name=name,
            schema_path=Path(schema),
            exchange=exchange,
            routing_key=self.text(body.get("routing_key"), f"{what} routing_key", default="") or "",
            headers=MappingProxyType(self.table(body.get("headers"), f"{what} headers")),
            description=self.text(body.get("description"), f"{what} description"),
            reply=self.text(body.get("reply"), f"{what} reply"),
            locs=self.locs(body, key_loc),
        )

    def service(self, name: str, node: YNode, key_loc: Location) -> Service | None:
        what = f"service {name!r}"
        if not self.name(name, key_loc, "service", amqp=False):
            return None
        body = self.mapping(node, what, _SERVICE_KEYS)
        if body is None:
            return None
        publishes = self.names(body.get("publishes"), f"{what} publishes")
        consumes: dict[str, tuple[str, ...]] = {}
        fields = dict(self.locs(body, key_loc).fields)
        consumes_node = self.mapping(body.get("consumes"), f"{what} consumes", keys=None)
        if isinstance(body.get("consumes"), YMap) and consumes_node is not None:
            for queue, (queue_loc, messages) in consumes_node.entries.items():
                consumes[queue] = self.names(messages, f"{what} consumes from {queue!r}")
                fields[f"consumes.{queue}"] = queue_loc
                if isinstance(messages, YSeq):
                    for i, item in enumerate(messages.items):
                        fields[f"consumes.{queue}.{i}"] = item.loc
        if isinstance(body.get("publishes"), YSeq):
            for i, item in enumerate(body.get("publishes").items):  # type: ignore[union-attr]
                fields[f"publishes.{i}"] = item.loc
        return Service(
            name=name,
            publishes=publishes,
            consumes=MappingProxyType(consumes),
            description=self.text(body.get("description"), f"{what} description"),
            locs=Locs(key_loc, MappingProxyType(fields)),
        )

    def names(self, node: YNode | None, what: str) -> tuple[str, ...]:
        if isinstance(node, YScalar) and isinstance(node.value, str):
            return (node.value,)  # `publishes: Start` — one name without brackets
        found = (self.text(item, f"{what} entry") for item in self.sequence(node, what))
        return tuple(n for n in found if n is not None)

    def policy(self, name: str, node: YNode, key_loc: Location, *, operator: bool) -> Policy | None:
        """One entry of ``policies:`` (or ``operator_policies:`` with ``operator``)."""
        what = f"{'operator policy' if operator else 'policy'} {name!r}"
        if not self.name(name, key_loc, "policy", amqp=False):
            return None
        body = self.mapping(node, what, _POLICY_KEYS)
        if body is None:
            return None
        written = sorted(
            (k for k in ("pattern", "queues", "exchanges") if body.get(k) is not None),
            key=body.key_loc,
        )
        if len(written) != 1:
            self.fault(
                key_loc if not written else body.key_loc(written[1]),
                Code.MISSING_KEY if not written else Code.POLICY_SHAPE,
                f"{what} needs exactly one of `pattern`, `queues` and `exchanges`"
                + (f", not {' and '.join(f'`{k}`' for k in written)}" if written else ""),
                "`queues: [NAME, ...]` or `exchanges: [NAME, ...]` for exact names, "
                "`pattern: REGEX` for anything else",
            )
            return None
        fields = dict(self.locs(body, key_loc).fields)
        apply_to = self.choice(body.get("apply_to"), f"{what} apply_to", PolicyTarget, None)
        made = self.policy_pattern(body, written[0], what, fields)
        if made is None:
            return None
        pattern, names = made
        if apply_to is None:
            apply_to = PolicyTarget.EXCHANGES if written[0] == "exchanges" else PolicyTarget.QUEUES
        elif written[0] != "pattern":
            fits = (
                apply_to in _QUEUE_TARGETS
                if written[0] == "queues"
                else (apply_to is PolicyTarget.EXCHANGES)
            )
            if not fits:
                self.fault(
                    body.value_loc("apply_to"),
                    Code.POLICY_SHAPE,
                    f"{what} names {written[0]} but applies to {apply_to.value}",
                    f"remove `apply_to`, or write `pattern:` to match {apply_to.value}",
                )
        priority_node = body.get("priority")
        priority = 0
        if priority_node is not None:
            value = priority_node.plain()
            if isinstance(value, int) and not isinstance(value, bool):
                priority = value
            else:
                self.fault(
                    priority_node.loc,
                    Code.WRONG_TYPE,
                    f"{what} priority must be an integer, got {_kind(priority_node)}",
                    "the highest priority of the policies matching an object applies",
                )
        definition = self.policy_definition(body, what, fields, operator=operator)
        return Policy(
            name=name,
            pattern=pattern,
            apply_to=apply_to,
            priority=priority,
            definition=MappingProxyType(definition),
            operator=operator,
            description=self.text(body.get("description"), f"{what} description"),
            locs=Locs(key_loc, MappingProxyType(fields)),
            names=names,
        )

    def policy_pattern(
        self, body: YMap, key: str, what: str, fields: dict[str, Location]
    ) -> tuple[str, tuple[str, ...]] | None:
        """The broker's pattern (as written, or anchored from a list of names) and the
        names it was made from."""
        node = body.get(key)
        if key == "pattern":
            written = self.text(node, f"{what} pattern")
            return None if written is None else (written, ())
        names = self.names(node, f"{what} {key}")
        if isinstance(node, YSeq):
            for i, item in enumerate(node.items):
                fields[f"{key}.{i}"] = item.loc
        if not names:
            assert node is not None
            self.fault(
                node.loc,
                Code.MISSING_KEY,
                f"{what} {key} names nothing",
                f"list the {key} it applies to: `{key}: [NAME, ...]`",
            )
            return None
        return anchored_pattern(names), names

    def policy_definition(
        self, body: YMap, what: str, fields: dict[str, Location], *, operator: bool
    ) -> dict[str, ArgValue]:
        """``definition:`` merged with the sugar keys; every key known, every value fitting."""
        raw_node = body.get("definition")
        raw = self.table(raw_node, f"{what} definition")
        raw_map = raw_node if isinstance(raw_node, YMap) else None
        merged: dict[str, ArgValue] = {}
        for key, value in raw.items():
            where = raw_map.value_loc(key) if raw_map else body.loc
            key_where = raw_map.key_loc(key) if raw_map else body.loc
            fields[f"definition.{key}"] = where
            fields[f"definition.{key}:key"] = key_where
            if self.policy_value(key, value, what, where, key_where, operator=operator):
                merged[key] = value
        for sugar, node in ((k, body.get(k)) for k in (*POLICY_SUGAR, *_DECLARE_ONLY_SUGAR)):
            if node is None:
                continue
            if sugar in _DECLARE_ONLY_SUGAR:
                self.fault(
                    body.key_loc(sugar),
                    Code.POLICY_KEY,
                    f"{what}: {sugar} cannot be set by a policy; "
                    f"it is fixed when the queue is declared",
                    f"set `{sugar}` on the queue itself",
                )
                continue
            key, value = POLICY_SUGAR[sugar], node.plain()
            fields[f"definition.{key}"] = node.loc
            fields[f"definition.{key}:key"] = body.key_loc(sugar)
            if key in raw and raw[key] != value:
                self.fault(
                    node.loc,
                    Code.SUGAR_CONFLICT,
                    f"{what} {sugar} is {value!r} but definition says {key}: {raw[key]!r}",
                    "keep one of the two, or make them agree",
                )
                continue
            if self.policy_value(
                key, value, what, node.loc, body.key_loc(sugar), operator=operator, sugar=sugar
            ):
                merged[key] = value
        if not raw and not any(
            body.get(k) is not None for k in (*POLICY_SUGAR, *_DECLARE_ONLY_SUGAR)
        ):
            self.fault(
                body.loc,
                Code.MISSING_KEY,
                f"{what} sets nothing",
                "add what it sets, e.g. `message_ttl: 60000` or `definition: {KEY: VALUE}`",
            )
        return merged

    def policy_value(
        self,
        key: str,
        value: ArgValue,
        what: str,
        where: Location,
        key_where: Location,
        *,
        operator: bool,
        sugar: str | None = None,
    ) -> bool:
        """Report a key the broker refuses or a value that does not fit; ``True`` if fine."""
        known = POLICY_KEYS.get(key)
        shown = sugar or key
        if known is None:
            hint = (
                f"policy keys have no x- prefix: write {key.removeprefix('x-')!r}"
                if key.startswith("x-") and key.removeprefix("x-") in POLICY_KEYS
                else _policy_key_hint(key)
            )
            if key in _DECLARE_ONLY_SUGAR.values() or f"x-{key}" in _DECLARE_ONLY_SUGAR.values():
                hint = "it is fixed when the queue is declared: set it on the queue itself"
            self.fault(
                key_where,
                Code.POLICY_KEY,
                f"{what}: {key!r} is not a policy key; the broker refuses the policy",
                hint,
            )
            return False
        if operator and not known.operator:
            allowed = ", ".join(k.sugar or k.name for k in POLICY_KEYS.values() if k.operator)
            self.fault(
                key_where,
                Code.POLICY_KEY,
                f"{what}: an operator policy cannot set {shown}",
                f"operator policies set only the numeric caps: {allowed}",
            )
            return False
        if (problem := check_value(known.value, value)) is not None:
            self.fault(
                where,
                Code.ARGUMENT_TYPE,
                f"{what} {shown}: {problem}",
                known.summary or f"give {known.value.describe()}",
            )
            return False
        return True

    def broker_version(self, node: YNode | None) -> tuple[int, int] | None:
        """``rabbitmq: "3.12"``: the oldest RabbitMQ the spec must work on."""
        if node is None:
            return None
        raw = self.text(node, "rabbitmq")
        parts = (raw or "").split(".")
        if len(parts) >= 2 and all(p.isdigit() for p in parts[:3]) and len(parts) <= 3:
            return int(parts[0]), int(parts[1])
        if raw is not None:
            self.fault(
                node.loc,
                Code.BAD_VALUE,
                f"rabbitmq {raw!r} is not a RabbitMQ version",
                'write the oldest version the spec must work on, e.g. `rabbitmq: "3.12"`',
            )
        return None

    def codegen(self, node: YNode | None) -> Codegen | None:
        body = self.mapping(node, "codegen", _CODEGEN_KEYS)
        if body is None:
            return None
        package = self.text(body.get("package"), "codegen package")
        out = self.text(body.get("out"), "codegen out")
        if package is None:
            self.fault(
                body.loc,
                Code.MISSING_KEY,
                "codegen has no `package`",
                "add `package: NAME` (a Python package name)",
            )
            return None
        if not all(p.isidentifier() and not keyword.iskeyword(p) for p in package.split(".")):
            self.fault(
                body.value_loc("package"),
                Code.BAD_NAME,
                f"codegen package {package!r} is not a Python package name",
                "use lowercase letters, digits and underscores, e.g. jobs_contracts",
            )
        return Codegen(package=package, out=Path(out or package), locs=self.locs(body, body.loc))

    # -- the whole file ----------------------------------------------------

    def build(self, tree: YNode) -> Spec:
        file = str(self.path)
        if not isinstance(tree, YMap):
            self.fault(
                tree.loc,
                Code.WRONG_TYPE,
                f"the spec must be a mapping, got {_kind(tree)}",
                "start with `version: 1`",
            )
            return Spec(path=self.path)
        root = self.mapping(tree, "the spec", _TOP_KEYS) or tree
        version_node = root.get("version")
        version = version_node.plain() if version_node is not None else None
        if version_node is None:
            self.fault(
                Location(file, 1, 1),
                Code.VERSION,
                "the spec has no `version`",
                "add `version: 1` at the top",
            )
        elif version not in SUPPORTED_VERSIONS or isinstance(version, bool):
            self.fault(
                version_node.loc,
                Code.VERSION,
                f"spec version {version!r} is not supported",
                "this rabbitry reads `version: 1`",
            )

        broken_exchanges: set[str] = set()
        broken_queues: set[str] = set()
        exchanges = self.objects(root, "exchanges", "exchange", self.exchange, broken_exchanges)
        queues = self.with_retry_queues(
            self.objects(root, "queues", "queue", self.queue, broken_queues)
        )
        broken_messages: set[str] = set()
        messages = self.objects(
            root, "messages", "message", self.message, broken_messages, keep_broken=True
        )
        services = self.objects(root, "services", "service", self.service)
        bindings = []
        broken_bindings = 0
        for i, node in enumerate(self.sequence(root.get("bindings"), "`bindings`")):
            before = len(self.problems)
            binding = self.binding(i, node)
            if binding is not None and len(self.problems) == before:
                bindings.append(binding)
            else:
                broken_bindings += 1
        codegen = self.codegen(root.get("codegen"))
        broken_policies: set[str] = set()
        policies = self.objects(
            root,
            "policies",
            "policy",
            lambda n, node, loc: self.policy(n, node, loc, operator=False),
            broken_policies,
        )
        operator_policies = self.objects(
            root,
            "operator_policies",
            "operator policy",
            lambda n, node, loc: self.policy(n, node, loc, operator=True),
            broken_policies,
        )
        return Spec(
            path=self.path,
            version=version if isinstance(version, int) else 1,
            exchanges=MappingProxyType(exchanges),
            queues=MappingProxyType(queues),
            bindings=tuple(bindings),
            messages=MappingProxyType(messages),
            services=MappingProxyType(services),
            codegen=codegen,
            policies=MappingProxyType(policies),
            operator_policies=MappingProxyType(operator_policies),
            rabbitmq=self.broker_version(root.get("rabbitmq")),
            broken_exchanges=frozenset(broken_exchanges),
            broken_queues=frozenset(broken_queues),
            broken_bindings=broken_bindings,
            broken_policies=frozenset(broken_policies),
            broken_messages=frozenset(broken_messages),
            locs=self.locs(root, root.loc),
        )

    def with_retry_queues(self, queues: dict[str, Queue]) -> dict[str, Queue]:
        """``queues`` with each queue's retry queues (``_retry``) right after it."""
        if not any(queue.retry for queue in queues.values()):
            return queues
        out: dict[str, Queue] = {}
        for name, queue in queues.items():
            out[name] = queue
            for delay, retry_name in queue.retry_queues:
                where = queue.locs.of("retry")
                if retry_name in queues:
                    self.fault(
                        where,
                        Code.RETRY,
                        f"queue {name!r} retries through a queue named {retry_name!r}, "
                        f"which the spec declares itself",
                        f"rename queue {retry_name!r}: `retry:` makes it",
                    )
                elif len(retry_name.encode()) > _MAX_NAME_BYTES:
                    self.fault(
                        where,
                        Code.NAME_TOO_LONG,
                        f"queue {name!r}'s retry queue {retry_name!r} is over "
                        f"{_MAX_NAME_BYTES} bytes",
                        "shorten the queue's name",
                    )
                elif retry_name not in out:
                    out[retry_name] = retry_queue(queue, delay)
        return out

    def objects(
        self,
        root: YMap,
        key: str,
        what: str,
        make: Callable[[str, YNode, Location], T | None],
        broken: set[str] | None = None,
        *,
        keep_broken: bool = False,
    ) -> dict[str, T]:
        """Build each entry of a section; with ``broken``, an entry with faults is left
        out of the model (kept too, with ``keep_broken``) and its name recorded there."""
        section = self.section(root, key, what)
        built: dict[str, T] = {}
        for name, (key_loc, node) in section.entries.items():
            before = len(self.problems)
            obj = make(name, node, key_loc)
            if broken is not None and len(self.problems) > before:
                broken.add(name)
                if keep_broken and obj is not None:
                    built[name] = obj
            elif obj is not None:
                built[name] = obj
        return built


def _policy_key_hint(key: str) -> str:
    close = difflib.get_close_matches(key, [*POLICY_KEYS, *POLICY_SUGAR], n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return (
        "a policy sets the queue sugar keys (message_ttl, dead_letter, max_length, ...) "
        "or, in `definition:`, the broker's keys: " + ", ".join(sorted(POLICY_KEYS))
    )


def _queue_type(value: object) -> QueueType | None:
    try:
        return QueueType(str(value))
    except ValueError:
        return None


def _kind(node: YNode) -> str:
    if isinstance(node, YMap):
        return "a mapping"
    if isinstance(node, YSeq):
        return "a list"
    value = node.value
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


def build_spec(tree: YNode, path: Path) -> tuple[Spec, list[Diagnostic]]:
    """The spec in ``tree`` (read from ``path``) and every fault of shape found."""
    builder = _Builder(path)
    spec = builder.build(tree)
    return spec, builder.problems
