"""Broker addresses: the AMQP URL, its vhost, the management API's URL, and a safe display.

The password never leaves this module in text form: ``str(url)`` and
``url.masked`` show ``***`` in its place.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from rabbitry.errors import InvalidArgument

__all__ = ["DEFAULT_URL", "BrokerURL", "parse_url"]

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
MANAGEMENT_PORT = 15672
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


@dataclass(frozen=True)
class BrokerURL:
    scheme: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    vhost: str
    #: An explicit management API base URL; derived from the AMQP URL when ``None``.
    management_override: str | None = None
    #: The user gave the management URL (flag or ``$RABBITRY_MANAGEMENT_URL``): it must
    #: answer, and plan and apply never fall back to AMQP when it does not.
    management_required: bool = False

    @property
    def endpoint(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"

    @property
    def amqp(self) -> str:
        """The full URL, password included: for the client library only, never for output."""
        auth = f"{quote(self.username, safe='')}:{quote(self.password, safe='')}@"
        return f"{self.scheme}://{auth}{self.host}:{self.port}/{quote(self.vhost, safe='')}"

    @property
    def masked(self) -> str:
        """The URL with the password hidden."""
        auth = f"{quote(self.username, safe='')}:***@" if self.username else ""
        return f"{self.scheme}://{auth}{self.host}:{self.port}/{quote(self.vhost, safe='')}"

    @property
    def management(self) -> str:
        """The management API's base URL (``http://host:15672``)."""
        if self.management_override:
            return self.management_override.rstrip("/")
        scheme = "https" if self.scheme == "amqps" else "http"
        return f"{scheme}://{self.host}:{MANAGEMENT_PORT}"

    def __str__(self) -> str:
        return self.masked


def parse_url(text: str | None = None, *, management: str | None = None) -> BrokerURL:
    """Parse an AMQP URL (default ``$RABBITRY_URL``, then ``DEFAULT_URL``).

    The vhost is the path, percent-decoded (``/%2F`` is ``/``); an empty path
    is the default vhost ``/``, as in aiormq.
    """
    raw = text or os.environ.get("RABBITRY_URL") or DEFAULT_URL
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise InvalidArgument(f"{_mask(raw)} is not a valid URL: {exc}") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise InvalidArgument(
            f"{_mask(raw)} is not an AMQP URL: it must start with amqp:// or amqps://"
        )
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    if management is not None and urlsplit(management).scheme not in ("http", "https"):
        raise InvalidArgument(
            f"{_mask(management)} is not a management API URL: it must start with http:// "
            "or https://"
        )
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return BrokerURL(
        scheme=parts.scheme,
        host=parts.hostname or "localhost",
        port=port,
        username=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=vhost,
        management_override=management,
        management_required=management is not None,
    )


def _mask(raw: str) -> str:
    """``raw`` with any password replaced by ``***`` (works on URLs that do not parse too)."""
    return _PASSWORD.sub(r"\1***@", raw)
