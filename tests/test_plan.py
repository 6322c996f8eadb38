"""The plan: a pure diff between the spec's topology and a vhost's, no broker needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rabbitry.broker.plan import Action, Change, Kind, Plan, diff
from rabbitry.broker.report import plan_lines
from rabbitry.broker.state import (
    BindingState,
    ExchangeState,
    PolicyState,
    QueueState,
    Topology,
    desired,
    normalise_arguments,
)
from rabbitry.spec.model import Binding, Exchange, ExchangeType, Queue, QueueType, Spec

NAMES = st.sampled_from(["a", "b", "c", "d", "e"])


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    exchange_names = draw(st.sets(NAMES, max_size=4))
    queue_names = draw(st.sets(NAMES.map(lambda n: f"q.{n}"), max_size=4))
    exchanges = {
        name: ExchangeState(
            name,
            draw(st.sampled_from(["direct", "fanout", "topic", "headers"])),
            draw(st.booleans()),
            arguments=normalise_arguments(draw(st.sampled_from([{}, {"alternate-exchange": "x"}]))),
        )
        for name in exchange_names
    }
    queues = {
        name: QueueState(
            name,
            draw(st.sampled_from(["classic", "quorum"])),
            arguments=normalise_arguments(
                draw(st.sampled_from([{}, {"x-message-ttl": 1000}, {"x-max-length": 5}]))
            ),
            messages=draw(st.integers(0, 3)),
            consumers=draw(st.integers(0, 1)),
        )
        for name in queue_names
    }
    bindings: set[BindingState] = set()
    if exchanges and queues:
        for _ in range(draw(st.integers(0, 6))):
            source = draw(st.sampled_from(sorted(exchanges)))
            to_queue = draw(st.booleans())
            pool = sorted(queues) if to_queue else sorted(exchanges)
            bindings.add(
                BindingState(
                    source,
                    "queue" if to_queue else "exchange",
                    draw(st.sampled_from(pool)),
                    draw(st.sampled_from(["", "k", "k.#"])),
                )
            )
    return Topology(exchanges, queues, frozenset(bindings))


def simulate(plan: Plan, have: Topology) -> Topology:
    """What a broker would hold after carrying out ``plan`` on ``have``."""
    exchanges = dict(have.exchanges)
    queues = dict(have.queues)
    bindings = set(have.bindings)
    for change in plan.changes:
        if change.kind is Kind.EXCHANGE:
            if change.action is not Action.CREATE:
                exchanges.pop(change.name)
                bindings = {
                    b
                    for b in bindings
                    if b.source != change.name
                    and not (b.destination_type == "exchange" and b.destination == change.name)
                }
            if change.action is not Action.DELETE:
                assert change.exchange is not None
                exchanges[change.name] = change.exchange
        elif change.kind is Kind.QUEUE:
            if change.action is not Action.CREATE:
                queues.pop(change.name)
                bindings = {
                    b
                    for b in bindings
                    if not (b.destination_type == "queue" and b.destination == change.name)
                }
            if change.action is not Action.DELETE:
                assert change.queue is not None
                queues[change.name] = change.queue
        else:
            assert change.binding is not None
            if change.action is Action.DELETE:
                bindings.discard(change.binding)
            else:
                bindings.add(change.binding)
    return Topology(exchanges, queues, frozenset(bindings))


@settings(max_examples=300)
@given(topologies())
def test_a_topology_diffed_against_itself_needs_nothing(topology: Topology) -> None:
    assert diff(topology, topology, prune=True).empty


@settings(max_examples=300)
@given(topologies(), topologies())
def test_carrying_out_a_pruning_plan_gives_exactly_the_wanted_topology(
    want: Topology, have: Topology
) -> None:
    plan = diff(want, have, prune=True)
    after = simulate(plan, have)
    assert after.exchanges == want.exchanges
    assert after.queues == want.queues
    assert after.bindings == want.bindings
    assert diff(want, after, prune=True).empty


@settings(max_examples=300)
@given(topologies(), topologies())
def test_without_prune_nothing_is_deleted_and_what_is_wanted_exists(
    want: Topology, have: Topology
) -> None:
    plan = diff(want, have)
    assert all(c.action is not Action.DELETE for c in plan.changes)
    after = simulate(plan, have)
    assert all(after.exchanges[name] == e for name, e in want.exchanges.items())
    assert all(after.queues[name] == q for name, q in want.queues.items())
    assert want.bindings <= after.bindings


@settings(max_examples=200)
@given(topologies(), topologies())
def test_changes_come_in_apply_order(want: Topology, have: Topology) -> None:
    def stage(change: Change) -> int:
        if change.action is Action.DELETE:
            return {Kind.BINDING: 3, Kind.QUEUE: 4, Kind.EXCHANGE: 5}[change.kind]
        return {Kind.EXCHANGE: 0, Kind.QUEUE: 1, Kind.BINDING: 2}[change.kind]

    found = [stage(c) for c in diff(want, have, prune=True).changes]
    assert found == sorted(found)


def queue(name: str = "q", **fields: Any) -> QueueState:
    return QueueState(name, **fields)


def test_a_changed_argument_is_a_replace_with_the_field_old_and_new_and_the_counts() -> None:
    have = Topology(
        queues={"q": queue(arguments=normalise_arguments({"x-message-ttl": 1000}), messages=3)}
    )
    want = Topology(queues={"q": queue(arguments=normalise_arguments({"x-message-ttl": 2000}))})
    (change,) = diff(want, have).changes
    assert (change.action, change.kind, change.name) == (Action.REPLACE, Kind.QUEUE, "q")
    assert [f.describe() for f in change.fields] == ["arguments.x-message-ttl: 1000 → 2000"]
    assert change.messages == 3
    assert change.loses_data
    assert "holds 3 messages" in change.describe()


def test_an_empty_queue_without_consumers_can_be_replaced_without_losing_data() -> None:
    have = Topology(queues={"q": queue(durable=False, messages=0, consumers=0)})
    want = Topology(queues={"q": queue()})
    (change,) = diff(want, have).changes
    assert change.action is Action.REPLACE
    assert [f.describe() for f in change.fields] == ["durable: False → True"]
    assert not change.loses_data


def test_unknown_counts_count_as_data() -> None:
    have = Topology(queues={"q": queue(durable=False)})  # counts None: read without the API
    (change,) = diff(Topology(queues={"q": queue()}), have).changes
    assert change.loses_data


def test_a_replaced_queue_gets_its_bindings_back_in_the_same_plan() -> None:
    binding = BindingState("x", "queue", "q", "k")
    exchange = ExchangeState("x", "topic")
    have = Topology({"x": exchange}, {"q": queue(type="classic")}, frozenset({binding}))
    want = Topology({"x": exchange}, {"q": queue(type="quorum")}, frozenset({binding}))
    changes = diff(want, have).changes
    assert [(c.action, c.kind) for c in changes] == [
        (Action.REPLACE, Kind.QUEUE),
        (Action.CREATE, Kind.BINDING),
    ]
    assert changes[1].binding == binding


def test_without_prune_extra_objects_are_listed_not_deleted() -> None:
    have = Topology(
        {"old": ExchangeState("old", "fanout")},
        {"stale": queue("stale", messages=0, consumers=0)},
    )
    plan = diff(Topology(), have)
    assert plan.empty
    assert plan.unmanaged == ("exchange old", "queue stale")


def test_prune_spares_reserved_exchanges_and_run_time_objects() -> None:
    spec = Spec(
        path=Path("t.yaml"),
        exchanges={"jobs.status": Exchange("jobs.status", ExchangeType.TOPIC)},
        queues={"job-status": Queue("job-status", QueueType.CLASSIC, exclusive=True)},
        bindings=(Binding("jobs.status", "job-status", key="{job_id}"),),
    )
    server_named = queue("amq.gen-abc", durable=False, exclusive=True)
    shared = queue("watchers", messages=0, consumers=0)
    have = Topology(
        {
            "": ExchangeState("", "direct"),
            "amq.topic": ExchangeState("amq.topic", "topic"),
            "jobs.status": ExchangeState("jobs.status", "topic"),
        },
        {"amq.gen-abc": server_named, "watchers": shared},
        frozenset(
            {
                BindingState("", "queue", "watchers", "watchers"),
                BindingState("jobs.status", "queue", "amq.gen-abc", "42"),
                BindingState("jobs.status", "queue", "watchers", "7c1d"),
                BindingState("jobs.status", "queue", "watchers", "two.words"),
            }
        ),
    )
    plan = diff(desired(spec), have, spec, prune=True)
    deleted = {(c.kind, c.name) for c in plan.changes if c.action is Action.DELETE}
    # "two.words" cannot come from the one-word {job_id} binding: it is not run-time.
    assert deleted == {
        (Kind.BINDING, "jobs.status → queue watchers key 'two.words'"),
        (Kind.QUEUE, "watchers"),
    }


def test_desired_leaves_run_time_queues_and_param_bindings_to_the_runtime() -> None:
    spec = Spec(
        path=Path("t.yaml"),
        exchanges={"x": Exchange("x", ExchangeType.HEADERS)},
        queues={
            "durable": Queue("durable", QueueType.QUORUM, arguments={"x-delivery-limit": 5}),
            "mine": Queue("mine", exclusive=True, durable=False),
        },
        bindings=(
            Binding("x", "durable", headers={"format": "pdf"}, match=None),
            Binding("x", "mine", key="{id}"),
        ),
    )
    topology = desired(spec)
    assert set(topology.queues) == {"durable"}
    assert topology.queues["durable"].arguments == (("x-delivery-limit", 5),)
    (binding,) = topology.bindings
    assert binding.destination == "durable"
    assert dict(binding.arguments) == {"format": "pdf"}


def test_normalised_arguments_ignore_integer_spelling_and_the_queue_type_argument() -> None:
    assert normalise_arguments({"x-message-ttl": 1000.0, "x-queue-type": "quorum"}) == (
        ("x-message-ttl", 1000),
    )
    assert normalise_arguments({"b": 1, "a": {"z": 1, "y": [2.0]}}) == (
        ("a", (("y", (2,)), ("z", 1))),
        ("b", 1),
    )


def test_a_boolean_argument_never_equals_a_number() -> None:
    have = Topology(queues={"q": queue(arguments=normalise_arguments({"x-sac": 1}), messages=0)})
    want = Topology(queues={"q": queue(arguments=normalise_arguments({"x-sac": True}))})
    (change,) = diff(want, have).changes
    assert [f.describe() for f in change.fields] == ["arguments.x-sac: 1 → True"]
    assert QueueState("q", arguments=normalise_arguments({"x-sac": True})).declare_arguments() == {
        "x-sac": True
    }


def test_bindings_whose_argument_values_differ_in_type_still_sort() -> None:
    one = BindingState("h", "queue", "q", "", normalise_arguments({"v": 1}))
    other = BindingState("h", "queue", "q", "", normalise_arguments({"v": "1"}))
    plan = diff(Topology(bindings=frozenset({one, other})), Topology(), prune=True)
    assert {c.binding for c in plan.changes} == {one, other}


def test_a_queue_that_differs_only_in_exclusivity_names_that_field() -> None:
    have = Topology(queues={"q": queue(exclusive=True, messages=0, consumers=1)})
    (change,) = diff(Topology(queues={"q": queue()}), have).changes
    assert [f.describe() for f in change.fields] == ["exclusive: True → False"]


def test_replacing_an_exchange_that_carries_foreign_bindings_counts_as_data_loss() -> None:
    runtime = BindingState("x", "queue", "amq.gen-1", "42")  # a consumer's run-time binding
    owned = BindingState("x", "queue", "q", "k")
    have = Topology(
        {"x": ExchangeState("x", "direct")},
        {"q": queue(messages=0, consumers=0)},
        frozenset({runtime, owned}),
    )
    want = Topology(
        {"x": ExchangeState("x", "topic")},
        {"q": queue(messages=0, consumers=0)},
        frozenset({owned}),
    )
    changes = diff(want, have).changes
    replace = changes[0]
    assert (replace.action, replace.kind, replace.lost_bindings) == (
        Action.REPLACE,
        Kind.EXCHANGE,
        1,
    )
    assert replace.loses_data
    assert replace.before == ExchangeState("x", "direct")
    assert "drops 1 binding" in replace.describe()
    # the spec's own binding is re-declared after the replace
    assert [c.binding for c in changes[1:]] == [owned]


def test_replacing_an_exchange_with_only_owned_bindings_loses_nothing() -> None:
    owned = BindingState("x", "queue", "q", "k")
    have = Topology({"x": ExchangeState("x", "direct")}, {}, frozenset({owned}))
    want = Topology({"x": ExchangeState("x", "topic")}, {}, frozenset({owned}))
    (replace, rebind) = diff(want, have).changes
    assert not replace.loses_data
    assert rebind.binding == owned


# -- policies -------------------------------------------------------------------------

POLICY_NAMES = st.sampled_from(["p1", "p2", "p3", "p4"])


@st.composite
def policy_sets(draw: st.DrawFn, operator: bool = False) -> dict[str, PolicyState]:
    return {
        name: PolicyState(
            name,
            draw(st.sampled_from(["^q\\.a$", "^q\\.", ".*"])),
            draw(st.sampled_from(["queues", "all"])),
            draw(st.integers(0, 2)),
            normalise_arguments(
                draw(st.sampled_from([{"max-length": 5}, {"max-length": 6}, {"message-ttl": 10}]))
            ),
            operator,
        )
        for name in draw(st.sets(POLICY_NAMES, max_size=3))
    }


def carried_out(have: dict[str, PolicyState], plan: Plan, kind: Kind) -> dict[str, PolicyState]:
    """``have`` after the plan's changes of ``kind``, as the management API would make it."""
    after = dict(have)
    for change in plan.changes:
        if change.kind is not kind:
            continue
        if change.action is Action.DELETE:
            del after[change.name]
        else:
            assert change.action in (Action.CREATE, Action.UPDATE)
            assert change.policy is not None
            assert (change.name in have) == (change.action is Action.UPDATE)
            after[change.name] = change.policy
    return after


@settings(max_examples=200)
@given(
    want_user=policy_sets(),
    have_user=policy_sets(),
    want_operator=policy_sets(operator=True),
    have_operator=policy_sets(operator=True),
    prune=st.booleans(),
)
def test_policy_changes_converge_in_place_and_prune_only_foreign_ones(
    want_user: dict[str, PolicyState],
    have_user: dict[str, PolicyState],
    want_operator: dict[str, PolicyState],
    have_operator: dict[str, PolicyState],
    prune: bool,
) -> None:
    want = Topology(policies=want_user, operator_policies=want_operator)
    have = Topology(policies=have_user, operator_policies=have_operator)

    plan = diff(want, have, prune=prune)

    assert not plan.data_loss
    assert all(c.action is not Action.REPLACE for c in plan.changes)
    for kind, wanted, present in (
        (Kind.POLICY, want_user, have_user),
        (Kind.OPERATOR_POLICY, want_operator, have_operator),
    ):
        after = carried_out(present, plan, kind)
        foreign = {n: p for n, p in present.items() if n not in wanted}
        # A spec with no operator policies does not own the operator's: never pruned.
        owned = kind is Kind.POLICY or bool(wanted)
        assert after == ({**wanted} if prune and owned else {**foreign, **wanted})
        unmanaged = {u for u in plan.unmanaged if u.startswith(f"{kind.value} ")}
        listed = owned and not prune
        assert unmanaged == ({f"{kind.value} {n}" for n in foreign} if listed else set())
    again = Topology(
        policies=carried_out(have_user, plan, Kind.POLICY),
        operator_policies=carried_out(have_operator, plan, Kind.OPERATOR_POLICY),
    )
    assert diff(want, again, prune=prune).empty


def test_policies_not_seen_are_never_changed_nor_pruned() -> None:
    wanted = {"p": PolicyState("p", ".*", definition=normalise_arguments({"max-length": 1}))}
    unseen = Topology()  # policies None: read over AMQP
    assert diff(Topology(policies=wanted, operator_policies={}), unseen, prune=True).empty
    seen_nothing = Topology(policies={}, operator_policies={})
    assert diff(Topology(policies={}, operator_policies={}), seen_nothing, prune=True).empty


def test_settings_take_the_policy_the_broker_names_when_priorities_tie() -> None:
    def ttl(name: str, value: int) -> PolicyState:
        return PolicyState(name, "^q$", definition=normalise_arguments({"message-ttl": value}))

    tied = {"a": ttl("a", 100), "b": ttl("b", 200)}
    want = Topology(queues={"q": queue()}, policies=tied, operator_policies={})
    for named, value in (("a", 100), ("b", 200)):
        have = Topology(queues={"q": queue(policy=named)}, policies=tied, operator_policies={})
        settings = diff(want, have).settings["q"]
        assert settings["message-ttl"].value == value
        assert settings["message-ttl"].source == f"policy:{named}"


def test_settings_follow_the_precedence_table_and_leave_unknown_queue_types_alone() -> None:
    arguments = normalise_arguments({"x-max-length": 10, "x-dead-letter-exchange": "mine"})
    cap = PolicyState(
        "cap",
        ".*",
        definition=normalise_arguments({"max-length": 3, "dead-letter-exchange": "theirs"}),
    )
    want = Topology(
        queues={"q": queue(arguments=arguments), "s": queue("s", type="future-type")},
        policies={"cap": cap},
        operator_policies={},
    )
    settings = diff(want, Topology()).settings
    assert settings["q"]["max-length"].source == "policy:cap"
    assert settings["q"]["dead-letter-exchange"].source == "argument"
    assert settings["s"] == {}


def test_a_policy_change_reads_as_an_update_with_its_fields() -> None:
    old = PolicyState("p", "^q$", priority=1, definition=normalise_arguments({"max-length": 5}))
    new = PolicyState("p", "^q$", priority=2, definition=normalise_arguments({"max-length": 6}))
    want = Topology(policies={"p": new}, operator_policies={})
    have = Topology(policies={"p": old}, operator_policies={})
    (change,) = diff(want, have).changes
    assert change.describe() == "update policy p"
    assert [f.describe() for f in change.fields] == [
        "priority: 1 → 2",
        "definition.max-length: 5 → 6",
    ]
    assert change.before == old
    assert not change.loses_data
    assert change.as_json()["policy"] == {
        "pattern": "^q$",
        "apply-to": "queues",
        "priority": 2,
        "definition": {"max-length": 6},
    }


def test_counts_in_plan_text_take_the_singular_for_one() -> None:
    have = Topology(queues={"q": queue(durable=False, messages=1, consumers=1)})
    (change,) = diff(Topology(queues={"q": queue()}), have).changes
    assert "(holds 1 message, 1 consumer)" in change.describe()
    unknown = Topology(queues={"q": queue(durable=False)})
    (change,) = diff(Topology(queues={"q": queue()}), unknown).changes
    assert "(holds ? messages, ? consumers)" in change.describe()


def test_a_replace_shows_the_bindings_it_remakes_as_rebinds_not_as_new() -> None:
    kept = BindingState("x", "queue", "q", "k")
    new = BindingState("x", "queue", "q", "new")
    exchange = ExchangeState("x", "topic")
    have = Topology({"x": exchange}, {"q": queue(type="classic")}, frozenset({kept}))
    want = Topology({"x": exchange}, {"q": queue(type="quorum")}, frozenset({kept, new}))
    plan = diff(want, have)
    lines = plan_lines(plan)
    assert f"  ~ rebind {kept.describe()} (re-made with the replace of queue q)" in lines
    assert f"  + create binding {new.describe()}" in lines
    assert not any(line.startswith("  + ") and kept.describe() in line for line in lines)
    rebind = next(c for c in plan.changes if c.binding == kept)
    assert rebind.as_json()["remade_with"] == "queue q"
