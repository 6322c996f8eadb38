"""``_gc.paused``: no cyclic collection while a spec is read, and what the read made is
old after it, so that the next young collections do not walk it all."""

from __future__ import annotations

import gc
import weakref

from rabbitry import _gc


class _Node:
    """A tracked object that can be part of a cycle."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def test_what_the_read_made_is_in_no_young_generation_after() -> None:
    with _gc.paused():
        assert not gc.isenabled()
        made = [_Node() for _ in range(2_000)]
    assert gc.isenabled()
    young = {id(o) for o in gc.get_objects(generation=0)}
    young |= {id(o) for o in gc.get_objects(generation=1)}
    assert not any(id(node) in young for node in made)
    assert all(id(node) in {id(o) for o in gc.get_objects(generation=2)} for node in made[:10])


def test_a_cycle_made_in_the_read_is_freed_by_a_full_collection() -> None:
    with _gc.paused():
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
    assert gone() is not None  # a cycle: reference counting cannot free it
    gc.collect()
    assert gone() is None


def test_a_nested_use_changes_nothing_and_a_disabled_collector_stays_off() -> None:
    with _gc.paused():
        with _gc.paused():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with _gc.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_objects_the_program_froze_stay_frozen() -> None:
    """A server that calls ``gc.freeze()`` before forking keeps its objects out of every
    collection: reading a spec must not move them back."""
    kept = [_Node() for _ in range(100)]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with _gc.paused():
            made = [_Node() for _ in range(100)]
        assert gc.get_freeze_count() == frozen
        assert made
    finally:
        gc.unfreeze()
    assert kept
