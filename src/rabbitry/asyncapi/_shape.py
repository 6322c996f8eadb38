"""The shape of what ``rabbitry export asyncapi`` writes, as a JSON Schema (draft 2020-12).

Reading a document back checks it against the official AsyncAPI schema and
then against this one: the ``x-rabbitry-*`` fields and the native fields the
reader takes names and settings from.  Once both hold, the reader may index
the document without guarding every step, and a hand-edited document that
lost a field is told where, by JSON pointer, never with a traceback.
Whether the names it holds make a sound spec is ``rabbitry check``'s to say.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EXPORTED_SHAPE"]

_TEXT: dict[str, Any] = {"type": "string"}
_TABLE: dict[str, Any] = {"type": "object"}
_FLAG: dict[str, Any] = {"type": "boolean"}
_NAMES: dict[str, Any] = {"type": "array", "items": _TEXT}
_REF: dict[str, Any] = {"type": "object", "required": ["$ref"], "properties": {"$ref": _TEXT}}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _amqp(kind: str, inner: dict[str, Any]) -> dict[str, Any]:
    """A channel whose ``bindings.amqp`` says ``is: kind`` with ``inner`` under ``kind``'s key."""
    key = "queue" if kind == "queue" else "exchange"
    amqp = _object(["is", key], **{"is": {"const": kind}, key: inner})
    return _object(["bindings"], bindings=_object(["amqp"], amqp=amqp))


_IS_QUEUE = _amqp("queue", {})

_QUEUE_CHANNEL = {
    "allOf": [
        _amqp(
            "queue",
            _object(["name"], name=_TEXT, durable=_FLAG, exclusive=_FLAG, autoDelete=_FLAG),
        ),
        {
            "anyOf": [
                _object(["x-rabbitry-undeclared"], **{"x-rabbitry-undeclared": {"const": True}}),
                _object(
                    ["x-rabbitry-queue"],
                    **{
                        "x-rabbitry-queue": _object(
                            ["type", "arguments"],
                            type=_TEXT,
                            arguments=_TABLE,
                            retry={"type": "array", "items": _TEXT, "minItems": 1},
                            retry_of=_TEXT,
                        )
                    },
                ),
            ]
        },
    ]
}

_EXCHANGE_CHANNEL = {
    "allOf": [
        _amqp("routingKey", _object(["name"], name=_TEXT, durable=_FLAG, autoDelete=_FLAG)),
        {
            "anyOf": [
                _object(["x-rabbitry-builtin"], **{"x-rabbitry-builtin": {"const": True}}),
                {
                    "allOf": [
                        _amqp("routingKey", _object(["type"], type=_TEXT)),
                        _object(
                            ["x-rabbitry-exchange"],
                            **{
                                "x-rabbitry-exchange": _object(
                                    ["internal", "arguments"], internal=_FLAG, arguments=_TABLE
                                )
                            },
                        ),
                    ]
                },
            ]
        },
    ]
}

_BINDING = {
    **_object(
        ["from"],
        **{
            "from": _TEXT,
            "queue": _TEXT,
            "exchange": _TEXT,
            "key": _TEXT,
            "match": _TEXT,
            "headers": _TABLE,
            "arguments": _TABLE,
            "runtime": _FLAG,
            "placeholders": _NAMES,
        },
    ),
    "oneOf": [{"required": ["queue"]}, {"required": ["exchange"]}],
}

_POLICY = {
    **_object(
        ["apply_to", "priority", "definition"],
        pattern=_TEXT,
        queues=_NAMES,
        exchanges=_NAMES,
        apply_to=_TEXT,
        priority={"type": "integer"},
        definition=_TABLE,
        description=_TEXT,
    ),
    "oneOf": [{"required": ["pattern"]}, {"required": ["queues"]}, {"required": ["exchanges"]}],
}

_MESSAGE = _object(
    ["name", "x-rabbitry-message"],
    name=_TEXT,
    description=_TEXT,
    **{
        "x-rabbitry-message": _object(
            ["schema", "exchange", "routing_key"],
            schema=_TEXT,
            exchange=_TEXT,
            routing_key=_TEXT,
            headers=_TABLE,
            reply=_TEXT,
        )
    },
)

_OPERATION = _object(
    ["action", "channel", "messages", "x-rabbitry-service"],
    channel=_REF,
    messages={"type": "array", "items": _REF},
    **{"x-rabbitry-service": _TEXT},
)

#: What the reader relies on, beyond the official schema.
EXPORTED_SHAPE: dict[str, Any] = _object(
    [
        "channels",
        "operations",
        "components",
        "x-rabbitry-version",
        "x-rabbitry-services",
        "x-rabbitry-bindings",
        "x-rabbitry-policies",
        "x-rabbitry-operator-policies",
        "x-rabbitry-schema-files",
    ],
    channels={
        "type": "object",
        "additionalProperties": {
            "if": _IS_QUEUE,
            "then": _QUEUE_CHANNEL,
            "else": _EXCHANGE_CHANNEL,
        },
    },
    operations={"type": "object", "additionalProperties": _OPERATION},
    components=_object(["messages"], messages={"type": "object", "additionalProperties": _MESSAGE}),
    **{
        "x-rabbitry-version": {"type": "integer"},
        "x-rabbitry-rabbitmq": _TEXT,
        "x-rabbitry-codegen": _object(["package", "out"], package=_TEXT, out=_TEXT),
        "x-rabbitry-services": {
            "type": "object",
            "additionalProperties": _object([], description=_TEXT),
        },
        "x-rabbitry-bindings": {"type": "array", "items": _BINDING},
        "x-rabbitry-policies": {"type": "object", "additionalProperties": _POLICY},
        "x-rabbitry-operator-policies": {"type": "object", "additionalProperties": _POLICY},
        "x-rabbitry-schema-files": {"type": "object", "additionalProperties": _TEXT},
    },
)
