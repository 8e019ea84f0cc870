"""Versioned event contracts: the only thing services share.

Each event type is a pydantic model registered with its CloudEvents `type` and the topic it
travels on. Within a version only additive changes are allowed (a new optional field, which
consumers not yet upgraded ignore); a breaking change is a new type (`...v2`) published beside
the old one, never an edit of an existing model.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, field_validator

from shared import topics
from shared.topics import Topic

Identifier = Annotated[
    str,
    Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+=\-]*$"),
]
Url = Annotated[str, Field(max_length=2000, pattern=r"^https?://\S+$")]


class Contract(BaseModel):
    """Strict about what comes in: unknown fields are rejected, not silently dropped (the
    public API answers 422 naming them). Consumers read events tolerantly instead, ignoring
    fields a newer producer added within the same version: `shared.cloudevents.decode`."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# --------------------------------------------------------------------------------------------
# community.activity.v1
# --------------------------------------------------------------------------------------------

KNOWN_KINDS: frozenset[str] = frozenset(
    {
        "page_view",  # discovery: a visitor (anonymous id) reads something
        "signup",  # joins the community
        "post",  # starts a thread (a question when properties.question is true)
        "reply",  # answers in someone's thread
        "reaction",  # likes, stars, emoji
        "answer_accepted",  # the thread owner accepts someone's reply as the answer
        "event_attended",
        "event_talk",  # speaks at an event
        "content_published",  # blog post, tutorial, video
        "referral_invite",  # invites someone with a referral code
        "purchase",  # from the product or CRM: becomes a customer
        "trial_started",
        "code_contribution",  # pull request, commit
        "star",
        "fork",
        "renewal",  # from the CRM: a subscription renewed (retention)
        "downgrade",  # from the CRM: a smaller plan (retention: lapsed)
        "cancellation",  # from the CRM: the customer left (retention: churned)
        "feedback",  # meant for the product team (signals.product)
        "feature_request",
        "bug_report",
    }
)
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

Platform = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_\-]*$")]


class Actor(Contract):
    member_id: Identifier = Field(description="Member id, or the anonymous id of a visitor.")
    platform_user_id: str | None = Field(
        default=None,
        max_length=200,
        description="The person's id on the source platform. Like `handle` and `email`: read "
        "by the gateway (identities, erasure, the directory), removed before publishing.",
    )
    handle: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    anonymous: bool = Field(default=False, description="A visitor not yet signed up.")
    is_team_member: bool = Field(default=False, description="Staff never count toward scores.")
    is_bot: bool = Field(default=False, description="Bots never count toward scores.")


class Target(Contract):
    thread_id: str | None = Field(default=None, max_length=200)
    thread_title: str | None = Field(default=None, max_length=500)
    thread_author_member_id: str | None = Field(
        default=None, max_length=200, description="Who started the thread (the asker)."
    )
    parent_id: str | None = Field(default=None, max_length=200)
    parent_author_member_id: str | None = Field(default=None, max_length=200)
    parent_kind: str | None = Field(
        default=None,
        max_length=64,
        description="The kind of the item this one responds to (post, reply, "
        "content_published, ...): advocacy credits engagement with content, not with questions.",
    )
    url: Url | None = None
    thread_is_question: bool | None = Field(
        default=None,
        description="The thread this item belongs to asks a question (set by the webhook "
        "mappers from the thread's labels, tags or category; by any client that knows): only a "
        "reply in a question counts as peer help.",
    )
    thread_author_is_team_member: bool | None = Field(
        default=None,
        description="The platform marks the thread's author as staff (GitHub author_association "
        "OWNER/MEMBER, Discourse staff/admin/moderator): helping the team is not peer help.",
    )


class ActivityV1(Contract):
    activity_id: Identifier = Field(description="Unique per source; the dedup key.")
    occurred_at: AwareDatetime = Field(description="Event time: when it happened, not when sent.")
    source: Platform = Field(description="github, discourse, slack, web, product, crm, events, ...")
    kind: str = Field(
        min_length=1,
        max_length=64,
        json_schema_extra={"pattern": KIND_PATTERN.pattern},
        description="One of KNOWN_KINDS, or a deployment's own kind (lower_snake_case).",
    )
    actor: Actor
    target: Target | None = None
    properties: dict[str, JsonValue] = Field(default_factory=dict, max_length=100)

    @field_validator("kind")
    @classmethod
    def _kind_is_snake_case(cls, value: str) -> str:
        if not KIND_PATTERN.match(value):
            raise ValueError("must be lower_snake_case, starting with a letter")
        return value


MEMBER_ID_PROPERTIES: tuple[str, ...] = ("referred_by", "anonymous_id", "invited_by")
"""The `ActivityV1.properties` that name a member: `referred_by` (who referred the actor),
`anonymous_id` (the visitor id a signup joins to its member) and `invited_by` (who added the
actor to a channel: Slack's inviter). Declared with the contract, not in
the code that reads them, because merges and erasures rewrite them (`shared.lifecycle.rewrite`:
a merged id is read as its survivor, an erased one is removed): a new property that carries a
member id must be added here, or an erased member would survive in it."""


# --------------------------------------------------------------------------------------------
# journey.stage_changed.v1
# --------------------------------------------------------------------------------------------

Dimension = Literal["awareness", "engagement", "advocacy"]


TouchChannel = Literal["referral", "campaign", "search", "social", "community", "direct"]
"""How a person first came (awareness's first touch)."""


class TransitionDetails(Contract):
    """Awareness states these on its transitions; every field is optional."""

    first_touch_channel: TouchChannel | None = Field(
        default=None, description="How the person first came (awareness's first touch)."
    )
    first_touch_detail: str | None = Field(
        default=None, max_length=500, description="The referrer, campaign, host or thread URL."
    )
    community_touchpoints: int | None = Field(
        default=None, ge=0, description="Community activities before this move (conversions)."
    )
    community_influenced: bool | None = Field(
        default=None, description="At least one community touchpoint came before the move."
    )
    considered: bool | None = Field(
        default=None, description="A conversion from `considering` (read or asked first)."
    )


class StageChangedV1(Contract):
    member_id: Identifier
    dimension: Dimension = Field(description="The owning service: one stage per dimension.")
    from_stage: str | None = Field(description="None for the member's first stage here.")
    to_stage: str
    reason: str = Field(max_length=500, description="Human-readable: which rule fired and why.")
    score: float | None = None
    occurred_at: AwareDatetime = Field(description="Event time of the activity that caused it.")
    caused_by: list[str] = Field(default_factory=list, description="Ids of the activities.")
    details: TransitionDetails | None = Field(
        default=None,
        description="Structured facts behind the move, where the dimension has them (additive "
        "within v1: consumers that do not know it ignore it).",
    )


# --------------------------------------------------------------------------------------------
# member lifecycle and signals
# --------------------------------------------------------------------------------------------


class MemberAcquiredV1(Contract):
    member_id: Identifier
    via: Literal["referral"]
    referrer_member_id: Identifier
    occurred_at: AwareDatetime
    activity_id: str


class FirstTouchV1(Contract):
    """How a member first came, settled: awareness states it once its clock has passed the
    member's joining, when every earlier activity (a visitor's anonymous history on another
    partition too) has been read. So it is the same at any pace; a transition's `details`
    carry what awareness knew when it decided the transition."""

    member_id: Identifier
    channel: TouchChannel | None = Field(description="None: no activity told how they came.")
    detail: str | None = Field(
        default=None, max_length=500, description="The referrer, campaign, host or thread URL."
    )
    first_seen_at: AwareDatetime = Field(description="Their first activity, anonymous or not.")
    joined_at: AwareDatetime
    occurred_at: AwareDatetime = Field(description="When they joined (joined_at).")


class MemberMergedV1(Contract):
    """Two member ids are one person: every service folds `merged_member_id`'s state into
    `survivor_member_id`'s, and from then on reads the merged id as the survivor."""

    survivor_member_id: Identifier
    merged_member_id: Identifier
    occurred_at: AwareDatetime = Field(description="When the identities were linked.")
    reason: str = Field(max_length=500, description="What linked them (human-readable).")


class MemberErasedV1(Contract):
    """Erase a person everywhere (right to erasure). Carries no personal data: every service
    deletes what it holds about the member and the ids merged into it, and keeps only a hash
    so the person is not re-created by late or replayed events."""

    member_id: Identifier
    occurred_at: AwareDatetime


class PeerHelpV1(Contract):
    helper_member_id: Identifier
    helped_member_id: Identifier
    thread_id: str | None
    url: str | None
    accepted: bool
    occurred_at: AwareDatetime
    activity_id: str


class ProspectIntentV1(Contract):
    member_id: Identifier
    thread_id: str | None
    url: str | None
    matched: list[str] = Field(description="The tags or phrases that showed intent.")
    excerpt: str | None = Field(default=None, max_length=500)
    occurred_at: AwareDatetime
    activity_id: str


class ChurnRiskV1(Contract):
    member_id: Identifier
    stage: str
    last_active_at: AwareDatetime
    score: float
    occurred_at: AwareDatetime


class AdvocateV1(Contract):
    member_id: Identifier
    score: float
    evidence: dict[str, int] = Field(description="Counts per kind of contribution.")
    links: list[str] = Field(default_factory=list)
    occurred_at: AwareDatetime


class ChampionNominatedV1(Contract):
    member_id: Identifier
    rank: int
    score: float
    window_start: AwareDatetime
    window_end: AwareDatetime
    evidence: dict[str, int]
    links: list[str] = Field(default_factory=list)
    occurred_at: AwareDatetime


class NewcomerDropOffV1(Contract):
    """A new member or new customer went quiet within their first weeks: the honeymoon
    drop-off, worth a personal reach-out."""

    member_id: Identifier
    newcomer_as: Literal["member", "customer"] = Field(
        description="What made them new: joining the community, or buying."
    )
    started_at: AwareDatetime = Field(description="When they joined or bought.")
    last_active_at: AwareDatetime = Field(
        description="Their last counted activity: they stopped here."
    )
    activities: dict[str, int] = Field(description="What they did since started_at, per kind.")
    quiet_days: float = Field(description="The quiet time that fired the signal.")
    occurred_at: AwareDatetime = Field(description="last_active_at + quiet_days (event time).")


class QuestionUnansweredV1(Contract):
    """A question nobody else replied to within the rules' hours."""

    member_id: Identifier = Field(description="The asker.")
    thread_id: str = Field(max_length=200)
    question_activity_id: str
    url: str | None = None
    title: str | None = Field(default=None, max_length=500)
    asked_at: AwareDatetime
    unanswered_hours: float
    occurred_at: AwareDatetime = Field(description="asked_at + unanswered_hours (event time).")


class QuestionAnsweredV1(Contract):
    """The first reply by another member to a question: links the two."""

    member_id: Identifier = Field(description="The asker.")
    thread_id: str = Field(max_length=200)
    question_activity_id: str
    answer_activity_id: str
    answered_by_member_id: Identifier
    asked_at: AwareDatetime
    first_response_s: float = Field(ge=0, description="Time to first response, in seconds.")
    was_unanswered: bool = Field(description="signal.question_unanswered.v1 came first.")
    url: str | None = None
    occurred_at: AwareDatetime = Field(description="When the answer was given.")


class ProductFeedbackV1(Contract):
    """Something a member said that is meant for the product team."""

    member_id: Identifier
    feedback_kind: Literal["feedback", "feature_request", "bug_report"]
    matched: str = Field(description="The activity kind or the rules-file mapping that matched.")
    source: str
    activity_id: str
    thread_id: str | None = None
    title: str | None = Field(default=None, max_length=500)
    excerpt: str | None = Field(default=None, max_length=500)
    url: str | None = None
    stages: dict[str, str] = Field(
        description="The member's current stages the emitter knows, by dimension: engagement "
        "(its own), advocacy when the gateway stamped it on the activity at intake."
    )
    from_champion: bool = Field(
        description="The sender stamped the activity with `properties.advocacy_stage` "
        "champion. Engagement does not know advocacy's stages: the flag decided in event time, "
        "the same at any pace, is advocacy's signal.champion_feedback.v1."
    )
    occurred_at: AwareDatetime


class ChampionFeedbackV1(Contract):
    """Product feedback from a member who was a champion when they gave it: advocacy flags
    engagement's signal.product_feedback.v1 once its clock has passed the feedback's time, so
    every champion review up to then is done, and the flag is the same at any pace."""

    member_id: Identifier
    feedback_event_id: str = Field(description="Id of the signal.product_feedback.v1 flagged.")
    feedback_kind: Literal["feedback", "feature_request", "bug_report"]
    source: str
    activity_id: str
    title: str | None = Field(default=None, max_length=500)
    url: str | None = None
    occurred_at: AwareDatetime = Field(description="When the feedback was given.")


class ClockTickV1(Contract):
    """Keeps event time moving when the community is quiet: stage services advance their
    watermark on it (and only on event times, never on their own wall clock)."""

    clock: str = Field(default="gateway", max_length=100)
    occurred_at: AwareDatetime


class WatermarkV1(Contract):
    """A service's event-time clock, written to every partition of the topics it feeds
    downstream (after everything it derived up to that time): the downstream service's clock
    for that topic is this, not the newest event it happened to see (docs/GUARANTEES.md)."""

    service: str = Field(max_length=100)
    watermark: AwareDatetime
    """Every event the service derives from input up to this event time is before this one in
    the partition, except from input that reached it late."""
    occurred_at: AwareDatetime


# --------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventType:
    type: str  # the CloudEvents `type`, versioned
    model: builtins.type[Contract]
    topic: Topic
    key_path: str  # dotted path of the data field whose value is the record key
    also_on: tuple[Topic, ...] = ()
    """Further topics the type may travel on (the in-band watermark rides with the events it
    vouches for); a consumer dead-letters it on any other."""

    @property
    def topics(self) -> tuple[Topic, ...]:
        """Every topic this type is registered for: a record of this type read from any other
        topic is dead-lettered (`shared.cloudevents.decode`)."""
        return (self.topic, *self.also_on)

    def key_of(self, data: Contract) -> str:
        value: Any = data
        for part in self.key_path.split("."):
            value = getattr(value, part)
        return str(value)


ACTIVITY = EventType("community.activity.v1", ActivityV1, topics.MEMBER_ACTIVITY, "actor.member_id")
STAGE_CHANGED = EventType(
    "journey.stage_changed.v1", StageChangedV1, topics.JOURNEY_TRANSITIONS, "member_id"
)
MEMBER_ACQUIRED = EventType(
    "member.acquired.v1", MemberAcquiredV1, topics.MEMBER_LIFECYCLE, "member_id"
)
FIRST_TOUCH = EventType("member.first_touch.v1", FirstTouchV1, topics.MEMBER_LIFECYCLE, "member_id")
MEMBER_MERGED = EventType(
    "member.merged.v1", MemberMergedV1, topics.MEMBER_LIFECYCLE, "survivor_member_id"
)
MEMBER_ERASED = EventType("member.erased.v1", MemberErasedV1, topics.MEMBER_LIFECYCLE, "member_id")
PEER_HELP = EventType("signal.peer_help.v1", PeerHelpV1, topics.SIGNALS_SUPPORT, "helper_member_id")
PROSPECT_INTENT = EventType(
    "signal.prospect_intent.v1", ProspectIntentV1, topics.SIGNALS_SALES, "member_id"
)
CHURN_RISK = EventType("signal.churn_risk.v1", ChurnRiskV1, topics.SIGNALS_SUCCESS, "member_id")
ADVOCATE = EventType("signal.advocate.v1", AdvocateV1, topics.SIGNALS_ADVOCACY, "member_id")
CHAMPION_NOMINATED = EventType(
    "signal.champion_nominated.v1", ChampionNominatedV1, topics.SIGNALS_ADVOCACY, "member_id"
)

NEWCOMER_DROP_OFF = EventType(
    "signal.newcomer_drop_off.v1", NewcomerDropOffV1, topics.SIGNALS_SUCCESS, "member_id"
)
QUESTION_UNANSWERED = EventType(
    "signal.question_unanswered.v1", QuestionUnansweredV1, topics.SIGNALS_SUPPORT, "member_id"
)
QUESTION_ANSWERED = EventType(
    "signal.question_answered.v1", QuestionAnsweredV1, topics.SIGNALS_SUPPORT, "member_id"
)
PRODUCT_FEEDBACK = EventType(
    "signal.product_feedback.v1", ProductFeedbackV1, topics.SIGNALS_PRODUCT, "member_id"
)
CHAMPION_FEEDBACK = EventType(
    "signal.champion_feedback.v1", ChampionFeedbackV1, topics.SIGNALS_PRODUCT, "member_id"
)

CLOCK_TICK = EventType("system.clock_tick.v1", ClockTickV1, topics.MEMBER_ACTIVITY, "clock")
WATERMARK = EventType(
    "system.watermark.v1",
    WatermarkV1,
    topics.SIGNALS_SUPPORT,
    "service",
    also_on=tuple(
        t
        for t in topics.DATA_TOPICS
        if t.watermark_from is not None and t is not topics.SIGNALS_SUPPORT
    ),
)

EVENT_TYPES: dict[str, EventType] = {
    e.type: e
    for e in (
        ACTIVITY,
        STAGE_CHANGED,
        MEMBER_ACQUIRED,
        FIRST_TOUCH,
        MEMBER_MERGED,
        MEMBER_ERASED,
        PEER_HELP,
        PROSPECT_INTENT,
        CHURN_RISK,
        ADVOCATE,
        CHAMPION_NOMINATED,
        NEWCOMER_DROP_OFF,
        QUESTION_UNANSWERED,
        QUESTION_ANSWERED,
        PRODUCT_FEEDBACK,
        CHAMPION_FEEDBACK,
        CLOCK_TICK,
        WATERMARK,
    )
}
