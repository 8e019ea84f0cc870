"""The projection: a batch of journey-transitions records -> the gateway's tables.

Runs inside the batch's unit of work, after the inbox dropped events applied before, so a
replay or a redelivery changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection

from services.gateway import flywheel, identity, store
from shared import lifecycle
from shared.cloudevents import Envelope
from shared.consumer import BatchHandler
from shared.contracts import StageChangedV1
from shared.settings import Settings
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


async def handle_batch(uow: UnitOfWork, events: list[Envelope]) -> None:
    rows = [row for row in map(to_row, events) if row is not None]
    await store.apply_transitions(uow.conn, rows)
    await flywheel.project_facts(uow, events)


def build_handler(settings: Settings) -> BatchHandler:
    """The projection read through merges and erasures (`shared.lifecycle`): a transition
    still keyed by a merged id lands on its survivor; nothing about an erased member is kept."""

    async def merge(uow: UnitOfWork, m: lifecycle.Merge) -> None:
        await identity.merge_gateway_state(uow.conn, m.survivor, m.merged)

    async def erase(uow: UnitOfWork, e: lifecycle.Erasure) -> Collection[str]:
        await identity.erase_gateway_state(uow.conn, e.ids, e.occurred_at)
        return ()

    return lifecycle.with_lifecycle(settings, apply=handle_batch, merge=merge, erase=erase)
