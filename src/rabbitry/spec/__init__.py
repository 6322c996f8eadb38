"""The spec: ``topology.yaml`` read with positions, modelled, and checked.

This package depends on nothing else of rabbitry's; the checks that need the
routing model live in ``rabbitry.check``.
"""

from rabbitry.spec._load import read
from rabbitry.spec.diagnostics import CODES, Code, Diagnostic, Severity
from rabbitry.spec.model import (
    BUILTIN_EXCHANGES,
    Binding,
    Codegen,
    Exchange,
    ExchangeType,
    HeadersMatch,
    Location,
    Message,
    Policy,
    PolicyTarget,
    Queue,
    QueueType,
    Service,
    Spec,
)

__all__ = [
    "BUILTIN_EXCHANGES",
    "CODES",
    "Binding",
    "Code",
    "Codegen",
    "Diagnostic",
    "Exchange",
    "ExchangeType",
    "HeadersMatch",
    "Location",
    "Message",
    "Policy",
    "PolicyTarget",
    "Queue",
    "QueueType",
    "Service",
    "Severity",
    "Spec",
    "read",
]
