"""Engagement batch handler: one unit of work per batch (the inbox already dropped duplicates).

Per batch: move the event-time watermark, load the actors and every member due by the
watermark in one query, fold the batch through the pure rules, save what changed in one
statement, and put transitions and signals in the outbox. Merges and erasures
(`shared.lifecycle`) cut the batch: activities before one are applied, then it, then the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import timedelta

from services.engagement import domain, store
from shared import lifecycle
from shared.cloudevents import Envelope, encode, payloads
from shared.consumer import BatchHandler
from shared.contracts import ActivityV1
from shared.eventtime import advance_watermark
from shared.journey import transition_record
from shared.rules import load_rules
from shared.settings import Settings
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)


def build_handler(settings: Settings) -> BatchHandler:
    """Rules are read once at start-up: a bad rules file stops the service before it reads."""
    rules = load_rules(domain.Rules, "engagement", settings)
    lateness = timedelta(seconds=settings.allowed_lateness_s)

    async def handle_batch(uow: UnitOfWork, events: list[Envelope]) -> None:
        # Clock ticks (and every other event) only move the watermark.
        watermark = await advance_watermark(uow.conn, events, lateness)
        activities = payloads(events, ActivityV1)
        members = await store.load(
            uow.conn, {a.actor.member_id for a in activities}, due_by=watermark
        )
        outcome = domain.fold_batch(members, activities, watermark, rules)
        await store.save(uow.conn, outcome.changed.values(), rules)
        for t in outcome.transitions:
            uow.emit(transition_record("engagement", t))
        for s in outcome.signals:
            uow.emit(encode(s.event_type, s.data, event_id=s.event_id, source=domain.SOURCE))
        if outcome.transitions:
            log.debug(
                "engagement: %d transitions, %d signals, watermark %s",
                len(outcome.transitions),
                len(outcome.signals),
                watermark,
            )

    async def merge(uow: UnitOfWork, m: lifecycle.Merge) -> None:
        both = await store.load(uow.conn, {m.survivor, m.merged})
        combined, transitions = domain.merge_participants(
            both.get(m.survivor), both.get(m.merged), m.survivor, m.merged, m.event_id, rules
        )
        await store.delete(uow.conn, [m.merged])
        if combined is not None:
            await store.save(uow.conn, [combined], rules)
        for t in transitions:
            uow.emit(transition_record("engagement", t))

    async def erase(uow: UnitOfWork, e: lifecycle.Erasure) -> Collection[str]:
        await store.delete(uow.conn, e.ids)
        return ()

    return lifecycle.with_lifecycle(settings, apply=handle_batch, merge=merge, erase=erase)
