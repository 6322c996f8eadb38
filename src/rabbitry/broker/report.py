"""A plan, written for people: one line per change, its fields old → new below it."""

from __future__ import annotations

from rabbitry.broker.plan import Action, Change, Kind, Plan

__all__ = ["plan_lines", "summary"]

_MARK = {Action.CREATE: "+", Action.REPLACE: "~", Action.DELETE: "-"}


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
    return ""


def plan_lines(plan: Plan) -> list[str]:
    """Every change, in the order apply carries them out."""
    lines: list[str] = []
    for change in plan.changes:
        lines.append(f"  {_MARK[change.action]} {change.describe()}{_properties(change)}")
        lines.extend(f"      {field.describe()}" for field in change.fields)
    return lines


def summary(plan: Plan) -> str:
    counts = plan.counts()
    text = (
        f"{counts['create']} to create, {counts['replace']} to replace, "
        f"{counts['delete']} to delete"
    )
    if plan.unmanaged:
        text += (
            f"; {len(plan.unmanaged)} object(s) on the broker are not in the spec "
            "(left alone; --prune deletes them)"
        )
    return text + "."
