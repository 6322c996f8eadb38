"""How deep a decoded value nests, found without recursion (the value may be hostile)."""

from __future__ import annotations

from typing import Any

__all__ = ["nests_deeper"]


def nests_deeper(value: Any, limit: int) -> bool:
    """Whether ``value`` (dicts and lists, as JSON or an AMQP table decodes) nests past
    ``limit`` levels; a scalar is level 0.  Iterative, and it stops at the first branch
    that is too deep, so a hostile value costs at most what it takes to find that."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        depth += 1
        if depth > limit:
            return True
        stack.extend((child, depth) for child in item)
    return False
