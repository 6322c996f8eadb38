"""Plan and apply, end to end: read the vhost, diff it with the spec, carry out the diff.

Given several URLs (``Endpoints``: the nodes of one broker), both use the first
node that answers, preferring one whose management API answers too
(``endpoints.first_answering``); ``Planned.url`` says which.

Before apply changes anything, an administrator's permissions are matched
against the plan (``broker.permissions``: only administrators may read them);
a plan with a change they forbid is refused whole, nothing made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from rabbitry.broker import live as live_state
from rabbitry.broker import policies
from rabbitry.broker.apply import ApplyResult, execute
from rabbitry.broker.endpoints import Endpoints, first_answering
from rabbitry.broker.live import MANAGEMENT, LiveState, Sighting, read_live
from rabbitry.broker.management import api_base
from rabbitry.broker.permissions import NAMED, forbidden, read_permissions
from rabbitry.broker.plan import (
    Action,
    Change,
    Kind,
    Plan,
    diff,
    refuse_what_the_broker_refuses,
)
from rabbitry.broker.state import BindingState, desired
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import AccessRefused, ManagementError, Option, Phrase
from rabbitry.spec import Spec

__all__ = ["Converged", "Looked", "Planned", "apply", "look", "plan"]


@dataclass(frozen=True)
class Planned:
    live: LiveState
    plan: Plan
    #: The broker read (of several URLs, the one used).
    url: BrokerURL


@dataclass(frozen=True)
class Converged:
    planned: Planned
    result: ApplyResult


@dataclass(frozen=True)
class Looked:
    """The vhost as the management API showed it before the spec was known (``look``)."""

    #: The broker read (of several URLs, the one used).
    url: BrokerURL
    seen: Sighting


async def look(url: BrokerURL | Endpoints, *, timeout: float) -> Looked:
    """Read ``url``'s vhost through the management API, which needs no spec.

    ``plan`` and ``apply`` given what it returned (``looked=``) start from it:
    the command line reads the vhost while it reads and checks the spec, and
    the broker would otherwise sit idle (an error of either is raised, and
    nothing is changed).
    """
    if isinstance(url, Endpoints):
        url = await first_answering(url, timeout=timeout, management=True)
    return Looked(url, await live_state.look(url, timeout=timeout))


async def plan(
    spec: Spec,
    url: BrokerURL | Endpoints,
    *,
    prune: bool = False,
    timeout: float,
    looked: Looked | None = None,
) -> Planned:
    """What apply would change in ``url``'s vhost; changes nothing.

    ``looked``: what ``look`` read of it already (its URL is the one used).
    """
    if looked is not None:
        url = looked.url
    elif isinstance(url, Endpoints):
        url = await first_answering(url, timeout=timeout, management=True)
    seen = looked.seen if looked is not None else None
    live = await read_live(url, spec, timeout=timeout, seen=seen)
    # What the broker's version refuses (spec.rabbitmq4) stops plan, and so apply,
    # before anything is changed.
    refuse_what_the_broker_refuses(spec, live)
    if prune and not live.can_prune:
        raise ManagementError(
            Phrase.of(
                Option.PRUNE,
                " needs the management API to see what the spec does not have, and "
                f"{api_base(url) or 'its address is not known'} did not answer; enable it "
                "(rabbitmq-plugins enable "
                "rabbitmq_management) or pass ",
                Option.MANAGEMENT_URL,
            )
        )
    return Planned(live, diff(desired(spec), live.topology, spec, prune=prune), url)


async def apply(
    spec: Spec,
    url: BrokerURL | Endpoints,
    *,
    prune: bool = False,
    allow_data_loss: bool = False,
    migrate: bool = False,
    timeout: float,
    progress: Callable[[int, int], None] | None = None,
    looked: Looked | None = None,
) -> Converged:
    """Converge ``url``'s vhost to ``spec``; refuses data loss unless allowed.

    ``migrate``: replace queues with their messages and bindings kept (``broker.migrate``).
    ``looked``: as for ``plan``.
    """
    planned = await plan(spec, url, prune=prune, timeout=timeout, looked=looked)
    url = planned.url
    if (spec.policies or spec.operator_policies) and not planned.live.topology.sees_policies:
        # Nothing is changed: a half-applied spec without its policies (dead-letter
        # exchanges, limits) would run with settings nobody asked for.
        raise ManagementError(
            Phrase.of(
                "the spec has policies, which only the management API can read and write, "
                f"and {api_base(url) or 'the management API'} could not be used (",
                planned.live.fallback or "",
                "); nothing was changed: enable it (rabbitmq-plugins enable "
                "rabbitmq_management), give ",
                Option.MANAGEMENT_URL,
                ", or use a user with the management and policymaker tags",
            )
        )
    # Policies go through the management API, first (``broker.apply``: a refusal of
    # data loss stops the run before any policy is written).
    over_amqp, policy_changes = policies.split(planned.plan)
    if not planned.live.sees_bindings:
        over_amqp = _every_binding(over_amqp, spec)
    if planned.live.source == MANAGEMENT:
        await _refuse_what_is_forbidden(over_amqp, url, timeout)
    result = await execute(
        replace(over_amqp, changes=policy_changes + over_amqp.changes),
        url,
        allow_data_loss=allow_data_loss,
        migrate=migrate,
        timeout=timeout,
        progress=progress,
    )
    return Converged(planned, result)


async def _refuse_what_is_forbidden(plan: Plan, url: BrokerURL, timeout: float) -> None:
    """``AccessRefused`` naming every change the user's permissions forbid, before any is
    made; nothing when they cannot be read (only an administrator may: see
    ``broker.permissions``; apply then says what it made before a refusal)."""
    if plan.empty:
        return
    granted = await read_permissions(url, timeout=timeout)
    refused = forbidden(plan.changes, granted) if granted is not None else ()
    if not refused:
        return
    each = "; ".join(
        f"{f.change} needs {f.permission} on {f.resource} (the user's {f.permission} "
        f"permission is {f.pattern!r})"
        for f in refused[:NAMED]
    )
    more = f"; and {len(refused) - NAMED} more" if len(refused) > NAMED else ""
    raise AccessRefused(
        f"user {url.username!r} may not make {len(refused)} of the plan's changes on vhost "
        f"{url.vhost!r}: {each}{more}; nothing was changed: grant them (rabbitmqctl "
        f"set_permissions -p {url.vhost!r} {url.username} CONFIGURE WRITE READ) or apply as "
        "a user that has them"
    )


def _every_binding(plan: Plan, spec: Spec) -> Plan:
    """``plan`` with every binding of the spec declared, not only those it found missing.

    Read over AMQP, bindings are assumed present wherever both their ends
    exist; a binding deleted by hand would stay missing.  Declaring a binding
    that exists is a no-op, so apply declares them all.
    """
    planned = {c.binding for c in plan.changes if c.kind is Kind.BINDING}
    unseen = {u.binding for u in plan.unseen}  # to a queue whose node is down
    extra = tuple(
        Change(Action.CREATE, Kind.BINDING, b.describe(), binding=b)
        for b in sorted(desired(spec).bindings - planned, key=BindingState.sort_key)
        if b not in unseen
    )
    return replace(plan, changes=plan.changes + extra)
