"""Who is who: one member per person, merges, and erasure, at the gateway.

The gateway keeps, in its own database, every platform identity (platform, platform user id)
and every verified email of a person, each pointing at one member id:

- `IdentityStore.resolve` is what the platform webhooks call to turn a platform user into a
  member id: a known identity gives its member; an unknown one with a verified email another
  identity already has joins that member; otherwise the identity becomes the member id it has
  always been (`<platform>:<platform user id>`).
- `POST /v1/members/{id}/identities` links an identity (and optionally a verified email) to a
  member by hand. Linking one that belongs to member B to member A says A and B are one
  person: B is **merged** into A, `member.merged.v1` goes out on `member-lifecycle`, and every
  service folds B into A (here: B's journey and stages move under A).
- `DELETE /v1/members/{id}` **erases** a person: the gateway forgets the journey, the flywheel
  facts and the identities of the member and every id merged into it, blocks those identities
  (kept as hashes) and publishes `member.erased.v1`, on which every service does the same.

Merge and erasure events are written to the gateway's outbox in the same transaction as the
identity tables, so a crash can neither lose one nor publish one that did not happen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from services.gateway import auth
from services.gateway.ports import ActivityPublisher, Unavailable
from services.gateway.problems import PROBLEM_JSON, TYPE_PREFIX, ProblemError
from services.gateway.views import Problem
from shared import lifecycle, metrics
from shared.cloudevents import OutgoingRecord, derive_event_id, encode, header_map
from shared.contracts import (
    ACTIVITY,
    MEMBER_ERASED,
    MEMBER_MERGED,
    ActivityV1,
    Identifier,
    MemberErasedV1,
    MemberMergedV1,
    Platform,
)
from shared.postgres import TRANSIENT_DB_ERRORS, Connection
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

SOURCE = "/gateway"
MEMBER_ERASED_PROBLEM = TYPE_PREFIX + "member-erased"
IDENTITY_BLOCKED = TYPE_PREFIX + "identity-blocked"
_LOCK = 7277005  # serialises identity writes: links and merges are rare, and must not race


# --------------------------------------------------------------------------------------------
# names and hashes
# --------------------------------------------------------------------------------------------


def derived_member_id(platform: str, platform_user_id: str) -> str:
    """The member id of an identity never linked to anyone: `<platform>:<user id>`, the id
    the webhook mappers have always derived (so nothing already published changes)."""
    return f"{platform}:{platform_user_id}"


def normalize_email(email: str) -> str:
    return email.strip().lower()


def identity_hash(platform: str, platform_user_id: str) -> str:
    """A blocked identity, remembered without the identity itself."""
    return hashlib.sha256(
        f"flywheel:identity\x1f{platform}\x1f{platform_user_id}".encode()
    ).hexdigest()


def email_hash(email: str) -> str:
    return hashlib.sha256(f"flywheel:email\x1f{normalize_email(email)}".encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# --------------------------------------------------------------------------------------------
# what a merge and an erasure do to the gateway's tables (the consumer uses these too)
# --------------------------------------------------------------------------------------------


async def merge_gateway_state(conn: Connection, survivor: str, merged: str) -> None:
    """B's identities, journey and flywheel facts are A's now. A's current stage in a
    dimension stays (the stage service sends A's re-judged stage as a transition); where A has
    none, B's becomes A's."""
    for sql in (
        "UPDATE identities SET member_id = $1 WHERE member_id = $2",
        "UPDATE identity_emails SET member_id = $1 WHERE member_id = $2",
        "UPDATE journey_transitions SET member_id = $1 WHERE member_id = $2",
        "INSERT INTO member_stages (member_id, dimension, stage, since, score, event_id)"
        " SELECT $1, dimension, stage, since, score, event_id FROM member_stages"
        " WHERE member_id = $2 ON CONFLICT (member_id, dimension) DO NOTHING",
        "DELETE FROM member_stages WHERE member_id = $2 AND $1 <> $2",
        # one acquisition per person: the survivor's own, if it has one
        "DELETE FROM flywheel_acquisitions WHERE member_id = $2"
        " AND EXISTS (SELECT 1 FROM flywheel_acquisitions WHERE member_id = $1)",
        "UPDATE flywheel_acquisitions SET member_id = $1 WHERE member_id = $2",
        "UPDATE flywheel_acquisitions SET referrer_member_id = $1 WHERE referrer_member_id = $2",
        "UPDATE flywheel_peer_help SET helper_member_id = $1 WHERE helper_member_id = $2",
        "UPDATE flywheel_peer_help SET helped_member_id = $1 WHERE helped_member_id = $2",
        "UPDATE flywheel_questions SET member_id = $1 WHERE member_id = $2",
        "UPDATE flywheel_churn_risk SET member_id = $1 WHERE member_id = $2",
    ):
        await conn.execute(sql, survivor, merged)
    # B referred A, or A referred B: no referral of oneself
    await conn.execute(
        "DELETE FROM flywheel_acquisitions WHERE member_id = $1 AND referrer_member_id = $1",
        survivor,
    )


_ID_CHARS = r"A-Za-z0-9._:@/+=\-"


def mention_pattern(member_id: str) -> str:
    """A PostgreSQL regular expression matching the id as a whole word (not `m-1` in `m-12`,
    but `m-1` in "referred by m-1."), as `lifecycle.scrub` does for new events."""
    end = f"(?:$|[^{_ID_CHARS}])"
    return f"(?<![{_ID_CHARS}]){re.escape(member_id)}(?={end}|[._:@/+=\\-]+{end})"


async def erase_gateway_state(conn: Connection, ids: Collection[str], at: datetime) -> int:
    """Delete every row about the members; where someone else's row names one of them (a
    referrer, a helped member, a transition's reason), put `lifecycle.ERASED` in its place.
    Their identities and emails are deleted and blocked; returns how many were blocked."""
    members = sorted(ids)
    rows = await conn.fetch(
        "SELECT platform, platform_user_id FROM identities WHERE member_id = ANY($1::text[])",
        members,
    )
    emails = await conn.fetch(
        "SELECT email FROM identity_emails WHERE member_id = ANY($1::text[])", members
    )
    hashes = [identity_hash(r["platform"], r["platform_user_id"]) for r in rows]
    hashes += [email_hash(r["email"]) for r in emails]
    await conn.execute(
        "INSERT INTO blocked_identities (identity_hash, blocked_at)"
        " SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
        hashes,
        at,
    )
    erased = lifecycle.ERASED
    for sql in (
        "DELETE FROM identities WHERE member_id = ANY($1::text[])",
        "DELETE FROM identity_emails WHERE member_id = ANY($1::text[])",
        "DELETE FROM journey_transitions WHERE member_id = ANY($1::text[])",
        "DELETE FROM member_stages WHERE member_id = ANY($1::text[])",
        "DELETE FROM flywheel_acquisitions WHERE member_id = ANY($1::text[])",
        "DELETE FROM flywheel_peer_help WHERE helper_member_id = ANY($1::text[])",
        "DELETE FROM flywheel_questions WHERE member_id = ANY($1::text[])",
        "DELETE FROM flywheel_churn_risk WHERE member_id = ANY($1::text[])",
        # inbound webhooks remember who started a thread, to credit later replies
        "DELETE FROM webhook_thread_authors WHERE author_member_id = ANY($1::text[])",
    ):
        await conn.execute(sql, members)
    await conn.execute(
        "UPDATE flywheel_acquisitions SET referrer_member_id = $2"
        " WHERE referrer_member_id = ANY($1::text[])",
        members,
        erased,
    )
    await conn.execute(
        "UPDATE flywheel_peer_help SET helped_member_id = $2"
        " WHERE helped_member_id = ANY($1::text[])",
        members,
        erased,
    )
    for member in members:  # others' reasons that name them ("referred by ...")
        await conn.execute(
            "UPDATE journey_transitions SET reason = regexp_replace(reason, $1, $2, 'g')"
            " WHERE strpos(reason, $3) > 0",
            mention_pattern(member),
            erased,
            member,
        )
    return len(hashes)


# --------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------


class Linked(BaseModel):
    model_config = ConfigDict(frozen=True)

    member_id: str = Field(
        description="The member the identity belongs to now (a merged id's survivor)."
    )
    platform: str
    platform_user_id: str
    email_linked: bool = Field(description="Whether a verified email was linked too.")
    merged: list[str] = Field(
        description="Member ids found to be this person and merged into it (member.merged.v1 "
        "published for each)."
    )


class IdentityView(BaseModel):
    model_config = ConfigDict(frozen=True)

    platform: str
    platform_user_id: str
    linked_by: str = Field(description="first_seen, email or operator.")
    linked_at: datetime


class MemberIdentities(BaseModel):
    model_config = ConfigDict(frozen=True)

    member_id: str
    merged_ids: list[str] = Field(description="Member ids merged into this one.")
    identities: list[IdentityView]
    emails: list[str] = Field(description="Verified emails (personal data: admin only).")


class Erased(BaseModel):
    model_config = ConfigDict(frozen=True)

    member_id: str = Field(description="The member erased (a merged id's survivor).")
    erased_ids: list[str] = Field(description="It and every member id merged into it.")
    identities_blocked: int = Field(
        description="Platform identities and emails now blocked (kept as hashes only)."
    )


class IdentityStore:
    """The identity tables in the gateway's database; the pool appears at start-up, `wake`
    tells the outbox relay there is something to publish."""

    def __init__(
        self, pool: Callable[[], asyncpg.Pool | None], wake: Callable[[], None] = lambda: None
    ) -> None:
        self._pool = pool
        self._wake = wake

    def _ready_pool(self) -> asyncpg.Pool:
        pool = self._pool()
        if pool is None:
            raise Unavailable("database", "the gateway is not started yet")
        return pool

    # ---- the webhooks' resolver ---------------------------------------------------------

    async def resolve(
        self, platform: str, platform_user_id: str, verified_email: str | None = None
    ) -> str:
        """The member id of a platform user, creating the identity on first sight.

        `verified_email` only if the platform vouches for it: an email already known joins
        the identity to that email's member (merging the identity's member into it if it had
        another). A blocked identity (an erased person) resolves to its derived id and is
        recorded nowhere; the guarded publisher then drops its activity.
        """
        email = normalize_email(verified_email) if verified_email else None
        blocked = [identity_hash(platform, platform_user_id)]
        if email:
            blocked.append(email_hash(email))
        try:
            async with self._ready_pool().acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT (SELECT member_id FROM identities"
                    "        WHERE platform = $1 AND platform_user_id = $2) AS owner,"
                    " (SELECT member_id FROM identity_emails WHERE email = $3) AS email_owner,"
                    " EXISTS (SELECT 1 FROM blocked_identities"
                    "         WHERE identity_hash = ANY($4::text[])) AS blocked",
                    platform,
                    platform_user_id,
                    email,
                    blocked,
                )
                assert row is not None
                if row["blocked"]:
                    return derived_member_id(platform, platform_user_id)
                owner: str | None = row["owner"]
                if owner is not None and (email is None or row["email_owner"] == owner):
                    return owner
                async with conn.transaction():
                    member, merged = await self._resolve_locked(
                        conn, platform, platform_user_id, email
                    )
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        if merged:
            self._wake()
        return member

    async def _resolve_locked(
        self, conn: Connection, platform: str, platform_user_id: str, email: str | None
    ) -> tuple[str, bool]:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        owner = await conn.fetchval(
            "SELECT member_id FROM identities WHERE platform = $1 AND platform_user_id = $2",
            platform,
            platform_user_id,
        )
        email_owner = (
            await conn.fetchval("SELECT member_id FROM identity_emails WHERE email = $1", email)
            if email
            else None
        )
        merged = False
        if owner is None:
            member = email_owner
            if member is None:
                derived = derived_member_id(platform, platform_user_id)
                known = await lifecycle.load_members(conn, [derived])
                member = known.resolve(derived)
                if member is None:  # the derived id was erased: record nothing
                    return derived, False
            await conn.execute(
                "INSERT INTO identities (platform, platform_user_id, member_id, linked_by)"
                " VALUES ($1, $2, $3, $4)",
                platform,
                platform_user_id,
                member,
                "email" if email_owner else "first_seen",
            )
        elif email_owner is not None and email_owner != owner:
            # this identity's verified email is another member's: one person
            member = email_owner
            await merge(conn, member, owner, f"same verified email on {platform}")
            merged = True
        else:
            member = owner
        if email and email_owner is None:
            await conn.execute(
                "INSERT INTO identity_emails (email, member_id) VALUES ($1, $2)"
                " ON CONFLICT (email) DO NOTHING",
                email,
                member,
            )
        return member, merged

    async def member_for(self, platform: str, platform_user_id: str) -> str:
        """The member id of a platform user a delivery only mentions (a thread's author): a
        lookup, nothing recorded; the derived id when the identity is unknown."""
        try:
            async with self._ready_pool().acquire() as conn:
                owner = await conn.fetchval(
                    "SELECT member_id FROM identities"
                    " WHERE platform = $1 AND platform_user_id = $2",
                    platform,
                    platform_user_id,
                )
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        return owner if owner is not None else derived_member_id(platform, platform_user_id)

    async def resolve_activities(
        self, platform: str, activities: Sequence[ActivityV1]
    ) -> list[ActivityV1]:
        """A webhook delivery's activities with member ids from the identity tables instead of
        the mappers' derived ids (`<platform>:<user id>`): the actor's through `resolve` (its
        email only ever comes verified from the mappers), the people it mentions (a thread's
        or a post's author) through `member_for`."""
        prefix = f"{platform}:"
        known: dict[str, str] = {}
        resolved: list[ActivityV1] = []
        for a in activities:
            actor = a.actor
            update: dict[str, Any] = {}
            uid = actor.platform_user_id
            if uid and actor.member_id == derived_member_id(platform, uid):
                known[actor.member_id] = await self.resolve(platform, uid, actor.email)
                if known[actor.member_id] != actor.member_id:
                    update["actor"] = actor.model_copy(update={"member_id": known[actor.member_id]})
            target = a.target
            if target is not None:
                names: dict[str, Any] = {}
                for field in ("thread_author_member_id", "parent_author_member_id"):
                    value = getattr(target, field)
                    if isinstance(value, str) and value.startswith(prefix):
                        if value not in known:
                            known[value] = await self.member_for(platform, value[len(prefix) :])
                        if known[value] != value:
                            names[field] = known[value]
                if names:
                    update["target"] = target.model_copy(update=names)
            resolved.append(a.model_copy(update=update) if update else a)
        return resolved

    # ---- the API ------------------------------------------------------------------------

    async def link(
        self, member_id: str, platform: str, platform_user_id: str, email: str | None
    ) -> Linked:
        """Link an identity (and a verified email) to a member; whoever had them is merged
        into it."""
        address = normalize_email(email) if email else None
        try:
            async with self._ready_pool().acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                known = await lifecycle.load_members(conn, [member_id])
                survivor = known.resolve(member_id)
                if survivor is None:
                    raise ProblemError(
                        409,
                        MEMBER_ERASED_PROBLEM,
                        "Member erased",
                        f"member {member_id!r} was erased; nothing can be linked to it",
                    )
                hashes = [identity_hash(platform, platform_user_id)]
                if address:
                    hashes.append(email_hash(address))
                if await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM blocked_identities"
                    " WHERE identity_hash = ANY($1::text[]))",
                    hashes,
                ):
                    raise ProblemError(
                        409,
                        IDENTITY_BLOCKED,
                        "Identity blocked",
                        "this identity or email belonged to an erased member and is blocked",
                    )
                owners = [
                    await conn.fetchval(
                        "SELECT member_id FROM identities"
                        " WHERE platform = $1 AND platform_user_id = $2",
                        platform,
                        platform_user_id,
                    ),
                    await conn.fetchval(
                        "SELECT member_id FROM identity_emails WHERE email = $1", address
                    )
                    if address
                    else None,
                ]
                merged = [o for o in dict.fromkeys(owners) if o is not None and o != survivor]
                for other in merged:
                    await merge(conn, survivor, other, f"{platform} identity linked by an operator")
                await conn.execute(
                    "INSERT INTO identities (platform, platform_user_id, member_id, linked_by)"
                    " VALUES ($1, $2, $3, 'operator') ON CONFLICT (platform, platform_user_id)"
                    " DO UPDATE SET member_id = EXCLUDED.member_id, linked_by = 'operator',"
                    " linked_at = now()",
                    platform,
                    platform_user_id,
                    survivor,
                )
                if address:
                    await conn.execute(
                        "INSERT INTO identity_emails (email, member_id) VALUES ($1, $2)"
                        " ON CONFLICT (email) DO UPDATE SET member_id = EXCLUDED.member_id",
                        address,
                        survivor,
                    )
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        if merged:
            self._wake()
        return Linked(
            member_id=survivor,
            platform=platform,
            platform_user_id=platform_user_id,
            email_linked=address is not None,
            merged=merged,
        )

    async def identities(self, member_id: str) -> MemberIdentities:
        try:
            async with self._ready_pool().acquire() as conn:
                known = await lifecycle.load_members(conn, [member_id])
                member = known.resolve(member_id) or member_id
                rows = await conn.fetch(
                    "SELECT platform, platform_user_id, linked_by, linked_at FROM identities"
                    " WHERE member_id = $1 ORDER BY platform, platform_user_id",
                    member,
                )
                emails = await conn.fetch(
                    "SELECT email FROM identity_emails WHERE member_id = $1 ORDER BY email",
                    member,
                )
                merged = await lifecycle.merged_into(conn, member)
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        return MemberIdentities(
            member_id=member,
            merged_ids=sorted(merged),
            identities=[IdentityView(**dict(r)) for r in rows],
            emails=[r["email"] for r in emails],
        )

    async def erase(self, member_id: str) -> Erased:
        """Erase the person (the member a merged id now is): here at once, everywhere else on
        `member.erased.v1`. Idempotent: erasing again re-publishes the same event (same id)."""
        at = _now()
        try:
            async with self._ready_pool().acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                known = await lifecycle.load_members(conn, [member_id])
                member = known.aliases.get(member_id, member_id)
                ids = {member_id, member} | await lifecycle.merged_into(conn, member)
                blocked = await erase_gateway_state(conn, ids, at)
                await lifecycle.record_erasure(conn, ids, at)
                uow = UnitOfWork(conn)
                uow.emit(
                    encode(
                        MEMBER_ERASED,
                        MemberErasedV1(member_id=member, occurred_at=at),
                        event_id=derive_event_id(MEMBER_ERASED.type, member),
                        source=SOURCE,
                    )
                )
                await uow.flush()
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        self._wake()
        log.info("erased a member (%d id(s), %d identities blocked)", len(ids), blocked)
        return Erased(member_id=member, erased_ids=sorted(ids), identities_blocked=blocked)

    # ---- the guard in front of the publisher --------------------------------------------

    async def blocked(self, records: Sequence[OutgoingRecord]) -> list[bool]:
        """For each record: is it an activity of an erased member or a blocked identity?"""
        wanted: list[tuple[list[str], list[str]]] = []
        for record in records:
            if header_map(record.headers).get("ce_type") != ACTIVITY.type:
                wanted.append(([], []))
                continue
            activity: dict[str, Any] = json.loads(record.value)
            actor = activity.get("actor") or {}
            members = [lifecycle.member_hash(str(actor.get("member_id", "")))]
            identities = []
            if actor.get("platform_user_id"):
                identities.append(
                    identity_hash(str(activity.get("source")), str(actor["platform_user_id"]))
                )
            if actor.get("email"):
                identities.append(email_hash(str(actor["email"])))
            wanted.append((members, identities))
        if not any(m or i for m, i in wanted):
            return [False] * len(records)
        try:
            async with self._ready_pool().acquire() as conn:
                rows = await conn.fetch(
                    "SELECT member_hash AS h FROM lifecycle.erased_members"
                    " WHERE member_hash = ANY($1::text[])"
                    " UNION ALL SELECT identity_hash FROM blocked_identities"
                    " WHERE identity_hash = ANY($2::text[])",
                    sorted({h for m, _ in wanted for h in m}),
                    sorted({h for _, i in wanted for h in i}),
                )
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        found = {r["h"] for r in rows}
        return [bool(found.intersection(m + i)) for m, i in wanted]


async def merge(conn: Connection, survivor: str, merged: str, reason: str) -> None:
    """In the caller's transaction: fold B into A here, remember B as A, and put
    `member.merged.v1` in the outbox for every other service."""
    at = _now()
    await merge_gateway_state(conn, survivor, merged)
    event_id = derive_event_id(MEMBER_MERGED.type, merged, survivor)
    await lifecycle.record_merge(conn, lifecycle.Merge(survivor, merged, at, reason, event_id))
    uow = UnitOfWork(conn)
    uow.emit(
        encode(
            MEMBER_MERGED,
            MemberMergedV1(
                survivor_member_id=survivor, merged_member_id=merged, occurred_at=at, reason=reason
            ),
            event_id=event_id,
            source=SOURCE,
        )
    )
    await uow.flush()
    log.info("merged a member into another (%s)", reason)


class GuardedPublisher:
    """The activity publisher, minus activities of erased members and blocked identities:
    they are acknowledged like any other (the sender must not retry them) and counted
    (`flywheel_gateway_published_total{outcome="blocked"}`), never published."""

    def __init__(self, inner: ActivityPublisher, store: IdentityStore) -> None:
        self.inner = inner
        self.store = store

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        blocked = await self.store.blocked(records)
        kept = [r for r, b in zip(records, blocked, strict=True) if not b]
        if len(kept) < len(records):
            metrics.record_published("blocked", len(records) - len(kept))
            log.info("dropped %d activit(ies) of erased members", len(records) - len(kept))
        if kept:
            await self.inner.publish(kept)


# --------------------------------------------------------------------------------------------
# the routes
# --------------------------------------------------------------------------------------------


class LinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    platform: Platform = Field(description="The activity source the identity lives on.")
    platform_user_id: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="The person's stable id there (never a handle: handles change)."
    )
    email: Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = Field(
        default=None, description="A verified email of the person, linked too."
    )


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "model": Problem,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def router(store: IdentityStore) -> APIRouter:
    routes = APIRouter(tags=["identity"], dependencies=[auth.require("admin")])
    responses = {**auth.RESPONSES, 503: _problem("The gateway's database is unreachable.")}

    @routes.post(
        "/v1/members/{member_id:path}/identities",
        summary="Link an identity to a member (merging whoever had it)",
        description="Links the platform identity, and the email if given (it must be verified: "
        "emails join identities to one person), to the member. If either belonged to another "
        "member B, B is this person too: B is merged into the member and `member.merged.v1` "
        "is published; every service folds B's state into the member's, and activity still "
        "keyed by B lands on the member. Linking to a merged id links to its survivor.",
        response_model=Linked,
        responses={
            **responses,
            409: _problem("The member was erased, or the identity belonged to an erased one."),
        },
    )
    async def link(member_id: Identifier, request: Annotated[LinkRequest, Body()]) -> Linked:
        return await store.link(
            member_id, request.platform, request.platform_user_id, request.email
        )

    @routes.get(
        "/v1/members/{member_id:path}/identities",
        summary="A member's identities, verified emails and merged ids",
        response_model=MemberIdentities,
        responses=responses,
    )
    async def identities(member_id: Identifier) -> MemberIdentities:
        return await store.identities(member_id)

    @routes.delete(
        "/v1/members/{member_id:path}",
        summary="Erase a member everywhere",
        description="Erases the person: this member and every id merged into it. The gateway "
        "deletes their journey, flywheel facts and identities at once and blocks those "
        "identities; `member.erased.v1` (member id and time, no personal data) goes out on "
        "`member-lifecycle`, on which every stage service deletes what it holds, and webhook "
        "subscribers to that type are told. Activity arriving later for the member, or for a "
        "blocked identity, is acknowledged and not published. What is not removed (the "
        "`member-activity` log until its retention) is listed in docs/ARCHITECTURE.md, "
        "Erasure. Idempotent.",
        status_code=202,
        response_model=Erased,
        responses=responses,
    )
    async def erase(member_id: Identifier) -> JSONResponse:
        erased = await store.erase(member_id)
        return JSONResponse(erased.model_dump(mode="json"), status_code=202)

    return routes
