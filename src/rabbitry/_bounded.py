"""Regular expressions run with a bound: a pattern rabbitry did not write never hangs it.

Patterns reach rabbitry from schemas (``pattern``, ``patternProperties``), from
policies (the spec's and those a broker already holds) and are run on names and
synthesised strings.  Python's ``re`` backtracks without limit and cannot be
interrupted (``^(a|a){30,}b$`` on thirty ``a`` runs for hours), so every such
match goes through here: the ``regex`` package, which reads ``re``'s syntax the
same way and takes a ``timeout``.  Its compiler unrolls counted repeats
(``((a{1000}){1000}){1000}`` never finishes compiling), so a pattern is sized on
its parse tree first and a larger one is not compiled at all.

The outcome of a match is ``True``, ``False`` or ``None``: unknown (stopped at
``BOUND`` now or on an earlier string, too large, or not a pattern).  Each caller
says what unknown means for it: an unknown finding, a skipped example, a policy
the broker (whose PCRE gives up at its match limit too) would not apply.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, Mapping
from typing import Any

import regex

__all__ = [
    "BOUND",
    "MAX_COMPILED",
    "Pattern",
    "Unknown",
    "compiled",
    "invalid",
    "jsonschema_validator",
    "search",
    "sre_parser",
]

#: Seconds one match may take before its outcome is unknown.  A sensible pattern on a
#: name or a synthesised string takes microseconds.
BOUND = 0.25
#: The largest pattern compiled, counted with its repeats unrolled (``(a{1000}){100}``
#: compiles in ~0.3 s): a larger one is unknown without being compiled.
MAX_COMPILED = 50_000

Pattern = regex.Pattern


@functools.lru_cache(maxsize=1024)
def compiled(pattern: str) -> regex.Pattern[str] | None:
    """``pattern`` compiled by ``regex``, or ``None``: not a pattern, or too large."""
    if not _small(pattern):
        return None
    try:
        return regex.compile(pattern)
    except (regex.error, RecursionError, OverflowError, ValueError, TypeError):
        return None


def invalid(pattern: str) -> bool:
    """Whether ``pattern`` is not a pattern at all (as opposed to one too large to compile,
    whose outcome is unknown like a match stopped at ``BOUND``)."""
    return _small(pattern) and compiled(pattern) is None


#: Patterns that were stopped at ``BOUND`` once: every later match of one is unknown at
#: once, so a pattern run on many names (a policy, a schema's strings) waits once, not per
#: name.  Bounded, like any cache: past its size the oldest half is forgotten.
_STOPPED: dict[str, None] = {}
_MAX_STOPPED = 1024


def search(pattern: str | regex.Pattern[str], text: str) -> bool | None:
    """Whether ``pattern`` is found in ``text`` (``re.search``'s meaning); ``None``: unknown."""
    source = pattern if isinstance(pattern, str) else pattern.pattern
    if source in _STOPPED:
        return None
    found = compiled(pattern) if isinstance(pattern, str) else pattern
    if found is None:
        return None
    try:
        return found.search(text, timeout=BOUND) is not None
    except (TimeoutError, RecursionError, MemoryError):
        if len(_STOPPED) >= _MAX_STOPPED:
            for old in list(_STOPPED)[: _MAX_STOPPED // 2]:
                del _STOPPED[old]
        _STOPPED[source] = None
        return None


class Unknown(Exception):
    """A pattern stopped at ``BOUND`` (or not runnable) where a validator needed its answer."""


@functools.cache
def jsonschema_validator() -> Any:
    """python-jsonschema's 2020-12 validator class with bounded patterns.

    Its ``pattern``, ``patternProperties`` and ``additionalProperties`` run their
    patterns here instead of through Python's ``re``, and raise ``Unknown`` where a
    match is unknown.  (``unevaluatedProperties`` beside ``patternProperties`` still
    reaches ``re`` inside python-jsonschema.)
    """
    from jsonschema import Draft202012Validator, ValidationError, validators  # noqa: PLC0415

    def found(pattern: str, text: str) -> bool:
        hit = search(pattern, text)
        if hit is None:
            raise Unknown(pattern)
        return hit

    def pattern(validator: Any, expected: str, instance: Any, _: Any) -> Iterator[Any]:
        if validator.is_type(instance, "string") and not found(expected, instance):
            yield ValidationError(f"{instance!r} does not match {expected!r}")

    def pattern_properties(
        validator: Any, patterns: Mapping[str, Any], instance: Any, _: Any
    ) -> Iterator[Any]:
        if validator.is_type(instance, "object"):
            for expected, subschema in patterns.items():
                for name, value in instance.items():
                    if found(expected, name):
                        yield from validator.descend(
                            value, subschema, path=name, schema_path=expected
                        )

    def additional_properties(
        validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
    ) -> Iterator[Any]:
        if not validator.is_type(instance, "object"):
            return
        declared = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        extras = [
            name
            for name in instance
            if name not in declared and not any(found(p, name) for p in patterns)
        ]
        if validator.is_type(additional, "object"):
            for name in extras:
                yield from validator.descend(instance[name], additional, path=name)
        elif not additional and extras:
            yield ValidationError(f"additional properties are not allowed: {sorted(extras)}")

    extend: Any = validators.extend  # untyped in types-jsonschema
    return extend(
        Draft202012Validator,
        {
            "pattern": pattern,
            "patternProperties": pattern_properties,
            "additionalProperties": additional_properties,
        },
    )


@functools.cache
def sre_parser() -> tuple[Any, int] | None:
    """CPython's regex parser and its "unbounded" repeat count, or ``None`` if not there."""
    try:
        parser = importlib.import_module("re._parser")
        maxrepeat = int(importlib.import_module("re._constants").MAXREPEAT)
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    if not callable(getattr(parser, "parse", None)):
        return None
    return parser, maxrepeat


@functools.lru_cache(maxsize=1024)
def _small(pattern: str) -> bool:
    """Whether ``pattern`` unrolls to at most ``MAX_COMPILED`` pieces: sized on CPython's
    parse tree (which does not unroll), else on the repeat counts in the text."""
    sre = sre_parser()
    if sre is None:
        size = len(pattern)
        for count in regex.findall(r"\{(\d+)", pattern):
            size *= max(1, int(count))
            if size > MAX_COMPILED:
                return False
        return True
    parser, maxrepeat = sre
    try:
        tree = parser.parse(pattern)
    except Exception:
        return True  # not read here: the engine's own error says so
    return _size(tree, maxrepeat) <= MAX_COMPILED


def _size(tree: Any, maxrepeat: int) -> int:
    total = 0
    for op, arg in tree:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = arg
            total += max(1, low, 0 if high == maxrepeat else high) * _size(sub, maxrepeat)
        elif name == "SUBPATTERN":
            total += 1 + _size(arg[3], maxrepeat)
        elif name == "ATOMIC_GROUP":
            total += 1 + _size(arg, maxrepeat)
        elif name in ("ASSERT", "ASSERT_NOT"):
            total += 1 + _size(arg[1], maxrepeat)
        elif name == "BRANCH":
            total += 1 + sum(_size(b, maxrepeat) for b in arg[1])
        else:
            total += 1
        if total > MAX_COMPILED:
            return total
    return total
