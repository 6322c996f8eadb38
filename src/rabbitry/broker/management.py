"""A vhost's live topology, read through RabbitMQ's management HTTP API.

Five GETs, sent concurrently, each asking only for the columns the topology
needs: ``/api/exchanges/{vhost}``, ``/api/queues/{vhost}``,
``/api/bindings/{vhost}``, ``/api/policies/{vhost}`` and
``/api/operator-policies/{vhost}`` (any management user may read both; writing
them, ``send``, needs the ``policymaker`` or ``administrator`` tag).  The answer
is normalised with ``state``'s helpers, so that a vhost just applied from a spec
compares equal to ``desired(spec)``.

Listing queues with their statistics (message and consumer counts) is the
slowest of the three: for 2,000 queues on RabbitMQ 3.10.8, 0.20-0.26 s against
0.06 s with ``disable_stats`` (the bindings take 0.12 s).  So
``read_vhost(counts=False)`` leaves the counts out, and ``read_queue_counts``
asks for them alone, for when they matter (``live.read_live``).

httpx's exceptions and the API's error statuses are mapped here, once, into
rabbitry's tree; messages name the API's ``host:port``, never the password.

Over HTTPS (the default for an ``amqps://`` broker: ``https://HOST:15671``)
the client trusts what the AMQP connection trusts and shows the same client
certificate: the URL's ``cafile``, ``certfile``/``keyfile`` and
``no_verify_ssl``, as one SSL context (``BrokerURL.ssl_context``).  A
certificate that does not verify is said as for AMQP (``broker.tls.explain``).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from rabbitry.broker.state import (
    BindingState,
    ExchangeState,
    PolicyState,
    QueueState,
    Topology,
    normalise_arguments,
)
from rabbitry.broker.tls import explain, verification_failure
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import (
    AccessRefused,
    BrokerError,
    BrokerTimeout,
    ConnectionFailed,
    ManagementError,
    Option,
    Phrase,
    first_broker_error,
)

__all__ = [
    "Overview",
    "api_base",
    "policy_from_row",
    "queue_from_row",
    "read_object",
    "read_overview",
    "read_queue_counts",
    "read_rows",
    "read_version",
    "read_vhost",
    "send",
    "unknown_api",
]

_EXCHANGE_COLUMNS = "name,type,durable,auto_delete,internal,arguments"
_QUEUE_COLUMNS = (
    "name,type,durable,auto_delete,exclusive,arguments,policy,messages,consumers,state,node"
)
#: ``policy`` (the user policy the broker applies) is in the queue's record, so it is
#: there without statistics; ``operator_policy`` and ``effective_policy_definition``
#: are not (3.10.8 leaves them out with ``disable_stats``, and lists them only seconds
#: after a queue's first statistics otherwise): plan works those out itself.
#: ``state`` and ``node`` say a classic queue's node is down (``live.py``'s docstring).
_QUEUE_DEFINITION_COLUMNS = "name,type,durable,auto_delete,exclusive,arguments,policy,state,node"
_COUNT_COLUMNS = "name,messages,consumers"
_BINDING_COLUMNS = "source,destination,destination_type,routing_key,arguments"
#: Seconds to wait for the TCP (and TLS) connection; a firewall that drops
#: packets should read as "not reachable" quickly, not use up the whole deadline.
_CONNECT_TIMEOUT = 5.0

_ENABLE_HINT = Phrase.of(
    "enable it (rabbitmq-plugins enable rabbitmq_management) or pass ", Option.MANAGEMENT_URL
)

Row = Mapping[str, Any]


async def read_vhost(url: BrokerURL, *, timeout: float, counts: bool = True) -> Topology:
    """Every exchange, queue and binding of ``url.vhost``, within ``timeout`` seconds.

    The default exchange and ``amq.*`` are included (``plan.diff`` leaves them
    alone); the default exchange's implicit bindings (source ``""``) are not.
    Exclusive (run-time) queues are included with ``exclusive=True``.  With
    ``counts=False`` the queues are listed without statistics: their
    ``messages`` and ``consumers`` are ``None`` (unknown).
    """
    vhost = quote(url.vhost, safe="")
    queue_query = {"columns": _QUEUE_COLUMNS}
    if not counts:
        queue_query = {"columns": _QUEUE_DEFINITION_COLUMNS, "disable_stats": "true"}
    try:
        async with _client(url, timeout) as client, asyncio.TaskGroup() as group:
            exchanges = group.create_task(
                _get(client, url, f"/api/exchanges/{vhost}", {"columns": _EXCHANGE_COLUMNS})
            )
            queues = group.create_task(_get(client, url, f"/api/queues/{vhost}", queue_query))
            bindings = group.create_task(
                _get(client, url, f"/api/bindings/{vhost}", {"columns": _BINDING_COLUMNS})
            )
            policies = group.create_task(_get(client, url, f"/api/policies/{vhost}", {}))
            operator_policies = group.create_task(
                _get(client, url, f"/api/operator-policies/{vhost}", {})
            )
    except TimeoutError:
        raise _timeout(url) from None
    except BaseExceptionGroup as failures:
        raise first_broker_error(failures) from None
    return Topology(
        exchanges={row["name"]: _exchange(row) for row in exchanges.result()},
        queues={row["name"]: queue_from_row(row) for row in queues.result()},
        bindings=frozenset(_binding(row) for row in bindings.result() if row["source"] != ""),
        policies={row["name"]: policy_from_row(row, False) for row in policies.result()},
        operator_policies={
            row["name"]: policy_from_row(row, True) for row in operator_policies.result()
        },
    )


async def read_queue_counts(
    url: BrokerURL, *, timeout: float
) -> dict[str, tuple[int | None, int | None]]:
    """queue → (messages, consumers) as the API's statistics have them (``None``: not yet)."""
    vhost = quote(url.vhost, safe="")
    try:
        async with _client(url, timeout) as client:
            rows = await _get(client, url, f"/api/queues/{vhost}", {"columns": _COUNT_COLUMNS})
    except TimeoutError:
        raise _timeout(url) from None
    return {
        row["name"]: (_count(row.get("messages")), _count(row.get("consumers"))) for row in rows
    }


async def read_rows(
    url: BrokerURL, path: str, *, timeout: float, query: Mapping[str, str] | None = None
) -> list[Row]:
    """The JSON list at the API's ``path`` (``/api/policies/{vhost}``), errors mapped as above."""
    try:
        async with _client(url, timeout) as client:
            return await _get(client, url, path, query or {})
    except TimeoutError:
        raise _timeout(url) from None


async def read_object(url: BrokerURL, path: str, *, timeout: float) -> Any:
    """The JSON at the API's ``path``, or ``None`` when it cannot be had (any error status,
    no answer): for what is worth asking but not worth failing over (permissions, which
    only an administrator may read)."""
    try:
        async with _client(url, timeout) as client:
            response = await client.get(path)
    except (BrokerError, TimeoutError, httpx.HTTPError):
        return None
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


@dataclass(frozen=True)
class Overview:
    """Who the API's broker is: ``/api/overview``'s version, cluster name and node
    (each ``None`` when the answer has none)."""

    version: str | None
    cluster_name: str | None
    node: str | None


async def read_version(url: BrokerURL, *, timeout: float) -> str | None:
    """The RabbitMQ version the API's node runs (``/api/overview``'s ``rabbitmq_version``,
    which any management user may read); ``None`` when the answer has none."""
    return (await read_overview(url, timeout=timeout)).version


async def read_overview(url: BrokerURL, *, timeout: float) -> Overview:
    """``/api/overview``'s version, cluster name and node (any management user may read
    it): what plan compares with the AMQP connection's server properties."""
    columns = {"columns": "rabbitmq_version,cluster_name,node"}
    try:
        async with _client(url, timeout) as client:
            response = await _answer(client, url, "/api/overview", columns)
    except TimeoutError:  # the client's whole-use deadline
        raise _timeout(url) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}

    def text(key: str) -> str | None:
        value = body.get(key)
        return value if isinstance(value, str) else None

    return Overview(text("rabbitmq_version"), text("cluster_name"), text("node"))


@contextlib.asynccontextmanager
async def _client(url: BrokerURL, timeout: float) -> AsyncIterator[httpx.AsyncClient]:
    """An API client for ``url``, the whole use bounded by ``timeout``.

    Over HTTPS it verifies with the AMQP URL's CA and shows its client certificate.
    """
    if url.management is None:
        raise ManagementError(unknown_api(url))
    try:
        base = _base(url.management)
        verify: ssl.SSLContext | bool = True
        if urlsplit(base).scheme == "https":
            verify = url.ssl_context()
        client = httpx.AsyncClient(
            base_url=base,
            auth=httpx.BasicAuth(url.username, url.password),
            timeout=httpx.Timeout(timeout, connect=min(timeout, _CONNECT_TIMEOUT)),
            headers={"accept": "application/json"},
            verify=verify,
        )
    except (OSError, ssl.SSLError) as exc:
        raise ManagementError(
            Phrase.of(
                f"{_where(url)}: the certificate files in ",
                Option.URL,
                f" no longer load ({' '.join(str(exc).split())}); fix them",
            )
        ) from None
    except (httpx.InvalidURL, ValueError):
        raise ManagementError(
            Phrase.of(
                f"{_where(url)} is not a management API URL (http://host:15672); fix ",
                Option.MANAGEMENT_URL,
            )
        ) from None
    async with client, asyncio.timeout(timeout):
        yield client


def _exchange(row: Row) -> ExchangeState:
    return ExchangeState(
        name=row["name"],
        type=row["type"],
        durable=bool(row.get("durable", True)),
        auto_delete=bool(row.get("auto_delete", False)),
        internal=bool(row.get("internal", False)),
        arguments=normalise_arguments(row.get("arguments")),
    )


def queue_from_row(row: Row) -> QueueState:
    """A queue row of ``/api/queues/{vhost}`` as ``state`` has it."""
    arguments = row.get("arguments") or {}
    return QueueState(
        name=row["name"],
        # 3.10 always says ``type``; older brokers only had the argument, or nothing (classic).
        type=row.get("type") or arguments.get("x-queue-type") or "classic",
        durable=bool(row.get("durable", True)),
        auto_delete=bool(row.get("auto_delete", False)),
        exclusive=bool(row.get("exclusive", False)),
        arguments=normalise_arguments(arguments),
        # Missing counts stay None (unknown), never 0.  The API fills ``messages``
        # and ``consumers`` from statistics emitted every collect_statistics_interval
        # (5 s by default): a queue declared and published to a moment ago is listed
        # without them (seen on 3.10.8 with 3 messages in it), and for a few seconds
        # more they may say 0 while it holds messages.  0 would tell apply it may
        # delete the queue; None makes apply ask, and
        # ``live.read_live`` asks the queues whose counts matter over AMQP.
        messages=_count(row.get("messages")),
        consumers=_count(row.get("consumers")),
        policy=row.get("policy") or None,
        down_on=str(row.get("node") or "?") if row.get("state") == "down" else None,
    )


def policy_from_row(row: Row, operator: bool) -> PolicyState:
    """A row of ``/api/policies/{vhost}`` (``operator``: ``/api/operator-policies``)."""
    return PolicyState(
        name=row["name"],
        pattern=row.get("pattern") or "",
        apply_to=row.get("apply-to") or "all",
        priority=int(row.get("priority") or 0),
        definition=normalise_arguments(row.get("definition")),
        operator=operator,
    )


def _binding(row: Row) -> BindingState:
    return BindingState(
        source=row["source"],
        destination_type=row["destination_type"],
        destination=row["destination"],
        routing_key=row.get("routing_key") or "",
        arguments=normalise_arguments(row.get("arguments")),
    )


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


async def _answer(
    client: httpx.AsyncClient, url: BrokerURL, path: str, query: Mapping[str, str]
) -> httpx.Response:
    """The API's 200 answer at ``path``, or a ``BrokerError`` saying what went wrong and what
    to do (httpx's errors are mapped here, once)."""
    try:
        response = await client.get(path, params=query)
    except httpx.ConnectTimeout as exc:
        raise _unreachable(url, exc) from None
    except httpx.TimeoutException:
        raise _timeout(url) from None
    except httpx.HTTPError as exc:  # refused, DNS, TLS, reset, protocol
        raise _unreachable(url, exc) from None
    if response.status_code != 200:
        raise _status_error(url, response)
    return response


async def _get(
    client: httpx.AsyncClient, url: BrokerURL, path: str, query: Mapping[str, str]
) -> list[Row]:
    """The JSON list at ``path``, or a ``BrokerError`` saying what went wrong and what to do."""
    response = await _answer(client, url, path, query)
    try:
        rows = response.json()
    except ValueError:
        rows = None
    if not isinstance(rows, list):
        raise ManagementError(
            Phrase.of(
                f"{_where(url)} answered {path} with something that is not the RabbitMQ "
                "management API's JSON; check ",
                Option.MANAGEMENT_URL,
            )
        )
    return rows


async def send(
    url: BrokerURL,
    method: str,
    path: str,
    *,
    timeout: float,
    body: Mapping[str, Any] | None = None,
    what: str,
    needs_tag: str = "administrator",
) -> None:
    """One write to the API (``PUT``/``DELETE`` of ``path``), its errors mapped.

    ``what`` names the object for the messages ("policy 'ttl'"); ``needs_tag`` is
    the user tag a 401 asks for.  Deleting what is already gone succeeds: a re-run
    converges.
    """
    try:
        async with _client(url, timeout) as client:
            response = await client.request(method, path, json=body)
    except httpx.ConnectTimeout as exc:
        raise _unreachable(url, exc) from None
    except (TimeoutError, httpx.TimeoutException):
        raise _timeout(url) from None
    except httpx.HTTPError as exc:
        raise _unreachable(url, exc) from None
    status = response.status_code
    if status in (200, 201, 204) or (status == 404 and method == "DELETE"):
        return
    _, reason = _error_body(response)
    if status == 400:
        raise ManagementError(
            f"{_where(url)} refused {what}: {html.unescape(reason) or 'bad request'}; "
            "fix it in the spec (rabbitry check names what the broker takes)"
        )
    if status in (401, 403) and "login" not in reason.lower():
        raise AccessRefused(
            f"{_where(url)}: user {url.username!r} may not write {what} ({reason}); "
            f"give it the {needs_tag!r} tag (rabbitmqctl set_user_tags {url.username} "
            f"{needs_tag}) or apply as a user that has it"
        )
    raise _status_error(url, response)


def _status_error(url: BrokerURL, response: httpx.Response) -> BrokerError:
    where, user, vhost = _where(url), url.username, url.vhost
    error, reason = _error_body(response)
    status = response.status_code
    if status == 401:
        if reason == "Not management user":
            return ConnectionFailed(
                f"{where} refused user {user!r}: it is not a management user; give it the "
                f"'management' tag (rabbitmqctl set_user_tags {user} management)"
            )
        if "virtual host" in reason:
            return ConnectionFailed(
                Phrase.of(
                    f"{where}: user {user!r} may not use vhost {vhost!r}; grant permissions "
                    f"(rabbitmqctl set_permissions -p {vhost!r} {user} '.*' '.*' '.*') or fix ",
                    Option.URL,
                )
            )
        return ConnectionFailed(
            Phrase.of(
                f"{where} refused the login of user {user!r}; check the user and password in ",
                Option.URL,
            )
        )
    if status == 404 and error == "Object Not Found":
        return ConnectionFailed(
            Phrase.of(
                f"{where}: RabbitMQ has no vhost {vhost!r}; create it "
                f"(rabbitmqctl add_vhost {vhost!r}) or fix ",
                Option.URL,
            )
        )
    if status == 404:
        return ManagementError(
            Phrase.of(
                f"{where} has no RabbitMQ management API at {response.request.url.path}; check ",
                Option.MANAGEMENT_URL,
            )
        )
    detail = f": {reason or error}" if (reason or error) else ""
    return ManagementError(
        f"{where} answered HTTP {status} for {response.request.url.path}{detail}; run again, "
        "or read the broker's log"
    )


def _error_body(response: httpx.Response) -> tuple[str, str]:
    """RabbitMQ's ``{"error": ..., "reason": ...}``; empty strings when it is not that."""
    try:
        body = response.json()
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("error") or ""), " ".join(str(body.get("reason") or "").split())[:200]


def _unreachable(url: BrokerURL, exc: httpx.HTTPError) -> ManagementError:
    failure = verification_failure(exc)
    if failure is not None:
        return ManagementError(
            explain(failure, _where(url), urlsplit(url.management or "").hostname or "")
        )
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return ManagementError(
        Phrase.of(
            f"{_where(url)} is not reachable ({detail}); check that RabbitMQ is running there, "
            "and if it is, ",
            _ENABLE_HINT,
        )
    )


def _timeout(url: BrokerURL) -> BrokerTimeout:
    return BrokerTimeout(
        f"{_where(url)} did not answer in time; check that RabbitMQ is running and not "
        "overloaded (rabbitmq-diagnostics status), then run again"
    )


def _where(url: BrokerURL) -> str:
    if url.management is None:
        return "RabbitMQ's management API (address unknown)"
    return f"RabbitMQ's management API at {_endpoint(url.management)}"


def unknown_api(url: BrokerURL) -> Phrase:
    """Why ``url`` has no management API address: its AMQP port is not the default."""
    default = 5671 if url.scheme == "amqps" else 5672
    return Phrase.of(
        f"the management API's address is not known: {url.endpoint} is not on AMQP's "
        f"default port {default}, so the API is not assumed at port "
        f"{15671 if url.scheme == 'amqps' else 15672} of that host (another broker may "
        "answer there); give it with ",
        Option.MANAGEMENT_URL,
    )


def _endpoint(management: str) -> str:
    """``host:port`` of the API's URL, any user and password in it left out."""
    parts = urlsplit(management)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # not a number: show what was given
        return parts.netloc.rpartition("@")[2] or management
    return f"{parts.hostname or 'localhost'}:{port}"


def api_base(url: BrokerURL) -> str | None:
    """The management API's base URL as it may be shown: without any user and password
    (``None``: not known, see ``BrokerURL.management``)."""
    return None if url.management is None else _base(url.management)


def _base(management: str) -> str:
    """The API's base URL without user info (credentials come from the AMQP URL)."""
    parts = urlsplit(management)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc))
