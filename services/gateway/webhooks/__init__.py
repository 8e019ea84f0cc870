"""Inbound platform webhooks: GitHub, Discourse and Slack deliveries in, activities out.

Each platform's delivery is authenticated by its own signature over the raw body
(`signatures.py`), mapped to `community.activity.v1` by a pure function per platform
(`github.py`, `discourse.py`, `slack.py`, with member ids from `identity.py`), recognised
when it is a redelivery (`store.py`, the gateway's own database) and published like any
activity (`router.py`).
"""

from services.gateway.webhooks.router import WebhookStats, router
from services.gateway.webhooks.store import InMemoryWebhookStore, PgWebhookStore, WebhookStore

__all__ = ["InMemoryWebhookStore", "PgWebhookStore", "WebhookStats", "WebhookStore", "router"]
