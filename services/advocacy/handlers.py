"""Advocacy handlers: one per kind of input, each loads, calls the pure rules, saves, emits.

An activity batch: turn each event into candidate contributions (pure) and keep them pending
(`credit`; one that arrived behind the clock is credited at once). When the service clock
moves, which happens only once every input partition has passed a time (member-activity's own
events, engagement's and awareness's in-band watermarks), the pending contributions up to it
are credited in event-time order with the champion reviews in between (`settle`; decided by
`domain.run_batch`, pure). So the same log gives the same advocates and champions at any pace.
The same holds for a referral's credit (released when engagement moves the member it brought
in to engaged, `referral_credits`) and for a champion's product feedback (kept pending, then
judged with the reviews before its time).

Cutting the batch at merges and erasures, and dispatching each part here, is `shared.stage`.
The work is done against a `Store` Protocol (PostgreSQL in the service, a dict in the tests).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from services.advocacy import domain
from services.advocacy.store import PgStore
from shared import lifecycle
from shared.cloudevents import Envelope, OutgoingRecord, derive_event_id, encode, source_of
from shared.consumer import BatchHandler
from shared.contracts import (
    ADVOCATE,
    CHAMPION_FEEDBACK,
    CHAMPION_NOMINATED,
    AdvocateV1,
    ChampionFeedbackV1,
    ChampionNominatedV1,
    EventType,
)
from shared.eventtime import ClockReading
from shared.journey import transition_record
from shared.settings import Settings
from shared.stage import Stage, stage_handler
from shared.uow import UnitOfWork

SOURCE = source_of("advocacy")
AdvocacyStage = Stage[domain.Rules]


class Store(Protocol):
    """What crediting needs from storage (PostgreSQL in the service, a dict in the tests)."""

    async def last_boundary(self) -> datetime | None: ...

    async def earliest_contribution(self, until: datetime) -> datetime | None: ...

    async def add_pending(self, contributions: Sequence[domain.Contribution]) -> None: ...

    async def pending_until(self, until: datetime) -> list[domain.Contribution]: ...

    async def pending_keys(self, keys: Collection[str]) -> frozenset[str]: ...

    async def snapshot(
        self,
        member_ids: Collection[str],
        keys: Collection[str],
        content_ids: Collection[str],
        window: tuple[datetime, datetime] | None,
    ) -> domain.Snapshot: ...

    async def save(
        self,
        result: domain.BatchResult,
        last_boundary: datetime | None,
        settled: Collection[str] = (),
    ) -> None: ...

    async def referrals(self, joined: Collection[str]) -> dict[str, domain.Referral]: ...

    async def put_referrals(self, referrals: Iterable[domain.Referral]) -> None: ...

    async def add_pending_feedback(self, feedback: Sequence[domain.Feedback]) -> None: ...

    async def feedback_until(self, until: datetime) -> list[domain.Feedback]: ...

    async def drop_feedback(self, event_ids: Collection[str]) -> None: ...


class MergeStore(Store, Protocol):
    """What a merge or an erasure needs besides: every credit that names the members."""

    async def involving(
        self, member_ids: Collection[str], *, pending: bool = False
    ) -> list[domain.Contribution]: ...

    async def members(self, member_ids: Collection[str]) -> dict[str, domain.Member]: ...

    async def replace_contributions(
        self,
        old_keys: Collection[str],
        new: Sequence[domain.Contribution],
        *,
        pending: bool = False,
    ) -> None: ...

    async def put_members(self, members: Iterable[domain.Member]) -> None: ...

    async def delete_members(self, member_ids: Collection[str]) -> None: ...

    async def referrals_involving(self, member_ids: Collection[str]) -> list[domain.Referral]: ...

    async def delete_referrals(self, joined: Collection[str]) -> None: ...

    async def move_feedback(self, old: str, new: str) -> None: ...

    async def forget_feedback(self, member_ids: Collection[str]) -> None: ...


async def credit(
    store: Store, events: Sequence[Envelope], rules: domain.Rules, clock: datetime | None
) -> domain.BatchResult:
    """The events' contributions: those the clock has not passed wait for it (`settle`); a
    late one (at or behind the clock, whose reviews are done) is credited now, in arrival
    order, and reviews are not run again for it (docs/GUARANTEES.md, late data)."""
    candidates = [c for e in events for c in domain.contributions_of(e.data, e.id, rules)]
    candidates += await referral_credits(store, events, rules)
    late = [c for c in candidates if clock is not None and c.occurred_at <= clock]
    await store.add_pending([c for c in candidates if clock is None or c.occurred_at > clock])
    feedback = [f for e in events if (f := domain.feedback_of(e.data, e.id, rules)) is not None]
    late_feedback = tuple(f for f in feedback if clock is not None and f.occurred_at <= clock)
    await store.add_pending_feedback(
        [f for f in feedback if clock is None or f.occurred_at > clock]
    )
    if not late and not late_feedback:
        return domain.BatchResult((), {}, (), ())
    keys = {c.key for c in late}
    snapshot = await store.snapshot(
        {c.member_id for c in late} | {f.member_id for f in late_feedback},
        keys,
        {c.content_id for c in late if c.content_id is not None},
        None,
    )
    waiting = await store.pending_keys(keys)  # the same act on time: credited when settled
    snapshot = replace(snapshot, seen_keys=snapshot.seen_keys | waiting)
    steps = [domain.Step((c,)) for c in late] + [domain.Step((), (), late_feedback)]
    result = domain.run_batch(snapshot, steps, rules)
    await store.save(result, None)
    return result


async def referral_credits(
    store: Store, events: Sequence[Envelope], rules: domain.Rules
) -> list[domain.Contribution]:
    """Sign-ups through a referral and engagements, joined up: the credits they release. Both
    halves are on clock topics, so a credit dated at the later one is never behind the clock."""
    facts = [f for e in events if (f := domain.referral_fact(e.data, e.id, rules)) is not None]
    if not facts:
        return []
    held = await store.referrals({f.joined for f in facts})
    changed, credits = domain.follow_referrals(held, facts, rules)
    await store.put_referrals(changed.values())
    return credits


async def settle(store: Store, rules: domain.Rules, until: datetime) -> domain.BatchResult:
    """The clock moved to `until`: credit every pending contribution up to it in event-time
    order, and run each champion review it passed after everything at or before its boundary."""
    pending = await store.pending_until(until)
    feedback = await store.feedback_until(until)
    last_boundary = await store.last_boundary()
    # the earliest contribution places the first boundary only: once one is stored it is not
    # read again (no index leads with the time: a scan of every contribution per clock move).
    # Only one the clock has passed counts: those ahead of it depend on how far the log was
    # read, and a boundary placed from them would be stored or not by the pace of arrival
    earliest = await store.earliest_contribution(until) if last_boundary is None else None
    new_boundary, due = domain.boundaries_due(last_boundary, earliest, until, rules.period)
    if not pending and not due and not feedback:
        return domain.BatchResult((), {}, (), ())
    snapshot = await store.snapshot(
        {c.member_id for c in pending} | {f.member_id for f in feedback},
        {c.key for c in pending},
        {c.content_id for c in pending if c.content_id is not None},
        (min(due) - rules.window, max(due)) if due else None,
    )
    result = domain.run_batch(snapshot, domain.settlement_steps(pending, due, feedback), rules)
    await store.drop_feedback([f.event_id for f in feedback])
    await store.save(
        result,
        new_boundary if new_boundary != last_boundary else None,
        settled=[c.key for c in pending],
    )
    return result


async def apply_batch(
    store: Store, events: Sequence[Envelope], rules: domain.Rules, reading: ClockReading
) -> domain.BatchResult:
    """One unit of work as the runtime runs it (credit, then settle if the clock moved), on
    any store: the tests run it on an in-memory one."""
    credited = await credit(store, events, rules, reading.before)
    if not reading.advanced or reading.after is None:
        return credited
    settled = await settle(store, rules, reading.after)
    return domain.BatchResult(
        credited.credited + settled.credited,
        {**credited.members, **settled.members},
        credited.transitions + settled.transitions,
        credited.signals + settled.signals,
    )


SIGNAL_TYPES: dict[type, EventType] = {
    AdvocateV1: ADVOCATE,
    ChampionNominatedV1: CHAMPION_NOMINATED,
    ChampionFeedbackV1: CHAMPION_FEEDBACK,
}


def signal_record(signal: domain.Signal) -> OutgoingRecord:
    """Its id is derived from its cause, so a replay re-emits the very same event."""
    event_type = SIGNAL_TYPES[type(signal.payload)]
    return encode(
        event_type,
        signal.payload,
        event_id=derive_event_id(event_type.type, *signal.cause),
        source=SOURCE,
    )


def records(result: domain.BatchResult) -> list[OutgoingRecord]:
    return [transition_record("advocacy", t) for t in result.transitions] + [
        signal_record(s) for s in result.signals
    ]


async def merge(store: MergeStore, m: lifecycle.Merge, rules: domain.Rules) -> list[OutgoingRecord]:
    """Re-credit the merged member's contributions to the survivor, judge the survivor again,
    and take back what the merge shows was credited twice from anyone else."""
    involved = await store.involving({m.survivor, m.merged})
    moved = domain.merge_contributions(involved, m.survivor, m.merged)
    kept = {(c.member_id, c.key) for c in moved}
    third = {c.member_id for c in involved} - {m.survivor, m.merged}
    members = await store.members({m.survivor, m.merged, *third})
    last_boundary = await store.last_boundary()
    survivor, transitions, signals = domain.merge_members(
        members.get(m.survivor),
        members.get(m.merged),
        (m.survivor, m.merged, m.event_id),
        [c for c in moved if c.member_id == m.survivor],
        last_boundary,
        rules,
    )
    changed = [
        domain.uncredit(
            members[member_id],
            (c for c in involved if c.member_id == member_id and not _kept(c, m, kept)),
        )
        for member_id in sorted(third)
        if member_id in members
    ]
    await store.replace_contributions([c.key for c in involved], moved)
    waiting = await store.involving({m.survivor, m.merged}, pending=True)
    await store.replace_contributions(
        [c.key for c in waiting],
        domain.merge_contributions(waiting, m.survivor, m.merged),
        pending=True,
    )
    await store.delete_members([m.merged])
    await store.put_members([*changed, *([survivor] if survivor is not None else [])])
    referrals = await store.referrals_involving({m.survivor, m.merged})
    merged_referrals, released = domain.merge_referrals(referrals, m.survivor, m.merged, rules)
    await store.delete_referrals({r.joined for r in referrals})
    await store.put_referrals(merged_referrals.values())
    await store.add_pending(released)  # settled when the clock next moves
    await store.move_feedback(m.merged, m.survivor)
    result = domain.BatchResult((), {}, tuple(transitions), tuple(signals))
    return records(result)


def _kept(c: domain.Contribution, m: lifecycle.Merge, kept: set[tuple[str, str]]) -> bool:
    moved = domain.rekey(c, m.merged, m.survivor)
    return moved is not None and (moved.member_id, moved.key) in kept


async def erase(store: MergeStore, ids: frozenset[str]) -> None:
    """The members' rows and credits go; others' credits that name them are kept without the
    id (`domain.anonymize`)."""
    involved = await store.involving(ids)

    def tag(member_id: str) -> str:
        return lifecycle.member_hash(member_id)[:16]

    others = [domain.anonymize(c, ids, tag) for c in involved if c.member_id not in ids]
    await store.replace_contributions([c.key for c in involved], others)
    waiting = await store.involving(ids, pending=True)
    await store.replace_contributions(
        [c.key for c in waiting],
        [domain.anonymize(c, ids, tag) for c in waiting if c.member_id not in ids],
        pending=True,
    )
    await store.delete_members(ids)
    # a referral naming them is never credited now: they will not engage, or cannot be credited
    await store.delete_referrals({r.joined for r in await store.referrals_involving(ids)})
    await store.forget_feedback(ids)


async def on_activities(uow: UnitOfWork, events: list[Envelope], stage: AdvocacyStage) -> None:
    clock = uow.clock.before if uow.clock is not None else None
    for record in records(await credit(PgStore(uow.conn), events, stage.rules, clock)):
        uow.emit(record)


async def on_clock(uow: UnitOfWork, reading: ClockReading, stage: AdvocacyStage) -> None:
    if reading.after is None:
        return
    for record in records(await settle(PgStore(uow.conn), stage.rules, reading.after)):
        uow.emit(record)


async def on_merge(uow: UnitOfWork, m: lifecycle.Merge, stage: AdvocacyStage) -> None:
    for record in await merge(PgStore(uow.conn), m, stage.rules):
        uow.emit(record)


async def on_erase(uow: UnitOfWork, e: lifecycle.Erasure, stage: AdvocacyStage) -> Collection[str]:
    await erase(PgStore(uow.conn), e.ids)
    return ()


def build_handler(settings: Settings) -> BatchHandler:
    return stage_handler(
        settings,
        "advocacy",
        domain.Rules,
        on_activities=on_activities,
        on_merge=on_merge,
        on_erase=on_erase,
        on_clock=on_clock,
    )
