"""Cyclic garbage collection paused while a spec is read, and what it made kept out of
the young generations after.

Reading a spec allocates hundreds of thousands of small objects that stay
alive (located values, the model): every 700 allocations the cyclic collector
walks the young objects, and each older generation again, only to find that
nothing is garbage.  At 20,000 queues that walk was half of reading the YAML
(5.5 s → 2.9 s with it paused, measured).  Reference counting still frees
everything acyclic.

Re-enabling the collector alone leaves every object of the read in the
youngest generation: the next young collection walked them all, and the next
middle one again (0.29 s of ``rabbitry route`` at 20,000 queues, measured with
``gc.callbacks``).  So they are moved to the oldest generation at once
(``gc.freeze`` then ``gc.unfreeze``: two list splices, no walk), where only a
full collection looks at them, as it would at objects that had lived that
long; a cycle made on the way is freed by that full collection.  A program
that froze objects itself (``gc.freeze`` before forking workers) keeps them
frozen: the move is skipped then.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["paused"]


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside, and what it made old after; as it was after
    otherwise (a nested use changes nothing)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:  # a program's own gc.freeze() (before a fork) stays
            gc.freeze()  # every tracked object to the permanent generation ...
            gc.unfreeze()  # ... and from there to the oldest: only a full collection looks
        gc.enable()
