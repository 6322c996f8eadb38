"""``route`` reads the spec with the checks its answer needs: those of policies on the
exchanges alone (``_load.EXCHANGES_ONLY``), every other check as ``check`` runs it.

A queue's policy says what happens in the queue, never where a message goes: two
queue policies tied are an error for ``check`` and no reason to refuse a lookup;
two exchange policies tied (which alternate exchange?) refuse it.
"""

from __future__ import annotations

from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from rabbitry.check import Depth, check, load_spec
from rabbitry.errors import SpecError
from rabbitry.spec import Code
from rabbitry.spec.model import Location
from specs import codes, run_cli, write_spec

SPEC = """
version: 1
exchanges:
  x: {type: topic}
  spare: {type: fanout}
  other: {type: fanout}
queues:
  q: {}
  spill: {}
  spill2: {}
bindings:
  - {from: x, queue: q, key: "a.*"}
  - {from: spare, queue: spill}
  - {from: other, queue: spill2}
policies:
%s
"""

QUEUE_TIE = """
  ttl-a: {pattern: "^q$", priority: 1, message_ttl: 1000}
  ttl-b: {pattern: "^q", priority: 1, message_ttl: 2000}
"""

EXCHANGE_TIE = """
  ae-a: {pattern: "^x$", apply_to: exchanges, priority: 1, alternate_exchange: spare}
  ae-b: {pattern: "^x", apply_to: exchanges, priority: 1, alternate_exchange: other}
"""


def test_two_queue_policies_tied_stop_check_not_route(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, SPEC % QUEUE_TIE)
    assert Code.POLICY_TIE in codes(check(spec).errors)
    assert load_spec(spec, Depth.TOPOLOGY).queues.keys() >= {"q"}
    code, out, err = run_cli(["route", "-f", str(spec), "x", "a.b"], capsys)
    assert (code, out.split()) == (0, ["q"]), err


def test_two_exchange_policies_tied_stop_route_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Which alternate exchange an unroutable message takes is the broker's arbitrary pick."""
    spec = write_spec(tmp_path, SPEC % EXCHANGE_TIE)
    with pytest.raises(SpecError) as caught:
        load_spec(spec, Depth.TOPOLOGY)
    assert Code.POLICY_TIE in codes(caught.value.diagnostics)
    code, _, err = run_cli(["route", "-f", str(spec), "x", "b.b"], capsys)
    assert code == 1
    assert "policy-tie" in err


_PATTERNS = ["^q", "^q$", "^x", "^x$", ".*", "^s", "pill", "^q", "^x"]
_KINDS = ["queues", "exchanges", "all"]


@st.composite
def policies(draw: st.DrawFn) -> str:
    lines = []
    for i in range(draw(st.integers(1, 4))):
        pattern = draw(st.sampled_from(_PATTERNS))
        kind = draw(st.sampled_from(_KINDS))
        priority = draw(st.integers(0, 1))
        keys = [f'pattern: "{pattern}"', f"apply_to: {kind}", f"priority: {priority}"]
        alternate = kind == "exchanges" or (kind == "all" and draw(st.booleans()))
        if alternate:
            keys.append(f"alternate_exchange: {draw(st.sampled_from(['spare', 'other']))}")
        if kind == "queues" or (kind == "all" and not alternate):
            keys.append(f"message_ttl: {draw(st.integers(1, 9)) * 1000}")
        lines.append(f"  p{i}: {{{', '.join(keys)}}}")
    return "\n".join(lines)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(policies())
def test_route_finds_every_error_check_finds_but_those_of_queue_policies(
    tmp_path: Path, text: str
) -> None:
    """Route's errors are those of every check less some of the policies' only; with every
    policy on exchanges alone, they are the same."""
    spec = write_spec(tmp_path, SPEC % text)
    # a finding is compared by its code and place: a tie on exchanges names only them
    full = {(d.code, d.location) for d in check(spec, Depth.CONTRACT, advisory=False).errors}
    routed: set[tuple[Code, Location]] = set()
    try:
        load_spec(spec, Depth.TOPOLOGY)
    except SpecError as exc:
        routed = {(d.code, d.location) for d in exc.diagnostics}
    assert routed <= full
    assert {code for code, _ in full - routed} <= {Code.POLICY_TIE, Code.POLICY_PATTERN}
    on_exchanges = text.replace("apply_to: queues", "apply_to: exchanges").replace(
        "apply_to: all", "apply_to: exchanges"
    )
    if on_exchanges == text:
        assert routed == full
