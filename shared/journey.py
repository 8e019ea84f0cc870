"""The journey vocabulary every stage service speaks: a transition, and its event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.cloudevents import OutgoingRecord, derive_event_id, encode, source_of
from shared.contracts import STAGE_CHANGED, Dimension, StageChangedV1, TransitionDetails


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
    details: TransitionDetails | None = None
    """Structured facts behind the move (awareness: first touch, community touchpoints); not
    part of the event id, which stays derived from the cause."""


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
        details=t.details,
    )
    return encode(STAGE_CHANGED, data, event_id=event_id, source=source_of(dimension))
