"""Identity's pure rules: how emails compare, how a blocked identity or email (an erased
person's) is remembered without the identity itself, and what of an activity is personal data
that stays in the gateway instead of reaching the log."""

from __future__ import annotations

import dataclasses
import hashlib
import json
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


def hashes_to_check(record: OutgoingRecord) -> tuple[list[str], list[str]]:
    """(member hashes, identity and email hashes) that block this record if erased or blocked:
    none for anything but an activity."""
    if header_map(record.headers).get("ce_type") != ACTIVITY.type:
        return [], []
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
    return members, identities


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


def personal_data(record: OutgoingRecord) -> tuple[OutgoingRecord, Handle | None]:
    """The record as it is published (an activity's actor without `PERSONAL_ACTOR_FIELDS`;
    anything else as it is), and the handle it carried."""
    if header_map(record.headers).get("ce_type") != ACTIVITY.type:
        return record, None
    activity: dict[str, Any] = orjson.loads(record.value)
    actor = activity.get("actor") or {}
    if not any(field in actor for field in PERSONAL_ACTOR_FIELDS):
        return record, None
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
    return dataclasses.replace(record, value=orjson.dumps(activity)), seen


def now() -> datetime:
    """The time a merge or an erasure happens, to the second."""
    return datetime.now(UTC).replace(microsecond=0)
