"""Awareness handlers: one per kind of input, each loads, calls the pure rules, saves, emits.

Cutting the batch at merges and erasures, and dispatching each part here, is `shared.stage`.
"""

from __future__ import annotations

from collections.abc import Collection

from services.awareness import domain, store
from shared.cloudevents import Envelope, derive_event_id, payloads
from shared.consumer import BatchHandler
from shared.contracts import (
    FIRST_TOUCH,
    MEMBER_ACQUIRED,
    MEMBER_ERASED,
    PROSPECT_INTENT,
    ActivityV1,
    MemberAcquiredV1,
)
from shared.eventtime import ClockReading
from shared.lifecycle import Erasure, Merge
from shared.settings import Settings
from shared.stage import Stage, stage_handler
from shared.uow import UnitOfWork

AwarenessStage = Stage[domain.Rules]


async def on_activities(uow: UnitOfWork, events: list[Envelope], stage: AwarenessStage) -> None:
    """Activities, already read through merges and erasures."""
    activities = payloads(events, ActivityV1)
    aliases = await store.load_aliases(
        uow.conn, {a.actor.member_id for a in activities if a.actor.anonymous}
    )
    people = await store.load_people(uow.conn, domain.loads(activities, aliases))
    outcome = domain.fold_batch(people, aliases, activities, stage.rules)
    for emitted in outcome.emitted:
        if isinstance(emitted, domain.Caused):
            event_type = (
                MEMBER_ACQUIRED
                if isinstance(emitted.payload, MemberAcquiredV1)
                else PROSPECT_INTENT
            )
            event_id = derive_event_id(event_type.type, emitted.activity_id)
            stage.emit(uow, event_type, emitted.payload, event_id)
        else:
            stage.emit_transitions(uow, [emitted])
    await store.save_people(uow.conn, outcome.changed.values())
    await store.save_aliases(uow.conn, outcome.new_aliases)


async def on_merge(uow: UnitOfWork, m: Merge, stage: AwarenessStage) -> None:
    people = await store.load_people(uow.conn, {m.survivor, m.merged})
    outcome = domain.merge_people(
        people.get(m.survivor), people.get(m.merged), m.survivor, m.merged, m.event_id, stage.rules
    )
    if outcome.person is not None:
        await store.save_people(uow.conn, [outcome.person])
    await store.delete_people(uow.conn, [m.merged])
    await store.move_aliases(uow.conn, m.merged, m.survivor)
    stage.emit_transitions(uow, outcome.transitions)


async def on_erase(uow: UnitOfWork, e: Erasure, stage: AwarenessStage) -> Collection[str]:
    """The member's anonymous visitor ids are erased with it, and announced."""
    anonymous = await store.erase(uow.conn, e.ids)
    for erased in domain.erasure_cascade(anonymous, e.occurred_at):
        event_id = derive_event_id(MEMBER_ERASED.type, erased.member_id)
        stage.emit(uow, MEMBER_ERASED, erased, event_id)
    return anonymous


async def on_clock(uow: UnitOfWork, reading: ClockReading, stage: AwarenessStage) -> None:
    """The clock passed some members' joining: everything before it has been read, so their
    first touch is final; state it once (member.first_touch.v1), in joining order."""
    if reading.after is None:
        return
    due = await store.due_for_first_touch(uow.conn, reading.after)
    if not due:
        return
    people = await store.load_people(uow.conn, due)
    for member_id in due:
        settled = domain.settled_first_touch(people[member_id])
        if settled is not None:
            stage.emit(uow, FIRST_TOUCH, settled, derive_event_id(FIRST_TOUCH.type, member_id))
    await store.mark_attributed(uow.conn, due)


def build_handler(settings: Settings) -> BatchHandler:
    return stage_handler(
        settings,
        "awareness",
        domain.Rules,
        on_activities=on_activities,
        on_merge=on_merge,
        on_erase=on_erase,
        on_clock=on_clock,
    )
