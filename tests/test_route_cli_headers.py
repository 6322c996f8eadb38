"""Headers typed on ``rabbitry route``'s command line, routed as RabbitMQ routes them.

``--header NAME=VALUE`` is the string typed; ``--header NAME:=JSON`` a typed
value.  The broker compares a header's type with its value (``"yes"`` is not
``true``, ``"1"`` is not ``1``, ``1`` is ``1.0``), so the test draws command
line arguments, parses them with the route command's own parser, publishes the
parsed headers to a real headers exchange, and asks that the queues reached be
those ``rabbitry.routing.route`` predicts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import Vhost
from rabbitry.cli._route import _parse_header
from rabbitry.routing import route
from rabbitry.spec import Binding, Exchange, ExchangeType, HeadersMatch, Queue, Spec
from specs import run_cli, write_spec
from test_routing_differential import Broker, Case, Publish

EXAMPLES = int(os.environ.get("DIFFERENTIAL_EXAMPLES", "200")) // 4 or 1

NAMES = st.sampled_from(["urgent", "pages"])
TYPED = ["yes", "true", "1", "1.0", "", "null", '"1"']
# What a user types: NAME=VALUE (a string, whatever it looks like) or NAME:=JSON.
arguments = st.one_of(
    st.builds(lambda n, v: f"{n}={v}", NAMES, st.sampled_from(TYPED)),
    st.builds(
        lambda n, v: f"{n}:={v}",
        NAMES,
        st.sampled_from(["true", "false", "1", "1.0", "0", "null", '"yes"', '"1"']),
    ),
)
BINDING_VALUES = st.sampled_from(["yes", "true", "1", "", True, False, 1, 1.0, 0, None])


@st.composite
def cli_cases(draw: st.DrawFn) -> tuple[Case, tuple[tuple[str, ...], ...]]:
    queues = [f"q{i}" for i in range(draw(st.integers(1, 3)))]
    bindings: list[Binding] = []
    for queue in queues:
        headers = draw(st.dictionaries(NAMES, BINDING_VALUES, min_size=1, max_size=2))
        match = draw(st.sampled_from([HeadersMatch.ALL, HeadersMatch.ANY]))
        bindings.append(Binding("x0", queue, match=match, headers=MappingProxyType(headers)))
    spec = Spec(
        path=Path("cli-headers.yaml"),
        exchanges=MappingProxyType({"x0": Exchange("x0", ExchangeType.HEADERS, durable=False)}),
        queues=MappingProxyType({q: Queue(q, durable=False) for q in queues}),
        bindings=tuple(bindings),
    )
    typed = draw(st.lists(st.lists(arguments, min_size=1, max_size=2), min_size=1, max_size=6))
    publishes = tuple(Publish("x0", "", dict(_parse_header(a) for a in args)) for args in typed)
    return Case(spec, publishes), tuple(tuple(a) for a in typed)


@pytest.fixture
def live(vhost: Vhost) -> Iterator[Broker]:
    broker = Broker(vhost.amqp_url)
    try:
        yield broker
    finally:
        broker.close()


def test_headers_from_the_command_line_route_as_rabbitmq_routes_them(live: Broker) -> None:
    tally = {"messages": 0, "routed": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(cli_cases())
    def agrees(drawn: tuple[Case, tuple[tuple[str, ...], ...]]) -> None:
        case, typed = drawn
        observed = live.run(case)
        for index, publish in enumerate(case.publishes):
            predicted = {d.queue for d in route(case.spec, "x0", "", publish.headers)}
            tally["messages"] += 1
            tally["routed"] += bool(observed[index])
            assert observed[index] == predicted, (
                f"--header {' --header '.join(typed[index])} (parsed {publish.headers}): "
                f"RabbitMQ routed to {sorted(observed[index])}, the model says "
                f"{sorted(predicted)}\n{case.describe()}"
            )

    agrees()
    assert 0 < tally["routed"] < tally["messages"]


@pytest.mark.parametrize(
    ("argument", "parsed"),
    [
        ("urgent=yes", ("urgent", "yes")),
        ("pages=1", ("pages", "1")),
        ("flag=true", ("flag", "true")),
        ("tag=null", ("tag", "null")),
        ("empty=", ("empty", "")),
        ("a=b:=c", ("a", "b:=c")),
        ("eq=x=y", ("eq", "x=y")),
        ("urgent:=true", ("urgent", True)),
        ("pages:=1", ("pages", 1)),
        ("ratio:=0.5", ("ratio", 0.5)),
        ("tag:=null", ("tag", None)),
        ('word:="yes"', ("word", "yes")),
    ],
)
def test_a_header_is_the_string_typed_unless_typed_as_json(
    argument: str, parsed: tuple[str, object]
) -> None:
    got = _parse_header(argument)
    assert got == parsed
    assert type(got[1]) is type(parsed[1])


@given(st.text(alphabet=st.characters(blacklist_characters="=:"), min_size=1), st.text())
def test_name_equals_value_is_always_the_string(name: str, value: str) -> None:
    assert _parse_header(f"{name}={value}") == (name, value)


@pytest.mark.parametrize("argument", ["pages:=yes", "tags:=[1]", "t:={}", ":=1", "=x", "x"])
def test_a_header_that_is_not_a_value_is_refused(argument: str) -> None:
    with pytest.raises(click.BadParameter):
        _parse_header(argument)


def test_route_reads_urgent_yes_as_the_string_the_broker_compares(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(
        tmp_path,
        """
        version: 1
        exchanges:
          documents: {type: headers}
        queues:
          urgent: {}
        bindings:
          - {from: documents, queue: urgent, match: all, headers: {urgent: "yes"}}
        """,
    )
    code, out, _ = run_cli(
        ["route", "-f", str(spec), "documents", "", "--header", "urgent=yes"], capsys
    )
    assert (code, out) == (0, "urgent\n")
    code, out, _ = run_cli(
        ["route", "-f", str(spec), "documents", "", "--header", "urgent:=true"], capsys
    )
    assert (code, out) == (1, "")
