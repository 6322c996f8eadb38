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
from rabbitry.spec.checks import run_checks
from rabbitry.spec.diagnostics import Code, Diagnostic
from rabbitry.spec.model import Location, Spec
from rabbitry.spec.schemas import load_schemas

__all__ = ["read"]


def read(
    path: Path | str, *, schemas: bool = True, advisory: bool = True
) -> tuple[Spec | None, list[Diagnostic]]:
    """The spec at ``path`` as far as it can be read, and every fault found.

    Faults cover the file, its YAML, the spec's shape, its schemas and the
    checks of ``rabbitry.spec.checks`` (not the routing checks, which need
    ``rabbitry.routing``).  ``None`` when nothing could be built.  Without
    ``schemas`` no schema file is read: the messages' ``schema`` stay empty
    and the checks that judge schemas (placeholders) judge nothing.  Without
    ``advisory`` the checks that find only warnings are skipped.
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
        return spec, [*problems, *run_checks(spec, advisory=advisory)]
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
    return spec, [*problems, *schema_problems, *run_checks(spec, advisory=advisory)]


def _as_mapping(schema: Any) -> Mapping[str, Any]:
    """A schema as a read-only mapping: ``true`` is ``{}``, ``false`` is ``{"not": {}}``.

    Anything else that is not an object is an invalid schema (already reported).
    """
    if isinstance(schema, Mapping):
        return MappingProxyType(schema)
    if schema is False:
        return MappingProxyType({"not": {}})
    return MappingProxyType({})
