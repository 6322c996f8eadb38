"""rabbitry's exception tree, in one place.

::

    RabbitryError
    ├── SpecError              the spec (or a schema it names) has errors; carries diagnostics
    ├── RoutingError           a routing question about something the spec does not have
    └── UsageError             the command line asks for something that cannot be done

Lower-layer exceptions (PyYAML, jsonschema, httpx, aiormq) are mapped into
this tree where they are caught, once; nothing above that layer sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rabbitry.spec.diagnostics import Diagnostic

__all__ = ["RabbitryError", "RoutingError", "SpecError", "UsageError"]


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
