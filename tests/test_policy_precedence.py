"""The broker's own precedence between a queue's x-argument and a policy, pinned by behaviour.

RabbitMQ's docs say the argument wins; its code says otherwise for some keys.
Each test here declares a queue with an x-argument, sets a policy with another
value for the same key, and watches what the queue does: how many messages it
keeps (max-length, max-length-bytes), whether a message expires (message-ttl)
or the queue does (expires), how many redeliveries it allows (delivery-limit),
where a rejected message goes (dead-letter-exchange, -routing-key), and which
message is kept at the limit (overflow).  Both orders of smaller and larger are
tried.  The expected value comes from ``rabbitry.spec.policies.PRECEDENCE``
(with its ``resolve``), so a wrong row in that table fails a test here.

Measured on RabbitMQ 3.10.8 (the table agrees): the lesser value wins for
message-ttl, max-length, max-length-bytes (classic and quorum), expires
(classic) and delivery-limit (quorum); the argument wins for
dead-letter-exchange and dead-letter-routing-key (both types) and for overflow
on a classic queue; the policy wins, larger or smaller, for expires and
overflow on a quorum queue (the code of later versions takes the lesser
expires: the docs, the code and 3.10 disagree three ways).  Operator policies accept only
message-ttl, expires, max-length, max-length-bytes, delivery-limit and
max-in-memory-length/-bytes (400 for any other key) and merge with the user
policy and the argument as the least of the three.  One user policy and one
operator policy apply per queue: the highest priority of each; a lower one's
other keys do not apply at all.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiormq
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import Vhost
from rabbitry.spec import Policy, PolicyTarget, Queue, QueueType, Spec
from rabbitry.spec.policies import (
    POLICY_KEYS,
    PRECEDENCE,
    Setting,
    anchored_pattern,
    effective,
    resolve,
    winning_policy,
)

T = TypeVar("T")

DEADLINE = 60.0
#: Messages published to see a length limit; every limit tried is below it.
PUBLISHED = 8
#: Body of each message in the max-length-bytes cases: the limits are multiples of it.
BODY = b"0123456789"


def run(coroutine: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, DEADLINE)

    return asyncio.run(bounded())


@dataclass
class Lab:
    """One vhost, seen through AMQP (a confirming channel) and the management API."""

    connection: Any
    channel: Any
    http: httpx.AsyncClient
    vhost: str

    async def policy(
        self,
        name: str,
        definition: Mapping[str, Any],
        *,
        pattern: str,
        priority: int = 0,
        operator: bool = False,
        apply_to: str = "queues",
    ) -> httpx.Response:
        kind = "operator-policies" if operator else "policies"
        return await self.http.put(
            f"/api/{kind}/{quote(self.vhost, safe='')}/{quote(name, safe='')}",
            json={
                "pattern": pattern,
                "definition": dict(definition),
                "priority": priority,
                "apply-to": apply_to,
            },
        )

    async def set_policy(self, name: str, definition: Mapping[str, Any], **how: Any) -> None:
        response = await self.policy(name, definition, **how)
        assert response.status_code in (201, 204), response.text

    async def declare(
        self, name: str, queue_type: str = "classic", arguments: Mapping[str, Any] | None = None
    ) -> None:
        table = dict(arguments or {})
        if queue_type != "classic":
            table["x-queue-type"] = queue_type
        await self.channel.queue_declare(name, durable=True, arguments=table)

    async def publish(self, queue: str, body: bytes = b"x") -> bool:
        """Publish to ``queue``; whether the broker confirmed it (``False``: nacked)."""
        try:
            await self.channel.basic_publish(body, routing_key=queue, mandatory=True)
        except aiormq.exceptions.DeliveryError:
            return False
        return True

    async def count(self, queue: str) -> int:
        ok = await self.channel.queue_declare(queue, passive=True)
        return int(ok.message_count)

    async def exists(self, queue: str) -> bool:
        """Asked through the API: a declare, even a passive one, is a use that restarts
        the queue's ``expires`` timer."""
        response = await self.http.get(
            f"/api/queues/{quote(self.vhost, safe='')}/{quote(queue, safe='')}",
            params={"disable_stats": "true"},
        )
        assert response.status_code in (200, 404), response.text
        return response.status_code == 200

    async def wait_for_count(self, queue: str, expected: int, seconds: float = 3.0) -> int:
        """``queue``'s count once it is ``expected`` (dead-lettering is asynchronous)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while (found := await self.count(queue)) != expected:
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        return found

    async def reject_head(self, queue: str, *, requeue: bool) -> bool:
        """Take the first message of ``queue`` and reject it; whether there was one."""
        message = await self.channel.basic_get(queue)
        if message.delivery_tag is None:
            return False
        await self.channel.basic_reject(message.delivery_tag, requeue=requeue)
        return True


@asynccontextmanager
async def lab(vhost: Vhost) -> AsyncIterator[Lab]:
    config = vhost.api.config
    connection = await aiormq.connect(vhost.amqp_url)
    try:
        channel = await connection.channel()  # publisher confirms on
        async with httpx.AsyncClient(
            base_url=vhost.management_url,
            auth=(config.username, config.password),
            timeout=10.0,
        ) as http:
            yield Lab(connection, channel, http, vhost.name)
    finally:
        await connection.close()


def exactly(name: str) -> str:
    return anchored_pattern([name])


# -- what each key does, observed ------------------------------------------------------


async def _dead_letter_targets(lab: Lab) -> None:
    """dlx-a and dlx-b (fanout, each to a queue of its name), dlx-k (direct: ka, kb)."""
    for exchange in ("dlx-a", "dlx-b"):
        await lab.channel.exchange_declare(exchange, exchange_type="fanout")
        await lab.channel.queue_declare(exchange)
        await lab.channel.queue_bind(exchange, exchange)
    await lab.channel.exchange_declare("dlx-k", exchange_type="direct")
    for key in ("ka", "kb"):
        await lab.channel.queue_declare(key)
        await lab.channel.queue_bind(key, "dlx-k", routing_key=key)


async def _where_it_went(lab: Lab, queues: tuple[str, str]) -> str:
    """Which of ``queues`` got the dead-lettered message (its name), after it arrives."""
    deadline = asyncio.get_running_loop().time() + 3.0
    while asyncio.get_running_loop().time() < deadline:
        found = [q for q in queues if await lab.count(q)]
        if found:
            assert len(found) == 1, found
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"the rejected message reached none of {queues}")


@dataclass(frozen=True)
class Case:
    """A key, the two values tried, and how to see which one is in force."""

    key: str
    queue_types: tuple[str, ...]
    values: tuple[Any, Any]
    #: (lab, queue, queue type) → the value in force, read from behaviour.
    observe: Callable[[Lab, str, str], Awaitable[Any]]
    #: Arguments the queue needs besides the one under test (no conflict in them).
    extra_arguments: Mapping[str, Any] = field(default_factory=dict)
    #: Keys the policy needs besides the one under test (the same value as the argument's).
    extra_policy: Mapping[str, Any] = field(default_factory=dict)


async def _max_length(lab: Lab, queue: str, queue_type: str) -> int:
    for _ in range(PUBLISHED):
        await lab.publish(queue)
    return await lab.count(queue)


async def _max_length_bytes(lab: Lab, queue: str, queue_type: str) -> int:
    for _ in range(PUBLISHED):
        await lab.publish(queue, BODY)
    return await lab.count(queue) * len(BODY)


async def _message_ttl(lab: Lab, queue: str, queue_type: str) -> int:
    await lab.publish(queue)
    await asyncio.sleep(0.7)
    return SHORT_TTL if await lab.count(queue) == 0 else LONG


async def _expires(lab: Lab, queue: str, queue_type: str) -> int:
    """Whether the queue goes within the window: a quorum queue checks its expiry on its
    tick, every 5 s (seen here: gone after 4-5 s), a classic one on a timer."""
    window = 8.0 if queue_type == "quorum" else 3.0
    deadline = asyncio.get_running_loop().time() + window
    while asyncio.get_running_loop().time() < deadline:
        if not await lab.exists(queue):
            return SHORT_EXPIRY
        await asyncio.sleep(0.1)
    return LONG


async def _delivery_limit(lab: Lab, queue: str, queue_type: str) -> int:
    """Redeliveries the queue allows: deliveries before it dead-letters, less one."""
    await lab.publish(queue)
    deliveries = 0
    for _ in range(10):
        if not await lab.reject_head(queue, requeue=True):
            if await lab.wait_for_count("dlx-a", 1, seconds=0.5) == 1:
                break
            continue
        deliveries += 1
    assert await lab.count("dlx-a") == 1, "the message was never dead-lettered"
    return deliveries - 1


async def _dead_letter_exchange(lab: Lab, queue: str, queue_type: str) -> str:
    await lab.publish(queue)
    assert await lab.reject_head(queue, requeue=False)
    return await _where_it_went(lab, ("dlx-a", "dlx-b"))


async def _dead_letter_routing_key(lab: Lab, queue: str, queue_type: str) -> str:
    await lab.publish(queue)
    assert await lab.reject_head(queue, requeue=False)
    return await _where_it_went(lab, ("ka", "kb"))


async def _overflow(lab: Lab, queue: str, queue_type: str) -> str:
    """At max-length 1, publish two: drop-head keeps the second, reject-publish the first."""
    await lab.publish(queue, b"1")
    await lab.publish(queue, b"2")
    message = await lab.channel.basic_get(queue, no_ack=True)
    return {b"1": "reject-publish", b"2": "drop-head"}[message.body]


SHORT_TTL = 200
SHORT_EXPIRY = 800
LONG = 600_000
BOTH = ("classic", "quorum")

CASES = (
    Case("max-length", BOTH, (2, 5), _max_length),
    Case("max-length-bytes", BOTH, (2 * len(BODY), 5 * len(BODY)), _max_length_bytes),
    Case("message-ttl", BOTH, (SHORT_TTL, LONG), _message_ttl),
    Case("expires", BOTH, (SHORT_EXPIRY, LONG), _expires),
    Case(
        "delivery-limit",
        ("quorum",),
        (1, 4),
        _delivery_limit,
        extra_arguments={"x-dead-letter-exchange": "dlx-a"},
    ),
    Case("dead-letter-exchange", BOTH, ("dlx-a", "dlx-b"), _dead_letter_exchange),
    Case(
        "dead-letter-routing-key",
        BOTH,
        ("ka", "kb"),
        _dead_letter_routing_key,
        extra_arguments={"x-dead-letter-exchange": "dlx-k"},
        extra_policy={"dead-letter-exchange": "dlx-k"},
    ),
    Case(
        "overflow",
        BOTH,
        ("reject-publish", "drop-head"),
        _overflow,
        extra_arguments={"x-max-length": 1},
    ),
)

PARAMS = [
    pytest.param(case, queue_type, order, id=f"{case.key}-{queue_type}-{order}")
    for case in CASES
    for queue_type in case.queue_types
    for order in ("argument-first", "policy-first")
]


def expected(key: str, queue_type: str, argument: Any, policy: Any) -> Any:
    """The value in force by ``PRECEDENCE``: what rabbitry's plan and checks will show."""
    winner = PRECEDENCE[key][queue_type]
    return resolve(winner, Setting(argument, "argument"), Setting(policy, "policy:p")).value


@pytest.mark.parametrize(("case", "queue_type", "order"), PARAMS)
def test_argument_against_policy(vhost: Vhost, case: Case, queue_type: str, order: str) -> None:
    """``order``: argument-first has the argument the first (smaller) value."""
    argument, policy = case.values if order == "argument-first" else case.values[::-1]
    queue = f"q-{case.key}"

    async def go() -> Any:
        async with lab(vhost) as it:
            await _dead_letter_targets(it)
            await it.set_policy(
                "p", {case.key: policy, **case.extra_policy}, pattern=exactly(queue)
            )
            arguments = {f"x-{case.key}": argument, **case.extra_arguments}
            await it.declare(queue, queue_type, arguments)
            return await case.observe(it, queue, queue_type)

    assert run(go()) == expected(case.key, queue_type, argument, policy)


def test_every_precedence_row_pinned_here_is_in_the_table() -> None:
    """The rows measured above exist in ``PRECEDENCE`` for every queue type tried."""
    for case in CASES:
        for queue_type in case.queue_types:
            assert queue_type in PRECEDENCE[case.key], (case.key, queue_type)


# -- operator policies ----------------------------------------------------------------

#: A valid value for each key a policy on a queue may take (the user policy accepts each).
SAMPLES: Mapping[str, Any] = {
    "message-ttl": 1000,
    "expires": 100000,
    "max-length": 5,
    "max-length-bytes": 1000,
    "delivery-limit": 3,
    "max-in-memory-length": 5,
    "max-in-memory-bytes": 1000,
    "overflow": "reject-publish",
    "dead-letter-exchange": "dlx",
    "dead-letter-routing-key": "dead",
    "dead-letter-strategy": "at-least-once",
    "queue-mode": "lazy",
    "queue-version": 2,
    "max-age": "1D",
    "stream-max-segment-size-bytes": 1000000,
    "queue-leader-locator": "client-local",
    "alternate-exchange": "lost",
}


def test_operator_policies_take_only_the_keys_the_table_says(vhost: Vhost) -> None:
    async def go() -> dict[str, tuple[int, int]]:
        async with lab(vhost) as it:
            found = {}
            for key, value in SAMPLES.items():
                user = await it.policy(f"u-{key}", {key: value}, pattern="^nothing$")
                operator = await it.policy(
                    f"o-{key}", {key: value}, pattern="^nothing$", operator=True
                )
                found[key] = (user.status_code, operator.status_code)
            return found

    found = run(go())
    assert all(user == 201 for user, _ in found.values()), found
    accepted = {key for key, (_, operator) in found.items() if operator == 201}
    refused = {key for key, (_, operator) in found.items() if operator == 400}
    assert accepted | refused == set(SAMPLES), found
    assert accepted == {key for key in SAMPLES if POLICY_KEYS[key].operator}
    assert accepted == {
        "message-ttl",
        "expires",
        "max-length",
        "max-length-bytes",
        "delivery-limit",
        "max-in-memory-length",
        "max-in-memory-bytes",
    }


_names = itertools.count()


def _spec_with(
    queue: str,
    argument: int | None,
    user: list[tuple[int, int]],
    operator: list[tuple[int, int]],
) -> Spec:
    """A spec of one classic queue with ``max-length`` from each source.

    ``user`` and ``operator``: (priority, max-length) of each policy matching it.
    """
    arguments = {} if argument is None else {"x-max-length": argument}

    def policies(found: list[tuple[int, int]], prefix: str) -> dict[str, Policy]:
        made = [
            Policy(
                f"{prefix}{i}",
                exactly(queue),
                PolicyTarget.QUEUES,
                priority,
                {"max-length": value},
                operator=prefix == "o",
            )
            for i, (priority, value) in enumerate(found)
        ]
        return {p.name: p for p in made}

    return Spec(
        Path("topology.yaml"),
        queues={queue: Queue(queue, arguments=arguments)},
        policies=policies(user, "u"),
        operator_policies=policies(operator, "o"),
    )


_LIMIT = st.integers(min_value=0, max_value=PUBLISHED - 1)


def _distinct_priorities() -> st.SearchStrategy[list[tuple[int, int]]]:
    return st.lists(
        st.tuples(st.integers(min_value=0, max_value=5), _LIMIT),
        max_size=2,
        unique_by=lambda p: p[0],
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    argument=st.none() | _LIMIT,
    user=_distinct_priorities(),
    operator=_distinct_priorities(),
)
def test_argument_user_and_operator_policy_merge_as_effective_says(
    vhost: Vhost,
    argument: int | None,
    user: list[tuple[int, int]],
    operator: list[tuple[int, int]],
) -> None:
    """max-length from an argument, up to two user and two operator policies (distinct
    priorities): the queue keeps what ``policies.effective`` says, and the broker names
    the user policy ``winning_policy`` picks."""
    queue = f"merge-{next(_names)}"
    spec = _spec_with(queue, argument, user, operator)

    async def go() -> tuple[int, str | None]:
        async with lab(vhost) as it:
            for policy in [*spec.policies.values(), *spec.operator_policies.values()]:
                await it.set_policy(
                    f"{queue}-{policy.name}",
                    policy.definition,
                    pattern=policy.pattern,
                    priority=policy.priority,
                    operator=policy.operator,
                )
            await it.declare(queue, arguments=spec.queues[queue].arguments)
            kept = await _max_length(it, queue, "classic")
            row = await it.http.get(
                f"/api/queues/{quote(it.vhost, safe='')}",
                params={"disable_stats": "true", "columns": "name,policy"},
            )
            named = next(r.get("policy") for r in row.json() if r["name"] == queue)
            return kept, named

    kept, named = run(go())
    setting = effective(spec, queue).get("max-length")
    assert kept == (PUBLISHED if setting is None else setting.value)
    winner = winning_policy(spec.policies, "queue", queue, QueueType.CLASSIC)
    assert named == (None if winner is None else f"{queue}-{winner.name}")


@pytest.mark.parametrize("operator", [False, True], ids=["user", "operator"])
def test_one_policy_applies_per_queue_the_highest_priority(vhost: Vhost, operator: bool) -> None:
    """A lower-priority policy's other keys do not apply: policies are not merged."""

    async def go() -> int:
        async with lab(vhost) as it:
            pattern = exactly("q")
            await it.set_policy(
                "high", {"max-length": 3}, pattern=pattern, priority=5, operator=operator
            )
            await it.set_policy(
                "low", {"message-ttl": 100}, pattern=pattern, priority=1, operator=operator
            )
            await it.declare("q")
            kept = await _max_length(it, "q", "classic")
            await asyncio.sleep(0.5)  # the low one's TTL would have emptied it
            return kept + await it.count("q")

    assert run(go()) == 3 + 3


@pytest.mark.parametrize(("argument", "cap"), [(1, 4), (4, 1)])
def test_an_operator_delivery_limit_meets_the_argument_lesser_wins(
    vhost: Vhost, argument: int, cap: int
) -> None:
    async def go() -> int:
        async with lab(vhost) as it:
            await _dead_letter_targets(it)
            await it.set_policy("cap", {"delivery-limit": cap}, pattern="^q$", operator=True)
            arguments = {"x-delivery-limit": argument, "x-dead-letter-exchange": "dlx-a"}
            await it.declare("q", "quorum", arguments)
            return await _delivery_limit(it, "q", "quorum")

    assert run(go()) == min(argument, cap)


def test_a_policy_for_exchanges_leaves_queues_alone(vhost: Vhost) -> None:
    async def go() -> int:
        async with lab(vhost) as it:
            await it.set_policy("x", {"max-length": 1}, pattern="^q$", apply_to="exchanges")
            await it.declare("q")
            return await _max_length(it, "q", "classic")

    assert run(go()) == PUBLISHED


def test_the_samples_are_policy_keys() -> None:
    assert set(SAMPLES) <= set(POLICY_KEYS)
