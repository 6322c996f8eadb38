"""Issue 14, item 11 (permissions): apply as a user that may make only some of the changes.

Before the fix, a user allowed to configure exchanges ``a`` and ``b`` only
saw apply create both, then stop at the 403 on ``c`` with an error that did
not say ``a`` and ``b`` had been made.  Now an administrator's permissions
(the only ones the management API shows) are checked first and nothing is
made; anyone else's apply says exactly which changes it made before the refusal.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from broker import ManagementAPI, Vhost
from specs import run_cli, write_spec

#: An apply of four objects that is refused: ~0.3 s here.
APPLY_BOUND = 30.0

SPEC = """
version: 1
exchanges:
  a: {type: topic}
  b: {type: topic}
  c: {type: topic}
queues:
  q: {}
bindings:
  - {from: a, queue: q, key: "k"}
"""
MAY = {"configure": "^(a|b)$", "write": ".*", "read": ".*"}


@contextmanager
def limited_user(broker: ManagementAPI, vhost: Vhost, tags: str) -> Iterator[str]:
    """A user with ``tags`` who may configure only ``a`` and ``b`` in ``vhost``: its URL."""
    name, password = f"rabbitry-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    config = broker.config
    with httpx.Client(
        base_url=config.management_url, auth=(config.username, config.password)
    ) as client:
        client.put(f"/api/users/{name}", json={"password": password, "tags": tags})
        try:
            client.put(
                f"/api/permissions/{quote(vhost.name, safe='')}/{name}", json=MAY
            ).raise_for_status()
            yield f"amqp://{name}:{password}@localhost:5672/{quote(vhost.name, safe='')}"
        finally:
            client.delete(f"/api/users/{name}")


def _apply(url: str, spec: Path, capsys: pytest.CaptureFixture[str]) -> str:
    started = time.monotonic()
    code, _, err = run_cli(["apply", "-f", str(spec), "--url", url], capsys)
    assert time.monotonic() - started < APPLY_BOUND
    assert code == 1, err
    return err


def _made(vhost: Vhost) -> set[str]:
    return {x["name"] for x in vhost.exchanges()} & {"a", "b", "c"}


@pytest.mark.parametrize("tags", ["management", ""])
def test_a_refused_apply_says_which_changes_it_made(
    broker: ManagementAPI,
    vhost: Vhost,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tags: str,
) -> None:
    """Not an administrator (read through the API, or over AMQP): the permissions cannot
    be asked, so the broker's 403 stops apply, and the error lists what was made."""
    spec = write_spec(tmp_path, SPEC)
    with limited_user(broker, vhost, tags) as url:
        err = _apply(url, spec, capsys)
    made = _made(vhost)
    assert "c" not in made
    assert "refused access" in err
    said = set(re.findall(r"create exchange '(\w)'", err))
    assert said == made, err  # each change made is named, and no other
    assert f"made {len(made)} of " in err or (not made and "nothing was changed" in err)


def test_an_administrators_permissions_are_checked_before_any_change(
    broker: ManagementAPI, vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, SPEC)
    with limited_user(broker, vhost, "administrator") as url:
        err = _apply(url, spec, capsys)
    assert _made(vhost) == set()  # before: a and b were created
    assert "may not make 2 of the plan's changes" in err
    assert "create exchange 'c' needs configure on exchange 'c'" in err
    assert "create queue 'q' needs configure on queue 'q'" in err
    assert "nothing was changed" in err
