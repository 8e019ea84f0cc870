"""The benchmark's activity: a realistic mix of kinds, a Zipf spread over members, fast to make.

A backlog of a million activities must be made in seconds, so records are built as JSON with
orjson in exactly the layout the gateway writes (`ActivityV1.model_dump_json()`: every field, in
model order, nulls included) instead of through pydantic; `check_sample` validates a sample
against the real model so the layout cannot drift unnoticed.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from shared.cloudevents import SPEC_VERSION, decode, derive_event_id
from shared.contracts import ACTIVITY

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SOURCE = b"/gateway"  # the gateway's CloudEvents source

# What members do once they are in, by share of activities (a forum-heavy community: reading
# and reacting dominate, answering is rarer than asking, talks and articles are rare).
KIND_MIX: tuple[tuple[str, str, float], ...] = (
    ("reaction", "discourse", 0.26),
    ("page_view", "web", 0.16),
    ("post", "discourse", 0.12),
    ("reply", "discourse", 0.14),
    ("star", "github", 0.05),
    ("event_attended", "events", 0.05),
    ("answer_accepted", "discourse", 0.04),
    ("code_contribution", "github", 0.04),
    ("fork", "github", 0.02),
    ("referral_invite", "web", 0.02),
    ("purchase", "crm", 0.02),
    ("trial_started", "product", 0.02),
    ("content_published", "blog", 0.02),
    ("event_talk", "events", 0.01),
    ("signup", "web", 0.0),  # only as a member's first activity
)
NEW_MEMBER_PAGE_VIEWS = 0.5
"""Share of new members who were seen as anonymous visitors (a page view) before signing up."""
REFERRED_SHARE = 0.05
"""Share of sign-ups that came through an existing member's referral."""
STAFF_SHARE = 0.01


def _ts(at: datetime) -> str:
    """pydantic's JSON form of an aware UTC datetime with whole seconds (strftime is slow)."""
    return at.replace(tzinfo=None).isoformat() + "Z"


_NULL_ACTOR = {
    "platform_user_id": None,
    "handle": None,
    "email": None,
    "anonymous": False,
    "is_team_member": False,
    "is_bot": False,
}
_TARGET_FIELDS = (
    "thread_id",
    "thread_title",
    "thread_author_member_id",
    "parent_id",
    "parent_author_member_id",
    "parent_kind",
    "url",
)


def activity_json(
    activity_id: str,
    at: datetime,
    source: str,
    kind: str,
    member_id: str,
    *,
    anonymous: bool = False,
    staff: bool = False,
    email: str | None = None,
    target: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
) -> bytes:
    """The record value the gateway would publish for this activity."""
    actor = {"member_id": member_id, **_NULL_ACTOR}
    if anonymous:
        actor["anonymous"] = True
    if staff:
        actor["is_team_member"] = True
    if email:
        actor["email"] = email
    body: dict[str, Any] = {
        "activity_id": activity_id,
        "occurred_at": _ts(at),
        "source": source,
        "kind": kind,
        "actor": actor,
        "target": {f: (target or {}).get(f) for f in _TARGET_FIELDS} if target else None,
        "properties": properties or {},
    }
    return orjson.dumps(body)


@dataclass(frozen=True)
class Record:
    """A `community.activity.v1` record as the gateway writes it (binary-mode CloudEvent)."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    activity_id: str


def record(
    activity_id: str, source: str, kind: str, member_id: str, at: datetime, value: bytes
) -> Record:
    event_id = derive_event_id("activity", source, activity_id)
    headers = [
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_id", event_id.encode()),
        ("ce_source", SOURCE),
        ("ce_type", ACTIVITY.type.encode()),
        ("ce_time", at.isoformat().encode()),
        ("ce_subject", member_id.encode()),
        ("content-type", b"application/json"),
    ]
    return Record(member_id.encode(), value, headers, activity_id)


class Zipf:
    """Member ranks 1..n drawn with P(r) proportional to 1/r^s: a few members do most."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        self.rng = rng
        self.cum = list(itertools.accumulate(1.0 / (r**s) for r in range(1, n + 1)))
        self.total = self.cum[-1]

    def draw(self) -> int:
        return bisect.bisect_left(self.cum, self.rng.random() * self.total)


def community(
    activities: int,
    members: int,
    *,
    seed: int = 11,
    zipf_s: float = 1.1,
    days: float = 365.0,
    all_members_first: bool = False,
    prefix: str = "b",
) -> Iterator[Record]:
    """`activities` records in event-time order over `days`, among up to `members` members.

    A member's first activity is a sign-up (half of them after an anonymous page view, some
    through a referral); later ones follow KIND_MIX; replies and accepted answers go to other
    members' threads, reactions to their posts; staff take part and never count. With
    `all_members_first`, every member signs up before anyone does anything else (the memory
    test: `members` rows, then activity on them).
    """
    rng = random.Random(seed)
    zipf = Zipf(members, zipf_s, rng)
    kinds = [(k, s) for k, s, w in KIND_MIX if w > 0]
    weights = list(itertools.accumulate(w for _, _, w in KIND_MIX if w > 0))
    joined: list[str] = []
    is_member: set[int] = set()
    threads: list[tuple[str, str]] = []  # (thread id, author) of recent posts
    # whole seconds, so the JSON form has no fraction (and stays pydantic's form)
    step = timedelta(seconds=max(1, int(days * 86400 / max(1, activities))))
    n = 0
    at = START

    def emit(
        kind: str, source: str, member_id: str, **kw: Any
    ) -> Record:  # one activity, next tick
        nonlocal n, at
        n += 1
        at += step
        activity_id = f"{prefix}-{n:08d}"
        value = activity_json(activity_id, at, source, kind, member_id, **kw)
        return record(activity_id, source, kind, member_id, at, value)

    def sign_up(rank: int) -> Iterator[Record]:
        member_id = f"m-{rank:07d}"
        props: dict[str, Any] = {}
        if rng.random() < NEW_MEMBER_PAGE_VIEWS:
            anon = f"anon-{rank:07d}"
            yield emit("page_view", "web", anon, anonymous=True, properties={"utm_source": "news"})
            props["anonymous_id"] = anon
        if joined and rng.random() < REFERRED_SHARE:
            props["referred_by"] = rng.choice(joined)
        yield emit("signup", "web", member_id, email=f"{member_id}@example.org", properties=props)
        joined.append(member_id)
        is_member.add(rank)

    first = range(members) if all_members_first else range(0)
    for rank in first:
        yield from itertools.islice(sign_up(rank), max(0, activities - n))
        if n >= activities:
            return
    while n < activities:
        rank = zipf.draw()
        if rank not in is_member:
            yield from itertools.islice(sign_up(rank), activities - n)
            continue
        member_id = f"m-{rank:07d}"
        if rng.random() < STAFF_SHARE:
            yield emit("reply", "discourse", "staff-1", staff=True, target={"thread_id": "t-1"})
            continue
        kind, source = kinds[bisect.bisect_left(weights, rng.random() * weights[-1])]
        target: dict[str, Any] | None = None
        props = {}
        if kind in ("reply", "answer_accepted") and threads:
            thread, author = threads[rng.randrange(len(threads))]
            if author != member_id:
                target = {
                    "thread_id": thread,
                    "thread_author_member_id": author,
                    "url": f"https://forum.example.org/t/{thread}",
                }
        elif kind == "reaction" and threads:
            thread, author = threads[rng.randrange(len(threads))]
            target = {
                "thread_id": thread,
                "parent_id": thread,
                "parent_author_member_id": author,
                "parent_kind": "post",
            }
        elif kind in ("post", "content_published", "event_talk"):
            thread = f"t-{n + 1}"
            target = {"thread_id": thread, "thread_title": "How do I replay a topic?"}
            if kind == "post":
                props = {"question": True, "tags": ["kafka"]}
            threads.append((thread, member_id))
            if len(threads) > 200:
                del threads[:100]
        elif kind == "purchase":
            props = {"plan": "team"}
        yield emit(kind, source, member_id, target=target, properties=props)


def check_sample(records: list[Record], every: int = 97) -> int:
    """Decode every `every`-th record with the services' own decoder; return how many."""
    checked = 0
    for i in range(0, len(records), every):
        r = records[i]
        decode(
            topic=ACTIVITY.topic.name,
            partition=0,
            offset=i,
            key=r.key,
            value=r.value,
            headers=r.headers,
        )
        checked += 1
    return checked


def e2e_activity(
    n: int, member_id: str, kind: str, at: datetime, *, email: bool = False
) -> dict[str, Any]:
    """An activity for the HTTP API (the end-to-end latency phase)."""
    source = {"signup": "web", "event_talk": "events"}.get(kind, "discourse")
    activity: dict[str, Any] = {
        "activity_id": f"e2e-{n:08d}",
        "occurred_at": at.isoformat(),
        "source": source,
        "kind": kind,
        "actor": {"member_id": member_id},
    }
    if email:
        activity["actor"]["email"] = f"{member_id}@example.org"
    return activity
