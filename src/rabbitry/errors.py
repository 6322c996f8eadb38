"""rabbitry's exception tree, in one place.

::

    RabbitryError
    ├── SpecError              the spec (or a schema it names) has errors; carries diagnostics
    ├── RoutingError           a routing question about something the spec does not have
    ├── UsageError             the command line asks for something that cannot be done
    ├── DataLossRefused        apply would delete messages or consumers; nothing was changed
    ├── ContractViolation      a message does not fit its schema (or its routing key cannot be
    │                          filled); carries the message name and each fault's JSON path
    └── BrokerError            talking to RabbitMQ failed; the message names host:port (password
        │                      masked), the object and what to do
        ├── ConnectionFailed   unreachable, wrong credentials, missing vhost, connection lost
        ├── AccessRefused      403: the user may not do this to this object
        ├── NotFound           404: an object the operation needs does not exist
        ├── PreconditionFailed 406: an object exists with other properties (inequivalent arg)
        ├── BrokerTimeout      a call did not finish by its deadline
        └── ManagementError    the management HTTP API answered with an error

Lower-layer exceptions (PyYAML, jsonschema, httpx, aiormq) are mapped into
this tree where they are caught, once; nothing above that layer sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rabbitry.spec.diagnostics import Diagnostic

__all__ = [
    "AccessRefused",
    "BrokerError",
    "BrokerTimeout",
    "ConnectionFailed",
    "ContractViolation",
    "DataLossRefused",
    "Fault",
    "ManagementError",
    "NotFound",
    "PreconditionFailed",
    "RabbitryError",
    "RoutingError",
    "SpecError",
    "UsageError",
]


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
    """The command line asks for something that cannot be done."""


@dataclass(frozen=True)
class Fault:
    """One way a message breaks its contract: where (a JSON Pointer) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path or '/'}: {self.reason}"


class ContractViolation(RabbitryError):
    """A message does not fit its schema; nothing was sent.

    ``faults`` lists every problem, each with the JSON Pointer of the value
    (``/job_id``); ``path`` and ``reason`` are the first one's.
    """

    def __init__(self, message: str, faults: Sequence[Fault]) -> None:
        self.message_name = message
        self.faults = tuple(faults)
        first = self.faults[0] if self.faults else Fault("", "invalid")
        self.path, self.reason = first.path, first.reason
        more = f" (and {len(self.faults) - 1} more)" if len(self.faults) > 1 else ""
        super().__init__(f"{message} {first}{more}")


class DataLossRefused(RabbitryError):
    """Apply would delete or replace a queue that holds messages or has consumers."""


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


class ManagementError(BrokerError):
    """The management HTTP API answered with an error."""
