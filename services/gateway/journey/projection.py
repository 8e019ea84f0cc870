"""The journey projection: `journey.stage_changed.v1` events -> the journey tables.

Runs inside the batch's unit of work, after the inbox dropped events applied before, so a
replay or a redelivery changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.gateway.journey import store
from shared.cloudevents import Envelope
from shared.contracts import StageChangedV1
from shared.uow import UnitOfWork


def to_row(envelope: Envelope) -> store.TransitionRow | None:
    data = envelope.data
    if not isinstance(data, StageChangedV1):
        return None  # another event type on the topic: not ours to project
    return store.TransitionRow(
        event_id=envelope.id,
        member_id=data.member_id,
        dimension=data.dimension,
        from_stage=data.from_stage,
        to_stage=data.to_stage,
        reason=data.reason,
        score=data.score,
        occurred_at=data.occurred_at,
        caused_by=tuple(data.caused_by),
    )


async def project_transitions(uow: UnitOfWork, events: Sequence[Envelope]) -> None:
    """The journey's part of the gateway's batch: its transitions, into the journey tables."""
    rows = [row for row in map(to_row, events) if row is not None]
    await store.apply_transitions(uow.conn, rows)
