"""A vhost's topology (``broker.state.Topology``) as a spec draft, sugar and all.

What the broker has and what a spec can say differ at the edges, and every
difference is a note (``SpecDraft.notes``), never a silent drop:

- the default exchange, the ``amq.*`` exchanges and the default exchange's
  implicit bindings: every vhost has them and nobody may declare them (bindings
  *from* the built-in ``amq.*`` exchanges are kept: a spec may name them);
- exclusive queues and server-named (``amq.*``) queues: their consumers make
  them at run time, under names the spec cannot know;
- exchange and queue types the spec has no word for (``x-consistent-hash``, ...),
  and queue arguments the spec's checks refuse (a value of the wrong type, a
  setting the queue's type does not support);
- what refers to something left out: a binding to a queue left out, an
  exchange whose alternate exchange (or a queue whose dead-letter exchange) is
  not in the spec; a binding key with braces (a spec's run-time binding syntax);
- policies the spec's checks refuse (a key the spec does not know, a pattern
  Python's ``re`` cannot read, a key that does nothing on the policy's target,
  an exchange not in the spec) and policies of equal priority applying to one
  object (the broker picks one arbitrarily; the spec calls that an error).

A queue that is exactly a retry queue of another (``Q.retry.5s``: the TTL of its
label, dead-lettered back to ``Q`` through the default exchange, nothing else)
is written as a delay of ``Q``'s ``retry:`` rather than as a queue
(``_retry``), with a note.  Bindings to it were none, or it would not fold.

The result is meant to pass ``rabbitry check`` as it is: the caller loads the
written file to prove it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rabbitry.broker.state import (
    BindingState,
    ExchangeState,
    PolicyState,
    QueueState,
    Topology,
)
from rabbitry.importer._retry import fold_retries
from rabbitry.spec.arguments import EXCHANGE_ARGUMENTS, QUEUE_ARGUMENTS, ArgSpec, check_value
from rabbitry.spec.diagnostics import Severity
from rabbitry.spec.draft import SpecDraft
from rabbitry.spec.model import (
    BUILTIN_EXCHANGES,
    Exchange,
    ExchangeType,
    HeadersMatch,
    Policy,
    PolicyTarget,
    Queue,
    QueueType,
    Spec,
    retry_label,
)
from rabbitry.spec.policies import POLICY_KEYS
from rabbitry.spec.policy_checks import POLICY_CHECKS

__all__ = ["draft_from_topology"]

_EXCHANGE_TYPES = frozenset(t.value for t in ExchangeType)
_QUEUE_TYPES = frozenset(t.value for t in QueueType)
_MATCHES = frozenset(m.value for m in HeadersMatch)


def draft_from_topology(topology: Topology, *, notes: Iterable[str] = ()) -> SpecDraft:
    """``topology`` as a spec draft; ``notes`` (the reader's own) come first in its notes."""
    drafting = _Drafting(list(notes))
    return drafting.draft(topology)


@dataclass
class _Drafting:
    notes: list[str]
    exchanges: dict[str, ExchangeState] = field(default_factory=dict)
    queues: dict[str, QueueState] = field(default_factory=dict)
    #: Why an exchange or queue was left out, by name: for the notes of what refers to it.
    gone: dict[tuple[str, str], str] = field(default_factory=dict)

    def leave(self, kind: str, name: str, why: str) -> None:
        self.gone[(kind, name)] = why
        self.notes.append(f"{kind} {name!r} left out: {why}")

    def draft(self, topology: Topology) -> SpecDraft:
        self.take_exchanges(topology.exchanges.values())
        self.take_queues(topology.queues.values())
        self.drop_dangling()
        bindings = self.take_bindings(topology.bindings)
        retries = fold_retries(
            self.queues,
            {name: _queue_arguments(q) for name, q in self.queues.items()},
            {
                b.destination
                for b in topology.bindings
                if b.source and b.destination_type == "queue"
            },
        )
        self.notes.extend(retries.notes)
        document: dict[str, Any] = {"version": 1}
        document["exchanges"] = {
            name: _exchange_body(self.exchanges[name]) for name in sorted(self.exchanges)
        }
        document["queues"] = {
            name: _queue_body(self.queues[name], retries.delays.get(name, ()))
            for name in sorted(self.queues)
            if name not in retries.folded
        }
        user = self.take_policies(topology.policies or {}, operator=False)
        operator = self.take_policies(topology.operator_policies or {}, operator=True)
        if user:
            document["policies"] = user
        if operator:
            document["operator_policies"] = operator
        document["bindings"] = bindings
        for key in ("exchanges", "queues", "bindings"):
            if not document[key]:
                del document[key]
        return SpecDraft(document, {}, tuple(self.notes))

    # -- exchanges and queues ------------------------------------------------

    def take_exchanges(self, exchanges: Iterable[ExchangeState]) -> None:
        builtin = []
        for x in sorted(exchanges, key=lambda x: x.name):
            if x.name in BUILTIN_EXCHANGES or x.name.startswith("amq.rabbitmq."):
                builtin.append(x.name or "(default)")
                if x.name not in BUILTIN_EXCHANGES:
                    self.gone[("exchange", x.name)] = "a built-in exchange the spec cannot name"
            elif x.name.startswith("amq."):
                self.leave(
                    "exchange",
                    x.name,
                    "RabbitMQ reserves amq.* names: nobody may declare it, and a spec cannot",
                )
            elif x.type not in _EXCHANGE_TYPES:
                self.leave(
                    "exchange",
                    x.name,
                    f"its type {x.type!r} is not one the spec has "
                    "(direct, fanout, topic, headers); keep it outside the spec",
                )
            elif (
                problem := _argument_problem(x.declare_arguments(), EXCHANGE_ARGUMENTS, None)
            ) is not None:
                self.leave("exchange", x.name, problem)
            else:
                self.exchanges[x.name] = x
        if builtin:
            self.notes.append(
                f"built-in exchanges left out ({', '.join(builtin)}): every vhost has them "
                "and nobody may declare them; bindings from amq.direct, amq.fanout, "
                "amq.topic, amq.headers and amq.match are kept"
            )

    def take_queues(self, queues: Iterable[QueueState]) -> None:
        for q in sorted(queues, key=lambda q: q.name):
            if q.exclusive:
                self.leave(
                    "queue",
                    q.name,
                    "it is exclusive: its consumer declares it at run time (a spec may "
                    "declare it as `exclusive: true` with a '{param}' binding)",
                )
            elif q.name.startswith("amq."):
                self.leave(
                    "queue",
                    q.name,
                    "the broker named it (amq.* names are the broker's): its consumer "
                    "declares it at run time under a name nobody can know beforehand",
                )
            elif q.type not in _QUEUE_TYPES:
                self.leave(
                    "queue",
                    q.name,
                    f"its type {q.type!r} is not one the spec has (classic, quorum, stream)",
                )
            elif q.type != "classic" and (not q.durable or q.auto_delete):
                self.leave("queue", q.name, f"a {q.type} queue that is not durable or auto-deletes")
            elif (
                problem := _argument_problem(
                    _queue_arguments(q), QUEUE_ARGUMENTS, QueueType(q.type)
                )
            ) is not None:
                self.leave("queue", q.name, problem)
            else:
                self.queues[q.name] = q

    def knows_exchange(self, name: str) -> bool:
        return name in self.exchanges or (name != "" and name in BUILTIN_EXCHANGES)

    def drop_dangling(self) -> None:
        """Leave out what sends to an exchange the spec does not have, until none does
        (leaving out one exchange may leave another's alternate exchange dangling)."""
        changed = True
        while changed:
            changed = False
            for x in list(self.exchanges.values()):
                ae = dict(x.arguments).get("alternate-exchange")
                if isinstance(ae, str) and not self.knows_exchange(ae):
                    del self.exchanges[x.name]
                    self.leave("exchange", x.name, _dangling("alternate exchange", ae, self.gone))
                    changed = True
        for q in list(self.queues.values()):
            dlx = dict(q.arguments).get("x-dead-letter-exchange")
            if isinstance(dlx, str) and dlx and not self.knows_exchange(dlx):
                del self.queues[q.name]
                self.leave("queue", q.name, _dangling("dead-letter exchange", dlx, self.gone))

    # -- bindings ----------------------------------------------------------------

    def take_bindings(self, bindings: Iterable[BindingState]) -> list[dict[str, Any]]:
        written = []
        implicit = 0
        for b in sorted(bindings, key=BindingState.sort_key):
            if b.source == "":
                implicit += 1
                continue
            problem = self.binding_problem(b)
            if problem is not None:
                self.notes.append(f"binding {b.describe()} left out: {problem}")
                continue
            written.append(self.binding_body(b))
        if implicit:
            self.notes.append(
                f"{implicit} binding(s) of the default exchange left out: the broker makes "
                "them itself, one per queue"
            )
        return written

    def binding_problem(self, b: BindingState) -> str | None:
        for kind, name, role in (
            ("exchange", b.source, "source"),
            (b.destination_type, b.destination, "destination"),
        ):
            known = self.knows_exchange(name) if kind == "exchange" else name in self.queues
            if not known:
                why = self.gone.get((kind, name), "it is not in the vhost")
                return f"its {role} {kind} {name!r} is not in the spec ({why})"
        if "{" in b.routing_key or "}" in b.routing_key:
            return (
                f"its key {b.routing_key!r} has braces, which in a spec mark a run-time "
                "binding's '{param}'; rename the key or keep the binding outside the spec"
            )
        if self.exchange_type(b.source) == ExchangeType.HEADERS.value:
            match = dict(b.arguments).get("x-match")
            if match is not None and match not in _MATCHES:
                return f"its x-match {match!r} is not one of {', '.join(sorted(_MATCHES))}"
        return None

    def exchange_type(self, name: str) -> str:
        if name in self.exchanges:
            return self.exchanges[name].type
        return BUILTIN_EXCHANGES[name].value

    def binding_body(self, b: BindingState) -> dict[str, Any]:
        body: dict[str, Any] = {"from": b.source}
        body["queue" if b.destination_type == "queue" else "exchange"] = b.destination
        if b.routing_key:
            body["key"] = b.routing_key
        table = b.declare_arguments()
        if self.exchange_type(b.source) == ExchangeType.HEADERS.value:
            if "x-match" in table:
                body["match"] = table.pop("x-match")
            headers = {k: v for k, v in table.items() if not k.startswith("x-")}
            if headers:
                body["headers"] = headers
            table = {k: v for k, v in table.items() if k.startswith("x-")}
        if table:
            body["arguments"] = table
        return body

    # -- policies ----------------------------------------------------------------

    def take_policies(
        self, policies: Mapping[str, PolicyState], *, operator: bool
    ) -> dict[str, dict[str, Any]]:
        what = "operator policy" if operator else "policy"
        kept: dict[str, Policy] = {}
        for state in sorted(policies.values(), key=lambda p: p.name):
            problem = self.policy_problem(state, operator=operator)
            if problem is not None:
                self.notes.append(f"{what} {state.name!r} left out: {problem}")
            else:
                kept[state.name] = state.as_policy()
        ties = self.ties(kept)
        for name, others in sorted(ties.items()):
            self.notes.append(
                f"{what} {name!r} left out: it has the priority of {what} "
                f"{', '.join(repr(o) for o in others)} and both apply to one object, where "
                "the broker applies one of them arbitrarily; give them different priorities "
                "and import again"
            )
        return {name: _policy_body(policies[name]) for name in sorted(kept) if name not in ties}

    def policy_problem(self, state: PolicyState, *, operator: bool) -> str | None:
        if state.apply_to not in {t.value for t in PolicyTarget}:
            return f"apply-to {state.apply_to!r} is not one the spec has"
        definition = state.body()["definition"]
        if not definition:
            return "it sets nothing, which a spec refuses"
        for key, value in definition.items():
            known = POLICY_KEYS.get(key)
            if known is None:
                return f"the spec does not know the policy key {key!r}"
            if operator and not known.operator:
                return f"an operator policy may not set {key!r} in a spec"
            if (problem := check_value(known.value, value)) is not None:
                return f"{key}: {problem}"
        try:
            re.compile(state.pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            return f"its pattern {state.pattern!r} is not a regular expression Python reads ({exc})"
        one = {state.name: state.as_policy()}
        alone = Spec(
            path=Path("import.yaml"),
            exchanges=self.model_exchanges(),
            queues=self.model_queues(),
            policies={} if operator else one,
            operator_policies=one if operator else {},
        )
        for check in POLICY_CHECKS:
            for finding in check(alone):
                if finding.severity is Severity.ERROR:
                    return finding.message
        return None

    def ties(self, policies: Mapping[str, Policy]) -> dict[str, list[str]]:
        """Each policy that ties with another on some object, and those it ties with."""
        found: dict[str, list[str]] = {}
        targets: list[tuple[str, str, QueueType | None]] = [
            ("queue", q.name, QueueType(q.type)) for q in self.queues.values()
        ]
        targets += [("exchange", name, None) for name in self.exchanges]
        for kind, name, qtype in targets:
            applying = [
                p
                for p in policies.values()
                if p.applies_to("queue" if kind == "queue" else "exchange", name, qtype)
            ]
            for a in applying:
                for b in applying:
                    if a.name != b.name and a.priority == b.priority:
                        others = found.setdefault(a.name, [])
                        if b.name not in others:
                            others.append(b.name)
        return found

    def model_exchanges(self) -> dict[str, Exchange]:
        return {
            x.name: Exchange(x.name, ExchangeType(x.type), arguments=x.declare_arguments())
            for x in self.exchanges.values()
        }

    def model_queues(self) -> dict[str, Queue]:
        return {
            q.name: Queue(q.name, QueueType(q.type), arguments=dict(q.arguments))
            for q in self.queues.values()
        }


def _dangling(role: str, name: str, gone: Mapping[tuple[str, str], str]) -> str:
    why = gone.get(("exchange", name), "the vhost has no such exchange")
    return (
        f"its {role} {name!r} is not in the spec ({why}), and a spec names only exchanges "
        "it has; declare it and import again"
    )


def _queue_arguments(q: QueueState) -> dict[str, Any]:
    """The queue's arguments as declared, without ``x-queue-type`` (the spec's ``type``)."""
    table = q.declare_arguments()
    table.pop("x-queue-type", None)
    return table


def _argument_problem(
    arguments: Mapping[str, Any], known: Mapping[str, ArgSpec], queue_type: QueueType | None
) -> str | None:
    """Why the spec's checks would refuse one of these arguments; ``None`` if none."""
    for name, value in sorted(arguments.items()):
        spec = known.get(name)
        if spec is None:
            continue
        if (problem := check_value(spec, value)) is not None:
            return f"its argument {name}: {problem}"
        if queue_type is not None and queue_type not in spec.queue_types:
            return f"its argument {name} is not supported by {queue_type.value} queues"
    return None


def _exchange_body(x: ExchangeState) -> dict[str, Any]:
    body: dict[str, Any] = {"type": x.type}
    if not x.durable:
        body["durable"] = False
    if x.auto_delete:
        body["auto_delete"] = True
    if x.internal:
        body["internal"] = True
    body.update(_sugared(x.declare_arguments(), EXCHANGE_ARGUMENTS))
    return body


def _queue_body(q: QueueState, retry: tuple[int, ...] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if q.type != "classic":
        body["type"] = q.type
    if not q.durable:
        body["durable"] = False
    if q.auto_delete:
        body["auto_delete"] = True
    body.update(_sugared(_queue_arguments(q), QUEUE_ARGUMENTS))
    if retry:
        body["retry"] = [retry_label(delay) for delay in retry]
    return body


def _sugared(table: Mapping[str, Any], known: Mapping[str, ArgSpec]) -> dict[str, Any]:
    """Each argument under its sugar key where it has one, the rest under ``arguments``."""
    body: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    for name, value in sorted(table.items()):
        spec = known.get(name)
        if spec is not None and spec.sugar is not None:
            body[spec.sugar] = value
        else:
            raw[name] = value
    if raw:
        body["arguments"] = raw
    return body


def _policy_body(state: PolicyState) -> dict[str, Any]:
    body: dict[str, Any] = {"pattern": state.pattern, "apply_to": state.apply_to}
    if state.priority:
        body["priority"] = state.priority
    raw: dict[str, Any] = {}
    for key, value in sorted(state.body()["definition"].items()):
        sugar = POLICY_KEYS[key].sugar
        if sugar is not None:
            body[sugar] = value
        else:
            raw[key] = value
    if raw:
        body["definition"] = raw
    return body
