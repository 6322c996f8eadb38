"""Property-based contract tests of a rabbitry spec, for your test suite.

Subclass ``ContractTests`` in any test module and name the spec::

    # tests/test_contracts.py
    from rabbitry.pytest_plugin import ContractTests


    class TestContracts(ContractTests):
        spec = "topology.yaml"  # relative to pytest's rootdir, or absolute

and pytest runs, for every message of the spec (one test each, ``[Start]``, ...):

``test_spec_is_sound``
    ``rabbitry check`` finds no error in the spec.
``test_valid_instances_validate``
    instances drawn from the message's schema (the hypothesis strategies
    ``rabbitry generate`` writes, rendered for this spec on the fly) pass the
    contract, fill the routing key and headers, and encode as JSON: the
    publisher would send each one.
``test_invalid_mutations_are_refused``
    instances mutated (a field removed, retyped, pushed past a bound, an
    unknown field added, ...) that an independent validator (python-jsonschema)
    finds invalid are refused with ``ContractViolation`` by
    ``MessageContract.validate`` — the check ``Client.publish`` makes before
    anything is written (``publish`` itself needs an open connection, so this
    offline test calls the check directly; the round trip below publishes a
    mutation for real).
``test_round_trip``
    with a broker (``--rabbitry-url URL`` or ``$RABBITRY_CONTRACT_URL``; the
    test is skipped without one): the spec is applied to the URL's vhost,
    then valid instances are published with ``Client.publish`` and read back —
    from every queue ``rabbitry route`` predicts for the message's routing
    key and headers, and from no other: run-time queues through
    ``Client.subscribe`` bound with the values the prediction names, queues
    ``apply`` declares with ``basic.get``, decoded and validated as the
    consumer does — and each body read equals the one sent.  A mutation the
    contract refuses is published too: ``ContractViolation``, and nothing
    arrives anywhere.  Use a throwaway vhost: the spec is applied to it and
    its queues are purged.  A vhost whose queues of the spec already hold
    messages (dead letters someone is reading, say) is refused, naming each
    queue and its count, unless you opt in to purging them: ``--rabbitry-purge``
    or ``purge = True`` on the class.

The plugin (the ``pytest11`` entry point ``rabbitry``, registered when rabbitry
is installed) adds the command-line options ``--rabbitry-url``,
``--rabbitry-examples`` (instances per offline property, default 50),
``--rabbitry-round-trips`` (per message, default 5) and ``--rabbitry-purge``.  Without the plugin
(``-p no:rabbitry``) the class still works, configured by the environment
(``RABBITRY_CONTRACT_URL``) and its class attributes.  Override the
``rabbitry_url`` fixture to take the URL from a fixture of your own (a fresh
vhost per test, say).  Importing this module costs nothing when the class is
not used: hypothesis and the broker client are imported by the tests.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

if TYPE_CHECKING:
    from hypothesis import settings
    from hypothesis import strategies as st

    from rabbitry.messaging.contract import Contract
    from rabbitry.spec import Spec

__all__ = ["ContractTests", "mutations", "strategies_for"]

URL_ENV = "RABBITRY_CONTRACT_URL"


# -- the plugin's options ---------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rabbitry", "rabbitry contract tests (rabbitry.pytest_plugin)")
    group.addoption(
        "--rabbitry-url",
        default=None,
        metavar="URL",
        help=f"AMQP URL of a throwaway vhost for the round-trip tests [default: ${URL_ENV}; "
        "without one they are skipped]. The spec is applied to it.",
    )
    group.addoption(
        "--rabbitry-examples",
        type=int,
        default=None,
        metavar="N",
        help="Instances per offline contract property [default: 50].",
    )
    group.addoption(
        "--rabbitry-round-trips",
        type=int,
        default=None,
        metavar="N",
        help="Instances published per message in the round-trip test [default: 5].",
    )
    group.addoption(
        "--rabbitry-purge",
        action="store_true",
        default=None,
        help="Let the round-trip tests purge the spec's queues even when they hold messages "
        "[default: refuse such a vhost].",
    )


def _option(config: pytest.Config, name: str) -> Any:
    try:
        return config.getoption(name)
    except ValueError:  # the plugin is not loaded: no such option
        return None


# -- strategies: the generator's own, rendered for the spec -------------------------------------

#: sha256 of a rendered package → its ``STRATEGIES``: each spec is rendered and imported once.
_RENDERED: dict[str, Mapping[str, st.SearchStrategy[Any]]] = {}


def strategies_for(spec: Spec) -> dict[str, st.SearchStrategy[Any]]:
    """Message name → hypothesis strategy of valid instances, as ``rabbitry generate`` writes
    them: the ``STRATEGIES`` of its ``strategies`` module, rendered for ``spec`` into a
    temporary package and imported from there."""
    from rabbitry import codegen  # noqa: PLC0415

    files = codegen.render(spec, "_rabbitry_contract").files
    digest = hashlib.sha256()
    for name, text in sorted(files.items()):
        digest.update(f"{name}\0{len(text)}\0{text}".encode())
    key = digest.hexdigest()
    if key not in _RENDERED:
        package = f"_rabbitry_contract_{key[:16]}"
        folder = Path(tempfile.mkdtemp(prefix="rabbitry-strategies-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        (folder / package).mkdir()
        for name, text in files.items():
            (folder / package / name).write_text(text, encoding="utf-8")
        sys.path.insert(0, str(folder))
        try:
            module = importlib.import_module(f"{package}.strategies")
        finally:
            sys.path.remove(str(folder))
        _RENDERED[key] = module.STRATEGIES
    return dict(_RENDERED[key])


# -- mutations ---------------------------------------------------------------------------------


def mutations(payload: Any) -> list[Any]:
    """Variants of ``payload`` likely to be invalid: each changes one place.

    A property removed, an unknown property added, a value replaced by one
    of another JSON type, a number pushed far past any bound, a string
    emptied, lengthened or given a trailing newline, an array emptied or
    repeated.  Whether each is really invalid is for a validator to say.
    """
    found: list[Any] = []
    for path, replacement in _changes(payload, ()):
        found.append(_replaced(payload, path, replacement))
    return found


_DELETE = object()
_OTHERS: tuple[Any, ...] = (None, True, "x", 0, 1.5, [], {})


def _changes(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    for other in _OTHERS:
        if type(other) is not type(value):
            yield path, other
    if isinstance(value, bool):
        yield path, not value
    elif isinstance(value, int | float):
        yield from ((path, value + 10**9), (path, -abs(value) - 10**9), (path, value + 0.5))
    elif isinstance(value, str):
        yield from (
            (path, ""),
            (path, value + "\n!"),
            (path, value * 40 + "Z"),
            (path, "é" + value),
        )
    elif isinstance(value, list):
        yield from ((path, []), (path, value * 40))
        if value:
            yield path, [*value, value[0]]
        for i, item in enumerate(value):
            yield from _changes(item, (*path, i))
    elif isinstance(value, dict):
        yield path, {**value, "__rabbitry_unexpected__": 1}
        for name, item in value.items():
            yield (*path, name), _DELETE
            yield from _changes(item, (*path, name))


def _replaced(value: Any, path: tuple[Any, ...], replacement: Any) -> Any:
    if not path:
        return replacement
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        out = dict(value)
        inner = _replaced(value[head], rest, replacement) if rest else replacement
        if inner is _DELETE:
            del out[head]
        else:
            out[head] = inner
        return out
    items = list(value)
    items[head] = _replaced(value[head], rest, replacement) if rest else replacement
    return items


def _oracle(schema: Mapping[str, Any]) -> Any:
    """python-jsonschema's 2020-12 validator with formats: a second opinion on validity.

    Its patterns run through ``rabbitry._bounded`` instead of Python's ``re``: a
    mutation (``value * 40 + "Z"``) of a string a backtracking pattern matched ran
    ``re`` for hours; now it raises ``_bounded.Unknown`` and is skipped (``_invalid``).
    """
    from jsonschema import Draft202012Validator  # noqa: PLC0415

    from rabbitry import _bounded  # noqa: PLC0415

    bounded = _bounded.jsonschema_validator()
    return bounded(dict(schema), format_checker=Draft202012Validator.FORMAT_CHECKER)


def _invalid(oracle: Any, instance: Any) -> bool:
    """The oracle finds ``instance`` invalid; ``False`` when it cannot tell (an ECMA pattern
    the engine cannot compile, a pattern stopped at its bound)."""
    try:
        return not oracle.is_valid(instance)
    except Exception:
        return False


def _publishable(payload: Any) -> bool:
    """Whether ``payload`` encodes as UTF-8 JSON (a lone surrogate does not)."""
    try:
        json.dumps(payload, ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError):
        return False
    return True


# -- the suite ---------------------------------------------------------------------------------


class ContractTests:
    """The contract tests of one spec: subclass and set ``spec``."""

    #: The spec file: absolute, or relative to pytest's rootdir.
    spec: ClassVar[str | os.PathLike[str]] = "topology.yaml"
    #: Instances per offline property (``--rabbitry-examples`` overrides).
    examples: ClassVar[int] = 50
    #: Instances published per message (``--rabbitry-round-trips`` overrides).
    round_trips: ClassVar[int] = 5
    #: Apply the spec to the broker's vhost before the round trips.
    apply_topology: ClassVar[bool] = True
    #: Seconds to wait for a message to arrive in a queue.
    arrival_timeout: ClassVar[float] = 5.0
    #: Purge the spec's queues even if they hold messages (``--rabbitry-purge`` also allows it).
    purge: ClassVar[bool] = False

    # -- parametrisation ---------------------------------------------------------

    @classmethod
    def _spec_path(cls, config: pytest.Config) -> Path:
        path = Path(cls.spec)
        return path if path.is_absolute() else Path(config.rootpath) / path

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "rabbitry_message" not in metafunc.fixturenames:
            return
        from rabbitry.check import check  # noqa: PLC0415

        report = check(type(self)._spec_path(metafunc.config))
        names = sorted(report.spec.messages) if report.spec is not None else []
        if report.errors:
            names = []  # test_spec_is_sound says why
        metafunc.parametrize("rabbitry_message", names)

    # -- fixtures ----------------------------------------------------------------

    @pytest.fixture
    def rabbitry_spec(self, request: pytest.FixtureRequest) -> Spec:
        from rabbitry.check import load_spec  # noqa: PLC0415

        spec: Spec = load_spec(type(self)._spec_path(request.config))
        return spec

    @pytest.fixture
    def rabbitry_contract(self, rabbitry_spec: Spec) -> Contract:
        from rabbitry.messaging.contract import Contract  # noqa: PLC0415

        return Contract.from_spec(rabbitry_spec)

    @pytest.fixture
    def rabbitry_url(self, request: pytest.FixtureRequest) -> str | None:
        """The broker for the round trips: ``--rabbitry-url``, else ``$RABBITRY_CONTRACT_URL``
        (a ``SecretURL``: a failing test's report shows it with the password hidden)."""
        from rabbitry.broker.url import SecretURL  # noqa: PLC0415

        url: str | None = _option(request.config, "rabbitry_url") or os.environ.get(URL_ENV)
        return SecretURL(url) if url else url

    def _settings(self, request: pytest.FixtureRequest, *, round_trip: bool = False) -> settings:
        from hypothesis import HealthCheck, settings  # noqa: PLC0415

        if round_trip:
            count = _option(request.config, "rabbitry_round_trips") or type(self).round_trips
        else:
            count = _option(request.config, "rabbitry_examples") or type(self).examples
        return settings(
            max_examples=count,
            deadline=None,
            database=None,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.filter_too_much,
                HealthCheck.data_too_large,
                HealthCheck.function_scoped_fixture,
            ],
        )

    # -- the tests -----------------------------------------------------------------

    def test_spec_is_sound(self, request: pytest.FixtureRequest) -> None:
        from rabbitry.check import check  # noqa: PLC0415

        path = type(self)._spec_path(request.config)
        report = check(path)
        if report.spec is None or report.errors:
            lines = "\n".join(d.render() for d in report.errors)
            pytest.fail(f"{path} has errors:\n{lines}", pytrace=False)

    def test_valid_instances_validate(
        self,
        request: pytest.FixtureRequest,
        rabbitry_message: str,
        rabbitry_spec: Spec,
        rabbitry_contract: Contract,
    ) -> None:
        from hypothesis import assume, given  # noqa: PLC0415

        contract = rabbitry_contract.message(rabbitry_message)
        strategy = strategies_for(rabbitry_spec)[rabbitry_message]

        @self._settings(request)
        @given(strategy)
        def valid_instances_pass(payload: Any) -> None:
            assume(_publishable(payload))  # the strategies' text may hold lone surrogates
            faults = contract.faults(payload)
            assert not faults, f"a valid {rabbitry_message} is refused: {faults}"
            contract.routing_key_for(payload)  # ContractViolation: cannot fill the key
            contract.headers_for(payload)

        valid_instances_pass()

    def test_invalid_mutations_are_refused(
        self,
        request: pytest.FixtureRequest,
        rabbitry_message: str,
        rabbitry_spec: Spec,
        rabbitry_contract: Contract,
    ) -> None:
        from hypothesis import assume, given, note  # noqa: PLC0415
        from hypothesis import strategies as st  # noqa: PLC0415

        from rabbitry.errors import ContractViolation  # noqa: PLC0415

        contract = rabbitry_contract.message(rabbitry_message)
        oracle = _oracle(contract.schema)
        strategy = strategies_for(rabbitry_spec)[rabbitry_message].flatmap(
            lambda payload: st.sampled_from(mutations(payload) or [None])
        )

        @self._settings(request)
        @given(strategy)
        def invalid_mutations_refused(mutation: Any) -> None:
            assume(_publishable(mutation))
            assume(_invalid(oracle, mutation))
            note(f"python-jsonschema: {next(iter(oracle.iter_errors(mutation))).message}")
            with pytest.raises(ContractViolation):
                contract.validate(mutation)

        invalid_mutations_refused()

    def test_round_trip(
        self,
        request: pytest.FixtureRequest,
        rabbitry_message: str,
        rabbitry_spec: Spec,
        rabbitry_contract: Contract,
        rabbitry_url: str | None,
    ) -> None:
        if not rabbitry_url:
            pytest.skip(f"no broker for round trips: pass --rabbitry-url or set ${URL_ENV}")
        from hypothesis import assume, given  # noqa: PLC0415

        from rabbitry.broker import converge  # noqa: PLC0415
        from rabbitry.broker.url import parse_url  # noqa: PLC0415

        url = parse_url(rabbitry_url)
        if rabbitry_url not in _OURS:
            if not (_option(request.config, "rabbitry_purge") or type(self).purge):
                held = asyncio.run(_held(rabbitry_spec, rabbitry_url, type(self).arrival_timeout))
                if held:
                    pytest.fail(_refusal(url.vhost, held), pytrace=False)
            _OURS.add(rabbitry_url)
        if type(self).apply_topology:
            asyncio.run(converge.apply(rabbitry_spec, url, timeout=10))
        oracle = _oracle(rabbitry_contract.message(rabbitry_message).schema)
        strategy = strategies_for(rabbitry_spec)[rabbitry_message]

        @self._settings(request, round_trip=True)
        @given(strategy)
        def round_trip(payload: Any) -> None:
            assume(_publishable(payload))
            # A tuple, because the first invalid mutation is often ``None`` itself.
            refused = tuple(
                m for m in mutations(payload) if _publishable(m) and _invalid(oracle, m)
            )[:1]
            trip = _RoundTrip(
                rabbitry_spec, rabbitry_contract, rabbitry_url, type(self).arrival_timeout
            )
            asyncio.run(trip.run(rabbitry_message, payload, refused))

        round_trip()


# -- the round trip ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RoundTrip:
    """Publish one message; it must arrive, equal, in exactly the predicted queues."""

    spec: Spec
    contract: Contract
    url: str
    timeout: float

    def predict(self, name: str, payload: Any) -> tuple[set[str], set[str], dict[str, Any]]:
        """The queues ``rabbitry route`` predicts, those it cannot be sure of (they need a
        binding this test does not make), and the run-time queues to subscribe, with values."""
        from rabbitry import routing  # noqa: PLC0415

        message = self.contract.message(name)
        key = message.routing_key_for(payload)
        predicted = routing.route(self.spec, message.exchange, key, message.headers_for(payload))
        expected: set[str] = set()
        unsure: set[str] = set()
        subscribe: dict[str, Any] = {}
        for destination in predicted:
            queue = self.spec.queues[destination.queue]
            bound = destination.on(routing.Side.RUNTIME_BINDING)
            if len(bound) < len(destination.conditions) or (bound and not queue.runtime):
                unsure.add(queue.name)
                continue
            expected.add(queue.name)
            if queue.runtime:
                values = {c.name: c.value for c in bound}
                wanted = self.contract.queue(queue.name).params
                unused = f"rabbitry-unused-{uuid.uuid4().hex[:8]}"
                subscribe[queue.name] = {p: values.get(p, unused) for p in wanted}
        return expected, unsure, subscribe

    async def run(self, name: str, payload: Any, refused: tuple[Any, ...]) -> None:
        """Publish ``payload``, then each of ``refused`` (each must raise ``ContractViolation``),
        and check where ``payload`` arrived and that nothing else did."""
        from rabbitry.broker.amqp import connect  # noqa: PLC0415
        from rabbitry.broker.url import parse_url  # noqa: PLC0415
        from rabbitry.errors import ContractViolation  # noqa: PLC0415
        from rabbitry.messaging.client import Client  # noqa: PLC0415

        expected, unsure, subscribe = self.predict(name, payload)
        message = self.contract.message(name)
        where = (
            f"{name} {json.dumps(payload)[:300]} to {message.exchange!r} "
            f"with key {message.routing_key_for(payload)!r}"
        )
        static = sorted(q.name for q in self.spec.queues.values() if not q.runtime)
        connection = await connect(parse_url(self.url), timeout=self.timeout)
        try:
            channel = await connection.channel()
            for queue in static:
                await channel.queue_purge(queue)
            async with contextlib.AsyncExitStack() as stack:
                client = await stack.enter_async_context(
                    Client(self.contract, self.url, timeout=self.timeout)
                )
                subscriptions = {
                    queue: await stack.enter_async_context(client.subscribe(queue, **values))
                    for queue, values in subscribe.items()
                }
                await client.publish(name, payload)
                for mutation in refused:
                    with pytest.raises(ContractViolation):
                        await client.publish(name, mutation)
                for queue, subscription in subscriptions.items():
                    await self._one(subscription, where, queue, name, payload)
            for queue in static:
                if queue not in unsure:
                    bodies = await _drain(channel, self.contract, queue, name)
                    wanted = [payload] if queue in expected else []
                    assert bodies == wanted, (
                        f"{where}: {'predicted' if wanted else 'not predicted'} in "
                        f"{queue!r}, which holds {bodies}"
                    )
        finally:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _one(
        self, subscription: Any, where: str, queue: str, name: str, payload: Any
    ) -> None:
        """The subscription yields the message once, equal, and nothing after it."""
        try:
            delivery = await asyncio.wait_for(anext(subscription), self.timeout)
        except TimeoutError:
            pytest.fail(f"{where}: predicted in {queue!r}, never arrived")
        assert delivery.type == name
        assert delivery.body == payload, f"{where}: {queue!r} got {delivery.body}"
        with contextlib.suppress(TimeoutError):
            extra = await asyncio.wait_for(anext(subscription), 0.2)
            pytest.fail(f"{where}: {queue!r} got a second message {extra.body}")


#: URLs this session found empty, or was allowed to purge: later round trips need not ask again
#: (what they leave in queues they cannot check is their own).
_OURS: set[str] = set()


async def _held(spec: Spec, url: str, timeout: float) -> dict[str, int]:
    """Queue → messages ready, for the spec's queues that exist in ``url``'s vhost and hold any."""
    import aiormq.exceptions as amqp_errors  # noqa: PLC0415

    from rabbitry.broker.amqp import connect  # noqa: PLC0415
    from rabbitry.broker.url import parse_url  # noqa: PLC0415

    held: dict[str, int] = {}
    connection = await connect(parse_url(url), timeout=timeout)
    try:
        for queue in sorted(q.name for q in spec.queues.values() if not q.runtime):
            channel = await connection.channel()
            try:
                ok = await channel.queue_declare(queue, passive=True)
            except amqp_errors.ChannelNotFoundEntity:  # not declared yet: nothing to lose
                continue
            if ok.message_count:
                held[queue] = int(ok.message_count)
            await channel.close()
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
    return held


def _refusal(vhost: str, held: Mapping[str, int]) -> str:
    counts = ", ".join(
        f"{queue!r} holds {n} message{'' if n == 1 else 's'}" for queue, n in held.items()
    )
    return (
        f"the round trips purge the spec's queues, and in vhost {vhost!r} {counts}. "
        "Point --rabbitry-url at a throwaway vhost, or pass --rabbitry-purge (or set "
        "purge = True on the test class) to let them be purged."
    )


async def _drain(channel: Any, contract: Contract, queue: str, name: str) -> list[Any]:
    """Every message ``queue`` holds, taken with ``basic.get`` and decoded as a consumer does."""
    from pamqp import commands  # noqa: PLC0415

    from rabbitry.messaging._decode import Refusal, decode  # noqa: PLC0415

    bodies: list[Any] = []
    while True:
        message = await channel.basic_get(queue, no_ack=True)
        if isinstance(message.delivery, commands.Basic.GetEmpty):
            return bodies
        found = decode(
            message.body,
            message.header.properties,
            exchange=message.delivery.exchange,
            routing_key=message.delivery.routing_key,
            redelivered=False,
            queue=queue,
            accepts={name: contract.message(name)},
        )
        assert not isinstance(found, Refusal), f"{queue!r}: {found.reason}"
        bodies.append(found.body)
