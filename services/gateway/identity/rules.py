"""Identity's pure rules: how emails compare, and how a blocked identity or email (an erased
person's) is remembered without the identity itself."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

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


def now() -> datetime:
    """The time a merge or an erasure happens, to the second."""
    return datetime.now(UTC).replace(microsecond=0)
