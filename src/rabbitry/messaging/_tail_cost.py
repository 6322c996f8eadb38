"""What looking at a queue's messages costs, and how ``rabbitry tail`` finds out.

AMQP has no "peek": a client sees a message only by having it delivered,
and puts it back by returning it (``basic.nack``/``basic.reject`` with
requeue, or closing the channel with it unacknowledged).  What a return
costs depends on the queue type.  Measured on RabbitMQ 3.10.8
(tests/test_tail.py pins each):

- **quorum**: every return counts as a delivery attempt.  The message's
  ``x-delivery-count`` header goes up by one (a requeue by nack, by reject,
  by a closed channel, after ``basic.get`` or ``basic.consume`` alike), and
  once it exceeds the queue's delivery limit the broker dead-letters the
  message (``x-death`` reason ``delivery_limit``), or drops it when the queue
  has no dead-letter exchange.  So a message delivered with count ``d`` is
  dead-lettered by a look when ``d + 1 > limit``.  The limit is the lesser
  of the ``x-delivery-limit`` argument, the policy's and the operator
  policy's ``delivery-limit``.  Without a limit nothing is dead-lettered on
  3.10, but the count stays with the message (RabbitMQ 4 sets a default
  limit of 20).
- **classic**: no delivery count and no delivery limit (a ``delivery-limit``
  policy does not apply to classic queues on 3.10); a returned message goes
  back to its place, marked ``redelivered``.  Looking is allowed; tail says
  that the flag is set.
- **stream**: a consumer with ``x-stream-offset`` reads without taking:
  the messages stay, nothing is marked.  Looking is free.

How the type is learned: from the broker, never from the spec alone — the
spec says what should be, and a queue applied from an older spec, or
replaced by hand, may be of another type.  The management API's queue list
gives ``type`` and ``arguments``; its per-queue ``policy`` and
``effective_policy_definition`` come from statistics that lag up to five
seconds behind a new queue or policy (seen on 3.10.8), so the policies are
read from ``/api/policies`` and ``/api/operator-policies`` and matched here
(highest priority wins; when priorities tie the broker picks one, so the
lowest limit among them is assumed).  A passive declare cannot tell the
type, so when the management API does not answer the type is unknown and
treated as costly.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from rabbitry.broker.management import read_rows
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import BrokerError, NotFound

__all__ = ["SPEND_FLAG", "Cost", "QueueFacts", "Setting", "Spent", "queue_facts", "read_facts"]

#: The command-line flag that allows a look that costs a delivery attempt.
SPEND_FLAG = "--spend-delivery"

Row = Mapping[str, Any]


class Cost(StrEnum):
    """What a look does to the messages it sees."""

    #: A stream: read from an offset; nothing taken, nothing marked.
    NOTHING = "nothing"
    #: A classic queue: each message goes back to its place, marked redelivered.
    REDELIVERED_FLAG = "redelivered-flag"
    #: A quorum queue: ``x-delivery-count`` + 1 per message; at the limit, dead-lettered.
    DELIVERY_ATTEMPT = "delivery-attempt"
    #: The type could not be read: treated as a delivery attempt.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Setting:
    """An effective queue setting and who set it."""

    value: Any
    #: ``argument``, ``policy NAME`` or ``operator policy NAME``.
    source: str


@dataclass(frozen=True)
class Spent:
    """What one look did to one message of a quorum queue (or of a queue that may be one)."""

    #: ``x-delivery-count`` as the message came (0 when absent).
    count_before: int
    #: The delivery limit in force, ``None`` when there is none (or it is unknown).
    limit: int | None
    #: The queue's type was not known: the count went up only if it is a quorum queue.
    assumed: bool = False

    @property
    def count_after(self) -> int:
        return self.count_before + 1

    @property
    def dead_lettered(self) -> bool:
        """The return of this look took it over the limit: the broker dead-letters it."""
        return self.limit is not None and self.count_after > self.limit

    @property
    def deliveries_left(self) -> int | None:
        """Deliveries it still gets before the broker dead-letters it (0: gone now)."""
        if self.limit is None:
            return None
        return max(self.limit - self.count_before, 0)

    def as_json(self) -> dict[str, Any]:
        return {
            "delivery_count_before": self.count_before,
            "delivery_count_after": self.count_after,
            "delivery_limit": self.limit,
            "deliveries_left": self.deliveries_left,
            "dead_lettered_by_look": self.dead_lettered,
            "assumed": self.assumed,
        }


@dataclass(frozen=True)
class QueueFacts:
    """What tail knows about a queue before looking: its type and what decides the cost."""

    name: str
    vhost: str
    #: ``classic``, ``quorum`` or ``stream`` as the broker says; ``None``: unknown.
    type: str | None
    #: The type the spec declares.
    spec_type: str
    delivery_limit: Setting | None = None
    dead_letter_exchange: Setting | None = None
    #: Why ``type`` is unknown ("" when it is known).
    unknown_because: str = ""

    @property
    def cost(self) -> Cost:
        if self.type == "stream":
            return Cost.NOTHING
        if self.type == "classic":
            return Cost.REDELIVERED_FLAG
        if self.type == "quorum":
            return Cost.DELIVERY_ATTEMPT
        return Cost.UNKNOWN

    @property
    def spends_delivery(self) -> bool:
        return self.cost in (Cost.DELIVERY_ATTEMPT, Cost.UNKNOWN)

    @property
    def limit(self) -> int | None:
        value = self.delivery_limit.value if self.delivery_limit is not None else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def spent(self, delivery_count: int) -> Spent | None:
        """What a look at a message delivered with ``delivery_count`` does (``None``: no count)."""
        if not self.spends_delivery:
            return None
        return Spent(delivery_count, self.limit, assumed=self.cost is Cost.UNKNOWN)

    def as_json(self) -> dict[str, Any]:
        return {
            "queue": self.name,
            "type": self.type,
            "spec_type": self.spec_type,
            "cost": self.cost.value,
            "delivery_limit": self.limit,
            "delivery_limit_source": self.delivery_limit.source if self.delivery_limit else None,
            "dead_letter_exchange": (
                self.dead_letter_exchange.value if self.dead_letter_exchange else None
            ),
            "unknown_because": self.unknown_because or None,
        }

    # -- what tail says -----------------------------------------------------

    def what_a_look_costs(self) -> str:
        """One sentence: the queue, its type and what looking at a message does to it."""
        name = repr(self.name)
        if self.cost is Cost.NOTHING:
            return f"{name} is a stream: tail reads it from its first offset and takes nothing"
        if self.cost is Cost.REDELIVERED_FLAG:
            return (
                f"{name} is a classic queue: it counts no deliveries, so every message tail "
                "sees goes back to its place, marked redelivered"
            )
        at_limit = self.at_limit()
        if self.cost is Cost.DELIVERY_ATTEMPT:
            if self.limit is None:
                return (
                    f"{name} is a quorum queue without a delivery limit: looking at a message "
                    "counts as a delivery attempt (x-delivery-count + 1); none is dead-lettered "
                    "by it now, but the count stays with the message and counts against any "
                    "limit set later (RabbitMQ 4 sets 20 by default)"
                )
            return (
                f"{name} is a quorum queue with delivery limit {self.limit} "
                f"({self._limit_source()}): looking at a message counts as a delivery "
                f"attempt (x-delivery-count + 1), and a message already returned "
                f"{self.limit} times is {at_limit} by the look"
            )
        said = f" (the spec says {self.spec_type})"
        return (
            f"cannot tell what kind of queue {name} is{said}: {self.unknown_because}; if it is "
            "a quorum queue, looking at a message counts as a delivery attempt "
            "(x-delivery-count + 1) and can dead-letter it"
        )

    def refusal(self) -> str:
        """Why tail did not look, and the ways to look anyway."""
        ways = [f"pass {SPEND_FLAG} to look anyway"]
        if self.cost is Cost.UNKNOWN:
            ways.insert(0, "give a management API that answers (--management-url)")
        if self.type == "quorum":
            vhost = f" --vhost {shlex.quote(self.vhost)}" if self.vhost != "/" else ""
            ways.append(
                f"on the broker's host, `rabbitmq-queues peek{vhost} {shlex.quote(self.name)} 1` "
                "shows the first message without counting a delivery"
            )
        return f"{self.what_a_look_costs()}; nothing was read: {', or '.join(ways)}"

    def drift(self) -> str:
        """A note when the broker's type is not the spec's ("" when they agree or it is unknown)."""
        if self.type is None or self.type == self.spec_type:
            return ""
        return (
            f"queue {self.name!r} is a {self.type} queue on the broker but {self.spec_type} in "
            "the spec; `rabbitry plan` shows the difference"
        )

    def at_limit(self) -> str:
        """What happens to a message a look takes over the limit."""
        if self.dead_letter_exchange is None:
            return "DROPPED (the queue has no dead-letter exchange)"
        return f"dead-lettered to exchange {self.dead_letter_exchange.value!r}"

    def _limit_source(self) -> str:
        source = self.delivery_limit.source if self.delivery_limit else ""
        return "argument x-delivery-limit" if source == "argument" else source


async def read_facts(url: BrokerURL, name: str, spec_type: str, *, timeout: float) -> QueueFacts:
    """The facts of queue ``name`` as the broker's management API has them.

    A management API that does not answer makes the type unknown (the reason
    kept for the message); a queue the broker does not have is ``NotFound``.
    """
    vhost = quote(url.vhost, safe="")
    try:
        queues = await read_rows(
            url,
            f"/api/queues/{vhost}",
            timeout=timeout,
            query={"columns": "name,type,arguments", "disable_stats": "true"},
        )
        policies = await read_rows(url, f"/api/policies/{vhost}", timeout=timeout)
        operator = await read_rows(url, f"/api/operator-policies/{vhost}", timeout=timeout)
    except BrokerError as exc:
        return QueueFacts(name, url.vhost, None, spec_type, unknown_because=str(exc))
    facts = queue_facts(
        name, url.vhost, spec_type, queues=queues, policies=policies, operator_policies=operator
    )
    if facts is None:
        raise NotFound(
            f"RabbitMQ at {url.endpoint} has no queue {name!r} in vhost {url.vhost!r}; "
            "`rabbitry apply` declares it"
        )
    return facts


def queue_facts(
    name: str,
    vhost: str,
    spec_type: str,
    *,
    queues: Sequence[Row],
    policies: Sequence[Row],
    operator_policies: Sequence[Row],
) -> QueueFacts | None:
    """The facts of ``name`` from the API's rows; ``None`` when no row is that queue's."""
    row = next((r for r in queues if r.get("name") == name), None)
    if row is None:
        return None
    arguments = row.get("arguments") or {}
    queue_type = str(row.get("type") or arguments.get("x-queue-type") or "classic")
    user = _winners(policies, name, queue_type)
    ops = _winners(operator_policies, name, queue_type)
    limits: list[Setting] = []
    if _is_int(arguments.get("x-delivery-limit")):
        limits.append(Setting(arguments["x-delivery-limit"], "argument"))
    limits += [
        _setting(p, "delivery-limit", "policy") for p in user if _has_int(p, "delivery-limit")
    ]
    limits += [
        _setting(p, "delivery-limit", "operator policy")
        for p in ops
        if _has_int(p, "delivery-limit")
    ]
    dead_letter: Setting | None = None
    if isinstance(arguments.get("x-dead-letter-exchange"), str):
        dead_letter = Setting(arguments["x-dead-letter-exchange"], "argument")  # argument wins
    else:
        dead_letter = next(
            (
                _setting(p, "dead-letter-exchange", "policy")
                for p in user
                if isinstance(_definition(p).get("dead-letter-exchange"), str)
            ),
            None,
        )
    return QueueFacts(
        name=name,
        vhost=vhost,
        type=queue_type,
        spec_type=spec_type,
        delivery_limit=min(limits, key=lambda s: int(s.value)) if limits else None,
        dead_letter_exchange=dead_letter,
    )


def _winners(rows: Sequence[Row], name: str, queue_type: str) -> list[Row]:
    """The matching policies of the highest priority (the broker applies one of them)."""
    matching = [row for row in rows if _applies(row, name, queue_type)]
    if not matching:
        return []
    top = max(_priority(row) for row in matching)
    return sorted(
        (row for row in matching if _priority(row) == top), key=lambda r: str(r.get("name"))
    )


#: ``apply-to`` values that reach a queue of each type (the per-type ones are 3.12+).
_APPLIES = {
    "classic": {"queues", "all", "classic_queues"},
    "quorum": {"queues", "all", "quorum_queues"},
    "stream": {"queues", "all", "streams"},
}


def _applies(row: Row, name: str, queue_type: str) -> bool:
    if row.get("apply-to", "all") not in _APPLIES.get(queue_type, {"queues", "all"}):
        return False
    try:
        return re.search(str(row.get("pattern", "")), name) is not None
    except re.error:  # a pattern Erlang takes but Python does not: assume it may apply
        return True


def _priority(row: Row) -> int:
    value = row.get("priority", 0)
    return value if _is_int(value) else 0


def _definition(row: Row) -> Mapping[str, Any]:
    definition = row.get("definition")
    return definition if isinstance(definition, Mapping) else {}


def _has_int(row: Row, key: str) -> bool:
    return _is_int(_definition(row).get(key))


def _setting(row: Row, key: str, kind: str) -> Setting:
    return Setting(_definition(row)[key], f"{kind} {row.get('name')}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
