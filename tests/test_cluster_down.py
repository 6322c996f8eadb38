"""plan and apply on a 3-node cluster with one node down (issue 16, last paragraph).

With a node down, the management API still lists a durable classic queue of
that node (``state: "down"``) but hides its bindings, and every declare or bind
of it fails with NOT_FOUND ("home node ... is down or inaccessible"): plan used
to show a false "create binding" and apply failed on it.  Now plan lists such a
queue and the spec's bindings to it as unseen, with the node, and creates
nothing there; apply leaves them, says so and exits 3; once the node is back,
plan is in sync.  The measured facts are in ``rabbitry.broker.live``'s docstring.

The fault is caused for real: the node's application is stopped with the
package's own ``rabbitmqctl stop_app`` (as root, with the cluster's cookie) and
started again by the ``down`` fixture whatever the test did.  The cluster is
the module's own (``cluster.cluster``: free ports, killed after the module),
never the shared broker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiormq
import httpx
import pytest

from amqp import Bounded
from broker import ManagementAPI, Vhost, fresh_vhost
from rabbitry.broker import converge
from rabbitry.broker.plan import Kind, Unseen
from rabbitry.broker.url import parse_url
from rabbitry.check import load_spec
from specs import run_cli, write_spec

if TYPE_CHECKING:
    from cluster import Cluster, ClusterNode

pytest_plugins = ["nodes", "cluster"]
pytestmark = [pytest.mark.broker, pytest.mark.cluster]

run = Bounded(120)

#: ``orders.far`` lives on the node that goes down, ``orders.near`` on the first node.
SPEC = """\
version: 1
exchanges:
  orders: {type: topic}
  audit: {type: fanout}
queues:
  orders.far: {}
  orders.near: {}
  orders.work: {type: quorum}
bindings:
  - {from: orders, queue: orders.far, key: "far.#"}
  - {from: orders, exchange: audit, key: "#"}
  - {from: audit, queue: orders.far}
  - {from: orders, queue: orders.near, key: "near.#"}
  - {from: orders, queue: orders.work, key: "work.#"}
"""
FAR_BINDINGS = ("orders → queue orders.far key 'far.#'", "audit → queue orders.far")
NEAR_BINDING = "orders → queue orders.near key 'near.#'"
CREDENTIALS = ("guest", "guest")


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_spec(tmp_path_factory.mktemp("down"), SPEC)


@pytest.fixture(scope="module")
def placed(cluster: Cluster, spec_path: Path) -> Iterator[Vhost]:
    """A vhost with the spec applied: ``orders.near`` declared through the first node
    (its home), the rest applied through the second (``orders.far``'s home)."""
    first, second = cluster.nodes[0], cluster.nodes[1]
    vhosts = fresh_vhost(ManagementAPI(first.config))
    vhost = next(vhosts)
    try:
        run(_declare_queue(first.amqp_url(vhost.name), "orders.near"))
        run(converge.apply(load_spec(spec_path), target(second, vhost), timeout=30))
        assert queue_row(first, vhost, "orders.far")["node"] == second.name
        assert queue_row(first, vhost, "orders.near")["node"] == first.name
        yield vhost
    finally:
        vhosts.close()


async def _declare_queue(url: str, name: str) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(name, durable=True)
    finally:
        await connection.close()


@pytest.fixture
def down(cluster: Cluster, placed: Vhost) -> Iterator[ClusterNode]:
    """The second node's application stopped (``rabbitmqctl stop_app``) until the API
    through the first lists ``orders.far`` as down; started again after the test, and
    the cluster whole again, whatever the test did."""
    first, second = cluster.nodes[0], cluster.nodes[1]
    cut_binding(first, placed, NEAR_BINDING)  # drift the plan must still see and mend
    try:
        stopped = second.ctl("stop_app", timeout=60)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        wait(lambda: queue_row(first, placed, "orders.far").get("state") == "down", "down")
        yield second
    finally:
        bring_back(cluster, placed)


def bring_back(cluster: Cluster, vhost: Vhost) -> None:
    """The second node's application started (it is a no-op when it runs) and the three
    one cluster, ``orders.far`` listed with its bindings again."""
    first, second = cluster.nodes[0], cluster.nodes[1]
    started = second.ctl("start_app", timeout=60)
    assert started.returncode == 0, started.stdout + started.stderr
    cluster.wait_formed(time.monotonic() + 120)
    wait(lambda: queue_row(first, vhost, "orders.far").get("state") != "down", "back")
    wait(lambda: set(FAR_BINDINGS) <= bindings(first, vhost), "its bindings back")


# -- helpers: the API read raw, never through the code under test ------------------------


def target(node: ClusterNode, vhost: Vhost, *, management: bool = True) -> Any:
    """``vhost`` on ``node``, with that node's management API (or none: AMQP only)."""
    return parse_url(
        node.amqp_url(vhost.name), management=node.management_url if management else None
    )


def api(node: ClusterNode, path: str, **params: str) -> Any:
    response = httpx.get(
        f"{node.management_url}{path}", params=params, auth=CREDENTIALS, timeout=10
    )
    response.raise_for_status()
    return response.json()


def queue_row(node: ClusterNode, vhost: Vhost, queue: str) -> dict[str, Any]:
    rows = api(node, f"/api/queues/{quote(vhost.name, safe='')}", columns="name,state,node")
    return next(row for row in rows if row["name"] == queue)


def bindings(node: ClusterNode, vhost: Vhost) -> set[str]:
    rows = api(node, f"/api/bindings/{quote(vhost.name, safe='')}")
    found = set()
    for row in rows:
        if row["source"]:
            key = f" key {row['routing_key']!r}" if row["routing_key"] else ""
            found.add(f"{row['source']} → {row['destination_type']} {row['destination']}{key}")
    return found


def cut_binding(node: ClusterNode, vhost: Vhost, binding: str) -> None:
    """Delete ``orders → orders.near`` (``NEAR_BINDING``) through the API, if it is there."""
    if binding not in bindings(node, vhost):
        return
    path = f"/api/bindings/{quote(vhost.name, safe='')}/e/orders/q/orders.near/near.%23"
    response = httpx.delete(f"{node.management_url}{path}", auth=CREDENTIALS, timeout=10)
    response.raise_for_status()


def wait(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not {what} after {timeout} s"
        time.sleep(0.3)


def expected_unseen(node: ClusterNode) -> set[tuple[Kind, str, str]]:
    return {
        (Kind.QUEUE, "orders.far", node.name),
        *((Kind.BINDING, name, node.name) for name in FAR_BINDINGS),
    }


def as_tuples(unseen: tuple[Unseen, ...]) -> set[tuple[Kind, str, str]]:
    return {(u.kind, u.name, u.node) for u in unseen}


# -- the tests -----------------------------------------------------------------------------


def test_plan_names_what_its_down_node_holds_and_creates_nothing_there(
    cluster: Cluster, placed: Vhost, down: ClusterNode, spec_path: Path
) -> None:
    """Through the first node's API: no false create for ``orders.far`` or its bindings,
    the missing ``orders.near`` binding still planned, and ``orders.far`` with its two
    bindings listed as unseen with the down node.  Over AMQP alone (no API) the same:
    the 404 that names the home node is read as "down", not as "missing"."""
    spec = load_spec(spec_path)
    first = cluster.nodes[0]
    planned = run(converge.plan(spec, target(first, placed), timeout=30))
    names = [c.name for c in planned.plan.changes]
    assert not [n for n in names if "orders.far" in n], names
    assert names == [NEAR_BINDING]
    assert as_tuples(planned.plan.unseen) == expected_unseen(down)

    over_amqp = run(converge.plan(spec, target(first, placed, management=False), timeout=30))
    assert over_amqp.live.source == "amqp"
    names = [c.name for c in over_amqp.plan.changes]
    assert not [n for n in names if "orders.far" in n], names
    assert as_tuples(over_amqp.plan.unseen) == expected_unseen(down)


def test_the_cli_plan_prints_and_writes_what_it_could_not_see(
    cluster: Cluster,
    placed: Vhost,
    down: ClusterNode,
    spec_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``rabbitry plan``: a ``? not seen`` line per unseen object naming the node, the
    summary saying it, no false create; ``--format json``: ``unseen`` as data, not in
    sync.  Exit 3: the ``orders.near`` binding is pending."""
    first = cluster.nodes[0]
    args = [
        "plan",
        str(spec_path),
        "--url",
        first.amqp_url(placed.name),
        "--management-url",
        first.management_url,
    ]
    code, out, err = run_cli(args, capsys)
    assert "orders.far" not in "".join(line for line in out.splitlines() if "+ create" in line)
    assert code == 3, out + err
    for name in ("queue orders.far", *(f"binding {b}" for b in FAR_BINDINGS)):
        assert f"? not seen: {name} (node {down.name} is down)" in out, out
    assert f"3 objects not seen: node {down.name} is down (left alone)" in out, out

    code, out, err = run_cli([*args, "--format", "json"], capsys)
    data = json.loads(out)
    assert code == 3, out + err
    assert [c["name"] for c in data["changes"]] == [NEAR_BINDING]
    assert data["in_sync"] is False
    assert {(u["kind"], u["name"], u["node"]) for u in data["unseen"]} == {
        (kind.value, name, node) for kind, name, node in expected_unseen(down)
    }


def test_apply_leaves_them_exits_3_and_once_the_node_is_back_plan_is_in_sync(
    cluster: Cluster,
    placed: Vhost,
    down: ClusterNode,
    spec_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``rabbitry apply`` with the node down: no NOT_FOUND, the ``orders.near`` binding
    made, the unseen objects left and named, "not converged", exit 3 (text and JSON);
    plan then exits 1 ("not verified", nothing else to change).  Once the node is
    back, ``orders.far`` has its bindings (apply did not touch them) and plan exits 0."""
    first = cluster.nodes[0]
    where = ["--url", first.amqp_url(placed.name), "--management-url", first.management_url]
    code, out, err = run_cli(["apply", str(spec_path), *where], capsys)
    assert "NOT_FOUND" not in out + err, out + err
    assert "not found" not in (out + err).lower(), out + err
    assert code == 3, out + err
    assert NEAR_BINDING in bindings(first, placed)
    assert "not converged: 3 objects left alone, not seen because their node is down " in out
    assert f"({down.name}); run apply again once it is back" in out, out

    code, out, err = run_cli(["apply", str(spec_path), *where, "--format", "json"], capsys)
    data = json.loads(out)
    assert code == 3, out + err
    assert data["applied"] == 0
    assert data["changes"] == []
    assert data["in_sync"] is False
    assert len(data["unseen"]) == 3

    code, out, err = run_cli(["plan", str(spec_path), *where], capsys)
    assert code == 1, out + err
    assert "not verified: no difference seen in what could be seen" in out, out

    bring_back(cluster, placed)
    assert set(FAR_BINDINGS) <= bindings(first, placed)
    code, out, err = run_cli(["plan", str(spec_path), *where], capsys)
    assert code == 0, out + err
    assert "in sync: nothing to change" in out
    assert "not seen" not in out
