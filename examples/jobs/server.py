"""The jobs server: dispatches jobs, follows each by its id, stops one when asked.

Built only on the generated ``jobs_contracts`` package.  It never learns which
worker runs a job: it publishes Start to ``jobs.new``, follows the job on its
own run-time queue bound to ``jobs.status`` with the job's id (bound *before*
the Start goes out, so nothing the worker says is missed), and stops a job by
publishing Stop to ``jobs.control`` with the id.

Its run-time queue comes back by itself when the topology changes under it
(``jobs.status`` deleted and declared again drops the queue's bindings: the
subscription binds again within ``idle_check``).  If it cannot (the exchange
stays gone longer than ``reattach_timeout``), iterating the subscription
raises, and ``wait()`` raises that instead of waiting on jobs that can no
longer report: the server never waits, alive and deaf.  The same holds for
the broker itself: the client reconnects for ever by default (and says so
in its log); given a finite ``reconnect_timeout`` it gives up after that
long an outage and ``wait()`` raises ``ConnectionFailed``.  While it waits,
the client runs as a service (``Client.run``): SIGINT or SIGTERM ends the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobs_contracts import JobStatusDelivery, JobStatusSubscription, Server, Start, Stop

__all__ = ["Job", "JobServer"]


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Job:
    job_id: str
    job_type: str
    steps: int
    worker: str | None = None
    progress: float = 0.0
    outcome: str | None = None
    updates: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class JobServer:
    """Dispatch, follow and stop jobs; ``on_event`` hears every message sent and received."""

    def __init__(self, server: Server, on_event: Callable[[str, Job, str], None]) -> None:
        self.server = server
        self.on_event = on_event
        self.jobs: dict[str, Job] = {}
        self._status: JobStatusSubscription | None = None
        self._follower: asyncio.Task[None] | None = None
        self._unbinding: set[asyncio.Task[None]] = set()
        self._stack = contextlib.AsyncExitStack()

    async def dispatch(self, job_type: str, steps: int, **parameters: Any) -> Job:
        job = Job(str(uuid.uuid4()), job_type, steps)
        self.jobs[job.job_id] = job
        await self._follow(job.job_id)
        start: Start = {
            "job_id": job.job_id,
            "job_type": job_type,
            "steps": steps,
            "parameters": parameters,
            "submitted_at": now(),
        }
        await self.server.publish_start(start)
        self.on_event("START", job, f"{job_type}, {steps} steps")
        return job

    async def stop(self, job: Job, reason: str) -> None:
        stop: Stop = {"job_id": job.job_id, "reason": reason, "requested_at": now()}
        await self.server.publish_stop(stop)
        self.on_event("STOP", job, reason)

    async def _follow(self, job_id: str) -> None:
        """Bind the status queue to this job id (the first job declares the queue)."""
        if self._status is None:
            subscription = self.server.subscribe_job_status(job_id=job_id)
            self._status = await self._stack.enter_async_context(subscription)
            self._follower = asyncio.create_task(self._receive(self._status))
        else:
            await self._status.bind(job_id=job_id)

    async def _receive(self, status: JobStatusSubscription) -> None:
        async for delivery in status:
            self._record(delivery)

    def _record(self, delivery: JobStatusDelivery) -> None:
        job = self.jobs.get(delivery.body["job_id"])
        if job is None:
            return  # a job of an earlier run of the server: not ours to follow
        if delivery.type == "StartSuccess":
            job.worker = delivery.body["worker"]
            self.on_event("START_SUCCESS", job, f"taken by {job.worker}")
        elif delivery.type == "Update":
            job.updates += 1
            job.progress = delivery.body["progress"]
            self.on_event("UPDATE", job, f"{job.progress:5.1f} %  {delivery.body.get('note', '')}")
        elif delivery.type == "Finished":
            job.outcome = delivery.body["outcome"]
            detail = delivery.body.get("error", "")
            self.on_event(
                "FINISHED",
                job,
                f"{job.outcome} after {delivery.body['steps_done']} "
                f"steps{': ' + detail if detail else ''}",
            )
            job.finished.set()
            if self._status is not None:  # done with this job: stop receiving its messages
                task = asyncio.create_task(self._status.unbind(job_id=job.job_id))
                self._unbinding.add(task)
                task.add_done_callback(self._unbinding.discard)

    async def wait(self, timeout: float, *, ready_file: str | None = None) -> bool:
        """Whether every dispatched job ended within ``timeout`` seconds (``False`` also when
        SIGINT or SIGTERM came first); raises why the status subscription stopped, if it
        stopped first (e.g. ``NotFound``), or why the client gave up on the broker
        (``ConnectionFailed``).  Meanwhile the client runs as a service (``Client.run``): the
        signals end the wait, and ``ready_file`` exists while it is connected."""
        ended = asyncio.ensure_future(
            asyncio.gather(*(job.finished.wait() for job in self.jobs.values()))
        )
        running = asyncio.ensure_future(self.server.client.run(ready_file=ready_file))
        watched: list[asyncio.Future[Any]] = [ended, running]
        if self._follower is not None:
            watched.append(self._follower)
        try:
            await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not ended.done():
                ended.cancel()
            if not running.done():
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
        if running.done() and not running.cancelled() and not ended.done():
            running.result()  # the client gave up on the broker: say why
            return False  # a signal: stop waiting
        if self._follower is not None and self._follower.done() and not ended.done():
            self._follower.result()  # the subscription failed: say why
            return False  # it ended without failing (closed): the jobs cannot be followed
        return ended.done() and not ended.cancelled()

    async def close(self) -> None:
        await asyncio.gather(*self._unbinding, return_exceptions=True)
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self._stack.aclose()


class Timeline:
    """Prints each event as one line: seconds since start, job, event, detail."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.names: dict[str, str] = {}

    def __call__(self, event: str, job: Job, detail: str) -> None:
        label = self.names.setdefault(job.job_id, f"job {len(self.names) + 1}")
        at = time.monotonic() - self.started
        print(f"{at:6.2f}s  {label} ({job.job_id[:8]})  {event:<13}  {detail}", flush=True)
