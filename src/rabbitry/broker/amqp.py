"""aiormq, wrapped once: connecting with a deadline, and its exceptions mapped.

aiormq raises a mix: its own ``AMQPError`` tree (connection errors are also
``ConnectionError``), ``ChannelInvalidStateError`` (a ``RuntimeError``),
a bare ``RuntimeError`` for a channel on a closed connection, ``OSError`` from
the socket, ``asyncio.TimeoutError`` from deadlines, and — for a vhost that
does not exist — an ``InvalidFrameError`` about a ``Connection.Close``.
``broker_error`` is the one place that turns each into rabbitry's tree with a
message naming the broker (password masked), the object and what to do.
Publisher confirms add two: ``PublishError`` (a ``basic.return`` of a
``mandatory`` message) becomes ``Unroutable``, any other ``DeliveryError``
(a ``basic.nack``) ``PublishNacked``.  ``is_permanent`` says which failures to
connect are not worth retrying (credentials, vhost, a certificate that does
not verify or that the broker refuses: ``broker.tls``).  A TLS failure comes as
an ``AMQPConnectionError`` (a ``ConnectionError``) whose cause is OpenSSL's:
it is told apart here, before the generic "cannot talk to" that a network
fault gets.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq
import aiormq.exceptions as amqp_errors
from aiormq.abc import AbstractConnection

from rabbitry.broker._aiormq import GuardedConnection
from rabbitry.broker.tls import explain, verification_failure
from rabbitry.broker.url import BrokerURL
from rabbitry.errors import (
    AccessRefused,
    BrokerError,
    BrokerTimeout,
    ConnectionFailed,
    NotFound,
    Option,
    Phrase,
    PreconditionFailed,
    PublishNacked,
    Unroutable,
)

__all__ = ["DEFAULT_TIMEOUT", "broker_error", "connect", "is_permanent", "reply_text"]

#: Seconds any single broker call may take unless the caller says otherwise.
DEFAULT_TIMEOUT = 10.0


def reply_text(exc: BaseException) -> str:
    """The broker's own words from an aiormq exception (``ACCESS_REFUSED - ...``)."""
    if exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc) or type(exc).__name__


def broker_error(exc: BaseException, url: BrokerURL, what: str = "") -> BrokerError:
    """``exc`` (from aiormq, asyncio or the socket) as a ``BrokerError``.

    ``what`` names the object or operation (``queue 'jobs.ready'``); the
    message always names the broker as ``host:port`` and never the password.
    """
    at = f"RabbitMQ at {url.endpoint}"
    on = f" ({what})" if what else ""
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return BrokerTimeout(
            f"{at} did not answer in time{on}; check that it is running and not blocked "
            "by a memory or disk alarm (rabbitmq-diagnostics alarms), then run again"
        )
    failure = verification_failure(exc)
    if failure is not None:
        return ConnectionFailed(explain(failure, at, url.host))
    if isinstance(exc, amqp_errors.AuthenticationError) and url.auth == "external":
        return ConnectionFailed(
            Phrase.of(
                f"{at} does not offer the EXTERNAL login that auth=external in ",
                Option.URL,
                f" asks for; it offers {reply_text(exc)}: enable it on the broker "
                "(rabbitmq-plugins enable rabbitmq_auth_mechanism_ssl, and "
                "auth_mechanisms.3 = EXTERNAL in rabbitmq.conf), or log in with a password",
            )
        )
    if isinstance(exc, amqp_errors.ProbableAuthenticationError) and url.auth == "external":
        return ConnectionFailed(
            Phrase.of(
                f"{at} refused the login by client certificate (auth=external): "
                f"{reply_text(exc)}; the broker takes the user name from the certificate "
                "(ssl_cert_login_from = common_name: its CN): that user must exist and may "
                "use the vhost (rabbitmqctl add_user CN x; rabbitmqctl clear_password CN; "
                "rabbitmqctl set_permissions ...), or fix certfile in ",
                Option.URL,
            )
        )
    if isinstance(exc, amqp_errors.ProbableAuthenticationError | amqp_errors.AuthenticationError):
        return ConnectionFailed(
            Phrase.of(
                f"{at} refused the login of user {url.username!r}; check the user and password in ",
                Option.URL,
            )
        )
    if _is_vhost_refusal(exc):
        return ConnectionFailed(
            Phrase.of(
                f"{at} has no vhost {url.vhost!r} that user {url.username!r} may use; create it "
                f"(rabbitmqctl add_vhost {url.vhost!r}) and grant permissions, or fix ",
                Option.URL,
            )
        )
    if isinstance(exc, amqp_errors.ChannelAccessRefused) and "reserved prefix" in reply_text(exc):
        return AccessRefused(
            f"{at} refused{on}: {reply_text(exc)}; names starting with 'amq.' belong to "
            "the broker: rename the object in the spec"
        )
    if isinstance(exc, amqp_errors.ChannelAccessRefused):
        return AccessRefused(
            f"{at} refused access{on}: {reply_text(exc)}; "
            f"grant user {url.username!r} configure/write/read permissions on vhost {url.vhost!r}"
        )
    if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
        return NotFound(f"{at}: not found{on}: {reply_text(exc)}")
    if isinstance(exc, amqp_errors.ChannelPreconditionFailed) and _is_delete_guard(exc):
        return PreconditionFailed(
            Phrase.of(
                f"{at} kept{on}: {reply_text(exc)}; it got messages or consumers after the "
                "plan was made, so it was not deleted: run again, and pass ",
                Option.ALLOW_DATA_LOSS,
                " to delete it anyway",
            )
        )
    if isinstance(exc, amqp_errors.ChannelPreconditionFailed):
        return PreconditionFailed(
            f"{at} refused{on}: {reply_text(exc)}; the broker's object differs from the spec: "
            "`rabbitry plan` shows how"
        )
    if isinstance(exc, amqp_errors.ChannelLockedResource):
        return AccessRefused(
            f"{at}: locked{on}: {reply_text(exc)}; another connection holds it exclusively"
        )
    if isinstance(exc, amqp_errors.PublishError):
        frame = exc.frame
        code = getattr(frame, "reply_code", None)
        text = getattr(frame, "reply_text", None) or "returned"
        return Unroutable(
            f"{at} returned{on} with {code} {text}: no queue is bound to exchange "
            f"{getattr(frame, 'exchange', '')!r} for routing key "
            f"{getattr(frame, 'routing_key', '')!r}; `rabbitry route` shows where it would go, "
            "`rabbitry apply` makes the spec's bindings (a run-time queue's binding exists only "
            "while its consumer runs)"
        )
    if isinstance(exc, amqp_errors.DeliveryError):
        return PublishNacked(
            f"{at} refused{on} (basic.nack): a queue it routes to did not take it, e.g. "
            "one at its length limit with overflow reject-publish; it was not delivered there"
        )
    if isinstance(exc, amqp_errors.ChannelClosed | amqp_errors.ChannelInvalidStateError):
        return BrokerError(f"{at} closed the channel{on}: {reply_text(exc)}; run again")
    if isinstance(exc, ConnectionError | OSError | amqp_errors.AMQPError | RuntimeError):
        return ConnectionFailed(
            Phrase.of(
                f"cannot talk to {at}{on}: {reply_text(exc)}; check that it is running "
                "(rabbitmq-diagnostics ping) and that ",
                Option.URL,
                " is right",
                _reset_hint(exc, url),
            )
        )
    return BrokerError(f"{at}{on}: {type(exc).__name__}: {reply_text(exc)}")


def is_permanent(exc: BaseException) -> bool:
    """A failure to connect that retrying cannot fix.

    Refused credentials, no such vhost, or TLS refusing a certificate: the
    broker's (unknown CA, another host name, expired) or ours (a TLS alert).
    """
    return (
        isinstance(exc, amqp_errors.ProbableAuthenticationError | amqp_errors.AuthenticationError)
        or _is_vhost_refusal(exc)
        or verification_failure(exc) is not None
    )


def _reset_hint(exc: BaseException, url: BrokerURL) -> str:
    """For a TLS connection reset at once: the broker may want a client certificate.

    A broker with ``fail_if_no_peer_cert`` that refuses a client's certificate
    (or its lack) sends a TLS alert and closes; the client mostly reads the
    close first (seen on 3.10.8: 5 attempts of 6), and a reset is also what a
    network fault looks like, so it stays retried, with this said.
    """
    if url.scheme != "amqps" or "reset" not in reply_text(exc).lower():
        return ""
    if url.tls.certfile is None:
        return (
            "; if the broker requires a client certificate (fail_if_no_peer_cert), give "
            "certfile= (and keyfile=)"
        )
    return "; if the broker does not trust the client certificate, it resets the connection"


def _is_delete_guard(exc: BaseException) -> bool:
    """A ``queue.delete`` with ``if_empty``/``if_unused`` refused: the queue is not empty/unused."""
    return reply_text(exc).endswith(("' not empty", "' in use"))


def _is_vhost_refusal(exc: BaseException) -> bool:
    if isinstance(exc, amqp_errors.ConnectionNotAllowed):
        return True
    # aiormq 7 reports the broker's Connection.Close after Connection.Open
    # (no such vhost, or no permission on it) as an unexpected frame.
    text = reply_text(exc)
    return isinstance(exc, amqp_errors.InvalidFrameError) and "Connection.Close" in text


async def connect(
    url: BrokerURL, *, timeout: float = DEFAULT_TIMEOUT, guarded: bool = False, **kwargs: Any
) -> AbstractConnection:
    """An open ``aiormq.Connection`` to ``url``, or a ``BrokerError`` within ``timeout``.
    ``guarded``: a ``GuardedConnection``, which withholds a message whose headers it cannot
    decode instead of closing (``broker/_aiormq.py``; a reader of messages, such as tail)."""
    try:
        if guarded:
            connection = GuardedConnection(url.amqp, **kwargs)
            await asyncio.wait_for(connection.connect(), timeout)
            return connection
        return await asyncio.wait_for(aiormq.connect(url.amqp, **kwargs), timeout)
    except (TimeoutError, Exception) as exc:
        raise broker_error(exc, url, f"connecting to vhost {url.vhost!r}") from None
