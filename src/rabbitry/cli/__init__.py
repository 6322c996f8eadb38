"""The ``rabbitry`` command line.

Exit codes: 0 fine, 1 problems found or the operation failed, 2 usage error.
Bad input never shows a traceback: every expected failure is a
``RabbitryError`` (or a ``SpecError`` carrying located diagnostics), turned
into one clear message here, in one place (``main``), where the settings an
error names (``errors.Option``: ``allow_data_loss=True`` in Python) are
spelt as this command line's flags (``--allow-data-loss``, ``_options.FLAGS``).
Each command lives in a module of its own.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence

import click

from rabbitry import __version__
from rabbitry.cli._options import plural, told
from rabbitry.errors import ContractViolation, DataLossRefused, RabbitryError, SpecError

__all__ = ["cli", "main"]


#: Each command, in the order ``--help`` lists them, and where it lives: a module is
#: imported only when its command runs (``rabbitry route`` need not load the broker
#: layer, the code generator or the docs builder: 0.3 s of every run).
_COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("rabbitry.cli._check", "check_command"),
    "route": ("rabbitry.cli._route", "route_command"),
    "generate": ("rabbitry.cli._generate", "generate_command"),
    "graph": ("rabbitry.cli._graph", "graph_command"),
    "docs": ("rabbitry.cli._docs", "docs_command"),
    "plan": ("rabbitry.cli._converge", "plan_command"),
    "apply": ("rabbitry.cli._converge", "apply_command"),
    "publish": ("rabbitry.cli._messaging", "publish_command"),
    "tail": ("rabbitry.cli._messaging", "tail_command"),
    "export": ("rabbitry.cli._export", "export_group"),
    "import": ("rabbitry.cli._import", "import_command"),
}


class _LazyGroup(click.Group):
    """A group whose commands are imported when asked for (click's documented pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = _COMMANDS.get(cmd_name)
        if where is None:
            return None
        command = getattr(importlib.import_module(where[0]), where[1])
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rabbitry")
def cli() -> None:
    """RabbitMQ topology-as-code and message contracts.

    One YAML spec says which exchanges, queues and bindings exist, which
    messages travel where and what each must look like.
    """


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: run the CLI, mapping every expected failure to a message."""
    # aiormq logs what it also raises; the raised error is reported once, below.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="rabbitry",
            standalone_mode=False,
        )
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SpecError as exc:
        for diagnostic in exc.diagnostics:
            click.echo(diagnostic.render(), err=True)
        click.echo(
            f"the spec has {plural(len(exc.diagnostics), 'error')}; "
            "`rabbitry check` shows them all",
            err=True,
        )
        sys.exit(1)
    except ContractViolation as exc:
        click.echo(
            f"error: {exc.message_name} does not fit its schema; nothing was sent:", err=True
        )
        for fault in exc.faults:
            click.echo(f"  {fault}", err=True)
        sys.exit(1)
    except DataLossRefused as exc:
        click.echo(f"refused: {told(exc)}", err=True)
        sys.exit(1)
    except RabbitryError as exc:
        click.echo(f"error: {told(exc)}", err=True)
        sys.exit(1)
    except Exception as exc:
        if os.environ.get("RABBITRY_DEBUG"):
            raise
        click.echo(
            f"internal error: {type(exc).__name__}: {exc} — this is a bug in rabbitry; "
            "rerun with RABBITRY_DEBUG=1 for the traceback and report it",
            err=True,
        )
        sys.exit(70)
