"""Carry out a plan's policy changes through the management API.

Policies live only in the management API (``PUT``/``DELETE``
``/api/policies/{vhost}/{name}`` and ``/api/operator-policies/...``); AMQP has
no verb for them.  A ``PUT`` creates or updates in place: the broker re-applies
the policy to every matching queue and exchange at once, and a queue keeps its
messages and consumers.  A policy may name a queue or exchange that does not
exist yet (it applies to objects created later too), so these changes need no
order against the AMQP ones; ``broker.apply`` writes them first.

Writing user policies needs the ``policymaker`` (or ``administrator``) tag,
operator policies ``administrator``; the 401 says which.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from urllib.parse import quote

from rabbitry.broker.management import send
from rabbitry.broker.plan import POLICY_KINDS, Action, Change, Kind, Plan
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import first_broker_error

__all__ = ["carry_out", "split"]

#: Requests in flight at once: each is one HTTP round trip and one broker update.
_CONCURRENCY = 8


def split(plan: Plan) -> tuple[Plan, tuple[Change, ...]]:
    """``plan`` without its policy changes (for the AMQP executor), and those changes."""
    rest = tuple(c for c in plan.changes if c.kind not in POLICY_KINDS)
    policies = tuple(c for c in plan.changes if c.kind in POLICY_KINDS)
    return Plan(rest, plan.unmanaged, plan.settings), policies


async def carry_out(changes: Iterable[Change], url: BrokerURL, *, timeout: float) -> int:
    """Create, update or delete each policy of ``changes``; how many were carried out.

    Every call is idempotent, so a run cut short converges when run again; the
    first error stops the run and is raised (a ``BrokerError`` naming the policy).
    """
    todo = list(changes)
    if not todo:
        return 0
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def one(change: Change) -> None:
        async with limit:
            await _send(change, url, timeout)

    try:
        async with asyncio.TaskGroup() as group:
            for change in todo:
                group.create_task(one(change))
    except BaseExceptionGroup as failures:
        raise first_broker_error(failures) from None
    return len(todo)


async def _send(change: Change, url: BrokerURL, timeout: float) -> None:
    operator = change.kind is Kind.OPERATOR_POLICY
    collection = "operator-policies" if operator else "policies"
    path = f"/api/{collection}/{quote(url.vhost, safe='')}/{quote(change.name, safe='')}"
    what = f"{'operator policy' if operator else 'policy'} {change.name!r}"
    tag = "administrator" if operator else "policymaker"
    if change.action is Action.DELETE:
        await send(url, "DELETE", path, timeout=timeout, what=what, needs_tag=tag)
        return
    assert change.policy is not None, change
    body = change.policy.body()
    await send(url, "PUT", path, timeout=timeout, body=body, what=what, needs_tag=tag)
