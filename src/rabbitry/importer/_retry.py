"""Retry queues found on a broker, folded back into the ``retry:`` of their queue.

A spec's ``retry: [5s, 30s]`` on queue ``Q`` makes one queue per delay
(``spec._retry``): ``Q.retry.5s``, durable, of ``Q``'s type (quorum stays
quorum, the rest classic), with exactly three arguments: ``x-message-ttl`` =
the delay in ms, ``x-dead-letter-exchange`` = ``""`` and
``x-dead-letter-routing-key`` = ``Q``.  Importing a vhost that ``apply`` made
from such a spec should give the spec back, so a queue that is exactly such a
retry queue of a queue being imported becomes a delay of that queue's
``retry:`` instead of a queue of its own.

Anything that differs in the least stays a plain queue, with a note saying why
when its name claims to be a retry queue: another TTL than its name's label, a
fourth argument, a binding from an exchange (a spec's retry queue has none: a
message reaches it only from its consumer), another type or durability.

What the broker cannot say is the order of the tries: a retry queue holds one
delay, and the consumer chooses which to use next.  Delays are folded shortest
first, the usual back-off, and the note says that the order is a guess when
there is more than one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from rabbitry.broker.state import QueueState
from rabbitry.spec._retry import MAX_DELAY_MS, MAX_RETRIES, retry_queue
from rabbitry.spec.model import Queue, QueueType, retry_label

__all__ = ["Folded", "fold_retries"]

_RETRY_INFIX = ".retry."


@dataclass(frozen=True)
class Folded:
    """What folding found: each queue's delays (ms, shortest first), the retry queues
    folded into them, and one note per queue that gained ``retry:`` or per queue named
    like a retry queue that was kept."""

    delays: Mapping[str, tuple[int, ...]]
    folded: frozenset[str]
    notes: tuple[str, ...]


def fold_retries(
    queues: Mapping[str, QueueState],
    arguments: Mapping[str, Mapping[str, object]],
    bound: Collection[str],
) -> Folded:
    """Which of ``queues`` (the queues being imported; ``arguments`` their declare
    arguments without ``x-queue-type``) are retry queues of another of them.
    ``bound``: the queues some exchange other than the default one binds."""
    found: dict[str, list[tuple[int, str]]] = {}
    kept: list[str] = []
    for name, queue in sorted(queues.items()):
        owner = _owner(name, queues)
        if owner is None:
            continue
        why = _why_not(queue, arguments[name], queues[owner], name in bound)
        if why is None:
            ttl = arguments[name]["x-message-ttl"]
            assert isinstance(ttl, int)
            found.setdefault(owner, []).append((ttl, name))
        else:
            kept.append(
                f"queue {name!r} is named like a retry queue of {owner!r} but kept as a "
                f"queue of its own: {why}"
            )
    # A queue that is itself folded cannot retry (the spec makes its retry queues plain).
    candidates = {name for pairs in found.values() for _, name in pairs}
    for owner in [o for o in found if o in candidates]:
        for _, name in found.pop(owner):
            kept.append(
                f"queue {name!r} is named like a retry queue of {owner!r} but kept as a "
                f"queue of its own: {owner!r} is itself a retry queue, which has no retries"
            )
    delays: dict[str, tuple[int, ...]] = {}
    folded: set[str] = set()
    notes: list[str] = []
    for owner, pairs in sorted(found.items()):
        pairs.sort()
        taken, rest = pairs[:MAX_RETRIES], pairs[MAX_RETRIES:]
        for _, name in rest:
            kept.append(
                f"queue {name!r} kept as a queue of its own: {owner!r} already has "
                f"{MAX_RETRIES} retry delays, the most a spec allows"
            )
        delays[owner] = tuple(ms for ms, _ in taken)
        folded.update(name for _, name in taken)
        labels = ", ".join(retry_label(ms) for ms, _ in taken)
        names = ", ".join(repr(n) for _, n in taken)
        note = (
            f"{'queues' if len(taken) > 1 else 'queue'} {names} folded into queue {owner!r} as "
            f"`retry: [{labels}]`: a retry queue holds failed messages for its TTL and "
            f"dead-letters them back to {owner!r}, as `retry:` makes it"
        )
        if len(taken) > 1:
            note += (
                "; the order of the tries is a guess (shortest delay first): the broker "
                "does not record it, so reorder `retry:` if the consumer retries otherwise"
            )
        notes.append(note)
    return Folded(delays, frozenset(folded), tuple(notes + kept))


def _owner(name: str, queues: Mapping[str, QueueState]) -> str | None:
    """The longest imported queue ``Q`` with ``name`` = ``Q.retry.<label>``, if any."""
    at = name.rfind(_RETRY_INFIX)
    while at > 0:
        if name[:at] in queues:
            return name[:at]
        at = name.rfind(_RETRY_INFIX, 0, at)
    return None


def _why_not(
    queue: QueueState, arguments: Mapping[str, object], owner: QueueState, bound: bool
) -> str | None:
    """Why ``queue`` is not exactly a retry queue of ``owner``; ``None`` if it is.  What it
    must be is what the spec would make (``spec._retry.retry_queue``), not described here."""
    if owner.type not in ("classic", "quorum"):
        return f"{owner.name!r} is a {owner.type} queue, which cannot retry"
    ttl = arguments.get("x-message-ttl")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_DELAY_MS:
        return f"its x-message-ttl is {ttl!r}, not a delay of 1 to {MAX_DELAY_MS} ms"
    made = retry_queue(Queue(owner.name, QueueType(owner.type)), ttl)
    if queue.name != made.name:
        return f"its x-message-ttl {ttl} ms would make it {made.name!r}"
    wanted = dict(made.arguments)
    if dict(arguments) != wanted:
        return (
            f"its arguments {dict(sorted(arguments.items()))} are not exactly those of a "
            f"retry queue ({wanted})"
        )
    if queue.type != made.type.value:
        return f"it is a {queue.type} queue, where a retry queue of {owner.name!r} is {made.type}"
    if (queue.durable, queue.auto_delete, queue.exclusive) != (
        made.durable,
        made.auto_delete,
        made.exclusive,
    ):
        return "a retry queue is durable, and neither auto-deletes nor is exclusive"
    if bound:
        return "an exchange binds it, and a retry queue is reached from its consumer only"
    return None
