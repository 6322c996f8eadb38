"""The seed's jobs system on the real broker: the demo, recovery mid-job, publish and tail."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiormq
import pytest

from broker import Vhost
from jobs_contracts import Server, Worker
from rabbitry.broker import converge
from rabbitry.broker.url import parse_url
from rabbitry.check import load_spec
from specs import RETRY_QUEUES, run_cli

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "examples" / "jobs"
VALID_START = {
    "job_id": "6f1c1a52-4a8e-4a3f-9a57-0c7d2f3c1b11",
    "job_type": "render",
    "steps": 3,
    "submitted_at": "2026-11-27T23:00:00Z",
}


@pytest.fixture
def examples_on_path() -> Iterator[None]:
    sys.path.insert(0, str(JOBS))
    try:
        yield
    finally:
        sys.path.remove(str(JOBS))
        for name in ("server", "worker"):
            sys.modules.pop(name, None)


def apply_flagship(vhost: Vhost) -> None:
    asyncio.run(
        converge.apply(load_spec(ROOT / "topology.yaml"), parse_url(vhost.amqp_url), timeout=10)
    )


def message_count(vhost: Vhost, queue: str, expected: int) -> int:
    """The queue's message count as a passive declare sees it, once it is ``expected`` (bounded)."""

    async def ask() -> int:
        connection = await aiormq.connect(vhost.amqp_url)
        channel = await connection.channel()
        ok = await channel.queue_declare(queue, passive=True)
        await connection.close()
        return int(ok.message_count)

    deadline = time.monotonic() + 10
    count = asyncio.run(ask())
    while count != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        count = asyncio.run(ask())
    return count


def test_the_demo_runs_the_seed_scenario_to_its_end(vhost: Vhost) -> None:
    done = subprocess.run(
        [sys.executable, str(JOBS / "demo.py"), "--url", vhost.amqp_url, "--step-seconds", "0.05"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for event in ("START ", "START_SUCCESS", "UPDATE", "STOP ", "FINISHED"):
        assert event in out
    assert out.count("completed after") == 2
    assert out.count("stopped after") == 1
    assert "every job ended as expected" in out
    # the workers' run-time queues and the server's are gone with them
    assert vhost.queue_names() == {"jobs.ready", "jobs.dead-letters", *RETRY_QUEUES}


def test_a_job_completes_when_the_broker_closes_every_connection_midway(
    vhost: Vhost, examples_on_path: None
) -> None:
    from server import JobServer  # noqa: PLC0415 - examples/jobs, on the path for this test
    from worker import JobWorker  # noqa: PLC0415

    apply_flagship(vhost)
    events: list[tuple[str, str]] = []

    async def scenario() -> str | None:
        async with Server(vhost.amqp_url) as server_client, Worker(vhost.amqp_url) as worker_client:
            worker = JobWorker(worker_client, "worker-1", step_seconds=0.1, say=lambda _: None)
            consumer = worker_client.consume_jobs_ready(worker.handle)
            await consumer.ready()
            jobs = JobServer(
                server_client, lambda event, job, detail: events.append((event, detail))
            )
            job = await jobs.dispatch("render", 30)
            while job.updates < 5:
                await asyncio.sleep(0.05)
            cut = await asyncio.create_subprocess_exec(
                "rabbitmqctl",
                "close_all_connections",
                "-p",
                vhost.name,
                "cut by the test",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            assert await cut.wait() == 0
            assert await jobs.wait(60), events[-5:]
            await consumer.cancel()
            await jobs.close()
            return job.outcome

    assert asyncio.run(scenario()) == "completed"
    assert ("FINISHED", "completed after 30 steps") in events
    # nothing was refused or lost on the way
    assert message_count(vhost, "jobs.dead-letters", 0) == 0
    assert message_count(vhost, "jobs.ready", 0) == 0


def test_publish_refuses_an_invalid_message_naming_the_field_and_sends_nothing(
    vhost: Vhost, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_flagship(vhost)
    monkeypatch.chdir(ROOT)
    bad = json.dumps({**VALID_START, "steps": 0})
    code, _, err = run_cli(["publish", "Start", "--json", bad, "--url", vhost.amqp_url], capsys)
    assert code == 1
    assert "/steps" in err
    assert "nothing was sent" in err
    assert message_count(vhost, "jobs.ready", 0) == 0
    code, out, err = run_cli(
        ["publish", "Start", "--json", json.dumps(VALID_START), "--url", vhost.amqp_url], capsys
    )
    assert code == 0, err
    assert "job.render" in out
    assert message_count(vhost, "jobs.ready", 1) == 1


def test_tail_shows_messages_and_their_validity_and_leaves_them_in_the_queue(
    vhost: Vhost, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_flagship(vhost)
    monkeypatch.chdir(ROOT)

    async def put_two() -> None:
        connection = await aiormq.connect(vhost.amqp_url)
        channel = await connection.channel()
        await channel.confirm_delivery()
        good = aiormq.spec.Basic.Properties(message_type="Start", content_type="application/json")
        await channel.basic_publish(
            json.dumps(VALID_START).encode(),
            exchange="jobs.new",
            routing_key="job.render",
            properties=good,
        )
        wrong = aiormq.spec.Basic.Properties(message_type="Start")
        await channel.basic_publish(
            b'{"job_id": 1}', exchange="jobs.new", routing_key="job.x", properties=wrong
        )
        await connection.close()

    asyncio.run(put_two())
    assert message_count(vhost, "jobs.ready", 2) == 2
    code, out, _ = run_cli(
        # jobs.ready is a quorum queue: a look counts as a delivery
        [
            "tail",
            "jobs.ready",
            "--url",
            vhost.amqp_url,
            "--idle",
            "1",
            "--format",
            "json",
            "--spend-delivery",
        ],
        capsys,
    )
    assert code == 1  # one of them is invalid
    first, second = (json.loads(line) for line in out.splitlines())
    assert (first["type"], first["valid"]) == ("Start", True)
    assert (second["valid"], second["routing_key"]) == (False, "job.x")
    assert "is a required property" in second["problem"]
    assert message_count(vhost, "jobs.ready", 2) == 2  # both still there
