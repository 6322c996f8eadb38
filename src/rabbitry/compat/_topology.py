"""Topology changes: what publishers send where, and what consumers rely on receiving.

Breaking, whatever the mode (a deployment mixes old and new services either way):

- a message removed, or its exchange, routing key or headers changed (old
  publishers keep sending it the old way);
- an exchange old publishers send to made internal;
- a queue a service consumes from removed or re-declared differently;
- a message's ``reply:`` removed or changed (its requesters wait for the old
  reply); added is compatible;
- a delay removed from a queue's ``retry:``: its retry queue leaves the spec
  with whatever waits in it (breaking unless it is empty); delays added or
  reordered are compatible, and the queue itself is not re-declared for either;
- a message no longer reaching a queue that a service consumes it from — the
  routing model (``rabbitry.routing``, ``rabbitry.check.reach``) run on both
  specs, and shown with a concrete message that the old spec routes there and
  the new one does not.  Dead-letter and alternate exchanges set by policies are followed, so a
  policy change that diverts a consumer's messages is breaking like a binding
  change.

Additions (messages, exchanges, queues, bindings, services) and changes no
consumer relies on are compatible; description changes are not findings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

from rabbitry import routing
from rabbitry.check import reach
from rabbitry.compat._findings import Change, Counterexample, Finding, Verdict
from rabbitry.compat._schema import Root, key
from rabbitry.compat._synth import Synth
from rabbitry.errors import RabbitryError
from rabbitry.messaging.contract import Contract, MessageContract
from rabbitry.spec import Binding, Message, Queue, Spec
from rabbitry.spec.model import retry_label

__all__ = ["topology_findings"]

_TRIES = 48


def _undocumented(value: Any) -> Any:
    return dataclasses.replace(value, description=None)


def _declared(queue: Queue) -> Queue:
    """The queue as the broker declares it: ``retry:`` is not part of it (its retry
    queues are queues of their own, judged by ``_retries``)."""
    return dataclasses.replace(queue, description=None, retry=())


def _binding_key(b: Binding) -> str:
    return key(
        [
            b.source,
            b.destination,
            b.destination_type,
            b.key,
            b.match,
            dict(b.headers),
            dict(b.arguments),
        ]
    )


def _binding_name(b: Binding) -> str:
    arrow = f"{b.source or '(default)'} → {b.destination_type} {b.destination}"
    if b.match is not None or b.headers:
        return f"binding {arrow} ({b.match or 'all'} {dict(b.headers)})"
    return f"binding {arrow} key {b.key!r}"


class _Topology:
    def __init__(self, old: Spec, new: Spec, old_contract: Contract, new_contract: Contract):
        self.old, self.new = old, new
        self.contracts = {"old": old_contract, "new": new_contract}
        self.findings: list[Finding] = []
        #: Bindings on an old route to a consumer's queue that the new spec no longer serves.
        self.broken_paths: set[str] = set()

    def add(self, verdict: Verdict, subject: str, why: str, **extra: Any) -> None:
        self.findings.append(Finding(verdict, subject, "", why, **extra))

    def run(self) -> list[Finding]:
        self._messages()
        self._consumers()
        self._objects()
        self._retries()
        return self.findings

    # -- messages -----------------------------------------------------------------------------

    def _messages(self) -> None:
        old, new = self.old.messages, self.new.messages
        for name in sorted(old.keys() - new.keys()):
            example = _example(self.contracts["old"].messages[name])
            evidence = Counterexample(example, "old", f"new has no message {name!r}")
            why = "removed; old publishers still send it and no new consumer expects it"
            self.add(
                Verdict.BREAKING,
                f"message {name}",
                why,
                counterexample=evidence if example is not None else None,
                message=name,
            )
        for name in sorted(new.keys() - old.keys()):
            self.add(Verdict.COMPATIBLE, f"message {name}", "added", message=name)
        for name in sorted(old.keys() & new.keys()):
            self._message_route(old[name], new[name])
            self._message_reply(old[name], new[name])

    def _message_reply(self, old: Message, new: Message) -> None:
        """A request's ``reply:``: its requesters (generated ``request_*`` methods) wait
        for and validate the reply the old spec names."""
        if old.reply == new.reply:
            return
        change = Change("settings", {"reply": old.reply}, {"reply": new.reply})
        if old.reply is None:
            why = f"reply {new.reply!r} added; requesters that expect none are not affected"
            verdict = Verdict.COMPATIBLE
        elif new.reply is None:
            why = f"reply {old.reply!r} removed; old requesters still wait for it and time out"
            verdict = Verdict.BREAKING
        else:
            why = (
                f"reply {old.reply!r} → {new.reply!r}; old requesters wait for a "
                f"{old.reply!r} and refuse the new reply"
            )
            verdict = Verdict.BREAKING
        self.add(verdict, f"message {old.name}", why, message=old.name, change=change)

    def _message_route(self, old: Message, new: Message) -> None:
        change = _settings(
            [
                ("exchange", old.exchange, new.exchange),
                ("routing key", old.routing_key, new.routing_key),
                ("headers", dict(old.headers) or None, dict(new.headers) or None),
            ]
        )
        if change is None:
            return
        why = f"{change} (old publishers still send it the old way)"
        mc_old = self.contracts["old"].messages[old.name]
        mc_new = self.contracts["new"].messages[new.name]
        evidence = None
        for instance in _instances(mc_old, mc_new):
            sent_old, sent_new = _sent(mc_old, instance), _sent(mc_new, instance)
            if sent_old is not None and sent_new is not None and sent_old != sent_new:
                error = f"old sends it {_say_sent(sent_old)}, new {_say_sent(sent_new)}"
                evidence = Counterexample(instance, "old", error)
                break
        verdict = Verdict.BREAKING if evidence is not None else Verdict.UNKNOWN
        if evidence is None:
            why += "; no message found that is sent differently"
        self.add(
            verdict,
            f"message {old.name}",
            why,
            counterexample=evidence,
            message=old.name,
            change=change,
        )

    # -- consumers ------------------------------------------------------------------------------

    def _consumers(self) -> None:
        reported_queues: set[str] = set()
        for service in sorted(self.old.services.values(), key=lambda s: s.name):
            if service.name not in self.new.services:
                continue  # a service the new spec retires relies on nothing
            for queue, names in sorted(service.consumes.items()):
                if queue not in self.old.queues:
                    continue
                if queue not in self.new.queues or _declared(self.new.queues[queue]) != _declared(
                    self.old.queues[queue]
                ):
                    if queue not in reported_queues:
                        reported_queues.add(queue)
                        self._queue_changed(queue)
                    continue
                for name in names:
                    if name in self.old.messages and name in self.new.messages:
                        self._delivery(service.name, queue, name)

    def _queue_changed(self, queue: str) -> None:
        users = sorted(
            f"{s.name} ({', '.join(ms)})"
            for s in self.old.services.values()
            for q, ms in s.consumes.items()
            if q == queue
        )
        before = self.old.queues[queue]
        after = self.new.queues.get(queue)
        if after is None:
            why = f"removed, but consumed by {'; '.join(users)}"
        else:
            change = _settings(
                _fields(_declared(before), _declared(after), "arguments", "argument ")
            )
            why = (
                f"changed ({change}), but consumed by {'; '.join(users)}: "
                "its consumers declare or expect the old queue"
            )
            self.add(Verdict.BREAKING, f"queue {queue}", why, change=change)
            return
        self.add(Verdict.BREAKING, f"queue {queue}", why)

    def _delivery(self, service: str, queue: str, name: str) -> None:
        """Does ``name`` still reach ``queue``, as the old spec had it?"""
        old_m, new_m = self.old.messages[name], self.new.messages[name]
        if queue not in reach(self.old, old_m):
            return  # never did (``check`` says so)
        old_routes = {d.queue: d for d in routing.route_message(self.old, old_m)}
        new_routes = {d.queue: d for d in routing.route_message(self.new, new_m)}
        reached = queue in reach(self.new, new_m)
        if reached and queue in new_routes and queue in old_routes:
            narrowed = _limits(new_routes[queue].conditions) - _limits(old_routes[queue].conditions)
            if not narrowed:
                return
        elif reached and queue not in old_routes:
            return  # reached through dead-lettering before, and still reached
        subject = f"message {name}"
        mc_old = self.contracts["old"].messages[name]
        mc_new = self.contracts["new"].messages[name]
        hints = _when(old_routes[queue].conditions) if queue in old_routes else frozenset()
        for instance in _instances(mc_old, mc_new, hints):
            before = _concrete_reach(self.old, mc_old, instance, certain=True)
            after = _concrete_reach(self.new, mc_new, instance, certain=False)
            if before is None or after is None or queue not in before or queue in after:
                continue
            if queue in old_routes:
                self.broken_paths.update(_binding_key(b) for b in old_routes[queue].path)
            direct = _concrete_reach(self.old, mc_old, instance, certain=True, dead_letters=False)
            direct_after = _concrete_reach(
                self.new, mc_new, instance, certain=False, dead_letters=False
            )
            error = f"old routes it to {_queues(direct or set())}"
            if direct is not None and queue not in direct:
                error += f", dead-lettered on to {_queues(before - direct)}"
            error += f"; new to {_queues(direct_after or set())}"
            why = f"no longer reaches queue {queue!r}, where service {service!r} consumes it"
            self.add(
                Verdict.BREAKING,
                subject,
                why,
                counterexample=Counterexample(instance, "old", error),
                message=name,
            )
            return
        conditions = (
            "; ".join(map(str, new_routes[queue].conditions)) if queue in new_routes else "never"
        )
        why = (
            f"may no longer reach queue {queue!r}, where service {service!r} consumes it "
            f"(new route: {conditions}); no message found that shows it"
        )
        self.add(Verdict.UNKNOWN, subject, why, message=name)

    # -- exchanges, queues, bindings, services ---------------------------------------------------

    def _objects(self) -> None:
        old, new = self.old, self.new
        published_to = {m.exchange: m.name for m in old.messages.values()}
        for name in sorted(old.exchanges.keys() - new.exchanges.keys()):
            self.add(Verdict.COMPATIBLE, f"exchange {name}", "removed (no new message uses it)")
        for name in sorted(new.exchanges.keys() - old.exchanges.keys()):
            self.add(Verdict.COMPATIBLE, f"exchange {name}", "added")
        for name in sorted(old.exchanges.keys() & new.exchanges.keys()):
            before, after = old.exchanges[name], new.exchanges[name]
            if _undocumented(before) == _undocumented(after):
                continue
            if after.internal and not before.internal and name in published_to:
                why = f"made internal, but old publishers send {published_to[name]} to it"
                self.add(Verdict.BREAKING, f"exchange {name}", why)
            else:
                change = _settings(_fields(before, after, "arguments", "argument "))
                why = f"changed ({change}); no consumer lost a message"
                self.add(Verdict.COMPATIBLE, f"exchange {name}", why, change=change)
        consumed = {q for s in old.services.values() for q in s.consumes}
        old_queues, new_queues = _own_queues(old), _own_queues(new)
        for name in sorted(old_queues.keys() - new_queues.keys()):
            if name not in consumed:
                self.add(Verdict.COMPATIBLE, f"queue {name}", "removed (no service consumed it)")
        for name in sorted(new_queues.keys() - old_queues.keys()):
            self.add(Verdict.COMPATIBLE, f"queue {name}", "added")
        for name in sorted(old_queues.keys() & new_queues.keys()):
            was, now = _declared(old_queues[name]), _declared(new_queues[name])
            if name not in consumed and was != now:
                change = _settings(_fields(was, now, "arguments", "argument "))
                why = f"changed ({change}); no service consumes it"
                self.add(Verdict.COMPATIBLE, f"queue {name}", why, change=change)
        old_bindings = {_binding_key(b): b for b in old.bindings}
        new_bindings = {_binding_key(b): b for b in new.bindings}
        for ident in sorted(old_bindings.keys() - new_bindings.keys()):
            if ident not in self.broken_paths:
                why = "removed or changed; every consumer still receives what it expects"
                self.add(Verdict.COMPATIBLE, _binding_name(old_bindings[ident]), why)
        for ident in sorted(new_bindings.keys() - old_bindings.keys()):
            self.add(Verdict.COMPATIBLE, _binding_name(new_bindings[ident]), "added")
        self._policies()
        for name in sorted(old.services.keys() - new.services.keys()):
            self.add(Verdict.COMPATIBLE, f"service {name}", "removed")
        for name in sorted(new.services.keys() - old.services.keys()):
            self.add(Verdict.COMPATIBLE, f"service {name}", "added")

    def _retries(self) -> None:
        """A queue's ``retry:``, delay by delay: a removed delay's retry queue leaves the
        spec with the messages waiting in it (unmanaged; ``--prune`` deletes it), so it is
        breaking unless that queue is empty.  Added or reordered delays: compatible (the
        runtime reads the delays of the spec it runs with)."""
        old, new = self.old.queues, self.new.queues
        for name in sorted(n for n, q in old.items() if q.retry_of is None):
            before = old[name].retry
            after = new[name].retry if name in new and new[name].retry_of is None else ()
            if before == after:
                continue
            change = Change(
                "settings",
                {"retry": [retry_label(d) for d in before] or None},
                {"retry": [retry_label(d) for d in after] or None},
            )
            kept = {q for _, q in new[name].retry_queues} if name in new else set()
            removed = [q for d, q in dict.fromkeys(old[name].retry_queues) if q not in kept]
            for delay, queue in dict.fromkeys(old[name].retry_queues):
                if queue in kept:
                    continue
                why = (
                    f"retry delay {retry_label(delay)} removed: retry queue {queue!r} leaves "
                    "the spec with the messages waiting in it (unmanaged, deleted by "
                    "--prune); breaking unless it is empty: drain it, or keep the delay "
                    "until it is"
                )
                self.add(Verdict.BREAKING, f"queue {name}", why, change=change)
            if not removed and name in new:
                why = f"retry changed ({change}); every old retry queue stays"
                self.add(Verdict.COMPATIBLE, f"queue {name}", why, change=change)

    def _policies(self) -> None:
        """Policies change in place; what they change in routing (a dead-letter or
        alternate exchange) is judged with the messages, through the routing model."""
        for kind, old, new in (
            ("policy", self.old.policies, self.new.policies),
            ("operator policy", self.old.operator_policies, self.new.operator_policies),
        ):
            for name in sorted(old.keys() - new.keys()):
                self.add(
                    Verdict.COMPATIBLE,
                    f"{kind} {name}",
                    "removed; every consumer still receives what it expects",
                )
            for name in sorted(new.keys() - old.keys()):
                self.add(Verdict.COMPATIBLE, f"{kind} {name}", "added")
            for name in sorted(old.keys() & new.keys()):
                if _undocumented(old[name]) != _undocumented(new[name]):
                    change = _settings(_fields(old[name], new[name], "definition", ""))
                    why = (
                        f"changed in place ({change}); "
                        "every consumer still receives what it expects"
                    )
                    self.add(Verdict.COMPATIBLE, f"{kind} {name}", why, change=change)


def _own_queues(spec: Spec) -> dict[str, Queue]:
    """The spec's queues but its retry queues (judged with their queue's ``retry:``)."""
    return {name: q for name, q in spec.queues.items() if q.retry_of is None}


def _fields(before: Any, after: Any, mapping: str, prefix: str) -> list[tuple[str, Any, Any]]:
    """Each setting of a spec object on both sides, its ``mapping`` field key by key."""
    found: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(before):
        if not f.compare or f.name in ("description", "locs", mapping):
            continue
        found.append((f.name.replace("_", " "), getattr(before, f.name), getattr(after, f.name)))
    was, now = getattr(before, mapping), getattr(after, mapping)
    for name in sorted(was.keys() | now.keys()):
        found.append((f"{prefix}{name}", was.get(name), now.get(name)))
    return found


def _settings(pairs: list[tuple[str, Any, Any]]) -> Change | None:
    """The settings that differ, as one change (``None``: none differs)."""
    differ = [(name, was, now) for name, was, now in pairs if was != now]
    if not differ:
        return None
    return Change(
        "settings",
        {name: _plain(was) for name, was, _ in differ},
        {name: _plain(now) for name, _, now in differ},
    )


def _plain(value: Any) -> Any:
    """A spec value as JSON data (a mapping as a dict, a StrEnum as its string)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, str):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def topology_findings(
    old: Spec, new: Spec, old_contract: Contract, new_contract: Contract
) -> list[Finding]:
    return _Topology(old, new, old_contract, new_contract).run()


# -- concrete messages ---------------------------------------------------------------------------


def _limits(conditions: tuple[routing.Condition, ...]) -> frozenset[routing.Condition]:
    """The conditions of a route that the consumer's own bindings do not satisfy."""
    return frozenset(c for c in conditions if c.side is not routing.Side.RUNTIME_BINDING)


def _when(conditions: tuple[routing.Condition, ...]) -> frozenset[tuple[str, str]]:
    return frozenset((c.name, c.value) for c in conditions if c.side is routing.Side.FIELD)


def _made(destination: routing.Destination) -> bool:
    """Reached once the consumers' run-time bindings are made (they bind what they follow)."""
    return all(c.side is routing.Side.RUNTIME_BINDING for c in destination.conditions)


def _example(contract: MessageContract) -> Any | None:
    root = Root(dict(contract.schema))
    for instance in islice(Synth(root).values(root.schema), 64):
        if not contract.faults(instance):
            return instance
    return None


def _instances(
    old: MessageContract, new: MessageContract, hints: frozenset[tuple[str, str]] = frozenset()
) -> Iterator[Any]:
    """Messages valid under the old schema, those also valid under the new one first.

    ``hints`` (field, value) are routing conditions of the old route: messages
    with those values are built too, so a conditional old route is taken.
    """
    root = Root(dict(old.schema))
    synth = Synth(root)
    forced: dict[tuple[str | int, ...], list[Any]] = {}
    for field, value in hints:
        forced[(field,)] = [value, *([int(value)] if value.lstrip("-").isdigit() else [])]
    streams = [synth.values(root.schema, forced)] if forced else []
    streams.append(synth.values(root.schema))
    later: list[Any] = []
    for stream in streams:
        for instance in islice(stream, _TRIES):
            if old.faults(instance):
                continue
            if new.faults(instance):
                later.append(instance)
            else:
                yield instance
    yield from later


def _sent(contract: MessageContract, instance: Any) -> tuple[str, str, Mapping[str, Any]] | None:
    try:
        return (
            contract.exchange,
            contract.routing_key_for(instance),
            contract.headers_for(instance),
        )
    except RabbitryError:
        return None


def _say_sent(sent: tuple[str, str, Mapping[str, Any]]) -> str:
    exchange, key, headers = sent
    text = f"to {exchange or '(default)'!r} with key {key!r}"
    return text + (f" and headers {dict(headers)}" if headers else "")


def _queues(found: set[str]) -> str:
    return ", ".join(sorted(found)) or "no queue"


def _concrete_reach(
    spec: Spec,
    contract: MessageContract,
    instance: Any,
    *,
    certain: bool,
    dead_letters: bool = True,
) -> set[str] | None:
    """The queues ``instance`` reaches, dead-lettering on included.

    Run-time bindings count as made (their consumer binds with the values it
    follows).  ``certain``: only routes with no other condition; else every
    route that may be taken (an alternate exchange taken "when no binding
    matches").
    """
    sent = _sent(contract, instance)
    if sent is None:
        return None
    exchange, key, headers = sent
    try:
        first = routing.route(spec, exchange, key, dict(headers))
    except RabbitryError:
        return None
    found: set[str] = set()
    todo = [d for d in first if not certain or _made(d)]
    while todo:
        destination = todo.pop()
        if destination.queue in found:
            continue
        found.add(destination.queue)
        if not dead_letters:
            continue
        try:
            hops = routing.dead_letter_route(spec, destination.queue, key, dict(headers))
        except RabbitryError:
            continue
        todo.extend(d for d in hops if not certain or _made(d))
    return found
