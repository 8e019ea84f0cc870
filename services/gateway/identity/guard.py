"""The activity publisher behind identity's guard: what an erased person does after the
erasure is acknowledged and never published, and no one's handle, email or platform user id
is (`rules.screen`): the handle is kept in the gateway's database instead."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from services.gateway.identity.directory import IdentityStore
from services.gateway.identity.rules import screen
from services.gateway.ingest.publisher import ActivityPublisher
from shared import metrics
from shared.cloudevents import OutgoingRecord

log = logging.getLogger(__name__)


class GuardedPublisher:
    """The activity publisher, minus activities of erased members and blocked identities:
    they are acknowledged like any other (the sender must not retry them) and counted
    (`flywheel_gateway_published_total{outcome="blocked"}`), never published. What is
    published carries no personal identifier; handles are remembered before it is."""

    def __init__(self, inner: ActivityPublisher, store: IdentityStore) -> None:
        self.inner = inner
        self.store = store

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        screened = [screen(record) for record in records]  # each activity parsed once
        blocked = await self.store.blocked(screened)
        kept = [s for s, b in zip(screened, blocked, strict=True) if not b]
        if len(kept) < len(records):
            metrics.record_published("blocked", len(records) - len(kept))
            log.info("dropped %d activit(ies) of erased members", len(records) - len(kept))
        if not kept:
            return
        handles = [s.handle for s in kept if s.handle is not None]
        if handles:
            await self.store.remember_handles(handles)
        await self.inner.publish([s.public for s in kept])
