"""Engagement handlers: one per kind of input, each loads, calls the pure rules, saves, emits.

Per activity batch: load the actors, fold the batch through the pure rules, save what changed
in one statement, and put transitions and signals in the outbox. When the service clock moves
(after the whole batch), every member whose demotion fell due by then is swept, each at its
exact deadline. Cutting the batch at merges and erasures, and dispatching each part here, is
`shared.stage`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime

from services.engagement import domain, store
from shared.cloudevents import Envelope, payloads
from shared.consumer import BatchHandler
from shared.contracts import ActivityV1
from shared.eventtime import ClockReading
from shared.lifecycle import Erasure, Merge
from shared.settings import Settings
from shared.stage import Stage, stage_handler
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

EngagementStage = Stage[domain.Rules]


async def on_activities(uow: UnitOfWork, events: list[Envelope], stage: EngagementStage) -> None:
    activities = payloads(events, ActivityV1)
    members = await store.load(uow.conn, {a.actor.member_id for a in activities})
    outcome = domain.fold_batch(members, activities, None, stage.rules)
    await store.save(uow.conn, outcome.changed.values(), stage.rules)
    journey = await on_journey(uow, activities, members, outcome, None, stage)
    _emit(uow, stage, outcome, journey)


SWEEP_STEP_ROWS = 2_000
"""How many due rows (members, questions and honeymoons together) one step of a sweep holds.
A long move of the clock, such as the first tick after a backfill of old history ("ages
everyone to today", docs/IMPORTING.md), can make every engaged member due at once: ~5 KiB of
memory each while they are folded and their events encoded, gigabytes for a large community
in one step. In steps the memory stays that of one step, whatever the move."""


async def on_clock(uow: UnitOfWork, reading: ClockReading, stage: EngagementStage) -> None:
    """Sweep everything due by the new clock: members' demotions, unanswered questions and
    newcomers' honeymoons, each at its exact deadline, in steps of time each holding about
    `SWEEP_STEP_ROWS` due rows. A step is the clock moving that far: each member's, question's
    and honeymoon's outcome is the same in one step or many (the outcome of a history does not
    depend on how its clock moves), and each step's events are in the outbox, in order, before
    the next is loaded."""
    if reading.after is None:
        return
    step_to: datetime | None = None
    while True:
        step_to = await store.sweep_step(uow.conn, step_to, reading.after, SWEEP_STEP_ROWS)
        members = await store.load(uow.conn, (), due_by=step_to)
        outcome = domain.fold_batch(members, [], step_to, stage.rules)
        await store.save(uow.conn, outcome.changed.values(), stage.rules)
        journey = await on_journey(uow, [], members, outcome, step_to, stage)
        _emit(uow, stage, outcome, journey)
        if outcome.transitions:
            log.debug("engagement: %d demotions by %s", len(outcome.transitions), step_to)
        if step_to >= reading.after:
            return
        await uow.flush()  # this step's events stored; the next step's are built from here


def _emit(
    uow: UnitOfWork,
    stage: EngagementStage,
    outcome: domain.BatchOutcome,
    journey_signals: list[domain.Signal],
) -> None:
    """Transitions, then every signal in event-time order (fold_batch's and the journey's
    interleaved), so the order per member does not depend on batching."""
    stage.emit_transitions(uow, outcome.transitions)
    for s in domain.in_time_order(outcome.signals, journey_signals):
        stage.emit(uow, s.event_type, s.data, s.event_id)


async def on_journey(
    uow: UnitOfWork,
    activities: list[ActivityV1],
    before: dict[str, domain.Participant],
    outcome: domain.BatchOutcome,
    watermark: datetime | None,
    stage: EngagementStage,
) -> list[domain.Signal]:
    """Questions, honeymoons and product feedback (issue 15), after the fold: their own state,
    with everything due by `watermark` (the clock, from `on_clock`; None for a batch of
    activities, which sweeps nothing). Returns the signals, which the caller emits interleaved
    with fold_batch's in event-time order."""
    questions = await store.load_questions(
        uow.conn, domain.question_keys(activities), due_by=watermark
    )
    newcomers = await store.load_newcomers(
        uow.conn, {a.actor.member_id for a in activities}, due_by=watermark
    )
    journey = domain.fold_journey(
        before,
        outcome.stage_after,
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
        on_clock=on_clock,
    )
