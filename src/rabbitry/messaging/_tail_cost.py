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
gives ``type``, ``arguments`` and ``policy`` (the user policy the broker
applies: it is in the queue's record, so it is listed without statistics and
at once — within 0.01 s of a policy change, measured on 3.10.8), and the
policies come from ``/api/policies`` and ``/api/operator-policies``.  The rows
are read with ``broker.management``'s parsers, and the delivery limit and
dead-letter exchange are ``broker.settings.effective_settings``, the same
answer ``plan`` gives.  One thing is tail's own: where the broker's pick
among policies of equal priority is not known (operator policies are never
named on the row), ``cautious_settings`` takes the candidate with the lowest
delivery limit.  A passive declare cannot tell the type, so when the
management API does not answer the type is unknown and treated as costly.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from rabbitry._untrusted import shown
from rabbitry.broker.management import policy_from_row, queue_from_row, read_rows
from rabbitry.broker.settings import effective_settings, tied_policies
from rabbitry.broker.state import QueueState
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import BrokerError, NotFound, Option, Phrase
from rabbitry.spec import Policy
from rabbitry.spec.policies import Setting

__all__ = [
    "Cost",
    "QueueFacts",
    "Spent",
    "cautious_settings",
    "queue_facts",
    "read_facts",
]

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
    #: Each with its source: ``argument``, ``policy:NAME`` or ``operator_policy:NAME``.
    delivery_limit: Setting | None = None
    dead_letter_exchange: Setting | None = None
    #: The policies of equal priority the broker picks among when its pick is not
    #: known (``policy:NAME``, ``operator_policy:NAME``): the settings above are then
    #: ``cautious_settings``' (empty: none assumed).
    tied: tuple[str, ...] = ()
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
            "dead_letter_exchange_source": (
                self.dead_letter_exchange.source if self.dead_letter_exchange else None
            ),
            "tied_policies": list(self.tied),
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

    def refusal(self) -> Phrase:
        """Why tail did not look, and the ways to look anyway."""
        ways = [Phrase.of("pass ", Option.SPEND_DELIVERY, " to look anyway")]
        if self.cost is Cost.UNKNOWN:
            ways.insert(
                0, Phrase.of("give a management API that answers (", Option.MANAGEMENT_URL, ")")
            )
        if self.type == "quorum":
            vhost = f" --vhost {shlex.quote(self.vhost)}" if self.vhost != "/" else ""
            ways.append(
                Phrase.of(
                    f"on the broker's host, `rabbitmq-queues peek{vhost} "
                    f"{shlex.quote(self.name)} 1` shows the first message without counting a "
                    "delivery"
                )
            )
        parts: list[str | Phrase] = [f"{self.what_a_look_costs()}; nothing was read: "]
        for i, way in enumerate(ways):
            parts += [", or ", way] if i else [way]
        return Phrase.of(*parts)

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
        return f"dead-lettered to exchange {shown(self.dead_letter_exchange.value, quote=True)}"

    def _limit_source(self) -> str:
        source = self.delivery_limit.source if self.delivery_limit else ""
        # A policy's name is the broker's, set by whoever may: shown escaped.
        said = "argument x-delivery-limit" if source == "argument" else shown(source)
        if self.tied:
            said += (
                f"; {', '.join(shown(name) for name in self.tied)} tie and the broker's pick "
                "is not known, so the lowest limit is assumed"
            )
        return said


#: The queue columns tail reads: ``policy`` is in the queue's record, so it is there
#: without statistics (``disable_stats``), as ``type`` and ``arguments`` are.
_QUEUE_COLUMNS = "name,type,arguments,policy"


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
            query={"columns": _QUEUE_COLUMNS, "disable_stats": "true"},
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
    """The facts of ``name`` from the API's rows; ``None`` when no row is that queue's.

    The rows are parsed as ``read_vhost`` parses them, and the settings are
    ``effective_settings``' (``cautious_settings`` where a tie is not settled).
    """
    row = next((r for r in queues if r.get("name") == name), None)
    if row is None:
        return None
    queue = queue_from_row(row)
    users = {r["name"]: policy_from_row(r, False).as_policy() for r in policies}
    operators = {r["name"]: policy_from_row(r, True).as_policy() for r in operator_policies}
    settings, tied = cautious_settings(queue, users, operators)
    return QueueFacts(
        name=name,
        vhost=vhost,
        type=queue.type,
        spec_type=spec_type,
        delivery_limit=settings.get("delivery-limit"),
        dead_letter_exchange=settings.get("dead-letter-exchange"),
        tied=tied,
    )


def cautious_settings(
    queue: QueueState, users: Mapping[str, Policy], operators: Mapping[str, Policy]
) -> tuple[Mapping[str, Setting], tuple[str, ...]]:
    """``effective_settings``, on the safe side where the broker's pick is not known.

    Of policies of equal priority the broker applies one it picks.  The queue
    row names the user policy (``queue.policy``), which settles a user tie when
    it names one of the tied; nothing names the operator policy.  Where a pick
    is not known, each way the broker could have picked (each tied user policy
    with each tied operator policy) is weighed with ``effective_settings`` and
    the one with the lowest delivery limit is taken (on equal limits, one without
    a dead-letter exchange), so that tail may say a message is dead-lettered
    sooner than it is, or dropped where it is dead-lettered, never the reverse.  Returns the
    settings and the tied policies weighed, spelled as sources are (empty: nothing
    assumed).
    """
    user_ties = tied_policies(queue, users.values())
    operator_ties = tied_policies(queue, operators.values())
    user_named = queue.policy in {p.name for p in user_ties}
    unknown_users = () if len(user_ties) < 2 or user_named else user_ties
    unknown_operators = operator_ties if len(operator_ties) > 1 else ()
    if not unknown_users and not unknown_operators:
        return effective_settings(queue, users, operators, named=queue.policy), ()
    user_picks: list[Mapping[str, Policy]] = [{p.name: p} for p in unknown_users] or [users]
    operator_picks: list[Mapping[str, Policy]] = [{p.name: p} for p in unknown_operators] or [
        operators
    ]
    weighed = [
        effective_settings(queue, u, o, named=queue.policy)
        for u in user_picks
        for o in operator_picks
    ]
    chosen = min(weighed, key=_worst_first)
    if all(_what_tail_reads(s) == _what_tail_reads(chosen) for s in weighed):
        return chosen, ()  # the tie does not touch what a look meets: nothing assumed
    tied = (
        *(f"policy:{p.name}" for p in unknown_users),
        *(f"operator_policy:{p.name}" for p in unknown_operators),
    )
    return chosen, tied


def _what_tail_reads(settings: Mapping[str, Setting]) -> tuple[Setting | None, Setting | None]:
    return settings.get("delivery-limit"), settings.get("dead-letter-exchange")


def _worst_first(settings: Mapping[str, Setting]) -> tuple[float, bool]:
    """The lowest delivery limit first (none, or not a number, is the highest); on equal
    limits, no dead-letter exchange first (the message would be dropped)."""
    setting = settings.get("delivery-limit")
    value = setting.value if setting is not None else None
    limit = value if isinstance(value, int) and not isinstance(value, bool) else float("inf")
    return limit, "dead-letter-exchange" in settings
