"""AsyncAPI 3.0.0: a spec written out for other tools, and read back with nothing lost.

``export_asyncapi`` builds the document (``asyncapi_document``) and checks it
against the official JSON Schema vendored from ``@asyncapi/specs`` before
anyone sees it; ``read_asyncapi`` and ``draft_from_asyncapi`` turn a document
it wrote back into a spec draft (``rabbitry.spec.draft.SpecDraft``), which
``write_spec`` writes as ``topology.yaml`` and its schema files.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from rabbitry.asyncapi._export import AMQP_BINDING_VERSION, EXTENSION, asyncapi_document
from rabbitry.asyncapi._import import draft_from_asyncapi, read_asyncapi
from rabbitry.asyncapi._validate import ASYNCAPI_VERSION, SchemaFault, schema_faults
from rabbitry.spec.model import Spec

__all__ = [
    "AMQP_BINDING_VERSION",
    "ASYNCAPI_VERSION",
    "EXTENSION",
    "SchemaFault",
    "asyncapi_document",
    "asyncapi_text",
    "draft_from_asyncapi",
    "export_asyncapi",
    "read_asyncapi",
    "schema_faults",
]


def export_asyncapi(spec: Spec) -> dict[str, Any]:
    """``spec`` as an AsyncAPI 3.0.0 document, valid against the official schema.

    A document that is not valid would be rabbitry's bug, never the user's: it
    raises ``RuntimeError`` (the CLI's "internal error", exit 70) rather than
    hand an invalid document on.
    """
    document = asyncapi_document(spec)
    faults = schema_faults(document)
    if faults:
        more = f" (and {len(faults) - 1} more)" if len(faults) > 1 else ""
        raise RuntimeError(
            f"the AsyncAPI document built from {spec.path} is not valid AsyncAPI "
            f"{ASYNCAPI_VERSION}: {faults[0]}{more}; nothing was written"
        )
    return document


def asyncapi_text(document: Any, *, as_yaml: bool = False) -> str:
    """``document`` as JSON (indented) or YAML text, ending in a newline, key order kept."""
    if as_yaml:
        return yaml.safe_dump(
            document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
        )
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
