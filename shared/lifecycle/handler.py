"""`with_lifecycle`: a service's batch handler, reading events through merges and erasures
and applying each merge or erasure at its place in the batch.

The batch is cut at each merge or erasure: the events before it are applied, then the
service's own merge or erase rule, then the events after it, all in the batch's transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable

from shared.cloudevents import Envelope
from shared.consumer import BatchHandler
from shared.contracts import MemberErasedV1, MemberMergedV1
from shared.lifecycle.bootstrap import ErasureBootstrap
from shared.lifecycle.rewrite import Erasure, Merge, canonical_envelope, member_ids, merge_of
from shared.lifecycle.store import load_members, merged_into, record_erasure, record_merge
from shared.settings import Settings
from shared.uow import UnitOfWork

MergeHandler = Callable[[UnitOfWork, Merge], Awaitable[None]]
EraseHandler = Callable[[UnitOfWork, Erasure], Awaitable[Collection[str]]]
"""Deletes the service's rows about `ids`; returns any further ids it erased with them (e.g.
awareness's anonymous visitor ids of the member), which are remembered as erased too."""


def _named(events: Iterable[Envelope]) -> set[str]:
    ids: set[str] = set()
    for e in events:
        ids |= member_ids(e.data)
        ids.add(e.key)
    return ids


def with_lifecycle(
    settings: Settings,
    *,
    apply: BatchHandler,
    merge: MergeHandler,
    erase: EraseHandler,
) -> BatchHandler:
    """The service's batch handler, reading events through merges and erasures, and applying
    each merge or erasure at its place in the batch."""
    bootstrap = ErasureBootstrap(settings)

    async def handle_batch(uow: UnitOfWork, events: list[Envelope]) -> None:
        await bootstrap.ensure(uow.conn)
        members = await load_members(uow.conn, _named(events))
        segment: list[Envelope] = []

        async def flush() -> None:
            if segment:
                await apply(uow, list(segment))
                segment.clear()

        for envelope in events:
            data = envelope.data
            if isinstance(data, MemberMergedV1):
                await flush()
                found = merge_of(envelope, members)
                if found is not None:
                    await merge(uow, found)
                    await record_merge(uow.conn, found)
                    members.note_merge(found)
            elif isinstance(data, MemberErasedV1):
                await flush()
                member = members.aliases.get(data.member_id, data.member_id)
                ids = {data.member_id, member} | await merged_into(uow.conn, member)
                erasure = Erasure(member, frozenset(ids), data.occurred_at, envelope.id)
                ids |= set(await erase(uow, erasure))
                await record_erasure(uow.conn, ids, data.occurred_at)
                members.note_erased(ids)
            elif not members.aliases and not members.erased:
                segment.append(envelope)  # nobody in this batch merged or erased: as read
            elif (readable := canonical_envelope(envelope, members)) is not None:
                segment.append(readable)
        await flush()

    return handle_batch
