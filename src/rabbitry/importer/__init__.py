"""``rabbitry import``: a spec written from what a broker already has.

Two sources, one mapping: a live vhost (``read_live``, through the management
API) or a definitions file (``read_definitions``) becomes a
``broker.state.Topology``, and ``draft_from_topology`` turns that into a
``spec.draft.SpecDraft`` with sugar keys, notes on everything left out, and no
messages or services (those are the user's to add).
"""

from rabbitry.importer._definitions import (
    MAX_DEFINITIONS_BYTES,
    read_definitions,
    topology_from_definitions,
)
from rabbitry.importer._draft import draft_from_topology
from rabbitry.importer._live import read_live

__all__ = [
    "MAX_DEFINITIONS_BYTES",
    "draft_from_topology",
    "read_definitions",
    "read_live",
    "topology_from_definitions",
]
