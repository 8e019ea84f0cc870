"""Identity's pure rules: how emails compare, how a blocked identity or email (an erased
person's) is remembered without the identity itself, and what of an activity is personal data
that stays in the gateway instead of reaching the log."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from shared import lifecycle
from shared.cloudevents import OutgoingRecord, header_map
from shared.contracts import ACTIVITY


def normalize_email(email: str) -> str:
    return email.strip().lower()


def identity_hash(platform: str, platform_user_id: str) -> str:
    """A blocked identity, remembered without the identity itself."""
    return hashlib.sha256(
        f"flywheel:identity\x1f{platform}\x1f{platform_user_id}".encode()
    ).hexdigest()


def email_hash(email: str) -> str:
    return hashlib.sha256(f"flywheel:email\x1f{normalize_email(email)}".encode()).hexdigest()


PERSONAL_ACTOR_FIELDS: tuple[str, ...] = ("handle", "email", "platform_user_id")
"""What an activity's actor says that names the person: used at the gateway (identity
resolution, the erasure guard, the directory's handle), never published. Retained topics keep
no one's handle, email or platform user id, so an erasure does not have to rewrite them."""


@dataclass(frozen=True)
class Handle:
    """The handle a member was seen with, and when (the activity's event time)."""

    member_id: str
    handle: str
    seen_at: datetime


@dataclass(frozen=True)
class Screened:
    """An outgoing record as identity's guard reads it, once: the hashes that block it if
    their member was erased or their identity or email blocked (none for anything but an
    activity), the record as it is published (an activity's actor without
    `PERSONAL_ACTOR_FIELDS`; anything else as it is), and the handle it carried."""

    record: OutgoingRecord
    member_hashes: tuple[str, ...] = ()
    identity_hashes: tuple[str, ...] = ()
    published: OutgoingRecord | None = None
    handle: Handle | None = None

    @property
    def public(self) -> OutgoingRecord:
        return self.published if self.published is not None else self.record


def screen(record: OutgoingRecord) -> Screened:
    """`Screened` for one record: an activity's JSON parsed once for both questions."""
    if header_map(record.headers).get("ce_type") != ACTIVITY.type:
        return Screened(record)
    activity: dict[str, Any] = orjson.loads(record.value)
    actor = activity.get("actor") or {}
    members = (lifecycle.member_hash(str(actor.get("member_id", ""))),)
    identities: list[str] = []
    if actor.get("platform_user_id"):
        identities.append(
            identity_hash(str(activity.get("source")), str(actor["platform_user_id"]))
        )
    if actor.get("email"):
        identities.append(email_hash(str(actor["email"])))
    if not any(field in actor for field in PERSONAL_ACTOR_FIELDS):
        return Screened(record, members, tuple(identities))
    handle = actor.get("handle")
    for field in PERSONAL_ACTOR_FIELDS:
        actor.pop(field, None)
    seen = (
        Handle(
            str(actor.get("member_id")),
            str(handle),
            datetime.fromisoformat(str(activity["occurred_at"]).replace("Z", "+00:00")),
        )
        if isinstance(handle, str) and handle and not actor.get("anonymous")
        else None
    )
    published = dataclasses.replace(record, value=orjson.dumps(activity))
    return Screened(record, members, tuple(identities), published, seen)


def now() -> datetime:
    """The time a merge or an erasure happens, to the second."""
    return datetime.now(UTC).replace(microsecond=0)
