"""``rabbitry docs``: the spec as a static HTML catalogue."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import click

from rabbitry.check import load_spec
from rabbitry.cli._options import spec_argument, which_spec
from rabbitry.docs import write_docs

__all__ = ["docs_command"]


@click.command("docs")
@spec_argument
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The folder to write index.html into (made if missing).",
)
def docs_command(*, spec: Path | None, spec_option: Path | None, out: Path) -> None:
    """Write a static HTML catalogue of the spec to OUT/index.html: the topology
    diagram, every message with its schema, routing and an example drawn from its
    strategy, every queue with its effective settings, bindings and consumers,
    every exchange, service and policy, linked to each other.

    One self-contained file: it needs no network, and no script, when opened.
    Needs Graphviz's `dot` to draw the diagram and hypothesis
    (rabbitry[test]) to draw the examples. Reads the spec only; no broker.
    """
    with _hypothesis_caches():
        path = write_docs(load_spec(which_spec(spec, spec_option)), out)
    click.echo(f"wrote {path}")


@contextlib.contextmanager
def _hypothesis_caches() -> Iterator[None]:
    """Where hypothesis keeps its caches while the examples are drawn: by default a
    ``.hypothesis`` folder in the working folder, which a command must not leave
    behind; here the user's cache folder (``$XDG_CACHE_HOME/rabbitry/hypothesis``),
    kept because its character tables make the next run 2 s faster.  A
    ``$HYPOTHESIS_STORAGE_DIRECTORY`` already set is left as it is, and the
    variable is unset again afterwards (the command may run inside a program)."""
    if "HYPOTHESIS_STORAGE_DIRECTORY" in os.environ:
        yield
        return
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = str(Path(base) / "rabbitry" / "hypothesis")
    try:
        yield
    finally:
        os.environ.pop("HYPOTHESIS_STORAGE_DIRECTORY", None)
