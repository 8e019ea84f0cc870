"""Reading events through merges and erasures: pure functions over member ids, no I/O.

A merged id is read as its survivor; an event about an erased member is dropped and a mention
of one in someone else's event is removed. Which activity properties name a member is declared
with the contract (`shared.contracts.MEMBER_ID_PROPERTIES`), not here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from shared.cloudevents import Envelope
from shared.contracts import (
    MEMBER_ID_PROPERTIES,
    ActivityV1,
    Contract,
    MemberAcquiredV1,
    MemberErasedV1,
    MemberMergedV1,
    PeerHelpV1,
    QuestionAnsweredV1,
    StageChangedV1,
)

ERASED = "(erased member)"
"""What replaces an erased member's id where someone else's record mentions it."""

_HASH_PREFIX = b"flywheel:erased-member\x1f"


def member_hash(member_id: str) -> str:
    """What an erased member is remembered by. A pseudonym, not a secret: the id itself stays
    in `member-lifecycle` (the erasure event), so the hash only keeps it out of the tables."""
    return hashlib.sha256(_HASH_PREFIX + member_id.encode()).hexdigest()


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
        ids |= {
            v for k in MEMBER_ID_PROPERTIES if isinstance(v := data.properties.get(k), str) and v
        }
        return ids
    if isinstance(data, PeerHelpV1):
        return {data.helper_member_id, data.helped_member_id}
    if isinstance(data, MemberAcquiredV1):
        return {data.member_id, data.referrer_member_id}
    if isinstance(data, MemberMergedV1):
        return {data.survivor_member_id, data.merged_member_id}
    if isinstance(data, StageChangedV1):  # its reason (and a referral first touch) may name one
        referrer = _referral_detail(data)
        return {data.member_id} | mentioned(data.reason) | ({referrer} if referrer else set())
    if isinstance(data, QuestionAnsweredV1):
        return {data.member_id, data.answered_by_member_id}
    member_id = getattr(data, "member_id", None)
    return {member_id} if isinstance(member_id, str) else set()


def _referral_detail(data: StageChangedV1) -> str | None:
    """The referrer a transition's first touch names (awareness: channel `referral`)."""
    details = data.details
    if details is not None and details.first_touch_channel == "referral":
        return details.first_touch_detail
    return None


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
    if isinstance(data, StageChangedV1) and (referrer := _referral_detail(data)):
        named = members.resolve(referrer)
        if named != referrer and data.details is not None:
            update["details"] = data.details.model_copy(update={"first_touch_detail": named})
    if isinstance(data, QuestionAnsweredV1):
        answerer = members.resolve(data.answered_by_member_id)
        if answerer != data.answered_by_member_id:
            update["answered_by_member_id"] = answerer if answerer is not None else ERASED
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
    for name in MEMBER_ID_PROPERTIES:
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
