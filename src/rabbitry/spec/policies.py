"""Policies as data: which keys a policy may set, who wins against an x-argument,
which policy applies to an object, and a queue's effective settings.

This module is the one home of the broker's policy rules; the loader, the
checks, the routing model and ``plan`` all read them from here.

What the broker does (RabbitMQ 3.10, ``rabbit_policy`` and the queue
processes; pinned by tests on the broker):

- one user policy applies to an object: the highest priority among those whose
  pattern matches (an unanchored PCRE search) and whose ``apply-to`` fits; with
  equal priorities the broker picks one arbitrarily, which ``rabbitry check``
  reports as an error;
- one operator policy applies the same way, and its values merge with the user
  policy's: operator policies may set only numeric caps, and the lesser wins;
- the merged policy value then meets the queue's x-argument of the same key,
  and ``PRECEDENCE`` says who wins, per queue type.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

from rabbitry.spec.arguments import EXCHANGE_ARGUMENTS, QUEUE_ARGUMENTS, ArgSpec
from rabbitry.spec.model import ArgValue, Policy, Queue, QueueType, Spec

__all__ = [
    "MIN_PER_TYPE_VERSION",
    "POLICY_KEYS",
    "POLICY_SUGAR",
    "PRECEDENCE",
    "SERVER_NAMED",
    "PolicyKey",
    "Setting",
    "Winner",
    "alternate_of",
    "anchored_pattern",
    "dead_letter_of",
    "effective",
    "effective_exchange",
    "merged_policy_value",
    "object_name",
    "pcre_escape",
    "queue_policies",
    "resolve",
    "winning_policy",
]

#: ``apply_to: classic_queues | quorum_queues | streams`` exists from this RabbitMQ version.
MIN_PER_TYPE_VERSION = (3, 12)

_ALL = frozenset(QueueType)
_NONE: frozenset[QueueType] = frozenset()


@dataclass(frozen=True)
class PolicyKey:
    """One key a policy definition may hold (the broker's name, without ``x-``).

    ``value`` is the domain its value must fit (type, range, choices), shared with
    the queue argument of the same meaning where there is one; ``queue_types`` and
    ``exchanges`` say what it takes effect on; ``operator`` whether an operator
    policy may set it.  What later RabbitMQ versions do with a key (4.0 refuses ha-*,
    ignores max-in-memory-*) is ``spec.rabbitmq4``'s table.
    """

    name: str
    value: ArgSpec
    queue_types: frozenset[QueueType] = _ALL
    exchanges: bool = False
    operator: bool = False
    summary: str = ""

    @property
    def sugar(self) -> str | None:
        return self.value.sugar

    def targets(self) -> str:
        """What the key takes effect on, in words, for diagnostics."""
        kinds = [f"{t.value} queues" for t in QueueType if t in self.queue_types]
        if self.exchanges:
            kinds.append("exchanges")
        return ", ".join(kinds)


def _from_queue(argument: str, *, operator: bool = False) -> PolicyKey:
    spec = QUEUE_ARGUMENTS[argument]
    return PolicyKey(
        argument.removeprefix("x-"), spec, spec.queue_types, operator=operator, summary=spec.summary
    )


def _raw(
    name: str,
    kind: type,
    queue_types: frozenset[QueueType],
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    choices: tuple[str, ...] = (),
    operator: bool = False,
    summary: str = "",
) -> PolicyKey:
    value = ArgSpec(
        name,
        None,
        kind,
        minimum=minimum,
        maximum=maximum,
        choices=choices,
        queue_types=queue_types,
    )
    return PolicyKey(name, value, queue_types, operator=operator, summary=summary)


_CLASSIC = frozenset({QueueType.CLASSIC})
_QUORUM = frozenset({QueueType.QUORUM})

#: Every key a policy may set, by broker name.  The queue keys share their domain with
#: the queue argument of the same meaning (``spec.arguments``); operator policies may
#: set only the numeric caps (3.10.8 refuses the rest with 400, seen here).
POLICY_KEYS: Mapping[str, PolicyKey] = MappingProxyType(
    {
        k.name: k
        for k in (
            _from_queue("x-message-ttl", operator=True),
            _from_queue("x-expires", operator=True),
            _from_queue("x-max-length", operator=True),
            _from_queue("x-max-length-bytes", operator=True),
            _from_queue("x-delivery-limit", operator=True),
            _from_queue("x-overflow"),
            _from_queue("x-dead-letter-exchange"),
            _from_queue("x-dead-letter-routing-key"),
            _from_queue("x-dead-letter-strategy"),
            _from_queue("x-queue-mode"),
            _from_queue("x-max-age"),
            _from_queue("x-stream-max-segment-size-bytes"),
            _from_queue("x-initial-cluster-size"),
            _from_queue("x-queue-leader-locator"),
            _from_queue("x-queue-master-locator"),
            _raw("queue-version", int, _CLASSIC, minimum=1, maximum=2),
            _raw("max-in-memory-length", int, _QUORUM, minimum=0, operator=True),
            _raw("max-in-memory-bytes", int, _QUORUM, minimum=0, operator=True),
            _raw("ha-mode", str, _CLASSIC, choices=("all", "exactly", "nodes")),
            _raw("ha-params", object, _CLASSIC),
            _raw("ha-sync-mode", str, _CLASSIC, choices=("manual", "automatic")),
            _raw("ha-sync-batch-size", int, _CLASSIC, minimum=1),
            _raw("ha-promote-on-shutdown", str, _CLASSIC),
            _raw("ha-promote-on-failure", str, _CLASSIC),
            _raw(
                "federation-upstream",
                str,
                _ALL,
                summary="needs the federation plugin, which refuses it otherwise",
            ),
            _raw(
                "federation-upstream-set",
                str,
                _ALL,
                summary="needs the federation plugin, which refuses it otherwise",
            ),
            PolicyKey(
                "alternate-exchange",
                EXCHANGE_ARGUMENTS["alternate-exchange"],
                _NONE,
                exchanges=True,
                summary="the exchange that gets what this one cannot route",
            ),
        )
    }
)

#: The sugar keys a policy may be written with (the queue's and exchange's sugar names)
#: → the broker key.  ``max_priority`` and ``single_active_consumer`` are sugar of the
#: queue but not policy keys: the loader names them as fixed at declare time.
POLICY_SUGAR: Mapping[str, str] = MappingProxyType(
    {k.sugar: k.name for k in POLICY_KEYS.values() if k.sugar}
)


class Winner(StrEnum):
    """Who wins when a queue's x-argument and its (merged) policy set the same key."""

    ARGUMENT = "argument"
    POLICY = "policy"
    LESSER = "lesser"


_A, _P, _L = Winner.ARGUMENT, Winner.POLICY, Winner.LESSER
_C, _Q, _S = QueueType.CLASSIC.value, QueueType.QUORUM.value, QueueType.STREAM.value

#: Broker key → {queue type (or "exchange") → who wins}, from the broker's code
#: (``rabbit_amqqueue_process``, ``rabbit_quorum_queue``, ``rabbit_stream_queue``,
#: ``rabbit_exchange``).  The docs say "the argument wins" throughout; the code does
#: not, and tests on the broker pin each row.  Keys not here: the policy's value is
#: the only one (the queue has no such argument).
PRECEDENCE: Mapping[str, Mapping[str, Winner]] = MappingProxyType(
    {
        key: MappingProxyType(rows)
        for key, rows in {
            "message-ttl": {_C: _L, _Q: _L},
            # Measured on 3.10.8: a quorum queue takes the policy's expires over its
            # argument, larger or smaller (tests/test_policy_precedence.py).
            "expires": {_C: _L, _Q: _P},
            "max-length": {_C: _L, _Q: _L},
            "max-length-bytes": {_C: _L, _Q: _L, _S: _P},
            "delivery-limit": {_Q: _L},
            "dead-letter-exchange": {_C: _A, _Q: _A},
            "dead-letter-routing-key": {_C: _A, _Q: _A},
            "dead-letter-strategy": {_Q: _A},
            "overflow": {_C: _A, _Q: _P},
            "queue-mode": {_C: _A},
            "queue-version": {_C: _A},
            "max-age": {_S: _P},
            "stream-max-segment-size-bytes": {_S: _P},
            "initial-cluster-size": {_Q: _A, _S: _A},
            "queue-leader-locator": {_Q: _A, _S: _A},
            "queue-master-locator": {_C: _A},
            "alternate-exchange": {"exchange": _A},
        }.items()
    }
)


@dataclass(frozen=True)
class Setting:
    """One effective setting: its value and where it comes from.

    ``source`` is ``"argument"``, ``"policy:<name>"`` or ``"operator_policy:<name>"``
    (what output shows); ``policy`` the policy itself when one set it (``of_policy``),
    so no reader parses ``source`` back.
    """

    value: ArgValue
    source: str
    policy: Policy | None = field(default=None, compare=False)

    @classmethod
    def of_policy(cls, value: ArgValue, policy: Policy, *, operator: bool = False) -> Setting:
        """``value`` as ``policy`` sets it; ``operator``: it was read as an operator policy
        (what the caller knows, whatever ``policy.operator`` says)."""
        kind = "operator_policy" if operator else "policy"
        return cls(value, f"{kind}:{policy.name}", policy)


def pcre_escape(name: str) -> str:
    """``name`` as a literal in a PCRE pattern (and in Python's ``re``, which agrees).

    Every ASCII punctuation character gets a backslash: in PCRE a backslash before
    a character that is not a letter or digit always means that character, and
    Python's ``re`` reads it the same way.  Letters, digits and everything else
    (spaces, non-ASCII) are left as they are; no escape is used that only one of
    the two engines knows (``\\Q...\\E``, ``\\z``, ``\\Z``).
    """
    return "".join("\\" + c if c in string.punctuation else c for c in name)


def anchored_pattern(names: Iterable[str]) -> str:
    """A pattern that matches exactly ``names``: ``^(?:a|b)$(?!\\n)``.

    ``$`` alone would also match before a final newline (in PCRE and Python
    alike); ``(?!\\n)`` after it excludes that, so a name ending in a newline is
    not matched by its prefix.
    """
    unique = list(dict.fromkeys(names))
    body = "|".join(pcre_escape(n) for n in unique)
    if len(unique) != 1:
        body = f"(?:{body})"
    return f"^{body}$(?!\\n)"


#: What a server-named (run-time) queue is called on the broker, for matching patterns:
#: ``amq.gen-`` and 22 characters of URL-safe base64.  A run-time queue's spec name is
#: not its broker name, so a policy reaches it only through a pattern like ``^amq\.gen-``.
SERVER_NAMED = "amq.gen-JzTY20BRgKO-HjmUJj0wLg"


def object_name(queue: Queue) -> str:
    """The name the broker matches policy patterns against for ``queue``."""
    return SERVER_NAMED if queue.runtime else queue.name


def _policies(policies: Mapping[str, Policy] | Iterable[Policy]) -> list[Policy]:
    return list(policies.values() if isinstance(policies, Mapping) else policies)


def winning_policy(
    policies: Mapping[str, Policy] | Iterable[Policy],
    kind: Literal["queue", "exchange"],
    name: str,
    queue_type: QueueType | None = None,
) -> Policy | None:
    """The policy the broker applies to the object: the highest priority of those that
    apply.  Equal priorities are the broker's arbitrary pick (and a ``check`` error);
    here the first by name, so the answer is at least stable."""
    found = [p for p in _policies(policies) if p.applies_to(kind, name, queue_type)]
    if not found:
        return None
    return min(found, key=lambda p: (-p.priority, p.name))


def queue_policies(spec: Spec, queue: Queue) -> tuple[Policy | None, Policy | None]:
    """The user policy and the operator policy the broker applies to ``queue``.

    Once per queue of a spec (checks, routing's dead-letter hops and the effective
    settings all ask: at 20,000 queues, 800,000 pattern searches); a queue that is
    not the spec's own (by identity) is judged afresh.
    """
    memo = spec.derived(_queue_policies)
    known = memo.get(queue.name)
    if known is not None and known[0] is queue:
        return known[1]
    name = object_name(queue)
    found = (
        winning_policy(spec.policies, "queue", name, queue.type),
        winning_policy(spec.operator_policies, "queue", name, queue.type),
    )
    memo[queue.name] = (queue, found)
    return found


def _queue_policies(
    spec: Spec,
) -> dict[str, tuple[Queue, tuple[Policy | None, Policy | None]]]:
    return {}


def merged_policy_value(user: Policy | None, operator: Policy | None, key: str) -> Setting | None:
    """The user and operator policy's value of ``key``, merged as the broker merges
    them: the lesser of two numbers (operator policies set only numeric caps)."""
    mine = (
        Setting.of_policy(user.definition[key], user) if user and key in user.definition else None
    )
    theirs = (
        Setting.of_policy(operator.definition[key], operator, operator=True)
        if operator and key in operator.definition
        else None
    )
    if mine is None or theirs is None:
        return mine or theirs
    return theirs if _lesser(theirs.value, mine.value) else mine


def _lesser(a: ArgValue, b: ArgValue) -> bool:
    """``a < b`` for two numbers; anything else is not lesser."""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    return numbers and a < b  # type: ignore[operator]


def resolve(winner: Winner, argument: Setting, policy: Setting) -> Setting:
    """Which of an x-argument and a policy value takes effect under ``winner``
    (the argument on a tie of ``LESSER``)."""
    if winner is Winner.ARGUMENT:
        return argument
    if winner is Winner.POLICY:
        return policy
    return policy if _lesser(policy.value, argument.value) else argument


def effective(spec: Spec, queue_name: str) -> Mapping[str, Setting]:
    """The queue's effective settings (broker keys without ``x-``) and their sources,
    with the broker's precedence: its arguments, the winning user and operator
    policy merged, then ``PRECEDENCE`` where both set a key.  A policy key the
    queue's type does not take is left out, as the broker ignores it there.
    Once per queue of a spec (routing asks again at every dead-letter hop)."""
    memo = spec.derived(_effective)
    found = memo.get(queue_name)
    if found is None:
        found = memo[queue_name] = _settings(spec, spec.queues[queue_name])
    return found


def _effective(spec: Spec) -> dict[str, Mapping[str, Setting]]:
    return {}


def _settings(spec: Spec, queue: Queue) -> Mapping[str, Setting]:
    found: dict[str, Setting] = {
        name.removeprefix("x-"): Setting(value, "argument")
        for name, value in queue.arguments.items()
    }
    user, operator = queue_policies(spec, queue)
    keys = dict.fromkeys(
        [*(user.definition if user else ()), *(operator.definition if operator else ())]
    )
    for key in keys:
        policy_key = POLICY_KEYS.get(key)
        if policy_key is None or queue.type not in policy_key.queue_types:
            continue
        merged = merged_policy_value(user, operator, key)
        if merged is None:
            continue
        argument = found.get(key)
        if argument is None:
            found[key] = merged
        else:
            winner = PRECEDENCE.get(key, {}).get(queue.type.value, Winner.ARGUMENT)
            found[key] = resolve(winner, argument, merged)
    return MappingProxyType(found)


def effective_exchange(spec: Spec, exchange_name: str) -> Mapping[str, Setting]:
    """The exchange's effective settings: its arguments, then its winning policy's
    exchange keys, the argument winning as ``PRECEDENCE`` says.  A built-in exchange
    (``amq.topic``, ...) has no arguments but takes policies; the default exchange
    ``""`` routes by queue name only and takes neither.  Once per exchange of a spec
    (routing asks at every hop)."""
    memo = spec.derived(_effective_exchange)
    found = memo.get(exchange_name)
    if found is None:
        found = memo[exchange_name] = _exchange_settings(spec, exchange_name)
    return found


def _effective_exchange(spec: Spec) -> dict[str, Mapping[str, Setting]]:
    return {}


def _exchange_settings(spec: Spec, exchange_name: str) -> Mapping[str, Setting]:
    declared = spec.exchanges.get(exchange_name)
    arguments = declared.arguments if declared is not None else {}
    found: dict[str, Setting] = {
        name: Setting(value, "argument") for name, value in arguments.items()
    }
    if exchange_name == "":
        return MappingProxyType(found)
    policy = winning_policy(spec.policies, "exchange", exchange_name)
    if policy is not None:
        for key, value in policy.definition.items():
            policy_key = POLICY_KEYS.get(key)
            if policy_key is None or not policy_key.exchanges:
                continue
            setting = Setting.of_policy(value, policy)
            argument = found.get(key)
            winner = PRECEDENCE.get(key, {}).get("exchange", Winner.ARGUMENT)
            found[key] = setting if argument is None else resolve(winner, argument, setting)
    return MappingProxyType(found)


def _text(setting: Setting | None) -> Setting | None:
    return setting if setting is not None and isinstance(setting.value, str) else None


def dead_letter_of(spec: Spec, queue_name: str) -> tuple[Setting | None, Setting | None]:
    """The queue's effective dead-letter exchange and dead-letter routing key (each from
    its argument or a policy, resolved on its own as the broker does); ``None`` where
    unset.  An exchange of ``""`` is the default exchange."""
    settings = effective(spec, queue_name)
    return (
        _text(settings.get("dead-letter-exchange")),
        _text(settings.get("dead-letter-routing-key")),
    )


def alternate_of(spec: Spec, exchange_name: str) -> Setting | None:
    """The exchange's effective alternate exchange (argument or policy), if any."""
    return _text(effective_exchange(spec, exchange_name).get("alternate-exchange"))
