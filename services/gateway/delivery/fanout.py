"""The fan-out: a batch of output events -> one queued delivery per matching subscription.

Runs in the batch's unit of work after the fan-out's own inbox dropped events it queued before,
so the deliveries are as durable as the consumer's progress and each is queued once: a
redelivered batch, a rebalance or a crash between commit and offset commit queues nothing twice.
"""

from __future__ import annotations

from services.gateway.delivery import store
from services.gateway.delivery.signing import structured_body
from shared import contracts
from shared.cloudevents import Envelope
from shared.postgres import Connection
from shared.topics import (
    JOURNEY_TRANSITIONS,
    MEMBER_LIFECYCLE,
    SIGNALS_ADVOCACY,
    SIGNALS_PRODUCT,
    SIGNALS_SALES,
    SIGNALS_SUCCESS,
    SIGNALS_SUPPORT,
    Topic,
)
from shared.uow import UnitOfWork

OUTPUT_TOPICS: tuple[Topic, ...] = (
    JOURNEY_TRANSITIONS,
    MEMBER_LIFECYCLE,
    SIGNALS_SUPPORT,
    SIGNALS_SALES,
    SIGNALS_SUCCESS,
    SIGNALS_ADVOCACY,
    SIGNALS_PRODUCT,
)
"""What the system emits for the outside world; the activity log and clock ticks are inputs."""

DELIVERABLE_TYPES: tuple[str, ...] = tuple(
    sorted(t.type for t in contracts.EVENT_TYPES.values() if t.topic in OUTPUT_TOPICS)
)
"""The CloudEvents types a subscription may ask for."""


def to_queued(envelope: Envelope) -> store.QueuedEvent:
    return store.QueuedEvent(
        event_id=envelope.id,
        event_type=envelope.type,
        member_key=envelope.key,
        event_time=envelope.time,
        body=structured_body(envelope),
    )


ERASED = "member.erased.v1"
"""Keyed by the erased member: subscribers are told, and the queue forgets everything else
about the member."""


async def wanted_types(conn: Connection) -> frozenset[str]:
    """What the fan-out acts on: the types some subscription wants, and erasures (the queue
    forgets the member). The batch processor leaves every other event undecoded, out of the
    fan-out's inbox and its dead letters: most of a backfill's transitions and signals when
    few types are subscribed, all of them when none is."""
    return await store.subscribed_types(conn) | {ERASED}


async def handle_batch(uow: UnitOfWork, events: list[Envelope]) -> None:
    """Set-based: one INSERT for the whole batch, whatever the number of subscriptions. Only
    the events of a type some subscription wants (looked up in the same transaction, as the
    INSERT's join would) get a body built and sent: a backfill's hundreds of thousands of
    transitions and signals nobody subscribed to cost a set lookup each, not a JSON document
    (a tenth of the gateway's CPU in a backfill: docs/PERFORMANCE.md, phase 7b)."""
    deliverable = [e for e in events if e.type in DELIVERABLE_TYPES]
    if deliverable:
        subscribed = await store.subscribed_types(uow.conn)
        wanted = [to_queued(e) for e in deliverable if e.type in subscribed]
        await store.queue_deliveries(uow.conn, wanted)
    erased = [e.key for e in events if e.type == ERASED]
    if erased:
        await store.forget_members(uow.conn, erased, keep_type=ERASED)
