"""A live vhost's topology, read through the management API.

``broker.management.read_vhost`` is the one reader: the same five GETs that
``plan`` sends (exchanges, queues without statistics, bindings, policies and
operator policies), so that what import writes is judged by ``plan`` against
what ``plan`` itself reads.  ``GET /api/definitions/{vhost}`` would hold the
same objects but not the exclusive queues, which import must see to say it
left them out.  AMQP is not used: it cannot list anything.
"""

from __future__ import annotations

from rabbitry.broker.endpoints import Endpoints
from rabbitry.broker.management import read_vhost
from rabbitry.broker.state import Topology
from rabbitry.errors import BrokerError

__all__ = ["read_live"]


async def read_live(endpoints: Endpoints, *, timeout: float) -> Topology:
    """The topology of the endpoints' vhost, from the first node whose API answers.

    Each URL's management API is tried in order; when none answers, the first
    one's error is raised (it names what to do).
    """
    first: BrokerError | None = None
    for url in endpoints.urls:
        try:
            return await read_vhost(url, timeout=timeout, counts=False)
        except BrokerError as exc:
            first = first or exc
    assert first is not None  # Endpoints holds at least one URL
    raise first
