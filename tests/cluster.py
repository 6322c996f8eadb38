"""A local 3-node RabbitMQ cluster on this one machine: for the suite, and for ``./run cluster``.

Production RabbitMQ is a cluster; a client that survives one node only ever
met a single broker.  This makes one from three ``nodes.OwnNode``: each has
its own node name, AMQP, management and distribution ports and folder (data,
logs, config, HOME), and all three share one Erlang cookie, written (mode
0400) into each HOME before the first start, as clustering requires.

How the cluster forms: ``classic_config`` peer discovery.  Every node's
``rabbitmq.conf`` lists the three; the first node is started alone, then the
other two at once, and each joins the first at boot: 17-21 s here on 2 quiet
cores.  The alternative, three standalone nodes then ``rabbitmqctl stop_app;
join_cluster; start_app`` on two of them, took 27 s: a CLI start-up (1-2 s)
per command and an application restart per joiner.
Either way the cluster is checked, not assumed: ``form`` waits until every
node's ``cluster_status`` lists the three as running, and fails (never hangs)
after ``FORM_TIMEOUT`` with the tail of every node's log.

The suite's ``cluster`` fixture (module scope) picks free ports; ``./run
cluster start|stop|status`` runs this file as a script with the fixed ports
of ``FIXED`` and the folder ``.cluster/`` (which ignores itself in git).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from nodes import CREDENTIALS, NODE_TIMEOUT, NodeFailed, OwnNode, _free_port, _require_root

__all__ = [
    "FIXED",
    "Cluster",
    "ClusterNode",
    "Figure",
    "Figures",
    "Ports",
    "QueueLeader",
    "all_up",
    "cluster",
    "cluster_figures",
]

SIZE = 3
#: Seconds the whole cluster may take to form (about 35 s here; nodes start on 2 busy cores).
FORM_TIMEOUT = 150.0
#: The Erlang cookie file name in each node's HOME.
COOKIE = ".erlang.cookie"
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Ports:
    """One node's ports."""

    amqp: int
    management: int
    dist: int


#: ``./run cluster``'s ports, documented in the README: AMQP 5681-5683, management
#: 15681-15683, Erlang distribution 25681-25683 (RabbitMQ's AMQP + 20000 convention).
FIXED = tuple(Ports(5680 + i, 15680 + i, 25680 + i) for i in range(1, SIZE + 1))


class ClusterNode(OwnNode):
    """An ``OwnNode`` with a given name and ports, and a config naming its peers."""

    def __init__(self, folder: Path, name: str, ports: Ports, peers: Sequence[str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(folder)
        self.name = name
        self.amqp_port = ports.amqp
        self.management_port = ports.management
        self.dist_port = ports.dist
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{ports.amqp}",
            "management.tcp.ip = 127.0.0.1",
            f"management.tcp.port = {ports.management}",
            "loopback_users = none",
            "cluster_formation.peer_discovery_backend = classic_config",
            *(f"cluster_formation.classic_config.nodes.{i} = {p}" for i, p in enumerate(peers, 1)),
        ]
        (folder / "rabbitmq.conf").write_text("\n".join(lines) + "\n")

    def write_cookie(self, cookie: str) -> None:
        """The cluster's shared cookie in the node's HOME (the server and rabbitmqctl read it)."""
        path = self.folder / COOKIE
        if path.exists():
            path.chmod(0o600)
        path.write_text(cookie)
        path.chmod(0o400)

    def running_peers(self) -> set[str] | None:
        """The nodes this one's ``cluster_status`` says are running; ``None`` if it does not say."""
        done = self.ctl("cluster_status", "--formatter", "json", timeout=30)
        if done.returncode != 0:
            return None
        try:
            status = json.loads(done.stdout)
        except ValueError:
            return None
        return set(status.get("running_nodes", ()))

    @property
    def pid_file(self) -> Path:
        return self.folder / "server.pid"

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server's output and of its log file, for a failure message."""
        parts = [f"--- {self.name} ({self.folder}) server output:", self._log_tail(lines)]
        for log in sorted((self.folder / "log").glob("*.log")):
            text = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
            if not text:
                continue
            parts += [f"--- {log}:", *text[-lines:]]
        return "\n".join(parts)


@dataclass(frozen=True)
class QueueLeader:
    """Where a quorum queue lives: its leader and its members, by node name."""

    leader: str
    members: tuple[str, ...]
    online: tuple[str, ...]


class Cluster:
    """Three ``ClusterNode``s sharing a cookie; ``form`` starts them and checks they are one."""

    def __init__(self, folder: Path, ports: Sequence[Ports], prefix: str) -> None:
        names = [f"{prefix}-{i}@localhost" for i in range(1, len(ports) + 1)]
        self.folder = folder
        self.nodes = tuple(
            ClusterNode(folder / f"node{i}", name, p, names)
            for i, (name, p) in enumerate(zip(names, ports, strict=True), 1)
        )

    # -- forming and ending it ---------------------------------------------------------

    def form(self, timeout: float = FORM_TIMEOUT) -> float:
        """Start the three nodes and wait until each sees all three running; seconds it took.

        The first node starts alone (it finds no peer and boots standalone), then the
        others at once, each joining it.  ``NodeFailed`` with every node's log tail
        (after killing them all) when a node fails to start or the cluster is not one
        within ``timeout``.
        """
        began = time.monotonic()
        cookie = uuid.uuid4().hex.upper()
        for node in self.nodes:
            node.write_cookie(cookie)
        try:
            self.nodes[0].start(NODE_TIMEOUT)
            self._start_at_once(self.nodes[1:])
            self.wait_formed(began + timeout)
        except (NodeFailed, subprocess.TimeoutExpired) as exc:
            tails = self.log_tails()
            self.kill()
            raise NodeFailed(f"the cluster did not form: {exc}\n{tails}") from None
        except BaseException:  # an interrupt, say: no node is left running unrecorded
            self.kill()
            raise
        for node in self.nodes:
            node.pid_file.write_text(str(self._pid(node)))
        return time.monotonic() - began

    def _start_at_once(self, nodes: Sequence[ClusterNode]) -> None:
        failures: list[BaseException] = []

        def start(node: ClusterNode) -> None:
            try:
                node.start(NODE_TIMEOUT)
            except BaseException as exc:  # reported below, on the caller's thread
                failures.append(exc)

        threads = [threading.Thread(target=start, args=(n,)) for n in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise NodeFailed("; ".join(str(f) for f in failures))

    def wait_formed(self, deadline: float) -> None:
        """Until every node lists all three as running; ``NodeFailed`` after ``deadline``."""
        want = {n.name for n in self.nodes}
        while True:
            seen = {n.name: n.running_peers() for n in self.nodes}
            if all(peers is not None and want <= peers for peers in seen.values()):
                return
            if time.monotonic() > deadline:
                said = ", ".join(f"{k}: {sorted(v) if v else v}" for k, v in seen.items())
                raise NodeFailed(
                    f"not one cluster in time; running nodes as each sees them: {said}"
                )
            time.sleep(1)

    def kill(self) -> None:
        """Every node's process group killed; nothing of the cluster left running."""
        for node in self.nodes:
            node.kill()

    def log_tails(self) -> str:
        return "\n".join(node.log_tail() for node in self.nodes)

    @staticmethod
    def _pid(node: ClusterNode) -> int:
        process = node._process
        assert process is not None, f"{node.name} is not running"
        return process.pid

    # -- using it ------------------------------------------------------------------------

    def urls(self, vhost: str = "/") -> list[str]:
        return [node.amqp_url(vhost) for node in self.nodes]

    def node(self, name: str) -> ClusterNode:
        """The node called ``name`` (a full ``NAME@HOST``)."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise LookupError(f"no node {name!r} in {[n.name for n in self.nodes]}")

    def queue(self, vhost: str, queue: str, via: ClusterNode | None = None) -> dict[str, Any]:
        """The management API's view of ``queue`` (through ``via``, else a running node)."""
        node = via or next(n for n in self.nodes if n.running)
        response = httpx.get(
            f"{node.management_url}/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}",
            auth=CREDENTIALS,
            timeout=10,
        )
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found

    def leader(self, vhost: str, queue: str, via: ClusterNode | None = None) -> QueueLeader:
        """The quorum queue's leader and members (``leader``/``members``/``online``)."""
        found = self.queue(vhost, queue, via)
        return QueueLeader(
            str(found["leader"]),
            tuple(sorted(found.get("members", ()))),
            tuple(sorted(found.get("online", ()))),
        )

    def wait_leader(
        self,
        vhost: str,
        queue: str,
        check: Callable[[QueueLeader], bool],
        timeout: float = 30,
    ) -> QueueLeader:
        """The queue's placement once ``check`` holds for it; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        seen: QueueLeader | None = None
        while True:
            with contextlib.suppress(httpx.HTTPError, KeyError, StopIteration):
                seen = self.leader(vhost, queue)
                if check(seen):
                    return seen
            assert time.monotonic() < deadline, f"{queue}: last seen {seen} after {timeout} s"
            time.sleep(0.2)


# -- the pytest fixture ----------------------------------------------------------------


@contextlib.contextmanager
def formed_cluster() -> Iterator[Cluster]:
    """A formed cluster on free ports in a temporary folder; killed and removed after."""
    with tempfile.TemporaryDirectory(prefix="rabbitry-node-cluster-") as folder:
        taken: set[int] = set()
        ports = [Ports(*(_free_port(taken) for _ in range(3))) for _ in range(SIZE)]
        made = Cluster(Path(folder), ports, f"rabbitry-test-{uuid.uuid4().hex[:8]}")
        try:
            seconds = made.form()
            print(f"\n[cluster] formed in {seconds:.1f} s: {[n.name for n in made.nodes]}")
            yield made
        finally:
            made.kill()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A 3-node cluster of the module's own (free ports), every node running when a test
    starts (a test may stop one; the next test finds it started again).  Killed after
    the module; fails with the nodes' log tails when it does not form."""
    _require_root()
    problem = None
    with contextlib.ExitStack() as stack:
        try:
            made = stack.enter_context(formed_cluster())
        except NodeFailed as exc:
            problem = str(exc)
        if problem is not None:
            pytest.fail(problem, pytrace=False)  # outside `except`: the logs, no chained trace
        yield made


@pytest.fixture
def all_up(cluster: Cluster) -> Cluster:
    """``cluster`` with every node running again and the three one cluster (a node a test
    stopped or killed rejoins with its data); fails with the nodes' log tails otherwise."""
    problem = None
    try:
        for node in cluster.nodes:
            node.start()
        cluster.wait_formed(time.monotonic() + FORM_TIMEOUT)
    except (NodeFailed, subprocess.TimeoutExpired) as exc:
        problem = f"the cluster is not whole again: {exc}\n{cluster.log_tails()}"
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    return cluster


# -- figures: what each scenario cost, printed at the session's end ----------------------

#: The environment variable naming the JSON file the cluster figures are written to.
FIGURES_ENV = "RABBITRY_CLUSTER_FIGURES"
_ROWS: list[Figure] = []


@dataclass(frozen=True)
class Figure:
    """One cluster scenario's measured outcome (the README's "On a cluster" table)."""

    scenario: str
    #: Messages the broker confirmed.
    confirmed: int
    #: Confirmed messages never found in the queue or handled.
    lost: int
    #: Messages found or handled more than once.
    duplicates: int
    #: Seconds the scenario's clients took to go on (``None``: nothing to recover from).
    moved: float | None
    #: Anything else worth a column: the leader before and after, a publish stall.
    detail: str
    test: str


class Figures:
    """The ``cluster_figures`` fixture: records one test's rows (as ``tests/faults``' does)."""

    def __init__(self, test: str) -> None:
        self.test = test

    def record(
        self,
        scenario: str,
        *,
        confirmed: int,
        lost: int,
        duplicates: int,
        moved: float | None = None,
        detail: str = "",
    ) -> Figure:
        moved = None if moved is None else round(moved, 2)
        figure = Figure(scenario, confirmed, lost, duplicates, moved, detail, self.test)
        _ROWS.append(figure)
        print(f"\n[figure] {figure}")
        return figure


@pytest.fixture
def cluster_figures(request: pytest.FixtureRequest) -> Figures:
    """Where a cluster test records its figures; record before asserting."""
    return Figures(request.node.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _ROWS:
        return
    terminalreporter.section("cluster figures")
    for f in _ROWS:
        moved = "-" if f.moved is None else f"{f.moved:.2f} s"
        terminalreporter.write_line(
            f"{f.scenario}: confirmed {f.confirmed}, lost {f.lost}, duplicates "
            f"{f.duplicates}, moved in {moved}; {f.detail}"
        )
    target = os.environ.get(FIGURES_ENV)
    if target:
        rows = [asdict(f) for f in _ROWS]
        Path(target).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        terminalreporter.write_line(f"figures written to {target}")


# -- ./run cluster start|stop|status ---------------------------------------------------


def fixed_cluster(folder: Path) -> Cluster:
    return Cluster(folder, FIXED, "rabbitry-cluster")


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pids(made: Cluster) -> dict[str, int | None]:
    pids: dict[str, int | None] = {}
    for node in made.nodes:
        text = node.pid_file.read_text().strip() if node.pid_file.exists() else ""
        pids[node.name] = int(text) if text.isdigit() and _alive(int(text)) else None
    return pids


def command_start(folder: Path) -> int:
    if folder.exists() and any(_pids(fixed_cluster(folder)).values()):
        print(f"cluster: already running (./run cluster stop first); its folder is {folder}")
        return command_status(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / ".gitignore").write_text("*\n")
    made = fixed_cluster(folder)
    for node in made.nodes:
        _check_port_free(node)
    seconds = made.form()
    print(f"cluster: 3 nodes formed one cluster in {seconds:.1f} s")
    return command_status(folder)


def _check_port_free(node: ClusterNode) -> None:
    for port in (node.amqp_port, node.management_port, node.dist_port):
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                raise NodeFailed(
                    f"port {port} of {node.name} is taken: by another cluster? (./run cluster "
                    "status; ./run cluster stop)"
                ) from None


def command_stop(folder: Path) -> int:
    made = fixed_cluster(folder) if folder.exists() else None
    if made is None:
        print("cluster: not running")
        return 0
    pids = {name: pid for name, pid in _pids(made).items() if pid is not None}
    for pid in pids.values():
        os.killpg(pid, signal.SIGTERM)  # as OwnNode.stop: the script passes it on to the VM
    deadline = time.monotonic() + NODE_TIMEOUT
    while any(_alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for name, pid in pids.items():
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
            print(f"cluster: {name} did not stop in {NODE_TIMEOUT:g} s: killed")
    shutil.rmtree(folder, ignore_errors=True)
    print(f"cluster: stopped; {folder} removed")
    return 0


def command_status(folder: Path) -> int:
    if not folder.exists():
        print("cluster: not running")
        return 3
    made = fixed_cluster(folder)
    pids = _pids(made)
    up = 0
    for node in made.nodes:
        peers = node.running_peers() if pids[node.name] else None
        state = "down" if peers is None else f"running; sees {len(peers)} running"
        up += peers is not None
        print(f"{node.name}  {state}  AMQP :{node.amqp_port}  {node.management_url}")
    urls = ",".join(f"amqp://guest:guest@127.0.0.1:{n.amqp_port}/" for n in made.nodes)
    print(f"RABBITRY_URL={urls}")
    print(f"RABBITRY_MANAGEMENT_URL={made.nodes[0].management_url}")
    return 0 if up == SIZE else 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run cluster", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--folder", type=Path, default=ROOT / ".cluster")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("cluster: starting RabbitMQ nodes needs root (run ./run cluster as root)")
        return 1
    commands = {"start": command_start, "stop": command_stop, "status": command_status}
    try:
        return commands[args.command](args.folder.resolve())
    except NodeFailed as exc:
        print(f"cluster: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
