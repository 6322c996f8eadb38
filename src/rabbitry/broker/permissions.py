"""Whether the user may carry out a plan, asked before apply changes anything.

RabbitMQ gives a user three regular expressions per vhost (``configure``,
``write``, ``read``), matched against resource names.  What each AMQP call of
apply needs (RabbitMQ's access-control guide):

- declaring or deleting an exchange or a queue: ``configure`` on it;
- binding or unbinding: ``write`` on the destination (queue or exchange),
  ``read`` on the source exchange.

Only the management API can tell a user's permissions, and only to an
*administrator* (3.10.8 answers ``/api/permissions/VHOST/USER``,
``/api/whoami`` aside, with 401 "Not administrator user" to everyone else;
over AMQP there is no way to ask at all).  So the check is made where it can
be: for an administrator it refuses the whole plan before the first change,
naming every change the permissions forbid.  Otherwise apply runs as before
and, when the broker refuses a change (403), its error lists the changes made
before the refusal (``apply.made_before``).

A permission is matched as RabbitMQ does, an unanchored search (Erlang's
``re:run``); the empty string is RabbitMQ's synonym for ``^$``.  A pattern
Python's ``re`` cannot compile is not judged (the broker has the last word).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from rabbitry.broker.plan import Change, Kind
from rabbitry.broker.url import BrokerURL

__all__ = ["Forbidden", "Permissions", "forbidden", "read_permissions"]

#: At most this many forbidden changes are named; the rest are counted.
NAMED = 10


@dataclass(frozen=True)
class Permissions:
    """A user's three patterns on one vhost, as RabbitMQ stores them."""

    configure: str
    write: str
    read: str

    def allows(self, permission: str, name: str) -> bool | None:
        """Whether ``permission`` is granted on resource ``name``; ``None``: not judged."""
        pattern = getattr(self, permission)
        if pattern == "":
            pattern = "^$"
        try:
            return re.search(pattern, name) is not None
        except re.error:
            return None


@dataclass(frozen=True)
class Forbidden:
    """A change the user may not make: what it is, and the permission it lacks."""

    change: str
    permission: str
    resource: str
    pattern: str


def needs(change: Change) -> tuple[tuple[str, str, str], ...]:
    """``(permission, kind, name)`` for each permission ``change``'s AMQP calls need."""
    if change.kind is Kind.BINDING:
        b = change.binding
        assert b is not None, change
        return (("write", b.destination_type, b.destination), ("read", "exchange", b.source))
    if change.kind in (Kind.EXCHANGE, Kind.QUEUE):
        return (("configure", change.kind.value, change.name),)
    return ()  # policies: the management API's tags, not these permissions


def forbidden(changes: Iterable[Change], permissions: Permissions) -> tuple[Forbidden, ...]:
    """Every change ``permissions`` forbid, with the first permission each lacks."""
    found = []
    for change in changes:
        for permission, kind, name in needs(change):
            if permissions.allows(permission, name) is False:
                found.append(
                    Forbidden(
                        f"{change.action.value} {change.kind.value} {change.name!r}",
                        permission,
                        f"{kind} {name!r}",
                        getattr(permissions, permission),
                    )
                )
                break
    return tuple(found)


async def read_permissions(url: BrokerURL, *, timeout: float) -> Permissions | None:
    """``url``'s user's permissions on its vhost, or ``None`` when they cannot be read
    (not an administrator, no management API, or no answer)."""
    from rabbitry.broker.management import read_object  # noqa: PLC0415 - httpx only when asked

    path = f"/api/permissions/{quote(url.vhost, safe='')}/{quote(url.username, safe='')}"
    row = await read_object(url, path, timeout=timeout)
    if not isinstance(row, Mapping):
        return None
    patterns = [row.get(key) for key in ("configure", "write", "read")]
    if not all(isinstance(p, str) for p in patterns):
        return None
    return Permissions(*(str(p) for p in patterns))
