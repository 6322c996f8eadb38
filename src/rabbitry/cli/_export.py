"""``rabbitry export``: the spec in other tools' formats (``export definitions``,
``export asyncapi``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rabbitry.asyncapi import asyncapi_text, export_asyncapi
from rabbitry.check import load_spec
from rabbitry.cli._options import spec_options, which_spec
from rabbitry.export_definitions import definitions

__all__ = ["export_group"]


@click.group("export")
def export_group() -> None:
    """Write the spec in another tool's format."""


@export_group.command("definitions")
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@spec_options
@click.option(
    "--vhost",
    default="/",
    show_default=True,
    help="The vhost every exchange, queue, binding and policy is written for.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The file to write [default: standard output].",
)
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
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@export_group.command("asyncapi")
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@spec_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The file to write, YAML if it ends in .yaml or .yml [default: JSON on standard output].",
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
    text = asyncapi_text(export_asyncapi(model), as_yaml=as_yaml)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
