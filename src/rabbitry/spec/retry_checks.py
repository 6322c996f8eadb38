"""The checks of delayed retries (``retry: [5s, 30s, 5m]`` on a queue, ``spec._retry``).

A retry queue is an ordinary queue of the model that nobody consumes: a failed
message waits in it until its TTL (the delay) ends, then the broker dead-letters
it back to its queue through the default exchange.  So the general checks leave
retry queues alone (not "unconsumed", no "policy-settable" advice: their
arguments are the delay and the way back, made by rabbitry), and these say what
can break the cycle instead (``retry:`` on a queue with no dead-letter exchange is
``checks.check_warnings``' ``no-dead-letter``: the last failure is dropped):

- a service consuming a retry queue (error): it would take messages before
  their delay ends, and the queue's own consumer never sees them again;
- ``retry:`` on a queue no service consumes (warning): no handler fails there,
  so nothing is ever retried;
- a (user or operator) policy whose setting takes effect on a retry queue
  (warning): ``message-ttl`` lower than the delay (the lesser wins) brings
  messages back early; ``expires`` deletes the retry queue, and the messages
  waiting in it, once it has had no consumer for that long (which is always);
  ``max-length`` / ``max-length-bytes`` drop or refuse waiting retries.  A
  policy's ``dead-letter-exchange`` or ``dead-letter-routing-key`` is harmless:
  the retry queue's arguments win over a policy for both.

The cycle queue → retry queue → queue is intended, and no check calls it a
dead-letter loop: the message leaves the queue by an ack, not by dead-lettering
(the runtime publishes the copy), and each try is counted by the runtime.
"""

from __future__ import annotations

from collections.abc import Iterator

from rabbitry.spec.diagnostics import Code, Diagnostic
from rabbitry.spec.model import Policy, Queue, Spec, retry_label
from rabbitry.spec.policies import effective

__all__ = ["RETRY_ADVISORY", "RETRY_CHECKS", "retry_queues_of"]

#: Policy keys that change what a retry queue does, when a policy's value takes effect.
_HARMFUL = ("message-ttl", "expires", "max-length", "max-length-bytes")


def retry_queues_of(spec: Spec) -> Iterator[Queue]:
    """The retry queues of the spec (made by a queue's ``retry:``)."""
    return (q for q in spec.queues.values() if q.retry_of is not None)


def check_retry_consumers(spec: Spec) -> Iterator[Diagnostic]:
    """No service consumes a retry queue: it consumes the queue the retries come back to."""
    for queue in retry_queues_of(spec):
        for service in spec.consumers(queue.name):
            yield Diagnostic(
                spec.services[service].locs.of(f"consumes.{queue.name}", key=True),
                Code.RETRY_CONSUMER,
                f"service {service!r} consumes retry queue {queue.name!r}, where failed "
                f"messages of {queue.retry_of!r} wait for their delay: it would take them "
                "early, and they would never come back",
                f"consume {queue.retry_of!r} instead: its retry queues bring the messages back",
            )


def check_retry_warnings(spec: Spec) -> Iterator[Diagnostic]:
    """A queue with ``retry:`` is consumed: else no handler fails there, nothing retries."""
    for queue in spec.queues.values():
        if queue.retry and not spec.consumers(queue.name):
            yield Diagnostic(
                queue.locs.of("retry"),
                Code.RETRY_UNCONSUMED,
                f"queue {queue.name!r} has retry: but no service consumes it: no handler "
                "fails there, so nothing is ever retried",
                "add it to a service's `consumes`, or remove `retry:`",
            )


def _effect(key: str, value: object, queue: Queue) -> str:
    delay = queue.arguments.get("x-message-ttl")
    if key == "message-ttl":
        shown = retry_label(delay) if isinstance(delay, int) else "its delay"
        return (
            f"lower than the delay {shown} (the lesser wins): messages come back after {value} ms"
        )
    if key == "expires":
        return (
            "a retry queue never has a consumer, so the broker deletes it, and the "
            f"messages waiting in it, after {value} ms"
        )
    return f"waiting retries over the limit are dropped or refused ({key}: {value})"


def check_retry_policies(spec: Spec) -> Iterator[Diagnostic]:
    """A policy setting that takes effect on a retry queue and changes its delay or
    what it keeps (``_HARMFUL``), reported at the policy's key: one finding per policy
    and key, naming the retry queues."""
    found: dict[tuple[str, str], list[tuple[Queue, object]]] = {}
    policies: dict[str, Policy] = {}
    for queue in retry_queues_of(spec):
        settings = effective(spec, queue.name)
        for key in _HARMFUL:
            setting = settings.get(key)
            if setting is not None and setting.policy is not None:
                found.setdefault((setting.source, key), []).append((queue, setting.value))
                policies[setting.source] = setting.policy
    for (source, key), hits in sorted(found.items()):
        policy = policies[source]
        what = f"{'operator policy' if policy.operator else 'policy'} {policy.name!r}"
        queue, value = hits[0]
        names = ", ".join(repr(q.name) for q, _ in hits[:3])
        more = f" and {len(hits) - 3} more" if len(hits) > 3 else ""
        yield Diagnostic(
            policy.locs.of(f"definition.{key}", key=True),
            Code.RETRY_POLICY,
            f"{what} sets {key}: {value!r} on retry queue {names}{more}: "
            f"{_effect(key, value, queue)}",
            "narrow the policy so that it leaves out the retry queues (named "
            "QUEUE.retry.DELAY): a pattern that does not match them, or `queues: [...]`",
        )


#: The checks that may find an error; ``RETRY_ADVISORY`` those whose findings are all
#: warnings (skipped by ``load_spec``, see ``checks.ADVISORY``).
RETRY_CHECKS = (check_retry_consumers, check_retry_warnings, check_retry_policies)
RETRY_ADVISORY = (check_retry_warnings, check_retry_policies)
