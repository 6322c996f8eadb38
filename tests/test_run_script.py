"""``./run setup`` as a user without root or sudo.

Installing, starting and pinging RabbitMQ need root; a broker that already answers
needs none of them. Such a user once got exit 1 and no word at all (``as_root``'s
error went into a redirect). These tests run the real script as ``nobody`` in a copy
of the checkout's entry point with a stand-in venv (a link to the system python and a
fresh stamp), so the repository's own ``.venv`` is neither used nor rebuilt.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import BrokerConfig, ManagementAPI, Vhost

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PATH = "/usr/bin:/bin"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
    pytest.mark.skipif(
        shutil.which("sudo", path=SYSTEM_PATH) is not None,
        reason="sudo is installed: this user would not lack it",
    ),
]


@pytest.fixture
def checkout() -> Iterator[Path]:
    """A directory ``nobody`` can use: ``run``, ``pyproject.toml`` and a ready venv stand-in."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="rabbitry-run-") as name:
        root = Path(name)
        shutil.copy2(REPO / "run", root / "run")
        shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
        python = shutil.which("python3", path=SYSTEM_PATH)
        assert python is not None, "no python3 on /usr/bin:/bin"
        (root / ".venv" / "bin").mkdir(parents=True)
        (root / ".venv" / "bin" / "python").symlink_to(python)
        stamp = root / ".venv" / ".rabbitry-installed"
        stamp.touch()
        later = (root / "pyproject.toml").stat().st_mtime + 10
        os.utime(stamp, (later, later))
        (root / "home").mkdir()
        for path in [root, *root.rglob("*")]:
            os.chown(path, 65534, 65534, follow_symlinks=False)
        yield root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_as_nobody(
    checkout: Path, amqp_url: str, management_url: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": SYSTEM_PATH,
        "HOME": str(checkout / "home"),
        "RABBITRY_URL": amqp_url,
        "RABBITRY_MANAGEMENT_URL": management_url,
        "RABBITRY_BROKER_WAIT": "5",
    }
    command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    command += ["env", "-i", *(f"{key}={value}" for key, value in env.items())]
    command += [str(checkout / "run"), "setup"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_setup_without_root_uses_a_broker_that_answers(
    checkout: Path, broker: ManagementAPI
) -> None:
    config = BrokerConfig.from_env()
    result = run_as_nobody(checkout, config.amqp_url, config.management_url)
    assert result.returncode == 0, result.stderr
    assert "skipping the root-only steps" in result.stderr
    assert config.management_url in result.stderr


def test_setup_without_root_and_without_a_broker_says_root_is_needed(checkout: Path) -> None:
    amqp = f"amqp://guest:guest@localhost:{free_port()}/"
    management = f"http://localhost:{free_port()}"
    result = run_as_nobody(checkout, amqp, management)
    assert result.returncode == 1
    assert "run: error:" in result.stderr
    assert "needs root" in result.stderr
    assert management in result.stderr


def test_demo_says_which_vhost_it_writes_into(vhost: Vhost) -> None:
    """The demo leaves its exchanges and queues behind (in ``/`` by default): it says where."""
    env = {
        **os.environ,
        "RABBITRY_URL": vhost.amqp_url,
        "RABBITRY_MANAGEMENT_URL": vhost.management_url,
    }
    result = subprocess.run(
        [str(REPO / "run"), "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"in vhost '{vhost.name}'" in result.stderr
