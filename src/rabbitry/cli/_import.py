"""``rabbitry import``: write a spec from a live vhost, a definitions file or AsyncAPI.

What is written is proven before the command says it is done: the file is read
back with ``rabbitry.check`` (for standard output, a copy in a temporary
folder), and a spec that fails its checks is reported as rabbitry's bug, exit 1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import tempfile
from pathlib import Path

import click

from rabbitry.check import Report, check
from rabbitry.cli._options import (
    broker_options,
    endpoints,
    file_error,
    output_option,
    plural,
)
from rabbitry.errors import InvalidArgument, UsageError
from rabbitry.importer import draft_from_topology, read_definitions, read_live
from rabbitry.spec.draft import SpecDraft, spec_yaml, write_spec

__all__ = ["import_command"]

_NEXT = (
    "Messages and services are yours to add: under `messages:`, each message's schema file, "
    "exchange and routing key; under `services:`, who publishes and consumes what "
    "(README, 'The spec'). Then `rabbitry check` this file."
)


@click.command("import")
@broker_options
@click.option(
    "--vhost",
    default=None,
    help=(
        "The vhost to import: of the definitions file (a whole-broker export holds several), "
        "or of the live broker instead of the URL's [default: the URL's vhost, / without --url]."
    ),
)
@click.option(
    "--definitions",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read a RabbitMQ definitions file (rabbitmqctl export_definitions) instead of a broker.",
)
@click.option(
    "--asyncapi",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read an AsyncAPI 3 document (rabbitry export asyncapi) instead of a broker; needs -o.",
)
@output_option(
    "Write the spec to FILE (schema files go beside it) [default: standard output, "
    "for a spec without schema files]."
)
@click.option("--force", is_flag=True, help="Overwrite FILE and schema files that exist.")
def import_command(
    *,
    url: tuple[str, ...],
    management_url: str | None,
    timeout: float,
    vhost: str | None,
    definitions: Path | None,
    asyncapi: Path | None,
    output: Path | None,
    force: bool,
) -> None:
    """Write a spec from what a broker already has.

    From a live vhost (the management API: exchanges, queues, bindings,
    policies and operator policies), a definitions file (--definitions), or
    an AsyncAPI document (--asyncapi). Arguments are written as the spec's
    sugar keys (dead_letter, max_length, type: quorum, ...), `arguments:` for
    the rest. What a spec cannot hold (exclusive and server-named queues, the
    amq.* exchanges, unknown exchange types, ...) is left out with a note on
    standard error. The spec written has no messages or services: add them.
    The written spec is read back with `rabbitry check`; exit 1 if it fails.
    """
    if definitions is not None and asyncapi is not None:
        raise click.UsageError("give one of --definitions and --asyncapi, not both")
    if asyncapi is not None and output is None:
        raise click.UsageError(
            "--asyncapi needs -o FILE: its message schemas are written beside the spec"
        )
    draft, source = _draft(
        url=url,
        management_url=management_url,
        timeout=timeout,
        vhost=vhost,
        definitions=definitions,
        asyncapi=asyncapi,
    )
    for note in draft.notes:
        click.echo(f"note: {note}", err=True)
    complete = bool(draft.document.get("messages"))  # AsyncAPI: messages and services too
    header = f"Written by `rabbitry import` from {source}."
    if not complete:
        header += "\n" + _wrapped(_NEXT)
    if output is None:
        if draft.schemas:
            raise click.UsageError("this spec has schema files: give -o FILE to write them")
        with tempfile.TemporaryDirectory(prefix="rabbitry-import-") as folder:
            copy = Path(folder) / "topology.yaml"
            write_spec(draft, copy, header=header)
            report = check(copy)
        _judge(report, "standard output")
        click.echo(spec_yaml(draft.document, header=header), nl=False)
    else:
        try:
            write_spec(draft, output, header=header, force=force)
        except OSError as exc:
            raise file_error(output, exc) from None
        _judge(check(output), str(output))
    click.echo(_counts(draft) + ("" if complete else f"; {_NEXT}"), err=True)


def _draft(
    *,
    url: tuple[str, ...],
    management_url: str | None,
    timeout: float,
    vhost: str | None,
    definitions: Path | None,
    asyncapi: Path | None,
) -> tuple[SpecDraft, str]:
    """The draft, and where it came from (for the file's header)."""
    if asyncapi is not None:
        return _asyncapi(asyncapi), f"AsyncAPI document {asyncapi.name}"
    if definitions is not None:
        chosen = vhost or (endpoints(url).urls[0].vhost if url else "/")
        topology, notes = read_definitions(definitions, chosen)
        return draft_from_topology(topology, notes=notes), (
            f"vhost {chosen!r} of definitions file {definitions.name}"
        )
    nodes = endpoints(url, management_url)
    if vhost is not None:
        nodes = dataclasses.replace(
            nodes, urls=tuple(dataclasses.replace(u, vhost=vhost) for u in nodes.urls)
        )
    topology = asyncio.run(read_live(nodes, timeout=timeout))
    return draft_from_topology(topology), f"vhost {nodes.urls[0].vhost!r} of a live broker"


def _asyncapi(path: Path) -> SpecDraft:
    """``rabbitry.asyncapi.read_asyncapi(path)``, imported only when asked for."""
    reader = getattr(importlib.import_module("rabbitry.asyncapi"), "read_asyncapi", None)
    if reader is None:
        raise UsageError("this rabbitry cannot read AsyncAPI documents yet")
    draft = reader(path)
    if not isinstance(draft, SpecDraft):
        raise InvalidArgument(f"{path} did not read as a spec")
    return draft


def _judge(report: Report, where: str) -> None:
    """Exit 1 when the spec written fails its checks: what import writes must pass."""
    if report.spec is not None and not report.errors:
        return
    for diagnostic in report.errors:
        click.echo(diagnostic.render(), err=True)
    click.echo(
        f"error: the spec written to {where} fails `rabbitry check` "
        f"({plural(len(report.errors), 'error')}): this is a bug in rabbitry import; "
        "please report it with the definitions it was given",
        err=True,
    )
    raise SystemExit(1)


def _counts(draft: SpecDraft) -> str:
    doc = draft.document
    parts = [
        plural(len(doc.get("exchanges") or {}), "exchange"),
        plural(len(doc.get("queues") or {}), "queue"),
        plural(len(doc.get("bindings") or []), "binding"),
        _policies(len(doc.get("policies") or {}), "polic"),
        _policies(len(doc.get("operator_policies") or {}), "operator polic"),
    ]
    if doc.get("messages") or doc.get("services"):
        parts += [
            plural(len(doc.get("messages") or {}), "message"),
            plural(len(doc.get("services") or {}), "service"),
        ]
    # The notes say what was left out, and what was folded (retry queues into ``retry:``).
    noted = f", {plural(len(draft.notes), 'note')} above" if draft.notes else ""
    return "imported " + ", ".join(parts) + noted


def _policies(n: int, stem: str) -> str:
    return f"{n} {stem}{'y' if n == 1 else 'ies'}"


def _wrapped(text: str, width: int = 96) -> str:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines)
