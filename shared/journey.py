"""The journey vocabulary every stage service speaks: a transition, and its event."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from shared.cloudevents import Envelope, OutgoingRecord, derive_event_id, encode, payloads
from shared.contracts import STAGE_CHANGED, ActivityV1, Dimension, StageChangedV1
from shared.postgres import Connection
from shared.uow import UnitOfWork


@dataclass(frozen=True)
class Transition:
    """A member moved from one stage to another in one dimension (pure domain value)."""

    member_id: str
    from_stage: str | None
    to_stage: str
    reason: str
    occurred_at: datetime
    caused_by: tuple[str, ...]
    score: float | None = None


def transition_record(dimension: Dimension, t: Transition) -> OutgoingRecord:
    """Its id is derived from what caused it, so a replay re-emits the very same event."""
    event_id = derive_event_id(
        STAGE_CHANGED.type,
        dimension,
        t.member_id,
        t.from_stage or "",
        t.to_stage,
        t.occurred_at.isoformat(),
        *t.caused_by,
    )
    data = StageChangedV1(
        member_id=t.member_id,
        dimension=dimension,
        from_stage=t.from_stage,
        to_stage=t.to_stage,
        reason=t.reason,
        score=t.score,
        occurred_at=t.occurred_at,
        caused_by=list(t.caused_by),
    )
    return encode(STAGE_CHANGED, data, event_id=event_id, source=f"/services/{dimension}")


def transition_records(dimension: Dimension, ts: Sequence[Transition]) -> list[OutgoingRecord]:
    return [transition_record(dimension, t) for t in ts]


StateT = TypeVar("StateT")
Loader = Callable[[Connection, Iterable[str]], Awaitable[dict[str, StateT]]]
Saver = Callable[[Connection, Iterable[StateT]], Awaitable[None]]
Rule = Callable[[StateT | None, ActivityV1], tuple[StateT | None, list[Transition]]]


async def fold_activities(
    uow: UnitOfWork,
    events: Sequence[Envelope],
    *,
    dimension: Dimension,
    load: Loader[StateT],
    observe: Rule[StateT],
    save: Saver[StateT],
) -> list[Transition]:
    """The shape of a stage service's batch: load the members' state in one query, fold each
    activity through the pure rule in log order, save what changed in one statement, and put
    the transitions in the outbox."""
    activities = payloads(events, ActivityV1)
    states: dict[str, StateT] = await load(uow.conn, {a.actor.member_id for a in activities})
    changed: dict[str, StateT] = {}
    emitted: list[Transition] = []
    for activity in activities:
        member_id = activity.actor.member_id
        before = states.get(member_id)
        after, transitions = observe(before, activity)
        if after is not None and after != before:
            states[member_id] = changed[member_id] = after
        emitted.extend(transitions)
    await save(uow.conn, changed.values())
    for t in emitted:
        uow.emit(transition_record(dimension, t))
    return emitted
