"""The activity publisher behind identity's guard: what an erased person does after the
erasure is acknowledged and never published."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from services.gateway.identity.directory import IdentityStore
from services.gateway.ingest.publisher import ActivityPublisher
from shared import metrics
from shared.cloudevents import OutgoingRecord

log = logging.getLogger(__name__)


class GuardedPublisher:
    """The activity publisher, minus activities of erased members and blocked identities:
    they are acknowledged like any other (the sender must not retry them) and counted
    (`flywheel_gateway_published_total{outcome="blocked"}`), never published."""

    def __init__(self, inner: ActivityPublisher, store: IdentityStore) -> None:
        self.inner = inner
        self.store = store

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        blocked = await self.store.blocked(records)
        kept = [r for r, b in zip(records, blocked, strict=True) if not b]
        if len(kept) < len(records):
            metrics.record_published("blocked", len(records) - len(kept))
            log.info("dropped %d activit(ies) of erased members", len(records) - len(kept))
        if kept:
            await self.inner.publish(kept)
