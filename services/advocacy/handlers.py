"""Advocacy batch handler: one unit of work per batch (the inbox already dropped duplicates).

The batch's shape: turn each event into candidate contributions (pure), work out which champion
reviews fall due after which event (pure, from event times only), load what the batch needs in
one read per kind, decide (`domain.run_batch`, pure), write once per kind, put the transitions
and signals in the outbox.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from services.advocacy import domain
from services.advocacy.store import PgStore
from shared.cloudevents import Envelope, OutgoingRecord, derive_event_id, encode
from shared.consumer import BatchHandler
from shared.contracts import ADVOCATE, CHAMPION_NOMINATED, AdvocateV1
from shared.journey import transition_record
from shared.rules import load_rules
from shared.settings import Settings
from shared.uow import UnitOfWork

SOURCE = "/services/advocacy"


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


def build_handler(settings: Settings) -> BatchHandler:
    rules = load_rules(domain.Rules, "advocacy", settings)
    lateness = timedelta(seconds=settings.allowed_lateness_s)

    async def handle_batch(uow: UnitOfWork, events: list[Envelope]) -> None:
        result = await apply_batch(PgStore(uow.conn), events, rules, lateness)
        for record in records(result):
            uow.emit(record)

    return handle_batch
