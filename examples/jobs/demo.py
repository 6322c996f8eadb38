"""The jobs system, end to end: a server, two workers, three jobs, one stopped, one retried.

    python examples/jobs/demo.py --url amqp://guest:guest@localhost:5672/

1. applies topology.yaml to the broker (``rabbitry apply``: idempotent);
2. starts two workers, each its own process (``worker.py``);
3. the server dispatches three jobs, follows each by its id, and stops the
   longest one midway; the first job fails its first try (``fail_first_try``)
   and comes back from jobs.ready's retry queue after 1 s (a worker says
   "attempt 2 after 1s");
4. prints a timeline of every message the server sends and receives, and
   exits 0 when every job has ended the way it should (two completed, one
   stopped), 1 otherwise;
5. prints the metrics rabbitry recorded in each process (``metrics.py``: the
   OpenTelemetry SDK's in-memory reader; without the SDK it says what to install).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from metrics import NEEDS, record
from server import Job, JobServer, Timeline

from jobs_contracts import Server
from rabbitry import RabbitryError, apply, load_spec, parse_url

HERE = Path(__file__).resolve().parent
SPEC = HERE.parent.parent / "topology.yaml"

#: (job type, steps, stop it after this many updates or never)
JOBS = (("render", 8, None), ("transcode", 12, None), ("report", 60, 3))
#: The job whose first try fails: it is retried after jobs.ready's first delay.
FLAKY = "render"


async def start_worker(url: str, name: str, step_seconds: float) -> asyncio.subprocess.Process:
    """A worker process, once it says it is consuming."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "worker.py"),
        "--url",
        url,
        "--name",
        name,
        "--step-seconds",
        str(step_seconds),
        "--metrics",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().rstrip()
    if "waiting for jobs" not in line:
        rest = (await process.stdout.read()).decode()
        raise RuntimeError(f"{name} did not start: {line}\n{rest}")
    print(f"         {line}", flush=True)
    return process


async def echo(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    async for raw in process.stdout:
        print(f"         {raw.decode().rstrip()}", flush=True)


async def stop_when_running(jobs: JobServer, job: Job, after_updates: int) -> None:
    while job.updates < after_updates and not job.finished.is_set():
        await asyncio.sleep(0.05)
    if not job.finished.is_set():
        await jobs.stop(job, f"stopped by the demo after {job.updates} updates")


async def demo(url: str, step_seconds: float, timeout: float) -> bool:
    metrics = record()
    # The management API is where the URL's host has it (:15672) unless said otherwise,
    # as for the CLI: a broker elsewhere (a cluster's node) gives $RABBITRY_MANAGEMENT_URL.
    target = parse_url(url, management=os.environ.get("RABBITRY_MANAGEMENT_URL"))
    done = await apply(load_spec(SPEC), target, timeout=10)
    print(f"rabbitry apply: {len(done.planned.plan.changes)} change(s) to {target.masked}")
    workers = [await start_worker(url, f"worker-{i}", step_seconds) for i in (1, 2)]
    echoes = [asyncio.create_task(echo(process)) for process in workers]
    expected: dict[str, str] = {}
    try:
        async with Server(url) as server:
            jobs = JobServer(server, Timeline())
            stoppers = []
            for job_type, steps, stop_after in JOBS:
                flaky = {"fail_first_try": True} if job_type == FLAKY else {}
                job = await jobs.dispatch(job_type, steps, requested_by="demo", **flaky)
                expected[job.job_id] = "completed" if stop_after is None else "stopped"
                if stop_after is not None:
                    stoppers.append(asyncio.create_task(stop_when_running(jobs, job, stop_after)))
            ended = await jobs.wait(timeout)
            await asyncio.gather(*stoppers)
            await jobs.close()
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        await asyncio.gather(*(p.wait() for p in workers), *echoes)
    print()
    ok = ended
    for job in jobs.jobs.values():
        right = job.outcome == expected[job.job_id]
        ok = ok and right
        mark = "ok " if right else "BAD"
        print(
            f"{mark} {job.job_type:<10} {job.job_id[:8]}  {job.outcome or 'did not end':<10} "
            f"by {job.worker or '-'}, {job.updates} updates (expected {expected[job.job_id]})"
        )
    print("every job ended as expected" if ok else "some jobs did not end as expected")
    print()
    print("metrics of the server (the workers printed theirs as they stopped):")
    for line in metrics() if metrics is not None else [NEEDS]:
        print(f"  {line}")
    return ok


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("RABBITRY_URL", "amqp://guest:guest@localhost:5672/"),
        help="the broker (its path is the vhost)",
    )
    parser.add_argument("--step-seconds", type=float, default=0.15)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for all jobs")
    args = parser.parse_args(argv)
    try:
        ok = asyncio.run(demo(args.url, args.step_seconds, args.timeout))
    except RabbitryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
