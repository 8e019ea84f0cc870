"""Response bodies of the directory, profile, leaderboard and series routes (they also document
them in /openapi.json)."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field


class MemberRow(BaseModel):
    member_id: str
    handle: str | None = Field(
        description="The latest `actor.handle` the gateway took in (kept by identity, never "
        "published)."
    )
    stages: dict[str, str | None] = Field(
        description="Current stage per dimension (awareness, engagement, advocacy)."
    )
    cohort: str | None = Field(
        description="newcomer, core, at_risk or regular (engagement's rule, judged at the read "
        "model's newest event time); null for none."
    )
    score: float = Field(description="The latest engagement score a transition carried.")
    customer: bool
    advocate: bool = Field(description="An advocate or a champion.")
    sources: list[str] = Field(description="Platforms the member was seen on.")
    joined_at: datetime = Field(description="First seen: the oldest activity's event time.")
    last_active_at: datetime
    activities: int


class MemberPage(BaseModel):
    members: list[MemberRow]
    next_cursor: str | None = Field(
        description="Pass as `cursor` (with the same sort) for the next page; null at the end."
    )
    sort: str


class Peer(BaseModel):
    member_id: str
    threads: int
    accepted: int


class ProfileActivity(BaseModel):
    activity_id: str
    occurred_at: datetime
    source: str
    kind: str
    title: str | None
    url: str | None


class ProfileTransition(BaseModel):
    dimension: str
    from_stage: str | None
    to_stage: str
    reason: str
    score: float | None
    occurred_at: datetime


class ProfileIdentity(BaseModel):
    platform: str
    platform_user_id: str
    linked_by: str


class MemberProfile(BaseModel):
    member: MemberRow
    timeline: list[ProfileTransition] = Field(description="Every transition, by event time.")
    contributions: dict[str, int] = Field(description="Activities counted per kind.")
    advocacy_evidence: dict[str, int] = Field(
        description="The latest advocate or champion signal's evidence counts."
    )
    advocacy_links: list[str]
    peer_help_given: list[Peer] = Field(description="Whom the member helped, most first.")
    peer_help_received: list[Peer] = Field(description="Who helped the member, most first.")
    identities: list[ProfileIdentity]
    merged_ids: list[str]
    recent_activity: list[ProfileActivity] = Field(
        description="The newest activities (FLYWHEEL_DIRECTORY_RECENT_ACTIVITIES are kept)."
    )


class AdvocateEntry(BaseModel):
    member_id: str
    handle: str | None
    stage: str | None = Field(description="Current advocacy stage.")
    score: float = Field(description="The highest advocacy score signalled in the window.")
    signals: int = Field(description="Advocate and champion signals in the window.")
    evidence: dict[str, int] = Field(description="The latest signal's counts per contribution.")
    links: list[str]
    last_signal_at: datetime


class ChampionEntry(BaseModel):
    member_id: str
    handle: str | None
    since: datetime
    reason: str = Field(description="The reason of the transition that made them champion.")
    rank: int | None
    score: float | None
    evidence: dict[str, int]
    links: list[str]


class Leaderboards(BaseModel):
    window_from: datetime | None
    window_to: datetime | None
    advocates: list[AdvocateEntry]
    champions: list[ChampionEntry]


class CohortRetention(BaseModel):
    cohort: str = Field(description="Sign-up month (first seen), YYYY-MM.")
    members: int = Field(description="Members first seen that month (visitors not counted).")
    retained: dict[str, float | None] = Field(
        description="Weeks after joining (1, 2, 4, 8, 12) -> share of the cohort active at or "
        "after that many weeks (last activity >= joined + weeks); null while the cohort is "
        "younger than that, judged at the read model's newest event time."
    )
    retained_members: dict[str, int | None]


class WeekCount(BaseModel):
    week: date
    dimension: str
    stage: str
    transitions: int


class WeekShare(BaseModel):
    week: date
    questions: int
    answered_by_peers: int
    share: float | None


class Health(BaseModel):
    now: datetime | None = Field(description="The read model's newest event time.")
    members: int = Field(description="Members (not visitors) in the directory.")
    active_30d: int = Field(description="Of those, active in the 30 days before `now`.")
    active_share: float | None
    customers: int
    customer_share: float | None
    advocates: int = Field(description="Advocates and champions.")
    advocate_share: float | None
    visitors: int


class Operations(BaseModel):
    consumer_lag: int | None = Field(
        description="Records the read model's consumer group is behind; null when the broker "
        "did not answer in time."
    )
    dead_letters: int | None = Field(
        description="Records on the dead-letter topics of what the gateway reads (within their "
        "retention); null when the broker did not answer in time."
    )
    outbox_backlog: int
    watermark: datetime | None = Field(
        description="The newest activity's event time in the read model (how far it has read)."
    )
    broker_error: str | None


class Series(BaseModel):
    window_from: datetime | None
    window_to: datetime | None
    stage_weeks: list[WeekCount]
    peer_answer_weeks: list[WeekShare]
    cohort_retention: list[CohortRetention]
    health: Health
