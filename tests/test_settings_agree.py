"""``tail`` and ``plan`` read a queue's settings from one place: ``broker.settings``.

Both are fed the same management API rows (a queue row and its vhost's user
and operator policies), offline: ``tail`` through ``queue_facts``, ``plan``
through ``read_vhost``'s row parsers and ``diff``.  Where no tie of equal
priorities is left open, they must give the same delivery limit and
dead-letter exchange, value and source.  Where one is left open, tail's
cautious pick never has a higher limit than plan's.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rabbitry.broker.management import policy_from_row, queue_from_row
from rabbitry.broker.plan import diff
from rabbitry.broker.settings import effective_settings, tied_policies
from rabbitry.broker.state import QueueState, Topology
from rabbitry.messaging._tail_cost import cautious_settings, queue_facts
from rabbitry.spec import Policy, PolicyTarget
from rabbitry.spec.policies import Setting

QUEUE_NAMES = ["q", "orders.q", "q.dlq"]
#: Unanchored searches, as the broker runs them; ``[`` is no pattern at all (matches nothing).
PATTERNS = st.sampled_from(["", "^q", "q$", "^orders", r"\.q$", ".*", "dlq", "x", "["])
APPLY_TO = st.sampled_from(
    ["queues", "all", "exchanges", "classic_queues", "quorum_queues", "streams"]
)
LIMITS = st.integers(min_value=0, max_value=6)
EXCHANGES = st.sampled_from(["", "dlx", "other"])


def _definition(operator: bool) -> st.SearchStrategy[dict[str, Any]]:
    keys: dict[str, st.SearchStrategy[Any]] = {
        "delivery-limit": LIMITS,
        "message-ttl": st.integers(min_value=0, max_value=1000),
    }
    if not operator:  # operator policies may set only numeric caps
        keys["dead-letter-exchange"] = EXCHANGES
    return st.fixed_dictionaries({}, optional=keys)


def _policy_rows(operator: bool) -> st.SearchStrategy[list[dict[str, Any]]]:
    row = st.fixed_dictionaries(
        {
            "name": st.sampled_from(["a", "b", "c", "d"]),
            "pattern": PATTERNS,
            "apply-to": APPLY_TO,
            "priority": st.integers(min_value=0, max_value=2),
            "definition": _definition(operator),
        }
    )
    return st.lists(row, max_size=4, unique_by=lambda r: r["name"])


QUEUE_ROWS = st.fixed_dictionaries(
    {
        "name": st.sampled_from(QUEUE_NAMES),
        "type": st.sampled_from(["classic", "quorum", "stream"]),
        "arguments": st.fixed_dictionaries(
            {},
            optional={
                "x-delivery-limit": LIMITS,
                "x-dead-letter-exchange": EXCHANGES,
                "x-message-ttl": st.integers(min_value=0, max_value=1000),
            },
        ),
        "policy": st.sampled_from(["", "a", "b", "c", "d"]),
    }
)


def plans_settings(
    queue: dict[str, Any], users: list[dict[str, Any]], operators: list[dict[str, Any]]
) -> dict[str, Setting]:
    """The queue's settings as ``plan`` gives them for a vhost that has these rows."""
    have = Topology(
        queues={queue["name"]: queue_from_row(queue)},
        policies={r["name"]: policy_from_row(r, False) for r in users},
        operator_policies={r["name"]: policy_from_row(r, True) for r in operators},
    )
    return dict(diff(have, have).settings[queue["name"]])


@settings(max_examples=600, deadline=None)
@given(queue=QUEUE_ROWS, users=_policy_rows(False), operators=_policy_rows(True))
def test_tail_and_plan_read_the_same_limit_and_dead_letter_exchange(
    queue: dict[str, Any], users: list[dict[str, Any]], operators: list[dict[str, Any]]
) -> None:
    facts = queue_facts(
        queue["name"], "/", "quorum", queues=[queue], policies=users, operator_policies=operators
    )
    assert facts is not None
    plan = plans_settings(queue, users, operators)
    if not facts.tied:
        assert facts.delivery_limit == plan.get("delivery-limit")
        assert facts.dead_letter_exchange == plan.get("dead-letter-exchange")
    else:  # the broker's pick is not known: tail is never less careful than plan
        assert _limit(facts.delivery_limit) <= _limit(plan.get("delivery-limit"))


def _limit(setting: Setting | None) -> float:
    """A delivery limit to compare; none is no limit at all."""
    return float("inf") if setting is None else float(setting.value)  # type: ignore[arg-type]


def _tie(*limits: int) -> dict[str, Policy]:
    return {
        name: Policy(name, "^q$", PolicyTarget.QUEUES, 1, {"delivery-limit": limit})
        for name, limit in zip("abc", limits, strict=False)
    }


def test_a_tie_named_on_the_row_is_the_brokers_pick_for_both() -> None:
    queue = QueueState("q", "quorum", policy="b")
    users = _tie(2, 5)
    assert [p.name for p in tied_policies(queue, users.values())] == ["a", "b"]
    picked, tied = cautious_settings(queue, users, {})
    assert (picked["delivery-limit"], tied) == (Setting(5, "policy:b"), ())
    assert picked == effective_settings(queue, users, {}, named="b")


def test_an_open_tie_takes_the_lowest_limit_and_says_whom_it_weighed() -> None:
    queue = QueueState("q", "quorum")
    picked, tied = cautious_settings(queue, _tie(5, 2, 4), _tie(3))
    assert picked["delivery-limit"] == Setting(2, "policy:b")
    assert tied == ("policy:a", "policy:b", "policy:c")
    # plan, told nothing, takes the first by name: the higher limit
    assert effective_settings(queue, _tie(5, 2, 4), _tie(3))["delivery-limit"] == Setting(
        3, "operator_policy:a"
    )
