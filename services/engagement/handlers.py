"""Engagement batch handler: one unit of work per batch (the inbox already dropped duplicates)."""

from __future__ import annotations

from services.engagement import domain, store
from shared.cloudevents import Envelope
from shared.consumer import BatchHandler
from shared.journey import fold_activities
from shared.settings import Settings
from shared.uow import UnitOfWork


def build_handler(settings: Settings) -> BatchHandler:
    async def handle_batch(uow: UnitOfWork, events: list[Envelope]) -> None:
        await fold_activities(
            uow,
            events,
            dimension="engagement",
            load=store.load,
            observe=domain.observe,
            save=store.save,
        )

    return handle_batch
