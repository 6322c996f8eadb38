"""Consumers that come back when their queue is deleted or replaced under them.

What RabbitMQ 3.10.8 does to a consumer whose queue goes (probed on the broker,
pinned by tests/test_reattach.py):

- **Classic queue** deleted (AMQP ``queue.delete`` or the HTTP API): each
  consumer gets ``basic.cancel``, sent before the ``delete-ok``, also when the
  queue is declared again at once (with other arguments or another type).  The
  channel stays open, and acks of the old queue's deliveries on it are taken
  silently.
- **Quorum queue** deleted: ``basic.cancel`` comes about 30 ms after the
  ``delete-ok``, once the queue's Raft cluster has stopped.  Deleted and
  declared again within that window -- what a replace does: delete then
  declare on one channel -- NO cancel ever comes.  The channel's quorum client
  takes the new queue (same Raft server name) for the old one after a leader
  change: the new queue counts the consumer (``consumer_count`` 1 in a passive
  declare, on any channel), checks messages out to it up to the prefetch
  (unacknowledged), and delivers none.  ``basic.cancel`` + ``basic.consume``
  on the same channel does not free them; closing the channel does (they go
  back, redelivered, and count as a delivery attempt), and a consumer on a new
  channel gets them.  Nothing an AMQP client can read tells this stuck
  consumer from a live one.
- **Exclusive (run-time) queue**: classic, so deleted means cancelled; but
  its *bindings* can go without a word to anyone (an exchange deleted and
  declared again, a binding deleted by hand), and then it receives nothing.

What the runtime does about it (``_consumer.Inbox``):

- on a cancel from the broker, the consumer attaches again -- on a new
  channel -- as soon as the queue exists: tries after capped, jittered
  backoff (``backoff``: 0.1 s doubling to 5 s), logs at WARNING when it lost
  the queue, while it waits (after 10, 20, 40, ... s) and when it is back;
  ``consuming`` is ``False`` meanwhile (a readiness signal).  After
  ``reattach_timeout`` seconds without the queue it fails with ``NotFound``
  (``Consumer.wait()`` raises it; a subscription's loop raises it): a process
  never stays alive and idle;
- a consumer of an ``apply``-declared queue that received nothing for
  ``idle_check`` seconds renews its channel (consume on a new one, then cancel
  and close the old one): the stuck quorum consumer above is replaced, and
  what it held comes back.  Any queue type, because the queue on the broker
  may no longer be the type this process's contract says;
- a subscription binds its queue again every ``idle_check`` seconds (a bind
  that exists changes nothing), which restores a lost binding; an exchange
  that is missing then counts as the queue being gone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["DEFAULT_IDLE_CHECK", "DEFAULT_REATTACH_TIMEOUT", "Absence", "ReattachPolicy"]

#: Seconds a consumer waits for its queue to come back before it fails.
DEFAULT_REATTACH_TIMEOUT = 300.0
#: Seconds without a delivery after which a consumer renews its channel (and a
#: subscription binds again): also the longest a stuck quorum consumer stays stuck.
DEFAULT_IDLE_CHECK = 15.0
#: Seconds after losing its queue when a consumer first says it is still waiting (then doubling).
FIRST_REPORT = 10.0


@dataclass(frozen=True)
class ReattachPolicy:
    """How a consumer comes back (``Client(reattach_timeout=..., idle_check=...)``).

    ``timeout``: seconds to wait for a queue that is gone before failing
    (``None``: for ever, logging at WARNING at growing intervals).
    ``idle_check``: seconds without a delivery before the channel is renewed
    (``0`` turns renewing and re-binding off).
    """

    timeout: float | None = DEFAULT_REATTACH_TIMEOUT
    idle_check: float = DEFAULT_IDLE_CHECK


class Absence:
    """One spell without the queue: when it began, when to report, when to give up."""

    __slots__ = ("_next_report", "began", "began_at", "policy")

    def __init__(self, policy: ReattachPolicy, now: float) -> None:
        self.policy = policy
        #: The event loop's clock when the queue went.
        self.began = now
        #: The wall clock then (for messages).
        self.began_at = time.time()
        self._next_report = now + FIRST_REPORT

    def elapsed(self, now: float) -> float:
        return now - self.began

    def remaining(self, now: float) -> float | None:
        """Seconds left before giving up (``None``: never gives up)."""
        if self.policy.timeout is None:
            return None
        return self.policy.timeout - self.elapsed(now)

    def report_due(self, now: float) -> bool:
        """Whether to log that it still waits (at 10, 20, 40, ... s)."""
        if now < self._next_report:
            return False
        self._next_report = self.began + 2 * (self._next_report - self.began)
        return True

    def since(self) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self.began_at))
