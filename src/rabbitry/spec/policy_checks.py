"""The checks of ``policies:`` and ``operator_policies:`` against the rest of the spec.

Each is a function ``(spec) -> Iterator[Diagnostic]`` like those of
``spec.checks`` (which runs them).  The rules they apply are the data of
``spec.policies``; the facts they report are:

- a policy key that does nothing on what the policy applies to, or that the
  spec's RabbitMQ version refuses (``rabbitmq:``; 3.10 when unsaid, with a
  warning where that matters);
- a pattern Python's ``re`` cannot compile (the stand-in for the broker's
  PCRE: a pattern only PCRE reads, such as ``\\Q...\\E``, is reported too,
  since rabbitry could not say what it matches);
- a pattern that cannot be run on one of the spec's names within
  ``rabbitry._bounded.BOUND`` (it backtracks without end, or is too large):
  whether it applies there is unknown;
- two policies of equal priority applying to one object (the broker picks one
  arbitrarily), and a policy a higher one overrides on every object it
  matches; user and operator policies each among themselves;
- an x-argument a policy also sets (with the value that takes effect), and,
  as advice (``info``), an x-argument a policy could set instead, so that it
  changes in place later;
- a dead-letter or alternate exchange, or a queue or exchange named in
  ``queues:`` / ``exchanges:``, that the spec does not have.

Run-time (exclusive) queues are server-named: a policy reaches them only by a
pattern that matches ``amq.gen-...`` names, and the checks that name objects
leave them out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal

from rabbitry import _bounded
from rabbitry.spec._names import exchange_names, knows_exchange, queue_names, unknown_exchange
from rabbitry.spec.diagnostics import Code, Diagnostic, did_you_mean
from rabbitry.spec.model import (
    ArgValue,
    Location,
    Policy,
    PolicyTarget,
    Queue,
    Spec,
)
from rabbitry.spec.policies import (
    MIN_PER_TYPE_VERSION,
    POLICY_KEYS,
    PRECEDENCE,
    Setting,
    Winner,
    merged_policy_value,
    queue_policies,
    resolve,
    winning_policy,
)

__all__ = ["POLICY_ADVISORY", "POLICY_CHECKS", "POLICY_HINTS"]

#: A thing a policy can apply to: ``("queue", name)`` or ``("exchange", name)``.
Target = tuple[Literal["queue", "exchange"], str]

_ASSUMED = (3, 10)
_PER_TYPE = frozenset(
    {PolicyTarget.CLASSIC_QUEUES, PolicyTarget.QUORUM_QUEUES, PolicyTarget.STREAMS}
)


def _all(spec: Spec) -> list[Policy]:
    return [*spec.policies.values(), *spec.operator_policies.values()]


def _what(policy: Policy) -> str:
    return f"{'operator policy' if policy.operator else 'policy'} {policy.name!r}"


def _key_loc(policy: Policy, key: str) -> Location:
    return policy.locs.of(f"definition.{key}", key=True)


def _version(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def check_policy_patterns(spec: Spec) -> Iterator[Diagnostic]:
    """A ``pattern:`` compiles (with Python's ``re``, standing in for PCRE), and can be
    run on each name of the spec within ``_bounded.BOUND`` (one that backtracks without
    end is a matter of luck on the broker too: PCRE gives up at its match limit)."""
    names = sorted(queue_names(spec) | exchange_names(spec))
    for policy in _all(spec):
        if policy.names:
            continue  # made by rabbitry from names: always valid
        try:
            re.compile(policy.pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            yield Diagnostic(
                policy.locs.of("pattern"),
                Code.POLICY_PATTERN,
                f"{_what(policy)}: pattern {policy.pattern!r} is not a valid regular "
                f"expression ({exc})",
                "fix the expression (rabbitry reads it with Python's re as a stand-in for the "
                "broker's PCRE, so PCRE-only syntax such as \\Q...\\E is refused too), or list "
                "exact names with `queues: [...]` / `exchanges: [...]`",
            )
            continue
        stuck = next((n for n in names if _bounded.search(policy.pattern, n) is None), None)
        if stuck is not None:
            yield Diagnostic(
                policy.locs.of("pattern"),
                Code.POLICY_PATTERN,
                f"{_what(policy)}: pattern {policy.pattern!r} could not be run on the name "
                f"{stuck!r} within {_bounded.BOUND} s (it backtracks too much, or is too "
                "large): whether the policy applies there is unknown",
                "simplify the expression (no nested or overlapping repetition such as "
                "(a|a)* or (a+)+), or list exact names with `queues: [...]` / "
                "`exchanges: [...]`",
            )


def check_policy_targets(spec: Spec) -> Iterator[Diagnostic]:
    """Each key takes effect on something the policy applies to."""
    for policy in _all(spec):
        target = policy.apply_to
        for key in policy.definition:
            known = POLICY_KEYS.get(key)
            if known is None:
                continue  # refused by the loader
            if target.queue_types & known.queue_types or (target.exchanges and known.exchanges):
                continue
            yield Diagnostic(
                _key_loc(policy, key),
                Code.POLICY_TARGET,
                f"{_what(policy)} applies to {target.value}, but {known.sugar or key} works "
                f"only on {known.targets()}: the broker accepts it and it does nothing",
                f"remove it, or put it in a policy that applies to {known.targets()}",
            )


def check_policy_versions(spec: Spec) -> Iterator[Diagnostic]:
    """What the policy uses exists in the RabbitMQ the spec targets (``rabbitmq:``)."""
    stated = spec.rabbitmq
    version = stated or _ASSUMED
    for policy in _all(spec):
        if policy.apply_to in _PER_TYPE and version < MIN_PER_TYPE_VERSION:
            where = policy.locs.of("apply_to")
            needs = f"apply_to {policy.apply_to.value} needs RabbitMQ 3.12 or later"
            if stated is None:
                yield Diagnostic(
                    where,
                    Code.POLICY_VERSION_ASSUMED,
                    f"{_what(policy)}: {needs}; the spec does not say which RabbitMQ it "
                    "targets, so 3.10 is assumed, which refuses the policy",
                    'add `rabbitmq: "3.12"` at the top if every broker is 3.12+, '
                    "or use `apply_to: queues`",
                )
            else:
                yield Diagnostic(
                    where,
                    Code.POLICY_VERSION,
                    f"{_what(policy)}: {needs}; the spec targets {_version(stated)}",
                    "use `apply_to: queues`, or raise `rabbitmq:` if every broker is 3.12+",
                )
        # Keys a newer RabbitMQ ignores or refuses (ha-*, queue-mode, ...): spec.rabbitmq4.


def check_policy_references(spec: Spec) -> Iterator[Diagnostic]:
    """Exchanges a policy sends to, and the names it lists, are in the spec."""
    for policy in _all(spec):
        for key in ("dead-letter-exchange", "alternate-exchange"):
            value = policy.definition.get(key)
            if isinstance(value, str) and value and not knows_exchange(spec, value):
                yield Diagnostic(
                    policy.locs.of(f"definition.{key}"),
                    Code.UNKNOWN_EXCHANGE,
                    f"{_what(policy)} sends to exchange {value!r} ({key}), which the spec "
                    "does not declare: what it sends there is dropped",
                    did_you_mean(value, exchange_names(spec), "exchanges"),
                )
        listed = "exchanges" if policy.apply_to.value == "exchanges" else "queues"
        for i, name in enumerate(policy.names):
            where = policy.locs.of(f"{listed}.{i}")
            if listed == "queues" and name not in queue_names(spec):
                yield Diagnostic(
                    where,
                    Code.UNKNOWN_QUEUE,
                    f"{_what(policy)} names queue {name!r}, which the spec does not declare",
                    did_you_mean(name, queue_names(spec), "queues"),
                )
            elif listed == "exchanges" and (
                found := unknown_exchange(spec, name, where, _what(policy))
            ):
                yield found


def _targets(spec: Spec) -> list[tuple[Target, Queue | None]]:
    """The objects of the spec a policy can be matched against by name."""
    found: list[tuple[Target, Queue | None]] = [
        (("queue", q.name), q) for q in spec.queues.values() if not q.runtime
    ]
    found.extend((("exchange", name), None) for name in spec.exchanges)
    return found


def _applying(policies: Iterable[Policy], target: Target, queue: Queue | None) -> list[Policy]:
    kind, name = target
    qtype = queue.type if queue is not None else None
    return [p for p in policies if p.applies_to(kind, name, qtype)]


def _named(targets: list[Target]) -> str:
    shown = ", ".join(f"{kind} {name!r}" for kind, name in targets[:3])
    return shown + (f" and {len(targets) - 3} more" if len(targets) > 3 else "")


def _overlaps(spec: Spec, policies: Mapping[str, Policy]) -> Iterator[Diagnostic]:
    ties: dict[tuple[str, str], list[Target]] = {}
    matched: dict[str, list[Target]] = {}
    beaten: dict[str, dict[str, None]] = {}  # policy → the higher policies that win over it
    never_beaten: set[str] = set()
    for target, queue in _targets(spec):
        applying = _applying(policies.values(), target, queue)
        if not applying:
            continue
        top = winning_policy(applying, *target, queue.type if queue else None)
        assert top is not None
        for i, a in enumerate(applying):
            matched.setdefault(a.name, []).append(target)
            for b in applying[i + 1 :]:
                if a.priority == b.priority:
                    ties.setdefault(tuple(sorted((a.name, b.name))), []).append(target)  # type: ignore[arg-type]
            if a.priority == top.priority:
                never_beaten.add(a.name)
            else:
                beaten.setdefault(a.name, {})[top.name] = None
    for (first, second), targets in sorted(ties.items()):
        a, b = policies[first], policies[second]
        later = max(a, b, key=lambda p: p.locs.where)
        yield Diagnostic(
            later.locs.where,
            Code.POLICY_TIE,
            f"{_what(a)} and {_what(b)} both have priority {a.priority} and both apply to "
            f"{_named(targets)}: the broker applies one of them, chosen arbitrarily",
            "give one of them a higher priority, or narrow a pattern so that they do not "
            "overlap (only one policy applies to an object; their keys do not merge)",
        )
    for name, winners in sorted(beaten.items()):
        if name in never_beaten:
            continue
        policy = policies[name]
        over = ", ".join(f"{_what(policies[w])} (priority {policies[w].priority})" for w in winners)
        yield Diagnostic(
            policy.locs.where,
            Code.POLICY_SHADOWED,
            f"{_what(policy)} (priority {policy.priority}) never takes effect: {over} "
            f"applies instead on every object it matches ({_named(matched[name])})",
            "only one policy applies to an object and their keys do not merge: put its keys "
            "in the higher one, raise its priority, or narrow the higher one's pattern",
        )


def check_policy_overlaps(spec: Spec) -> Iterator[Diagnostic]:
    """Equal priorities on one object (error) and policies shadowed everywhere (warning),
    among user policies and among operator policies."""
    yield from _overlaps(spec, spec.policies)
    yield from _overlaps(spec, spec.operator_policies)


def _argument_loc(queue_locs_fields: Mapping[str, Location], sugar: str | None) -> str:
    return sugar if sugar and sugar in queue_locs_fields else "arguments"


def _outcome(winner: Winner, key: str, kind: str, argument: Setting, policy: Setting) -> str:
    used = resolve(winner, argument, policy)
    source = "the argument's" if used is argument else f"{policy.source.split(':')[0]}'s"
    rule = {
        Winner.ARGUMENT: f"the argument wins for {key} on {kind}",
        Winner.POLICY: f"the policy wins for {key} on {kind}",
        Winner.LESSER: f"the lesser value wins for {key} on {kind}",
    }[winner]
    return f"the broker uses {source} {used.value!r} ({rule})"


def check_policy_overrides(spec: Spec) -> Iterator[Diagnostic]:
    """An x-argument that the applying (user or operator) policy sets too.  Not on a retry
    queue: its arguments are rabbitry's, and ``retry_checks`` says which policy keys harm it."""
    for queue in spec.queues.values():
        if queue.runtime or queue.retry_of is not None:
            continue
        user, operator = queue_policies(spec, queue)
        for argument, value in queue.arguments.items():
            key = argument.removeprefix("x-")
            known = POLICY_KEYS.get(key)
            if known is None or queue.type not in known.queue_types:
                continue
            policy = merged_policy_value(user, operator, key)
            if policy is None:
                continue
            winner = PRECEDENCE.get(key, {}).get(queue.type.value, Winner.ARGUMENT)
            outcome = _outcome(
                winner, key, f"{queue.type.value} queues", Setting(value, "argument"), policy
            )
            name = policy.source.split(":", 1)[1]
            who = "operator policy" if policy.source.startswith("operator") else "policy"
            yield Diagnostic(
                queue.locs.of(_argument_loc(queue.locs.fields, known.sugar)),
                Code.POLICY_OVERRIDE,
                f"queue {queue.name!r} sets {argument}: {value!r} and {who} {name!r} sets "
                f"{key}: {policy.value!r}; {outcome}",
                "set it in one place: the policy, to change it in place later",
            )
    for exchange in spec.exchanges.values():
        applied = winning_policy(spec.policies, "exchange", exchange.name)
        value = exchange.arguments.get("alternate-exchange")
        if applied is None or value is None or "alternate-exchange" not in applied.definition:
            continue
        setting = Setting.of_policy(applied.definition["alternate-exchange"], applied)
        outcome = _outcome(
            PRECEDENCE["alternate-exchange"]["exchange"],
            "alternate-exchange",
            "exchanges",
            Setting(value, "argument"),
            setting,
        )
        yield Diagnostic(
            exchange.locs.of(_argument_loc(exchange.locs.fields, "alternate_exchange")),
            Code.POLICY_OVERRIDE,
            f"exchange {exchange.name!r} sets alternate-exchange: {value!r} and "
            f"{_what(applied)} sets alternate-exchange: {setting.value!r}; {outcome}",
            "set it in one place: the policy, to change it in place later",
        )


def _sugar(argument: str) -> str:
    known = POLICY_KEYS.get(argument.removeprefix("x-"))
    return (known.sugar if known else None) or argument


def check_policy_settable(spec: Spec) -> Iterator[Diagnostic]:
    """Advice: x-arguments a policy could set instead, so that they change in place.

    ``info``, not a warning: an x-argument is a sound choice for a setting that
    will not change, and a warning would fail ``check --strict`` for it.  Not on a retry
    queue: its TTL is the delay, part of its name, and its dead-letter route the way back.
    """
    for queue in spec.queues.values():
        if queue.runtime or queue.retry_of is not None:
            continue
        user, operator = queue_policies(spec, queue)
        settable: dict[str, ArgValue] = {}
        for argument, value in queue.arguments.items():
            key = argument.removeprefix("x-")
            known = POLICY_KEYS.get(key)
            if known is None or queue.type not in known.queue_types:
                continue
            if merged_policy_value(user, operator, key) is not None:
                continue  # reported as an override
            settable[argument] = value
        if not settable:
            continue
        sugar = ", ".join(_sugar(a) for a in settable)
        example = ", ".join(f"{_sugar(a)}: {v!r}" for a, v in settable.items())
        one = len(settable) == 1
        yield Diagnostic(
            queue.locs.where,
            Code.POLICY_SETTABLE,
            f"queue {queue.name!r}: {sugar} {'is an x-argument' if one else 'are x-arguments'}, "
            f"fixed when the queue is declared: changing {'it' if one else 'them'} means "
            f"replacing the queue; a policy can set {'it' if one else 'them'} and change "
            f"{'it' if one else 'them'} in place",
            f"move it to a policy: `policies: {{{queue.name}: {{queues: [{queue.name}], "
            f"{example}}}}}`",
        )


POLICY_CHECKS = (
    check_policy_patterns,
    check_policy_targets,
    check_policy_versions,
    check_policy_references,
    check_policy_overlaps,
    check_policy_overrides,
)

#: Advice (severity ``info``), kept apart from the findings: a spec with only
#: advice is clean, and ``check`` reports it on its own (``Report.hints``).
#: The policy checks whose findings are all warnings (see ``checks.ADVISORY``).
POLICY_ADVISORY = (check_policy_overrides,)

POLICY_HINTS = (check_policy_settable,)
