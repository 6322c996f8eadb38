"""rabbitry: RabbitMQ topology-as-code and message contracts.

The names a program (and every package ``rabbitry generate`` writes) imports
are here, in ``__all__``; the modules under ``rabbitry`` are its inner layout
and may move::

    from rabbitry import Client, Contract, check, load_spec, route, plan, apply

- the spec: ``check`` (every offline check, a ``Report``), ``load_spec`` (a
  ``Spec``, or ``SpecError``), each as deep as a ``Depth`` asks;
- the routing model: ``route``, ``route_message`` → ``Destination``\\s, each
  with its ``Condition``\\s;
- the contract and the client: ``Contract``, ``MessageContract``, ``Client``,
  ``ClientOptions``, ``PublishOptions``, ``Consumer``, ``Handler``, ``Delivery``,
  ``Subscription``;
- the broker: ``BrokerURL`` (``parse_url``), ``Endpoints`` (several URLs of one
  broker: ``parse_urls``), ``plan`` → ``Planned``,
  ``apply`` → ``Converged``;
- every error rabbitry raises, from ``RabbitryError`` down (``rabbitry.errors``
  draws the tree).

Importing ``rabbitry`` is cheap: the errors, and the spec checker (``check``
and ``load_spec``, which must be bound here because ``rabbitry.check`` is also
a module's name, and the import system binds a submodule over a name that is
looked up lazily); the client, the contract and the broker layer (aiormq,
httpx, jsonschema-rs) are imported on first use of one of their names (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rabbitry.check import Depth, Report, check, load_spec
from rabbitry.errors import (
    AccessRefused,
    BrokerError,
    BrokerTimeout,
    ConnectionFailed,
    ContractViolation,
    DataLossRefused,
    DeadLetter,
    Fault,
    InvalidArgument,
    InvalidState,
    ManagementError,
    MessageTooLarge,
    NotFound,
    PreconditionFailed,
    PublishFailed,
    PublishManyFailed,
    PublishNacked,
    PublishRefused,
    PublishTimeout,
    RabbitryError,
    RequestTimeout,
    RoutingError,
    SpecError,
    UnknownName,
    Unroutable,
    UsageError,
)
from rabbitry.spec import Spec

if TYPE_CHECKING:
    from rabbitry.broker.converge import Converged, Planned, apply, plan
    from rabbitry.broker.endpoints import Endpoints, parse_urls
    from rabbitry.broker.plan import Change, Plan
    from rabbitry.broker.url import BrokerURL, parse_url
    from rabbitry.messaging.client import (
        Client,
        ClientOptions,
        Consumer,
        Delivery,
        Handler,
        PublishOptions,
        Subscription,
    )
    from rabbitry.messaging.contract import Contract, MessageContract
    from rabbitry.routing import Condition, Destination, route, route_message

__all__ = [
    "AccessRefused",
    "BrokerError",
    "BrokerTimeout",
    "BrokerURL",
    "Change",
    "Client",
    "ClientOptions",
    "Condition",
    "ConnectionFailed",
    "Consumer",
    "Contract",
    "ContractViolation",
    "Converged",
    "DataLossRefused",
    "DeadLetter",
    "Delivery",
    "Depth",
    "Destination",
    "Endpoints",
    "Fault",
    "Handler",
    "InvalidArgument",
    "InvalidState",
    "ManagementError",
    "MessageContract",
    "MessageTooLarge",
    "NotFound",
    "Plan",
    "Planned",
    "PreconditionFailed",
    "PublishFailed",
    "PublishManyFailed",
    "PublishNacked",
    "PublishOptions",
    "PublishRefused",
    "PublishTimeout",
    "RabbitryError",
    "Report",
    "RequestTimeout",
    "RoutingError",
    "Spec",
    "SpecError",
    "Subscription",
    "UnknownName",
    "Unroutable",
    "UsageError",
    "__version__",
    "apply",
    "check",
    "load_spec",
    "parse_url",
    "parse_urls",
    "plan",
    "route",
    "route_message",
]

__version__ = "0.1.0"

#: Name → the module it is imported from on first use.
_LAZY: dict[str, str] = {
    "BrokerURL": "rabbitry.broker.url",
    "Change": "rabbitry.broker.plan",
    "Client": "rabbitry.messaging.client",
    "ClientOptions": "rabbitry.messaging.client",
    "Condition": "rabbitry.routing",
    "Consumer": "rabbitry.messaging.client",
    "Contract": "rabbitry.messaging.contract",
    "Converged": "rabbitry.broker.converge",
    "Delivery": "rabbitry.messaging.client",
    "Destination": "rabbitry.routing",
    "Endpoints": "rabbitry.broker.endpoints",
    "Handler": "rabbitry.messaging.client",
    "MessageContract": "rabbitry.messaging.contract",
    "Plan": "rabbitry.broker.plan",
    "PublishOptions": "rabbitry.messaging.client",
    "Planned": "rabbitry.broker.converge",
    "Subscription": "rabbitry.messaging.client",
    "apply": "rabbitry.broker.converge",
    "parse_url": "rabbitry.broker.url",
    "parse_urls": "rabbitry.broker.endpoints",
    "plan": "rabbitry.broker.converge",
    "route": "rabbitry.routing",
    "route_message": "rabbitry.routing",
}


def __getattr__(name: str) -> Any:
    """A lazy name of ``__all__``: imported from its module once, then an ordinary global."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rabbitry' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
