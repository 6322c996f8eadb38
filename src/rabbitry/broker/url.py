"""Broker addresses: the AMQP URL, its vhost, its options, the management API's URL, and a
safe display.

The password never leaves this module in text form: ``str(url)`` and
``url.masked`` show ``***`` in its place (and keep the query's options: paths
are not secrets, and a URL shown without its ``cafile`` would be another URL).
A URL that does not parse is shown with everything up to its *last* ``@``
hidden, and never with the parser's own message (which quotes the part that
failed: with a raw ``/`` in a password, a piece of the password).

The query takes aiormq's options (it reads them from the URL it is given):
``cafile``, ``certfile``, ``keyfile``, ``no_verify_ssl`` (``amqps://`` only),
``heartbeat`` and ``auth`` (``plain`` or ``external``: the client certificate
is the login), and rabbitry's own ``password_file`` (the password read from a
file, as container secrets are given; ``$RABBITRY_PASSWORD_FILE`` for a URL
without a password: ``read_password_file``).  Anything else is refused with
the known names listed: aiormq ignores an option it does not know, so
``?cafle=...`` would silently trust the system's CAs instead.  The
certificate files are loaded here, once, so a missing or garbled one is
refused before any connection is tried.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import ssl
import stat
from dataclasses import dataclass, field
from typing import Literal, TypedDict
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from rabbitry.broker.tls import TLS, client_context
from rabbitry.errors import InvalidArgument

__all__ = [
    "DEFAULT_URL",
    "OPTIONS",
    "PASSWORD_FILE_ENV",
    "PASSWORD_FILE_LIMIT",
    "TLS",
    "BrokerURL",
    "SecretURL",
    "parse_url",
    "read_password_file",
]

_log = logging.getLogger("rabbitry")
#: Where a URL without a password takes it from: a file (as container secrets are given).
PASSWORD_FILE_ENV = "RABBITRY_PASSWORD_FILE"
#: A password file larger than this is refused (it holds one password, not a document).
PASSWORD_FILE_LIMIT = 4096

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
#: The management API's default port: plain HTTP for amqp://, HTTPS for amqps://
#: (RabbitMQ's own defaults for ``management.tcp.port`` and ``management.ssl.port``).
MANAGEMENT_PORTS = {"amqp": 15672, "amqps": 15671}
#: The options an AMQP URL's query may hold (aiormq's names), in display order.
OPTIONS = ("cafile", "certfile", "keyfile", "no_verify_ssl", "heartbeat", "auth", "password_file")
_TLS_OPTIONS = frozenset({"cafile", "certfile", "keyfile", "no_verify_ssl"})
Auth = Literal["plain", "external"]
#: A URL's scheme and ``//``, as ``_mask`` keeps them.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
#: A user name that holds one of these is shown as ``***`` with the password.
_UNSAFE_USER = re.compile(r"[/?#@\s]")


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
    #: Where the password was read from (``password_file=`` or ``$RABBITRY_PASSWORD_FILE``);
    #: shown in the URL's display, never passed to aiormq.
    password_file: str | None = None

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
            password_file=None, **{k: v for k, v in extra.items() if v is not None}
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
            "password_file": self.password_file,
            **extra,
        }
        given = [(k, str(v)) for k, v in values.items() if v is not None]
        return f"?{urlencode(given, safe='/', quote_via=quote)}" if given else ""

    def ssl_context(self) -> ssl.SSLContext:
        """The SSL context aiormq makes from this URL, for the management API's HTTPS too."""
        return client_context(self.tls)

    @property
    def management(self) -> str | None:
        """The management API's base URL: the one given, else ``http://host:15672``
        (``https://host:15671`` for amqps://) when the AMQP port is the default one;
        ``None`` (unknown) otherwise.

        A broker on another AMQP port is not the one behind ``host:15672``: that is
        most likely another broker on the same host (seen: plan read one's state and
        sent it the credentials), so its API's address is not guessed.  Even where
        it is derived, plan checks the API's cluster name against the one the AMQP
        connection announces (``broker.live``).
        """
        if self.management_override:
            return self.management_override.rstrip("/")
        if self.port != _DEFAULT_PORTS[self.scheme]:
            return None
        scheme = "https" if self.scheme == "amqps" else "http"
        return f"{scheme}://{self._netloc_host}:{MANAGEMENT_PORTS[self.scheme]}"

    def __str__(self) -> str:
        return self.masked


class SecretURL(str):
    """A URL string whose ``repr`` hides its password: what a fixture may hold safely.

    pytest shows a failing test's arguments with ``repr`` (and ``--showlocals`` its
    locals); the string itself is unchanged, so it still parses and connects.
    """

    def __repr__(self) -> str:
        return repr(_mask(str.__str__(self)))


def parse_url(text: str | None = None, *, management: str | None = None) -> BrokerURL:
    """Parse an AMQP URL (default ``$RABBITRY_URL``, then ``DEFAULT_URL``).

    The vhost is the path, percent-decoded (``/%2F`` is ``/``); an empty path
    is the default vhost ``/``, as in aiormq.  The query's options (``OPTIONS``)
    are checked and their files loaded: ``InvalidArgument`` says what is wrong.
    """
    raw = text or os.environ.get("RABBITRY_URL") or DEFAULT_URL
    # The parser's own messages are not shown: they quote the part that failed, and with
    # a raw '/', '?' or '#' in a password that part is the password's ("Port could not
    # be cast to integer value as 'S3CRET'").
    try:
        parts = urlsplit(raw)
    except ValueError:
        raise InvalidArgument(
            f"{_mask(raw)} is not a valid URL: its host part does not parse (an IPv6 address "
            "needs its closing ']'; a password holding '@', '/', '?', '#' or '%' must be "
            "percent-encoded)"
        ) from None
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise InvalidArgument(
            f"{_mask(raw)} is not a valid URL: its port is not a number from 1 to 65535 (a "
            "password holding '@', '/', '?', '#' or '%' must be percent-encoded)"
        ) from None
    if "@" in raw[len(raw) - len(parts.path) - len(parts.query) - len(parts.fragment) :]:
        # A raw '/', '?' or '#' in a password ends the host part early, and the rest of the
        # password would be read as the vhost or an option (and shown in messages).
        raise InvalidArgument(
            f"{_mask(raw)} has an '@' after its host: a password (or vhost) holding "
            "'@', '/', '?', '#' or '%' must be percent-encoded in a URL (urllib.parse.quote"
            "(password, safe='')), or given in a file (password_file= in the query, or "
            "$RABBITRY_PASSWORD_FILE)"
        )
    if parts.scheme not in _DEFAULT_PORTS:
        raise InvalidArgument(
            f"{_mask(raw)} is not an AMQP URL: it must start with amqp:// or amqps://"
        )
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    if management is not None:
        management = _check_management(management)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    options = _options(raw, parts.scheme, parts.query)
    password_file = options["password_file"] or (
        None if parts.password is not None else os.environ.get(PASSWORD_FILE_ENV) or None
    )
    if password_file is not None and parts.password is not None:
        raise InvalidArgument(
            f"{_mask(raw)} has a password and password_file= both; give one of them"
        )
    if password_file is not None:
        password = read_password_file(password_file, where=_mask(raw))
    else:
        password = unquote(parts.password) if parts.password is not None else "guest"
    return BrokerURL(
        scheme=parts.scheme,
        host=parts.hostname or "localhost",
        port=port,
        username=unquote(parts.username) if parts.username is not None else "guest",
        password=password,
        vhost=vhost,
        management_override=management,
        management_required=management is not None,
        **options,
    )


def _check_management(management: str) -> str:
    """An explicit management API URL: http(s)://, a host and a port that parse (the
    parser's messages are not shown: they may quote a raw password); returned without
    any user and password, which the API is never sent (the AMQP URL's are) and which
    must not live on in the ``BrokerURL`` (its ``repr`` shows the management URL)."""
    problem = None
    try:
        parts = urlsplit(management)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        problem = "its host or port does not parse"
    else:
        if parts.scheme not in ("http", "https"):
            problem = "it must start with http:// or https://"
        elif (
            "@"
            in management[
                len(management) - len(parts.path) - len(parts.query) - len(parts.fragment) :
            ]
        ):
            problem = "it has an '@' after its host (a password must be percent-encoded)"
    if problem is not None:
        raise InvalidArgument(f"{_mask(management)} is not a management API URL: {problem}")
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def read_password_file(path: str, *, where: str) -> str:
    """The password in the file at ``path``: its text, one trailing newline stripped.

    Refused (``InvalidArgument``, its content never shown): what is not a regular
    file (a FIFO would hang the read, ``/dev/zero`` never ends), a file larger than
    ``PASSWORD_FILE_LIMIT`` bytes, one that is empty or not UTF-8.  A file other
    users may read is taken with a warning on the ``rabbitry`` logger: container
    secrets are mounted 0444 (Docker) or 0644 (Kubernetes) where no other user runs,
    so refusing those would refuse the usual case.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise InvalidArgument(
            f"{where}: password_file {path!r} cannot be opened ({exc.strerror}); fix the path "
            "or its permissions"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidArgument(
                f"{where}: password_file {path!r} is not a regular file; give the file that "
                "holds the password"
            )
        data = os.read(fd, PASSWORD_FILE_LIMIT + 1)
    finally:
        os.close(fd)
    if len(data) > PASSWORD_FILE_LIMIT:
        raise InvalidArgument(
            f"{where}: password_file {path!r} is larger than {PASSWORD_FILE_LIMIT} bytes: "
            "it should hold the password alone"
        )
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InvalidArgument(
            f"{where}: password_file {path!r} is not UTF-8 text; write the password in UTF-8"
        ) from None
    password = text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
    if not password:
        raise InvalidArgument(f"{where}: password_file {path!r} is empty; write the password in it")
    if info.st_mode & stat.S_IROTH:
        _log.warning(
            "password_file %r may be read by every user of this machine (mode %o): "
            "chmod o-r it unless it is a container's secret",
            path,
            stat.S_IMODE(info.st_mode),
        )
    return password


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
        "password_file": given.get("password_file"),
    }


class _Options(TypedDict):
    tls: TLS
    heartbeat: int | None
    auth: Auth
    password_file: str | None


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
    """``raw`` with whatever may be a password replaced by ``***``, for URLs that do not parse.

    Everything between the scheme's ``//`` (or the start) and the *last* ``@`` is
    user information: a password may hold a raw ``@``, ``/``, ``?`` or ``#`` that
    ends the URL's host part early, and only the last ``@`` is sure to end it.  The
    user name is kept (it is not secret) when a ``:`` shows where it ends; a
    vhost holding a raw ``@`` is hidden too, which is the safe side.
    """
    at = raw.rfind("@")
    if at < 0:
        return raw
    scheme = _SCHEME.match(raw)
    start = scheme.end() if scheme and scheme.end() <= at else 0
    user, colon, _ = raw[start:at].partition(":")
    shown = f"{user}:***" if colon and not _UNSAFE_USER.search(user) else "***"
    return f"{raw[:start]}{shown}{raw[at:]}"
