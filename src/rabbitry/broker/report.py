"""A plan, written for people: one line per change, its fields old → new below it;
each queue's effective settings with their sources; the same as JSON."""

from __future__ import annotations

from typing import Any

from rabbitry.broker.plan import POLICY_KINDS, Action, Change, Kind, Plan, count_of

__all__ = ["plan_lines", "settings_json", "settings_lines", "summary", "unseen_lines"]

_MARK = {Action.CREATE: "+", Action.REPLACE: "~", Action.UPDATE: "~", Action.DELETE: "-"}


def _properties(change: Change) -> str:
    if change.kind is Kind.EXCHANGE and change.exchange is not None:
        e = change.exchange
        flags = [e.type, "durable" if e.durable else "transient"]
        flags += ["auto-delete"] * e.auto_delete + ["internal"] * e.internal
        return " (" + ", ".join(flags) + ")"
    if change.kind is Kind.QUEUE and change.queue is not None and change.action is Action.CREATE:
        q = change.queue
        flags = [q.type, "durable" if q.durable else "transient"]
        flags += [f"{k}={v}" for k, v in q.arguments]
        return " (" + ", ".join(flags) + ")"
    if change.kind in POLICY_KINDS and change.policy is not None and change.action is Action.CREATE:
        p = change.policy
        definition = ", ".join(f"{k}={v}" for k, v in p.definition)
        return f" (pattern {p.pattern}, apply to {p.apply_to}, priority {p.priority}: {definition})"
    return ""


def plan_lines(plan: Plan) -> list[str]:
    """Every change, in the order apply carries them out."""
    lines: list[str] = []
    for change in plan.changes:
        # A rebind is part of a replace, not something new: it gets the replace's mark.
        mark = "~" if change.remade_with is not None else _MARK[change.action]
        lines.append(f"  {mark} {change.describe()}{_properties(change)}")
        lines.extend(f"      {field.describe()}" for field in change.fields)
    return lines


def unseen_lines(plan: Plan) -> list[str]:
    """What plan could not see because its cluster node is down, one line each (``?``):
    apply leaves them alone."""
    return [f"  ? not seen: {u.describe()}" for u in plan.unseen]


def summary(plan: Plan) -> str:
    counts = plan.counts()
    text = (
        f"{counts['create']} to create, {counts['update']} to update in place, "
        f"{counts['replace']} to replace, {counts['delete']} to delete"
    )
    if plan.unmanaged:
        text += (
            f"; {count_of(len(plan.unmanaged), 'object')} on the broker "
            f"{'is' if len(plan.unmanaged) == 1 else 'are'} not in the spec "
            "(left alone; --prune deletes them)"
        )
    if plan.unseen:
        nodes = sorted({u.node for u in plan.unseen})
        text += (
            f"; {count_of(len(plan.unseen), 'object')} not seen: "
            f"node{'s' if len(nodes) > 1 else ''} {', '.join(nodes)} "
            f"{'are' if len(nodes) > 1 else 'is'} down (left alone)"
        )
    return text + "."


def settings_lines(plan: Plan) -> list[str]:
    """Each queue that has settings: ``key=value (source)``, keys sorted.

    The values are those in force once the plan is carried out; the source is
    ``argument``, ``policy:<name>`` or ``operator_policy:<name>``, with the
    broker's own precedence where several set a key (``spec.policies.PRECEDENCE``).
    """
    lines: list[str] = []
    for queue in sorted(plan.settings):
        found = plan.settings[queue]
        if not found:
            continue
        shown = ", ".join(f"{k}={found[k].value} ({found[k].source})" for k in sorted(found))
        lines.append(f"  {queue}: {shown}")
    return lines


def settings_json(plan: Plan) -> dict[str, dict[str, dict[str, Any]]]:
    """``settings_lines`` as data: queue → key → {"value", "source"}."""
    return {
        queue: {k: {"value": s.value, "source": s.source} for k, s in sorted(found.items())}
        for queue, found in sorted(plan.settings.items())
    }
