"""``rabbitry export definitions``: the broker's own importer makes what ``apply`` makes.

Each test imports the exported definitions into one fresh vhost (the management
API's ``POST /api/definitions/{vhost}``, or ``rabbitmqctl import_definitions``),
applies the same spec into another, and compares the two vhosts as the
management API shows them; then ``plan`` against the imported vhost must be empty.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import ManagementAPI, Vhost, fresh_vhost
from rabbitry.broker import converge
from rabbitry.broker.url import parse_url
from rabbitry.check import load_spec
from rabbitry.export_definitions import definitions
from rabbitry.spec.model import (
    Binding,
    Exchange,
    ExchangeType,
    HeadersMatch,
    Policy,
    PolicyTarget,
    Queue,
    QueueType,
    Spec,
)
from specs import FLAGSHIP, run_cli

Json = dict[str, Any]


def _vhosts(api: ManagementAPI, n: int) -> Iterator[list[Vhost]]:
    """``n`` fresh vhosts, deleted afterwards."""
    makers = [fresh_vhost(api) for _ in range(n)]
    try:
        yield [next(maker) for maker in makers]
    finally:
        for maker in makers:
            maker.close()


def _import(vhost: Vhost, document: Json) -> None:
    name = quote(vhost.name, safe="")
    vhost.api._request("POST", f"/api/definitions/{name}", json=document)


def _apply(spec: Spec, vhost: Vhost) -> None:
    asyncio.run(converge.apply(spec, parse_url(vhost.amqp_url), timeout=20))


def _plan_is_empty(spec: Spec, vhost: Vhost) -> list[str]:
    planned = asyncio.run(converge.plan(spec, parse_url(vhost.amqp_url), timeout=20))
    return [change.describe() for change in planned.plan.changes]


def _contents(vhost: Vhost) -> Json:
    """The vhost's exchanges, queues, bindings and policies, without the vhost's name."""
    name = quote(vhost.name, safe="")
    api = vhost.api
    exchanges = sorted(
        (x["name"], x["type"], x["durable"], x["auto_delete"], x["internal"], x["arguments"])
        for x in vhost.exchanges()
        if x["name"] and not x["name"].startswith("amq.")
    )
    queues = sorted(
        (q["name"], q["durable"], q["auto_delete"], q["exclusive"], json.dumps(q["arguments"]))
        for q in vhost.queues()
    )
    bindings = sorted(
        (
            b["source"],
            b["destination_type"],
            b["destination"],
            b["routing_key"],
            json.dumps(b["arguments"], sort_keys=True),
        )
        for b in vhost.bindings()
        if b["source"]
    )

    def policies(kind: str) -> list[Json]:
        found: list[Json] = api.get_json(f"/api/{kind}/{name}")
        return sorted(
            ({k: v for k, v in p.items() if k != "vhost"} for p in found),
            key=lambda p: str(p["name"]),
        )

    return {
        "exchanges": exchanges,
        "queues": queues,
        "bindings": bindings,
        "policies": policies("policies"),
        "operator_policies": policies("operator-policies"),
    }


def _counts(document: Json) -> tuple[int, ...]:
    return tuple(len(document[k]) for k in ("exchanges", "queues", "bindings"))


def _seen_counts(contents: Json) -> tuple[int, ...]:
    return tuple(len(contents[k]) for k in ("exchanges", "queues", "bindings"))


# -- the flagship ------------------------------------------------------------


def test_the_flagship_imported_is_the_flagship_applied(
    broker: ManagementAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = load_spec(FLAGSHIP)
    for imported, applied in _vhosts(broker, 2):
        out = tmp_path / "definitions.json"
        code, _, err = run_cli(
            ["export", "definitions", str(FLAGSHIP), "--vhost", imported.name, "-o", str(out)],
            capsys,
        )
        assert code == 0, err
        document = json.loads(out.read_text(encoding="utf-8"))
        assert document == definitions(spec, imported.name)
        _import(imported, document)
        _apply(spec, applied)
        got = _contents(imported)
        assert got == _contents(applied)
        assert _seen_counts(got) == _counts(document)
        assert got["policies"], "the flagship has a policy: the comparison must see it"
        assert _plan_is_empty(spec, imported) == []


def test_the_cli_writes_to_standard_output_for_the_default_vhost(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(["export", "definitions", str(FLAGSHIP)], capsys)
    assert code == 0, err
    assert json.loads(out) == definitions(load_spec(FLAGSHIP), "/")
    assert {x["vhost"] for x in json.loads(out)["queues"]} == {"/"}


def _rabbitmqctl() -> str | None:
    """A ``rabbitmqctl`` that reaches the shared node, else ``None``.

    Debian's ``/usr/sbin/rabbitmqctl`` switches to the ``rabbitmq`` user and its
    Erlang cookie; a ``rabbitmqctl`` without the node's cookie cannot talk to it.
    """
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    ctl = shutil.which("rabbitmqctl", path=path)
    if ctl is None:
        return None
    probe = subprocess.run(
        [ctl, "list_vhosts", "--quiet"], capture_output=True, timeout=60, check=False
    )
    return ctl if probe.returncode == 0 else None


def test_rabbitmqctl_import_definitions_loads_the_flagship(broker: ManagementAPI) -> None:
    ctl = _rabbitmqctl()
    if ctl is None:
        pytest.skip("no rabbitmqctl here that shares the broker's Erlang cookie")
    spec = load_spec(FLAGSHIP)
    for imported, applied in _vhosts(broker, 2):
        document = definitions(spec, imported.name)
        done = subprocess.run(
            [ctl, "import_definitions"],
            input=json.dumps(document),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        _apply(spec, applied)
        want = _contents(applied)
        # rabbitmqctl starts the import and returns: wait for it to land.
        deadline = time.monotonic() + 30
        while (got := _contents(imported)) != want and time.monotonic() < deadline:
            time.sleep(0.2)
        assert got == want
        assert _plan_is_empty(spec, imported) == []


# -- random specs ---------------------------------------------------------------


@st.composite
def exported_specs(draw: st.DrawFn) -> Spec:
    """Small specs touching every part of the format: argument sugar already folded
    (alternate-exchange, dead-lettering, TTLs, queue types), exchange and headers
    bindings, policies and operator policies."""
    exchange_names = draw(st.lists(st.sampled_from(["ea", "eb", "ec"]), unique=True, min_size=1))
    exchanges = {}
    for name in exchange_names:
        arguments: Json = {}
        if draw(st.booleans()):
            arguments["alternate-exchange"] = draw(st.sampled_from(exchange_names))
        exchanges[name] = Exchange(
            name,
            draw(st.sampled_from(list(ExchangeType))),
            durable=draw(st.booleans()),
            internal=draw(st.booleans()),
            arguments=arguments,
        )
    queue_kinds = st.sampled_from(
        [
            (QueueType.CLASSIC, {}),
            (QueueType.CLASSIC, {"x-message-ttl": 5000, "x-max-length": 10}),
            (QueueType.CLASSIC, {"x-dead-letter-exchange": "ea", "x-dead-letter-routing-key": "d"}),
            (QueueType.QUORUM, {"x-delivery-limit": 3}),
            (QueueType.STREAM, {"x-max-age": "1D"}),
        ]
    )
    queue_names = draw(st.lists(st.sampled_from(["qa", "qb", "qc"]), unique=True))
    queues = {}
    for name in queue_names:
        kind, queue_arguments = draw(queue_kinds)
        queues[name] = Queue(name, kind, arguments=queue_arguments)
    if draw(st.booleans()):  # a run-time queue: its consumer makes it, not the export
        queues["qr"] = Queue("qr", exclusive=True, durable=False, auto_delete=True)
    bindings = []
    for _ in range(draw(st.integers(0, 5))):
        source = draw(st.sampled_from(exchange_names))
        to_queue = bool(queue_names) and draw(st.booleans())
        target = draw(st.sampled_from(queue_names if to_queue else exchange_names))
        headers = exchanges[source].type is ExchangeType.HEADERS
        bindings.append(
            Binding(
                source,
                target,
                "queue" if to_queue else "exchange",
                key="" if headers else draw(st.sampled_from(["", "a", "a.#", "*.b", "k.{id}"])),
                match=draw(st.sampled_from(list(HeadersMatch))) if headers else None,
                headers={"h": draw(st.sampled_from(["x", 1]))} if headers else {},
            )
        )
    policies = {}
    if draw(st.booleans()):
        policies["pa"] = Policy(
            "pa",
            draw(st.sampled_from(["^q", "^qa$", ".*"])),
            draw(st.sampled_from([PolicyTarget.QUEUES, PolicyTarget.ALL])),
            draw(st.integers(0, 3)),
            {"message-ttl": draw(st.integers(1000, 9000))},
        )
    if draw(st.booleans()):
        policies["px"] = Policy("px", "^e", PolicyTarget.EXCHANGES, 1, {"alternate-exchange": "ea"})
    operator_policies = {}
    if draw(st.booleans()):
        operator_policies["op"] = Policy(
            "op",
            "^q",
            PolicyTarget.QUEUES,
            draw(st.integers(0, 3)),
            {"max-length": draw(st.integers(1, 100))},
            operator=True,
        )
    return Spec(
        path=Path("random.yaml"),
        exchanges=exchanges,
        queues=queues,
        bindings=tuple(bindings),
        policies=policies,
        operator_policies=operator_policies,
    )


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(spec=exported_specs())
def test_random_specs_imported_are_the_specs_applied(broker: ManagementAPI, spec: Spec) -> None:
    for imported, applied in _vhosts(broker, 2):
        document = definitions(spec, imported.name)
        _import(imported, document)
        _apply(spec, applied)
        got = _contents(imported)
        assert got == _contents(applied)
        assert _seen_counts(got) == _counts(document)
        assert len(got["policies"]) == len(spec.policies)
        assert len(got["operator_policies"]) == len(spec.operator_policies)
        assert _plan_is_empty(spec, imported) == []
