"""What the commands share: the spec and broker options, and small helpers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from rabbitry.broker.url import DEFAULT_URL
from rabbitry.errors import Option, Phrase, phrase_of

if TYPE_CHECKING:
    from rabbitry.broker.endpoints import Endpoints

# The broker layer (aiormq, httpx, rich) is imported by the functions that use it,
# not here: `rabbitry route` and `check` import this module and never reach a broker.

__all__ = [
    "DEFAULT_SPEC",
    "FLAGS",
    "broker_options",
    "connection_options",
    "endpoints",
    "file_error",
    "format_option",
    "output_option",
    "plural",
    "said",
    "spec_argument",
    "spec_options",
    "told",
    "which_spec",
    "write_output",
]

DEFAULT_SPEC = "topology.yaml"

F = TypeVar("F", bound=Callable[..., Any])


def spec_options(func: F) -> F:
    """``-f/--spec FILE`` on every command that reads the spec."""
    return click.option(
        "-f",
        "--spec",
        "spec_option",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"The spec file [default: ./{DEFAULT_SPEC}].",
    )(func)


def spec_argument(func: F) -> F:
    """The spec as an optional positional ``SPEC`` and as ``-f/--spec FILE`` (``which_spec``
    takes one of the two): every command that reads the spec has both."""
    func = spec_options(func)
    return click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))(
        func
    )


def output_option(help: str) -> Callable[[F], F]:
    """``-o/--output FILE`` (``None``: standard output); ``write_output`` writes it."""
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=help,
    )


def file_error(path: Path, exc: OSError) -> click.FileError:
    """A file that could not be written, as click reports it (exit 1, no traceback)."""
    return click.FileError(str(path), hint=exc.strerror or str(exc))


def write_output(output: Path | None, text: str) -> None:
    """``text`` to ``output``, or to standard output when ``None``."""
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise file_error(output, exc) from None


def format_option(func: F) -> F:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Output for people, or JSON for programs.",
    )(func)


def which_spec(positional: Path | None, option: Path | None) -> Path:
    if positional is not None and option is not None and positional != option:
        raise click.UsageError(f"two specs given: {positional} and -f {option}; pass one")
    return positional or option or Path(DEFAULT_SPEC)


def plural(n: int | None, noun: str) -> str:
    """``1 message``, ``3 messages``, ``? messages`` (unknown): ``broker.plan.count_of``."""
    from rabbitry.broker.plan import count_of  # noqa: PLC0415 - the broker layer, on use

    return count_of(n, noun)


def connection_options(func: F) -> F:
    """``--url`` and ``--timeout``: where the broker is, and how long a call may take."""
    from rabbitry.broker.amqp import DEFAULT_TIMEOUT  # noqa: PLC0415 - on use, see above

    func = click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        help="Seconds any one broker call may take.",
    )(func)
    return click.option(
        "--url",
        metavar="URL",
        multiple=True,
        help=(
            "The broker; its path is the vhost. Give it several times (or several URLs "
            "separated by commas) for the nodes of one broker, all with the same vhost: "
            "the first that answers is used "
            f"[default: $RABBITRY_URL, which may hold several, then {DEFAULT_URL}]. "
            "The password may be in a file: ?password_file=PATH, or $RABBITRY_PASSWORD_FILE "
            "for a URL without one."
        ),
    )(func)


def endpoints(url: tuple[str, ...], management_url: str | None = None) -> Endpoints:
    """The broker URLs ``--url`` gave (each possibly a comma-separated list), else
    ``$RABBITRY_URL``'s, else the default; ``--management-url`` applies to every one."""
    from rabbitry.broker.endpoints import parse_urls, split_urls  # noqa: PLC0415 - on use

    texts = [one for text in url for one in split_urls(text)]
    return parse_urls(texts or None, management=management_url)


def broker_options(func: F) -> F:
    """``connection_options`` and ``--management-url``, for the commands that read a vhost."""
    func = click.option(
        "--management-url",
        metavar="URL",
        default=None,
        envvar="RABBITRY_MANAGEMENT_URL",
        help=(
            "The management HTTP API [default: $RABBITRY_MANAGEMENT_URL, then "
            "http://HOST:15672 (https://HOST:15671 for amqps://) when --url is on the default "
            "AMQP port; none otherwise]. Given either way, it must answer: plan and apply "
            "then never fall back to AMQP, which cannot see bindings or policies. Plan "
            "refuses an API whose cluster is not the one --url reaches."
        ),
    )(func)
    return connection_options(func)


#: Each setting the library's errors name (``Option``), as this command line spells it.
FLAGS: Mapping[Option, str] = {
    Option.URL: "--url / $RABBITRY_URL",
    Option.MANAGEMENT_URL: "--management-url",
    Option.PRUNE: "--prune",
    Option.MIGRATE: "--migrate",
    Option.ALLOW_DATA_LOSS: "--allow-data-loss",
    Option.SPEND_DELIVERY: "--spend-delivery",
    Option.OUT: "--out DIR",
    Option.FORCE: "--force",
}


def said(phrase: Phrase) -> str:
    """``phrase`` as the command line says it: the settings it names as flags."""
    return phrase.render(FLAGS.__getitem__)


def told(exc: BaseException) -> str:
    """``exc``'s message as the command line says it (``said``)."""
    return said(phrase_of(exc))
