"""Engagement handlers: one per kind of input, each loads, calls the pure rules, saves, emits.

Per activity batch: move the event-time watermark, load the actors and every member due by
the watermark in one query, fold the batch through the pure rules, save what changed in one
statement, and put transitions and signals in the outbox. Cutting the batch at merges and
erasures, and dispatching each part here, is `shared.stage`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime

from services.engagement import domain, store
from shared.cloudevents import Envelope, payloads
from shared.consumer import BatchHandler
from shared.contracts import ActivityV1
from shared.eventtime import advance_watermark
from shared.lifecycle import Erasure, Merge
from shared.settings import Settings
from shared.stage import Stage, stage_handler
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

EngagementStage = Stage[domain.Rules]


async def on_activities(uow: UnitOfWork, events: list[Envelope], stage: EngagementStage) -> None:
    # Clock ticks (and every other event) only move the watermark.
    watermark = await advance_watermark(uow.conn, events, stage.lateness)
    activities = payloads(events, ActivityV1)
    members = await store.load(uow.conn, {a.actor.member_id for a in activities}, due_by=watermark)
    outcome = domain.fold_batch(members, activities, watermark, stage.rules)
    await store.save(uow.conn, outcome.changed.values(), stage.rules)
    stage.emit_transitions(uow, outcome.transitions)
    journey_signals = await on_journey(uow, activities, members, outcome, watermark, stage)
    for s in domain.in_time_order(outcome.signals, journey_signals):
        stage.emit(uow, s.event_type, s.data, s.event_id)
    if outcome.transitions:
        log.debug(
            "engagement: %d transitions, %d signals, watermark %s",
            len(outcome.transitions),
            len(outcome.signals),
            watermark,
        )


async def on_journey(
    uow: UnitOfWork,
    activities: list[ActivityV1],
    before: dict[str, domain.Participant],
    outcome: domain.BatchOutcome,
    watermark: datetime | None,
    stage: EngagementStage,
) -> list[domain.Signal]:
    """Questions, honeymoons and product feedback (issue 15), after the batch's fold: their own
    state, loaded with everything due by the same `watermark` fold_batch swept with (the clock
    hook can call the sweep part with its own clock reading). Returns the signals, which the
    caller emits interleaved with fold_batch's in event-time order."""
    questions = await store.load_questions(
        uow.conn, domain.question_keys(activities), due_by=watermark
    )
    newcomers = await store.load_newcomers(
        uow.conn, {a.actor.member_id for a in activities}, due_by=watermark
    )
    journey = domain.fold_journey(
        before,
        {**before, **outcome.changed},
        questions,
        newcomers,
        activities,
        watermark,
        stage.rules,
    )
    await store.save_questions(uow.conn, journey.questions.values(), stage.rules)
    await store.save_newcomers(uow.conn, journey.newcomers.values(), stage.rules)
    return journey.signals


async def on_merge(uow: UnitOfWork, m: Merge, stage: EngagementStage) -> None:
    both = await store.load(uow.conn, {m.survivor, m.merged})
    combined, transitions = domain.merge_participants(
        both.get(m.survivor), both.get(m.merged), m.survivor, m.merged, m.event_id, stage.rules
    )
    await store.delete(uow.conn, [m.merged])
    await store.merge_journey(uow.conn, m.survivor, m.merged)
    if combined is not None:
        await store.save(uow.conn, [combined], stage.rules)
    stage.emit_transitions(uow, transitions)


async def on_erase(uow: UnitOfWork, e: Erasure, stage: EngagementStage) -> Collection[str]:
    await store.delete(uow.conn, e.ids)
    await store.erase_journey(uow.conn, e.ids)
    return ()


def build_handler(settings: Settings) -> BatchHandler:
    """Rules are read once at start-up: a bad rules file stops the service before it reads."""
    return stage_handler(
        settings,
        "engagement",
        domain.Rules,
        on_activities=on_activities,
        on_merge=on_merge,
        on_erase=on_erase,
    )
