"""One example per message, drawn from the strategy ``rabbitry generate`` writes for it.

The strategies are the generated package's own (``pytest_plugin.strategies_for``
renders and imports them for the spec), so the page shows what the contract
tests and users' property tests draw from.  ``hypothesis.find`` with a fixed
``Random`` and no example database picks the example: it shrinks to the
simplest instance that satisfies the condition, which makes the same spec give
the same example, run after run (the page is reproducible and diffs cleanly).

The condition is the publisher's own check: the contract's validator finds no
fault (``MessageContract.faults``, the runtime's jsonschema-rs), the routing
key and headers can be filled from it, and it encodes as UTF-8 JSON.  An
example is therefore valid by construction, and checked again before it is
returned; a message with none (a schema no instance satisfies, a strategy
that gives up) gets ``None`` and the page says so.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from rabbitry.errors import ContractViolation, RabbitryError
from rabbitry.messaging.contract import Contract, MessageContract
from rabbitry.spec import Spec

__all__ = ["DRAW_TRIES", "Example", "draw_examples", "example_json"]

#: Instances hypothesis may try per message before it gives up finding a valid one.
DRAW_TRIES = 200


@dataclass(frozen=True)
class Example:
    """A valid instance of a message, with the routing key and headers it is sent with."""

    payload: Any
    routing_key: str
    headers: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def text(self) -> str:
        return example_json(self.payload)


def example_json(payload: Any) -> str:
    """``payload`` as the page shows it: indented JSON, non-ASCII as itself."""
    return json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False)


def _sendable(contract: MessageContract, payload: Any) -> Example | None:
    """The example ``payload`` makes, or ``None`` if the publisher would refuse it."""
    try:
        json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
        if contract.faults(payload):
            return None
        return Example(
            payload,
            contract.routing_key_for(payload),
            MappingProxyType(contract.headers_for(payload)),
        )
    except (TypeError, ValueError, ContractViolation):
        return None


def _accepted(contract: MessageContract, payload: Any) -> bool:
    return _sendable(contract, payload) is not None


def draw_examples(spec: Spec) -> dict[str, Example | None]:
    """Message name → its example (``None`` where none was found), deterministically.

    Needs hypothesis (``pip install 'rabbitry[test]'``): ``RabbitryError`` saying
    so when it is missing.
    """
    try:
        from hypothesis import HealthCheck, find, settings  # noqa: PLC0415
        from hypothesis.errors import HypothesisException  # noqa: PLC0415

        from rabbitry.pytest_plugin import strategies_for  # noqa: PLC0415
    except ImportError as exc:
        raise RabbitryError(
            f"rabbitry docs draws each message's example with hypothesis ({exc.name} is not "
            "installed): pip install 'rabbitry[test]'"
        ) from None
    contract = Contract.from_spec(spec)
    strategies = strategies_for(spec) if spec.messages else {}
    quiet = settings(
        database=None,
        max_examples=DRAW_TRIES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    found: dict[str, Example | None] = {}
    for name in spec.messages:
        message = contract.message(name)
        try:
            payload = find(
                strategies[name],
                functools.partial(_accepted, message),
                settings=quiet,
                random=random.Random(0),
            )
        except HypothesisException:
            found[name] = None
            continue
        example = _sendable(message, payload)
        if example is None:  # find returns only what the condition accepted
            raise RabbitryError(f"the example drawn for {name} is not valid: a bug in rabbitry")
        found[name] = example
    return found
