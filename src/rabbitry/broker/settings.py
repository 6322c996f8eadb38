"""A queue's effective settings from what the broker has: its row and its vhost's policies.

``spec.policies`` holds the broker's policy rules (which policy wins, how a
user and an operator policy merge, who wins against an x-argument); this
module applies them to a queue as the management API lists it, so that
``plan`` (each queue's settings after an apply) and ``tail`` (the delivery
limit and dead-letter exchange a look meets) read the same answer from one
place instead of walking the rows each its own way.

The one thing the rows cannot settle by rule is a tie: of user policies of
equal priority the broker applies one it picks arbitrarily.  The queue row's
``policy`` names the one applied (``QueueState.policy``); ``named`` passes it
in.  A caller that cannot trust a name can ask ``tied_policies`` who the
candidates are and weigh each one (``tail`` does, to stay on the safe side).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from rabbitry.broker.state import QueueState
from rabbitry.spec import Policy, Queue, QueueType, Spec
from rabbitry.spec.policies import Setting, effective, winning_policy

__all__ = ["effective_settings", "queue_type", "tied_policies"]


def queue_type(queue: QueueState) -> QueueType | None:
    """The queue's type as the rules know it (``None``: a type this rabbitry has no rules for)."""
    try:
        return QueueType(queue.type)
    except ValueError:
        return None


def effective_settings(
    queue: QueueState,
    users: Mapping[str, Policy],
    operators: Mapping[str, Policy],
    *,
    named: str | None = None,
) -> Mapping[str, Setting]:
    """``spec.policies.effective`` for one queue on the broker (broker keys without ``x-``).

    ``users`` and ``operators`` are the vhost's user and operator policies (or
    any superset of those that reach the queue); ``named`` is the user policy
    the broker says it applies, which settles a tie of equal priorities when it
    is one of the tied (otherwise the first by name stands in, as
    ``winning_policy`` says).  A queue of a type this rabbitry does not know
    has no rules, hence no settings.
    """
    kind = queue_type(queue)
    if kind is None:
        return {}
    arguments = queue.declare_arguments()
    arguments.pop("x-queue-type", None)
    winner = winning_policy(users, "queue", queue.name, kind)
    if winner is None and winning_policy(operators, "queue", queue.name, kind) is None:
        # No policy reaches it (the common case, and a no-op plan's): its arguments.
        return {k.removeprefix("x-"): Setting(v, "argument") for k, v in arguments.items()}
    chosen = users.get(named) if named is not None else None
    if (
        winner is not None
        and chosen is not None
        and chosen.priority == winner.priority
        and chosen.applies_to("queue", queue.name, kind)
    ):
        users = {chosen.name: chosen}
    model = Spec(
        Path("."),
        queues={queue.name: Queue(queue.name, kind, arguments=arguments)},
        policies=users,
        operator_policies=operators,
    )
    return effective(model, queue.name)


def tied_policies(queue: QueueState, policies: Iterable[Policy]) -> tuple[Policy, ...]:
    """The policies the broker may apply to ``queue``: every one that applies and has the
    winner's priority, by name (one, or none, unless priorities tie)."""
    kind = queue_type(queue)
    found = list(policies)
    winner = winning_policy(found, "queue", queue.name, kind) if kind is not None else None
    if winner is None:
        return ()
    return tuple(
        sorted(
            (
                p
                for p in found
                if p.priority == winner.priority and p.applies_to("queue", queue.name, kind)
            ),
            key=lambda p: p.name,
        )
    )
