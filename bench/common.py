"""What the benches share: the broker's management API, fresh vhosts, versions, CPU clocks.

Not a test helper: nothing here runs in CI.  ``run.py`` and the benches
import it as ``common`` (their folder is on ``sys.path`` when run as scripts).
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from rabbitry.broker.url import BrokerURL

ROOT = Path(__file__).resolve().parent.parent
#: Every vhost a bench makes starts with this; ``Broker.sweep`` deletes leftovers.
VHOST_PREFIX = "rabbitry-bench-"


class Broker:
    """The management API calls the benches need (vhosts, counts, versions)."""

    def __init__(self, url: BrokerURL) -> None:
        self.url = url
        if url.management is None:
            raise SystemExit(f"bench: no management API for {url}: give --management-url")
        self.http = httpx.Client(
            base_url=url.management, auth=(url.username, url.password), timeout=120
        )

    def overview(self) -> dict[str, Any]:
        result: dict[str, Any] = self.http.get("/api/overview").raise_for_status().json()
        return result

    @contextlib.contextmanager
    def fresh_vhost(self) -> Iterator[BrokerURL]:
        """A new, empty vhost the URL's user may use; deleted (with all in it) on exit."""
        name = f"{VHOST_PREFIX}{uuid.uuid4().hex[:8]}"
        quoted = quote(name, safe="")
        self.http.put(f"/api/vhosts/{quoted}", json={}).raise_for_status()
        try:
            self.http.put(
                f"/api/permissions/{quoted}/{quote(self.url.username, safe='')}",
                json={"configure": ".*", "write": ".*", "read": ".*"},
            ).raise_for_status()
            yield BrokerURL(
                self.url.scheme,
                self.url.host,
                self.url.port,
                self.url.username,
                self.url.password,
                name,
                self.url.management_override,
            )
        finally:
            # Synchronous: it returns once the vhost and its queues are gone, so the
            # next measurement does not share the broker with a teardown.
            self.http.delete(f"/api/vhosts/{quoted}")

    def bindings(self, vhost: str) -> int:
        """Bindings in ``vhost``, the default exchange's left out."""
        rows = self.http.get(
            f"/api/bindings/{quote(vhost, safe='')}", params={"columns": "source"}
        ).raise_for_status()
        return sum(1 for row in rows.json() if row["source"])

    def queues(self, vhost: str) -> int:
        rows = self.http.get(f"/api/queues/{quote(vhost, safe='')}", params={"columns": "name"})
        return len(rows.raise_for_status().json())


def versions(broker: Broker) -> dict[str, Any]:
    overview = broker.overview()
    found: dict[str, Any] = {
        "rabbitmq": overview.get("rabbitmq_version"),
        "erlang": overview.get("erlang_version"),
        "python": platform.python_version(),
    }
    for package in ("rabbitry", "aiormq", "aio-pika", "pamqp", "jsonschema-rs", "jsonschema"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def machine(broker_url: BrokerURL) -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "broker_local": broker_pid(broker_url) is not None,
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
    }


# -- CPU clocks ---------------------------------------------------------------------


def broker_pid(url: BrokerURL) -> int | None:
    """The local RabbitMQ node's ``beam.smp`` process, when the broker runs on this machine."""
    if url.host not in ("localhost", "127.0.0.1", "::1") or not sys.platform.startswith("linux"):
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"beam.smp" in cmdline and b"rabbit" in cmdline and b"boot" in cmdline:
            return int(entry.name)
    return None


@dataclass
class Clock:
    """Wall time and CPU seconds: this process's, its children's, the broker's (if local)
    and the whole machine's (Linux), so that a figure comes with what it cost."""

    broker: int | None

    def read(self) -> dict[str, float | None]:
        times = os.times()
        return {
            "seconds": time.perf_counter(),
            "client_cpu_s": times.user + times.system,
            "children_cpu_s": times.children_user + times.children_system,
            "broker_cpu_s": self._broker_cpu(),
            "machine_cpu_s": _machine_cpu(),
        }

    def _broker_cpu(self) -> float | None:
        if self.broker is None:
            return None
        try:
            fields = Path(f"/proc/{self.broker}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, float | None]]:
        """The differences of ``read()`` across the block, filled in on exit."""
        result: dict[str, float | None] = {}
        before = self.read()
        yield result
        after = self.read()
        for key, start in before.items():
            end = after[key]
            result[key] = None if start is None or end is None else end - start
        for key, value in result.items():
            if key != "seconds" and value is not None:
                result[key] = round(value, 3)


def _machine_cpu() -> float | None:
    """CPU seconds every process of the machine has used so far (Linux), else ``None``."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle, iowait = fields[3], fields[4]
    return (sum(fields) - idle - iowait) / os.sysconf("SC_CLK_TCK")


# -- summaries ---------------------------------------------------------------------


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratios(rounds: list[dict[str, Any]], name: str, peer: str) -> list[float]:
    """``name / peer`` per round: each round's figures share the broker's mood."""
    return [r[name] / r[peer] for r in rounds if r.get(name) and r.get(peer)]
