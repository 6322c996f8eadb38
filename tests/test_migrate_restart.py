"""``apply --migrate`` cut by a broker restart, on a RabbitMQ node of the test's own.

The shared broker cannot be restarted under the other tests, so these start
their own node (``nodes.own_node``).  A queue full of persistent messages must
be replaced (classic -> quorum); when 2,000 have moved, out (M4) or back (M9),
the node is stopped (SIGTERM, data kept) and started again: the apply fails
with a ``BrokerError``, the plan shows the cut migration (``drains_into``), and
a second ``apply --migrate`` finishes it with every confirmed message in the
new queue at least once (duplicates counted), no temporary queue left and an
empty plan.  A node stopped for good beside a running apply makes it fail
within its timeouts, and the next apply too: never a hang.  Every wait is
bounded.  Figures (stop, start, duplicates, second apply) go to the JUnit
properties and to stdout (``-s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiormq
import pytest

from amqp import Bounded, channel_on, publish_ids
from broker import ManagementAPI, Vhost
from rabbitry.broker import apply as executor
from rabbitry.broker import converge
from rabbitry.broker.migrate import PREFETCH, PREFIX, temporary_queue
from rabbitry.broker.plan import Action, Kind
from rabbitry.broker.url import BrokerURL, parse_url
from rabbitry.errors import BrokerError
from rabbitry.spec.model import Binding, Exchange, ExchangeType, Queue, QueueType, Spec

if TYPE_CHECKING:
    from nodes import OwnNode

NODE_TIMEOUT = 60.0  # nodes.NODE_TIMEOUT, without importing nodes before pytest does

# The fixture own_node; imported here (not above) so that pytest rewrites its asserts.
pytest_plugins = ["nodes"]
pytestmark = pytest.mark.broker

#: apply's bound on each broker call and each wait for the mover's progress.
TIMEOUT = 10.0
#: Messages in the queue; the node is stopped when ``CUT_AT`` of them have moved.
MESSAGES = 5000


run = Bounded(120)


def spec_of(kind: QueueType) -> Spec:
    """Exchange ``x`` (direct) routes key ``q`` to queue ``q`` of type ``kind``."""
    return Spec(
        path=Path("topology.yaml"),
        exchanges={"x": Exchange("x", ExchangeType.DIRECT)},
        queues={"q": Queue("q", kind, durable=True)},
        bindings=(Binding("x", "q", key="q"),),
    )


def own_vhost(node: OwnNode) -> Vhost:
    """A fresh vhost on ``node``; not deleted (the node's folder goes with it)."""
    name = f"rabbitry-test-{uuid.uuid4().hex[:12]}"
    api = ManagementAPI(node.config)
    api.create_vhost(name)
    return Vhost(name, node.config.amqp_url_for(name), node.management_url, api)


def url_of(node: OwnNode, vhost: Vhost) -> BrokerURL:
    return parse_url(vhost.amqp_url, management=node.management_url)


# -- the broker, by hand (as in test_migrate.py) ---------------------------------------------


def fill(vhost: Vhost, n: int) -> list[str]:
    """``n`` persistent messages with ids ``q-<i>`` through ``x``, each confirmed; their ids."""
    ids = [f"q-{i}" for i in range(n)]
    run(publish_ids(vhost, "x", "q", ids))
    return ids


def ids_in(vhost: Vhost, queue: str) -> Counter[str]:
    """The message ids in ``queue``, each as often as it is there; the queue is emptied."""

    async def go() -> Counter[str]:
        found: Counter[str] = Counter()
        async with channel_on(vhost) as channel:
            held = (await channel.queue_declare(queue, passive=True)).message_count
            done = asyncio.Event()

            def take(message: Any) -> None:
                found[message.header.properties.message_id] += 1
                if found.total() >= held:
                    done.set()

            if held:
                await channel.basic_consume(queue, take, no_ack=True)
                await asyncio.wait_for(done.wait(), 60)
        return found

    return run(go())


# -- the cut ---------------------------------------------------------------------------------

#: Where the node is stopped: M4 (the queue into the temporary one), M9 (back).
PHASES = ("moving out", "moving back")
#: Messages moved in that phase when the node is stopped.
CUT_AT = 2000


def amqp_counts(vhost: Vhost, *queues: str) -> dict[str, int]:
    """Each queue's ready messages by passive declare; a queue absent is left out.

    Not the management API: it lists no count for a queue until its first
    statistics (~5 s after a start).
    """

    async def go() -> dict[str, int]:
        found: dict[str, int] = {}
        connection = await aiormq.connect(vhost.amqp_url)
        try:
            for queue in queues:
                with contextlib.suppress(aiormq.exceptions.ChannelNotFoundEntity):
                    ok = await (await connection.channel()).queue_declare(queue, passive=True)
                    found[queue] = int(ok.message_count or 0)
        finally:
            await connection.close()
        return found

    return run(go())


class Cut:
    """The migration's ``moved`` hook: stops the node when ``CUT_AT`` messages have moved
    in ``phase``.

    ``pause``: the stop runs inside the hook, so the apply's process is paused while
    the node stops (as a process is while its machine is busy), and the cut lands in
    the phase chosen, every time.  Watched from outside instead, it did not: from
    SIGTERM to the node closing its connections takes ~1 s, and 10,000 messages move
    out in ~1.5 s, so the cut landed one step late in 2 runs of 4.  Without ``pause``
    the node stops beside the running apply, which is slowed (200 ms a write of at
    most 500 copies) so that it is still moving when the node goes.
    """

    def __init__(self, node: OwnNode, phase: str, *, pause: bool = True) -> None:
        self.node, self.phase, self.pause = node, phase, pause
        self.at: tuple[str, int] | None = None
        self.stop_seconds = 0.0
        self.stopped_from = 0.0  # when the apply could see the stop
        self.moved_since = 0
        self._stopping: threading.Thread | None = None

    def __call__(self, queue: str, moved: int) -> None:
        source = "q" if self.phase == "moving out" else temporary_queue("q")
        if self.at is None and queue == source and moved >= CUT_AT:
            self.at = (queue, moved)
            if self.pause:
                self._stop()
                self.stopped_from = time.monotonic()
            else:
                self.stopped_from = time.monotonic()
                self._stopping = threading.Thread(target=self._stop, daemon=True)
                self._stopping.start()
        elif self._stopping is not None and self._stopping.is_alive():
            self.moved_since += 1
            time.sleep(0.2)

    def _stop(self) -> None:
        self.stop_seconds = self.node.stop()

    def join(self) -> None:
        if self._stopping is not None:
            self._stopping.join(2 * NODE_TIMEOUT)
            assert not self._stopping.is_alive(), "the node did not stop"


async def apply_cut(cut: Cut, spec: Spec, url: BrokerURL) -> tuple[BrokerError | None, float]:
    """``apply --migrate`` with ``cut`` as its ``moved`` hook: the ``BrokerError`` it raised
    (``None`` if none) and the seconds from when it could see the stop to it.

    ``converge.apply`` without policies, through the executor that takes the hook
    (as in test_migrate.py).
    """
    planned = await converge.plan(spec, url, timeout=TIMEOUT)
    try:
        await executor.execute(planned.plan, url, migrate=True, timeout=TIMEOUT, moved=cut)
    except BrokerError as exc:
        return exc, time.monotonic() - cut.stopped_from
    finally:
        await asyncio.to_thread(cut.join)
    return None, 0.0


def rows_of(vhost: Vhost) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in vhost.queues()}


@pytest.mark.parametrize("phase", PHASES)
def test_a_migration_cut_by_a_broker_restart_is_finished_by_the_next_apply(
    own_node: OwnNode, phase: str, record_property: Callable[[str, object], None]
) -> None:
    old, new = spec_of(QueueType.CLASSIC), spec_of(QueueType.QUORUM)
    vhost = own_vhost(own_node)
    url = url_of(own_node, vhost)
    run(converge.apply(old, url, timeout=TIMEOUT))
    ids = fill(vhost, MESSAGES)
    temp = temporary_queue("q")
    cut = Cut(own_node, phase)

    failure, failed_after = run(apply_cut(cut, new, url))
    start_seconds = own_node.start()

    assert cut.at is not None, "the migration never reached the cut"
    assert isinstance(failure, BrokerError), "apply went on through a broker restart"
    assert "apply again with migrate=True finishes it" in str(failure)
    assert failed_after < TIMEOUT  # the node closed every connection as it stopped
    # What the broker holds says where the next run resumes (migrate.py's docstring).
    held = amqp_counts(vhost, "q", temp)
    pending = run(converge.plan(new, url, timeout=TIMEOUT)).plan
    queues = [(c.action, c.name, c.drains_into) for c in pending.changes if c.kind is Kind.QUEUE]
    cut_migration = (Action.DELETE, temp, "q")
    if phase == "moving out":  # the queue is still the old one
        assert queues == [(Action.REPLACE, "q", None), cut_migration]
    else:  # the queue is the new one already
        assert queues == [cut_migration]
    assert sum(held.values()) >= len(ids)

    started = time.monotonic()
    done = run(converge.apply(new, url, migrate=True, timeout=TIMEOUT))
    seconds = time.monotonic() - started

    # Moving out: all of it moved back by a migration again (M1-M10), the cut one then
    # found finished; moving back: what the temporary queue held moved back (M7-M10).
    assert {m.queue for m in done.result.migrations} == {"q"}
    back = held[temp] + (held["q"] if phase == "moving out" else 0)
    assert sum(m.moved_back for m in done.result.migrations) == back
    assert rows_of(vhost)["q"]["type"] == "quorum"
    assert not any(name.startswith(PREFIX) for name in rows_of(vhost))
    after = run(converge.plan(new, url, timeout=TIMEOUT)).plan
    assert after.empty, [c.describe() for c in after.changes]
    found = ids_in(vhost, "q")
    missing = set(ids) - set(found)
    duplicates = sum(found.values()) - len(found)
    report = {
        "cut_at": cut.at,
        "error": str(failure),
        "failed_after_s": round(failed_after, 2),
        "stop_s": round(cut.stop_seconds, 2),
        "start_s": round(start_seconds, 2),
        "held_after_restart": held,
        "messages_before": len(ids),
        "messages_after": sum(found.values()),
        "duplicates": duplicates,
        "second_apply_s": round(seconds, 2),
    }
    for key, value in report.items():
        record_property(key, value)
    print(phase, report)
    assert not missing, f"{len(missing)} confirmed messages lost, e.g. {sorted(missing)[:5]}"
    assert not set(found) - set(ids)
    # Copies confirmed whose originals' acks the restart lost: at most a prefetch.
    assert duplicates <= PREFETCH, duplicates


def test_a_node_stopped_for_good_during_a_migration_fails_apply_within_its_timeouts(
    own_node: OwnNode, record_property: Callable[[str, object], None]
) -> None:
    old, new = spec_of(QueueType.CLASSIC), spec_of(QueueType.QUORUM)
    vhost = own_vhost(own_node)
    url = url_of(own_node, vhost)
    run(converge.apply(old, url, timeout=TIMEOUT))
    fill(vhost, MESSAGES)
    cut = Cut(own_node, "moving out", pause=False)

    failure, failed_after = run(apply_cut(cut, new, url))

    assert cut.at is not None, "the migration never reached the cut"
    assert isinstance(failure, BrokerError), "apply went on with the node stopping"
    assert f"RabbitMQ at 127.0.0.1:{own_node.amqp_port}" in str(failure)
    assert failed_after < TIMEOUT
    assert not own_node.running

    # Down for good: the next apply says so within its timeout, naming the node.
    started = time.monotonic()
    with pytest.raises(BrokerError) as again:
        run(converge.apply(new, url, migrate=True, timeout=TIMEOUT), limit=3 * TIMEOUT)
    down_after = time.monotonic() - started
    report = {
        "cut_at": cut.at,
        "stop_s": round(cut.stop_seconds, 2),
        "writes_while_stopping": cut.moved_since,
        "error_while_stopping": str(failure),
        "failed_after_s": round(failed_after, 2),
        "error_when_down": f"{type(again.value).__name__}: {again.value}",
        "down_error_s": round(down_after, 2),
    }
    for key, value in report.items():
        record_property(key, value)
    print(report)
    assert f"127.0.0.1:{own_node.management_port}" in str(again.value)
    assert down_after <= TIMEOUT + 1
