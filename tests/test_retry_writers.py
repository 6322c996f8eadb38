"""Delayed retries (``retry: [5s, 30s]``) through every writer and reader of specs.

A queue's ``retry:`` makes one retry queue per distinct delay (``spec._retry``):
ordinary queues of the model, marked ``retry_of``.  What writes a spec must
write ``retry:`` and never the retry queues (the spec would then declare, twice,
what ``retry:`` makes); what reads a broker must fold them back into ``retry:``.
Checked here: the AsyncAPI export (retry queues as marked channels) and its
reading back; the definitions export; the importer from a definitions file
(hypothesis over delay lists, with a look-alike queue that must stay a queue of
its own) and from a live vhost that ``apply`` made; the docs page's entries.
The diagram's retry edges are tested with the graph's parsers in ``test_graph``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import Vhost
from rabbitry.asyncapi import draft_from_asyncapi, export_asyncapi, schema_faults
from rabbitry.broker import converge
from rabbitry.broker.state import desired
from rabbitry.broker.url import parse_url
from rabbitry.check import load_spec
from rabbitry.docs import build_page, catalogue_of
from rabbitry.export_definitions import definitions
from rabbitry.importer import draft_from_topology, topology_from_definitions
from rabbitry.spec import Spec
from rabbitry.spec.draft import write_spec as write_draft
from rabbitry.spec.model import retry_label, retry_queue_name
from specs import run_cli, write_spec

Json = dict[str, Any]

_RETRIED = """\
version: 1
exchanges:
  dl: {type: fanout}
queues:
  jobs: {type: quorum, dead_letter: dl, retry: [30s, 5s, 60s, 5s]}
  mail: {retry: [250]}
  plain: {}
"""


def _load(folder: Path, text: str = _RETRIED) -> Spec:
    return load_spec(write_spec(folder, text))


def _same(original: Spec, again: Spec) -> None:
    assert dataclasses.replace(again, path=original.path) == original


def _channel(document: Json, name: str) -> Json:
    [found] = [c for c in document["channels"].values() if c["title"] == name]
    return found


# -- AsyncAPI --------------------------------------------------------------------------


def test_asyncapi_carries_retry_and_marks_the_retry_queues(tmp_path: Path) -> None:
    spec = _load(tmp_path)
    document = export_asyncapi(spec)
    assert schema_faults(document) == ()
    jobs = _channel(document, "jobs")["x-rabbitry-queue"]
    assert jobs["retry"] == ["30s", "5s", "1m", "5s"]  # every try, in order, as labels
    assert "retry_of" not in jobs
    for name, owner in (("jobs.retry.5s", "jobs"), ("jobs.retry.1m", "jobs")):
        channel = _channel(document, name)
        assert channel["address"] == name  # a real queue, on the broker
        assert channel["x-rabbitry-queue"]["retry_of"] == owner
        assert "retry" not in channel["x-rabbitry-queue"]
    assert "retry" not in _channel(document, "plain")["x-rabbitry-queue"]

    draft = draft_from_asyncapi(document)
    assert set(draft.document["queues"]) == {"jobs", "mail", "plain"}
    assert draft.document["queues"]["jobs"]["retry"] == ["30s", "5s", "1m", "5s"]
    assert draft.document["queues"]["mail"] == {"retry": ["250ms"]}
    target = tmp_path / "again" / "topology.yaml"
    write_draft(draft, target)
    text = target.read_text(encoding="utf-8")
    assert "  jobs: {type: quorum, dead_letter: dl, retry: [30s, 5s, 1m, 5s]}\n" in text
    assert "retry_of" not in text
    assert "jobs.retry" not in text
    _same(spec, load_spec(target))


def test_a_channel_marked_retry_of_that_no_retry_makes_stays_a_queue(tmp_path: Path) -> None:
    """Edited by hand: ``jobs`` lost its ``retry:``; its retry queues are then queues of
    their own, not silently dropped."""
    spec = _load(tmp_path)
    document = export_asyncapi(spec)
    del _channel(document, "jobs")["x-rabbitry-queue"]["retry"]
    queues = draft_from_asyncapi(document).document["queues"]
    assert set(queues) == {"jobs", "jobs.retry.5s", "jobs.retry.30s", "jobs.retry.1m", "mail"} | {
        "plain"
    }
    assert queues["jobs.retry.30s"] == {
        "type": "quorum",
        "message_ttl": 30_000,
        "dead_letter": "",
        "dead_letter_routing_key": "jobs",
        "description": spec.queues["jobs.retry.30s"].description,
    }


def test_an_undeclared_queue_channel_with_odd_extras_is_read(tmp_path: Path) -> None:
    """``x-rabbitry-undeclared`` lets ``x-rabbitry-queue`` be anything: never read for
    ``retry:`` then (a crash here was an ``AttributeError`` on a string)."""
    document = export_asyncapi(_load(tmp_path))
    jobs = _channel(document, "jobs")
    jobs["x-rabbitry-undeclared"] = True
    jobs["x-rabbitry-queue"] = "hand-edited"
    queues = draft_from_asyncapi(document).document["queues"]
    # jobs is gone, so nothing makes its retry queues: they stay, as queues of their own
    assert set(queues) == {"jobs.retry.5s", "jobs.retry.30s", "jobs.retry.1m", "mail", "plain"}


def test_a_hand_edited_retry_that_is_not_a_list_of_labels_is_refused(tmp_path: Path) -> None:
    document = export_asyncapi(_load(tmp_path))
    _channel(document, "jobs")["x-rabbitry-queue"]["retry"] = 5
    with pytest.raises(Exception, match="x-rabbitry-queue/retry"):
        draft_from_asyncapi(document)


# -- export definitions ----------------------------------------------------------------


def test_export_definitions_has_each_retry_queue_with_its_arguments(tmp_path: Path) -> None:
    rows = {q["name"]: q for q in definitions(_load(tmp_path))["queues"]}
    assert set(rows) == {"jobs", "jobs.retry.5s", "jobs.retry.30s", "jobs.retry.1m", "mail"} | {
        "mail.retry.250ms",
        "plain",
    }
    assert rows["jobs.retry.30s"]["arguments"] == {
        "x-queue-type": "quorum",
        "x-message-ttl": 30_000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "jobs",
    }
    assert rows["mail.retry.250ms"]["arguments"] == {
        "x-message-ttl": 250,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "mail",
    }
    assert all(rows[n]["durable"] and not rows[n]["auto_delete"] for n in rows)


# -- import: folding retry queues back into retry: ---------------------------------------

_DELAY_MS = st.one_of(
    st.sampled_from([5_000, 30_000, 60_000, 300_000, 3_600_000, 250, 1_500]),
    st.integers(1, 2**32 - 1),
)
#: What makes a look-alike not a retry queue of ``work``.
_FLAWS = ("ttl", "extra argument", "routing key", "bound", "type", "transient")


def _look_alike(flaw: str, name: str, ms: int, quorum: bool) -> Json:
    """A definitions row named ``name`` (a retry queue of ``work`` for ``ms``) but for ``flaw``."""
    arguments: Json = {
        "x-message-ttl": ms + 1 if flaw == "ttl" else ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "elsewhere" if flaw == "routing key" else "work",
    }
    if flaw == "extra argument":
        arguments["x-max-length"] = 10
    if quorum != (flaw == "type"):
        arguments["x-queue-type"] = "quorum"
    return {
        "name": name,
        "durable": flaw != "transient",
        "auto_delete": False,
        "arguments": arguments,
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    delays=st.lists(_DELAY_MS, min_size=1, max_size=6, unique_by=retry_label),
    quorum=st.booleans(),
    odd=st.none() | st.tuples(st.sampled_from(_FLAWS), _DELAY_MS),
)
def test_retry_queues_in_definitions_fold_into_retry(
    tmp_path_factory: pytest.TempPathFactory,
    delays: list[int],
    quorum: bool,
    odd: tuple[str, int] | None,
) -> None:
    folder = tmp_path_factory.mktemp("fold")
    labels = [retry_label(ms) for ms in delays]
    kind = "{type: quorum, " if quorum else "{"
    original = _load(folder, f"version: 1\nqueues:\n  work: {kind}retry: [{', '.join(labels)}]}}\n")
    document = definitions(original)
    look_alike = None
    if odd is not None and retry_label(odd[1]) not in labels:
        flaw, ms = odd
        look_alike = retry_queue_name("work", ms)
        document["queues"].append(_look_alike(flaw, look_alike, ms, quorum))
        if flaw == "bound":
            document["exchanges"] = [{"name": "x", "type": "fanout", "durable": True}]
            document["bindings"] = [
                {"source": "x", "destination": look_alike, "destination_type": "queue"}
            ]
    topology, notes = topology_from_definitions(document)
    draft = draft_from_topology(topology, notes=notes)
    target = folder / "again" / "topology.yaml"
    write_draft(draft, target)
    again = load_spec(target)

    work = again.queues["work"]
    assert work.retry == tuple(sorted(delays))  # shortest first: the broker keeps no order
    assert work.type == original.queues["work"].type
    # Nothing else changed: apply makes from the imported spec what the file holds, save
    # what a note says was left out (a quorum queue that is not durable).
    said = "\n".join(draft.notes)
    made = desired(again).queues
    assert set(made) <= set(topology.queues)
    for name, queue in topology.queues.items():
        if name in made:
            assert made[name] == queue
        else:
            assert f"queue {name!r} left out" in said
    labels_now = ", ".join(map(retry_label, sorted(delays)))
    assert f"folded into queue 'work' as `retry: [{labels_now}]`" in said
    assert ("the order of the tries is a guess" in said) == (len(delays) > 1)
    if look_alike is not None and look_alike in made:
        assert again.queues[look_alike].retry_of is None  # a queue of its own, as in the file
        assert f"{look_alike!r} is named like a retry queue of 'work' but kept" in said
    if sorted(delays) == delays and look_alike is None:
        _same(original, again)


def test_a_retry_queue_of_a_queue_left_out_stays_a_queue(tmp_path: Path) -> None:
    """``gone.retry.5s`` whose queue is exclusive (left out): nothing to fold it into."""
    document = {
        "queues": [
            {"name": "gone", "durable": False, "exclusive": True, "arguments": {}},
            {
                "name": "gone.retry.5s",
                "durable": True,
                "arguments": {
                    "x-message-ttl": 5000,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": "gone",
                },
            },
        ]
    }
    topology, notes = topology_from_definitions(document)
    draft = draft_from_topology(topology, notes=notes)
    assert draft.document["queues"] == {
        "gone.retry.5s": {"dead_letter": "", "dead_letter_routing_key": "gone", "message_ttl": 5000}
    }
    target = tmp_path / "topology.yaml"
    write_draft(draft, target)
    assert load_spec(target).queues["gone.retry.5s"].retry_of is None


def test_import_of_a_vhost_apply_made_gives_the_spec_back(
    vhost: Vhost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = """\
version: 1
queues:
  jobs: {type: quorum, retry: [5s, 30s, 5m]}
  mail: {retry: [1500ms]}
  plain: {}
"""
    original = _load(tmp_path, text)
    asyncio.run(converge.apply(original, parse_url(vhost.amqp_url), timeout=30))
    assert vhost.queue_names() == {
        "jobs",
        "jobs.retry.5s",
        "jobs.retry.30s",
        "jobs.retry.5m",
        "mail",
        "mail.retry.1500ms",
        "plain",
    }
    target = tmp_path / "again" / "topology.yaml"
    code, out, err = run_cli(["import", "--url", vhost.amqp_url, "-o", str(target)], capsys)
    assert code == 0, err
    assert not out
    assert "jobs: {type: quorum, retry: [5s, 30s, 5m]}" in target.read_text(encoding="utf-8")
    _same(original, load_spec(target))
    notes = [line for line in err.splitlines() if "folded into queue" in line]
    assert len(notes) == 2
    assert "order of the tries is a guess" in next(n for n in notes if "'jobs'" in n)
    assert "guess" not in next(n for n in notes if "'mail'" in n)


# -- docs ------------------------------------------------------------------------------


def test_the_docs_page_lists_delays_and_says_whose_retry_queue(tmp_path: Path) -> None:
    spec = _load(tmp_path)
    entries = {q.name.label: q for q in catalogue_of(spec).queues}
    jobs = entries["jobs"]
    assert [(delay, link.label) for delay, link in jobs.retries] == [
        ("30s", "jobs.retry.30s"),
        ("5s", "jobs.retry.5s"),
        ("1m", "jobs.retry.1m"),
        ("5s", "jobs.retry.5s"),
    ]
    assert all(link.anchor == f"queue-{link.label}" for _, link in jobs.retries)
    assert jobs.retry_of is None
    waiting = entries["jobs.retry.1m"]
    assert waiting.retry_of is not None
    assert waiting.retry_of.label == "jobs"
    assert waiting.retry_delay == "1m"
    assert {(e.key, e.value) for e in waiting.settings} == {
        ("message-ttl", "60000"),
        ("dead-letter-exchange", '""'),  # the default exchange, shown, not a blank
        ("dead-letter-routing-key", "jobs"),
    }
    assert entries["plain"].retries == ()
    assert entries["plain"].retry_of is None

    page = build_page(spec, "<svg></svg>", {})
    assert (
        'try 2 after 30s in <a href="#queue-jobs.retry.30s"><code>jobs.retry.30s</code></a>; '
        "try 3 after 5s in" in page
    )
    assert (
        '<dt>retry queue of</dt><dd><a href="#queue-jobs"><code>jobs</code></a>: a failed '
        "message waits 1m here" in page
    )
    assert json.dumps("retry queue of").strip('"') in page
