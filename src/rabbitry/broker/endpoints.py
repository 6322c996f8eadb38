"""Several URLs for one broker: a cluster's nodes, or a primary and a stand-by.

A client names the nodes it may use: ``url`` is one URL or a sequence of them,
``$RABBITRY_URL`` may hold several separated by commas, ``--url`` may be given
several times.  They are one system, so they must name the same vhost (a
different vhost is a different system: refused here, before anything
connects); each URL keeps its own credentials and TLS options.

Who uses them, and how:

- the runtime's supervisor (``messaging._supervisor``) connects to the first
  that answers and, after a loss, tries the others in order starting after the
  one lost (``Endpoints.after``), the lost one last: a node that just went is
  the least likely to answer, and a node that comes back later is not gone
  back to (that would cut a working connection for nothing).  Its backoff is
  per round of every URL, not per URL: a dead node is skipped at once;
- a one-shot command (``plan``, ``apply``, ``tail``) takes the first node that
  answers (``first_answering``): AMQP, and the management API where the
  command reads one — the first node whose own API answers too, else the
  first whose AMQP does (the command then says why it reads over AMQP).

A permanent failure (refused credentials, no such vhost, a certificate that
does not verify: ``amqp.is_permanent``) on one URL does not stop the others
being tried; when every URL fails permanently the failure is at once, naming
each (``none_answered``).

A comma ends a URL only where the next one begins (``,amqp://`` or
``,amqps://``), or at the end: a comma in a password stays in it (one at the
end of a password or vhost must be written ``%2C``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import quote

from rabbitry.broker.amqp import connect
from rabbitry.broker.url import DEFAULT_URL, BrokerURL, parse_url
from rabbitry.errors import (
    BrokerError,
    ConnectionFailed,
    InvalidArgument,
    Option,
    Phrase,
    phrase_of,
)

__all__ = [
    "Endpoints",
    "URLs",
    "first_answering",
    "none_answered",
    "parse_urls",
    "split_urls",
]

#: What ``Client``, the generated classes and ``parse_urls`` take as the broker: one URL,
#: several, or ``None`` (``$RABBITRY_URL``, then ``DEFAULT_URL``).
URLs: TypeAlias = "str | BrokerURL | Sequence[str | BrokerURL] | Endpoints | None"

#: Where one URL of a list ends: a comma (and blanks) before the next URL's scheme, another
#: comma or the end.
#: A run of commas (and blanks) that the next URL's scheme, or the end, follows: commas
#: anywhere else belong to a password (``amqp://u:,,0@h/v`` is one URL).
_SEPARATOR = re.compile(r"\s*,[\s,]*(?=amqps?://|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Endpoints:
    """One broker's URLs, in the order they are tried; at least one, all of one vhost."""

    urls: tuple[BrokerURL, ...]

    def __post_init__(self) -> None:
        if not self.urls:
            raise InvalidArgument(
                Phrase.of("no broker URL given: give at least one in ", Option.URL)
            )
        vhosts = {url.vhost for url in self.urls}
        if len(vhosts) > 1:
            each = ", ".join(f"{url.endpoint} has {url.vhost!r}" for url in self.urls)
            raise InvalidArgument(
                Phrase.of(
                    f"the broker URLs name different vhosts ({each}): several URLs are the "
                    "nodes of one system, and a vhost is a system of its own; give every URL "
                    "the same vhost (its path, /%2F for '/') in ",
                    Option.URL,
                )
            )

    @property
    def first(self) -> BrokerURL:
        return self.urls[0]

    @property
    def vhost(self) -> str:
        return self.first.vhost

    def after(self, lost: BrokerURL) -> tuple[BrokerURL, ...]:
        """The order of a round after ``lost`` went: the ones after it, then those before,
        ``lost`` last (every URL once)."""
        try:
            at = self.urls.index(lost)
        except ValueError:
            return self.urls
        return self.urls[at + 1 :] + self.urls[: at + 1]

    @property
    def masked(self) -> str:
        """Every URL, passwords hidden, separated by commas (as ``$RABBITRY_URL`` holds them)."""
        return ",".join(url.masked for url in self.urls)

    def __str__(self) -> str:
        return self.masked


def split_urls(text: str) -> tuple[str, ...]:
    """``text``'s URLs: separated by commas (blanks around them ignored), each starting with
    its scheme; empty items are dropped, so a trailing comma is harmless."""
    return tuple(part for part in (p.strip() for p in _SEPARATOR.split(text)) if part)


def parse_urls(value: URLs = None, *, management: str | None = None) -> Endpoints:
    """The URLs ``value`` names, parsed and checked (``InvalidArgument`` when one is bad or
    their vhosts differ).

    ``None`` or ``""`` is ``$RABBITRY_URL`` (itself possibly a list), then ``DEFAULT_URL``;
    a string may be a comma-separated list; ``management`` (an explicit management API
    URL) applies to every one.
    """
    if isinstance(value, Endpoints):
        return value
    if isinstance(value, BrokerURL):
        return Endpoints((value,))
    if value is None or isinstance(value, str):
        texts: Sequence[str | BrokerURL] = split_urls(value) if value else ()
        if not texts:
            return _from_environment(management)
    else:
        texts = value
    return Endpoints(tuple(_one(item, management) for item in texts))


def _from_environment(management: str | None) -> Endpoints:
    texts = split_urls(os.environ.get("RABBITRY_URL", "")) or (DEFAULT_URL,)
    return Endpoints(tuple(_one(item, management) for item in texts))


def _one(item: str | BrokerURL, management: str | None) -> BrokerURL:
    if isinstance(item, BrokerURL):
        return item
    if not isinstance(item, str):
        # Its value is not shown: bytes or an object may hold the password.
        raise InvalidArgument(f"a broker URL must be a string, not {type(item).__name__}")
    url = parse_url(item, management=management)
    if "," in url.host:
        raise InvalidArgument(
            Phrase.of(
                f"{url.masked} names host {url.host!r}: each node needs a URL of its own, "
                "amqp://... separated by commas, in ",
                Option.URL,
            )
        )
    return url


def none_answered(failures: Sequence[tuple[BrokerURL, BrokerError]]) -> Phrase:
    """Why no URL could be used: the one error, or each URL's, in order."""
    if len(failures) == 1:
        return phrase_of(failures[0][1])
    parts: list[str | Phrase] = [f"none of the {len(failures)} broker URLs answered: "]
    for index, (url, error) in enumerate(failures):
        parts += ["; " if index else "", f"{url.endpoint}: ", phrase_of(error)]
    return Phrase.of(*parts)


async def first_answering(
    endpoints: Endpoints, *, timeout: float, management: bool = False
) -> BrokerURL:
    """The first URL whose broker answers over AMQP (one try each, within ``timeout`` each).

    With ``management``, the first whose management API answers as well, for this URL's
    user and vhost (unless the management URL was given explicitly: that one is the
    command's to check); when none does, the first that answered over AMQP.  A single URL
    is returned as it is, untried: the command's own call says what is wrong with it.
    ``ConnectionFailed`` naming each URL's failure when none answers.
    """
    if len(endpoints.urls) == 1:
        return endpoints.first
    failures: list[tuple[BrokerURL, BrokerError]] = []
    fallback: BrokerURL | None = None
    for url in endpoints.urls:
        try:
            connection = await connect(url, timeout=timeout)
        except BrokerError as exc:
            failures.append((url, exc))
            continue
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), timeout)
        if not management or url.management_required or await _management_answers(url, timeout):
            return url
        fallback = fallback or url
    if fallback is not None:
        return fallback
    raise ConnectionFailed(none_answered(failures))


async def _management_answers(url: BrokerURL, timeout: float) -> bool:
    from rabbitry.broker.management import read_rows  # noqa: PLC0415 - httpx only when asked

    try:
        await read_rows(
            url,
            f"/api/exchanges/{quote(url.vhost, safe='')}",
            timeout=timeout,
            query={"columns": "name"},
        )
    except BrokerError:
        return False
    return True
