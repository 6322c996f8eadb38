"""Faults caused on a RabbitMQ node of the module's own, and what they cost: the fault suite.

Every scenario causes its fault for real (a node restart, ``rabbitmqctl
close_all_connections``, a TCP proxy that drops, resets, blackholes or delays,
a queue or exchange deleted through the management API, a raw poison message,
a SIGTERM) while the runtime works, then checks that **no confirmed message is
lost** and that work goes on within a bounded time, and records its figures
(``figures``: lost, duplicates, recovery seconds) for the README's table.

Accounting: each Start carries a fresh ``job_id``; a publish that returned (or
an item of a ``publish_many`` not in its ``failures``) is *confirmed*; the
consumer's handler records every ``job_id`` it sees.  Lost = confirmed and
never handled; duplicates = handled more than once (at-least-once delivery
allows them: a message whose ack a cut swallowed comes again).

One node per module (``nodes.own_node``); one restart in all (about 12 s): the
other cuts use ``close_all_connections`` and the proxy, which close
connections the same way in a fraction of the time.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiormq
import httpx
import pytest
from pamqp.commands import Basic
from proxy import FaultProxy

from amqp import AT, Bounded, start, until
from broker import ManagementAPI, Vhost, fresh_vhost
from rabbitry.broker import converge
from rabbitry.broker.url import parse_url
from rabbitry.check import load_spec
from rabbitry.errors import (
    AccessRefused,
    ConnectionFailed,
    NotFound,
    PublishManyFailed,
    PublishNacked,
    RabbitryError,
    Unroutable,
)
from rabbitry.messaging._decode import MAX_DEPTH
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract
from specs import FLAGSHIP, write_spec

if TYPE_CHECKING:
    from conftest import Figures
    from nodes import OwnNode

pytest_plugins = ["nodes"]
pytestmark = pytest.mark.broker

WORKER = Path(__file__).resolve().parents[2] / "examples" / "jobs" / "worker.py"
#: Every recovery must be shorter than this (seconds after the fault ended).
RECOVERY_BOUND = 20.0
#: Heartbeat for the half-open scenario: a dead peer is noticed after (2 + 1) * 3 s at most.
HEARTBEAT = 2


run = Bounded(90)


async def waited(check: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``check()`` holds, or ``None`` after ``timeout``."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began >= timeout:
            return None
        await asyncio.sleep(0.05)
    return time.monotonic() - began


@pytest.fixture
def jobs(own_node: OwnNode) -> Iterator[Vhost]:
    """A fresh vhost on the own node with the flagship applied."""
    api = ManagementAPI(own_node.config)
    vhosts = fresh_vhost(api)
    vhost = next(vhosts)
    apply_flagship(own_node, vhost)
    try:
        yield vhost
    finally:
        own_node.start()  # a test may leave it stopped; the vhost goes through its API
        vhosts.close()


def apply_flagship(node: OwnNode, vhost: Vhost) -> None:
    url = parse_url(vhost.amqp_url, management=node.management_url)
    asyncio.run(converge.apply(load_spec(FLAGSHIP), url, timeout=10))


@pytest.fixture
def proxy(own_node: OwnNode) -> Iterator[FaultProxy]:
    """A fault proxy in front of the own node's AMQP port."""
    fault = FaultProxy("127.0.0.1", own_node.amqp_port)
    try:
        yield fault
    finally:
        fault.close()


def management(vhost: Vhost, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A management API call on ``vhost`` (``{vhost}`` in ``path`` is its quoted name)."""
    config = vhost.api.config
    response = httpx.request(
        method,
        f"{config.management_url}{path.format(vhost=quote(vhost.name, safe=''))}",
        auth=(config.username, config.password),
        timeout=10,
        **kwargs,
    )
    response.raise_for_status()
    return response


def messages_in(vhost: Vhost, queue: str) -> list[dict[str, Any]]:
    """The messages in ``queue`` now (read and requeued: classic queues only)."""
    got = management(
        vhost,
        "POST",
        f"/api/queues/{{vhost}}/{quote(queue, safe='')}/get",
        json={"count": 1000, "ackmode": "ack_requeue_true", "encoding": "auto"},
    ).json()
    return list(got)


def close_connections(node: OwnNode, vhost: Vhost) -> None:
    """Close every connection to ``vhost`` (``rabbitmqctl close_all_connections``)."""
    done = node.ctl("close_all_connections", "--vhost", vhost.name, "fault test")
    assert done.returncode == 0, done.stderr


@dataclass
class Ledger:
    """What was confirmed and what was handled, by job id."""

    confirmed: set[str] = field(default_factory=set)
    handled: list[str] = field(default_factory=list)
    failed: int = 0

    @property
    def lost(self) -> set[str]:
        return self.confirmed - set(self.handled)

    @property
    def duplicates(self) -> int:
        return len(self.handled) - len(set(self.handled))

    async def handler(self, delivery: Delivery[Any]) -> None:
        self.handled.append(delivery.body["job_id"])
        await asyncio.sleep(0.002)

    async def drained(self, timeout: float = 30) -> None:
        await until(lambda: not self.lost, timeout, f"for {len(self.lost)} confirmed jobs")


# -- cuts under load: publish_many, concurrent publish, consuming --------------------------


@dataclass
class Load:
    many: Ledger = field(default_factory=Ledger)
    each: Ledger = field(default_factory=Ledger)
    handled: list[str] = field(default_factory=list)
    failure: BaseException | None = None


async def under_load(
    url: str, contract: Contract, fault: Callable[[], Awaitable[float]]
) -> tuple[Load, float | None]:
    """Publish (``publish_many`` batches and concurrent ``publish``) and consume while
    ``fault`` runs; returns the ledgers and seconds from the fault's end (the moment
    ``fault`` returns) until a job published then was handled (``None``: not within
    ``RECOVERY_BOUND``).  A loss is counted, not raised, so that its figures are recorded."""
    load = Load()
    consumed = Ledger(handled=load.handled)
    stop = asyncio.Event()
    async with (
        Client(contract, url, heartbeat=HEARTBEAT, timeout=45) as consuming,
        Client(contract, url, heartbeat=HEARTBEAT, timeout=45) as publishing,
    ):
        consumer = consuming.consume("jobs.ready", consumed.handler)
        await consumer.ready()

        async def many() -> None:
            while not stop.is_set():
                batch = [start() for _ in range(100)]
                try:
                    await publishing.publish_many([("Start", p) for p in batch])
                    failed: set[int] = set()
                except PublishManyFailed as exc:
                    failed = set(exc.failures)
                except RabbitryError:
                    failed = set(range(len(batch)))
                load.many.failed += len(failed)
                load.many.confirmed |= {p["job_id"] for i, p in enumerate(batch) if i not in failed}
                await asyncio.sleep(0.05)

        async def one() -> None:
            payload = start()
            try:
                await publishing.publish("Start", payload)
            except RabbitryError:
                load.each.failed += 1
            else:
                load.each.confirmed.add(payload["job_id"])

        async def each() -> None:
            while not stop.is_set():
                await asyncio.gather(*(one() for _ in range(20)))
                await asyncio.sleep(0.05)

        workers = [asyncio.create_task(many()), asyncio.create_task(each())]
        await asyncio.sleep(1.0)
        ended = await fault()
        probe = start()
        await publishing.publish("Start", probe)
        load.each.confirmed.add(probe["job_id"])
        probed = await waited(lambda: probe["job_id"] in load.handled, RECOVERY_BOUND)
        recovery = None if probed is None else time.monotonic() - ended
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*workers)
        confirmed = load.many.confirmed | load.each.confirmed
        await waited(lambda: confirmed <= set(load.handled), 30)  # the test counts the rest
        await asyncio.sleep(1.0)  # late redeliveries count as duplicates
        load.failure = consumer.failure
    return load, recovery


FAULTS = ["node restart", "close_all_connections", "proxy drop", "proxy reset"]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_cut_under_load_loses_no_confirmed_message(
    own_node: OwnNode,
    *,
    jobs: Vhost,
    proxy: FaultProxy,
    contract: Contract,
    figures: Figures,
    fault: str,
) -> None:
    """The connection is cut under ``publish_many`` batches, 20 concurrent ``publish`` calls
    and a consumer at once: every confirmed job is handled, recovery is bounded."""
    url = proxy.url(jobs.amqp_url)

    async def cut() -> float:
        """Cause the fault; the moment it ended (the node answered, the connections closed)."""
        if fault == "node restart":
            await asyncio.to_thread(own_node.restart)
            return time.monotonic()
        if fault == "close_all_connections":
            began = time.monotonic()
            done = await asyncio.to_thread(own_node.ctl, "close_all_connections", "--global", "x")
            assert done.returncode == 0, done.stderr
            assert proxy.last_end is not None
            assert proxy.last_end > began
            return proxy.last_end  # when the node closed them, not when rabbitmqctl returned
        if fault == "proxy drop":
            assert proxy.drop() >= 2
        else:
            assert proxy.reset() >= 2
        return time.monotonic()

    accepted = proxy.accepted
    load, recovery = run(under_load(url, contract, cut), 150)
    counts = Counter(load.handled)
    behaviour = (
        "reconnected, unconfirmed re-sent, consumer resumed"
        if recovery is not None
        else f"NOT recovered within {RECOVERY_BOUND:g} s"
    )
    for what, ledger in (("publish_many", load.many), ("concurrent publish", load.each)):
        tried = len(ledger.confirmed) + ledger.failed
        figures.record(
            f"{fault} during {what}",
            f"{behaviour}; {ledger.failed} of {tried} publishes failed",
            lost=sum(1 for j in ledger.confirmed if not counts[j]),
            duplicates=sum(counts[j] - 1 for j in ledger.confirmed if counts[j] > 1),
            recovery=recovery,
        )
    figures.record(
        f"{fault} while consuming",
        f"consumer resumed; {len(counts)} jobs handled"
        if load.failure is None
        else f"consumer failed: {load.failure!r}",
        lost=0,
        duplicates=len(load.handled) - len(counts),
        recovery=recovery,
    )
    assert proxy.accepted >= accepted + 4, "the clients did not reconnect through the proxy"
    assert not (load.many.confirmed | load.each.confirmed) - counts.keys()
    assert load.failure is None
    assert len(load.many.confirmed) > 100
    assert len(load.each.confirmed) > 20
    assert recovery is not None
    assert recovery < RECOVERY_BOUND


# -- the network lies: half-open and slow ------------------------------------------------------


def test_a_half_open_connection_is_noticed_by_the_heartbeat(
    jobs: Vhost, proxy: FaultProxy, contract: Contract, figures: Figures
) -> None:
    """The proxy stops forwarding and closes nothing (no FIN, no RST): only the heartbeat
    (2 s) can tell; the client notices within ``(heartbeat + 1) * 3`` s, reconnects, and the
    publish written into the void is written again and confirmed."""
    url = proxy.url(jobs.amqp_url)
    ledger = Ledger()

    async def body() -> tuple[float, float]:
        async with Client(contract, url, heartbeat=HEARTBEAT, timeout=45) as client:
            consumer = client.consume("jobs.ready", ledger.handler)
            await consumer.ready()
            first = start()
            await client.publish("Start", first)
            ledger.confirmed.add(first["job_id"])
            await ledger.drained(10)
            accepted = proxy.accepted
            assert proxy.blackhole() == 1
            cut = time.monotonic()
            lost_in_the_void = start()
            publishing = asyncio.create_task(client.publish("Start", lost_in_the_void))
            noticed = await until(
                lambda: proxy.accepted > accepted, 3 * (HEARTBEAT + 1) + 6, "for a reconnect"
            )
            await publishing
            ledger.confirmed.add(lost_in_the_void["job_id"])
            probe = start()
            await client.publish("Start", probe)
            ledger.confirmed.add(probe["job_id"])
            await ledger.drained(RECOVERY_BOUND)
            assert consumer.failure is None
            return noticed, time.monotonic() - cut

    noticed, recovery = run(body())
    figures.record(
        "half-open TCP connection (blackhole, heartbeat 2 s)",
        f"heartbeat noticed it after {noticed:.1f} s; reconnected, publish re-sent",
        lost=len(ledger.lost),
        duplicates=ledger.duplicates,
        recovery=recovery,
    )
    assert not ledger.lost
    assert noticed <= 3 * (HEARTBEAT + 1) + 3  # 9 s by the client's rule; load adds a little
    assert proxy.accepted >= 2


def test_latency_slows_but_loses_nothing(
    jobs: Vhost, proxy: FaultProxy, contract: Contract, figures: Figures
) -> None:
    """200 ms each way on every chunk: publishes take longer, nothing fails or is lost."""
    url = proxy.url(jobs.amqp_url)
    ledger = Ledger()

    async def body() -> float:
        async with Client(contract, url, timeout=30) as client:
            consumer = client.consume("jobs.ready", ledger.handler)
            await consumer.ready()
            proxy.delay(0.2)
            began = time.monotonic()
            payloads = [start() for _ in range(50)]
            await asyncio.gather(*(client.publish("Start", p) for p in payloads))
            took = time.monotonic() - began
            ledger.confirmed |= {p["job_id"] for p in payloads}
            await ledger.drained(30)
            return took

    took = run(body())
    figures.record(
        "200 ms latency each way (proxy delay)",
        f"50 concurrent publishes confirmed in {took:.1f} s",
        lost=len(ledger.lost),
        duplicates=ledger.duplicates,
    )
    assert not ledger.lost
    assert took >= 0.4, "the delay did not apply"


# -- the topology changes underneath -----------------------------------------------------------


def test_the_queue_deleted_under_a_consumer(
    own_node: OwnNode, jobs: Vhost, contract: Contract, figures: Figures
) -> None:
    """``jobs.ready`` is deleted (empty) under its consumer: a publish then is ``Unroutable``
    (nothing confirmed, nothing lost); once ``apply`` declares it again the consumer is back."""
    ledger = Ledger()

    async def body() -> float:
        async with Client(contract, jobs.amqp_url, timeout=10) as client:
            consumer = client.consume("jobs.ready", ledger.handler)
            await consumer.ready()
            first = start()
            await client.publish("Start", first)
            ledger.confirmed.add(first["job_id"])
            await ledger.drained(10)
            await asyncio.to_thread(management, jobs, "DELETE", "/api/queues/{vhost}/jobs.ready")
            with pytest.raises(Unroutable):
                await client.publish("Start", start())
            await asyncio.to_thread(apply_flagship, own_node, jobs)
            back = time.monotonic()
            probe = start()
            await client.publish("Start", probe)
            ledger.confirmed.add(probe["job_id"])
            await ledger.drained(RECOVERY_BOUND)
            assert consumer.failure is None
            return time.monotonic() - back

    recovery = run(body())
    figures.record(
        "queue deleted under a consumer, then applied",
        "publish Unroutable while gone; consumer re-attached",
        lost=len(ledger.lost),
        duplicates=ledger.duplicates,
        recovery=recovery,
    )
    assert not ledger.lost
    assert recovery < RECOVERY_BOUND


def test_the_exchange_deleted_under_a_publisher(
    own_node: OwnNode, jobs: Vhost, contract: Contract, figures: Figures
) -> None:
    """``jobs.new`` is deleted: a publish fails with ``NotFound`` naming it; once ``apply``
    declares it again the next publish goes through (the missing exchange is not cached)."""
    ledger = Ledger()

    async def body() -> tuple[str, float]:
        async with Client(contract, jobs.amqp_url, timeout=10) as client:
            consumer = client.consume("jobs.ready", ledger.handler)
            await consumer.ready()
            await asyncio.to_thread(management, jobs, "DELETE", "/api/exchanges/{vhost}/jobs.new")
            began = time.monotonic()
            with pytest.raises(NotFound) as missing:
                await client.publish("Start", start())
            assert time.monotonic() - began < 5
            await asyncio.to_thread(apply_flagship, own_node, jobs)
            back = time.monotonic()
            probe = start()
            await client.publish("Start", probe)
            ledger.confirmed.add(probe["job_id"])
            await ledger.drained(RECOVERY_BOUND)
            return str(missing.value), time.monotonic() - back

    error, recovery = run(body())
    figures.record(
        "exchange deleted under a publisher, then applied",
        "publish NotFound while gone; next publish after apply confirmed",
        lost=len(ledger.lost),
        duplicates=ledger.duplicates,
        recovery=recovery,
    )
    assert "jobs.new" in error
    assert not ledger.lost


def test_unroutable_fails_alone_and_clearly(
    own_node: OwnNode, jobs: Vhost, contract: Contract, figures: Figures
) -> None:
    """The binding jobs.new → jobs.ready removed: each publish is ``Unroutable`` (mandatory),
    nothing is confirmed that no queue took; apply binds it again and publishing goes on."""
    ledger = Ledger()
    [binding] = [
        b for b in jobs.bindings() if b["source"] == "jobs.new" and b["destination"] == "jobs.ready"
    ]
    key = quote(binding["properties_key"], safe="")

    async def body() -> int:
        async with Client(contract, jobs.amqp_url, timeout=10) as client:
            consumer = client.consume("jobs.ready", ledger.handler)
            await consumer.ready()
            await asyncio.to_thread(
                management, jobs, "DELETE", f"/api/bindings/{{vhost}}/e/jobs.new/q/jobs.ready/{key}"
            )
            results = await asyncio.gather(
                *(client.publish("Start", start()) for _ in range(10)), return_exceptions=True
            )
            refused = sum(isinstance(r, Unroutable) for r in results)
            await asyncio.to_thread(apply_flagship, own_node, jobs)
            probe = start()
            await client.publish("Start", probe)
            ledger.confirmed.add(probe["job_id"])
            await ledger.drained(10)
            return refused

    refused = run(body())
    figures.record(
        "unroutable (binding removed)",
        f"{refused} of 10 publishes raised Unroutable; after apply, confirmed",
        lost=len(ledger.lost),
        duplicates=ledger.duplicates,
    )
    assert refused == 10
    assert ledger.handled == list(ledger.confirmed)


def test_a_nack_fails_that_publish_only(jobs: Vhost, contract: Contract, figures: Figures) -> None:
    """``jobs.ready`` at ``max-length`` 1 with ``reject-publish`` (a policy): the broker nacks
    the overflow; those raise ``PublishNacked``, the confirmed ones are all delivered."""
    ledger = Ledger()
    policy = "/api/policies/{vhost}/fault-max-length"
    management(
        jobs,
        "PUT",
        policy,
        json={
            "pattern": r"^jobs\.ready$",
            "definition": {"max-length": 1, "overflow": "reject-publish"},
            "priority": 100,
            "apply-to": "queues",
        },
    )

    named: list[tuple[str | None, bool]] = []

    async def body() -> int:
        nacked = 0
        async with Client(contract, jobs.amqp_url, timeout=10) as client:
            began = time.monotonic()
            while nacked < 5:
                assert time.monotonic() - began < 15, "the broker never nacked"
                payload = start()
                try:
                    await client.publish("Start", payload)
                except PublishNacked as exc:
                    named.append((exc.message_name, exc.message_id is not None))
                    nacked += 1
                else:
                    ledger.confirmed.add(payload["job_id"])
            await asyncio.to_thread(management, jobs, "DELETE", policy)
            consumer = client.consume("jobs.ready", ledger.handler)
            await consumer.ready()
            await ledger.drained(10)
        return nacked

    nacked = run(body())
    figures.record(
        "nack (max-length 1, reject-publish)",
        f"{nacked} publishes raised PublishNacked; {len(ledger.confirmed)} confirmed, delivered",
        lost=len(ledger.lost),
        duplicates=ledger.duplicates,
    )
    assert not ledger.lost
    assert named == [("Start", True)] * nacked, "a PublishNacked did not name its message"


# -- messages that cannot be handled --------------------------------------------------------


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"x": value}
    return value


POISON: dict[str, tuple[bytes, str | None]] = {
    "bad JSON": (b'{"job_id": ', "Start"),
    "wrong type": (json.dumps(start()).encode(), "Nope"),
    "schema violation": (json.dumps({**start(), "steps": "many"}).encode(), "Start"),
    "no type": (json.dumps(start()).encode(), None),
    "too deep": (json.dumps(start(parameters=deep(MAX_DEPTH + 5))).encode(), "Start"),
}


async def publish_raw(url: str, body: bytes, message_type: str | None, message_id: str) -> None:
    """Publish as a foreign client would: no contract, no validation, with confirms."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        confirm = await channel.basic_publish(
            body,
            exchange="jobs.new",
            routing_key="job.render",
            mandatory=True,
            properties=Basic.Properties(
                content_type="application/json",
                delivery_mode=2,
                message_type=message_type,
                message_id=message_id,
            ),
        )
        assert isinstance(confirm, Basic.Ack), confirm
    finally:
        await connection.close()


def test_each_poison_message_is_dead_lettered_once(
    jobs: Vhost, contract: Contract, figures: Figures
) -> None:
    """Bad JSON, an unknown type, a schema violation, no type, too deep: each reaches
    ``jobs.dead-letters`` exactly once, never the handler, and does not come back; a valid
    message after them is handled."""
    ledger = Ledger()
    ids = {kind: f"poison-{kind.replace(' ', '-')}" for kind in POISON}

    def dead() -> list[str]:
        return [m["properties"].get("message_id") for m in messages_in(jobs, "jobs.dead-letters")]

    async def body() -> float:
        async with Client(contract, jobs.amqp_url, timeout=10) as client:
            consumer = client.consume("jobs.ready", ledger.handler)
            await consumer.ready()
            began = time.monotonic()
            for kind, (raw, message_type) in POISON.items():
                await publish_raw(jobs.amqp_url, raw, message_type, ids[kind])
            valid = start()
            await client.publish("Start", valid)
            ledger.confirmed.add(valid["job_id"])
            await ledger.drained(10)
            await until(lambda: len(dead()) >= len(POISON), 15, "for the dead letters")
            took = time.monotonic() - began
            await asyncio.sleep(2)  # a loop would show as more copies by now
            assert consumer.failure is None
            return took

    took = run(body())
    lettered = dead()
    figures.record(
        "poison messages (bad JSON, wrong type, schema, no type, too deep)",
        f"{len(lettered)} dead-lettered for {len(POISON)} poison in {took:.1f} s; "
        "handler never called on them",
        lost=len(ledger.lost),
        duplicates=len(lettered) - len(set(lettered)),
    )
    assert sorted(lettered) == sorted(ids.values())
    assert ledger.handled == list(ledger.confirmed)


def test_a_handler_that_raises_is_tried_then_dead_lettered(
    jobs: Vhost, contract: Contract, figures: Figures
) -> None:
    """A handler that always raises on one job: tried ``attempts`` (3) times, dead-lettered
    once, while the other jobs are handled."""
    ledger = Ledger()
    tries: list[str] = []

    async def handler(delivery: Delivery[Any]) -> None:
        if delivery.body["job_type"] == "explode":
            tries.append(delivery.body["job_id"])
            raise RuntimeError("this job explodes, as this test wants")
        await ledger.handler(delivery)

    async def body() -> str:
        async with Client(contract, jobs.amqp_url, timeout=10, attempts=3) as client:
            consumer = client.consume("jobs.ready", handler)
            await consumer.ready()
            bad = start(job_type="explode")
            await client.publish("Start", bad)
            for _ in range(5):
                good = start()
                await client.publish("Start", good)
                ledger.confirmed.add(good["job_id"])
            await ledger.drained(10)
            await until(
                lambda: bool(messages_in(jobs, "jobs.dead-letters")), 15, "for the dead letter"
            )
            await asyncio.sleep(1.5)
            assert consumer.failure is None
            return str(bad["job_id"])

    bad_id = run(body())
    lettered = messages_in(jobs, "jobs.dead-letters")
    figures.record(
        "a handler that raises",
        f"tried {len(tries)} times, dead-lettered {len(lettered)} time(s); others handled",
        lost=len(ledger.lost),
        duplicates=ledger.duplicates,
    )
    assert tries == [bad_id] * 3
    assert len(lettered) == 1
    assert not ledger.lost


# -- processes and run-time queues ---------------------------------------------------------------


def test_sigterm_mid_handling_finishes_the_job_and_loses_none(
    jobs: Vhost, contract: Contract, figures: Figures
) -> None:
    """examples/jobs/worker.py (prefetch 1) gets SIGTERM while it runs a 2-s job with two more
    waiting: it finishes the job in hand (Finished reported), exits 0, and the two others are
    still in jobs.ready for the next worker."""
    ids: list[str] = []
    reports: list[tuple[str, str]] = []

    async def body() -> tuple[int, str, float]:
        async with Client(contract, jobs.amqp_url, service="server", timeout=10) as server:
            payloads = [start(steps=10) for _ in range(3)]
            ids.extend(p["job_id"] for p in payloads)
            subscriptions = [server.subscribe("job-status", job_id=j) for j in ids]
            for subscription in subscriptions:
                await subscription.__aenter__()

            async def follow(subscription: Any) -> None:
                async for delivery in subscription:
                    reports.append((delivery.body["job_id"], delivery.type))

            followers = [asyncio.create_task(follow(s)) for s in subscriptions]
            for payload in payloads:
                await server.publish("Start", payload)
            worker = await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER),
                "--url",
                jobs.amqp_url,
                "--name",
                "w-term",
                "--prefetch",
                "1",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                await until(
                    lambda: any(kind == "StartSuccess" for _, kind in reports), 30, "for a start"
                )
                worker.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                out, _ = await asyncio.wait_for(worker.communicate(), 30)
                took = time.monotonic() - signalled
            finally:
                if worker.returncode is None:
                    worker.kill()
                    await worker.wait()
            await until(lambda: any(kind == "Finished" for _, kind in reports), 10, "for Finished")
            left = Ledger()
            async with Client(contract, jobs.amqp_url, timeout=10) as other:
                consumer = other.consume("jobs.ready", left.handler)
                await consumer.ready()
                await asyncio.sleep(1.5)
            for task in followers:
                task.cancel()
            for subscription in subscriptions:
                await subscription.__aexit__(None, None, None)
            reports.extend((job, "left in queue") for job in left.handled)
            assert worker.returncode is not None
            return worker.returncode, out.decode(), took

    code, out, took = run(body(), 120)
    finished = {job for job, kind in reports if kind == "Finished"}
    queued = [job for job, kind in reports if kind == "left in queue"]
    accounted = finished | set(queued)
    figures.record(
        "SIGTERM to the example worker mid-handling",
        f"exit {code} after {took:.1f} s; {len(finished)} finished, {len(queued)} left queued",
        lost=len(set(ids) - accounted),
        duplicates=len(finished & set(queued)) + len(queued) - len(set(queued)),
    )
    assert code == 0, out
    assert "stopped; the jobs in hand finished or went back to jobs.ready" in out
    assert len(finished) == 1
    assert len(set(queued)) == 2
    assert accounted == set(ids)


def test_a_subscription_across_a_cut(
    own_node: OwnNode, jobs: Vhost, contract: Contract, figures: Figures
) -> None:
    """The server's run-time queue (exclusive: it goes with its connection) is declared and
    bound again after ``close_all`` of the vhost's connections; a StartSuccess published
    after the cut reaches it."""
    got: list[str] = []

    async def body() -> float:
        job = start()["job_id"]
        async with (
            Client(contract, jobs.amqp_url, service="server", timeout=10) as server,
            Client(contract, jobs.amqp_url, service="worker", timeout=30) as worker,
            server.subscribe("job-status", job_id=job) as subscription,
        ):

            async def follow() -> None:
                async for delivery in subscription:
                    got.append(delivery.type)

            following = asyncio.create_task(follow())
            hello = {"job_id": job, "worker": "w", "started_at": AT}
            await worker.publish("StartSuccess", hello)
            await until(lambda: got == ["StartSuccess"], 10, "for StartSuccess")
            await asyncio.to_thread(close_connections, own_node, jobs)
            cut = time.monotonic()
            update = {"job_id": job, "step": 1, "progress": 0.5, "at": AT}
            while True:  # until the queue is bound again: Unroutable says it is not yet
                try:
                    await worker.publish("Update", update)
                    break
                except Unroutable:
                    assert time.monotonic() - cut < RECOVERY_BOUND, "never bound again"
                    await asyncio.sleep(0.1)
            await until(lambda: "Update" in got, RECOVERY_BOUND, "for Update")
            following.cancel()
            return time.monotonic() - cut

    recovery = run(body())
    figures.record(
        "run-time subscription across a connection cut",
        "exclusive queue declared and bound again; later messages arrive",
        lost=0 if "Update" in got else 1,
        duplicates=got.count("StartSuccess") - 1,
        recovery=recovery,
    )
    assert got == ["StartSuccess", "Update"]
    assert recovery < RECOVERY_BOUND


# -- apply, permissions --------------------------------------------------------------------------

#: Queues in the spec that ``apply`` is cut in the middle of.
MANY = 150


def many_queues(tmp: Path) -> Path:
    queues = {f"q{i:03}": {"description": "one of many"} for i in range(MANY)}
    return write_spec(
        tmp,
        {
            "version": 1,
            "exchanges": {"fan": {"type": "topic", "description": "many bindings"}},
            "queues": queues,
            "bindings": [{"from": "fan", "queue": q, "key": f"k.{q}"} for q in queues],
        },
    )


def test_apply_cut_midway_converges_on_the_next_run(
    own_node: OwnNode, jobs: Vhost, proxy: FaultProxy, tmp_path: Path, figures: Figures
) -> None:
    """``apply`` of 150 queues and bindings, its connection dropped (proxy) a third of the way
    in: it fails with a ``RabbitryError`` that says so; the next ``apply`` finishes the job
    and a plan then is empty."""
    spec = load_spec(many_queues(tmp_path))
    url = parse_url(proxy.url(jobs.amqp_url), management=own_node.management_url)
    done: list[int] = []

    def progress(count: int, total: int) -> None:
        done.append(count)
        if count == total // 3:
            proxy.drop()

    async def body() -> tuple[BaseException | None, float, bool]:
        failure: BaseException | None = None
        try:
            await converge.apply(spec, url, timeout=10, progress=progress)
        except RabbitryError as exc:
            failure = exc
        began = time.monotonic()
        await converge.apply(spec, url, timeout=10)
        took = time.monotonic() - began
        planned = await converge.plan(spec, url, timeout=10)
        return failure, took, planned.plan.empty

    failure, took, empty = run(body())
    present = {q for q in jobs.queue_names() if q.startswith("q")}
    figures.record(
        "apply cut midway (connection dropped)",
        f"first apply failed after {max(done, default=0)} changes; the next one converged",
        lost=MANY - len(present),
        recovery=took,
    )
    assert failure is not None, "the cut came too late: apply finished first"
    assert isinstance(failure, ConnectionFailed), repr(failure)
    assert f"127.0.0.1:{proxy.port}" in str(failure)
    assert "`rabbitry apply` run again (when the broker answers) finishes it" in str(failure)
    assert empty
    assert len(present) == MANY


def test_a_403_on_one_exchange_fails_that_publish_only(
    own_node: OwnNode, jobs: Vhost, contract: Contract, figures: Figures
) -> None:
    """A user who may not write to jobs.control: its Stop fails at once with
    ``AccessRefused`` naming the exchange, while 20 Starts published beside it, and one after
    it, are confirmed and delivered."""
    config = jobs.api.config
    user, password = f"fault-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    auth = (config.username, config.password)
    base = config.management_url
    httpx.put(
        f"{base}/api/users/{user}", json={"password": password, "tags": ""}, auth=auth
    ).raise_for_status()
    httpx.put(
        f"{base}/api/permissions/{quote(jobs.name, safe='')}/{user}",
        json={"configure": ".*", "write": r"^(?!jobs\.control$).*", "read": ".*"},
        auth=auth,
    ).raise_for_status()
    url = jobs.amqp_url.replace(f"{config.username}:{config.password}@", f"{user}:{password}@")
    ledger = Ledger()

    async def body() -> tuple[list[BaseException], float]:
        async with (
            Client(contract, jobs.amqp_url, timeout=10) as consuming,
            Client(contract, url, timeout=10) as client,
        ):
            consumer = consuming.consume("jobs.ready", ledger.handler)
            await consumer.ready()
            payloads = [start() for _ in range(20)]
            began = time.monotonic()
            stop = {"job_id": payloads[0]["job_id"], "reason": "fault test", "requested_at": AT}
            results = await asyncio.gather(
                client.publish("Stop", stop),
                *(client.publish("Start", p) for p in payloads),
                return_exceptions=True,
            )
            took = time.monotonic() - began
            ledger.confirmed |= {
                p["job_id"] for p, r in zip(payloads, results[1:], strict=True) if r is None
            }
            after = start()
            await client.publish("Start", after)
            ledger.confirmed.add(after["job_id"])
            await ledger.drained(10)
            errors = [r for r in results if isinstance(r, BaseException)]
            return errors, took

    try:
        errors, took = run(body())
    finally:
        httpx.delete(f"{base}/api/users/{user}", auth=auth)
    figures.record(
        "403 on one exchange (no write permission)",
        f"that publish failed alone ({', '.join(type(e).__name__ for e in errors)}) "
        f"in {took:.1f} s; the others confirmed",
        lost=len(ledger.lost),
        duplicates=ledger.duplicates,
    )
    assert len(ledger.confirmed) == 21
    [error] = errors
    assert isinstance(error, AccessRefused), repr(error)
    assert "jobs.control" in str(error)
    assert took < 5
