"""What a vhost has, for ``plan`` and ``apply``: the management API, or declares over AMQP.

The management API sees everything.  Without it (plugin off, port closed,
user without the ``management`` tag) the state is read over AMQP: a passive
declare of each of the spec's exchanges and queues tells whether it exists and
what a queue holds, then an active declare of each one found, with the spec's
own properties and arguments, tells whether it matches: the broker changes
nothing when it does and refuses with 406 when it does not
(``broker.inequivalent`` reads that refusal into the plan).  What that still
leaves unseen is ``LiveState.blind_spots``, as data (``BlindSpot``).

A management URL given explicitly (``--management-url`` or
``$RABBITRY_MANAGEMENT_URL``) that cannot be used is an error, never a quiet
fall back: whoever gave it expects plan to see everything.

The API read must be the broker the AMQP URL reaches: it is derived only for
the default AMQP port (``BrokerURL.management``), and its ``/api/overview``
cluster name is compared with the one the AMQP connection announces
(``same_broker``); another broker's API is refused, never read for this one
(seen before: an own node on other ports planned from the shared broker's
state, 3 changes for a vhost in sync).

A cluster node down.  Measured on a 3-node RabbitMQ 3.10.8 cluster
(``tests/cluster.py``'s), read through another node, the node's application
stopped with ``rabbitmqctl stop_app`` and, in another run, the node killed
with SIGKILL: the same answers (``tests/test_cluster_down.py`` causes the first):

- a durable classic queue whose node is down stays in ``/api/queues/{vhost}``
  with its definition and ``state: "down"``, ``node: <that node>`` (with or
  without ``disable_stats``; no counts), while ``GET /api/queues/{vhost}/{q}``
  answers 404.  Its bindings are gone from ``/api/bindings/{vhost}`` (an
  exchange-to-exchange binding next to them stays); they are back, unchanged,
  when the node is.  So read naively the spec's bindings to it are "missing";
- over AMQP a passive declare of it, an active one and a ``queue.bind`` to it
  all fail with 404 ``NOT_FOUND - home node 'N' of durable queue 'q' in vhost
  'v' is down or inaccessible``: what apply met re-creating those bindings;
- a transient classic queue on that node is deleted (404 ``no queue``, not
  listed): it is really gone, and plan rightly creates it again;
- a quorum queue whose leader was there gets a new leader within seconds and
  keeps its bindings; one with no member online (``x-quorum-initial-group-size``
  1 on that node) or without a majority still lists them, ``leader`` empty, and
  a passive declare and a bind of it succeed; a stream on that node the same.

So "not seen" is a queue listed with ``state: "down"`` (``QueueState.down_on``),
or over AMQP a 404 naming its home node as down; ``plan.diff`` leaves it and
the spec's bindings to it alone and lists them as ``Plan.unseen``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final

import aiormq.exceptions as amqp_errors
from aiormq.abc import AbstractChannel, AbstractConnection

from rabbitry.broker import inequivalent
from rabbitry.broker._aiormq import queue_counts
from rabbitry.broker.amqp import broker_error, connect, reply_text
from rabbitry.broker.management import (
    Overview,
    api_base,
    read_overview,
    read_queue_counts,
    read_vhost,
)
from rabbitry.broker.state import (
    ExchangeState,
    QueueState,
    Topology,
    desired,
    is_reserved_exchange,
)
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import (
    BrokerError,
    ConnectionFailed,
    ManagementError,
    Option,
    Phrase,
    first_broker_error,
    phrase_of,
)
from rabbitry.spec import Spec
from rabbitry.spec.rabbitmq4 import Version, parse_version

__all__ = [
    "AMQP",
    "MANAGEMENT",
    "BlindSpot",
    "LiveState",
    "Sighting",
    "look",
    "read_live",
    "same_broker",
]

MANAGEMENT: Final = "management"
AMQP: Final = "amqp"

#: Channels probing at once; each declare is one round trip on its channel.
_CHANNELS = 8


class BlindSpot(StrEnum):
    """Something the live state could not see, so a plan cannot vouch for it."""

    #: Bindings cannot be read over AMQP.
    BINDINGS = "bindings"
    #: Policies and operator policies are the management API's alone.
    POLICIES = "policies"
    #: Objects the spec does not have are invisible over AMQP.
    UNMANAGED = "unmanaged"
    #: The broker does not compare x-arguments its queue type does not know.
    UNKNOWN_ARGUMENTS = "unknown-arguments"
    #: A stream answers a passive declare with message count 0 whatever it holds.
    STREAM_COUNTS = "stream-counts"
    #: What some queue plan may replace or delete holds could not be asked.
    QUEUE_COUNTS = "queue-counts"

    def describe(self) -> str:
        return _BLIND_SPOTS[self]


_BLIND_SPOTS: Final = {
    BlindSpot.BINDINGS: "bindings cannot be read over AMQP: a missing or foreign binding is "
    "not visible (apply declares every binding of the spec again, which is harmless)",
    BlindSpot.POLICIES: "policies cannot be read over AMQP: a policy that differs or is "
    "missing is not visible, and apply cannot write one",
    BlindSpot.UNMANAGED: "objects that are not in the spec are invisible over AMQP, so "
    "pruning cannot work without the management API",
    BlindSpot.UNKNOWN_ARGUMENTS: "x-arguments the queue type does not know are not compared "
    "by the broker on a declare: a difference in one is not visible over AMQP",
    BlindSpot.STREAM_COUNTS: "a stream's message count cannot be read over AMQP: it shows "
    "as unknown",
    BlindSpot.QUEUE_COUNTS: "what some queue plan may replace or delete holds is unknown "
    "(taken as holding data)",
}

#: What plan can still not verify over AMQP, whatever the spec holds.
_AMQP_BLIND: Final = (BlindSpot.BINDINGS, BlindSpot.POLICIES, BlindSpot.UNMANAGED)


@dataclass(frozen=True)
class LiveState:
    """A vhost's topology, where it was read from, and what could not be seen."""

    topology: Topology
    source: str  # MANAGEMENT or AMQP
    blind_spots: tuple[BlindSpot, ...] = ()
    #: Why the management API was not used, when it was not (for people; a ``Phrase``
    #: so that the command line names the settings it mentions as its flags).
    fallback: Phrase | None = None
    #: The RabbitMQ version the broker says it runs (``"3.10.8"``): the management API's
    #: ``/api/overview``, or over AMQP the connection's server properties; ``None``
    #: when it could not be read.  ``plan`` judges ``spec.rabbitmq4``'s table with it.
    version: str | None = None
    #: The management API's base URL that was read (``source`` MANAGEMENT), else ``None``.
    management: str | None = None

    @property
    def release(self) -> Version | None:
        """``version`` as ``(major, minor)``."""
        return parse_version(self.version)

    @property
    def fallback_reason(self) -> str | None:
        """``fallback`` as Python words."""
        return None if self.fallback is None else str(self.fallback)

    @property
    def can_prune(self) -> bool:
        """Objects the spec does not have are visible (so they can be deleted)."""
        return self.source == MANAGEMENT

    @property
    def sees_bindings(self) -> bool:
        """The bindings are the broker's; else they are assumed from the spec."""
        return self.source == MANAGEMENT

    def unverified(self, spec: Spec) -> tuple[BlindSpot, ...]:
        """The blind spots that hide something ``spec`` declares: plan cannot say "in sync".

        Unmanaged objects matter to --prune only, which refuses without the API, and
        unknown counts only make apply more careful: neither hides a declared object.
        """
        if not self.blind_spots:
            return ()
        want = desired(spec)
        hides = {
            BlindSpot.BINDINGS: bool(want.bindings),
            BlindSpot.POLICIES: bool(spec.policies or spec.operator_policies),
            BlindSpot.UNKNOWN_ARGUMENTS: any(map(_has_unknown_arguments, want.queues.values())),
        }
        return tuple(spot for spot in self.blind_spots if hides.get(spot, False))


@dataclass(frozen=True)
class Sighting:
    """What the management API shows of a vhost, read without the spec (``look``).

    Either ``overview`` and ``topology`` (without counts), or ``failed``: why
    the API could not be used, so that ``read_live`` reads over AMQP instead
    (which needs the spec: it declares the spec's objects).
    """

    overview: Overview | None = None
    topology: Topology | None = None
    failed: Phrase | None = None


async def look(url: BrokerURL, *, timeout: float) -> Sighting:
    """The management API's view of ``url.vhost``: what ``read_live`` starts from.

    It needs no spec, so the command line reads it while the spec is read and
    checked (``converge.look``).  Raises what ``read_live`` raises for the API:
    another broker's API (``same_broker``), or its failure when it was given
    explicitly.
    """
    try:
        overview = await read_overview(url, timeout=timeout)
        topology = await read_vhost(url, timeout=timeout, counts=False)
    except (ManagementError, ConnectionFailed) as exc:
        why = _api_failed(url, exc)
    else:
        # What another broker holds must not become the plan (the API's own errors,
        # above, come first: they say what is wrong with the API given).
        await same_broker(url, overview, timeout=timeout)
        return Sighting(overview, topology)
    return Sighting(failed=why)  # outside `except`: no chained context


async def read_live(
    url: BrokerURL,
    spec: Spec,
    *,
    management: bool = True,
    timeout: float,
    seen: Sighting | None = None,
) -> LiveState:
    """The live state of ``url.vhost`` as it concerns ``spec``.

    With ``management`` the API is read first (or ``seen``, what ``look`` read
    of it already); when it cannot be used (not reachable, or it refuses this
    user) the state is read over AMQP instead, whose own errors (wrong login,
    no vhost, unreachable) are then the ones raised, unless the management URL
    was given explicitly: then its failure is raised.  ``timeout`` bounds every
    single broker call.
    """
    if not management:
        return await _read_amqp(url, spec, timeout, Phrase.of("the management API was not asked"))
    if seen is None:
        seen = await look(url, timeout=timeout)
    if seen.topology is None or seen.overview is None:
        return await _read_amqp(url, spec, timeout, seen.failed or Phrase.of("not read"))
    live = await _verify_counts(url, spec, seen.topology, timeout)
    return replace(live, version=seen.overview.version, management=api_base(url))


def _api_failed(url: BrokerURL, exc: BrokerError) -> Phrase:
    """Why plan reads over AMQP instead; raised when the API was given explicitly."""
    if url.management_required:
        raise ManagementError(
            Phrase.of(
                phrase_of(exc),
                " (the management API was given explicitly (",
                Option.MANAGEMENT_URL,
                "), so plan will not fall back to AMQP, which cannot see bindings or "
                "policies; fix the URL, or leave it out to read over AMQP)",
            )
        ) from None
    return Phrase.of("the management API could not be used: ", phrase_of(exc))


async def same_broker(url: BrokerURL, overview: Overview, *, timeout: float) -> None:
    """Refuse (``ManagementError``) when the management API is another broker's.

    The API names its cluster and node (``/api/overview``); the AMQP connection
    announces its cluster's name in its server properties (3.10 sends
    ``cluster_name``, not the node).  The nodes of one cluster share the name,
    so an API on another node of the same cluster is accepted; two brokers
    given the same cluster name by hand cannot be told apart (said in the
    README).  Either name missing (not RabbitMQ, or too old): nothing to compare.
    """
    connection = await connect(url, timeout=timeout)
    try:
        announced = _server_text(connection, "cluster_name")
    finally:
        await _close(connection, timeout)
    if announced is None or overview.cluster_name is None or announced == overview.cluster_name:
        return
    raise ManagementError(
        Phrase.of(
            f"the management API at {api_base(url)} belongs to cluster "
            f"{overview.cluster_name!r} (node {overview.node!r}), and {url.endpoint} over AMQP "
            f"to cluster {announced!r}: they are different brokers, so plan will not use "
            f"what it read there; give the management API of the broker at {url.endpoint} with ",
            Option.MANAGEMENT_URL,
        )
    )


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
        if want.get(name) != queue
        and (name in want or not queue.exclusive)
        and queue.down_on is None  # nothing of it can be asked; plan leaves it alone
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
        return LiveState(
            replace(topology, queues=queues),
            MANAGEMENT,
            (BlindSpot.QUEUE_COUNTS,),
            fallback=Phrase.of("counting messages failed: ", phrase_of(exc)),
        )
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


async def _read_amqp(url: BrokerURL, spec: Spec, timeout: float, why: Phrase) -> LiveState:
    want = desired(spec)
    exchanges = {n: x for n, x in want.exchanges.items() if not is_reserved_exchange(n)}
    probe = await _probe(url, exchanges, want.queues, timeout, verify=True)
    found_queues = {}
    for name, node in probe.down.items():  # there, but nothing of it can be seen
        found_queues[name] = replace(want.queues[name], down_on=node)
    for name, counts in probe.queues.items():
        queue = probe.differing.get(name, want.queues[name])
        assert isinstance(queue, QueueState)
        if counts is None:  # RESOURCE_LOCKED: it exists, exclusive to another connection
            found_queues[name] = replace(queue, exclusive=True)
        else:
            found_queues[name] = _with_counts(queue, counts)
    found_exchanges = {}
    for name in probe.exchanges:
        exchange = probe.differing.get(name, want.exchanges[name])
        assert isinstance(exchange, ExchangeState)
        found_exchanges[name] = exchange

    def exists(name: str, kind: str) -> bool:
        if kind == "queue":
            return name in found_queues
        return name in found_exchanges or is_reserved_exchange(name)

    bindings = frozenset(
        b
        for b in want.bindings
        if exists(b.source, "exchange") and exists(b.destination, b.destination_type)
    )
    spots = list(_AMQP_BLIND)
    if any(_has_unknown_arguments(q) for q in want.queues.values()):
        spots.append(BlindSpot.UNKNOWN_ARGUMENTS)
    if any(q.type == "stream" for q in found_queues.values()):
        spots.append(BlindSpot.STREAM_COUNTS)
    return LiveState(
        Topology(found_exchanges, found_queues, bindings),
        AMQP,
        tuple(spots),
        fallback=why,
        version=probe.version,
    )


#: The x-arguments a 3.10 broker compares on a redeclare, per queue type
#: (``queue_arguments`` of rabbit_classic_queue, rabbit_quorum_queue and
#: rabbit_stream_queue at v3.10.8): others are ignored.
_COMPARED: Final[Mapping[str, frozenset[str]]] = {
    "classic": frozenset(
        {
            "x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
            "x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow",
            "x-queue-mode", "x-queue-version", "x-single-active-consumer",
            "x-queue-master-locator", "x-queue-type",
        }
    ),
    "quorum": frozenset(
        {
            "x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
            "x-dead-letter-strategy", "x-max-length", "x-max-length-bytes", "x-overflow",
            "x-delivery-limit", "x-single-active-consumer", "x-queue-leader-locator",
            "x-max-in-memory-length", "x-max-in-memory-bytes",
            "x-quorum-initial-group-size", "x-queue-type",
        }
    ),
    "stream": frozenset(
        {
            "x-max-length-bytes", "x-max-age", "x-stream-max-segment-size-bytes",
            "x-initial-cluster-size", "x-queue-leader-locator", "x-queue-type",
        }
    ),
}  # fmt: skip


def _has_unknown_arguments(queue: QueueState) -> bool:
    compared = _COMPARED.get(queue.type, frozenset())
    return any(key not in compared for key, _ in queue.arguments)


def _with_counts(queue: QueueState, counts: tuple[int, int]) -> QueueState:
    messages, consumers = counts
    return replace(
        queue, messages=_larger(None, messages, trust=queue.type != "stream"), consumers=consumers
    )


@dataclass
class _Probe:
    """What the declares found; the probers fill it in."""

    exchanges: set[str] = field(default_factory=set)
    #: queue → (messages, consumers); ``None`` for a queue exclusive to another connection.
    queues: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    #: Objects that exist with other properties than asked: as the broker has them.
    differing: dict[str, ExchangeState | QueueState] = field(default_factory=dict)
    #: Queues whose home node the broker says is down → that node.
    down: dict[str, str] = field(default_factory=dict)
    #: The version the broker gave in its server properties (``None``: not connected).
    version: str | None = None


_Job = tuple[str, str, ExchangeState | QueueState | None]

#: RabbitMQ's 404 for a durable classic queue whose node is down (3.10.8, measured).
_HOME_DOWN: Final = re.compile(r"home node '(?P<node>[^']+)' of durable queue .* is down")


async def _probe(
    url: BrokerURL,
    exchanges: Mapping[str, ExchangeState] | Iterable[str],
    queues: Mapping[str, QueueState] | Iterable[str],
    timeout: float,
    *,
    verify: bool = False,
) -> _Probe:
    """Passive declares: which exist, and what the queues hold; with ``verify``, whether they match.

    A miss (404) or a refusal (406) closes its channel, so each of a few
    channels probes in turn and is replaced after one.  With ``verify`` each
    object found is declared again actively with the properties it is mapped
    to: that changes nothing when they match (the object exists, and a declare
    of an existing object with equal properties is a no-op), and a 406 names
    the first property that differs.
    """
    jobs: list[_Job] = [
        ("exchange", name, _wanted(exchanges, name, verify)) for name in exchanges
    ] + [("queue", name, _wanted(queues, name, verify)) for name in queues]
    found = _Probe()
    if not jobs:
        return found
    connection = await connect(url, timeout=timeout)
    found.version = _server_version(connection)
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


def _wanted(
    objects: Mapping[str, Any] | Iterable[str], name: str, verify: bool
) -> ExchangeState | QueueState | None:
    return objects[name] if verify and isinstance(objects, Mapping) else None


async def _prober(
    connection: AbstractConnection,
    url: BrokerURL,
    todo: Iterator[_Job],
    found: _Probe,
    *,
    timeout: float,
) -> None:
    channel: AbstractChannel | None = None
    for kind, name, wanted in todo:
        try:
            if channel is None or channel.is_closed:
                channel = await _channel(connection, timeout)
            if kind == "exchange":
                await asyncio.wait_for(channel.exchange_declare(name, passive=True), timeout)
                found.exchanges.add(name)
            else:
                ok = await asyncio.wait_for(channel.queue_declare(name, passive=True), timeout)
                found.queues[name] = queue_counts(ok)
            if wanted is not None:
                await _verify(channel, wanted, timeout)
        except amqp_errors.ChannelNotFoundEntity as exc:
            channel = None  # absent (or its node is down); the broker closed the channel
            if kind == "queue" and (down := _HOME_DOWN.search(reply_text(exc))) is not None:
                found.down[name] = down["node"]
        except amqp_errors.ChannelLockedResource:
            found.queues[name] = None
            channel = None
        except amqp_errors.ChannelPreconditionFailed as exc:
            refusal = inequivalent.parse(reply_text(exc))
            if wanted is None or refusal is None:
                raise broker_error(exc, url, f"declare of {kind} {name!r}") from None
            found.differing[name] = inequivalent.current_state(wanted, refusal)
            channel = None
        except (TimeoutError, Exception) as exc:
            raise broker_error(exc, url, f"declare of {kind} {name!r}") from None


def _server_version(connection: AbstractConnection) -> str | None:
    """The ``version`` of the broker's server properties (Connection.Start)."""
    return _server_text(connection, "version")


def _server_text(connection: AbstractConnection, key: str) -> str | None:
    """One text of the broker's server properties (Connection.Start), else ``None``."""
    value = (connection.server_properties or {}).get(key)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


async def _channel(connection: AbstractConnection, timeout: float) -> AbstractChannel:
    return await asyncio.wait_for(connection.channel(publisher_confirms=False), timeout)


async def _verify(
    channel: AbstractChannel, wanted: ExchangeState | QueueState, timeout: float
) -> None:
    """Declare ``wanted`` as it is: a no-op when the broker's object matches, else a 406."""
    declare: Awaitable[object]
    if isinstance(wanted, ExchangeState):
        declare = channel.exchange_declare(
            wanted.name,
            exchange_type=wanted.type,
            durable=wanted.durable,
            auto_delete=wanted.auto_delete,
            internal=wanted.internal,
            arguments=wanted.declare_arguments(),
        )
    else:
        declare = channel.queue_declare(
            wanted.name,
            durable=wanted.durable,
            auto_delete=wanted.auto_delete,
            exclusive=wanted.exclusive,
            arguments=wanted.declare_arguments(),
        )
    await asyncio.wait_for(declare, timeout)


async def _close(connection: AbstractConnection, timeout: float) -> None:
    """Close without letting a dead or slow broker turn a result into an error."""
    with contextlib.suppress(TimeoutError, Exception):
        await asyncio.wait_for(connection.close(), timeout)
