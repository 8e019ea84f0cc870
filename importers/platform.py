"""Everything the importers take from the gateway, in one place.

The importers produce the same activity ids, member ids and thread ids as the live webhooks by
calling the webhook mappers themselves. The gateway is being restructured into feature
packages: when these modules move, only the imports below change.
"""

from __future__ import annotations

from services.gateway.ingest.intake import event_id
from services.gateway.webhooks.discourse import map_discourse
from services.gateway.webhooks.github import map_github
from services.gateway.webhooks.mapping import (
    Delivery,
    Malformed,
    Mapped,
    excerpt,
    parse_time,
    web_url,
)
from services.gateway.webhooks.slack import map_slack
from shared.members import IdentityError, member_id

__all__ = [
    "Delivery",
    "IdentityError",
    "Malformed",
    "Mapped",
    "event_id",
    "excerpt",
    "map_discourse",
    "map_github",
    "map_slack",
    "member_id",
    "parse_time",
    "web_url",
]
