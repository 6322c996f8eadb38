"""What a vhost has, for ``plan`` and ``apply``: the management API, or passive declares.

The management API sees everything.  Without it (plugin off, port closed,
user without the ``management`` tag) the state is read over AMQP with passive
declares of the spec's own exchanges and queues, which only tells whether each
exists and, for queues, what it holds; ``LiveState.blind_spots`` says in plain
words what that leaves unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Final

import aiormq.exceptions as amqp_errors

from rabbitry.broker.amqp import broker_error, connect
from rabbitry.broker.management import read_queue_counts, read_vhost
from rabbitry.broker.state import QueueState, Topology, desired, is_reserved_exchange
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import (
    BrokerError,
    ConnectionFailed,
    ManagementError,
    first_broker_error,
)
from rabbitry.spec import Spec

__all__ = ["AMQP", "MANAGEMENT", "LiveState", "read_live"]

MANAGEMENT: Final = "management"
AMQP: Final = "amqp"

#: Channels probing at once; each passive declare is one round trip on its channel.
_CHANNELS = 8

_NOT_SEEN_OVER_AMQP = (
    "argument and property drift is not visible over AMQP: the type, durability and "
    "arguments of every exchange and queue found are taken to be the spec's",
    "bindings cannot be read over AMQP: binding drift is not visible (apply declares every "
    "binding again, which is harmless)",
    "objects that are not in the spec are invisible over AMQP, so --prune cannot work "
    "without the management API",
)


@dataclass(frozen=True)
class LiveState:
    """A vhost's topology, where it was read from, and what could not be seen."""

    topology: Topology
    source: str  # MANAGEMENT or AMQP
    #: Human sentences, one per thing the reader could not see; empty when it saw all.
    blind_spots: tuple[str, ...] = ()

    @property
    def can_prune(self) -> bool:
        """Objects the spec does not have are visible (so they can be deleted)."""
        return self.source == MANAGEMENT

    @property
    def sees_bindings(self) -> bool:
        """The bindings are the broker's; else they are assumed from the spec."""
        return self.source == MANAGEMENT


async def read_live(
    url: BrokerURL, spec: Spec, *, management: bool = True, timeout: float
) -> LiveState:
    """The live state of ``url.vhost`` as it concerns ``spec``.

    With ``management`` the API is read first; when it cannot be used (not
    reachable, or it refuses this user) the state is read over AMQP instead,
    whose own errors (wrong login, no vhost, unreachable) are then the ones
    raised.  ``timeout`` bounds every single broker call.
    """
    if not management:
        return await _read_amqp(url, spec, timeout, "the management API was not asked")
    try:
        topology = await read_vhost(url, timeout=timeout, counts=False)
    except (ManagementError, ConnectionFailed) as exc:
        why = f"the management API could not be used: {exc}"
    else:
        return await _verify_counts(url, spec, topology, timeout)
    return await _read_amqp(url, spec, timeout, why)  # outside `except`: no chained context


async def _verify_counts(
    url: BrokerURL, spec: Spec, topology: Topology, timeout: float
) -> LiveState:
    """Add what each queue plan may replace or delete holds: the API's counts, and its own.

    ``topology`` was read without counts (the API's statistics are the slowest
    part of the read); they matter only for the queues plan may replace or
    delete, so in sync (a no-op plan) nothing more is asked.  Otherwise every
    queue gets the API's counts, as ``read_vhost(counts=True)`` gives them.

    The API's counts are statistics, emitted every few seconds: for a queue
    declared and published to a moment ago they are missing, or say 0 messages
    and 0 consumers while it holds 3 and has one (seen on 3.10.8 for about 5 s).
    So the queues whose counts decide whether data is lost — those the spec
    does not have and those that differ from it — are also asked with a passive
    declare (at the same time), and the larger of the two answers is kept: a
    count too high only makes apply ask for ``--allow-data-loss``, one too low
    loses messages.
    """
    want = desired(spec).queues
    changing = [
        name
        for name, queue in topology.queues.items()
        if want.get(name) != queue and (name in want or not queue.exclusive)
    ]
    if not changing:
        return LiveState(topology, MANAGEMENT)
    at_risk = [name for name in changing if not topology.queues[name].exclusive]
    reporting = asyncio.create_task(_reported_counts(url, timeout))
    try:
        probe = await _probe(url, (), at_risk, timeout)
    except BrokerError as exc:
        queues = _with_reported(topology, await reporting)
        for name in at_risk:
            queues[name] = replace(queues[name], messages=None, consumers=None)
        spot = f"what {len(at_risk)} queue(s) plan may replace or delete hold is unknown: {exc}"
        return LiveState(replace(topology, queues=queues), MANAGEMENT, (spot,))
    except BaseException:
        reporting.cancel()
        raise
    queues = _with_reported(topology, await reporting)
    for name, counts in probe.queues.items():
        queue = queues[name]
        if counts is None:  # exclusive to another connection: in use
            queues[name] = replace(queue, exclusive=True)
            continue
        messages, consumers = counts
        queues[name] = replace(
            queue,
            messages=_larger(queue.messages, messages, trust=queue.type != "stream"),
            consumers=_larger(queue.consumers, consumers),
        )
    return LiveState(replace(topology, queues=queues), MANAGEMENT)


async def _reported_counts(
    url: BrokerURL, timeout: float
) -> dict[str, tuple[int | None, int | None]]:
    """The API's counts; none (unknown, so taken as "holds data") if it fails now."""
    try:
        return await read_queue_counts(url, timeout=timeout)
    except BrokerError:
        return {}


def _with_reported(
    topology: Topology, reported: dict[str, tuple[int | None, int | None]]
) -> dict[str, QueueState]:
    return {
        name: replace(queue, messages=counts[0], consumers=counts[1])
        if (counts := reported.get(name))
        else queue
        for name, queue in topology.queues.items()
    }


def _larger(reported: int | None, asked: int, *, trust: bool = True) -> int | None:
    """The safer of the API's count and the queue's own; ``None`` when the latter means nothing."""
    if not trust:
        # A stream answers a passive declare with message_count 0 whatever it
        # holds, and its API count may be stale: what it holds cannot be verified.
        return None
    return asked if reported is None else max(reported, asked)


async def _read_amqp(url: BrokerURL, spec: Spec, timeout: float, why: str) -> LiveState:
    want = desired(spec)
    exchanges = [name for name in want.exchanges if not is_reserved_exchange(name)]
    probe = await _probe(url, exchanges, list(want.queues), timeout)
    found_queues = {}
    for name, counts in probe.queues.items():
        queue = want.queues[name]
        if counts is None:  # RESOURCE_LOCKED: it exists, exclusive to another connection
            found_queues[name] = replace(queue, exclusive=True)
        else:
            found_queues[name] = _with_counts(queue, counts)
    found_exchanges = {name: want.exchanges[name] for name in probe.exchanges}

    def exists(name: str, kind: str) -> bool:
        if kind == "queue":
            return name in found_queues
        return name in found_exchanges or is_reserved_exchange(name)

    bindings = frozenset(
        b
        for b in want.bindings
        if exists(b.source, "exchange") and exists(b.destination, b.destination_type)
    )
    spots = [
        f"{why}; the live state was read with passive declares over AMQP",
        *_NOT_SEEN_OVER_AMQP,
    ]
    if any(q.type == "stream" for q in found_queues.values()):
        spots.append("a stream's message count cannot be read over AMQP: it shows as unknown")
    return LiveState(Topology(found_exchanges, found_queues, bindings), AMQP, tuple(spots))


def _with_counts(queue: QueueState, counts: tuple[int, int]) -> QueueState:
    messages, consumers = counts
    return replace(
        queue, messages=_larger(None, messages, trust=queue.type != "stream"), consumers=consumers
    )


@dataclass
class _Probe:
    """What passive declares found; the probers fill it in."""

    exchanges: set[str] = field(default_factory=set)
    #: queue → (messages, consumers); ``None`` for a queue exclusive to another connection.
    queues: dict[str, tuple[int, int] | None] = field(default_factory=dict)


async def _probe(
    url: BrokerURL, exchanges: Iterable[str], queues: Iterable[str], timeout: float
) -> _Probe:
    """Passive declares of ``exchanges`` and ``queues``: which exist, and what the queues hold.

    A miss (404) closes its channel, so each of a few channels probes in turn
    and is replaced after a miss.
    """
    jobs = [("exchange", name) for name in exchanges] + [("queue", name) for name in queues]
    found = _Probe()
    if not jobs:
        return found
    connection = await connect(url, timeout=timeout)
    todo = iter(jobs)  # shared by every prober: each job is taken once
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(_CHANNELS, len(jobs))):
                group.create_task(_prober(connection, url, todo, found, timeout=timeout))
    except BaseExceptionGroup as failures:
        raise first_broker_error(failures) from None
    finally:
        await _close(connection, timeout)
    return found


async def _prober(
    connection: Any,
    url: BrokerURL,
    todo: Iterator[tuple[str, str]],
    found: _Probe,
    *,
    timeout: float,
) -> None:
    channel: Any = None
    for kind, name in todo:
        try:
            if channel is None or channel.is_closed:
                channel = await asyncio.wait_for(
                    connection.channel(publisher_confirms=False), timeout
                )
            if kind == "exchange":
                await asyncio.wait_for(channel.exchange_declare(name, passive=True), timeout)
                found.exchanges.add(name)
            else:
                ok = await asyncio.wait_for(channel.queue_declare(name, passive=True), timeout)
                found.queues[name] = (ok.message_count, ok.consumer_count)
        except amqp_errors.ChannelNotFoundEntity:
            channel = None  # absent; the broker closed the channel
        except amqp_errors.ChannelLockedResource:
            found.queues[name] = None
            channel = None
        except (TimeoutError, Exception) as exc:
            raise broker_error(exc, url, f"passive declare of {kind} {name!r}") from None


async def _close(connection: Any, timeout: float) -> None:
    """Close without letting a dead or slow broker turn a result into an error."""
    with contextlib.suppress(TimeoutError, Exception):
        await asyncio.wait_for(connection.close(), timeout)
