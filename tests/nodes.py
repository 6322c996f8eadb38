"""A RabbitMQ node of a test's own, to stop and restart: faults the shared broker must not see.

The shared broker (``./run setup``'s, on 5672/15672) serves every test, and
other runs at once; restarting it would cut them all.  A test that needs a
broker restart starts a node of its own instead: ``rabbitry-test-<hex>@localhost``
with its own AMQP, management and Erlang distribution ports and its own
folder (data, logs, config, plugins file), removed afterwards.

Why it is started this way:

- as root, with the package's own scripts (``/usr/lib/rabbitmq/bin`` on
  Debian): Debian's ``/usr/sbin/rabbitmqctl`` switches to the ``rabbitmq`` user
  and its Erlang cookie, which a node started as root does not share;
- ``HOME`` is the node's folder, so its Erlang cookie (made by the first
  start) is its own and ``rabbitmqctl``, run with the same ``HOME``, reads it;
- ``RABBITMQ_CONF_ENV_FILE`` is an empty file of its own, so the shared
  broker's ``/etc/rabbitmq/rabbitmq-env.conf`` is not read;
- ports are picked below the kernel's ephemeral range (32768-60999 on Linux):
  there, any outgoing connection may take the port between the check and the
  node's bind (seen: ``eaddrinuse`` on a port that was free a moment before).

Every node is in a process group of its own; ``kill`` ends the group, and the
fixtures call it whatever the test did, so no node outlives its tests.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from broker import BrokerConfig

__all__ = ["NodeFailed", "OwnNode", "own_node", "rabbitmq_scripts"]

#: Where the Debian package keeps its own scripts (the ones that do not switch user).
DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
#: Seconds a start or a stop may take (about 5 s each on 2 busy cores).
NODE_TIMEOUT = 60.0
#: Ports are picked in here: below the ephemeral range, above the well-known ones.
PORT_RANGE = (10_000, 32_000)
#: Ports a node must never take: the shared broker's and the CLI tools' distribution ones.
RESERVED_PORTS = frozenset({4369, 5672, 15672, 25672, *range(35672, 35683)})
CREDENTIALS = ("guest", "guest")


class NodeFailed(Exception):
    """The node did not start or stop in time; the message says why, with its log's tail."""


def rabbitmq_scripts() -> Path:
    """The folder of ``rabbitmq-server`` and ``rabbitmqctl`` that run as the caller.

    Debian's package keeps them in ``/usr/lib/rabbitmq/bin`` (``/usr/sbin`` has
    wrappers that switch user); elsewhere (a generic install) the scripts on
    ``PATH`` are the real ones.
    """
    if (DEBIAN_SCRIPTS / "rabbitmqctl").exists():
        return DEBIAN_SCRIPTS
    found = shutil.which("rabbitmq-server", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if found is None:
        raise NodeFailed("rabbitmq-server is not installed; run `./run setup` (as root)")
    return Path(found).resolve().parent


def _free_port(taken: set[int]) -> int:
    """A port nothing listens on or is connected from, on every interface."""
    for _ in range(200):
        port = random.randint(*PORT_RANGE)
        if port in taken or port in RESERVED_PORTS:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise NodeFailed(f"no free port in {PORT_RANGE} after 200 tries")


class OwnNode:
    """One RabbitMQ node: its ports, its folder, and its server process while it runs."""

    def __init__(self, folder: Path) -> None:
        ports: set[int] = set()
        self.name = f"rabbitry-test-{uuid.uuid4().hex[:8]}@localhost"
        self.amqp_port = _free_port(ports)
        self.management_port = _free_port(ports)
        self.dist_port = _free_port(ports)
        self.folder = folder
        self.scripts = rabbitmq_scripts()
        self._process: subprocess.Popen[bytes] | None = None
        (folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"management.tcp.ip = 127.0.0.1\n"
            f"management.tcp.port = {self.management_port}\n"
            "loopback_users = none\n"
        )
        (folder / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (folder / "rabbitmq-env.conf").write_text("")

    # -- where it is ------------------------------------------------------------------

    def amqp_url(self, vhost: str = "/") -> str:
        user, password = CREDENTIALS
        return f"amqp://{user}:{password}@127.0.0.1:{self.amqp_port}/{quote(vhost, safe='')}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def config(self) -> BrokerConfig:
        """For ``broker.ManagementAPI`` and ``broker.fresh_vhost``, as for the shared broker."""
        return BrokerConfig(self.amqp_url(), self.management_url, *CREDENTIALS)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- start, stop ---------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        folder = str(self.folder)
        env.update(
            HOME=folder,  # the Erlang cookie: its own, for the server and rabbitmqctl alike
            LC_ALL="C.UTF-8",
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=f"{folder}/rabbitmq.conf",
            RABBITMQ_ADVANCED_CONFIG_FILE=f"{folder}/advanced.config",  # absent
            RABBITMQ_CONF_ENV_FILE=f"{folder}/rabbitmq-env.conf",
            RABBITMQ_ENABLED_PLUGINS_FILE=f"{folder}/enabled_plugins",
            RABBITMQ_MNESIA_BASE=f"{folder}/mnesia",
            RABBITMQ_LOG_BASE=f"{folder}/log",
        )
        return env

    def ctl(self, *args: str, timeout: float = NODE_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n NODE ARGS`` with the node's cookie; never raises for its exit code."""
        return subprocess.run(
            [str(self.scripts / "rabbitmqctl"), "-n", self.name, *args],
            env=self._environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, timeout: float = NODE_TIMEOUT) -> float:
        """Start the server (data kept from a previous run); seconds until it answers.

        Waits until ``rabbitmqctl await_startup`` succeeds and the management API
        answers; raises ``NodeFailed`` (after killing it) if that takes longer than
        ``timeout`` or the server exits.
        """
        if self.running:
            return 0.0
        started = time.monotonic()
        with (self.folder / "server.out").open("ab") as out:
            self._process = subprocess.Popen(
                [str(self.scripts / "rabbitmq-server")],
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group of its own, for kill()
            )
        deadline = started + timeout
        while not self._booted():
            if not self.running:
                self.kill()
                raise NodeFailed(f"node {self.name} exited while starting: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise NodeFailed(
                    f"node {self.name} did not start in {timeout:g} s: {self._log_tail()}"
                )
            time.sleep(0.3)
        return time.monotonic() - started

    def _booted(self) -> bool:
        # await_startup fails at once while the node is not yet known to epmd.
        if self.ctl("await_startup", "--timeout", "5", timeout=15).returncode != 0:
            return False
        try:
            return httpx.get(
                f"{self.management_url}/api/overview", auth=CREDENTIALS, timeout=5
            ).is_success
        except httpx.HTTPError:
            return False

    def stop(self, timeout: float = NODE_TIMEOUT) -> float:
        """Stop the node, its data kept; seconds until its process ended.

        A SIGTERM to the server, as ``systemctl stop`` or ``docker stop`` send: the
        VM shuts RabbitMQ down as ``rabbitmqctl stop`` does, without the CLI's
        1-2 s of start-up, so a test stops it at the moment it chose.  A node
        that does not stop in ``timeout`` is killed, then ``NodeFailed``.
        """
        if self._process is None or not self.running:
            return 0.0
        started = time.monotonic()
        self._process.terminate()  # the script passes it on to the VM
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise NodeFailed(f"node {self.name} did not stop in {timeout:g} s") from None
        return time.monotonic() - started

    def restart(self, timeout: float = NODE_TIMEOUT) -> float:
        """``stop`` then ``start``: the whole server process, data kept (what an operator's
        restart or a host reboot does; every connection is closed); seconds it took."""
        return self.stop(timeout) + self.start(timeout)

    def kill(self) -> None:
        """End the server's whole process group at once (SIGKILL): nothing is left running."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        # The VM is the script's child: wait until the whole group is gone too.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise NodeFailed(f"node {self.name}'s processes outlived a SIGKILL for 10 s")

    def _log_tail(self, lines: int = 5) -> str:
        """The last lines of the server's output, on one line: why it failed."""
        path = self.folder / "server.out"
        text = path.read_text(errors="replace") if path.exists() else ""
        tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(tail)[-800:] or f"no output; see {self.folder}/log"


@contextlib.contextmanager
def started_node() -> Iterator[OwnNode]:
    """A started node in a temporary folder; killed and removed on the way out, come what may."""
    with tempfile.TemporaryDirectory(prefix="rabbitry-node-") as folder:
        node = OwnNode(Path(folder))
        try:
            node.start()
            yield node
        finally:
            node.kill()


def _require_root() -> None:
    problem = None
    if os.geteuid() != 0:
        problem = (
            "tests/nodes.py starts a RabbitMQ node of the test's own, which needs root "
            "(CI runs as root): run pytest as root"
        )
    else:
        try:
            rabbitmq_scripts()
        except NodeFailed as exc:
            problem = str(exc)
    if problem is not None:
        pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="module")
def _own_node_for_module() -> Iterator[OwnNode]:
    _require_root()
    with started_node() as node:
        yield node


@pytest.fixture
def own_node(_own_node_for_module: OwnNode) -> OwnNode:
    """A RabbitMQ node of the test module's own, running when the test starts.

    One node per module (a start takes ~5 s); a test may stop or restart it,
    and the next test finds it started again.  Killed after the module.
    Fails with one line when not root or when RabbitMQ is not installed.
    """
    _own_node_for_module.start()
    return _own_node_for_module
