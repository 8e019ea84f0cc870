"""Advocacy handlers: one per kind of input, each loads, calls the pure rules, saves, emits.

An activity batch: turn each event into candidate contributions (pure), work out which champion
reviews fall due after which event (pure, from event times only), load what the batch needs in
one read per kind, decide (`domain.run_batch`, pure), write once per kind, put the transitions
and signals in the outbox. Cutting the batch at merges and erasures, and dispatching each part
here, is `shared.stage`. The work is done against a `Store` Protocol (PostgreSQL in the
service, a dict in the tests).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from services.advocacy import domain
from services.advocacy.store import PgStore
from shared import lifecycle
from shared.cloudevents import Envelope, OutgoingRecord, derive_event_id, encode, source_of
from shared.consumer import BatchHandler
from shared.contracts import ADVOCATE, CHAMPION_NOMINATED, AdvocateV1
from shared.journey import transition_record
from shared.settings import Settings
from shared.stage import Stage, stage_handler
from shared.uow import UnitOfWork

SOURCE = source_of("advocacy")
AdvocacyStage = Stage[domain.Rules]


class Store(Protocol):
    """What a batch needs from storage (PostgreSQL in the service, a dict in the tests)."""

    async def clock(self) -> tuple[datetime | None, datetime | None]: ...

    async def advance_watermark(self, events: Sequence[Envelope], lateness: timedelta) -> None: ...

    async def snapshot(
        self,
        member_ids: Collection[str],
        keys: Collection[str],
        content_ids: Collection[str],
        window: tuple[datetime, datetime] | None,
    ) -> domain.Snapshot: ...

    async def save(self, result: domain.BatchResult, last_boundary: datetime | None) -> None: ...


class MergeStore(Store, Protocol):
    """What a merge or an erasure needs besides: every credit that names the members."""

    async def involving(self, member_ids: Collection[str]) -> list[domain.Contribution]: ...

    async def members(self, member_ids: Collection[str]) -> dict[str, domain.Member]: ...

    async def replace_contributions(
        self, old_keys: Collection[str], new: Sequence[domain.Contribution]
    ) -> None: ...

    async def put_members(self, members: Iterable[domain.Member]) -> None: ...

    async def delete_members(self, member_ids: Collection[str]) -> None: ...


async def apply_batch(
    store: Store, events: Sequence[Envelope], rules: domain.Rules, lateness: timedelta
) -> domain.BatchResult:
    """Everything but the outbox, so the tests can run it on an in-memory store."""
    candidates = [tuple(domain.contributions_of(e.data, e.id, rules)) for e in events]
    last_boundary, newest_before = await store.clock()
    new_boundary, due = domain.reviews_due(
        last_boundary, newest_before, [e.time for e in events], lateness, rules.period
    )
    await store.advance_watermark(events, lateness)
    reviews: dict[int, list[datetime]] = {}
    for index, boundary in due:
        reviews.setdefault(index, []).append(boundary)
    steps = [domain.Step(cs, tuple(reviews.get(i, ()))) for i, cs in enumerate(candidates)]
    flat = [c for cs in candidates for c in cs]
    boundaries = [b for _, b in due]
    snapshot = await store.snapshot(
        {c.member_id for c in flat},
        {c.key for c in flat},
        {c.content_id for c in flat if c.content_id is not None},
        (min(boundaries) - rules.window, max(boundaries)) if boundaries else None,
    )
    result = domain.run_batch(snapshot, steps, rules)
    await store.save(result, new_boundary if new_boundary != last_boundary else None)
    return result


def signal_record(signal: domain.Signal) -> OutgoingRecord:
    """Its id is derived from its cause, so a replay re-emits the very same event."""
    event_type = ADVOCATE if isinstance(signal.payload, AdvocateV1) else CHAMPION_NOMINATED
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
    last_boundary, _ = await store.clock()
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
    await store.delete_members([m.merged])
    await store.put_members([*changed, *([survivor] if survivor is not None else [])])
    result = domain.BatchResult((), {}, tuple(transitions), tuple(signals))
    return records(result)


def _kept(c: domain.Contribution, m: lifecycle.Merge, kept: set[tuple[str, str]]) -> bool:
    moved = domain.rekey(c, m.merged, m.survivor)
    return moved is not None and (moved.member_id, moved.key) in kept


async def erase(store: MergeStore, ids: frozenset[str]) -> None:
    """The members' rows and credits go; others' credits that name them are kept without the
    id (`domain.anonymize`)."""
    involved = await store.involving(ids)
    others = [
        domain.anonymize(c, ids, lambda m: lifecycle.member_hash(m)[:16])
        for c in involved
        if c.member_id not in ids
    ]
    await store.replace_contributions([c.key for c in involved], others)
    await store.delete_members(ids)


async def on_activities(uow: UnitOfWork, events: list[Envelope], stage: AdvocacyStage) -> None:
    result = await apply_batch(PgStore(uow.conn), events, stage.rules, stage.lateness)
    for record in records(result):
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
    )
