"""The broker away, or holding back: down at start, an outage longer than any deadline, an
alarm that blocks publishing.

Each runs on a RabbitMQ node of the module's own (``nodes.own_node``), stopped
and started by the test (a SIGTERM, as ``systemctl stop`` sends) or put under
a memory alarm: never the shared broker, which every other test uses.  Every
wait is bounded, and each test reports how long recovery took after the node
answered again.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from amqp import Bounded, start, until
from broker import ManagementAPI, fresh_vhost
from rabbitry.broker import converge
from rabbitry.broker.url import parse_url
from rabbitry.check import load_spec
from rabbitry.errors import ConnectionFailed, PublishTimeout
from rabbitry.messaging import _supervisor
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract
from specs import FLAGSHIP

if TYPE_CHECKING:
    from conftest import Figures
    from nodes import OwnNode

# The fixture own_node (imported by name so that pytest rewrites its asserts).
pytest_plugins = ["nodes"]
pytestmark = pytest.mark.broker

#: Confirmed jobs in the queue when the outage begins (0.2 s each, 4 at a time).
MESSAGES = 30
WORKER = Path(__file__).resolve().parents[2] / "examples" / "jobs" / "worker.py"


run = Bounded(60)


def report(what: str, seconds: float) -> None:
    print(f"\n[figure] {what}: {seconds:.2f} s")


async def moment(check: Callable[[], bool], timeout: float, what: str) -> float:
    """The moment (``time.monotonic()``) ``check()`` first holds."""
    await until(check, timeout, what)
    return time.monotonic()


async def listening(port: int, timeout: float = 60) -> float:
    """The moment (``time.monotonic()``) a TCP connection to ``port`` is first accepted:
    when the node's AMQP listener is back, the zero of a recovery time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            await asyncio.sleep(0.02)
        else:
            at = time.monotonic()
            writer.close()
            return at


@pytest.fixture
def jobs(own_node: OwnNode) -> Iterator[str]:
    """The AMQP URL of a fresh vhost on the own node, with the flagship applied."""
    api = ManagementAPI(own_node.config)
    vhosts = fresh_vhost(api)
    vhost = next(vhosts)
    url = parse_url(vhost.amqp_url, management=own_node.management_url)
    asyncio.run(converge.apply(load_spec(FLAGSHIP), url, timeout=10))
    try:
        yield vhost.amqp_url
    finally:
        own_node.start()  # a test may leave it stopped; the vhost is deleted through its API
        vhosts.close()


def records(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[logging.LogRecord]:
    """The connection's own log lines (the supervisor's) at ``level`` that say ``text``."""
    return [
        r
        for r in caplog.records
        if r.name == "rabbitry.messaging"
        and r.module == "_supervisor"
        and r.levelno == level
        and text in r.getMessage()
    ]


def test_a_broker_down_at_start_is_connected_to_when_it_comes(
    own_node: OwnNode,
    jobs: str,
    contract: Contract,
    caplog: pytest.LogCaptureFixture,
    figures: Figures,
) -> None:
    """The client waits (``connect_timeout``) and connects within one backoff of the node."""
    caplog.set_level(logging.INFO, logger="rabbitry.messaging")
    own_node.stop()

    async def body() -> tuple[float, float]:
        received: list[str] = []

        async def handler(delivery: Delivery[Any]) -> None:
            received.append(delivery.body["job_id"])

        booting = asyncio.create_task(asyncio.to_thread(own_node.start))
        listener = asyncio.create_task(listening(own_node.amqp_port))
        began = time.monotonic()
        async with Client(contract, jobs, connect_timeout=45) as client:
            connected = time.monotonic()
            answered = await listener
            await booting
            consumer = client.consume("jobs.ready", handler)
            await consumer.ready()
            payload = start()
            await client.publish("Start", payload)
            await until(lambda: payload["job_id"] in received, 10, "for the job")
        return connected - began, connected - answered

    waited, lag = run(body())
    report("broker down at start: the client waited", waited)
    figures.record(
        "broker down at start",
        "waits up to connect_timeout (30 s), retrying at most 5 s apart",
        lost=0,
        recovery=lag,  # after the node's AMQP listener accepted a TCP connection
    )
    assert lag < _supervisor.BACKOFF_CAP + 3  # one backoff, and an attempt during boot
    [line] = records(caplog, logging.INFO, "connected to")
    assert line.node == parse_url(jobs).endpoint  # type: ignore[attr-defined]


def test_an_outage_longer_than_the_old_deadline_is_waited_out(
    own_node: OwnNode,
    jobs: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    figures: Figures,
) -> None:
    """``reconnect_timeout=None`` reconnects for ever (it used to mean ``connect_timeout``):
    a node away for longer than that comes back to a client that kept trying, said so at
    WARNING with the outage's length, and consumes and publishes again."""
    caplog.set_level(logging.INFO, logger="rabbitry.messaging")
    monkeypatch.setattr(_supervisor, "OUTAGE_REPORT_EVERY", 1.0, raising=False)
    node = parse_url(jobs).endpoint

    async def body() -> tuple[float, set[str], list[str]]:
        handled: list[str] = []

        async def handler(delivery: Delivery[Any]) -> None:
            await asyncio.sleep(0.2)  # slow enough that the outage comes mid-stream
            handled.append(delivery.body["job_id"])

        # connect_timeout 2 s: before the fix, the reconnect gave up after 2 s too.
        contract = Contract.load(FLAGSHIP)
        async with Client(contract, jobs, connect_timeout=2, heartbeat=2, prefetch=4) as client:
            confirmed: set[str] = set()
            for _ in range(MESSAGES):
                payload = start()
                await client.publish("Start", payload)
                confirmed.add(payload["job_id"])
            consumer = client.consume("jobs.ready", handler)
            await consumer.ready()
            await until(lambda: len(handled) >= 4, 10, "for the first jobs")
            lost = time.monotonic()
            await asyncio.to_thread(own_node.stop)
            await asyncio.sleep(max(0.0, 6 - (time.monotonic() - lost)))  # away 6 s at least
            supervisor = client._supervisor
            assert supervisor is not None
            assert not supervisor.is_connected
            listener = asyncio.create_task(listening(own_node.amqp_port))
            reconnected = asyncio.create_task(
                moment(lambda: supervisor.is_connected, 60, "for the reconnect")
            )
            await asyncio.to_thread(own_node.start)
            took = await reconnected - await listener  # both polled: within ~0.05 s
            await consumer.ready()
            payload = start()
            await client.publish("Start", payload)
            confirmed.add(payload["job_id"])
            await until(lambda: confirmed <= set(handled), 15, "for every confirmed job")
            assert consumer.failure is None
        return took, confirmed, handled

    took, confirmed, handled = run(body())
    figures.record(
        "an outage longer than the old reconnect deadline (node stopped 6 s+)",
        "reconnects for ever (capped 5 s backoff), WARNING every 30 s; consumes again",
        lost=len(confirmed - set(handled)),
        duplicates=len(handled) - len(set(handled)),
        recovery=took,
    )
    assert took < _supervisor.BACKOFF_CAP + 3
    [loss] = records(caplog, logging.WARNING, "lost the connection")
    assert loss.node == node  # type: ignore[attr-defined]
    assert "reconnecting for ever" in loss.getMessage()
    still = records(caplog, logging.WARNING, "still trying")
    assert still, "no WARNING said the client was still trying"
    assert all(r.node == node and r.attempt >= 1 for r in still)  # type: ignore[attr-defined]
    [again] = records(caplog, logging.INFO, "connected again")
    assert again.node == node  # type: ignore[attr-defined]
    assert not records(caplog, logging.ERROR, "gave up")


def test_a_finite_reconnect_timeout_gives_up_and_wait_raises(
    own_node: OwnNode,
    jobs: str,
    contract: Contract,
    caplog: pytest.LogCaptureFixture,
    figures: Figures,
) -> None:
    """With ``reconnect_timeout`` a number, an outage that long ends the client: ``wait()``
    and the consumer's ``wait()`` raise ``ConnectionFailed`` (a service exits, not idles)."""

    async def handler(delivery: Delivery[Any]) -> None:
        return None

    async def body() -> float:
        async with Client(contract, jobs, reconnect_timeout=2) as client:
            consumer = client.consume("jobs.ready", handler)
            await consumer.ready()
            stopping = asyncio.create_task(asyncio.to_thread(own_node.stop))
            began = time.monotonic()
            with pytest.raises(ConnectionFailed, match="gave up after 2 s"):
                await asyncio.wait_for(client.wait(), 20)
            took = time.monotonic() - began
            with pytest.raises(ConnectionFailed):
                await asyncio.wait_for(consumer.wait(), 5)
            with pytest.raises(ConnectionFailed):
                await client.publish("Start", start())
            await stopping
        return took

    took = run(body())
    report("reconnect_timeout 2 s: wait() raised after the stop began", took)
    figures.record(
        "an outage longer than a finite reconnect_timeout (2 s)",
        f"gives up: wait() and consumer.wait() raise ConnectionFailed ({took:.1f} s)",
        lost=0,
    )
    [line] = records(caplog, logging.ERROR, "gave up after 2 s")
    assert line.node == parse_url(jobs).endpoint  # type: ignore[attr-defined]


def test_the_example_worker_exits_1_when_its_client_gives_up(
    own_node: OwnNode, jobs: str, figures: Figures
) -> None:
    """examples/jobs/worker.py ``--reconnect-timeout 2`` exits 1 when the broker stays away;
    without it, it stays up and says it is reconnecting (it is never up and silent)."""

    async def spawn(*more: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            "--url",
            jobs,
            *more,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert b"waiting for jobs" in line, line
        return process

    async def body() -> tuple[int, str, str, float]:
        quitter = await spawn("--name", "w-quits", "--reconnect-timeout", "2")
        stayer = await spawn("--name", "w-stays")
        assert quitter.stdout is not None
        assert stayer.stdout is not None
        stopping = asyncio.create_task(asyncio.to_thread(own_node.stop))
        began = time.monotonic()
        try:
            out = await asyncio.wait_for(quitter.stdout.read(), 25)
            code = await quitter.wait()
            took = time.monotonic() - began
            await stopping
            assert stayer.returncode is None, "the worker without a deadline exited"
        finally:
            for process in (quitter, stayer):
                if process.returncode is None:
                    process.terminate()
            stay_out = await asyncio.wait_for(stayer.stdout.read(), 30)
            await asyncio.gather(quitter.wait(), stayer.wait())
        return code, out.decode(), stay_out.decode(), took

    code, out, stay_out, took = run(body())
    report("example worker, broker gone, --reconnect-timeout 2: exited 1 after", took)
    figures.record(
        "example worker, broker gone longer than --reconnect-timeout 2",
        f"exits 1 ({took:.1f} s); without the option it stays up, reconnecting, and says so",
        lost=0,
    )
    assert code == 1, out
    assert "w-quits: stopped: gave up after 2 s" in out
    assert "lost the connection" in stay_out
    assert "reconnecting for ever" in stay_out


def test_a_memory_alarm_blocks_the_connection_and_says_why(
    own_node: OwnNode,
    jobs: str,
    contract: Contract,
    caplog: pytest.LogCaptureFixture,
    figures: Figures,
) -> None:
    """The broker's ``connection.blocked`` sets ``blocked_reason`` (WARNING with the reason);
    ``connection.unblocked`` clears it (INFO), and publishing goes on."""
    caplog.set_level(logging.INFO, logger="rabbitry.messaging")

    def watermark(value: str) -> None:
        done = own_node.ctl("set_vm_memory_high_watermark", value)
        assert done.returncode == 0, done.stderr

    async def body() -> tuple[str | None, float]:
        async with Client(contract, jobs, service="server", timeout=10) as client:
            await client.publish("Start", start())
            assert client.blocked_reason is None
            await asyncio.to_thread(watermark, "0.000001")
            clearing = None
            try:
                with pytest.raises(PublishTimeout):
                    await client.publish("Start", start(), timeout=2)
                reason = client.blocked_reason
                clearing = asyncio.create_task(asyncio.to_thread(watermark, "0.4"))
                cleared = await until(lambda: client.blocked_reason is None, 15, "to unblock")
            finally:
                if clearing is None:
                    await asyncio.to_thread(watermark, "0.4")
                else:
                    await clearing
            await client.publish("Start", start())
            return reason, cleared

    reason, cleared = run(body())
    figures.record(
        "memory alarm: connection.blocked",
        f"blocked_reason {reason!r}, WARNING; unblocked at INFO, publishing goes on",
        lost=0,
        recovery=cleared,  # from running rabbitmqctl (its ~1-2 s start-up included)
    )
    assert reason is not None
    assert "memory" in reason
    [blocked] = records(caplog, logging.WARNING, "blocked this connection")
    assert blocked.reason == reason  # type: ignore[attr-defined]
    assert blocked.node == parse_url(jobs).endpoint  # type: ignore[attr-defined]
    [unblocked] = records(caplog, logging.INFO, "unblocked this connection")
    assert unblocked.reason == reason  # type: ignore[attr-defined]
