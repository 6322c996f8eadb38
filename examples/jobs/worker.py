"""A jobs worker: takes Start from jobs.ready, runs the job, reports on it, obeys Stop.

Built only on the generated ``jobs_contracts`` package.  It never learns who
dispatched a job: it listens for Stop on its own run-time queue, bound to
``jobs.control`` with the id of the job it runs, and reports on ``jobs.status``
with that id as the routing key.

    python examples/jobs/worker.py --url amqp://guest:guest@localhost:5672/

runs until interrupted (Ctrl-C or SIGTERM), finishing the jobs it holds
within ``--drain-timeout`` seconds (the rest go back to jobs.ready for another
worker); ``--ready-file PATH`` exists while it takes jobs (a probe's readiness).
A job of type ``explode`` fails on purpose, to show the failure path.  A job
whose parameters say ``fail_first_try: true`` fails its first try, to show a
delayed retry: topology.yaml gives jobs.ready ``retry: [1s, 5s]``, so the job
comes back after 1 s and the worker says "attempt 2 after 1s".  With
``--metrics`` it prints rabbitry's metrics when it stops (``metrics.py``).

When ``jobs.ready`` is deleted or replaced under it (``rabbitry apply
--allow-data-loss``, ``--migrate``), the consumer waits for the queue and takes
jobs again as soon as it exists (the runtime logs both); jobs in hand finish.
If the queue stays gone longer than ``--reattach-timeout`` seconds, the
consumer stops and so does the worker, with exit status 1: a worker never
stays up and idle.  The ready file is removed while the queue is gone.

When the broker goes away, the worker reconnects for ever by default (the
runtime logs the loss, a WARNING every 30 s with the outage's length, and the
reconnect), and takes jobs again when the broker is back.  With
``--reconnect-timeout SECONDS`` it gives up after that long an outage and
exits 1, for a supervisor (systemd, Kubernetes) that restarts it instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from metrics import NEEDS, record

from jobs_contracts import (
    JobControlSubscription,
    JobsReadyDelivery,
    Start,
    StartSuccess,
    Update,
    Worker,
)
from jobs_contracts.messages import Finished, FinishedOutcome
from rabbitry import RabbitryError, Unroutable

__all__ = ["JobWorker", "main"]

M = TypeVar("M")

#: Seconds a status message waits for the server's queue to be bound again.
REPORT_PATIENCE = 30.0


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class JobWorker:
    """Runs each Start it is given, one step every ``step_seconds``."""

    def __init__(
        self,
        worker: Worker,
        name: str,
        *,
        step_seconds: float = 0.2,
        say: Callable[[str], None] = print,
    ) -> None:
        self.worker = worker
        self.name = name
        self.step_seconds = step_seconds
        self.say = say

    async def handle(self, delivery: JobsReadyDelivery) -> None:
        """One job, start to end; the Start is acknowledged when this returns."""
        start: Start = delivery.body
        job_id = start["job_id"]
        what = f"{self.name}: {start['job_type']} {job_id[:8]}"
        if delivery.attempt > 1:
            self.say(f"{what}: attempt {delivery.attempt}{self._after(delivery.attempt)}")
        elif start.get("parameters", {}).get("fail_first_try"):
            self.say(f"{what}: fails its first try (fail_first_try)")
            raise RuntimeError("this job fails its first try, as its parameters ask")
        async with self.worker.subscribe_job_control(job_id=job_id) as control:
            stop = asyncio.Event()
            watcher = asyncio.create_task(self._watch(control, stop))
            try:
                await self._run(start, stop)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    def _after(self, attempt: int) -> str:
        """`` after 1s``: the delay before try ``attempt``, from the spec's ``retry:``."""
        retry = self.worker.client.contract.queue("jobs.ready").retry
        if attempt - 2 >= len(retry):
            return ""  # tried again in process (a queue without retry:)
        return f" after {retry[attempt - 2][0] / 1000:g}s"

    async def _watch(self, control: JobControlSubscription, stop: asyncio.Event) -> None:
        async for delivery in control:
            if delivery.type == "Stop":
                self.say(f"{self.name}: STOP for {delivery.body['job_id'][:8]}")
                stop.set()

    async def _run(self, start: Start, stop: asyncio.Event) -> None:
        job_id, steps = start["job_id"], start["steps"]
        hello: StartSuccess = {"job_id": job_id, "worker": self.name, "started_at": now()}
        await self._report(self.worker.publish_start_success, hello)
        done = 0
        outcome: FinishedOutcome = "completed"
        error = ""
        for step in range(1, steps + 1):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.step_seconds)
            if stop.is_set():
                outcome = "stopped"
                break
            if start["job_type"] == "explode" and step > steps // 2:
                outcome, error = "failed", f"step {step} exploded, as jobs of this type do"
                break
            done = step
            update: Update = {
                "job_id": job_id,
                "step": step,
                "progress": round(100 * step / steps, 1),
                "note": f"{start['job_type']}: step {step} of {steps}",
                "at": now(),
            }
            await self._report(self.worker.publish_update, update)
        finished: Finished = {
            "job_id": job_id,
            "outcome": outcome,
            "steps_done": done,
            "finished_at": now(),
        }
        if error:
            finished["error"] = error
        await self._report(self.worker.publish_finished, finished)

    async def _report(self, publish: Callable[[M], Awaitable[None]], message: M) -> None:
        """Publish a status message, waiting out a server that is reconnecting.

        The server's run-time queue (and its binding for this job) is gone while
        the server reconnects: the message is then returned as unroutable, and is
        tried again for up to ``REPORT_PATIENCE`` seconds.
        """
        deadline = asyncio.get_running_loop().time() + REPORT_PATIENCE
        while True:
            try:
                await publish(message)
                return
            except Unroutable:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.25)


async def run(
    url: str | None,
    name: str,
    *,
    step_seconds: float,
    prefetch: int,
    reattach_timeout: float,
    reconnect_timeout: float | None = None,
    concurrency: int | None = None,
    drain_timeout: float = 20.0,
    ready_file: str | None = None,
) -> None:
    """Consume until a signal (then drain: jobs in hand finish within ``drain_timeout``, the
    rest go back to jobs.ready), or until the consumer or the client stops on its own (then
    raise why: its queue stayed gone, the broker stayed away longer than ``reconnect_timeout``).
    The runtime's run loop does it all (``Client.run``)."""
    async with Worker(
        url,
        prefetch=prefetch,
        reattach_timeout=reattach_timeout,
        reconnect_timeout=reconnect_timeout,
        concurrency=concurrency,
    ) as worker:
        jobs = JobWorker(worker, name, step_seconds=step_seconds)
        consumer = worker.consume_jobs_ready(jobs.handle)
        await consumer.ready()
        print(f"{name}: waiting for jobs on jobs.ready", flush=True)
        await worker.client.run(drain_timeout=drain_timeout, ready_file=ready_file)
        print(f"{name}: stopped; the jobs in hand finished or went back to jobs.ready", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("RABBITRY_URL"), help="the broker")
    parser.add_argument("--name", default=f"worker@{socket.gethostname()}:{os.getpid()}")
    parser.add_argument("--step-seconds", type=float, default=0.2)
    parser.add_argument("--prefetch", type=int, default=2, help="jobs held at once")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="jobs run at once (default: --prefetch)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=20.0,
        help="seconds the jobs in hand get to finish on SIGTERM before they are requeued",
    )
    parser.add_argument(
        "--ready-file", default=None, help="a file present while the worker takes jobs"
    )
    parser.add_argument(
        "--reattach-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for jobs.ready when it is deleted, before exiting 1",
    )
    parser.add_argument(
        "--reconnect-timeout",
        type=float,
        default=None,
        help="seconds of broker outage after which to exit 1 (default: reconnect for ever)",
    )
    parser.add_argument(
        "--metrics", action="store_true", help="print rabbitry's metrics when it stops"
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="also log connects and reconnects (INFO)"
    )
    args = parser.parse_args(argv)
    # The runtime says at WARNING when its queue goes, when the broker goes away (and every
    # 30 s while it stays away) or blocks it; at INFO when it connects and reconnects.
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(name)s: %(levelname)s: %(message)s",
    )
    # aiormq logs each failed connection attempt at ERROR (every 5 s through an outage)
    # and a traceback per lost connection; rabbitry says the same once, with the node,
    # the outage's length and the attempts in ``extra``.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    metrics = record() if args.metrics else None
    if args.metrics and metrics is None:
        print(f"{args.name}: {NEEDS}", flush=True)
    try:
        asyncio.run(
            run(
                args.url,
                args.name,
                step_seconds=args.step_seconds,
                prefetch=args.prefetch,
                reattach_timeout=args.reattach_timeout,
                reconnect_timeout=args.reconnect_timeout,
                concurrency=args.concurrency,
                drain_timeout=args.drain_timeout,
                ready_file=args.ready_file,
            )
        )
    except RabbitryError as exc:
        print(f"{args.name}: stopped: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        for line in metrics() if metrics is not None else ():
            print(f"{args.name}: metric {line}", flush=True)


if __name__ == "__main__":
    main()
