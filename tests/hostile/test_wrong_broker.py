"""Issue 14, item 6: plan must never read (or write) another broker than the one its URL names.

A node of the test's own (``nodes.own_node``) listens on ports that are not
the defaults, while the shared broker holds ``localhost:15672``.  Before the
fix, plan against the own node's AMQP URL derived ``127.0.0.1:15672`` and read
the shared broker's vhost ``/`` (sending it the credentials): it reported
changes for a vhost that was in sync.  Now the management API is derived only
for the default AMQP port, plan says which API it read, and an API whose
cluster is not the AMQP connection's is refused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from broker import Vhost
from specs import run_cli, write_spec

if TYPE_CHECKING:
    from nodes import OwnNode

# The fixture own_node; imported here (not above) so that pytest rewrites its asserts.
pytest_plugins = ["nodes"]
pytestmark = pytest.mark.broker

#: A plan of a few objects takes ~0.3 s here; this catches a hang, not a slowdown.
PLAN_BOUND = 30.0
SHARED_API = "http://127.0.0.1:15672"

SPEC = """
version: 1
exchanges:
  orders: {type: topic}
queues:
  billing: {}
bindings:
  - {from: orders, queue: billing, key: "order.*"}
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    return write_spec(tmp_path, SPEC)


def _plan(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    started = time.monotonic()
    result = run_cli(["plan", *args], capsys)
    assert time.monotonic() - started < PLAN_BOUND
    return result


def _applied_on(node: OwnNode, spec: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The spec applied to the own node's vhost ``/`` through its own API; its AMQP URL."""
    url = node.amqp_url()
    code, _, err = run_cli(
        ["apply", "-f", str(spec), "--url", url, "--management-url", node.management_url],
        capsys,
    )
    assert code == 0, err
    return url


def test_plan_on_another_port_does_not_read_the_api_of_port_15672(
    own_node: OwnNode, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _applied_on(own_node, spec, capsys)
    code, out, err = _plan(["-f", str(spec), "--url", url, "--format", "json"], capsys)
    report = json.loads(out)
    # Before: source "management" (the shared broker's /), 3 creates for a vhost in sync
    # (exit 3).  Now: read over AMQP, nothing to change, the bindings unverified (exit 1).
    assert (code, report["source"]) == (1, "amqp"), err
    assert report.get("management_url") != SHARED_API
    assert not any(report["counts"].values())
    assert report["unverified"] == ["bindings"]
    assert "--management-url" in (report["fallback_reason"] or "")


def test_an_api_of_another_cluster_is_refused(
    own_node: OwnNode, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _applied_on(own_node, spec, capsys)
    code, out, err = _plan(["-f", str(spec), "--url", url, "--management-url", SHARED_API], capsys)
    # Before: exit 0 with the shared broker's state (3 changes) printed as the own node's.
    assert code != 0, out + err
    assert "different brokers" in err
    # The AMQP side's cluster is named after the own node (3.10: its name, with this host's).
    assert repr(own_node.name.partition("@")[0]) not in err
    assert own_node.name.partition("@")[0] in err
    assert "+ " not in out


def test_the_right_api_is_used_and_said(
    own_node: OwnNode, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _applied_on(own_node, spec, capsys)
    code, out, err = _plan(
        ["-f", str(spec), "--url", url, "--management-url", own_node.management_url], capsys
    )
    assert code == 0, err
    assert f"  management API: {own_node.management_url}\n" in out
    assert "in sync" in out


def test_the_default_port_still_derives_the_api_and_says_it(
    vhost: Vhost, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _plan(["-f", str(spec), "--url", vhost.amqp_url], capsys)
    assert code == 3, err
    assert "  management API: http://localhost:15672\n" in out
