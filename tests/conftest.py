"""Shared fixtures: the real broker, and a fresh vhost on it for each test.

Tests that use ``broker`` or ``vhost`` (directly or through another fixture)
are marked ``broker`` at collection, so ``-m "not broker"`` deselects them.
When the broker does not answer they FAIL with a one-line message: the broker
tests are part of the product, and ``./run setup`` starts the broker.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

# The helpers sit next to this file; make them importable as ``broker`` however
# pytest was started (rootdir, tests/, with or without tests/__init__.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from amqp import apply
from broker import BrokerConfig, BrokerUnreachable, ManagementAPI, Vhost, fresh_vhost
from rabbitry.messaging.contract import Contract
from specs import FLAGSHIP

pytest_plugins = ["pytester"]

BROKER_FIXTURES = frozenset({"broker", "vhost"})


def pytest_configure(config: pytest.Config) -> None:
    # pyproject.toml declares the marker; declare it too when this conftest is
    # used elsewhere (e.g. by pytester runs) so --strict-markers stays happy.
    if not any(line.split(":")[0].strip() == "broker" for line in config.getini("markers")):
        config.addinivalue_line("markers", "broker: needs a running RabbitMQ")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.broker)


@pytest.fixture(scope="session")
def broker() -> Iterator[ManagementAPI]:
    """The management API of the real broker, checked once per session.

    Fails (never skips) when the broker is unreachable.
    """
    with ManagementAPI(BrokerConfig.from_env()) as api:
        problem = None
        try:
            api.check_reachable()
        except BrokerUnreachable as exc:
            problem = str(exc)
        if problem is not None:
            pytest.fail(problem, pytrace=False)  # outside `except`: one line, no chained trace
        yield api


@pytest.fixture
def vhost(broker: ManagementAPI) -> Iterator[Vhost]:
    """A fresh vhost (``rabbitry-test-<12 hex>``) with full permissions, deleted afterwards."""
    yield from fresh_vhost(broker)


@pytest.fixture(scope="module")
def contract() -> Contract:
    """The flagship's contract (a module may define its own ``contract``), without the
    ``retry:`` of jobs.ready: the runtime tests of jobs.ready count the handler's tries in
    process (``attempts``); tests/test_retry_runtime.py tests the delays."""
    loaded = Contract.load(FLAGSHIP)
    queues = {name: replace(queue, retry=()) for name, queue in loaded.queues.items()}
    return replace(loaded, queues=queues)


@pytest.fixture
def jobs(vhost: Vhost) -> Vhost:
    """The fresh vhost with the flagship topology applied (the fault suite's own-node
    modules define their own ``jobs``)."""
    apply(vhost, FLAGSHIP)
    return vhost
