"""Helpers for tests against the real RabbitMQ broker.

Every test that needs the broker gets a fresh vhost of its own, made and
removed through the management HTTP API, so tests never see each other's
exchanges, queues or bindings and may run against a shared broker.

Configuration comes from the environment, like the CLI's:

- ``RABBITRY_URL`` (default ``amqp://guest:guest@localhost:5672/``): the AMQP
  endpoint; its user and password are also used for the management API;
- ``RABBITRY_MANAGEMENT_URL`` (default ``http://localhost:15672``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
DEFAULT_MANAGEMENT_URL = "http://localhost:15672"
VHOST_PREFIX = "rabbitry-test-"
SETUP_HINT = "run `./run setup` to install and start it"
HTTP_TIMEOUT = 10.0

Json = dict[str, Any]


class BrokerUnreachable(Exception):
    """The broker or its management API does not answer; the message is one line."""


@dataclass(frozen=True)
class BrokerConfig:
    """Where the broker is, read once from the environment."""

    amqp_url: str = field(repr=False)  # carries the password
    management_url: str
    username: str
    password: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BrokerConfig:
        env = os.environ if environ is None else environ
        amqp_url = env.get("RABBITRY_URL") or DEFAULT_AMQP_URL
        management_url = (env.get("RABBITRY_MANAGEMENT_URL") or DEFAULT_MANAGEMENT_URL).rstrip("/")
        parts = urlsplit(amqp_url)
        return cls(
            amqp_url=amqp_url,
            management_url=management_url,
            username=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
        )

    @property
    def amqp_address(self) -> tuple[str, int]:
        parts = urlsplit(self.amqp_url)
        default_port = 5671 if parts.scheme == "amqps" else 5672
        return parts.hostname or "localhost", parts.port or default_port

    def amqp_url_for(self, vhost: str) -> str:
        """The AMQP URL with its path replaced by ``vhost``, quoted (``/`` is ``%2F``)."""
        parts = urlsplit(self.amqp_url)
        return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text}"


class ManagementAPI:
    """A small client for the parts of the management HTTP API the tests use."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self._client = httpx.Client(
            base_url=config.management_url,
            auth=(config.username, config.password),
            timeout=HTTP_TIMEOUT,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ManagementAPI:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def _quote(name: str) -> str:
        return quote(name, safe="")

    @staticmethod
    def _checked(response: httpx.Response, *allowed: int) -> httpx.Response:
        """``response``, unless it is an error not in ``allowed``: then a one-line error."""
        if response.is_error and response.status_code not in allowed:
            request = response.request
            raise httpx.HTTPStatusError(
                f"{request.method} {request.url.path} -> HTTP {response.status_code}: "
                f"{' '.join(response.text.split())[:200]}",
                request=request,
                response=response,
            )
        return response

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._checked(self._client.request(method, path, **kwargs))

    def get_json(self, path: str) -> Any:
        return self._request("GET", path).json()

    def check_reachable(self) -> None:
        """Raise ``BrokerUnreachable`` unless the management API and the AMQP port answer."""
        where = self.config.management_url
        try:
            response = self._client.get("/api/overview")
        except httpx.HTTPError as exc:
            raise BrokerUnreachable(
                f"RabbitMQ's management API at {where} is not reachable ({_one_line(exc)}); "
                f"{SETUP_HINT}"
            ) from exc
        if response.status_code in (401, 403):
            raise BrokerUnreachable(
                f"RabbitMQ's management API at {where} refused user {self.config.username!r} "
                f"(HTTP {response.status_code}); check RABBITRY_URL's credentials or {SETUP_HINT}"
            )
        if response.status_code != 200:
            raise BrokerUnreachable(
                f"RabbitMQ's management API at {where} answered HTTP {response.status_code}; "
                f"{SETUP_HINT}"
            )
        host, port = self.config.amqp_address
        try:
            with socket.create_connection((host, port), timeout=HTTP_TIMEOUT):
                pass
        except OSError as exc:
            raise BrokerUnreachable(
                f"RabbitMQ's AMQP port {host}:{port} is not reachable ({_one_line(exc)}); "
                f"{SETUP_HINT}"
            ) from exc

    def create_vhost(self, name: str) -> None:
        """Create ``name`` and give the configured user full permissions on it."""
        self._request("PUT", f"/api/vhosts/{self._quote(name)}", json={})
        self._request(
            "PUT",
            f"/api/permissions/{self._quote(name)}/{self._quote(self.config.username)}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )

    def delete_vhost(self, name: str) -> None:
        """Delete ``name`` with everything in it; a vhost already gone is fine."""
        self._checked(self._client.delete(f"/api/vhosts/{self._quote(name)}"), 404)

    def vhost_exists(self, name: str) -> bool:
        response = self._checked(self._client.get(f"/api/vhosts/{self._quote(name)}"), 404)
        return response.status_code != 404

    def vhost_permissions(self, name: str) -> list[Json]:
        result: list[Json] = self.get_json(f"/api/vhosts/{self._quote(name)}/permissions")
        return result


@dataclass(frozen=True)
class Vhost:
    """A fresh vhost on the real broker, for one test."""

    name: str
    amqp_url: str = field(repr=False)  # carries the password
    management_url: str
    api: ManagementAPI = field(repr=False, compare=False)

    def _list(self, kind: str) -> list[Json]:
        result: list[Json] = self.api.get_json(f"/api/{kind}/{quote(self.name, safe='')}")
        return result

    def queues(self) -> list[Json]:
        """The management API's JSON for this vhost's queues."""
        return self._list("queues")

    def exchanges(self) -> list[Json]:
        """The management API's JSON for this vhost's exchanges (the ``amq.*`` ones too)."""
        return self._list("exchanges")

    def bindings(self) -> list[Json]:
        """The management API's JSON for this vhost's bindings (default-exchange ones too)."""
        return self._list("bindings")

    def queue_names(self) -> set[str]:
        return {queue["name"] for queue in self.queues()}

    def exists(self) -> bool:
        return self.api.vhost_exists(self.name)


def new_vhost_name() -> str:
    return f"{VHOST_PREFIX}{uuid.uuid4().hex[:12]}"


def fresh_vhost(api: ManagementAPI) -> Generator[Vhost, None, None]:
    """Create a fresh vhost, yield it once, delete it when resumed or closed.

    The ``vhost`` fixture is this generator; tests can also drive it by hand.
    """
    name = new_vhost_name()
    try:
        api.create_vhost(name)
        yield Vhost(
            name=name,
            amqp_url=api.config.amqp_url_for(name),
            management_url=api.config.management_url,
            api=api,
        )
    finally:
        api.delete_vhost(name)


@contextmanager
def made_user(api: ManagementAPI, vhost: str | None, tags: str) -> Iterator[tuple[str, str]]:
    """A throwaway user with ``tags``, with full permissions on ``vhost`` (if any).

    ``tags=""`` makes a user the management API refuses: the way to make plan
    read a vhost over AMQP while the API itself is up.
    """
    name, password = f"rabbitry-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    config = api.config
    auth = (config.username, config.password)
    with httpx.Client(base_url=config.management_url, auth=auth) as client:
        client.put(f"/api/users/{name}", json={"password": password, "tags": tags})
        try:
            if vhost is not None:
                client.put(
                    f"/api/permissions/{quote(vhost, safe='')}/{name}",
                    json={"configure": ".*", "write": ".*", "read": ".*"},
                ).raise_for_status()
            yield name, password
        finally:
            client.delete(f"/api/users/{name}")
