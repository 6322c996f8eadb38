"""The run loop (``Client.run``) and bounded concurrency, on the real broker.

The run loop is tested as a service is run: a real child process (``SERVICE``
below, built on the generated ``jobs_contracts`` package) consumes jobs.ready
and records each handler's start and end in a file; the test sends it
SIGTERM, deletes its queue or its whole vhost, and reads its exit status, its
record and the queue.  What went back to the queue is read raw (``basic_get``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqp import apply, drain, start, until
from broker import Vhost
from rabbitry.errors import InvalidArgument
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract
from specs import FLAGSHIP

SERVICE = """
import asyncio, json, sys
from pathlib import Path
from jobs_contracts import Worker

options = json.loads(sys.argv[1])
record = Path(options.pop("record"))
run = options.pop("run")


def note(event, job_id):
    with record.open("a") as out:
        out.write(f"{event} {job_id}\\n")


async def handle(delivery):
    note("start", delivery.body["job_id"])
    await asyncio.sleep(delivery.body["steps"] / 10)
    note("end", delivery.body["job_id"])


async def main():
    async with Worker(options.pop("url"), **options) as worker:
        worker.consume_jobs_ready(handle)
        await worker.client.run(**run)


asyncio.run(main())
"""


@contextmanager
def service(tmp_path: Path, vhost: Vhost, **options: Any) -> Iterator[subprocess.Popen[str]]:
    """The child service, killed if the test leaves it running."""
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    options = {"url": vhost.amqp_url, "record": str(tmp_path / "record"), **options}
    options.setdefault("run", {})
    options["run"].setdefault("check_every", 0.05)
    child = subprocess.Popen(
        [sys.executable, str(script), json.dumps(options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()


def events(tmp_path: Path) -> list[tuple[str, str]]:
    path = tmp_path / "record"
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines()]  # type: ignore[misc]


def wait_for(check: Any, timeout: float, what: str) -> None:
    asyncio.run(until(check, timeout, what, poll=0.02))


def exit_status(child: subprocess.Popen[str], timeout: float) -> int:
    code = child.wait(timeout)
    assert child.stdout is not None
    print(child.stdout.read())
    return code


async def publish_starts(vhost: Vhost, contract: Contract, bodies: list[dict[str, Any]]) -> None:
    async with Client(contract, vhost.amqp_url, service="server") as server:
        for body in bodies:
            await server.publish("Start", body)


def test_sigterm_drains_finishes_what_runs_and_requeues_the_rest(
    jobs: Vhost, contract: Contract, tmp_path: Path
) -> None:
    """Two handlers run (concurrency 2, prefetch 10), three wait: on SIGTERM the short one
    finishes, the long one is cancelled at the drain deadline, the waiting ones never start;
    exit 0, and another consumer gets all four back, redelivered."""
    short, long_, *waiting = bodies = [
        start(steps=8),
        start(steps=600),
        start(steps=1),
        start(steps=1),
        start(steps=1),
    ]
    ready = tmp_path / "ready"
    run = {"drain_timeout": 1.5, "ready_file": str(ready)}
    with service(tmp_path, jobs, prefetch=10, concurrency=2, run=run) as child:
        wait_for(ready.exists, 20, "for the service to be ready")
        asyncio.run(publish_starts(jobs, contract, bodies))
        wait_for(lambda: len(events(tmp_path)) >= 2, 10, "for two handlers to start")
        time.sleep(0.2)  # the other three are in hand, waiting for a slot
        child.send_signal(signal.SIGTERM)
        began = time.monotonic()
        assert exit_status(child, 15) == 0
        took = time.monotonic() - began
    assert not ready.exists()
    assert events(tmp_path) == [
        ("start", short["job_id"]),
        ("start", long_["job_id"]),
        ("end", short["job_id"]),
    ]
    assert took < 1.5 + 6  # the drain deadline, not the 60 s handler
    back = asyncio.run(drain(jobs.amqp_url, "jobs.ready", 4))
    assert sorted(json.loads(m.body)["job_id"] for m in back) == sorted(
        b["job_id"] for b in [long_, *waiting]
    )
    assert all(m.delivery.redelivered for m in back)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_during_the_drain_stops_at_once_and_requeues_what_runs(
    jobs: Vhost, contract: Contract, tmp_path: Path, sig: signal.Signals
) -> None:
    """A 60 s handler runs; the first signal starts a 60 s drain (the ready file goes), the
    second cuts it short: the handler is cancelled, its job requeued (redelivered to the
    next consumer), and the exit status is 128 + the signal's number, not 0 and not death
    by the signal (Python's default handlers, which the drain used to leave in place)."""
    long_ = start(steps=600)
    ready = tmp_path / "ready"
    run = {"drain_timeout": 60, "ready_file": str(ready)}
    with service(tmp_path, jobs, run=run) as child:
        wait_for(ready.exists, 20, "for the service to be ready")
        asyncio.run(publish_starts(jobs, contract, [long_]))
        wait_for(lambda: len(events(tmp_path)) >= 1, 10, "for the handler to start")
        child.send_signal(sig)
        wait_for(lambda: not ready.exists(), 5, "for the drain to begin")
        time.sleep(0.1)
        assert child.poll() is None  # draining: waiting for the 60 s handler
        child.send_signal(sig)
        began = time.monotonic()
        assert exit_status(child, 15) == 128 + sig
        took = time.monotonic() - began
    assert took < 6  # at once, not the 60 s drain
    assert events(tmp_path) == [("start", long_["job_id"])]
    back = asyncio.run(drain(jobs.amqp_url, "jobs.ready", 1))
    assert [json.loads(m.body)["job_id"] for m in back] == [long_["job_id"]]
    assert back[0].delivery.redelivered


def test_the_ready_file_follows_the_consumer_and_a_queue_gone_for_good_exits_1(
    jobs: Vhost, tmp_path: Path
) -> None:
    """Present while consuming, removed while jobs.ready is gone, back when it is declared
    again; gone longer than reattach_timeout: the service exits 1 (never alive and idle).
    reattach_timeout is 4 s, not less: the queue must come back within it while apply runs
    on a loaded machine (at 1 s the service sometimes gave up before apply was done)."""
    ready = tmp_path / "ready"
    with service(tmp_path, jobs, reattach_timeout=4.0, run={"ready_file": str(ready)}) as child:
        wait_for(ready.exists, 20, "for the service to be ready")
        jobs.api._request("DELETE", f"/api/queues/{jobs.name}/jobs.ready")
        wait_for(lambda: not ready.exists(), 5, "for the ready file to go with the queue")
        apply(jobs, FLAGSHIP)
        wait_for(ready.exists, 5, "for the ready file to come back with the queue")
        assert child.poll() is None
        jobs.api._request("DELETE", f"/api/queues/{jobs.name}/jobs.ready")
        assert exit_status(child, 10) == 1
    assert not ready.exists()


def test_a_broker_gone_for_good_exits_1(jobs: Vhost, tmp_path: Path) -> None:
    """The vhost deleted under the service: no reconnect can succeed; after
    reconnect_timeout it exits 1."""
    ready = tmp_path / "ready"
    with service(tmp_path, jobs, reconnect_timeout=1.0, run={"ready_file": str(ready)}) as child:
        wait_for(ready.exists, 20, "for the service to be ready")
        jobs.api.delete_vhost(jobs.name)
        wait_for(lambda: not ready.exists(), 5, "for the ready file to go with the broker")
        assert exit_status(child, 10) == 1


def test_concurrency_bounds_the_handlers_below_the_prefetch(
    jobs: Vhost, contract: Contract
) -> None:
    """prefetch 20, concurrency 3: never more than 3 handlers at once, and 3 are reached;
    each handler's deadline counts from its slot (12 x 0.1 s in 3 slots outlast the 0.25 s
    deadline, and none times out), and a hung handler is cut at its deadline, freeing its slot."""

    async def body() -> None:
        running = most = 0
        done: list[str] = []
        hung = start(steps=1, job_type="hang")

        async def handler(delivery: Delivery[Any]) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                await asyncio.sleep(1000 if delivery.body["job_type"] == "hang" else 0.1)
            finally:
                running -= 1
            done.append(delivery.body["job_id"])

        bodies = [hung, *(start(steps=1) for _ in range(12))]
        await publish_starts(jobs, contract, bodies)
        async with Client(
            contract, jobs.amqp_url, service="worker", prefetch=20, concurrency=3, attempts=1
        ) as worker:
            consumer = worker.consume("jobs.ready", handler, handler_timeout=0.25)
            await consumer.ready()
            await until(lambda: len(done) == 12, 10, "for 12 handlers")
        assert most == 3
        assert hung["job_id"] not in done
        dead = await drain(jobs.amqp_url, "jobs.dead-letters", 1)
        assert (
            "did not finish within 0.25 s" in dead[0].header.properties.headers["x-rabbitry-error"]
        )

    asyncio.run(body())


@settings(max_examples=30, deadline=None)
@given(limit=st.integers(max_value=0))
def test_a_concurrency_below_one_is_refused(limit: int) -> None:
    contract = Contract.load(FLAGSHIP)
    with pytest.raises(InvalidArgument, match="concurrency must be at least 1"):
        Client(contract, concurrency=limit)
