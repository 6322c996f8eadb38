"""Carry out a ``Plan`` on a live vhost: ``rabbitry apply``'s executor.

Order: the plan's policy changes (through the management API,
``broker.policies``), exchange creates and replaces, queue creates and
replaces, binding creates, then the plan's deletions (bindings, queues,
exchanges); each kind is a stage, and a stage starts when the one before it
has finished.  Policies come first because a policy written after the queues
it matches makes the broker re-apply it to each of them (an update of every
queue's record, one policy at a time): at 20,000 queues the six policies of
``bench/scale.py``'s spec took 15 s written last, and the management API timed
out under load; written first, each queue takes its policy as it is declared,
as ``rabbitmqctl import_definitions`` does.  A policy may name objects that
do not exist yet, so nothing depends on the AMQP changes.  A replace is
delete-then-declare of that one object, on one channel, in that order.  Before
anything is touched, a plan that would lose messages or consumers is refused
(``DataLossRefused``) unless ``allow_data_loss``.

Pipelining.  aiormq holds a lock per channel for each RPC, so one channel is
one round trip at a time; concurrency comes from a pool of channels on one
connection, each working through a stage in chunks: every call of a chunk is
sent with ``nowait`` except the last, whose reply flushes the chunk (the
broker handles a channel's frames in order) and surfaces any error.  Each
change is its calls as pamqp frames (``_Op.calls``: data, built once); the
calls sent with ``nowait`` are written as one batch, not one aiormq task and
lock each (``_send``).  A stage is cut
into chunks of at most ``CHUNK`` calls, the same number per channel, so that
no channel is left with a tail while the others idle.

Measured with ``bench/apply.py`` (2,000 classic queues + 2,000 bindings + 10
exchanges into an empty vhost; 2 cores, RabbitMQ 3.10.8 on the same machine,
other sessions' tests loading it; seconds, median of 3):

==========  ===============  =======================
channels    one RPC a call   ``nowait``, one flush
                             per chunk of <= 100
==========  ===============  =======================
1           9.5              8.2
4           5.0              4.2
16          3.3              2.8
32          ..               2.5
64          3.1              2.3
==========  ===============  =======================

The broker's CPU is the limit: for the whole apply it spends 6.3 CPU-seconds
with one channel, 4.9 with 4, 3.6 with 16 or 64 (concurrent declares cost it
less each; why, was not measured), so with 16+ channels both cores are busy;
the client spends 0.25-0.35 s.  ``nowait`` saves the round trips and about
half the client's CPU (aiormq's per-RPC task), which on 2 cores the broker
gets instead.  Past 16 channels the gain is within the noise; 64 was best in
three interleaved runs, 128 no better.  The same run's ``rabbitmqctl
import_definitions`` takes 4.5-7.8 s: apply is 2.2-3.1x faster here
(``bench/README.md``), short of the issue's 4x; with the broker's CPU
saturated during the apply, a faster client cannot close that gap on this
machine.

Data.  A queue the plan saw empty and unused is replaced or deleted without
``allow_data_loss``; a classic one is then deleted with ``if_empty`` and
``if_unused``, so a message that arrived since the plan keeps it (406, the
run stops).  Quorum and stream queues do not support those flags (the broker
closes the connection), so for them that window stays open.

Migrations (``migrate=True``).  Every queue the plan replaces is migrated
instead (``broker.migrate``: its messages parked in a temporary queue and
moved back, its bindings kept, publishes during the change kept), whether
it holds messages, has consumers (their bindings and the messages that
arrive meanwhile matter as much), or neither (a publisher may be running): a
plain delete-then-declare loses what arrives in between.  They run one at a
time after the queue stage, before the bindings: a migration is long, and it
needs the exchanges its bindings come from.  The temporary queues of cut
migrations (``Change.drains_into``) are finished after the binding stage,
when their queue exists as the spec says with its bindings.  A stream or an
exclusive queue cannot be migrated: a replace of one that holds data is
still refused unless ``allow_data_loss``.

Errors.  A 403/404/405/406 closes its channel; with ``nowait`` the failing
call is found from the broker's reply text, which names the queue or
exchange.  The first error stops the run: the other channels finish the chunk
they are on (no RPC is cancelled half-way), the connection is closed, and the
error is raised, mapped once by ``amqp.broker_error``.  Every declare, delete
and unbind is idempotent on RabbitMQ, so a re-run converges.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import aiormq.exceptions as amqp_errors
from aiormq.abc import AbstractChannel, AbstractConnection, ChannelFrame
from pamqp import commands

from rabbitry.broker import migrate as migration
from rabbitry.broker import policies
from rabbitry.broker._aiormq import frame_channel
from rabbitry.broker.amqp import broker_error, connect, reply_text
from rabbitry.broker.plan import Action, Change, Kind, Plan
from rabbitry.broker.state import QueueState
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import (
    AccessRefused,
    AtRisk,
    BrokerError,
    BrokerTimeout,
    ConnectionFailed,
    DataLossRefused,
    NotFound,
    Option,
    PreconditionFailed,
    with_hint,
)

__all__ = [
    "DEFAULT_CHANNELS",
    "ApplyResult",
    "data_loss_refusal",
    "execute",
    "made_before",
    "migrates",
]

#: Channels working through a stage at once (see the table above); never more than a
#: stage has changes.
DEFAULT_CHANNELS = 64
#: At most this many calls per chunk: all but the last sent with ``nowait``.
CHUNK = 100

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ApplyResult:
    applied: int  # changes carried out
    seconds: float  # wall time, connecting included
    #: What each migration did (``migrate=True``), in the order they ran.
    migrations: tuple[migration.Migrated, ...] = ()


async def execute(
    plan: Plan,
    url: BrokerURL,
    *,
    allow_data_loss: bool = False,
    migrate: bool = False,
    timeout: float = 10.0,
    channels: int = DEFAULT_CHANNELS,
    progress: Progress | None = None,
    moved: migration.Moved | None = None,
) -> ApplyResult:
    """Carry out ``plan`` on ``url``'s vhost; ``progress(done, total)`` as changes complete.

    Its policy changes are written first, through the management API.

    With ``migrate``, queue replaces and cut migrations are carried out by
    ``broker.migrate`` (``moved(queue, n)`` as their messages move), and only
    what cannot be migrated counts as data loss.  Raises ``DataLossRefused``
    (before touching anything) or a ``BrokerError`` naming the broker, the
    object and what to do; ``timeout`` bounds every call.
    """
    started = time.monotonic()
    at_risk = [c for c in plan.data_loss if not (migrate and migrates(c))]
    refusal = None if allow_data_loss else data_loss_refusal(at_risk, migrate=migrate)
    if refusal is not None:
        raise refusal
    over_amqp, policy_changes = policies.split(plan)
    moving = [c for c in over_amqp.changes if migrate and migrates(c)]
    stages = _stages((c for c in over_amqp.changes if c not in moving), allow_data_loss)
    total = sum(map(len, stages)) + len(moving) + len(policy_changes)
    if not total:
        return ApplyResult(0, time.monotonic() - started)
    run = _Run(url, timeout, total, progress)
    run.report()
    await _write_policies(policy_changes, run)
    migrated: list[migration.Migrated] = []
    migrating = False

    async def migrations(finishing: bool) -> None:
        nonlocal migrating
        for change in moving:
            if (change.drains_into is not None) != finishing:
                continue
            migrating = True
            if change.drains_into is not None:
                done = await migration.finish(url, change.drains_into, timeout=timeout, moved=moved)
            else:
                assert change.queue is not None, change
                assert isinstance(change.before, QueueState), change
                done = await migration.migrate(
                    url, change.queue, change.before, timeout=timeout, moved=moved
                )
            migrating = False
            migrated.append(done)
            run.done += 1
            run.report()

    widest = max(map(len, stages))
    connection = await connect(url, timeout=timeout) if widest else None
    try:
        pool = (
            await _open_channels(connection, max(1, min(channels, widest)), run)
            if connection is not None
            else []
        )
        for index, ops in enumerate(stages):
            if _ORDER[index] == (False, Kind.BINDING):
                await migrations(finishing=False)
            if _ORDER[index] == (True, Kind.QUEUE):
                await migrations(finishing=True)
            if ops:
                await _stage(pool, ops, run)
    except BrokerError as exc:
        if not migrating:  # a cut migration says how to finish it already
            _say_what_was_done(exc, run)
        raise
    finally:
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout)
    return ApplyResult(run.done, time.monotonic() - started, tuple(migrated))


async def _write_policies(changes: Sequence[Change], run: _Run) -> None:
    """Every policy change, before any AMQP change (see the module's docstring).

    A failure says nothing of what was made: the other writes were in flight
    concurrently, and which of them the broker took is not known.
    """
    if not changes:
        return
    run.done += await policies.carry_out(changes, run.url, timeout=run.timeout)
    run.made += [f"{c.action.value} {c.kind.value.replace('_', ' ')} {c.name!r}" for c in changes]
    run.report()


def migrates(change: Change) -> bool:
    """A migrating apply (``migrate=True``) carries ``change`` out by moving messages, not by
    losing them: a queue replace (but of a stream or exclusive queue), or a cut migration's
    queue."""
    if change.kind is not Kind.QUEUE:
        return False
    if change.drains_into is not None:
        return True
    before = change.before
    return (
        change.action is Action.REPLACE
        and isinstance(before, QueueState)
        and not migration.refusal(before)
    )


def data_loss_refusal(
    changes: Sequence[Change], *, migrate: bool = False
) -> DataLossRefused | None:
    """The refusal of ``changes`` (queues apply would replace or delete), ``None`` if none.

    ``migrate``: the refusal is of a migrating apply (``changes`` are what it
    cannot migrate), so only ``allow_data_loss`` gets past it.
    """
    if not changes:
        return None
    remedies = (Option.ALLOW_DATA_LOSS,) if migrate else (Option.MIGRATE, Option.ALLOW_DATA_LOSS)
    return DataLossRefused([_at_risk(c) for c in changes], remedies)


def _at_risk(change: Change) -> AtRisk:
    kind, action = change.kind.value, change.action.value
    if change.kind is Kind.EXCHANGE:
        return AtRisk(kind, action, change.name, bindings=change.lost_bindings)
    before = change.before
    return AtRisk(
        kind,
        action,
        change.name,
        messages=change.messages,
        consumers=change.consumers,
        differences=tuple(f.describe() for f in change.fields),
        unmanaged=change.action is Action.DELETE,
        cut_migration_of=change.drains_into,
        unmovable=(migration.refusal(before) or None) if isinstance(before, QueueState) else None,
    )


# -- what to send -------------------------------------------------------------


#: A broker call of apply's, as pamqp's frame; sent with ``nowait`` whenever the method
#: has it, except the last of a chunk (``_send``).
Call = (
    commands.Exchange.Declare
    | commands.Exchange.Delete
    | commands.Exchange.Bind
    | commands.Exchange.Unbind
    | commands.Queue.Declare
    | commands.Queue.Delete
    | commands.Queue.Bind
    | commands.Queue.Unbind
)


@dataclass(frozen=True)
class _Op:
    """One change as broker calls, and the objects an error reply may name for it."""

    what: str
    refs: frozenset[tuple[str, str]]
    #: The calls in order (a replace: delete, then declare), as data: ``_send`` is the one
    #: place they are sent, batched or one by one.
    calls: tuple[Call, ...]
    #: What carrying it out did, for an error that stops the run ("create exchange 'a'").
    done: str = ""


#: The stages in the order they run: (is a deletion, kind).
_ORDER = (
    (False, Kind.EXCHANGE),
    (False, Kind.QUEUE),
    (False, Kind.BINDING),
    (True, Kind.BINDING),
    (True, Kind.QUEUE),
    (True, Kind.EXCHANGE),
)


def _stages(changes: Iterable[Change], allow_data_loss: bool) -> list[list[_Op]]:
    stages: list[list[_Op]] = [[] for _ in _ORDER]
    for change in changes:
        stages[_ORDER.index((change.action is Action.DELETE, change.kind))].append(
            _op(change, allow_data_loss)
        )
    return stages


def _op(change: Change, allow_data_loss: bool) -> _Op:
    if change.kind is Kind.EXCHANGE:
        op = _exchange_op(change)
    elif change.kind is Kind.QUEUE:
        op = _queue_op(change, allow_data_loss)
    else:
        op = _binding_op(change)
    return replace(op, done=f"{change.action.value} {op.what}")


def _exchange_op(change: Change) -> _Op:
    name = change.name
    calls: list[Call] = []
    if change.action is not Action.CREATE:
        calls.append(commands.Exchange.Delete(exchange=name, nowait=True))
    if change.action is not Action.DELETE:
        x = change.exchange
        assert x is not None, change
        calls.append(
            commands.Exchange.Declare(
                exchange=x.name,
                exchange_type=x.type,
                durable=x.durable,
                auto_delete=x.auto_delete,
                internal=x.internal,
                arguments=x.declare_arguments(),
                nowait=True,
            )
        )
    return _Op(f"exchange {name!r}", frozenset({("exchange", name)}), tuple(calls))


def _queue_op(change: Change, allow_data_loss: bool) -> _Op:
    name = change.name
    calls: list[Call] = []
    if change.action is not Action.CREATE:
        # Refused above unless it was known empty and unused, or loss is allowed;
        # a classic queue is then deleted only if still so (quorum and stream
        # queues reject ``if_empty``/``if_unused`` with a connection error).
        guard = not allow_data_loss and _old_type(change) == "classic"
        calls.append(
            commands.Queue.Delete(queue=name, if_unused=guard, if_empty=guard, nowait=True)
        )
    if change.action is not Action.DELETE:
        q = change.queue
        assert q is not None, change
        calls.append(
            commands.Queue.Declare(
                queue=q.name,
                durable=q.durable,
                exclusive=False,
                auto_delete=q.auto_delete,
                arguments=q.declare_arguments(),
                nowait=True,
            )
        )
    return _Op(f"queue {name!r}", frozenset({("queue", name)}), tuple(calls))


def _old_type(change: Change) -> str:
    """The type of the queue on the broker, which a replace or delete removes."""
    before = change.before if isinstance(change.before, QueueState) else change.queue
    return before.type if before is not None else "classic"


def _binding_op(change: Change) -> _Op:
    b = change.binding
    assert b is not None, change
    args = b.declare_arguments()
    call: Call
    if b.destination_type == "exchange":
        kind = (
            commands.Exchange.Unbind if change.action is Action.DELETE else commands.Exchange.Bind
        )
        call = kind(
            destination=b.destination,
            source=b.source,
            routing_key=b.routing_key,
            nowait=True,
            arguments=args,
        )
    elif change.action is Action.DELETE:
        # queue.unbind has no no-wait flag in AMQP 0-9-1: always a round trip.
        call = commands.Queue.Unbind(
            queue=b.destination, exchange=b.source, routing_key=b.routing_key, arguments=args
        )
    else:
        call = commands.Queue.Bind(
            queue=b.destination,
            exchange=b.source,
            routing_key=b.routing_key,
            nowait=True,
            arguments=args,
        )
    refs = frozenset({("exchange", b.source), (b.destination_type, b.destination)})
    return _Op(f"binding {b.describe()}", refs, (call,))


def _waiting(call: Call) -> Call:
    """``call`` as one whose reply is awaited: the same frame without ``nowait``."""
    if not getattr(call, "nowait", False):
        return call
    waiting = copy.copy(call)
    waiting.nowait = False  # type: ignore[union-attr]
    return waiting


# -- running it -----------------------------------------------------------------


@dataclass
class _Run:
    url: BrokerURL
    timeout: float
    total: int
    progress: Progress | None
    done: int = 0
    #: Failures in the order they happened; the first one is raised.
    errors: list[BaseException] = field(default_factory=list)
    #: What was carried out (``_Op.done``), in the order the broker confirmed it.
    made: list[str] = field(default_factory=list)

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total)


async def _open_channels(
    connection: AbstractConnection, n: int, run: _Run
) -> list[AbstractChannel]:
    async def one() -> AbstractChannel:
        try:
            return await connection.channel(publisher_confirms=False, timeout=run.timeout)
        except Exception as exc:
            raise broker_error(exc, run.url, "opening a channel") from None

    opened = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    channels: list[AbstractChannel] = []
    for result in opened:
        if isinstance(result, BaseException):
            raise result
        channels.append(result)
    return channels


async def _stage(pool: Sequence[AbstractChannel], ops: Sequence[_Op], run: _Run) -> None:
    """Carry out ``ops`` on the channels of ``pool``; returns when all are done or one failed."""
    rounds = math.ceil(len(ops) / (len(pool) * CHUNK))  # chunks per channel, all alike
    size = math.ceil(len(ops) / (len(pool) * rounds))
    chunks = deque(ops[i : i + size] for i in range(0, len(ops), size))
    workers = min(len(pool), len(chunks))
    await asyncio.gather(*(_work(ch, chunks, run) for ch in pool[:workers]))
    if run.errors:
        raise run.errors[0]


async def _work(channel: AbstractChannel, chunks: deque[Sequence[_Op]], run: _Run) -> None:
    """Take chunks until there are none left or a channel has failed."""
    while chunks and not run.errors:
        chunk = chunks.popleft()
        sent: list[_Op] = []
        try:
            await asyncio.wait_for(_send(channel, chunk, sent), run.timeout)
        except Exception as exc:
            error, culprit = await _explain(exc, channel, sent, run.url)
            if culprit is not None:  # the broker carried out a channel's calls in order
                before = sent[: sent.index(culprit)]
                run.made += [op.done for op in before]
                run.done += len(before)
            run.errors.append(error)
            return
        run.done += len(chunk)
        run.made += [op.done for op in chunk]
        try:
            run.report()
        except BaseException as exc:
            run.errors.append(exc)
            return


async def _send(channel: AbstractChannel, chunk: Sequence[_Op], sent: list[_Op]) -> None:
    """Every call of ``chunk`` with ``nowait`` but the last, whose reply flushes them all.

    When every call has a ``nowait`` form, the calls but the last are
    marshalled by aiormq's ``ChannelFrame.marshall`` (pamqp's frames) and put
    on the connection's write queue as one write, not one aiormq task and
    lock each; the last goes through aiormq's ``rpc`` and waits for its
    reply.  The broker handles a channel's frames in order and closes the
    channel at the first refusal, discarding what follows until the close is
    answered, so that reply arrives only if every call before it succeeded.
    Nothing is written after the channel is seen closed: a frame that
    followed aiormq's Channel.CloseOk would make the broker close the whole
    connection (504 "expected 'channel.open'").  A chunk with a call that has
    no ``nowait`` (``queue.unbind``) is sent one call at a time, each waited
    for in turn when it must be.

    aiormq gets no timeout of its own: with one it puts the frame on the
    write queue in a task of its own, after its "channel closed?" check, so a
    frame could follow the broker's Channel.Close.  The caller's deadline
    covers the chunk instead.
    """
    calls = [call for op in chunk for call in op.calls]
    aiormq_channel = frame_channel(channel)
    if all(getattr(call, "nowait", False) for call in calls):
        sent.extend(chunk)
        if len(calls) > 1:
            if channel.is_closed:
                raise amqp_errors.ChannelInvalidStateError("the channel is closed")
            await aiormq_channel.write_queue.put(
                ChannelFrame.marshall(channel_number=aiormq_channel.number, frames=calls[:-1])
            )
        await aiormq_channel.rpc(_waiting(calls[-1]))
        return
    for i, op in enumerate(chunk):
        sent.append(op)
        for j, call in enumerate(op.calls):
            last = i == len(chunk) - 1 and j == len(op.calls) - 1
            await aiormq_channel.rpc(_waiting(call) if last else call)


_NAMED = re.compile(r"\b(queue|exchange)(?: name)? '(.*?)'(?= in vhost | contains |$)")


async def _explain(
    exc: BaseException, channel: AbstractChannel, sent: Sequence[_Op], url: BrokerURL
) -> tuple[BaseException, _Op | None]:
    """``exc`` as a ``BrokerError`` naming the change it came from, and that change when
    it is known.

    With ``nowait`` the failing call may be any one sent so far on this
    channel: the broker's reply names the queue or exchange it refused, and
    the first change sent that involves that object is the one.
    """
    if isinstance(exc, BrokerError):
        return exc, None
    if isinstance(exc, amqp_errors.ChannelInvalidStateError):
        exc = await _close_reason(channel) or exc
    named = _NAMED.search(reply_text(exc))
    culprit = None
    if named is not None:
        ref = (named.group(1), named.group(2))
        culprit = next((op for op in sent if ref in op.refs), None)
    return broker_error(exc, url, culprit.what if culprit else _describe(sent)), culprit


async def _close_reason(channel: AbstractChannel) -> BaseException | None:
    """Why ``channel`` was closed by the broker (a call after the close only says "closed")."""
    observer = channel.closing
    done, _ = await asyncio.wait({observer}, timeout=1.0)
    if not done:
        observer.cancel()
        return None
    return None if observer.cancelled() else observer.exception()


def _say_what_was_done(exc: BrokerError, run: _Run) -> None:
    """A cut apply says how far it got; a refused one, which changes it made before."""
    if isinstance(exc, ConnectionFailed | BrokerTimeout):
        with_hint(
            exc,
            f"apply was cut after {run.done} of {run.total} changes: every step is idempotent, "
            "so `rabbitry apply` run again (when the broker answers) finishes it",
        )
    elif isinstance(exc, AccessRefused | NotFound | PreconditionFailed):
        with_hint(exc, made_before(run.made, run.total))


#: At most this many changes are named in an error; the rest are counted.
_NAMED_CHANGES = 10


def made_before(made: Sequence[str], total: int) -> str:
    """What an apply stopped by a refusal had done: each change made, the first few named."""
    if not made:
        return f"nothing was changed before this refusal (0 of {total} changes made)"
    named = ", ".join(made[:_NAMED_CHANGES])
    more = f" and {len(made) - _NAMED_CHANGES} more" if len(made) > _NAMED_CHANGES else ""
    return (
        f"before this refusal apply made {len(made)} of {total} changes ({named}{more}) and "
        "no other: every step is idempotent, so `rabbitry apply` run again once the cause is "
        "fixed finishes it"
    )


def _describe(ops: Sequence[_Op]) -> str:
    if len(ops) == 1:
        return ops[0].what
    return f"one of {len(ops)} changes sent together, {ops[0].what} … {ops[-1].what}"
