"""Inbound platform webhooks: GitHub, Discourse and Slack deliveries in, activities out.

Each platform's delivery is authenticated by its own signature over the raw body
(`signatures.py`), mapped to `community.activity.v1` by a pure function per platform
(`github.py`, `discourse.py`, `slack.py` over `mapping.py`, with member ids from
`shared.members`), recognised when it is a redelivery (`store.py`, the gateway's own
database, which also keeps who started a thread and forgets them on erasure) and published
like any activity (`receiver.py`, behind `routes.py`; counters in `stats.py`).
"""

from services.gateway.webhooks.routes import router
from services.gateway.webhooks.stats import WebhookStats
from services.gateway.webhooks.store import InMemoryWebhookStore, PgWebhookStore, WebhookStore

__all__ = ["InMemoryWebhookStore", "PgWebhookStore", "WebhookStats", "WebhookStore", "router"]
