"""Strings that match a regular expression: candidates for counterexamples.

JSON Schema patterns are ECMA-262 regexes; Python's parser reads the common
subset the same way, which is all this needs: every string produced here is
only a *candidate*, judged afterwards by the real validator.  The parse tree
comes from ``re._parser`` (the parser ``re.compile`` uses).  That module is
CPython's private one (it was ``sre_parse`` before 3.11), so it is looked up
only when a sample is wanted, and when it is not there (moved, renamed, another
interpreter) ``samples`` yields nothing: the places that needed a sample stay
*unknown* instead of ``check`` breaking whole.  A pattern it cannot read gives
no samples either.

Every match runs with a time bound (``BOUND``): the patterns come from the
schemas compared and the strings are synthesised, so a pattern that backtracks
without end (``^(a|a){30,}b$`` on thirty ``a``) must not hang ``check``: it
runs through ``rabbitry._bounded`` (the ``regex`` package, with a timeout).  An
evaluation stopped at the bound is *unknown* (``None``), the pattern is noted
for the ``watch`` around it (one report per pattern, and no second wait), and
``check --against`` names it in an unknown finding.  A pattern too large to
compile is noted the same way, and a sample is capped in length
(``_MAX_SAMPLE``): ``((a{1000}){1000}){1000}`` is one line too.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
import string
from collections.abc import Iterator
from typing import Any

from rabbitry import _bounded

__all__ = ["BOUND", "branches", "matches", "pattern_implies", "samples", "watch"]

#: Seconds one match may take before its outcome is unknown (``rabbitry._bounded``).
BOUND = _bounded.BOUND
#: The most steps (characters and repetitions) one sample may take: a longer one is not drawn.
_MAX_SAMPLE = 10_000

#: The patterns stopped at the bound within the current ``watch`` (``None``: no watch).
_STOPPED: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "rabbitry_regex_stopped", default=None
)


@contextlib.contextmanager
def watch() -> Iterator[set[str]]:
    """The patterns whose evaluation stopped at ``BOUND`` inside the ``with`` block.

    Within it a stopped pattern is not run again: every later match of it is
    unknown at once, so a comparison waits at most ``BOUND`` once per pattern.
    """
    stopped: set[str] = set()
    token = _STOPPED.set(stopped)
    try:
        yield stopped
    finally:
        _STOPPED.reset(token)


#: Characters drawn for "any character" and for negated classes, most readable first.
_POOL = string.ascii_lowercase + string.digits + string.ascii_uppercase + "_-. :/@+!#~é"
_CATEGORIES: dict[str, str] = {
    "CATEGORY_DIGIT": string.digits,
    "CATEGORY_NOT_DIGIT": string.ascii_letters + "_-. ",
    "CATEGORY_SPACE": " \t",
    "CATEGORY_NOT_SPACE": string.ascii_letters + string.digits + "_-.",
    "CATEGORY_WORD": string.ascii_letters + string.digits + "_",
    "CATEGORY_NOT_WORD": "-. :/@+!",
}
#: How many extra repetitions an unbounded quantifier takes at most.
_SPREAD = 4


def matches(pattern: str, text: str) -> bool | None:
    """Whether ``pattern`` is found in ``text`` (``re.search``'s meaning), within ``BOUND``.

    ``None``: unknown — the pattern does not compile, is too large to, or the match
    was stopped at ``BOUND`` (then, inside a ``watch``, the pattern is noted and not
    run again).
    """
    stopped = _STOPPED.get()
    if stopped is not None and pattern in stopped:
        return None
    found = _bounded.search(pattern, text)
    if found is None and stopped is not None and not _bounded.invalid(pattern):
        stopped.add(pattern)
    return found


#: Patterns every string matches (``pattern`` finds a match anywhere in the string).
_UNIVERSAL = frozenset({"", ".*", ".*?", "^", "(?:)"})


def branches(pattern: str) -> list[str]:
    """The top-level alternatives of ``pattern`` (``a|b(c|d)`` → ``a``, ``b(c|d)``)."""
    found: list[str] = []
    depth, start, i, in_class = 0, 0, 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            found.append(pattern[start:i])
            start = i + 1
        i += 1
    found.append(pattern[start:])
    return found


def pattern_implies(pattern_a: str | None, pattern_b: str) -> bool:
    """Proven: every string ``pattern_a`` finds a match in, ``pattern_b`` does too.

    Only by form: the same pattern, a pattern every string matches, or each
    top-level alternative of A also one of B's (``a`` → ``a|b``).
    """
    if pattern_b in _UNIVERSAL or pattern_a == pattern_b:
        return True
    if pattern_a is None:
        return False
    return set(branches(pattern_a)) <= set(branches(pattern_b))


def samples(pattern: str, count: int = 12, seed: int = 0) -> Iterator[str]:
    """Up to ``count`` distinct strings matching ``pattern`` (shortest repetitions first).

    None when CPython's parser is not there (see the module's docstring).
    """
    sre = _bounded.sre_parser()
    if sre is None:
        return
    parser, maxrepeat = sre
    try:
        tree = parser.parse(pattern)
    except Exception:
        return
    seen: set[str] = set()
    rng = random.Random(seed)
    for attempt in range(count * 3):
        mode = ("min", "max", "random")[attempt % 3] if attempt < 3 else "random"
        try:
            text = "".join(_generate(tree, rng, mode, {}, maxrepeat, budget=[_MAX_SAMPLE]))
        except _Impossible:
            continue
        except (RecursionError, TypeError, ValueError, IndexError):
            return  # deeper than sensible, or a tree shaped unlike this CPython's: no samples
        if text not in seen and matches(pattern, text):
            seen.add(text)
            yield text
            if len(seen) >= count:
                return


class _Impossible(Exception):
    """A construct this sampler does not produce (a back-reference to an unset group), or a
    sample longer than ``_MAX_SAMPLE``."""


def _generate(
    tree: Any,
    rng: random.Random,
    mode: str,
    groups: dict[int, str],
    maxrepeat: int,
    *,
    budget: list[int],
) -> Iterator[str]:
    """The pieces of one sample; ``budget`` holds the steps still allowed (a character or a
    repetition each, shared by the whole sample)."""
    for op, arg in tree:
        name = str(op)
        if name in ("LITERAL", "NOT_LITERAL", "ANY", "IN", "GROUPREF"):
            budget[0] -= len(groups.get(arg, "")) if name == "GROUPREF" else 1
            if budget[0] < 0:
                raise _Impossible  # longer than any sample is allowed to be
        if name == "LITERAL":
            yield chr(arg)
        elif name == "NOT_LITERAL":
            yield next(c for c in _POOL if ord(c) != arg)
        elif name == "ANY":
            yield _POOL[0] if mode == "min" else rng.choice(_POOL[:36])
        elif name == "IN":
            yield _in_class(arg, rng, mode)
        elif name == "BRANCH":
            branches = arg[1]
            branch = branches[0] if mode == "min" else rng.choice(branches)
            yield from _generate(branch, rng, mode, groups, maxrepeat, budget=budget)
        elif name == "SUBPATTERN":
            group, _, _, sub = arg
            text = "".join(_generate(sub, rng, mode, groups, maxrepeat, budget=budget))
            if group is not None:
                groups[group] = text
            yield text
        elif name == "ATOMIC_GROUP":
            yield from _generate(arg, rng, mode, groups, maxrepeat, budget=budget)
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = arg
            high = low + _SPREAD if high == maxrepeat else min(high, low + _SPREAD)
            times = low if mode == "min" else high if mode == "max" else rng.randint(low, high)
            for _ in range(times):
                budget[0] -= 1  # a repeat of nothing costs too: (?:){4000000000}
                if budget[0] < 0:
                    raise _Impossible
                yield from _generate(sub, rng, mode, groups, maxrepeat, budget=budget)
        elif name == "GROUPREF":
            if arg not in groups:
                raise _Impossible
            yield groups[arg]
        elif name in ("AT", "ASSERT", "ASSERT_NOT", "GROUPREF_EXISTS"):
            continue  # anchors and lookarounds produce nothing; the final check filters
        else:
            raise _Impossible


def _in_class(items: Any, rng: random.Random, mode: str) -> str:
    negated = bool(items) and str(items[0][0]) == "NEGATE"
    chars: list[str] = []
    for op, arg in items[1:] if negated else items:
        name = str(op)
        if name == "LITERAL":
            chars.append(chr(arg))
        elif name == "RANGE":
            low, high = arg
            chars.extend(chr(c) for c in range(low, min(high, low + 200) + 1))
        elif name == "CATEGORY":
            chars.extend(_CATEGORIES.get(str(arg), ""))
    if negated:
        excluded = set(chars)
        chars = [c for c in _POOL if c not in excluded]
    if not chars:
        raise _Impossible
    return chars[0] if mode == "min" else chars[-1] if mode == "max" else rng.choice(chars)
