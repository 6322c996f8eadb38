"""``rabbitry graph``: the spec's topology as a Mermaid or Graphviz diagram."""

from __future__ import annotations

from pathlib import Path

import click

from rabbitry.check import load_spec
from rabbitry.cli._options import spec_options, which_spec
from rabbitry.graph import RENDERERS, render

__all__ = ["graph_command"]


@click.command("graph")
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@spec_options
@click.option(
    "--format",
    "diagram_format",
    type=click.Choice(sorted(RENDERERS)),
    default="mermaid",
    show_default=True,
    help="Mermaid flowchart (renders on GitHub) or Graphviz dot (`dot -Tsvg`).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the diagram to FILE [default: standard output].",
)
def graph_command(
    *,
    spec: Path | None,
    spec_option: Path | None,
    diagram_format: str,
    output: Path | None,
) -> None:
    """Print the topology as a diagram: exchanges, queues, bindings with their
    keys, dead-letter and alternate exchanges, and which service publishes to
    which exchange and consumes which queue. Run-time bindings are dashed.
    Reads the spec only; no broker is needed.
    """
    text = render(load_spec(which_spec(spec, spec_option)), diagram_format)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.FileError(str(output), hint=exc.strerror or str(exc)) from None
