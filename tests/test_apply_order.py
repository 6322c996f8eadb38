"""What made ``rabbitry apply`` faster at scale, held on the real broker (issue 16).

Policies are written before the first declare (written after thousands of
queues, the broker re-applies each one to every queue it matches), so a
refused declare says which policies were written before it; the vhost is read
(``converge.look``) while the spec is read and checked, and an error of
either still stops everything; ``desired`` is built once per spec.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiormq
import httpx
import pytest

from amqp import Bounded
from broker import ManagementAPI, Vhost, made_user
from rabbitry.broker import converge
from rabbitry.broker.plan import Action, Kind
from rabbitry.broker.state import desired
from rabbitry.broker.url import BrokerURL, parse_url
from rabbitry.check import load_spec
from rabbitry.errors import AccessRefused
from specs import run_cli

TIMEOUT = 10.0
run = Bounded(60.0)

SPEC = """\
version: 1
exchanges:
  x: {type: direct}
queues:
  q: {}
bindings:
  - {from: x, queue: q, key: k}
policies:
  short:
    queues: [q]
    message_ttl: 60000
messages: {}
"""


def url_of(vhost: Vhost, **changes: Any) -> BrokerURL:
    return replace(parse_url(vhost.amqp_url, management=vhost.management_url), **changes)


def write(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def policies_of(vhost: Vhost) -> set[str]:
    rows = vhost.api.get_json(f"/api/policies/{quote(vhost.name, safe='')}")
    return {row["name"] for row in rows}


def queues_of(vhost: Vhost) -> set[str]:
    rows = vhost.api.get_json(f"/api/queues/{quote(vhost.name, safe='')}?columns=name")
    return {row["name"] for row in rows}


def test_policies_are_written_before_the_first_declare_and_a_refusal_names_them(
    broker: ManagementAPI, vhost: Vhost, tmp_path: Path
) -> None:
    spec = load_spec(write(tmp_path))
    with made_user(broker, vhost.name, tags="policymaker") as (name, password):
        config = broker.config
        # Exchanges only: the queue's declare is refused (403), after the policy.
        httpx.put(
            f"{config.management_url}/api/permissions/{quote(vhost.name, safe='')}/{name}",
            auth=(config.username, config.password),
            json={"configure": "^x$", "write": ".*", "read": ".*"},
        ).raise_for_status()
        url = url_of(vhost, username=name, password=password)
        with pytest.raises(AccessRefused) as refused:
            run(converge.apply(spec, url, timeout=TIMEOUT))
    assert policies_of(vhost) == {"short"}
    assert queues_of(vhost) == set()
    told = str(refused.value)
    assert "queue 'q'" in told
    assert "before this refusal apply made 2 of 4 changes" in told
    assert "create policy 'short'" in told
    assert "create exchange 'x'" in told


def test_plan_starts_from_what_look_read(vhost: Vhost, tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path))
    url = url_of(vhost)
    looked = run(converge.look(url, timeout=TIMEOUT))
    assert looked.url == url

    async def declare_q() -> None:
        connection = await aiormq.connect(vhost.amqp_url)
        channel = await connection.channel()
        await channel.queue_declare("q", durable=True)
        await connection.close()

    run(declare_q())  # after the look: the plan given the look does not know it
    from_look = run(converge.plan(spec, url, timeout=TIMEOUT, looked=looked))
    fresh = run(converge.plan(spec, url, timeout=TIMEOUT))
    creates = {(c.kind, c.name) for c in from_look.plan.changes if c.action is Action.CREATE}
    assert (Kind.QUEUE, "q") in creates
    assert (Kind.QUEUE, "q") not in {(c.kind, c.name) for c in fresh.plan.changes}


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_a_spec_error_comes_first_and_nothing_is_applied(
    command: str, vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The vhost is read while the spec is checked: a spec with errors still stops the
    command before anything is changed, and says so rather than the broker's state."""
    path = write(tmp_path, SPEC.replace("queue: q,", "queue: nowhere,"))
    code, out, err = run_cli([command, str(path), "--url", vhost.amqp_url], capsys)
    assert code == 1, out + err
    assert "nowhere" in err
    assert queues_of(vhost) == set()
    assert policies_of(vhost) == set()


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_a_broker_that_does_not_answer_is_said_once_the_spec_is_good(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path)
    url = "amqp://guest:guest@127.0.0.1:1/"
    code, out, err = run_cli(
        [command, str(path), "--url", url, "--management-url", "http://127.0.0.1:1"], capsys
    )
    assert code == 1, out + err
    assert "127.0.0.1:1" in err
    assert "not reachable" in err or "refused" in err


def test_desired_is_built_once_per_spec(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path))
    assert desired(spec) is desired(spec)
    assert set(desired(spec).queues) == {"q"}
