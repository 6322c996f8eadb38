"""``rabbitry export``: the spec in other tools' formats (``export definitions``,
``export asyncapi``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rabbitry.asyncapi import asyncapi_text, export_asyncapi
from rabbitry.check import load_spec
from rabbitry.cli._options import output_option, spec_argument, which_spec, write_output
from rabbitry.export_definitions import definitions

__all__ = ["export_group"]


@click.group("export")
def export_group() -> None:
    """Write the spec in another tool's format."""


@export_group.command("definitions")
@spec_argument
@click.option(
    "--vhost",
    default="/",
    show_default=True,
    help="The vhost every exchange, queue, binding and policy is written for.",
)
@output_option("The file to write [default: standard output].")
def definitions_command(
    *, spec: Path | None, spec_option: Path | None, vhost: str, output: Path | None
) -> None:
    """Write the spec's topology as RabbitMQ definitions JSON.

    What `rabbitmqctl import_definitions FILE` (or the management API's POST
    /api/definitions/VHOST) loads: the exchanges, queues, bindings, policies and
    operator policies `rabbitry apply` would make, arguments as apply declares
    them. Run-time queues and {param} bindings are left to their consumers.
    The vhost must exist.
    """
    model = load_spec(which_spec(spec, spec_option))
    text = json.dumps(definitions(model, vhost), indent=2, ensure_ascii=False) + "\n"
    write_output(output, text)


@export_group.command("asyncapi")
@spec_argument
@output_option(
    "The file to write, YAML if it ends in .yaml or .yml [default: JSON on standard output]."
)
def asyncapi_command(*, spec: Path | None, spec_option: Path | None, output: Path | None) -> None:
    """Write the spec as an AsyncAPI 3.0.0 document, with nothing of it lost.

    Exchanges and queues are channels with AMQP 0.3.0 bindings, messages carry
    their schema bundled whole, services are send and receive operations; what
    AsyncAPI cannot say (bindings, arguments, policies, dead-letter paths, the
    schema files) is in x-rabbitry-* fields. The document is checked against
    the official AsyncAPI schema before it is written, and
    `rabbitry import --asyncapi FILE` reads it back into the same spec.
    """
    model = load_spec(which_spec(spec, spec_option))
    as_yaml = output is not None and output.suffix.lower() in (".yaml", ".yml")
    write_output(output, asyncapi_text(export_asyncapi(model), as_yaml=as_yaml))
