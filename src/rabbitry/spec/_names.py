"""The names a spec knows, for the checks that report a name it does not.

``spec.checks`` and ``spec.policy_checks`` both judge references by these, so
an exchange the one accepts (declared, built-in, or declared with faults that
are reported already) the other accepts too, with the same suggestion.
"""

from __future__ import annotations

from rabbitry.spec.diagnostics import Code, Diagnostic, did_you_mean
from rabbitry.spec.model import BUILTIN_EXCHANGES, Location, Spec

__all__ = ["exchange_names", "knows_exchange", "queue_names", "unknown_exchange"]


def exchange_names(spec: Spec) -> frozenset[str]:
    """Every exchange a name may refer to, save the default exchange ``""``."""
    return spec.derived(_exchange_names)


def queue_names(spec: Spec) -> frozenset[str]:
    """Every queue a name may refer to, those declared with faults included."""
    return spec.derived(_queue_names)


def _exchange_names(spec: Spec) -> frozenset[str]:
    builtin = (name for name in BUILTIN_EXCHANGES if name)
    return frozenset({*spec.exchanges, *spec.broken_exchanges, *builtin})


def _queue_names(spec: Spec) -> frozenset[str]:
    return frozenset({*spec.queues, *spec.broken_queues})


def knows_exchange(spec: Spec, name: str) -> bool:
    """The spec has exchange ``name``: declared, built in, or declared with faults."""
    return spec.exchange_type(name) is not None or name in spec.broken_exchanges


def unknown_exchange(spec: Spec, name: str, where: Location, role: str) -> Diagnostic | None:
    """The finding for ``role`` naming exchange ``name``; ``None`` when the spec has it."""
    if knows_exchange(spec, name):
        return None
    return Diagnostic(
        where,
        Code.UNKNOWN_EXCHANGE,
        f"{role} names exchange {name!r}, which the spec does not declare",
        did_you_mean(name, exchange_names(spec), "exchanges"),
    )
