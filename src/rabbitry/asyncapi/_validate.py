"""Validation against the official AsyncAPI 3.0.0 JSON Schema, vendored in ``schema/``.

The schema is ``@asyncapi/specs``' bundled file: its definitions (the AMQP
bindings among them) each carry an ``$id``, which a ``referencing`` registry
crawled from the file resolves, so nothing is ever fetched.  It is a draft-07
schema; ``format`` is not asserted (draft-07 makes it an annotation, and
python-jsonschema's format checks depend on optional packages: a document's
validity must not).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import referencing
from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing.jsonschema import DRAFT7

__all__ = ["ASYNCAPI_VERSION", "SchemaFault", "schema_faults"]

#: The AsyncAPI version rabbitry writes and reads.
ASYNCAPI_VERSION = "3.0.0"

_SCHEMA_FILE = "asyncapi-3.0.0.json"


@dataclass(frozen=True)
class SchemaFault:
    """Where a document breaks a schema (a JSON pointer) and the validator's reason."""

    pointer: str
    reason: str

    def __str__(self) -> str:
        return f"at {self.pointer or '/'}: {self.reason}"


@cache
def _validator() -> Draft7Validator:
    text = resources.files("rabbitry.asyncapi").joinpath("schema", _SCHEMA_FILE).read_text("utf-8")
    schema = json.loads(text)
    registry: referencing.Registry[Any] = (
        referencing.Registry().with_resource(schema["$id"], DRAFT7.create_resource(schema)).crawl()
    )
    return Draft7Validator(schema, registry=registry)


def schema_faults(document: Any) -> tuple[SchemaFault, ...]:
    """How ``document`` breaks the official AsyncAPI 3.0.0 schema; empty when it is valid.

    One fault per top-level error, each the most specific of its ``oneOf`` /
    ``anyOf`` branches (``jsonschema``'s ``best_match``), in document order.
    """
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(map(str, e.path)))
    return tuple(_fault(error) for error in errors)


def _fault(error: ValidationError) -> SchemaFault:
    specific = best_match([error]) or error
    return SchemaFault(_pointer(specific.absolute_path), specific.message)


def _pointer(parts: Sequence[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
