"""Advocacy batch handler: one unit of work per batch (the inbox already dropped duplicates)."""

from __future__ import annotations

from services.advocacy import domain, store
from shared.cloudevents import Envelope
from shared.journey import fold_activities
from shared.uow import UnitOfWork


async def handle_batch(uow: UnitOfWork, events: list[Envelope]) -> None:
    await fold_activities(
        uow, events, dimension="advocacy", load=store.load, observe=domain.observe, save=store.save
    )
