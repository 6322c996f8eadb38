"""``rabbitry graph``: the spec's topology as a Mermaid or Graphviz diagram."""

from __future__ import annotations

from pathlib import Path

import click

from rabbitry.check import load_spec
from rabbitry.cli._options import output_option, spec_argument, which_spec, write_output
from rabbitry.graph import RENDERERS, render

__all__ = ["graph_command"]


@click.command("graph")
@spec_argument
@click.option(
    "--format",
    "diagram_format",
    type=click.Choice(sorted(RENDERERS)),
    default="mermaid",
    show_default=True,
    help="Mermaid flowchart (renders on GitHub) or Graphviz dot (`dot -Tsvg`).",
)
@output_option("Write the diagram to FILE [default: standard output].")
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
    write_output(output, render(load_spec(which_spec(spec, spec_option)), diagram_format))
