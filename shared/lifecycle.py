"""Merges and erasures, applied the same way by every service that keeps state about members.

`member.merged.v1` (two member ids are one person) and `member.erased.v1` (forget a person)
travel on `member-lifecycle`. A service wraps its batch handler in `with_lifecycle`, which:

- reads every event of the batch through the service's `lifecycle.member_aliases` (a merged
  id is read as its survivor) and `lifecycle.erased_members` (an event about an erased member
  is dropped; a mention of one in someone else's event is removed), so late activity keyed by
  a merged id lands on the survivor and nothing re-creates an erased person, live or in a
  replay;
- cuts the batch at each merge or erasure: the events before it are applied, then the
  service's own merge or erase rule, then the events after it, all in the batch's transaction;
- before a database's first batch, reads the erasures already on `member-lifecycle`
  (`ErasureBootstrap`), so a replay of `member-activity` from offset 0 into a fresh database
  never re-creates, even for a moment, a person erased later in the log.

What a merge or an erasure does to a service's own state is that service's rule (its
`domain.py` and `store.py`); this module only knows member ids.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.cloudevents import DecodeError, Envelope, decode
from shared.consumer import BatchHandler
from shared.contracts import (
    ActivityV1,
    Contract,
    MemberAcquiredV1,
    MemberErasedV1,
    MemberMergedV1,
    PeerHelpV1,
    StageChangedV1,
)
from shared.postgres import Connection
from shared.settings import Settings
from shared.topics import MEMBER_LIFECYCLE
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("lifecycle_migrations")
"""Schema `lifecycle` (member_aliases, erased_members, bootstrap): a spec's extra migrations."""

ERASED = "(erased member)"
"""What replaces an erased member's id where someone else's record mentions it."""

_HASH_PREFIX = b"flywheel:erased-member\x1f"


def member_hash(member_id: str) -> str:
    """What an erased member is remembered by. A pseudonym, not a secret: the id itself stays
    in `member-lifecycle` (the erasure event), so the hash only keeps it out of the tables."""
    return hashlib.sha256(_HASH_PREFIX + member_id.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# what a service applies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Merge:
    """`merged` is `survivor` (both already resolved through the service's aliases)."""

    survivor: str
    merged: str
    occurred_at: datetime
    reason: str
    event_id: str
    """The merge event's id: the cause of every transition the merge brings about."""


@dataclass(frozen=True)
class Erasure:
    """Forget `member_id` and every id merged into it (`ids` holds all of them)."""

    member_id: str
    ids: frozenset[str]
    occurred_at: datetime
    event_id: str


MergeHandler = Callable[[UnitOfWork, Merge], Awaitable[None]]
EraseHandler = Callable[[UnitOfWork, Erasure], Awaitable[Collection[str]]]
"""Deletes the service's rows about `ids`; returns any further ids it erased with them (e.g.
awareness's anonymous visitor ids of the member), which are remembered as erased too."""


# --------------------------------------------------------------------------------------------
# reading events through aliases and erasures (pure)
# --------------------------------------------------------------------------------------------


@dataclass
class Members:
    """The aliases and erasures that concern one batch's member ids."""

    aliases: dict[str, str] = field(default_factory=dict)
    erased: set[str] = field(default_factory=set)

    def resolve(self, member_id: str) -> str | None:
        """The survivor of a merged id, the id itself otherwise; None if erased."""
        if member_id in self.erased:
            return None
        survivor = self.aliases.get(member_id, member_id)
        return None if survivor in self.erased else survivor

    def note_merge(self, merge: Merge) -> None:
        self.aliases[merge.merged] = merge.survivor
        for merged, survivor in list(self.aliases.items()):
            if survivor == merge.merged:
                self.aliases[merged] = merge.survivor

    def note_erased(self, ids: Iterable[str]) -> None:
        ids = set(ids)
        self.erased |= ids
        self.aliases = {m: s for m, s in self.aliases.items() if m not in ids and s not in ids}


_PROPERTY_REFS = ("referred_by", "anonymous_id")
"""Activity properties that name a member (or a visitor's anonymous id)."""

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=\-]*")
_TRAILING = "._:@/+=-"


def mentioned(text: str) -> set[str]:
    """What in a text could be a member id (a reason such as "referred by m-42.")."""
    tokens = set(_TOKEN.findall(text))
    return tokens | {t.rstrip(_TRAILING) for t in tokens} - {""}


def scrub(text: str, erased: Collection[str]) -> str:
    """The text with every erased member id in it replaced by `ERASED`."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in erased:
            return ERASED
        stripped = token.rstrip(_TRAILING)
        return ERASED + token[len(stripped) :] if stripped in erased else token

    return _TOKEN.sub(replace, text)


def member_ids(data: Contract) -> set[str]:
    """Every member id an event names."""
    if isinstance(data, ActivityV1):
        ids = {data.actor.member_id}
        if data.target is not None:
            ids |= {
                i
                for i in (data.target.thread_author_member_id, data.target.parent_author_member_id)
                if i
            }
        ids |= {v for k in _PROPERTY_REFS if isinstance(v := data.properties.get(k), str) and v}
        return ids
    if isinstance(data, PeerHelpV1):
        return {data.helper_member_id, data.helped_member_id}
    if isinstance(data, MemberAcquiredV1):
        return {data.member_id, data.referrer_member_id}
    if isinstance(data, MemberMergedV1):
        return {data.survivor_member_id, data.merged_member_id}
    if isinstance(data, StageChangedV1):  # its reason may name another member
        return {data.member_id} | mentioned(data.reason)
    member_id = getattr(data, "member_id", None)
    return {member_id} if isinstance(member_id, str) else set()


def canonical(data: Contract, members: Members) -> Contract | None:
    """The event with merged ids read as their survivors and erased members taken out: None
    when it is about an erased member (its subject, or the other party of peer help or a
    referral), otherwise a mention of one (a thread's author, a referrer) is removed."""
    if isinstance(data, ActivityV1):
        return _canonical_activity(data, members)
    if isinstance(data, PeerHelpV1):
        helper = members.resolve(data.helper_member_id)
        helped = members.resolve(data.helped_member_id)
        if helper is None or helped is None:
            return None
        if (helper, helped) == (data.helper_member_id, data.helped_member_id):
            return data
        return data.model_copy(update={"helper_member_id": helper, "helped_member_id": helped})
    if isinstance(data, MemberAcquiredV1):
        member = members.resolve(data.member_id)
        referrer = members.resolve(data.referrer_member_id)
        if member is None or referrer is None:
            return None
        if (member, referrer) == (data.member_id, data.referrer_member_id):
            return data
        return data.model_copy(update={"member_id": member, "referrer_member_id": referrer})
    member_id = getattr(data, "member_id", None)
    if not isinstance(member_id, str):
        return data  # clock ticks: about nobody
    resolved = members.resolve(member_id)
    if resolved is None:
        return None
    update: dict[str, object] = {} if resolved == member_id else {"member_id": resolved}
    if isinstance(data, StageChangedV1) and mentioned(data.reason) & members.erased:
        update["reason"] = scrub(data.reason, members.erased)  # "referred by <erased>"
    return data.model_copy(update=update) if update else data


def _canonical_activity(activity: ActivityV1, members: Members) -> ActivityV1 | None:
    actor_id = members.resolve(activity.actor.member_id)
    if actor_id is None:
        return None
    update: dict[str, object] = {}
    if actor_id != activity.actor.member_id:
        update["actor"] = activity.actor.model_copy(update={"member_id": actor_id})
    target = activity.target
    if target is not None:
        refs = {
            name: value
            for name in ("thread_author_member_id", "parent_author_member_id")
            if (value := getattr(target, name))
        }
        changed = {
            name: members.resolve(value)
            for name, value in refs.items()
            if members.resolve(value) != value
        }
        if changed:
            update["target"] = target.model_copy(update=changed)
    properties = dict(activity.properties)
    for name in _PROPERTY_REFS:
        value = properties.get(name)
        if isinstance(value, str) and value:
            resolved = members.resolve(value)
            if resolved is None:
                del properties[name]
            else:
                properties[name] = resolved
    if properties != activity.properties:
        update["properties"] = properties
    return activity.model_copy(update=update) if update else activity


def canonical_envelope(envelope: Envelope, members: Members) -> Envelope | None:
    data = canonical(envelope.data, members)
    if data is None:
        return None
    if data is envelope.data:
        return envelope
    key = members.resolve(envelope.key) or envelope.key
    return dataclasses.replace(envelope, data=data, key=key)


# --------------------------------------------------------------------------------------------
# the tables
# --------------------------------------------------------------------------------------------


async def load_members(conn: Connection, ids: Iterable[str]) -> Members:
    """The aliases and erasures of `ids`: one query."""
    wanted = sorted(set(ids))
    if not wanted:
        return Members()
    by_hash = {member_hash(i): i for i in wanted}
    rows = await conn.fetch(
        "SELECT merged_id AS id, survivor_id FROM lifecycle.member_aliases"
        " WHERE merged_id = ANY($1::text[])"
        " UNION ALL SELECT member_hash, NULL FROM lifecycle.erased_members"
        " WHERE member_hash = ANY($2::text[])",
        wanted,
        list(by_hash),
    )
    members = Members()
    for r in rows:
        if r["survivor_id"] is None:
            members.erased.add(by_hash[r["id"]])
        else:
            members.aliases[r["id"]] = r["survivor_id"]
    return members


async def merged_into(conn: Connection, survivor: str) -> set[str]:
    """The ids merged into `survivor`."""
    rows = await conn.fetch(
        "SELECT merged_id FROM lifecycle.member_aliases WHERE survivor_id = $1", survivor
    )
    return {r["merged_id"] for r in rows}


async def record_merge(conn: Connection, merge: Merge) -> None:
    """The merged id, and every id merged into it before, now read as the survivor."""
    await conn.execute(
        "INSERT INTO lifecycle.member_aliases (merged_id, survivor_id, merged_at)"
        " VALUES ($1, $2, $3)"
        " ON CONFLICT (merged_id) DO UPDATE"
        " SET survivor_id = EXCLUDED.survivor_id, merged_at = EXCLUDED.merged_at",
        merge.merged,
        merge.survivor,
        merge.occurred_at,
    )
    await conn.execute(
        "UPDATE lifecycle.member_aliases SET survivor_id = $2 WHERE survivor_id = $1",
        merge.merged,
        merge.survivor,
    )


async def record_erasure(conn: Connection, ids: Collection[str], at: datetime) -> None:
    """Remember the ids as hashes only, and forget their aliases."""
    await conn.execute(
        "INSERT INTO lifecycle.erased_members (member_hash, erased_at)"
        " SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
        sorted(member_hash(i) for i in ids),
        at,
    )
    await conn.execute(
        "DELETE FROM lifecycle.member_aliases WHERE merged_id = ANY($1::text[])"
        " OR survivor_id = ANY($1::text[])",
        sorted(ids),
    )


async def is_erased(conn: Connection, member_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM lifecycle.erased_members WHERE member_hash = $1)",
            member_hash(member_id),
        )
    )


# --------------------------------------------------------------------------------------------
# a batch
# --------------------------------------------------------------------------------------------


def _named(events: Iterable[Envelope]) -> set[str]:
    ids: set[str] = set()
    for e in events:
        ids |= member_ids(e.data)
        ids.add(e.key)
    return ids


def merge_of(envelope: Envelope, members: Members) -> Merge | None:
    """The merge to apply, with both ids resolved; None when there is nothing to do (an id
    merged into itself, or either side erased).

    A merged id already read as the survivor is merged again: every service's merge rule is
    idempotent, and the gateway, which records the alias when it links the identities, may
    have written rows under the merged id since (a transition read concurrently)."""
    data = envelope.data
    assert isinstance(data, MemberMergedV1)
    survivor = members.resolve(data.survivor_member_id)
    merged = members.resolve(data.merged_member_id)
    if survivor is None or merged is None:
        return None
    if merged == survivor:
        merged = data.merged_member_id
        if merged == survivor:
            return None
    return Merge(survivor, merged, data.occurred_at, data.reason, envelope.id)


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
            elif (readable := canonical_envelope(envelope, members)) is not None:
                segment.append(readable)
        await flush()

    return handle_batch


# --------------------------------------------------------------------------------------------
# erasures already on the log, before a database's first batch
# --------------------------------------------------------------------------------------------


def erased_in_log(events: Iterable[MemberMergedV1 | MemberErasedV1]) -> set[str]:
    """Every id erased by a log of merges and erasures: an erased member and every id merged
    into it (merges first: an erased id is never merged again)."""
    events = list(events)
    aliases = Members()
    for e in events:
        if isinstance(e, MemberMergedV1):
            survivor = aliases.aliases.get(e.survivor_member_id, e.survivor_member_id)
            merged = aliases.aliases.get(e.merged_member_id, e.merged_member_id)
            if survivor != merged:
                aliases.note_merge(Merge(survivor, merged, e.occurred_at, e.reason, ""))
    erased: set[str] = set()
    for e in events:
        if isinstance(e, MemberErasedV1):
            member = aliases.aliases.get(e.member_id, e.member_id)
            erased |= {e.member_id, member}
            erased |= {m for m, s in aliases.aliases.items() if s == member}
    return erased


async def topic_partitions(bootstrap_servers: str, topic: str) -> list[TopicPartition]:
    """The partitions of a topic, from the cluster's metadata (a consumer that has not
    subscribed does not know them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="flywheel-admin")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [
        TopicPartition(d["topic"], int(p["partition"]))
        for d in described
        if d["error_code"] == 0
        for p in sorted(d["partitions"], key=lambda p: int(p["partition"]))
    ]


async def read_lifecycle(settings: Settings, timeout_s: float = 60.0) -> list[Envelope]:
    """Every merge and erasure on `member-lifecycle`, up to its end now."""
    topic = settings.topic(MEMBER_LIFECYCLE.name)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="flywheel-lifecycle-bootstrap",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    found: list[Envelope] = []
    started = False
    try:
        await consumer.start()
        started = True
        async with asyncio.timeout(timeout_s):
            tps = await topic_partitions(settings.kafka_bootstrap_servers, topic)
            if not tps:
                raise KafkaError(f"{topic} has no partitions (not created yet?)")
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp, start in (await consumer.beginning_offsets(tps)).items():
                consumer.seek(tp, start)  # explicit: a pending offset reset must not win
            pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        if r.value is None:
                            continue
                        try:
                            envelope = decode(
                                topic=r.topic,
                                partition=r.partition,
                                offset=r.offset,
                                key=r.key,
                                value=r.value,
                                headers=r.headers,
                            )
                        except DecodeError:
                            continue  # the consumer dead-letters it in its turn
                        if isinstance(envelope.data, MemberMergedV1 | MemberErasedV1):
                            found.append(envelope)
                pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    except (KafkaError, TimeoutError) as exc:
        # transient for the batch processor: retried with back-off, never dead-lettered
        raise ConnectionError(f"reading {topic} for erasures failed: {exc!r}") from exc
    finally:
        if started:
            await consumer.stop()
    return found


class ErasureBootstrap:
    """Before a database's first batch, remember every member already erased on the log."""

    def __init__(
        self,
        settings: Settings,
        reader: Callable[[Settings], Awaitable[list[Envelope]]] = read_lifecycle,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.done = False

    async def ensure(self, conn: Connection) -> None:
        if self.done:
            return
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM lifecycle.bootstrap)"):
            self.done = True  # committed by an earlier batch (or another replica)
            return
        events = await self.reader(self.settings)
        data = [e.data for e in events if isinstance(e.data, MemberMergedV1 | MemberErasedV1)]
        erased = erased_in_log(data)
        times: Mapping[str, datetime] = {
            e.member_id: e.occurred_at for e in data if isinstance(e, MemberErasedV1)
        }
        if erased:
            at = max(times.values())
            await conn.execute(
                "INSERT INTO lifecycle.erased_members (member_hash, erased_at)"
                " SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
                sorted(member_hash(i) for i in erased),
                at,
            )
            log.info("remembered %d erased member id(s) from member-lifecycle", len(erased))
        await conn.execute(
            "INSERT INTO lifecycle.bootstrap (erasures) VALUES ($1) ON CONFLICT DO NOTHING",
            len(erased),
        )
