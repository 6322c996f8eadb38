"""TLS for both roads to the broker: the client's SSL context, and why a handshake failed.

One context for AMQP and the management API: an ``amqps://`` URL's ``cafile``,
``certfile``/``keyfile`` and ``no_verify_ssl`` (``TLS``) are read by aiormq
from the URL's query, and ``client_context`` builds the very same context
(aiormq's recipe: ``ssl.create_default_context(SERVER_AUTH, cafile=...)``, the
client certificate loaded into it, verification off only when asked) for httpx.
Without ``cafile`` both trust the system's store (and ``$SSL_CERT_FILE``),
where httpx alone would have used certifi's.

A certificate that does not verify is not a network fault: retrying cannot
fix it, and the user needs to know which of the usual three it is.
``verification_failure`` finds OpenSSL's verdict under whatever wraps it
(aiormq's ``AMQPConnectionError``, httpx's ``ConnectError``) and says it as a
``Problem``; ``explain`` turns it into the error's sentence: what failed and
what to do.  The broker refusing *our* certificate (a TLS alert) is the
fourth; a broker that only resets the connection looks like any reset.
"""

from __future__ import annotations

import enum
import ssl
from dataclasses import dataclass

from rabbitry.errors import Option, Phrase

__all__ = [
    "TLS",
    "Problem",
    "VerificationFailure",
    "client_context",
    "explain",
    "verification_failure",
]


@dataclass(frozen=True)
class TLS:
    """The certificates an ``amqps://`` URL names (its query), as paths."""

    #: PEM file of the CA certificate(s) to trust; ``None``: the system's store.
    cafile: str | None = None
    #: PEM file of the client's certificate (and key, when ``keyfile`` is not given).
    certfile: str | None = None
    keyfile: str | None = None
    #: ``False`` only for ``no_verify_ssl=1``: any certificate, any name, is accepted.
    verify: bool = True


def client_context(tls: TLS) -> ssl.SSLContext:
    """The SSL context aiormq makes from the same options (its ``SSLContextProvider``).

    Raises ``OSError``/``ssl.SSLError`` for a file that is missing or not PEM;
    ``parse_url`` calls it once so that such a file is refused before any
    connection.  A key protected by a passphrase is refused too (a prompt on
    the terminal would hang a service).
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.cafile)
    if tls.certfile:
        context.load_cert_chain(tls.certfile, tls.keyfile, password=_no_passphrase)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _no_passphrase() -> str:
    raise ssl.SSLError("the private key is encrypted; give a key without a passphrase")


class Problem(enum.Enum):
    """Why a TLS handshake failed, in the terms of what to do about it."""

    UNKNOWN_CA = "signed by a CA this client does not trust"
    HOST_MISMATCH = "not for the host name in the URL"
    EXPIRED = "expired"
    NOT_YET_VALID = "not valid yet"
    OTHER = "not accepted"
    #: The broker refused the client's certificate (or the lack of one): a TLS alert.
    CLIENT_REFUSED = "refused by the broker"


# OpenSSL's X509_V_ERR_* codes (x509_vfy.h), grouped by what the user does about them.
_BY_CODE = {
    2: Problem.UNKNOWN_CA,  # unable to get issuer certificate
    18: Problem.UNKNOWN_CA,  # self-signed certificate
    19: Problem.UNKNOWN_CA,  # self-signed certificate in certificate chain
    20: Problem.UNKNOWN_CA,  # unable to get local issuer certificate
    21: Problem.UNKNOWN_CA,  # unable to verify the first certificate
    62: Problem.HOST_MISMATCH,  # hostname mismatch
    64: Problem.HOST_MISMATCH,  # IP address mismatch
    10: Problem.EXPIRED,  # certificate has expired
    9: Problem.NOT_YET_VALID,  # certificate is not yet valid
}
#: TLS alerts a server sends about the client's certificate (OpenSSL's reason names).
_CLIENT_ALERTS = (
    "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "TLSV1_ALERT_UNKNOWN_CA",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "TLSV1_ALERT_ACCESS_DENIED",
)


@dataclass(frozen=True)
class VerificationFailure:
    """A handshake that failed over a certificate: which problem, and OpenSSL's own words."""

    problem: Problem
    detail: str


def verification_failure(exc: BaseException) -> VerificationFailure | None:
    """The certificate problem under ``exc`` (its causes and contexts), or ``None``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            code = getattr(current, "verify_code", None)
            detail = getattr(current, "verify_message", None) or str(current)
            return VerificationFailure(_BY_CODE.get(code or 0, Problem.OTHER), str(detail))
        if isinstance(current, ssl.SSLError) and (current.reason or "") in _CLIENT_ALERTS:
            alert = str(current.reason).split("ALERT_")[-1].replace("_", " ").lower()
            return VerificationFailure(Problem.CLIENT_REFUSED, f"TLS alert: {alert}")
        current = current.__cause__ or current.__context__
    return None


def explain(failure: VerificationFailure, at: str, host: str) -> Phrase:
    """The error's sentence: ``at`` (``RabbitMQ at host:port``) and what to do."""
    said = (
        f"{at}: TLS failed: the broker's certificate is {failure.problem.value} ({failure.detail})"
    )
    if failure.problem is Problem.UNKNOWN_CA:
        return Phrase.of(
            f"{said}; give the CA certificate that signed it in ",
            Option.URL,
            " as ?cafile=/path/to/ca.pem, or no_verify_ssl=1 to skip verification "
            "(it then accepts any server: never in production)",
        )
    if failure.problem is Problem.HOST_MISMATCH:
        return Phrase.of(
            f"{said}; connect with a name the certificate is for (openssl s_client "
            f"-connect shows them), or have it reissued with {host!r} among its names; fix ",
            Option.URL,
        )
    if failure.problem in (Problem.EXPIRED, Problem.NOT_YET_VALID):
        return Phrase.of(
            f"{said}; renew the certificate on the broker (ssl_options.certfile), or check "
            "this machine's clock"
        )
    if failure.problem is Problem.CLIENT_REFUSED:
        return Phrase.of(
            f"{at}: TLS failed: the broker refused this client's certificate "
            f"({failure.detail}); give certfile= (and keyfile=) in ",
            Option.URL,
            ", a certificate signed by a CA the broker trusts (its ssl_options.cacertfile)",
        )
    return Phrase.of(f"{said}; check the certificates named in ", Option.URL)
