"""The library speaks Python; the command line speaks its flags (issue 12, item 13).

Every error a library call raises on purpose is caused here for real (a
queue holding a message that a replace would lose, a user the management API
refuses, a wrong password, a client used before it is open, ...), and its
message is scanned for the command line's options and environment variables,
read from the click commands themselves: none may appear.  Misuse is an error
of the tree that is also the builtin a Python programmer catches.  The command
line prints the same errors with its flags.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqp import raw_publish
from broker import ManagementAPI, Vhost, made_user
from rabbitry.broker import converge
from rabbitry.broker.url import BrokerURL, parse_url
from rabbitry.check import load_spec
from rabbitry.cli import cli
from rabbitry.cli._converge import _progress
from rabbitry.cli._options import FLAGS, said, told
from rabbitry.codegen import generate, target
from rabbitry.compat._git import parse_git
from rabbitry.errors import (
    AtRisk,
    ConnectionFailed,
    DataLossRefused,
    InvalidArgument,
    InvalidState,
    ManagementError,
    Option,
    Phrase,
    RabbitryError,
    UnknownName,
    UsageError,
)
from rabbitry.messaging._tail_cost import queue_facts
from rabbitry.messaging.client import Client
from rabbitry.messaging.contract import Contract
from rabbitry.messaging.peek import peek
from specs import FLAGSHIP, run_cli, write_spec

TIMEOUT = 10.0


def _cli_words() -> frozenset[str]:
    """Every long option and environment variable of every ``rabbitry`` command."""
    words: set[str] = set()
    context = click.Context(cli)
    for name in cli.list_commands(context):
        command = cli.get_command(context, name)
        assert command is not None
        for param in command.params:
            if isinstance(param, click.Option):
                words.update(o for o in (*param.opts, *param.secondary_opts) if o[:2] == "--")
                if isinstance(param.envvar, str):
                    words.add(param.envvar)
    return frozenset(words)


CLI_WORDS = _cli_words()
_CLI_WORD = re.compile(
    "|".join(rf"(?<![\w-]){re.escape(w)}(?![\w-])" for w in sorted(CLI_WORDS, key=len)[::-1])
)


def speaks_python(exc: BaseException) -> None:
    """``exc`` is one of rabbitry's own, and names none of the command line's words."""
    assert isinstance(exc, RabbitryError), repr(exc)
    assert not isinstance(exc, UsageError), repr(exc)
    found = _CLI_WORD.findall(str(exc))
    assert not found, f"{type(exc).__name__} names {found}: {exc}"


def test_the_scan_knows_the_flags() -> None:
    """The words scanned for are the command line's (a scan for nothing cannot fail)."""
    assert {"--url", "--management-url", "--prune", "--migrate", "--allow-data-loss"} <= CLI_WORDS
    assert {"--spend-delivery", "RABBITRY_MANAGEMENT_URL"} <= CLI_WORDS
    assert {flag.split()[0] for flag in FLAGS.values()} <= CLI_WORDS  # each Option is a flag


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


def raised(call: Callable[[], Any]) -> BaseException:
    with pytest.raises(RabbitryError) as caught:
        call()
    speaks_python(caught.value)
    return caught.value


# -- apply: the refusal of data loss, as data ---------------------------------------------------

CLASSIC = """\
version: 1
queues:
  q: {}
"""
QUORUM = CLASSIC.replace("q: {}", "q: {type: quorum}")
STREAM = CLASSIC.replace("q: {}", "q: {type: stream}")


def _apply(
    tmp: Path, text: str, url: BrokerURL, name: str = "topology.yaml", **flags: bool
) -> converge.Converged:
    spec = load_spec(write_spec(tmp, text, name=name))
    result: converge.Converged = run(converge.apply(spec, url, timeout=TIMEOUT, **flags))
    return result


def test_a_refused_replace_says_what_is_at_risk_and_names_python_arguments(
    vhost: Vhost, tmp_path: Path
) -> None:
    url = parse_url(vhost.amqp_url)
    _apply(tmp_path, CLASSIC, url)
    run(raw_publish(vhost.amqp_url, "", "q", [(b"{}", {})]))

    refused = raised(lambda: _apply(tmp_path, QUORUM, url))

    assert isinstance(refused, DataLossRefused)
    (risk,) = refused.at_risk
    assert (risk.kind, risk.action, risk.name) == ("queue", "replace", "q")
    assert (risk.messages, risk.consumers) == (1, 0)
    assert refused.remedies == (Option.MIGRATE, Option.ALLOW_DATA_LOSS)
    assert "apply again with migrate=True" in str(refused)
    assert "or with allow_data_loss=True" in str(refused)
    assert risk.differences == ("type: 'classic' → 'quorum'",)
    assert "; type: 'classic' → 'quorum'" in str(refused)
    cli_text = told(refused)
    assert "apply again with --migrate" in cli_text
    assert "--allow-data-loss" in cli_text
    assert "=True" not in cli_text


def test_a_stream_that_cannot_be_migrated_leaves_one_remedy(vhost: Vhost, tmp_path: Path) -> None:
    url = parse_url(vhost.amqp_url)
    _apply(tmp_path, STREAM, url)
    run(raw_publish(vhost.amqp_url, "", "q", [(b"{}", {})]))

    refused = raised(lambda: _apply(tmp_path, CLASSIC, url, migrate=True))

    assert isinstance(refused, DataLossRefused)
    assert refused.remedies == (Option.ALLOW_DATA_LOSS,)
    (risk,) = refused.at_risk
    assert risk.unmovable is not None
    assert "stream" in risk.unmovable
    assert "migrate=True cannot move it" in str(refused)
    assert "--migrate cannot move it" in told(refused)


# -- the management API refused: prune, policies ------------------------------------------------


@pytest.fixture
def no_api_user(broker: ManagementAPI, vhost: Vhost) -> Iterator[BrokerURL]:
    """The vhost as a user the management API refuses (so plan reads over AMQP)."""
    url = parse_url(vhost.amqp_url)
    with made_user(broker, vhost.name, tags="") as (user, password):
        yield parse_url(f"amqp://{user}:{password}@{url.endpoint}/{vhost.name}")


def test_prune_without_the_api_names_python_arguments(
    no_api_user: BrokerURL, tmp_path: Path
) -> None:
    spec = load_spec(write_spec(tmp_path, CLASSIC))

    refused = raised(lambda: run(converge.plan(spec, no_api_user, prune=True, timeout=TIMEOUT)))

    assert isinstance(refused, ManagementError)
    assert str(refused).startswith("prune=True needs the management API")
    assert "management=" in str(refused)
    assert told(refused).startswith("--prune needs the management API")
    assert told(refused).endswith("or pass --management-url")


def test_policies_without_the_api_name_python_arguments(
    no_api_user: BrokerURL, tmp_path: Path
) -> None:
    text = CLASSIC + "policies:\n  p: {queues: [q], max_length: 10}\n"

    refused = raised(lambda: _apply(tmp_path, text, no_api_user))

    assert isinstance(refused, ManagementError)
    assert "the spec has policies" in str(refused)
    assert "give --management-url" in told(refused)


def test_an_explicit_management_url_that_does_not_answer(vhost: Vhost, tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, CLASSIC))
    url = parse_url(vhost.amqp_url, management="http://127.0.0.1:1")

    refused = raised(lambda: run(converge.plan(spec, url, timeout=TIMEOUT)))

    assert isinstance(refused, ManagementError)
    assert "given explicitly (the management URL (parse_url's management=))" in str(refused)
    assert "given explicitly (--management-url)" in told(refused)


# -- the broker refused the connection --------------------------------------------------------


@pytest.mark.parametrize(
    ("amqp_url", "management", "said_"),
    [
        ("amqp://guest:wrong@localhost:5672/", None, "refused the login"),
        ("amqp://guest:wrong@localhost:5672/", "http://localhost:15672", "refused the login"),
        ("amqp://guest:guest@localhost:5672/rabbitry-no-such-vhost", None, "no vhost"),
        (
            "amqp://guest:guest@localhost:5672/rabbitry-no-such-vhost",
            "http://localhost:15672",
            "no vhost",
        ),
    ],
)
def test_connection_failures_name_the_url_the_python_way(
    broker: ManagementAPI, tmp_path: Path, amqp_url: str, management: str | None, said_: str
) -> None:
    spec = load_spec(write_spec(tmp_path, CLASSIC))
    url = parse_url(amqp_url, management=management)

    failed = raised(lambda: run(converge.plan(spec, url, timeout=TIMEOUT)))

    # Read over AMQP (the API refused the user) or through the API given explicitly.
    assert isinstance(failed, ConnectionFailed if management is None else ManagementError)
    assert said_ in str(failed)
    assert "the broker URL (url=, or $RABBITRY_URL)" in str(failed)
    assert "--url / $RABBITRY_URL" in told(failed)


def test_a_broker_that_does_not_answer_names_the_url_the_python_way(contract: Contract) -> None:
    async def body() -> None:
        async with Client(contract, "amqp://guest:guest@127.0.0.1:1/", connect_timeout=1):
            pass

    failed = raised(lambda: run(body()))

    assert isinstance(failed, ConnectionFailed)
    assert "the broker URL (url=, or $RABBITRY_URL) is right" in str(failed)
    assert "--url / $RABBITRY_URL is right" in told(failed)


def test_a_url_that_is_not_one_is_a_value_error() -> None:
    for call in (
        lambda: parse_url("http://localhost/"),
        lambda: parse_url("amqp://localhost:port/"),
        lambda: parse_url("amqp://localhost/", management="ftp://x"),
    ):
        error = raised(call)
        assert isinstance(error, InvalidArgument)
        assert isinstance(error, ValueError)


# -- misuse: the builtin a Python programmer expects ------------------------------------------


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load(FLAGSHIP)


def test_unknown_names_are_lookup_errors(contract: Contract) -> None:
    for kind, call in (
        ("service", lambda: Client(contract, service="nobody")),
        ("message", lambda: contract.message("Nothing")),
        ("queue", lambda: contract.queue("nowhere")),
    ):
        error = raised(call)
        assert isinstance(error, UnknownName)
        assert isinstance(error, LookupError)
        assert error.kind == kind
        assert error.known
        assert error.name in str(error)


def test_bad_argument_values_are_value_errors(contract: Contract) -> None:
    for call in (
        lambda: Client(contract, prefetch=0),
        lambda: Client(contract, idle_check=-1),
        lambda: Client(contract, reconnect_timeout=-1),
        lambda: Contract.from_data({"format": -1}),
    ):
        error = raised(call)
        assert isinstance(error, InvalidArgument)
        assert isinstance(error, ValueError)


def test_a_client_not_open_is_a_runtime_error(contract: Contract) -> None:
    client = Client(contract, "amqp://guest:guest@127.0.0.1:1/")
    error = raised(lambda: run(client.publish("Start", {})))
    assert isinstance(error, InvalidState)
    assert isinstance(error, RuntimeError)
    assert "async with" in str(error)


def test_what_a_service_may_not_do_is_a_value_error(jobs: Vhost, contract: Contract) -> None:
    async def body() -> None:
        async with Client(contract, jobs.amqp_url, service="worker") as worker:
            for call in (
                lambda: worker.consume("job-control", _ignore),
                lambda: worker.consume("jobs.dead-letters", _ignore),
                lambda: worker.subscribe("job-control", job=1),
            ):
                assert isinstance(raised(call), InvalidArgument)
            with pytest.raises(InvalidState) as again:
                await worker.__aenter__()
            speaks_python(again.value)

    run(body())


async def _ignore(_: Any) -> None:
    return None


def test_a_look_that_spends_a_delivery_names_the_python_argument(contract: Contract) -> None:
    facts = queue_facts(
        "q",
        "/",
        "quorum",
        queues=[{"name": "q", "type": "quorum", "arguments": {}}],
        policies=[],
        operator_policies=[],
    )
    assert facts is not None
    nowhere = parse_url("amqp://guest:guest@127.0.0.1:9/")

    refused = raised(lambda: run(peek(contract, nowhere, facts, print)))

    assert isinstance(refused, InvalidArgument)
    assert "pass spend_delivery=True to look anyway" in str(refused)
    assert "pass --spend-delivery to look anyway" in told(refused)


def test_codegen_and_compat_misuse_are_value_errors(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, CLASSIC))  # no `codegen:` entry
    nowhere = raised(lambda: target(spec))
    assert isinstance(nowhere, InvalidArgument)
    assert str(nowhere).endswith("or pass out= (a folder)")
    assert told(nowhere).endswith("or pass --out DIR")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    foreign = raised(lambda: generate(spec, tmp_path / "taken"))
    assert isinstance(foreign, InvalidArgument)
    (tmp_path / "afile").write_text("")
    assert isinstance(raised(lambda: generate(spec, tmp_path / "afile")), InvalidArgument)
    assert isinstance(raised(lambda: parse_git("git:")), InvalidArgument)


# -- the command line: the same errors, with its flags -----------------------------------------


def test_the_command_line_names_its_flags(
    no_api_user: BrokerURL, vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec(tmp_path, CLASSIC)
    code, out, err = run_cli(["plan", str(path), "--url", no_api_user.amqp, "--prune"], capsys)
    assert code == 1, out + err
    assert "--prune needs the management API" in err
    assert "--management-url" in err
    assert "=True" not in err
    assert "management=" not in err

    code, out, err = run_cli(["generate", str(path)], capsys)
    assert code == 2, out + err
    assert "or pass --out DIR" in err

    wrong = vhost.amqp_url.replace("guest:guest@", "guest:wrong@")
    code, out, err = run_cli(["plan", str(path), "--url", wrong], capsys)
    assert code == 1, out + err
    assert "--url / $RABBITRY_URL" in err
    assert "url=" not in err


# -- the phrase, over every refusal -------------------------------------------------------------

_risks = st.builds(
    AtRisk,
    kind=st.sampled_from(["queue", "exchange"]),
    action=st.sampled_from(["replace", "delete"]),
    name=st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=8),
    messages=st.none() | st.integers(0, 5),
    consumers=st.none() | st.integers(0, 5),
    bindings=st.integers(0, 3),
    differences=st.lists(st.sampled_from(["x-queue-type: classic → quorum"]), max_size=1).map(
        tuple
    ),
    unmanaged=st.booleans(),
    cut_migration_of=st.none() | st.just("q"),
    unmovable=st.none() | st.just("a stream cannot be drained"),
)


@given(
    st.lists(_risks, min_size=1, max_size=4),
    st.sampled_from([(Option.MIGRATE, Option.ALLOW_DATA_LOSS), (Option.ALLOW_DATA_LOSS,)]),
)
def test_every_refusal_speaks_each_language_alone(
    risks: list[AtRisk], remedies: tuple[Option, ...]
) -> None:
    refused = DataLossRefused(risks, remedies)
    speaks_python(refused)
    python, flags = str(refused), told(refused)
    for option in remedies:
        assert option.value in python
        assert FLAGS[option] in flags
    assert not any(option.value in flags for option in Option)
    assert python.count("\n") == flags.count("\n") == len(risks) + 1
    for risk in risks:
        assert f" {risk.kind} {risk.name!r}" in flags


@given(st.lists(st.text(max_size=5) | st.sampled_from(list(Option)), max_size=6))
def test_a_phrase_renders_each_option_once_in_its_place(parts: list[str | Option]) -> None:
    phrase = Phrase.of(*parts)
    assert str(phrase) == "".join(p.value if isinstance(p, Option) else p for p in parts)
    assert said(phrase) == "".join(FLAGS[p] if isinstance(p, Option) else p for p in parts)
    assert Phrase.of(phrase, phrase).parts == phrase.parts * 2


# -- apply's progress bar: click's, on a terminal only -------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_shows_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with _progress(enabled=True) as report:
        assert report is not None
        report(0, 10)  # a short apply: no bar
        assert terminal.getvalue() == ""
        for done in (0, 150, 300):
            report(done, 300)
    assert "applying" in terminal.getvalue()
    assert "100%" in terminal.getvalue()

    monkeypatch.setattr("sys.stderr", io.StringIO())
    with _progress(enabled=True) as report:
        assert report is None
    monkeypatch.setattr("sys.stderr", terminal)
    with _progress(enabled=False) as report:
        assert report is None
