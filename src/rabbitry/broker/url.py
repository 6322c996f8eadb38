"""Broker addresses: the AMQP URL, its vhost, its options, the management API's URL, and a
safe display.

The password never leaves this module in text form: ``str(url)`` and
``url.masked`` show ``***`` in its place (and keep the query's options: paths
are not secrets, and a URL shown without its ``cafile`` would be another URL).

The query takes aiormq's options (it reads them from the URL it is given):
``cafile``, ``certfile``, ``keyfile``, ``no_verify_ssl`` (``amqps://`` only),
``heartbeat`` and ``auth`` (``plain`` or ``external``: the client certificate
is the login).  Anything else is refused with the known names listed: aiormq
ignores an option it does not know, so ``?cafle=...`` would silently trust
the system's CAs instead.  The certificate files are loaded here, once, so a
missing or garbled one is refused before any connection is tried.
"""

from __future__ import annotations

import difflib
import os
import re
import ssl
from dataclasses import dataclass, field
from typing import Literal, TypedDict
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from rabbitry.broker.tls import TLS, client_context
from rabbitry.errors import InvalidArgument

__all__ = ["DEFAULT_URL", "OPTIONS", "TLS", "BrokerURL", "parse_url"]

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
#: The management API's default port: plain HTTP for amqp://, HTTPS for amqps://
#: (RabbitMQ's own defaults for ``management.tcp.port`` and ``management.ssl.port``).
MANAGEMENT_PORTS = {"amqp": 15672, "amqps": 15671}
#: The options an AMQP URL's query may hold (aiormq's names), in display order.
OPTIONS = ("cafile", "certfile", "keyfile", "no_verify_ssl", "heartbeat", "auth")
_TLS_OPTIONS = frozenset({"cafile", "certfile", "keyfile", "no_verify_ssl"})
Auth = Literal["plain", "external"]
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
    #: ``cafile``, ``certfile``, ``keyfile``, ``no_verify_ssl`` (``amqps://`` only).
    tls: TLS = field(default_factory=TLS)
    #: The URL's ``heartbeat`` (seconds); ``None``: the client's own default.
    heartbeat: int | None = None
    #: ``external``: SASL EXTERNAL, the client certificate's name is the login.
    auth: Auth = "plain"

    @property
    def endpoint(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"

    @property
    def amqp(self) -> str:
        """The full URL, password and options included: for aiormq only, never for output."""
        return self.for_aiormq()

    def for_aiormq(self, *, heartbeat: int | None = None, name: str | None = None) -> str:
        """The URL aiormq connects to: password, options, and a connection ``name``.

        ``heartbeat`` is the caller's default: the URL's own ``heartbeat`` wins.
        """
        auth = f"{quote(self.username, safe='')}:{quote(self.password, safe='')}@"
        extra: dict[str, object] = {"name": name}
        if self.heartbeat is None:
            extra["heartbeat"] = heartbeat
        return self._address(auth) + self._query(
            **{k: v for k, v in extra.items() if v is not None}
        )

    @property
    def masked(self) -> str:
        """The URL with the password hidden (the options kept)."""
        auth = f"{quote(self.username, safe='')}:***@" if self.username else ""
        return self._address(auth) + self._query()

    def _address(self, auth: str) -> str:
        return f"{self.scheme}://{auth}{self._netloc_host}:{self.port}/{quote(self.vhost, safe='')}"

    @property
    def _netloc_host(self) -> str:
        """The host as a URL writes it: an IPv6 address in brackets."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def _query(self, **extra: object) -> str:
        values: dict[str, object] = {
            "cafile": self.tls.cafile,
            "certfile": self.tls.certfile,
            "keyfile": self.tls.keyfile,
            "no_verify_ssl": None if self.tls.verify else 1,
            "heartbeat": self.heartbeat,
            "auth": None if self.auth == "plain" else self.auth,
            **extra,
        }
        given = [(k, str(v)) for k, v in values.items() if v is not None]
        return f"?{urlencode(given, safe='/', quote_via=quote)}" if given else ""

    def ssl_context(self) -> ssl.SSLContext:
        """The SSL context aiormq makes from this URL, for the management API's HTTPS too."""
        return client_context(self.tls)

    @property
    def management(self) -> str:
        """The management API's base URL (``http://host:15672``, ``https://host:15671``)."""
        if self.management_override:
            return self.management_override.rstrip("/")
        scheme = "https" if self.scheme == "amqps" else "http"
        return f"{scheme}://{self._netloc_host}:{MANAGEMENT_PORTS[self.scheme]}"

    def __str__(self) -> str:
        return self.masked


def parse_url(text: str | None = None, *, management: str | None = None) -> BrokerURL:
    """Parse an AMQP URL (default ``$RABBITRY_URL``, then ``DEFAULT_URL``).

    The vhost is the path, percent-decoded (``/%2F`` is ``/``); an empty path
    is the default vhost ``/``, as in aiormq.  The query's options (``OPTIONS``)
    are checked and their files loaded: ``InvalidArgument`` says what is wrong.
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
    options = _options(raw, parts.scheme, parts.query)
    return BrokerURL(
        scheme=parts.scheme,
        host=parts.hostname or "localhost",
        port=port,
        username=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=vhost,
        management_override=management,
        management_required=management is not None,
        **options,
    )


def _options(raw: str, scheme: str, query: str) -> _Options:
    """The query's options as ``BrokerURL``'s fields; each mistake refused with what to do."""
    where = _mask(raw)
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidArgument(f"{where}: its query is not name=value pairs joined by '&'") from None
    given: dict[str, str] = {}
    for name, value in pairs:
        if name not in OPTIONS:
            close = difflib.get_close_matches(name, OPTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidArgument(
                f"{where}: unknown option {name!r} in its query{hint}; the known ones are "
                + ", ".join(OPTIONS)
            )
        if name in given:
            raise InvalidArgument(f"{where}: option {name!r} is given twice; give it once")
        if not value:
            raise InvalidArgument(f"{where}: option {name!r} has no value")
        if name in _TLS_OPTIONS and scheme != "amqps":
            raise InvalidArgument(
                f"{where}: {name} is a TLS option, and this URL is plain amqp://: "
                "use amqps:// (port 5671 by default)"
            )
        given[name] = value
    if given.get("no_verify_ssl", "0") not in ("0", "1"):
        raise InvalidArgument(
            f"{where}: no_verify_ssl must be 1 (accept any certificate) or 0 (verify, "
            f"the default), not {given['no_verify_ssl']!r}"
        )
    if "keyfile" in given and "certfile" not in given:
        raise InvalidArgument(
            f"{where}: keyfile without certfile; give the client certificate as certfile="
        )
    auth = given.get("auth", "plain").lower()
    if auth not in ("plain", "external"):
        raise InvalidArgument(
            f"{where}: auth must be plain (user and password) or external (the client "
            f"certificate), not {given['auth']!r}"
        )
    if auth == "external" and "certfile" not in given:
        raise InvalidArgument(
            f"{where}: auth=external logs in with a client certificate: use amqps:// and "
            "give it as certfile= (and keyfile=)"
        )
    tls = TLS(
        cafile=given.get("cafile"),
        certfile=given.get("certfile"),
        keyfile=given.get("keyfile"),
        verify=given.get("no_verify_ssl", "0") == "0",
    )
    _check_files(where, tls)
    return {
        "tls": tls,
        "heartbeat": _heartbeat(where, given["heartbeat"]) if "heartbeat" in given else None,
        "auth": "external" if auth == "external" else "plain",
    }


class _Options(TypedDict):
    tls: TLS
    heartbeat: int | None
    auth: Auth


def _heartbeat(where: str, value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) < 65535:
        raise InvalidArgument(
            f"{where}: heartbeat must be a whole number of seconds from 0 (none) to 65534, "
            f"not {value!r}"
        )
    return int(value)


def _check_files(where: str, tls: TLS) -> None:
    """Each file exists and holds what its option says: refused here, not at connect time."""
    roles = (
        ("cafile", tls.cafile, "the CA certificate(s) that signed the broker's, in PEM"),
        ("certfile", tls.certfile, "the client certificate, in PEM"),
        ("keyfile", tls.keyfile, "the client certificate's private key, in PEM"),
    )
    for option, path, holds in roles:
        if path is not None and not os.path.isfile(path):
            raise InvalidArgument(
                f"{where}: {option} {path!r} is not a file (it should hold {holds}); fix the path"
            )
    if tls.cafile is not None:
        try:
            ssl.create_default_context(cafile=tls.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidArgument(
                f"{where}: cafile {tls.cafile!r} does not load ({_reason(exc)}); it must hold "
                "the CA certificate(s) in PEM (-----BEGIN CERTIFICATE-----)"
            ) from None
    if tls.certfile is None:
        return  # nothing more to load (building a context costs ~35 ms: not for plain URLs)
    try:
        client_context(tls)
    except (OSError, ssl.SSLError) as exc:
        files = " and ".join(repr(p) for p in (tls.certfile, tls.keyfile) if p)
        raise InvalidArgument(
            f"{where}: the client certificate {files} does not load ({_reason(exc)}); "
            "certfile must hold the certificate in PEM, and keyfile (or certfile too) "
            "its private key, unencrypted"
        ) from None


def _reason(exc: BaseException) -> str:
    """OpenSSL's short reason (``NO_CERTIFICATE_OR_CRL_FOUND``), else the message."""
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else " ".join(str(exc).split()) or type(exc).__name__


def _mask(raw: str) -> str:
    """``raw`` with any password replaced by ``***`` (works on URLs that do not parse too)."""
    return _PASSWORD.sub(r"\1***@", raw)
