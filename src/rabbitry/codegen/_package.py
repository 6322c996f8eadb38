"""The whole generated package: each template's context, rendered, for one spec.

Names are taken in a fixed order (messages and their types, then services,
deliveries, queue unions, subscriptions, then aliases hoisted for long
lines), each from sorted spec names, so the output depends on the spec only.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rabbitry.codegen._annotate import render_types
from rabbitry.codegen._layout import Atom, Expr, Sub, UnionExpr, layout
from rabbitry.codegen._literals import data_lines, docstring, py_str
from rabbitry.codegen._model import Model
from rabbitry.codegen._names import Namer
from rabbitry.codegen._render import (
    TEMPLATES,
    dunder_all_key,
    environment,
    header,
    import_block,
)
from rabbitry.codegen._services import Clients, build_clients
from rabbitry.codegen._strategies import render_strategies
from rabbitry.codegen._types import build_model
from rabbitry.messaging.contract import contract_data
from rabbitry.spec import Spec

__all__ = ["render_package", "spec_digest"]

#: Names the generated modules import or define themselves: no generated type may take one.
_FIXED_NAMES = frozenset(
    {
        "Any",
        "AsyncIterator",
        "Awaitable",
        "B_co",
        "BrokerURL",
        "CONTRACT",
        "Callable",
        "Client",
        "ClientOptions",
        "Consumer",
        "Contract",
        "DATA",
        "Final",
        "Handler",
        "Literal",
        "Mapping",
        "N_co",
        "Never",
        "NotRequired",
        "Protocol",
        "PublishOptions",
        "Received",
        "STRATEGIES",
        "Self",
        "Sequence",
        "Subscription",
        "TracebackType",
        "TypeAlias",
        "TypeVar",
        "TypedDict",
        "UTC",
        "Unpack",
        "cast",
        "date",
        "datetime",
        "re",
        "st",
        "time",
    }
)


def spec_digest(spec: Spec) -> tuple[str, int]:
    """sha256 of the spec file and every schema file it uses (names relative to its folder)."""
    root = spec.root.resolve()
    schemas = sorted(spec.schemas.documents) if spec.schemas is not None else []
    digest = hashlib.sha256()
    for path in [spec.path.resolve(), *schemas]:
        data = path.read_bytes()
        name = Path(os.path.relpath(path, root)).as_posix()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest(), len(schemas)


def render_package(spec: Spec, package: str) -> dict[str, str]:
    """Every file of the package for ``spec``, by file name, in name order."""
    namer = Namer(_FIXED_NAMES)
    model = build_model(spec, namer)
    clients = build_clients(spec, model, namer)
    types = render_types(model, namer)
    strategies = render_strategies(model, types.exports)
    digest, count = spec_digest(spec)
    env = environment()
    spec_name = spec.path.name
    common = {"header": header(spec_name, digest, count)}
    contexts: dict[str, dict[str, object]] = {
        "__init__.py.j2": _package_context(spec_name, package, model, clients, types.exports),
        "_contract.py.j2": {
            "doc": docstring(
                [
                    f"The contract of {spec_name} as plain data, so the runtime needs neither "
                    "the spec nor its schema files."
                ],
                0,
            ),
            "data": "\n".join(data_lines(contract_data(spec), 0, "DATA: Final[dict[str, Any]] = ")),
        },
        "messages.py.j2": {
            "doc": docstring(
                [
                    f"The messages of {spec_name}, as ``TypedDict``s, and the types they share.",
                    "Each message is named as in the spec; nested objects are named after "
                    "their place (``ParentField``), shared ``$ref`` targets after their "
                    "definition.  Formats and constraints are in the docstrings; the "
                    "runtime validates them.  A JSON number is a ``float`` (type checkers "
                    "accept an ``int`` for it), an integer an ``int``.",
                ],
                0,
            ),
            "imports": import_block([[("typing", types.typing)]]),
            "blocks": types.blocks,
        },
        "deliveries.py.j2": _deliveries_context(spec_name, model, clients),
        "clients.py.j2": _clients_context(spec_name, clients),
        "strategies.py.j2": {
            "doc": docstring(
                [
                    f"Hypothesis strategies of valid messages of {spec_name}, for tests.",
                    "One function per type of ``messages`` (``@given(strategies.start())``), "
                    "and ``STRATEGIES``, each message's strategy by its name in the spec.",
                    "Importing this module imports hypothesis, which rabbitry offers as an "
                    "extra (``pip install 'rabbitry[test]'``); nothing else in the package "
                    "imports it.",
                ],
                0,
            ),
            "imports": import_block(
                [[("._contract", ["CONTRACT"]), (".messages", sorted(strategies.types))]]
            ),
            "constants": strategies.constants,
            "blocks": strategies.blocks,
            "table": strategies.table,
        },
    }
    files: dict[str, str] = {}
    for template in TEMPLATES:
        text = env.get_template(template).render(**common, **contexts[template])
        files[template.removesuffix(".j2")] = text.rstrip("\n") + "\n"
    files["py.typed"] = ""
    return dict(sorted(files.items()))


def _package_context(
    spec_name: str, package: str, model: Model, clients: Clients, types: list[str]
) -> dict[str, object]:
    services = [s.name for s in clients.services]
    deliveries = [*clients.deliveries.values(), *(u.name for u in clients.unions)]
    subscriptions = [s.name for s in clients.subscriptions]
    example = services[0] if services else "Client"
    names = list(model.messages.values())
    shown = [f"``{m}``" for m in names[:4]]
    doc = [
        f"The contract of {spec_name} as typed Python: the package ``{package}``.",
        f"Messages are ``TypedDict``s ({', '.join(shown)}{', ...' if len(names) > 4 else ''}); "
        "each service is a class wrapping a "
        f"rabbitry client (``async with {example}(url) as client: ...``); "
        "``strategies`` has hypothesis strategies of valid messages; it alone needs "
        "hypothesis (``pip install 'rabbitry[test]'``).",
    ]
    local = [
        ("._contract", ["CONTRACT"]),
        (".clients", [*services, *subscriptions]),
        (".deliveries", ["Received", *deliveries]),
        (".messages", types),
    ]
    exports = sorted(
        {"CONTRACT", "ClientOptions", "Received", *services, *subscriptions, *deliveries, *types},
        key=dunder_all_key,
    )
    runtime = [("rabbitry", ["ClientOptions"])]
    return {
        "doc": docstring(doc, 0),
        "imports": import_block([runtime, local]),
        "exports": exports,
    }


def _deliveries_context(spec_name: str, model: Model, clients: Clients) -> dict[str, object]:
    blocks: list[str] = []
    for message, name in clients.deliveries.items():
        received = Sub(
            "Received", (Sub("Literal", (Atom(py_str(message)),)), Atom(model.messages[message]))
        )
        text = "\n".join(layout(received, 0, f"{name}: TypeAlias = "))
        blocks.append(text + "\n" + docstring([f"A received ``{message}``."], 0))
    for union in clients.unions:
        members = [Atom(m) for m in union.members]
        value: Expr = (
            UnionExpr(tuple(members))
            if len(members) > 1
            else members[0]
            if members
            else Sub("Received", (Atom("str"), Atom("Any")))
        )
        text = "\n".join(layout(value, 0, f"{union.name}: TypeAlias = "))
        blocks.append(text + "\n" + docstring(union.doc, 0))
    typing = ["Any", "Protocol", "TypeVar"]
    typing += ["Literal"] if clients.deliveries else []
    typing += ["TypeAlias"] if blocks else []
    imports = import_block(
        [
            [("collections.abc", ["Mapping"]), ("datetime", ["datetime"]), ("typing", typing)],
            [(".messages", sorted(set(model.messages.values())))],
        ]
    )
    doc = docstring(
        [
            f"Received messages of {spec_name}, typed: narrowing on ``type`` narrows ``body``.",
            "``Received`` is the shape of ``rabbitry.Delivery``; each "
            "message has an alias of it (``StartDelivery``), each consumed queue the "
            "union of those it carries.",
        ],
        0,
    )
    return {"doc": doc, "imports": imports, "blocks": blocks}


def _clients_context(spec_name: str, clients: Clients) -> dict[str, object]:
    services = clients.services
    subscriptions = clients.subscriptions
    consumes = any(s.consumes for s in services)
    requests = any(s.requests for s in services)
    stdlib = [
        (
            "collections.abc",
            (["AsyncIterator"] if subscriptions else [])
            + (["Awaitable", "Callable"] if consumes else [])
            + (["Sequence"] if services else []),
        ),
        ("types", ["TracebackType"] if services or subscriptions else []),
        (
            "typing",
            (["Self"] if services or subscriptions else [])
            + (["Unpack"] if services else [])
            + (["cast"] if subscriptions or consumes or requests else []),
        ),
    ]
    runtime = [
        (
            "rabbitry",
            (["BrokerURL", "Client", "ClientOptions"] if services else [])
            + (["PublishOptions"] if any(s.publishes for s in services) else [])
            + (["Consumer", "Handler"] if consumes else [])
            + (["Subscription"] if subscriptions else []),
        ),
    ]
    deliveries = (
        {s.delivery for s in subscriptions}
        | {c.delivery for s in services for c in s.consumes}
        | {r.reply for s in services for r in s.requests}
    )
    types = set(clients.types) | {p.type_name for s in services for p in s.publishes}
    local = [
        ("._contract", ["CONTRACT"] if services else []),
        (".deliveries", sorted(deliveries)),
        (".messages", sorted(types)),
    ]
    doc = docstring(
        [
            f"A client class per service of {spec_name}: publish, consume and subscribe, typed.",
            "Each wraps a ``rabbitry.Client`` speaking the package's "
            "contract (``.client``); use it with ``async with``.",
        ],
        0,
    )
    return {
        "doc": doc,
        "imports": import_block([stdlib, runtime, local]),
        "subscriptions": subscriptions,
        "services": services,
    }
