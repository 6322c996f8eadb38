"""What RabbitMQ 4 refuses or changes, as data: one table, read by ``check`` and ``plan``.

Each row (``Rule``) is one feature a spec can use, where the spec uses it
(``Trigger``), and what the broker does with it from which version on
(``Step``s): ignores it, changes what it means, or refuses it.  ``check``
warns of every row a spec triggers, naming the version it matters from; the
row is an error where the broker refuses it from the version the spec targets
(``rabbitmq: "4.3"``, the oldest broker it must work on) or, in ``plan``, from
the version the live broker runs (``judge``).

Every step was read in the RabbitMQ server's source (github.com/rabbitmq/
rabbitmq-server, at the tag named in its ``source``), not only in FIELD-NOTES;
where the source and the release notes disagree, the row says so and takes the
stricter reading.  RabbitMQ 3.10.8 is the only broker here: no 4.x answer is
pinned by a test on a broker.

One 4.0 change has no place in a spec and is not a row: ``max_message_size``
defaults to 16 MiB (``deps/rabbit/Makefile`` at v4.0.0; 128 MiB before), above
the 4 MiB the runtime sends and accepts (``messaging._decode.MAX_BODY``), so
rabbitry's publisher refuses a body before the broker would
(``MAX_MESSAGE_SIZE`` holds the figure; a test keeps ``MAX_BODY`` under it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from rabbitry.spec.arguments import QUEUE_ARGUMENTS
from rabbitry.spec.diagnostics import Code, Diagnostic
from rabbitry.spec.model import ArgValue, Location, Policy, Queue, QueueType, Spec
from rabbitry.spec.policies import dead_letter_of

__all__ = [
    "MAX_MESSAGE_SIZE",
    "RULES",
    "Found",
    "Place",
    "Rule",
    "Step",
    "Trigger",
    "Version",
    "check_rabbitmq4",
    "findings",
    "judge",
    "parse_version",
    "shown",
]

#: ``(major, minor)`` of a RabbitMQ release.
Version = tuple[int, int]

#: RabbitMQ 4.0's default ``max_message_size`` (``deps/rabbit/Makefile`` at v4.0.0).
MAX_MESSAGE_SIZE = 16 * 1024 * 1024


class Place(StrEnum):
    """Where in a spec a rule looks."""

    #: A queue's x-argument (raw or sugar), ``Trigger.keys`` naming it.
    QUEUE_ARGUMENT = "queue argument"
    #: A key of a policy's or operator policy's definition (raw or sugar).
    POLICY_KEY = "policy key"
    #: A queue that is neither durable nor exclusive.
    TRANSIENT_QUEUE = "transient queue"
    #: A quorum queue whose effective dead-letter exchange (argument or policy) is unset.
    QUORUM_WITHOUT_DEAD_LETTER = "quorum queue without dead-letter exchange"


@dataclass(frozen=True)
class Trigger:
    """What a rule looks for: ``keys`` at ``place``, holding one of ``values`` (any: ``None``)."""

    place: Place
    keys: tuple[str, ...] = ()
    values: tuple[ArgValue, ...] | None = None

    def holds(self, value: ArgValue) -> bool:
        """``value`` is one of ``values``; ``True`` is never ``1`` here, as Python's ``==`` says."""
        if self.values is None:
            return True
        return any(type(v) is type(value) and v == value for v in self.values)


@dataclass(frozen=True)
class Step:
    """From ``version`` on, the broker ``does`` this (a phrase after "RabbitMQ 4.0 ...")."""

    version: Version
    does: str
    refuses: bool = False
    #: Where this was read: file and tag of rabbitmq-server.
    source: str = ""


@dataclass(frozen=True)
class Rule:
    """One row: a feature, where a spec has it, what each version does, what to do."""

    feature: str
    trigger: Trigger
    steps: tuple[Step, ...]
    remedy: str

    @property
    def matters_from(self) -> Version:
        return self.steps[0].version

    @property
    def refused_from(self) -> Version | None:
        return next((s.version for s in self.steps if s.refuses), None)

    def refused_on(self, version: Version | None) -> bool:
        """A broker of ``version`` refuses it (unknown version: not known to refuse)."""
        refused = self.refused_from
        return version is not None and refused is not None and version >= refused

    def story(self) -> str:
        """Every step, oldest first: ``RabbitMQ 4.0 ignores it; 4.3 refuses it: ...``."""
        parts = [f"{shown(s.version)} {s.does}" for s in self.steps]
        return "RabbitMQ " + "; ".join(parts)


_HA_KEYS = (
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-sync-batch-size",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
)
_MIGRATE = (
    "; on a live queue that means replacing it: `rabbitry apply --migrate` keeps its messages"
)

#: The table.  A refusal at declare time closes the channel (406) or, for a
#: deprecated feature that is denied, the whole connection (541 INTERNAL_ERROR:
#: ``{protocol_error, internal_error, ...}``, a hard error by
#: ``deps/rabbit_common/src/rabbit_framing_amqp_0_9_1.erl`` at v4.3.0); a policy
#: the broker refuses is a 400 from the management API.
RULES: tuple[Rule, ...] = (
    Rule(
        "x-queue-mode",
        Trigger(Place.QUEUE_ARGUMENT, ("x-queue-mode",)),
        (
            Step(
                (3, 12),
                "ignores it: a classic queue has one mode",
                source="deps/rabbit/src/rabbit_variable_queue.erl at v3.12.0 "
                "(set_queue_mode does nothing)",
            ),
            Step(
                (4, 3),
                "refuses it: declaring the queue fails",
                refuses=True,
                # The 4.3.0 release notes ("CQv1 is removed": "x-queue-mode set to any
                # value" fails) and commit a67de22527 say so; v4.3.0's rabbit_amqqueue.erl
                # only stopped checking its value, and rabbit_classic_queue.erl still
                # lists it.  The stricter reading is taken: it does nothing anyway.
                source="release-notes/4.3.0.md at v4.3.0",
            ),
        ),
        "remove `queue_mode` (x-queue-mode): it has done nothing since 3.12" + _MIGRATE,
    ),
    Rule(
        "queue-mode",
        Trigger(Place.POLICY_KEY, ("queue-mode",)),
        (
            Step(
                (3, 12),
                "ignores it: a classic queue has one mode (4.3 still accepts the key)",
                source="deps/rabbit/src/rabbit_variable_queue.erl at v3.12.0; "
                "deps/rabbit/src/rabbit_policies.erl at v4.3.0",
            ),
        ),
        "remove `queue_mode` from the policy (a policy changes in place)",
    ),
    Rule(
        "x-queue-version: 1",
        Trigger(Place.QUEUE_ARGUMENT, ("x-queue-version",), (1,)),
        (
            Step(
                (4, 0),
                "ignores it: every classic queue is version 2",
                source="deps/rabbit/src/rabbit_variable_queue.erl at v4.0.0 "
                "(set_queue_version does nothing)",
            ),
            Step(
                (4, 3),
                "refuses it: the declare fails with 406 PRECONDITION_FAILED "
                "(unsupported queue version '1')",
                refuses=True,
                source="deps/rabbit/src/rabbit_amqqueue.erl at v4.3.0 (check_queue_version)",
            ),
        ),
        "use `x-queue-version: 2` or remove it" + _MIGRATE,
    ),
    Rule(
        "queue-version: 1",
        Trigger(Place.POLICY_KEY, ("queue-version",), (1,)),
        (
            Step(
                (4, 0),
                "ignores it: every classic queue is version 2 (4.3 still accepts the key)",
                source="deps/rabbit/src/rabbit_variable_queue.erl at v4.0.0; "
                "deps/rabbit/src/rabbit_policies.erl at v4.3.0",
            ),
        ),
        "set `queue-version: 2` or remove it from the policy (a policy changes in place)",
    ),
    Rule(
        "classic mirroring (ha-*)",
        Trigger(Place.POLICY_KEY, _HA_KEYS),
        (
            Step(
                (4, 0),
                "has no classic mirroring and refuses the policy: the management API "
                "answers 400 (not recognised policy settings)",
                refuses=True,
                source="deps/rabbit/src/rabbit_mirror_queue_misc.erl at v4.0.0 (no validator "
                "registered; deprecation_phase removed), rabbit_policy.erl",
            ),
        ),
        "remove the ha-* keys; to replicate a queue make it `type: quorum` (a new queue: "
        "`rabbitry apply --migrate` keeps its messages)",
    ),
    Rule(
        "x-queue-master-locator",
        Trigger(Place.QUEUE_ARGUMENT, ("x-queue-master-locator",)),
        (
            Step(
                (4, 0),
                "deprecates it",
                source="deps/rabbit/src/rabbit_queue_location.erl at v4.0.0",
            ),
            Step(
                (4, 3),
                "refuses it: the declare closes the connection (541 INTERNAL_ERROR)",
                refuses=True,
                source="deps/rabbit/src/rabbit_classic_queue.erl at v4.3.0 "
                "(validate_arguments; queue_master_locator denied_by_default)",
            ),
        ),
        "remove it (a classic queue lives on the node that declares it)" + _MIGRATE,
    ),
    Rule(
        "queue-master-locator",
        Trigger(Place.POLICY_KEY, ("queue-master-locator",)),
        (
            Step(
                (4, 0),
                "deprecates it",
                source="deps/rabbit/src/rabbit_queue_location.erl at v4.0.0",
            ),
            Step(
                (4, 3),
                "refuses the policy: the management API answers 400 (use of deprecated "
                "queue-master-locator argument is not permitted)",
                refuses=True,
                source="deps/rabbit/src/rabbit_classic_queue.erl at v4.3.0 (validate_policy)",
            ),
        ),
        "use `leader_locator` (queue-leader-locator) in the policy instead",
    ),
    Rule(
        "x-max-in-memory-length/-bytes",
        Trigger(Place.QUEUE_ARGUMENT, ("x-max-in-memory-length", "x-max-in-memory-bytes")),
        (
            Step(
                (4, 0),
                "ignores it: a quorum queue keeps no messages in memory by count or size",
                source="deps/rabbit/src/rabbit_quorum_queue.erl at v4.0.0 (ra_machine_config "
                "no longer reads it; still accepted at v4.3.0)",
            ),
        ),
        "remove it" + _MIGRATE,
    ),
    Rule(
        "max-in-memory-length/-bytes",
        Trigger(Place.POLICY_KEY, ("max-in-memory-length", "max-in-memory-bytes")),
        (
            Step(
                (4, 0),
                "ignores it: a quorum queue keeps no messages in memory by count or size "
                "(4.3 still accepts the key)",
                source="deps/rabbit/src/rabbit_quorum_queue.erl at v4.0.0; "
                "deps/rabbit/src/rabbit_policies.erl at v4.3.0",
            ),
        ),
        "remove it from the policy (a policy changes in place)",
    ),
    Rule(
        "a transient non-exclusive queue (durable: false)",
        Trigger(Place.TRANSIENT_QUEUE),
        (
            Step(
                (4, 3),
                "refuses it: the declare closes the connection (541 INTERNAL_ERROR)",
                refuses=True,
                source="deps/rabbit/src/rabbit_amqqueue.erl at v4.3.0 "
                "(transient_nonexcl_queues denied_by_default)",
            ),
        ),
        "make it durable (remove `durable: false`), or `exclusive: true` if only its "
        "consumer's connection uses it" + _MIGRATE,
    ),
    Rule(
        "a quorum queue without a dead-letter exchange",
        Trigger(Place.QUORUM_WITHOUT_DEAD_LETTER),
        (
            Step(
                (4, 0),
                "drops a message once it has been delivered delivery-limit times, which is "
                "20 when unset (before 4.0, unset meant redelivered for ever)",
                source="deps/rabbit/src/rabbit_quorum_queue.erl at v4.0.0 "
                "(DEFAULT_DELIVERY_LIMIT 20)",
            ),
        ),
        "add `dead_letter: EXCHANGE` with a queue bound to it, and a `delivery_limit` "
        "(on the queue or, to change them in place, in a policy)",
    ),
)


def shown(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


def parse_version(text: str | None) -> Version | None:
    """``"3.10.8"`` (or ``"4.1.0-rc.1"``, ``"4.2.0+3.gdeadbee"``) → ``(3, 10)``; else ``None``."""
    found = _VERSION.match(text or "")
    return (int(found[1]), int(found[2])) if found else None


_VERSION = re.compile(r"(\d+)\.(\d+)(?:[.+-]|$)")


@dataclass(frozen=True)
class Found:
    """A rule a spec triggers: which, where, and on what (``queue 'q'``, ``policy 'p'``)."""

    rule: Rule
    location: Location
    subject: str
    #: The spelling found (``x-queue-version: 1``, ``ha-mode``); the feature's name otherwise.
    spelling: str


def findings(spec: Spec) -> Iterator[Found]:
    """Every place ``spec`` triggers a rule, in table order, then spec order."""
    for rule in RULES:
        trigger = rule.trigger
        if trigger.place is Place.QUEUE_ARGUMENT:
            for queue in spec.queues.values():
                yield from _queue_arguments(rule, queue)
        elif trigger.place is Place.POLICY_KEY:
            for policy in (*spec.policies.values(), *spec.operator_policies.values()):
                yield from _policy_keys(rule, policy)
        elif trigger.place is Place.TRANSIENT_QUEUE:
            for queue in spec.queues.values():
                if not queue.durable and not queue.exclusive:
                    where = queue.locs.of("durable") if "durable" in queue.locs.fields else None
                    yield Found(rule, where or queue.locs.where, _queue(queue), rule.feature)
        else:
            for queue in spec.queues.values():
                if queue.type is QueueType.QUORUM and dead_letter_of(spec, queue.name)[0] is None:
                    yield Found(rule, queue.locs.where, _queue(queue), rule.feature)


def _queue(queue: Queue) -> str:
    return f"queue {queue.name!r}"


def _policy(policy: Policy) -> str:
    return f"{'operator policy' if policy.operator else 'policy'} {policy.name!r}"


def _spelling(key: str, value: ArgValue, trigger: Trigger) -> str:
    return key if trigger.values is None else f"{key}: {value!r}"


def _queue_arguments(rule: Rule, queue: Queue) -> Iterator[Found]:
    for key in rule.trigger.keys:
        if key not in queue.arguments or not rule.trigger.holds(queue.arguments[key]):
            continue
        known = QUEUE_ARGUMENTS.get(key)
        sugar = known.sugar if known is not None else None
        field = sugar if sugar and sugar in queue.locs.fields else "arguments"
        spelling = _spelling(key, queue.arguments[key], rule.trigger)
        yield Found(rule, queue.locs.of(field), _queue(queue), spelling)


def _policy_keys(rule: Rule, policy: Policy) -> Iterator[Found]:
    for key in rule.trigger.keys:
        if key not in policy.definition or not rule.trigger.holds(policy.definition[key]):
            continue
        where = policy.locs.of(f"definition.{key}", key=True)
        spelling = _spelling(key, policy.definition[key], rule.trigger)
        yield Found(rule, where, _policy(policy), spelling)


def judge(found: Found, version: Version | None, *, running: str | None = None) -> Diagnostic:
    """``found`` as a finding against a broker of ``version``: an error where that broker
    refuses it, else a warning naming the version it matters from.

    ``version`` is what the spec targets (``rabbitmq:``), or with ``running`` (the
    version string the live broker gave) what ``plan``'s broker runs.
    """
    rule = found.rule
    what = f"{found.subject}: {found.spelling}"
    if rule.refused_on(version):
        assert version is not None
        refusal = next(s for s in rule.steps if s.refuses)
        against = (
            f"the broker runs RabbitMQ {running}"
            if running is not None
            else f'the spec targets RabbitMQ {shown(version)} (`rabbitmq: "{shown(version)}"`)'
        )
        # Judged against the live broker, check (without `rabbitmq:`) only warned of it.
        also = f'; `rabbitmq: "{shown(version)}"` makes check say so too' if running else ""
        return Diagnostic(
            found.location,
            Code.RABBITMQ_REFUSED,
            f"{what}: RabbitMQ {shown(refusal.version)} {refusal.does}; {against}",
            rule.remedy + also,
        )
    return Diagnostic(
        found.location,
        Code.RABBITMQ_4,
        f"{what}: {rule.story()}",
        rule.remedy,
    )


def check_rabbitmq4(spec: Spec) -> Iterator[Diagnostic]:
    """``check``'s findings: each rule the spec triggers, judged against ``rabbitmq:``."""
    for found in findings(spec):
        yield judge(found, spec.rabbitmq)
