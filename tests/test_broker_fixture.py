"""The ``vhost`` fixture: a fresh, isolated, usable vhost that is gone afterwards."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import aiormq
import pytest
from pamqp.commands import Basic

from broker import BrokerConfig, ManagementAPI, Vhost, fresh_vhost

T = TypeVar("T")

TESTS_DIR = Path(__file__).resolve().parent
AMQP_DEADLINE = 30.0


def run(coroutine: Awaitable[T]) -> T:
    """Run one coroutine to completion, with a deadline so a stuck broker fails the test."""

    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, AMQP_DEADLINE)

    return asyncio.run(bounded())


async def declare_queue(amqp_url: str, queue: str) -> None:
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(queue, durable=True)
    finally:
        await connection.close()


async def publish_and_get(amqp_url: str, exchange: str, queue: str, body: bytes) -> bytes | None:
    """Declare ``exchange`` -> ``queue``, publish ``body`` with confirms, get it back."""
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        await channel.queue_declare(queue, durable=True)
        await channel.queue_bind(queue, exchange, routing_key="probe.#")
        confirmation = await channel.basic_publish(
            body,
            exchange=exchange,
            routing_key="probe.one",
            mandatory=True,
            properties=Basic.Properties(content_type="application/octet-stream"),
        )
        assert isinstance(confirmation, Basic.Ack), confirmation
        message = await channel.basic_get(queue, no_ack=True)
        got: bytes | None = message.body if message is not None else None
        return got
    finally:
        await connection.close()


@pytest.fixture
def other_vhost(broker: ManagementAPI) -> Iterator[Vhost]:
    """A second fresh vhost, to show that the first one is isolated from it."""
    yield from fresh_vhost(broker)


def test_vhost_is_fresh_and_named(vhost: Vhost, broker: ManagementAPI) -> None:
    assert re.fullmatch(r"rabbitry-test-[0-9a-f]{12}", vhost.name)
    assert vhost.exists()
    assert vhost.queues() == []
    assert vhost.bindings() == []
    assert "amq.topic" in {exchange["name"] for exchange in vhost.exchanges()}
    assert vhost.amqp_url.endswith(f"/{vhost.name}")
    assert vhost.management_url == broker.config.management_url
    assert "guest" not in repr(vhost)  # the URL with the password stays out of reprs


def test_queue_declared_over_amqp_shows_only_in_its_vhost(vhost: Vhost, other_vhost: Vhost) -> None:
    assert vhost.name != other_vhost.name
    run(declare_queue(vhost.amqp_url, "rabbitry.probe"))

    assert "rabbitry.probe" in vhost.queue_names()
    assert "rabbitry.probe" not in other_vhost.queue_names()
    (queue,) = vhost.queues()
    assert queue["vhost"] == vhost.name
    assert queue["durable"] is True


def test_guest_has_full_permissions_and_can_publish(vhost: Vhost, broker: ManagementAPI) -> None:
    permissions = broker.vhost_permissions(vhost.name)
    assert [(p["user"], p["configure"], p["write"], p["read"]) for p in permissions] == [
        (broker.config.username, ".*", ".*", ".*")
    ]

    body = run(publish_and_get(vhost.amqp_url, "rabbitry.probe-x", "rabbitry.probe-q", b"hi"))

    assert body == b"hi"
    assert {
        (binding["source"], binding["destination"], binding["routing_key"])
        for binding in vhost.bindings()
        if binding["source"]
    } == {("rabbitry.probe-x", "rabbitry.probe-q", "probe.#")}


def test_vhost_is_deleted_when_the_generator_finishes(broker: ManagementAPI) -> None:
    lifecycle = fresh_vhost(broker)
    vhost = next(lifecycle)
    assert broker.vhost_exists(vhost.name)
    run(declare_queue(vhost.amqp_url, "rabbitry.leftover"))  # deleted even with contents

    with pytest.raises(StopIteration):
        next(lifecycle)

    assert not broker.vhost_exists(vhost.name)


def test_vhost_is_deleted_when_the_test_fails(broker: ManagementAPI) -> None:
    lifecycle = fresh_vhost(broker)
    vhost = next(lifecycle)

    with pytest.raises(RuntimeError, match="test body failed"):
        lifecycle.throw(RuntimeError("test body failed"))

    assert not broker.vhost_exists(vhost.name)


def _copy_fixtures_into(pytester: pytest.Pytester) -> None:
    # conftest.py and the helper modules it imports
    for name in ("conftest.py", "broker.py", "amqp.py", "specs.py"):
        (pytester.path / name).write_text((TESTS_DIR / name).read_text())


def test_fixture_deletes_its_vhost_after_the_test(
    pytester: pytest.Pytester, broker: ManagementAPI
) -> None:
    """Run the real fixture in a pytest of its own, then look for its vhost."""
    _copy_fixtures_into(pytester)
    record = pytester.path / "vhost-name.txt"
    pytester.makepyfile(
        test_inner=f"""
        from pathlib import Path

        def test_records_its_vhost(vhost):
            assert vhost.exists()
            Path({str(record)!r}).write_text(vhost.name)
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)

    result.assert_outcomes(passed=1)
    name = record.read_text()
    assert name.startswith("rabbitry-test-")
    assert not broker.vhost_exists(name)


def test_unreachable_broker_fails_with_a_hint_instead_of_skipping(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy_fixtures_into(pytester)
    pytester.makepyfile(
        test_inner="""
        def test_one(vhost):
            pass

        def test_two(broker):
            pass
        """
    )
    monkeypatch.setenv("RABBITRY_MANAGEMENT_URL", "http://127.0.0.1:9")

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rE", timeout=120)

    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*management API at http://127.0.0.1:9 is not reachable*"])
    result.stdout.fnmatch_lines(["*run `./run setup`*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_amqp_url_quotes_the_vhost() -> None:
    config = BrokerConfig.from_env(
        {"RABBITRY_URL": "amqp://user:p%40ss@rabbit.example:5673/?heartbeat=5"}
    )

    assert config.amqp_url_for("/") == "amqp://user:p%40ss@rabbit.example:5673/%2F?heartbeat=5"
    assert (
        config.amqp_url_for("a b/c")
        == "amqp://user:p%40ss@rabbit.example:5673/a%20b%2Fc?heartbeat=5"
    )
    assert (config.username, config.password) == ("user", "p@ss")
    assert config.amqp_address == ("rabbit.example", 5673)
    assert config.management_url == "http://localhost:15672"
