"""rabbitry's exception tree, in one place.

::

    RabbitryError
    ├── SpecError              the spec (or a schema it names) has errors; carries diagnostics
    ├── RoutingError           a routing question about something the spec does not have
    ├── UsageError             the command line asks for something that cannot be done (raised
    │                          by ``rabbitry.cli`` only; the library raises the three below)
    ├── InvalidArgument        also a ValueError: a library call got an argument it cannot use
    │                          (a bad value, a message the client's service does not publish)
    ├── UnknownName            also a LookupError: the contract has no service, message or
    │                          queue of that name: ``kind``, ``name``, ``known``
    ├── InvalidState           also a RuntimeError: the object cannot do that now (a client
    │                          used before ``async with`` or opened twice)
    ├── DataLossRefused        apply would delete messages or consumers; nothing was changed:
    │                          ``at_risk`` (one ``AtRisk`` per object) and ``remedies``
    ├── ContractViolation      a message does not fit its schema (or its routing key cannot be
    │                          filled); carries the message name and each fault's JSON path
    ├── DeadLetter             raised BY A HANDLER, not by rabbitry: dead-letter this message
    │                          now with ``reason``, no retry (a failure no retry can mend)
    └── BrokerError            talking to RabbitMQ failed; the message names host:port (password
        │                      masked), the object and what to do
        ├── ConnectionFailed   unreachable, wrong credentials, missing vhost, connection lost
        ├── AccessRefused      403: the user may not do this to this object
        ├── NotFound           404: an object the operation needs does not exist
        ├── PreconditionFailed 406: an object exists with other properties (inequivalent arg)
        ├── BrokerTimeout      a call did not finish by its deadline
        │   ├── PublishTimeout a publish was not confirmed by its deadline (also a
        │   │                  PublishFailed): ``sent`` says whether it left (outcome
        │   │                  UNKNOWN: it may have reached its queues) or never did
        │   └── RequestTimeout no reply to a request (``Client.request``) by its deadline
        ├── PublishFailed      a published message is not known to be delivered; carries
        │   │                  ``message_name``, ``message_id`` and, in publish_many, ``index``
        │   ├── Unroutable     returned (mandatory): no queue is bound for its routing key
        │   ├── PublishNacked  the broker refused it (nack: a queue's overflow limit, ...)
        │   ├── PublishRefused the broker closed the channel over this message itself (a
        │   │   │              406, e.g. a ``user_id`` not the connection's): never re-sent
        │   │   └── MessageTooLarge  over the broker's ``max_message_size``: ``size``, ``limit``
        │   └── PublishManyFailed    some of a publish_many's messages failed: ``failures``
        │                      maps each one's index to its error (any of the above, or a
        │                      NotFound, ConnectionFailed ...); the others were confirmed
        └── ManagementError    the management HTTP API answered with an error

Lower-layer exceptions (PyYAML, jsonschema, httpx, aiormq) are mapped into
this tree where they are caught, once; nothing above that layer sees them.

Misuse of the library is an error of this tree that is also the builtin a
Python programmer expects (``except ValueError`` still works), never
``UsageError``, which is the command line's.

The library speaks Python.  Where an error tells the user to change a
setting (``allow_data_loss``, the broker's URL, ...), the setting is data, an
``Option``, in a ``Phrase``: ``str(exc)`` names it as the Python argument
(``allow_data_loss=True``), and the command line renders the same phrase once
with its flags (``--allow-data-loss``) when it prints (``Phrase.render``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from rabbitry._untrusted import shown

if TYPE_CHECKING:
    from rabbitry.spec.diagnostics import Diagnostic

__all__ = [
    "AccessRefused",
    "AtRisk",
    "BrokerError",
    "BrokerTimeout",
    "ConnectionFailed",
    "ContractViolation",
    "DataLossRefused",
    "DeadLetter",
    "Fault",
    "InvalidArgument",
    "InvalidState",
    "ManagementError",
    "MessageTooLarge",
    "NotFound",
    "Option",
    "Phrase",
    "PreconditionFailed",
    "PublishFailed",
    "PublishManyFailed",
    "PublishNacked",
    "PublishRefused",
    "PublishTimeout",
    "RabbitryError",
    "RequestTimeout",
    "RoutingError",
    "SpecError",
    "UnknownName",
    "Unroutable",
    "UsageError",
    "first_broker_error",
    "phrase_of",
    "with_hint",
]


class Option(enum.Enum):
    """A setting an error tells the user to change: a fact, so each interface names it its way.

    The value is the Python spelling (``str(exc)``); ``rabbitry.cli`` maps each
    member to its flag or environment variable.
    """

    URL = "the broker URL (url=, or $RABBITRY_URL)"
    MANAGEMENT_URL = "the management URL (parse_url's management=)"
    PRUNE = "prune=True"
    MIGRATE = "migrate=True"
    ALLOW_DATA_LOSS = "allow_data_loss=True"
    SPEND_DELIVERY = "spend_delivery=True"
    OUT = "out= (a folder)"
    FORCE = "force=True"


def _python(option: Option) -> str:
    return option.value


@dataclass(frozen=True)
class Phrase:
    """An error's text with the settings it names kept as ``Option`` members.

    ``str()`` is the Python wording; ``render(spell)`` the same text with each
    option spelt by ``spell`` (the command line's flags).  An error made with a
    phrase as its one argument prints it the Python way, as any message.
    """

    parts: tuple[str | Option, ...]

    @classmethod
    def of(cls, *parts: str | Option | Phrase) -> Phrase:
        flat: list[str | Option] = []
        for part in parts:
            flat.extend(part.parts if isinstance(part, Phrase) else (part,))
        return cls(tuple(flat))

    def render(self, spell: Callable[[Option], str] = _python) -> str:
        return "".join(spell(p) if isinstance(p, Option) else p for p in self.parts)

    def __str__(self) -> str:
        return self.render()


def phrase_of(exc: BaseException) -> Phrase:
    """``exc``'s message as a phrase (its own, or its plain text as one)."""
    if len(exc.args) == 1 and isinstance(exc.args[0], Phrase):
        return exc.args[0]
    return Phrase((str(exc),))


class RabbitryError(Exception):
    """Base of every error rabbitry raises on purpose."""


class SpecError(RabbitryError):
    """The spec cannot be used: ``diagnostics`` says every reason, each located."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        first = self.diagnostics[0].render() if self.diagnostics else "invalid spec"
        more = len(self.diagnostics) - 1
        super().__init__(first + (f" (and {more} more)" if more > 0 else ""))


class RoutingError(RabbitryError):
    """A routing question names an exchange the spec does not declare."""


class UsageError(RabbitryError):
    """The command line asks for something that cannot be done (raised by ``rabbitry.cli`` only)."""


class InvalidArgument(RabbitryError, ValueError):
    """A library call got an argument it cannot use; nothing was done."""


class UnknownName(RabbitryError, LookupError):
    """The contract has no ``kind`` (service, message, queue) called ``name``; ``known`` lists
    the names it has."""

    def __init__(self, kind: str, name: str, known: Sequence[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = tuple(sorted(known))
        super().__init__(
            f"the contract has no {kind} {name!r}; it has: {', '.join(self.known) or 'none'}"
        )


class InvalidState(RabbitryError, RuntimeError):
    """The object cannot do that now: a client not open (or opened twice), a subscription
    entered twice."""


@dataclass(frozen=True)
class Fault:
    """One way a message breaks its contract: where (a JSON Pointer) and why.

    Both come from a payload (a received one too), so its text shows them escaped and
    bounded (``_untrusted.shown``; the reason is a validator's sentence, which shows values
    by their repr): a property name with a newline cannot forge a line of the log or of a
    ``ContractViolation``.  The fields keep them raw.
    """

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{shown(self.path or '/')}: {shown(self.reason, sentence=True)}"


class ContractViolation(RabbitryError):
    """A message does not fit its schema; nothing was sent.

    ``faults`` lists every problem, each with the JSON Pointer of the value
    (``/job_id``); ``path`` and ``reason`` are the first one's; ``index`` is the
    item's position when it came from ``publish_many`` (``None`` otherwise).
    """

    def __init__(self, message: str, faults: Sequence[Fault], *, index: int | None = None) -> None:
        self.message_name = message
        self.faults = tuple(faults)
        self.index = index
        first = self.faults[0] if self.faults else Fault("", "invalid")
        self.path, self.reason = first.path, first.reason
        more = f" (and {len(self.faults) - 1} more)" if len(self.faults) > 1 else ""
        item = f"item {index}: " if index is not None else ""
        super().__init__(f"{item}{message} {first}{more}")


class DeadLetter(RabbitryError):
    """Raise it in a handler to dead-letter the message now, with ``reason``: no further try,
    in process or after a ``retry:`` delay.

    For a failure that no retry can mend (a job that names a file that does not exist, a
    payload the schema allows but the business refuses): retrying it would only delay the
    dead letter and load the queue.  The dead letter's ``x-rabbitry-error`` is ``reason``;
    any other exception a handler raises is retried.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class AtRisk:
    """One object apply would delete or replace, and what that would lose.

    A queue: ``messages`` and ``consumers`` (``None``: not known), ``differences``
    (why it is replaced: each setting that differs), ``unmanaged`` (deleted for
    not being in the spec, ``prune``), ``cut_migration_of`` (a temporary queue a
    cut migration of that queue left), ``unmovable`` (why a migration cannot
    move it).  An exchange: ``bindings`` it would drop that the spec does not own.
    """

    kind: str  # "queue" or "exchange"
    action: str  # "replace" or "delete"
    name: str
    messages: int | None = None
    consumers: int | None = None
    bindings: int = 0
    differences: tuple[str, ...] = ()
    unmanaged: bool = False
    cut_migration_of: str | None = None
    unmovable: str | None = None

    def phrase(self) -> Phrase:
        if self.kind == "exchange":
            return Phrase.of(
                f"{self.action} exchange {self.name!r}: drops {_count(self.bindings, 'binding')} "
                "the spec does not own (run-time ones made by consumers among them)"
            )
        why: Phrase
        if self.cut_migration_of is not None:
            why = Phrase.of(
                f"a cut migration of queue {self.cut_migration_of!r} left them here: apply "
                "again with ",
                Option.MIGRATE,
                " to move them back",
            )
        elif self.unmanaged:
            why = Phrase.of("it is not in the spec (", Option.PRUNE, ")")
        else:
            why = Phrase.of("; ".join(self.differences) or "its properties differ")
            if self.unmovable:
                why = Phrase.of(why, "; ", Option.MIGRATE, f" cannot move it: {self.unmovable}")
        holds = f"holds {_count(self.messages, 'message')}, {_count(self.consumers, 'consumer')}"
        return Phrase.of(f"{self.action} queue {self.name!r}: {holds}; ", why)


def _count(n: int | None, noun: str) -> str:
    if n is None:
        return f"an unknown number of {noun}s"
    return f"{n} {noun}" + ("" if n == 1 else "s")


class DataLossRefused(RabbitryError):
    """Apply would delete or replace a queue that holds messages or has consumers (or an
    exchange with bindings the spec does not own); nothing was changed.

    ``at_risk`` says what would be lost, one ``AtRisk`` per object; ``remedies``
    the options that get past the refusal, the preferred first
    (``Option.MIGRATE`` when it can move them, ``Option.ALLOW_DATA_LOSS``).
    """

    def __init__(self, at_risk: Sequence[AtRisk], remedies: Sequence[Option]) -> None:
        self.at_risk = tuple(at_risk)
        self.remedies = tuple(remedies)
        lines: list[str | Option | Phrase] = [
            "apply would lose messages, consumers or bindings, so nothing was changed:"
        ]
        for risk in self.at_risk:
            lines += ["\n  ", risk.phrase()]
        lines.append("\n")
        if Option.MIGRATE in self.remedies:
            lines += [
                "apply again with ",
                Option.MIGRATE,
                " to replace queues with their messages and bindings kept, or with ",
                Option.ALLOW_DATA_LOSS,
                " to delete and re-declare them anyway (their messages are lost), or drain "
                "them first",
            ]
        else:
            lines += [
                "apply again with ",
                Option.ALLOW_DATA_LOSS,
                " to delete them anyway (their messages are lost)",
            ]
        super().__init__(Phrase.of(*lines))


class BrokerError(RabbitryError):
    """Talking to RabbitMQ failed."""


class ConnectionFailed(BrokerError):
    """The broker cannot be reached, refuses the credentials or has no such vhost."""


class AccessRefused(BrokerError):
    """403 ACCESS_REFUSED: the user may not do this to this object."""


class NotFound(BrokerError):
    """404 NOT_FOUND: an object the operation needs does not exist."""


class PreconditionFailed(BrokerError):
    """406 PRECONDITION_FAILED: the object exists with other properties."""


class BrokerTimeout(BrokerError):
    """A broker call did not finish by its deadline."""


class PublishFailed(BrokerError):
    """A published message is not known to have reached its queues.

    ``message_name`` and ``message_id`` say which message; ``index`` is its
    position in a ``publish_many`` (``None`` for ``publish``).  The runtime
    fills them in after ``broker_error`` has made the error.
    """

    message_name: str | None = None
    message_id: str | None = None
    index: int | None = None


class Unroutable(PublishFailed):
    """The broker returned the message (``mandatory``): no queue is bound for its routing key."""


class PublishNacked(PublishFailed):
    """The broker refused the message (``basic.nack``): e.g. a queue at its length limit."""


class PublishRefused(PublishFailed):
    """The broker closed the publishing channel because of this message itself.

    A message refused for what it is (its size, a ``user_id`` that is not the
    connection's user, ...) would close every channel it is written on, so it
    is never written again: it fails alone, and the messages written beside
    it are written again (once) on the next channel.  It reached no queue.
    """


class MessageTooLarge(PublishRefused):
    """The message's body is over the broker's ``max_message_size``: ``size`` and ``limit``
    (bytes) say by how much.  Raise the broker's limit, or send less (a reference to the
    data rather than the data)."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(message)


class PublishManyFailed(PublishFailed):
    """Some messages of one ``publish_many`` are not known to be delivered; the others were
    confirmed.

    ``failures`` maps each failed item's index (its position in the call) to its
    own error, in index order: ``Unroutable``, ``PublishNacked``,
    ``PublishTimeout``, ``MessageTooLarge``, ``NotFound`` (its exchange is missing),
    ``ConnectionFailed`` ...; each ``PublishFailed`` among them also carries
    its ``index``, ``message_name`` and ``message_id``.  Retry by index.
    """

    def __init__(self, total: int, failures: Mapping[int, BrokerError]) -> None:
        self.failures: Mapping[int, BrokerError] = MappingProxyType(dict(sorted(failures.items())))
        self.total = total
        indices = list(self.failures)
        shown = ", ".join(map(str, indices[:10])) + (", ..." if len(indices) > 10 else "")
        first = self.failures[indices[0]] if indices else None
        super().__init__(
            f"{len(indices)} of {total} messages were not delivered (items {shown}); "
            f"the others were confirmed. Item {indices[0] if indices else '-'}: {first}"
        )


class PublishTimeout(PublishFailed, BrokerTimeout):
    """No confirm by the deadline.

    ``sent`` is ``True`` when the message was written to the broker: then
    the outcome is UNKNOWN (it may have reached its queues, and a retry may
    duplicate it; its ``message_id`` tells the copies apart).  ``False``: it
    never left this process.
    """

    sent: bool = True


class RequestTimeout(BrokerTimeout):
    """No reply to a request (``Client.request``) by its deadline: the request was sent (it
    may have been handled; its reply is dropped if it comes later)."""


class ManagementError(BrokerError):
    """The management HTTP API answered with an error."""


def first_broker_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a task group's failures: the first ``BrokerError`` in it
    (nested groups searched, so a sibling ``BrokerError`` wins over a nested other error),
    else its first exception."""
    found: BaseException | None = group.subgroup(BrokerError)
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found if found is not None else group.exceptions[0]


def with_hint(exc: BrokerError, hint: str | Phrase) -> BrokerError:
    """``exc`` with ``hint`` after its message, its type and fields kept.

    For a caller that knows what a lower layer's error means for it (a cut
    migration, a cut apply): one exception, told once more, never re-made
    (a subclass may take fields its constructor requires).
    """
    exc.args = (Phrase.of(phrase_of(exc), "; ", hint),)
    return exc
