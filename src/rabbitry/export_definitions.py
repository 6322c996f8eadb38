"""A spec as RabbitMQ definitions: the JSON ``rabbitmqctl import_definitions`` loads.

For teams whose deployment already imports definitions (a definitions file at
boot, ``rabbitmqctl import_definitions``, the management API's
``POST /api/definitions/{vhost}``): the same topology ``apply`` makes, in the
broker's own format.  It is built from ``broker.state.desired`` (what ``apply``
declares) with the same ``declare_arguments`` the AMQP declarations carry and
the same ``PolicyState.body`` the policy ``PUT``s send, so the two cannot tell a
different story.  Run-time queues and ``{param}`` bindings stay out: their
consumers make them.

Operator policies have no list of their own in the format: the broker exports
them, and imports them, as runtime parameters of component
``operator_policy`` (as ``GET /api/definitions`` on RabbitMQ 3.10 shows).
No ``vhosts`` entry is written: the vhost must exist, with its permissions,
as for ``apply``; an import never creates it half-configured.
"""

from __future__ import annotations

from typing import Any

from rabbitry.broker.state import PolicyState, Topology, desired
from rabbitry.spec import Spec

__all__ = ["definitions", "topology_definitions"]


def definitions(spec: Spec, vhost: str = "/") -> dict[str, Any]:
    """``spec``'s topology as a definitions document for ``vhost``, in a stable order."""
    return topology_definitions(desired(spec), vhost)


def topology_definitions(want: Topology, vhost: str) -> dict[str, Any]:
    """A desired topology (``broker.state.desired``) as a definitions document for ``vhost``."""
    exchanges = [
        {
            "name": x.name,
            "vhost": vhost,
            "type": x.type,
            "durable": x.durable,
            "auto_delete": x.auto_delete,
            "internal": x.internal,
            "arguments": x.declare_arguments(),
        }
        for x in sorted(want.exchanges.values(), key=lambda x: x.name)
    ]
    queues = [
        {
            "name": q.name,
            "vhost": vhost,
            "durable": q.durable,
            "auto_delete": q.auto_delete,
            "arguments": q.declare_arguments(),
        }
        for q in sorted(want.queues.values(), key=lambda q: q.name)
    ]
    bindings = [
        {
            "source": b.source,
            "vhost": vhost,
            "destination": b.destination,
            "destination_type": b.destination_type,
            "routing_key": b.routing_key,
            "arguments": b.declare_arguments(),
        }
        for b in sorted(want.bindings, key=lambda b: b.sort_key())
    ]
    policies = [{"vhost": vhost, "name": p.name, **p.body()} for p in _sorted(want.policies)]
    operator_policies = [
        {"vhost": vhost, "component": "operator_policy", "name": p.name, "value": p.body()}
        for p in _sorted(want.operator_policies)
    ]
    return {
        "parameters": operator_policies,
        "policies": policies,
        "exchanges": exchanges,
        "queues": queues,
        "bindings": bindings,
    }


def _sorted(policies: Any) -> list[PolicyState]:
    return sorted((policies or {}).values(), key=lambda p: p.name)
