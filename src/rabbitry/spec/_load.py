"""Reading a spec file: YAML → model → schemas, every fault collected."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from rabbitry.spec._build import build_spec
from rabbitry.spec._files import REFUSED_HINT, FileRefused, read_text_bounded
from rabbitry.spec._yaml import YamlError, parse_yaml
from rabbitry.spec.checks import ADVISORY, CHECKS, Check, run_checks
from rabbitry.spec.diagnostics import Code, Diagnostic
from rabbitry.spec.model import Location, Spec
from rabbitry.spec.policy_checks import check_policy_overlaps, check_policy_patterns
from rabbitry.spec.schemas import load_schemas

__all__ = ["EXCHANGES_ONLY", "read"]


#: The checks run on the exchanges alone when the spec is read only to route
#: (``for_routing``): those of policies, whose findings on queues (a pattern that
#: cannot be run on a queue's name, two queue policies tied) cannot change where a
#: message is routed, since a queue's policy only says what happens in the queue
#: (its TTL, its length, its dead-lettering).  Run on every queue they were a
#: quarter of ``rabbitry route`` at 20,000 queues.
EXCHANGES_ONLY: frozenset[Check] = frozenset({check_policy_patterns, check_policy_overlaps})


def read(
    path: Path | str, *, schemas: bool = True, advisory: bool = True, for_routing: bool = False
) -> tuple[Spec | None, list[Diagnostic]]:
    """The spec at ``path`` as far as it can be read, and every fault found.

    Faults cover the file, its YAML, the spec's shape, its schemas and the
    checks of ``rabbitry.spec.checks`` (not the routing checks, which need
    ``rabbitry.routing``).  ``None`` when nothing could be built.  Without
    ``schemas`` no schema file is read: the messages' ``schema`` stay empty
    and the checks that judge schemas (placeholders) judge nothing.  Without
    ``advisory`` the checks that find only warnings are skipped.  With
    ``for_routing`` the checks of ``EXCHANGES_ONLY`` look at the exchanges alone:
    every error that could make a routing answer wrong is still found.
    """
    path = Path(path)
    display = str(path)
    try:
        text = read_text_bounded(path)
    except FileNotFoundError:
        where = Location(display, 1, 1)
        hint = "pass the spec with -f FILE, or run in the folder that has topology.yaml"
        return None, [Diagnostic(where, Code.FILE, f"no spec file at {display}", hint)]
    except FileRefused as exc:
        what = f"cannot read the spec: {display} {exc.reason}"
        return None, [Diagnostic(Location(display, 1, 1), Code.FILE, what, REFUSED_HINT)]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Diagnostic(Location(display, 1, 1), Code.FILE, f"cannot read: {exc}")]
    try:
        tree, duplicates = parse_yaml(text, display)
    except YamlError as exc:
        return None, list(exc.diagnostics)
    spec, problems = build_spec(tree, path)
    problems = [*duplicates, *problems]
    if not schemas:  # the checks that read schemas find none and judge nothing
        return spec, [*problems, *_checks(spec, advisory, for_routing)]
    wanted = {
        spec.schema_file(m): m.locs.of("schema") for m in reversed(list(spec.messages.values()))
    }
    store, schema_problems = load_schemas(wanted)
    messages = {
        name: replace(m, schema=_as_mapping(store.contents(spec.schema_file(m))))
        if store.real(spec.schema_file(m)) in store.documents
        else m
        for name, m in spec.messages.items()
    }
    spec = replace(spec, messages=MappingProxyType(messages), schemas=store)
    return spec, [*problems, *schema_problems, *_checks(spec, advisory, for_routing)]


def _checks(spec: Spec, advisory: bool, for_routing: bool) -> list[Diagnostic]:
    if not for_routing:
        return run_checks(spec, advisory=advisory)
    exchanges = replace(spec, queues=MappingProxyType({}), broken_queues=frozenset())
    return [
        finding
        for check in CHECKS
        if advisory or check not in ADVISORY
        for finding in check(exchanges if check in EXCHANGES_ONLY else spec)
    ]


def _as_mapping(schema: Any) -> Mapping[str, Any]:
    """A schema as a read-only mapping: ``true`` is ``{}``, ``false`` is ``{"not": {}}``.

    Anything else that is not an object is an invalid schema (already reported).
    """
    if isinstance(schema, Mapping):
        return MappingProxyType(schema)
    if schema is False:
        return MappingProxyType({"not": {}})
    return MappingProxyType({})
