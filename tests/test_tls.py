"""TLS: the URL's options, verification failures said at once, and the client-certificate login.

The first half needs no broker: ``parse_url`` keeps aiormq's query options
(``cafile``, ``certfile``, ``keyfile``, ``no_verify_ssl``, ``heartbeat``,
``auth``), shows them, hides the password, refuses an unknown option and a
certificate file that is missing or not PEM.  The second half runs against
TLS nodes of this module's own (``tests/tls.py``: a test CA from trustme, a
TLS AMQP listener and a TLS management listener): each case is timed, and the
figures are printed as a table at the end of the module (``-s`` shows it).
"""

from __future__ import annotations

import asyncio
import re
import ssl
import string
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiormq
import pytest
import trustme
from aiormq.abc import SSLCerts
from aiormq.connection import SSLContextProvider
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from amqp import start, until
from rabbitry import load_spec
from rabbitry.broker import converge
from rabbitry.broker.management import read_vhost
from rabbitry.broker.url import OPTIONS, parse_url
from rabbitry.errors import ConnectionFailed, InvalidArgument, ManagementError
from rabbitry.messaging.client import Client, Delivery
from rabbitry.messaging.contract import Contract
from specs import FLAGSHIP, run_cli
from tls import CLIENT_USER, Certificates, TLSNode, make_certificates, started_tls_node

#: A verification failure must be said within this (one attempt, no retry; the broker's
#: connect_timeout is 30 s and retries would take seconds).
AT_ONCE = 2.0

#: case -> (behaviour, seconds): printed as the module's last words.
FIGURES: dict[str, tuple[str, float]] = {}


def record(case: str, behaviour: str, seconds: float) -> None:
    FIGURES[case] = (behaviour, seconds)


@pytest.fixture(scope="module", autouse=True)
def _print_figures() -> Iterator[None]:
    yield
    if FIGURES:
        width = max(len(case) for case in FIGURES)
        print("\nTLS case -> behaviour -> seconds")
        for case, (behaviour, seconds) in FIGURES.items():
            print(f"  {case:<{width}}  {behaviour}  {seconds:.3f}")


# -- the URL: options, display, refusals (no broker) ------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


PASSWORDS = st.text(string.ascii_letters + string.digits + "%@:/?#&=+ ", min_size=1).map(
    lambda s: "pw-" + s
)


@settings(max_examples=60, deadline=None)
@given(
    password=PASSWORDS,
    picks=st.fixed_dictionaries(
        {},
        optional={
            "cafile": st.just("ca"),
            "client": st.sampled_from(["pair", "combined"]),
            "no_verify_ssl": st.sampled_from(["0", "1"]),
            "heartbeat": st.integers(0, 65534).map(str),
            "external": st.just("external"),
        },
    ),
)
def test_the_options_survive_display_and_round_trip_and_the_password_never_shows(
    certs: Certificates, password: str, picks: dict[str, str]
) -> None:
    query: dict[str, str] = {}
    if "cafile" in picks:
        query["cafile"] = str(certs.ca)
    if picks.get("client") == "pair":
        query |= {"certfile": str(certs.client_cert), "keyfile": str(certs.client_key)}
    elif picks.get("client") == "combined":
        query["certfile"] = str(certs.client_combined)
    for name in ("no_verify_ssl", "heartbeat"):
        if name in picks:
            query[name] = picks[name]
    if "external" in picks and "certfile" in query:
        query["auth"] = "external"
    raw = f"amqps://me:{quote(password, safe='')}@broker.example:5671/v?{urlencode(query)}"
    url = parse_url(raw)
    assert url.tls.cafile == query.get("cafile")
    assert url.tls.certfile == query.get("certfile")
    assert url.tls.keyfile == query.get("keyfile")
    assert url.tls.verify == (query.get("no_verify_ssl", "0") == "0")
    assert url.heartbeat == (int(query["heartbeat"]) if "heartbeat" in query else None)
    assert url.auth == query.get("auth", "plain")
    shown = str(url)
    assert shown == url.masked
    assert password not in shown
    assert quote(password, safe="") not in shown
    assert ":***@" in shown
    for value in query.values():
        if value not in ("0",):  # no_verify_ssl=0 is the default, left out
            assert value in shown
    assert parse_url(url.amqp) == url  # what aiormq is given says the same
    shown_again = parse_url(shown)
    assert (shown_again.tls, shown_again.heartbeat, shown_again.auth) == (
        url.tls,
        url.heartbeat,
        url.auth,
    )


@settings(max_examples=80, deadline=None)
@given(name=st.text(string.ascii_lowercase + "_", min_size=1, max_size=14))
def test_an_unknown_option_is_refused_with_the_known_ones(name: str) -> None:
    if name in OPTIONS:
        return
    with pytest.raises(InvalidArgument) as refused:
        parse_url(f"amqps://u:SECRET@h/?{name}=x")
    said = str(refused.value)
    assert f"unknown option {name!r}" in said
    assert ", ".join(OPTIONS) in said
    assert "SECRET" not in said


def test_a_typo_is_named_with_what_was_meant(certs: Certificates) -> None:
    with pytest.raises(InvalidArgument, match=r"'cafle' .*did you mean 'cafile'\?"):
        parse_url(f"amqps://h/?cafle={certs.ca}")


def garbled(tmp: Path, certs: Certificates) -> dict[str, Path]:
    text = tmp / "notes.txt"
    text.write_text("not a certificate\n")
    empty = tmp / "empty.pem"
    empty.write_text("")
    truncated = tmp / "truncated.pem"
    truncated.write_text(certs.ca.read_text()[:200])
    return {"text": text, "empty": empty, "truncated": truncated, "a key": certs.client_key}


@pytest.mark.parametrize("kind", ["missing", "text", "empty", "truncated", "a key"])
def test_a_cafile_that_is_missing_or_not_pem_is_refused_by_parse_url(
    tmp_path: Path, certs: Certificates, kind: str
) -> None:
    path = tmp_path / "nowhere.pem" if kind == "missing" else garbled(tmp_path, certs)[kind]
    with pytest.raises(InvalidArgument) as refused:
        parse_url(f"amqps://u:SECRET@h/?cafile={path}")
    said = str(refused.value)
    assert f"cafile {str(path)!r}" in said
    assert ("is not a file" if kind == "missing" else "does not load") in said
    assert "SECRET" not in said


def test_a_client_certificate_that_does_not_load_is_refused(
    tmp_path: Path, certs: Certificates
) -> None:
    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(certs.client_key.read_bytes(), password=None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    other_key = tmp_path / "other.key"
    trustme.CA().issue_cert("x").private_key_pem.write_to_path(str(other_key))
    for query, said in [
        (f"certfile={certs.client_cert}", "does not load"),  # no key in it, none given
        (f"certfile={certs.client_cert}&keyfile={encrypted}", "does not load"),
        (f"certfile={certs.client_cert}&keyfile={other_key}", "does not load"),
        (f"certfile={tmp_path}/none.pem", "is not a file"),
        (f"keyfile={certs.client_key}", "keyfile without certfile"),
    ]:
        with pytest.raises(InvalidArgument, match=said):
            parse_url(f"amqps://h/?{query}")


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("no_verify_ssl=true", "no_verify_ssl must be 1"),
        ("heartbeat=soon", "heartbeat must be a whole number"),
        ("heartbeat=70000", "heartbeat must be a whole number"),
        ("heartbeat=5&heartbeat=6", "given twice"),
        ("auth=kerberos", "auth must be plain"),
        ("auth=external", "auth=external logs in with a client certificate"),
        ("heartbeat=", "has no value"),
        ("justaword", "not name=value pairs"),
    ],
)
def test_option_values_are_checked(query: str, said: str) -> None:
    with pytest.raises(InvalidArgument, match=said):
        parse_url(f"amqps://h/?{query}")


def test_tls_options_on_plain_amqp_are_refused(certs: Certificates) -> None:
    with pytest.raises(InvalidArgument, match=r"cafile is a TLS option.*use amqps://"):
        parse_url(f"amqp://h/?cafile={certs.ca}")
    assert parse_url("amqp://h/?heartbeat=7").heartbeat == 7  # not a TLS option


def test_the_management_default_follows_the_scheme() -> None:
    assert parse_url("amqps://rabbit.example/").management == "https://rabbit.example:15671"
    # Another AMQP port: the API's is not guessed (issue 14: it may be another broker's).
    assert parse_url("amqps://rabbit.example:5999/").management is None
    assert parse_url("amqp://rabbit.example/").management == "http://rabbit.example:15672"
    given = parse_url("amqps://rabbit.example/", management="https://api.example:443")
    assert given.management == "https://api.example:443"


def test_an_ipv6_host_keeps_its_brackets() -> None:
    url = parse_url("amqps://u:p@[::1]:5999/v?heartbeat=3")
    assert url.host == "::1"
    assert url.amqp == "amqps://u:p@[::1]:5999/v?heartbeat=3"
    assert str(url) == "amqps://u:***@[::1]:5999/v?heartbeat=3"
    assert parse_url("amqps://u:p@[::1]/v").management == "https://[::1]:15671"
    assert parse_url(url.amqp) == url


def test_the_url_heartbeat_wins_over_the_clients_default() -> None:
    assert "heartbeat=7" in parse_url("amqp://h/?heartbeat=7").for_aiormq(heartbeat=5)
    assert "heartbeat=5" not in parse_url("amqp://h/?heartbeat=7").for_aiormq(heartbeat=5)
    assert "heartbeat=5" in parse_url("amqp://h/").for_aiormq(heartbeat=5)


@pytest.mark.parametrize("verify", ["0", "1"])
def test_the_management_context_is_the_one_aiormq_makes(certs: Certificates, verify: str) -> None:
    """httpx gets what aiormq builds from the same URL: same CA, same checks, same client cert."""
    url = parse_url(
        f"amqps://h/?cafile={certs.ca}&certfile={certs.client_cert}"
        f"&keyfile={certs.client_key}&no_verify_ssl={verify}"
    )
    loop = asyncio.new_event_loop()  # aiormq wants one; no test may rely on a current one
    try:
        connection = aiormq.Connection(url.amqp, loop=loop)
        theirs = SSLContextProvider(
            ssl_context=None, ssl_certs=connection.ssl_certs, loop=loop
        )._create_context()
    finally:
        loop.close()
    ours = url.ssl_context()
    assert connection.ssl_certs == SSLCerts(
        cert=str(certs.client_cert),
        key=str(certs.client_key),
        capath=None,
        cafile=str(certs.ca),
        cadata=None,
        verify=verify == "0",
    )
    assert (ours.verify_mode, ours.check_hostname) == (theirs.verify_mode, theirs.check_hostname)
    assert ours.get_ca_certs() == theirs.get_ca_certs()
    assert ours.verify_mode == (ssl.CERT_REQUIRED if verify == "0" else ssl.CERT_NONE)


def test_the_command_line_refuses_a_missing_cafile_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    began = time.monotonic()
    code, _, err = run_cli(
        ["plan", str(FLAGSHIP), "--url", f"amqps://u:SECRET@127.0.0.1:1/?cafile={tmp_path}/ca.pem"],
        capsys,
    )
    took = time.monotonic() - began
    record("cafile missing (command line)", f"exit {code}, refused by parse_url", took)
    assert code == 1
    assert f"cafile '{tmp_path}/ca.pem' is not a file" in err
    assert "cannot talk" not in err  # nothing tried to connect
    assert "SECRET" not in err


# -- against TLS nodes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_node() -> Iterator[TLSNode]:
    """verify_peer, fail_if_no_peer_cert = false: password or certificate logins."""
    with started_tls_node() as node:
        node.add_certificate_user()
        yield node


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load(FLAGSHIP)


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


def applied(node: TLSNode, url: str) -> None:
    """The flagship applied through ``url``, with the node's management API over https."""
    target = parse_url(url, management=node.https_url)
    asyncio.run(converge.apply(load_spec(FLAGSHIP), target, timeout=10))


async def round_trip(contract: Contract, url: str) -> float:
    """Publish a Start and consume it over ``url``; seconds from opening to delivery."""
    got: list[Delivery[Any]] = []

    async def handler(delivery: Delivery[Any]) -> None:
        got.append(delivery)

    payload = start()
    began = time.monotonic()
    async with (
        Client(contract, url, service="server") as server,
        Client(contract, url, service="worker") as worker,
    ):
        consumer = worker.consume("jobs.ready", handler)
        await consumer.ready()
        await server.publish("Start", payload)
        await until(lambda: len(got) == 1, 10, "for the Start over TLS")
        await consumer.cancel()
    assert got[0].body == payload
    return time.monotonic() - began


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``aiormq.Connection.connect`` call of the test (the URL it went to, masked)."""
    calls: list[str] = []
    connect = aiormq.Connection.connect

    async def counted(self: aiormq.Connection, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(self))
        return await connect(self, *args, **kwargs)

    monkeypatch.setattr(aiormq.Connection, "connect", counted)
    return calls


async def refused(
    contract: Contract, url: str, attempts: list[str], connect_timeout: float = 30
) -> tuple[ConnectionFailed, float, int]:
    """The client's failure to open, the seconds it took, and how many attempts it made."""
    attempts.clear()
    began = time.monotonic()
    with pytest.raises(ConnectionFailed) as failed:
        async with Client(contract, url, connect_timeout=connect_timeout):
            pass
    return failed.value, time.monotonic() - began, len(attempts)


def test_the_right_ca_connects_publishes_and_consumes(
    tls_node: TLSNode, contract: Contract
) -> None:
    url = tls_node.amqps_url(cafile=str(tls_node.certs.ca))
    applied(tls_node, url)
    took = 0.0

    async def body() -> None:
        nonlocal took
        took = await round_trip(contract, url)

    run(body)
    record("right CA", "connects; publish + consume round trip", took)


def test_the_urls_heartbeat_reaches_the_broker(tls_node: TLSNode, contract: Contract) -> None:
    url = tls_node.amqps_url(cafile=str(tls_node.certs.ca), heartbeat="9")
    seen: list[str] = []

    async def body() -> None:
        async with Client(contract, url, heartbeat=5):
            listed = tls_node.ctl("list_connections", "-q", "--no-table-headers", "timeout", "ssl")
            seen.extend(listed.stdout.split())

    run(body)
    assert seen[:2] == ["9", "true"]  # the URL's 9, not the client's 5; over TLS


def test_plan_and_apply_over_amqps_with_management_over_https(
    tls_node: TLSNode, capsys: pytest.CaptureFixture[str]
) -> None:
    vhost = "tls-cli"
    assert tls_node.ctl("add_vhost", vhost).returncode == 0
    assert tls_node.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*").returncode == 0
    url = tls_node.amqps_url(vhost, cafile=str(tls_node.certs.ca))
    where = ["--url", url, "--management-url", tls_node.https_url]
    began = time.monotonic()
    code, out, err = run_cli(["apply", str(FLAGSHIP), *where], capsys)
    assert code == 0, err
    code, out, err = run_cli(["plan", str(FLAGSHIP), *where], capsys)
    took = time.monotonic() - began
    assert code == 0, out + err  # everything seen (policies too: only the API shows them)
    assert "(read through the management API)" in out
    assert ":guest@" not in out + err
    record("plan + apply (amqps, management https)", "apply exit 0, then plan exit 0", took)


def test_an_unknown_ca_fails_at_once_and_says_cafile(
    tls_node: TLSNode, contract: Contract, attempts: list[str]
) -> None:
    url = tls_node.amqps_url(cafile=str(tls_node.certs.other_ca))
    failure, took, tried = asyncio.run(refused(contract, url, attempts))
    said = str(failure)
    record("wrong CA (Client)", "ConnectionFailed, not retried", took)
    assert took < AT_ONCE
    assert tried == 1
    assert "signed by a CA this client does not trust" in said
    assert "self-signed certificate in certificate chain" in said  # OpenSSL's words
    assert "cafile=" in said
    assert "guest:" not in said


def test_an_unknown_ca_fails_at_once_on_the_command_line_too(
    tls_node: TLSNode, capsys: pytest.CaptureFixture[str]
) -> None:
    url = tls_node.amqps_url(cafile=str(tls_node.certs.other_ca))
    began = time.monotonic()
    code, _, err = run_cli(["plan", str(FLAGSHIP), "--url", url], capsys)
    took = time.monotonic() - began
    record("wrong CA (rabbitry plan)", f"exit {code}", took)
    assert code == 1
    assert took < AT_ONCE
    assert "signed by a CA this client does not trust" in err
    assert "--url" in err


def test_a_certificate_for_another_name_fails_at_once(
    tls_node: TLSNode, contract: Contract, attempts: list[str]
) -> None:
    # The node's certificate is for 127.0.0.1; localhost reaches the same listener.
    url = tls_node.amqps_url(host="localhost", cafile=str(tls_node.certs.ca))
    failure, took, tried = asyncio.run(refused(contract, url, attempts))
    said = str(failure)
    record("wrong host name (Client)", "ConnectionFailed, not retried", took)
    assert took < AT_ONCE
    assert tried == 1
    assert "not for the host name in the URL" in said
    assert "'localhost'" in said


def test_no_verify_ssl_connects_to_a_node_whose_ca_is_unknown(
    tls_node: TLSNode, contract: Contract
) -> None:
    url = tls_node.amqps_url(cafile=str(tls_node.certs.other_ca), no_verify_ssl="1")
    took = 0.0

    async def body() -> None:
        nonlocal took
        took = await round_trip(contract, url)

    run(body)
    record("wrong CA + no_verify_ssl=1", "connects (no verification)", took)


def test_the_management_api_over_https_says_an_unknown_ca_clearly(tls_node: TLSNode) -> None:
    url = parse_url(
        tls_node.amqps_url(cafile=str(tls_node.certs.other_ca)), management=tls_node.https_url
    )
    began = time.monotonic()
    with pytest.raises(ManagementError) as failed:
        asyncio.run(read_vhost(url, timeout=10))
    took = time.monotonic() - began
    record("wrong CA (management https)", "ManagementError", took)
    assert took < AT_ONCE
    assert "management API" in str(failure := failed.value)
    assert "signed by a CA this client does not trust" in str(failure)
    right = parse_url(
        tls_node.amqps_url(cafile=str(tls_node.certs.ca)), management=tls_node.https_url
    )
    assert "amq.topic" in asyncio.run(read_vhost(right, timeout=10)).exchanges


def external_url(node: TLSNode, certfile: Path, **more: str) -> str:
    return node.amqps_url(
        login=False, cafile=str(node.certs.ca), certfile=str(certfile), auth="external", **more
    )


def test_a_client_certificate_logs_in_as_its_common_name(
    tls_node: TLSNode, contract: Contract
) -> None:
    certs = tls_node.certs
    url = external_url(tls_node, certs.client_cert, keyfile=str(certs.client_key))
    assert parse_url(url).password == "guest"  # the URL has none: PLAIN would send guest's
    applied(tls_node, tls_node.amqps_url(cafile=str(certs.ca)))  # the flagship, as guest
    took = 0.0
    users: list[str] = []

    async def body() -> None:
        nonlocal took
        took = await round_trip(contract, url)
        async with Client(contract, url):
            listed = tls_node.ctl("list_connections", "user", "auth_mechanism", "-q")
            users.extend(listed.stdout.split())

    run(body)
    record("auth=external, CN user exists", "logs in as the CN; round trip", took)
    assert users[-2:] == [CLIENT_USER, "EXTERNAL"]


def test_a_client_certificate_whose_name_is_no_user_is_refused_at_once(
    tls_node: TLSNode, contract: Contract, attempts: list[str]
) -> None:
    url = external_url(tls_node, tls_node.client_certificate("nobody-here"))
    failure, took, tried = asyncio.run(refused(contract, url, attempts))
    record("auth=external, CN no user", "ConnectionFailed, not retried", took)
    assert took < AT_ONCE
    assert tried == 1
    assert "refused the login by client certificate" in str(failure)
    assert "CN" in str(failure)


@pytest.fixture(scope="module")
def strict_node() -> Iterator[TLSNode]:
    """fail_if_no_peer_cert = true: no client certificate, no connection."""
    with started_tls_node(fail_if_no_peer_cert=True) as node:
        node.add_certificate_user()
        yield node


def test_a_node_that_requires_a_certificate_takes_external_and_refuses_none(
    strict_node: TLSNode, contract: Contract
) -> None:
    url = external_url(strict_node, strict_node.certs.client_combined)  # key in certfile
    certs = strict_node.certs
    # guest logs in with a password, and shows the certificate the node requires of everyone.
    applied(
        strict_node,
        strict_node.amqps_url(cafile=str(certs.ca), certfile=str(certs.client_combined)),
    )
    took = 0.0

    async def body() -> None:
        nonlocal took
        took = await round_trip(contract, url)

    run(body)
    record("fail_if_no_peer_cert, auth=external", "logs in as the CN; round trip", took)


def test_a_node_that_requires_a_certificate_refuses_a_client_without_one(
    strict_node: TLSNode, contract: Contract, attempts: list[str]
) -> None:
    """The broker's TLS alert is permanent; the bare reset it mostly comes as is retried.

    On 3.10.8 the client reads the alert (said at once: "refused this client's
    certificate") or, more often, only the reset that follows it, which any
    network fault also gives: that one is retried until ``connect_timeout``, and
    the error says that a certificate may be what the broker wants.
    """
    url = strict_node.amqps_url(cafile=str(strict_node.certs.ca))
    failure, took, tried = asyncio.run(refused(contract, url, attempts, connect_timeout=3))
    said = str(failure)
    alert = "refused this client's certificate" in said
    record(
        "fail_if_no_peer_cert, no certificate",
        f"{tried} attempt(s), ended by "
        + ("a TLS alert (permanent)" if alert else "connect_timeout 3 s (a reset is retried)"),
        took,
    )
    assert alert or "give certfile=" in said
    assert took < 3 + AT_ONCE


def test_an_expired_certificate_fails_at_once_and_external_needs_the_broker_to_offer_it(
    contract: Contract, attempts: list[str]
) -> None:
    """One more node: its certificate expired yesterday, and it does not offer EXTERNAL."""
    with started_tls_node(node_expired=True, external=False) as node:
        url = node.amqps_url(cafile=str(node.certs.ca))
        failure, took, tried = asyncio.run(refused(contract, url, attempts))
        record("expired node certificate", "ConnectionFailed, not retried", took)
        assert took < AT_ONCE
        assert tried == 1
        assert "the broker's certificate is expired (certificate has expired)" in str(failure)
        assert "renew the certificate" in str(failure)

        # Past verification (no_verify_ssl=1), the broker offers no EXTERNAL.
        url = external_url(node, node.certs.client_combined, no_verify_ssl="1")
        failure, took, tried = asyncio.run(refused(contract, url, attempts))
        record("auth=external, broker without EXTERNAL", "ConnectionFailed, not retried", took)
        assert took < AT_ONCE
        assert tried == 1
        said = str(failure)
        assert "does not offer the EXTERNAL login" in said
        assert re.search(r"it offers (AMQPLAIN PLAIN|PLAIN AMQPLAIN):", said)
        assert "rabbitmq_auth_mechanism_ssl" in said
