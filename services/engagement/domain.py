"""Engagement rules: how much a member takes part, and when they drift away. Pure, no I/O.

Stages (docs/JOURNEY-MODEL.md, Engagement, gives every formula and default):

    (none) --score reaches engaged_threshold--> engaged
    engaged | reactivated --quiet for at_risk_after_days + review_window_days--> at_risk
    at_risk --quiet for dormant_after_days + review_window_days--> dormant
    at_risk | dormant --any counted activity--> reactivated

Only event time is used, never the wall clock: a demotion happens at an exact deadline
computed from the member's last activity, whether it is found by a watermark sweep
(`advance`) or by the member's own next activity (`observe`). So the same log gives the same
transitions however it is cut into batches, live or replayed.

One module though over 400 lines: it is one stage's rules (rules, state, an activity, the
sweep, a batch, cohorts, a merge), read together against docs/JOURNEY-MODEL.md; split, each
part would import the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, cast

from pydantic import Field, field_validator, model_validator

from shared.cloudevents import derive_event_id
from shared.contracts import (
    CHURN_RISK,
    KIND_PATTERN,
    NEWCOMER_DROP_OFF,
    PEER_HELP,
    PRODUCT_FEEDBACK,
    QUESTION_ANSWERED,
    QUESTION_UNANSWERED,
    ActivityV1,
    ChurnRiskV1,
    Contract,
    EventType,
    NewcomerDropOffV1,
    PeerHelpV1,
    ProductFeedbackV1,
    QuestionAnsweredV1,
    QuestionUnansweredV1,
)
from shared.journey import Transition
from shared.rules import strict_rules

ENGAGED, AT_RISK, DORMANT, REACTIVATED = "engaged", "at_risk", "dormant", "reactivated"
STAGES = (ENGAGED, AT_RISK, DORMANT, REACTIVATED)
ACTIVE_STAGES = frozenset({ENGAGED, REACTIVATED})
"""Stages whose members count as taking part now (the pool for core/regular cohorts)."""

LEGAL_MOVES: frozenset[tuple[str | None, str]] = frozenset(
    {
        (None, ENGAGED),
        (ENGAGED, AT_RISK),
        (REACTIVATED, AT_RISK),
        (AT_RISK, DORMANT),
        (AT_RISK, REACTIVATED),
        (DORMANT, REACTIVATED),
    }
)
"""Every (from, to) the engagement dimension may emit; anything else is a bug."""

DEFAULT_WEIGHTS: dict[str, float] = {
    "page_view": 0.1,  # reading: a sign of life, barely participation
    "signup": 1.0,
    "reaction": 0.5,
    "star": 0.5,
    "fork": 1.0,
    "referral_invite": 2.0,
    "post": 3.0,  # asking or starting a discussion
    "reply": 4.0,  # answering someone: more than asking
    "event_attended": 5.0,
    "answer_accepted": 6.0,  # credited to the answer's author
    "code_contribution": 6.0,
    "event_talk": 8.0,  # one talk or article is enough to count as engaged
    "content_published": 8.0,
    "purchase": 0.0,  # commercial, not community participation (awareness tracks customers)
    "trial_started": 0.0,
    "renewal": 0.0,  # retention kinds from the CRM: commercial too
    "downgrade": 0.0,
    "cancellation": 0.0,
    "demo_request": 0.0,  # evaluating the product (awareness's consideration)
    "comparison_view": 0.1,
    "product_view": 0.1,
    "feedback": 2.0,  # telling the product team something: more than a reaction, less than help
    "feature_request": 2.0,
    "bug_report": 3.0,  # a reproducible report is work given to the project
}

FEEDBACK_KINDS: tuple[str, ...] = ("feedback", "feature_request", "bug_report")
"""The activity kinds that are product feedback by themselves (signals.product)."""

Cohort = Literal["newcomer", "core", "at_risk", "regular"]
COHORTS: tuple[Cohort, ...] = ("newcomer", "core", "at_risk", "regular")


# --------------------------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------------------------


@strict_rules
class Rules:
    """Engagement's tunables; a deployment overrides any of them in the [engagement] section
    of FLYWHEEL_RULES_FILE. An unknown key is an error (a typo must not pass silently)."""

    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    """Score per activity kind. Default: DEFAULT_WEIGHTS. A rules file's table is merged onto
    the defaults (it changes the kinds it names, keeps the rest). 0 means "not counted"."""
    default_weight: Annotated[float, Field(ge=0)] = 1.0
    """Weight of a kind missing from `weights` (a deployment's custom kinds). Default 1.0."""
    source_weights: dict[str, float] = field(default_factory=dict)
    """Per "source:kind" overrides, e.g. {"github:star" = 0.2}; they win over `weights`.
    Default: none."""
    half_life_days: Annotated[float, Field(gt=0)] = 30.0
    """Days for a score to halve without new activity. Default 30."""
    engaged_threshold: Annotated[float, Field(gt=0)] = 8.0
    """Score (decayed, at the moment of the activity) that promotes to engaged. Default 8.0."""
    at_risk_after_days: Annotated[float, Field(gt=0)] = 14.0
    """Days without counted activity before an engaged/reactivated member is at risk.
    Default 14."""
    dormant_after_days: Annotated[float, Field(gt=0)] = 45.0
    """Days without counted activity before an at-risk member is dormant. Default 45."""
    review_window_days: Annotated[float, Field(ge=0)] = 7.0
    """How long an inactivity condition must already hold before its demotion fires, so a
    short holiday does not flap a member: at_risk at last_active + 14 + 7 = 21 days, dormant at
    last_active + 45 + 7 = 52 days. Default 7."""
    team_member_ids: tuple[str, ...] = ()
    """Staff ids never counted, in addition to the actor's is_team_member flag. Default ()."""
    bot_member_ids: tuple[str, ...] = ()
    """Bot ids never counted, in addition to the actor's is_bot flag. Default ()."""
    newcomer_days: Annotated[float, Field(gt=0)] = 30.0
    """A member first seen less than this many days before the cohort time is a newcomer.
    Default 30."""
    core_top_fraction: Annotated[float, Field(gt=0, le=1)] = 0.1
    """Share of engaged/reactivated members (by current decayed score, rounded up) who form
    the core cohort. Default 0.1."""
    question_kinds: tuple[str, ...] = ("post",)
    """Kinds that can ask a question (with properties.question, or a question mapping)."""
    question_mappings: tuple[str, ...] = ()
    """"source:tag:value" / "source:category:value" ("*" for any source) that make a post a
    question, e.g. "discourse:category:support", "github:tag:question". Default none: the
    webhook mappers already set properties.question from labels, tags and answerable
    discussion categories."""
    unanswered_after_hours: Annotated[float, Field(gt=0)] = 24.0
    """Hours without a reply from anyone else before signal.question_unanswered.v1. Default
    24: a day without an answer is when askers give up and a community team should step in."""
    team_replies_answer: bool = True
    """A staff reply answers a question (time to first response is what the asker waits);
    it is still never peer help. Default true."""
    feedback_mappings: dict[str, Literal["feedback", "feature_request", "bug_report"]] = field(
        default_factory=dict
    )
    """"source:tag:value" / "source:category:value" ("*" for any source) -> feedback kind, e.g.
    {"github:tag:enhancement" = "feature_request", "discourse:category:feedback" = "feedback"}.
    Default none: the kinds feedback, feature_request and bug_report are feedback already."""
    honeymoon_days: Annotated[float, Field(gt=0)] = 42.0
    """A new member's or new customer's first days (6 weeks): activity falling off within them
    is the honeymoon drop-off. Default 42."""
    drop_off_quiet_days: Annotated[float, Field(gt=0)] = 14.0
    """Quiet days, starting within the honeymoon, before signal.newcomer_drop_off.v1. Default
    14: two weeks is a habit broken for someone new, and a week earlier than at_risk (21), so a
    community team can reach out while the welcome is fresh."""
    newcomer_customer_kinds: tuple[str, ...] = ("purchase", "trial_started")
    """Kinds that make someone a new customer (a honeymoon as a customer starts)."""

    @field_validator("weights", mode="after")
    @classmethod
    def _merge_onto_defaults(cls, value: dict[str, float]) -> dict[str, float]:
        for kind, weight in value.items():
            if not KIND_PATTERN.match(kind):
                raise ValueError(f"{kind!r} is not an activity kind (lower_snake_case)")
            if weight < 0:
                raise ValueError(f"weight of {kind!r} must be >= 0, got {weight}")
        return {**DEFAULT_WEIGHTS, **value}

    @field_validator("source_weights", mode="after")
    @classmethod
    def _source_kind_keys(cls, value: dict[str, float]) -> dict[str, float]:
        for key, weight in value.items():
            source, _, kind = key.partition(":")
            if not source or not KIND_PATTERN.match(kind):
                raise ValueError(f"{key!r} must be 'source:kind', e.g. 'github:star'")
            if weight < 0:
                raise ValueError(f"weight of {key!r} must be >= 0, got {weight}")
        return value

    @model_validator(mode="after")
    def _dormant_after_at_risk(self) -> Rules:
        if self.dormant_after_days <= self.at_risk_after_days:
            raise ValueError(
                f"dormant_after_days ({self.dormant_after_days}) must be greater than "
                f"at_risk_after_days ({self.at_risk_after_days})"
            )
        return self

    @property
    def at_risk_after(self) -> timedelta:
        """Quiet time from the last activity to at_risk, review window included."""
        return timedelta(days=self.at_risk_after_days + self.review_window_days)

    @property
    def dormant_after(self) -> timedelta:
        """Quiet time from the last activity to dormant, review window included."""
        return timedelta(days=self.dormant_after_days + self.review_window_days)


# --------------------------------------------------------------------------------------------
# state
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Participant:
    """One member's engagement state: all a rule needs, and exactly what the store keeps."""

    member_id: str
    stage: str | None  # None: counted activity, never engaged
    score: float  # as of score_at; decays from there
    score_at: datetime  # time of the newest counted activity folded into `score`
    first_seen_at: datetime  # oldest counted activity (the newcomer cohort)
    last_active_at: datetime  # the inactivity clock starts here
    stage_since: datetime | None  # time of the last transition
    activities: int  # counted activities


@dataclass(frozen=True)
class Signal:
    """A signal event the service emits, with an id derived from what caused it."""

    event_type: EventType
    data: Contract
    event_id: str


@dataclass(frozen=True)
class BatchOutcome:
    """What folding one batch produced: the members that changed, in a stable order."""

    changed: dict[str, Participant]
    transitions: list[Transition]
    signals: list[Signal]
    stage_after: dict[str, str | None] = field(default_factory=dict)
    """Each activity's id -> its actor's stage right after it (advanced to its time, then
    applied): the same in any batching, unlike the stage after the whole batch."""


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


def utc(at: datetime) -> datetime:
    """One representation per instant, so ids and stored rows match whatever the input zone."""
    return at.astimezone(UTC)


def counts(activity: ActivityV1, rules: Rules) -> bool:
    """Visitors, staff and bots never move anyone's engagement."""
    actor = activity.actor
    return not (
        actor.anonymous
        or actor.is_team_member
        or actor.is_bot
        or actor.member_id in rules.team_member_ids
        or actor.member_id in rules.bot_member_ids
    )


def weight_of(activity: ActivityV1, rules: Rules) -> float:
    """The "source:kind" override first, then the kind's weight, then the default weight."""
    if rules.source_weights:
        key = f"{activity.source}:{activity.kind}"
        if key in rules.source_weights:
            return rules.source_weights[key]
    return rules.weights.get(activity.kind, rules.default_weight)


def decay_factor(elapsed: timedelta, rules: Rules) -> float:
    """2^(-elapsed / half_life): what is left of one point after `elapsed`."""
    return float(2.0 ** (-elapsed.total_seconds() / (rules.half_life_days * 86400.0)))


def add_weight(
    score: float, score_at: datetime, weight: float, at: datetime, rules: Rules
) -> tuple[float, datetime]:
    """Fold one weight into (score, score_at). In order: decay to `at`, then add. Late (`at`
    before score_at): add the weight as already decayed to score_at. Either way the result is
    sum(w_i * 2^(-(score_at - t_i)/half_life)), whatever the batch boundaries."""
    if at >= score_at:
        return score * decay_factor(at - score_at, rules) + weight, at
    return score + weight * decay_factor(score_at - at, rules), score_at


def decayed_score(member: Participant, at: datetime, rules: Rules) -> float:
    """The member's decayed score at `at` (no earlier than score_at: we cannot un-know)."""
    if at <= member.score_at:
        return member.score
    return member.score * decay_factor(at - member.score_at, rules)


# --------------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------------


def next_deadline(member: Participant | None, rules: Rules) -> datetime | None:
    """When the member's next demotion falls due if nothing happens (None: never). Stored,
    indexed, so a batch finds the members its watermark has passed in one query."""
    if member is None:
        return None
    if member.stage in ACTIVE_STAGES:
        return member.last_active_at + rules.at_risk_after
    if member.stage == AT_RISK:
        return member.last_active_at + rules.dormant_after
    return None


def _days(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 86400:g}"


def advance(
    member: Participant, to_time: datetime, rules: Rules
) -> tuple[Participant, list[Transition]]:
    """Every demotion due up to and including `to_time`, each at its exact deadline (never at
    `to_time`), so finding it late changes nothing. Returns `member` itself if none is due."""
    transitions: list[Transition] = []
    while (deadline := next_deadline(member, rules)) is not None and deadline <= to_time:
        if member.stage in ACTIVE_STAGES:
            to_stage = AT_RISK
            reason = (
                f"no counted activity since {member.last_active_at.isoformat()}: "
                f"{_days(rules.at_risk_after)} days = {rules.at_risk_after_days:g} quiet "
                f"+ {rules.review_window_days:g} review"
            )
        else:
            to_stage = DORMANT
            reason = (
                f"no counted activity since {member.last_active_at.isoformat()}: "
                f"{_days(rules.dormant_after)} days = {rules.dormant_after_days:g} quiet "
                f"+ {rules.review_window_days:g} review"
            )
        transitions.append(
            Transition(
                member.member_id,
                member.stage,
                to_stage,
                reason,
                deadline,
                (),
                score=decayed_score(member, deadline, rules),
            )
        )
        member = replace(member, stage=to_stage, stage_since=deadline)
    return member, transitions


def apply(
    member: Participant | None, activity: ActivityV1, rules: Rules
) -> tuple[Participant | None, list[Transition]]:
    """Fold one activity into a member already advanced to its time."""
    weight = weight_of(activity, rules)
    if not counts(activity, rules) or weight <= 0:
        return member, []
    at = utc(activity.occurred_at)
    if member is None:
        member = Participant(activity.actor.member_id, None, 0.0, at, at, at, None, 0)
    new_score, new_score_at = add_weight(member.score, member.score_at, weight, at, rules)
    before = member
    member = replace(
        member,
        score=new_score,
        score_at=new_score_at,
        first_seen_at=min(member.first_seen_at, at),
        last_active_at=max(member.last_active_at, at),
        activities=member.activities + 1,
    )
    cause = (activity.activity_id,)
    what = f"{activity.kind} on {activity.source}"

    if member.stage is None and member.score >= rules.engaged_threshold:
        # Judged at score_at: an out-of-order activity completes the sum as of the newest one.
        when = member.score_at
        t = Transition(
            member.member_id,
            None,
            ENGAGED,
            f"engagement score {member.score:.2f} reached {rules.engaged_threshold:g} ({what})",
            when,
            cause,
            score=member.score,
        )
        return replace(member, stage=ENGAGED, stage_since=when), [t]

    if member.stage in (AT_RISK, DORMANT):
        # An activity older than the demotion it would have prevented arrived after it (later
        # than the allowed lateness): the demotion is out, so reactivate at its time. A member's
        # timeline never runs backwards, and the inactivity clock restarts there.
        assert member.stage_since is not None
        when = max(at, member.stage_since)
        quiet = when - before.last_active_at
        t = Transition(
            member.member_id,
            member.stage,
            REACTIVATED,
            f"{what} after {_days(quiet)} days without counted activity",
            when,
            cause,
            score=decayed_score(member, when, rules),
        )
        member = replace(
            member,
            stage=REACTIVATED,
            stage_since=when,
            last_active_at=max(member.last_active_at, when),
        )
        return member, [t]
    return member, []


def observe(
    member: Participant | None, activity: ActivityV1, rules: Rules
) -> tuple[Participant | None, list[Transition]]:
    """Advance the member to the activity's time (demotions first), then apply it. Together
    with sweeps by `advance`, the same activities give the same transitions in any batching."""
    transitions: list[Transition] = []
    if member is not None:
        member, transitions = advance(member, utc(activity.occurred_at), rules)
    member, applied = apply(member, activity, rules)
    return member, transitions + applied


# --------------------------------------------------------------------------------------------
# signals
# --------------------------------------------------------------------------------------------


def peer_help(activity: ActivityV1, rules: Rules, *, in_question: bool = False) -> Signal | None:
    """A member helping another: a reply in someone else's question, or an answer of theirs
    accepted (its actor is the answer's author). The thread is a question when the reply says
    so (`target.thread_is_question`) or, `in_question`, engagement saw the question itself. A
    reply to an announcement, a review or a "thanks!" in a discussion is not help. Self-help,
    staff, bots, and help given to staff (`target.thread_author_is_team_member`, or an id in
    `team_member_ids`) do not count."""
    if activity.kind not in ("reply", "answer_accepted") or not counts(activity, rules):
        return None
    target = activity.target
    helped = target.thread_author_member_id if target else None
    helper = activity.actor.member_id
    if (
        target is None
        or not helped
        or helped == helper
        or helped in rules.team_member_ids
        or helped in rules.bot_member_ids
        or target.thread_author_is_team_member
        or (activity.kind == "reply" and not (target.thread_is_question or in_question))
    ):
        return None
    data = PeerHelpV1(
        helper_member_id=helper,
        helped_member_id=helped,
        thread_id=target.thread_id,
        url=target.url,
        accepted=activity.kind == "answer_accepted",
        occurred_at=utc(activity.occurred_at),
        activity_id=activity.activity_id,
    )
    event_id = derive_event_id(PEER_HELP.type, activity.source, activity.activity_id)
    return Signal(PEER_HELP, data, event_id)


def churn_risk(t: Transition, rules: Rules) -> Signal | None:
    """Entering at_risk tells customer success. at_risk fires exactly at_risk_after (review
    included) after the last activity, so that time is recovered from the deadline."""
    if t.to_stage != AT_RISK:
        return None
    data = ChurnRiskV1(
        member_id=t.member_id,
        stage=AT_RISK,
        last_active_at=t.occurred_at - rules.at_risk_after,
        score=t.score or 0.0,
        occurred_at=t.occurred_at,
    )
    event_id = derive_event_id(CHURN_RISK.type, t.member_id, t.occurred_at.isoformat())
    return Signal(CHURN_RISK, data, event_id)


# --------------------------------------------------------------------------------------------
# one batch
# --------------------------------------------------------------------------------------------


def fold_batch(
    members: Mapping[str, Participant],
    activities: Sequence[ActivityV1],
    watermark: datetime | None,
    rules: Rules,
) -> BatchOutcome:
    """Apply a batch's activities in log order, then sweep every member whose deadline the
    watermark has passed. `members` must hold the actors' states and every member due by the
    watermark; the result names only the members that changed."""
    state = dict(members)
    changed: dict[str, Participant] = {}
    transitions: list[Transition] = []
    signals: list[Signal] = []
    stage_after: dict[str, str | None] = {}

    for activity in activities:
        member_id = activity.actor.member_id
        before = state.get(member_id)
        after, ts = observe(before, activity, rules)
        if after is not None and after != before:
            state[member_id] = changed[member_id] = after
        stage_after[activity.activity_id] = after.stage if after is not None else None
        transitions.extend(ts)
        if (help_signal := peer_help(activity, rules)) is not None:
            signals.append(help_signal)

    if watermark is not None:
        for member_id in sorted(state):
            after, ts = advance(state[member_id], watermark, rules)
            if ts:
                state[member_id] = changed[member_id] = after
                transitions.extend(ts)

    signals.extend(s for t in transitions if (s := churn_risk(t, rules)) is not None)
    return BatchOutcome(changed, transitions, signals, stage_after)


# --------------------------------------------------------------------------------------------
# cohorts
# --------------------------------------------------------------------------------------------


def core_members(members: Iterable[Participant], at: datetime, rules: Rules) -> frozenset[str]:
    """The top core_top_fraction (rounded up) of engaged/reactivated members by decayed score
    at `at`; ties broken by member id so the answer is stable."""
    pool = sorted(
        ((decayed_score(m, at, rules), m.member_id) for m in members if m.stage in ACTIVE_STAGES),
        key=lambda pair: (-pair[0], pair[1]),
    )
    size = math.ceil(len(pool) * rules.core_top_fraction)
    return frozenset(member_id for _, member_id in pool[:size])


def cohort_of(
    member: Participant, at: datetime, rules: Rules, core: frozenset[str]
) -> Cohort | None:
    """One cohort per member, first match wins: newcomer (first seen less than newcomer_days
    before `at`), core (in `core`), at_risk, regular (other engaged/reactivated); dormant and
    never-engaged old members belong to none."""
    if member.first_seen_at > at:
        return None  # not seen yet at `at`
    if at - member.first_seen_at < timedelta(days=rules.newcomer_days):
        return "newcomer"
    if member.member_id in core:
        return "core"
    if member.stage == AT_RISK:
        return "at_risk"
    if member.stage in ACTIVE_STAGES:
        return "regular"
    return None


def cohorts(members: Iterable[Participant], at: datetime, rules: Rules) -> dict[Cohort, list[str]]:
    """Members per cohort at `at`, each list by decayed score (highest first), then id."""
    members = list(members)
    core = core_members(members, at, rules)
    ranked = sorted(members, key=lambda m: (-decayed_score(m, at, rules), m.member_id))
    result: dict[Cohort, list[str]] = {c: [] for c in COHORTS}
    for m in ranked:
        if (cohort := cohort_of(m, at, rules, core)) is not None:
            result[cohort].append(m.member_id)
    return result


# --------------------------------------------------------------------------------------------
# merges: two member ids are one person
# --------------------------------------------------------------------------------------------


def merge_participants(
    survivor: Participant | None,
    merged: Participant | None,
    survivor_id: str,
    merged_id: str,
    cause: str,
    rules: Rules,
) -> tuple[Participant | None, list[Transition]]:
    """One participant out of two: both scores decayed to a common time (the newer score_at)
    and added, the latest activity, every activity counted; then the survivor's stage is
    judged again by the same rules as an activity would:

    - a survivor with no stage takes the merged id's (no transition: the journey view folds
      the merged id's stages into the survivor's), or, neither having one, is engaged if the
      combined score reaches the threshold (dated at the combined score_at);
    - an at_risk or dormant stage, when the other id was active after it began, is
      reactivated, dated at that activity (the person never went quiet);
    - otherwise the survivor keeps its stage; the inactivity deadlines follow the combined
      last activity from the next sweep on.

    Every transition is caused by the merge event, so a re-applied merge re-emits the same ids.
    """
    if merged is None:
        return survivor, []
    if survivor is None:
        return replace(merged, member_id=survivor_id), []
    at = max(survivor.score_at, merged.score_at)
    combined = Participant(
        member_id=survivor_id,
        stage=survivor.stage,
        score=decayed_score(survivor, at, rules) + decayed_score(merged, at, rules),
        score_at=at,
        first_seen_at=min(survivor.first_seen_at, merged.first_seen_at),
        last_active_at=max(survivor.last_active_at, merged.last_active_at),
        stage_since=survivor.stage_since,
        activities=survivor.activities + merged.activities,
    )
    other = merged
    if survivor.stage is None and merged.stage is not None:
        combined = replace(combined, stage=merged.stage, stage_since=merged.stage_since)
        other = survivor
    if combined.stage is None:
        if combined.score < rules.engaged_threshold:
            return combined, []
        t = Transition(
            survivor_id,
            None,
            ENGAGED,
            f"merged with {merged_id}: engagement score {combined.score:.2f} reached "
            f"{rules.engaged_threshold:g}",
            at,
            (cause,),
            score=combined.score,
        )
        return replace(combined, stage=ENGAGED, stage_since=at), [t]
    since = combined.stage_since
    if combined.stage in (AT_RISK, DORMANT) and since is not None and other.last_active_at > since:
        when = other.last_active_at
        t = Transition(
            survivor_id,
            combined.stage,
            REACTIVATED,
            f"merged with {merged_id}, active on {when.isoformat()} while {combined.stage} "
            f"since {since.isoformat()}",
            when,
            (cause,),
            score=decayed_score(combined, when, rules),
        )
        return replace(combined, stage=REACTIVATED, stage_since=when), [t]
    return combined, []


# --------------------------------------------------------------------------------------------
# issue 15: questions and their answers, the honeymoon drop-off, product feedback.
# Each has its own state (questions, newcomers) and its own deadlines, fired exactly like the
# demotions: at the deadline itself, by `advance_*` up to a given time, so finding it late
# changes nothing. `fold_journey` runs them over a batch after `fold_batch`.
# --------------------------------------------------------------------------------------------


def _mapping_keys(activity: ActivityV1) -> set[str]:
    """ "source:tag:value" and "source:category:value" keys (and their "*:" forms) of an
    activity's tags, labels and category, lower case."""
    props = activity.properties
    values: list[tuple[str, object]] = []
    for field_name, key in (("tags", "tag"), ("labels", "tag")):
        items = props.get(field_name)
        if isinstance(items, list):
            values += [(key, item) for item in items]
    for field_name in ("category", "category_id"):
        values.append(("category", props.get(field_name)))
    keys: set[str] = set()
    for key, value in values:
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            v = str(value).lower()
            keys |= {f"{activity.source}:{key}:{v}", f"*:{key}:{v}"}
    return keys


def is_question(activity: ActivityV1, rules: Rules) -> bool:
    """A post that asks: `properties.question` is true, or one of its tags or its category is
    in `question_mappings`."""
    if activity.kind not in rules.question_kinds or not activity.target:
        return False
    if not activity.target.thread_id:
        return False
    if activity.properties.get("question") is True:
        return True
    if not rules.question_mappings:
        return False
    mappings = {m.lower() for m in rules.question_mappings}
    return bool(mappings & _mapping_keys(activity))


def thread_key(activity: ActivityV1) -> str | None:
    """Questions are per source and thread."""
    target = activity.target
    return f"{activity.source}:{target.thread_id}" if target and target.thread_id else None


@dataclass(frozen=True)
class Question:
    """One question thread: what was asked, and its first answer. A reply can arrive before
    its question (another member's partition): the row then holds the answer only."""

    thread_key: str
    thread_id: str
    asker_member_id: str | None = None
    question_activity_id: str | None = None
    url: str | None = None
    title: str | None = None
    asked_at: datetime | None = None
    answered_at: datetime | None = None
    answer_activity_id: str | None = None
    answered_by: str | None = None
    answer_url: str | None = None
    unanswered_signalled: bool = False
    answered_signalled: bool = False


def question_deadline(q: Question | None, rules: Rules) -> datetime | None:
    """When the question's next signal falls due (None: none pending): the unanswered deadline
    (`asked_at + unanswered_after_hours`) if no answer came before it, else the first answer's
    time. Stored, indexed, so a sweep finds the questions its watermark has passed."""
    if q is None or q.asked_at is None or q.answered_signalled:
        return None
    deadline = q.asked_at + timedelta(hours=rules.unanswered_after_hours)
    if not q.unanswered_signalled and (q.answered_at is None or q.answered_at >= deadline):
        return deadline
    if q.answered_at is not None:
        return max(q.answered_at, q.asked_at)
    return None


def _question_signal(event_type: EventType, data: Contract, *parts: str) -> Signal:
    return Signal(event_type, data, derive_event_id(event_type.type, *parts))


def advance_question(q: Question, to_time: datetime, rules: Rules) -> tuple[Question, list[Signal]]:
    """Every question signal due up to and including `to_time` (the watermark), each at its
    own time: signal.question_unanswered.v1 at the deadline if no answer came before it, then
    signal.question_answered.v1 at the first answer, linking the two. Both wait for the
    watermark, so every reply within the allowed lateness is in, whichever partition it came
    from, and the first one by event time is the answer."""
    signals: list[Signal] = []
    while (due := question_deadline(q, rules)) is not None and due <= to_time:
        assert q.asker_member_id and q.question_activity_id and q.asked_at
        asked_at = q.asked_at
        if q.answered_at is None or (
            not q.unanswered_signalled
            and q.answered_at >= q.asked_at + timedelta(hours=rules.unanswered_after_hours)
        ):
            unanswered = QuestionUnansweredV1(
                member_id=q.asker_member_id,
                thread_id=q.thread_id,
                question_activity_id=q.question_activity_id,
                url=q.url,
                title=q.title,
                asked_at=q.asked_at,
                unanswered_hours=rules.unanswered_after_hours,
                occurred_at=due,
            )
            signals.append(
                _question_signal(
                    QUESTION_UNANSWERED, unanswered, q.thread_key, q.question_activity_id
                )
            )
            q = replace(q, unanswered_signalled=True)
            continue
        assert q.answer_activity_id and q.answered_by and q.answered_at
        answered = QuestionAnsweredV1(
            member_id=q.asker_member_id,
            thread_id=q.thread_id,
            question_activity_id=q.question_activity_id,
            answer_activity_id=q.answer_activity_id,
            answered_by_member_id=q.answered_by,
            asked_at=q.asked_at,
            first_response_s=max(0.0, (q.answered_at - asked_at).total_seconds()),
            was_unanswered=q.unanswered_signalled,
            url=q.answer_url or q.url,
            occurred_at=due,
        )
        signals.append(
            _question_signal(QUESTION_ANSWERED, answered, q.thread_key, q.answer_activity_id)
        )
        q = replace(q, answered_signalled=True)
    return q, signals


def answers(activity: ActivityV1, rules: Rules) -> bool:
    """A reply by someone other than the asker that answers: a member's, or staff's when
    `team_replies_answer`; never a bot's or a visitor's."""
    actor = activity.actor
    if activity.kind not in ("reply", "answer_accepted") or actor.anonymous or actor.is_bot:
        return False
    if actor.member_id in rules.bot_member_ids:
        return False
    if not counts(activity, rules) and not rules.team_replies_answer:
        return False
    target = activity.target
    return bool(target and target.thread_author_member_id != actor.member_id)


def observe_question(q: Question | None, activity: ActivityV1, rules: Rules) -> Question | None:
    """Fold one activity of the question's thread: the question itself (the earliest post
    that asks), or a reply (the earliest answer by event time, then activity id, is kept until
    the answered signal is out). Emits nothing: signals wait for the watermark
    (`advance_question`), since answers come from other members' partitions."""
    key = thread_key(activity)
    if key is None or activity.target is None or activity.target.thread_id is None:
        return q
    at = utc(activity.occurred_at)
    base = q or Question(key, activity.target.thread_id)
    if is_question(activity, rules) and counts(activity, rules):
        if base.asked_at is None or at < base.asked_at:
            return replace(
                base,
                asker_member_id=activity.actor.member_id,
                question_activity_id=activity.activity_id,
                url=activity.target.url,
                title=activity.target.thread_title,
                asked_at=at,
            )
        return q
    if answers(activity, rules) and not base.answered_signalled:
        asker = base.asker_member_id or activity.target.thread_author_member_id
        if asker == activity.actor.member_id:
            return q
        if base.answered_at is None or (at, activity.activity_id) < (
            base.answered_at,
            base.answer_activity_id or "",
        ):
            return replace(
                base,
                answered_at=at,
                answer_activity_id=activity.activity_id,
                answered_by=activity.actor.member_id,
                answer_url=activity.target.url,
            )
    return q


@dataclass(frozen=True)
class Newcomer:
    """A member's or customer's honeymoon: when it started, and what they did in it."""

    member_id: str
    newcomer_as: Literal["member", "customer"]
    started_at: datetime
    last_active_at: datetime
    did: tuple[tuple[str, int], ...] = ()  # counted activities per kind, sorted by kind
    signalled: bool = False


def newcomer_deadline(n: Newcomer | None, rules: Rules) -> datetime | None:
    """When the newcomer's drop-off falls due if nothing happens: `drop_off_quiet_days` after
    their last activity, if that activity was within the honeymoon (None: signalled already,
    or active past it)."""
    if n is None or n.signalled:
        return None
    if n.last_active_at >= n.started_at + timedelta(days=rules.honeymoon_days):
        return None
    return n.last_active_at + timedelta(days=rules.drop_off_quiet_days)


def advance_newcomer(n: Newcomer, to_time: datetime, rules: Rules) -> tuple[Newcomer, list[Signal]]:
    """signal.newcomer_drop_off.v1 if the deadline is at or before `to_time`, dated at it."""
    deadline = newcomer_deadline(n, rules)
    if deadline is None or deadline > to_time:
        return n, []
    data = NewcomerDropOffV1(
        member_id=n.member_id,
        newcomer_as=n.newcomer_as,
        started_at=n.started_at,
        last_active_at=n.last_active_at,
        activities=dict(n.did),
        quiet_days=rules.drop_off_quiet_days,
        occurred_at=deadline,
    )
    event_id = derive_event_id(
        NEWCOMER_DROP_OFF.type, n.member_id, n.newcomer_as, n.started_at.isoformat()
    )
    return replace(n, signalled=True), [Signal(NEWCOMER_DROP_OFF, data, event_id)]


def observe_newcomer(
    n: Newcomer | None,
    activity: ActivityV1,
    known_since: datetime | None,
    rules: Rules,
) -> tuple[Newcomer | None, list[Signal]]:
    """Fold one activity into the member's honeymoon. It starts at a sign-up or the first
    counted activity of someone engagement has not known for a honeymoon already
    (`known_since`: their first counted activity), and again as a customer at a purchase or
    trial; counted activities within it move its last activity. Once it is over, only a
    customer honeymoon can follow."""
    if activity.actor.anonymous or activity.actor.is_bot or activity.actor.is_team_member:
        return n, []
    if activity.actor.member_id in rules.team_member_ids or (
        activity.actor.member_id in rules.bot_member_ids
    ):
        return n, []
    at = utc(activity.occurred_at)
    signals: list[Signal] = []
    if n is not None:
        n, signals = advance_newcomer(n, at, rules)
    member_id = activity.actor.member_id
    if activity.kind in rules.newcomer_customer_kinds:
        if n is None or n.newcomer_as == "member":
            return Newcomer(member_id, "customer", at, at), signals
        return n, signals
    if n is not None and newcomer_deadline(n, rules) is None:
        # over (signalled, or active past its first honeymoon_days): no drop-off can come of
        # it, so nothing more is recorded, and the row is not rewritten at every activity
        return n, signals
    counted = counts(activity, rules) and weight_of(activity, rules) > 0
    if not counted and activity.kind != "signup":
        return n, signals
    if n is None:
        honeymoon = timedelta(days=rules.honeymoon_days)
        if known_since is not None and known_since + honeymoon <= at:
            return None, signals  # known for longer than a honeymoon: not new
        did = ((activity.kind, 1),) if counted else ()
        return Newcomer(member_id, "member", min(at, known_since or at), at, did), signals
    if n.newcomer_as == "member" and at < n.started_at:
        n = replace(n, started_at=at)
    if counted and at >= n.started_at:
        counts_by_kind = dict(n.did)
        counts_by_kind[activity.kind] = counts_by_kind.get(activity.kind, 0) + 1
        n = replace(
            n,
            last_active_at=max(n.last_active_at, at),
            did=tuple(sorted(counts_by_kind.items())),
        )
    return n, signals


def feedback_kind(activity: ActivityV1, rules: Rules) -> tuple[str, str] | None:
    """(feedback kind, what matched): one of FEEDBACK_KINDS, or a `feedback_mappings` key."""
    if activity.kind in FEEDBACK_KINDS:
        return activity.kind, activity.kind
    if not rules.feedback_mappings:
        return None  # nothing to match: the activity's tags need not be read (most activities)
    mappings = {k.lower(): v for k, v in rules.feedback_mappings.items()}
    for key in sorted(_mapping_keys(activity)):
        if key in mappings:
            return mappings[key], key
    return None


def product_feedback(
    activity: ActivityV1, engagement_stage: str | None, rules: Rules
) -> Signal | None:
    """signal.product_feedback.v1 for a member's feedback, feature request or bug report, with
    the stages known here: engagement's own, and advocacy's when the sender stamped it on the
    activity (`properties.advocacy_stage`). Advocacy, downstream, flags a champion's feedback
    in event time (signal.champion_feedback.v1)."""
    if not counts(activity, rules):
        return None
    found = feedback_kind(activity, rules)
    if found is None:
        return None
    kind, matched = found
    stages = {"engagement": engagement_stage} if engagement_stage else {}
    advocacy = activity.properties.get("advocacy_stage")
    if isinstance(advocacy, str) and advocacy in ("advocate", "champion"):
        stages["advocacy"] = advocacy
    target = activity.target
    text = activity.properties.get("text")
    data = ProductFeedbackV1(
        member_id=activity.actor.member_id,
        feedback_kind=cast(Literal["feedback", "feature_request", "bug_report"], kind),
        matched=matched,
        source=activity.source,
        activity_id=activity.activity_id,
        thread_id=target.thread_id if target else None,
        title=target.thread_title if target else None,
        excerpt=text[:500] if isinstance(text, str) else None,
        url=target.url if target else None,
        stages=stages,
        from_champion=stages.get("advocacy") == "champion",
        occurred_at=utc(activity.occurred_at),
    )
    event_id = derive_event_id(PRODUCT_FEEDBACK.type, activity.source, activity.activity_id)
    return Signal(PRODUCT_FEEDBACK, data, event_id)


@dataclass(frozen=True)
class JourneyOutcome:
    """What `fold_journey` produced: the questions and newcomers to save, and the signals."""

    questions: dict[str, Question]
    newcomers: dict[str, Newcomer]
    signals: list[Signal]


def question_keys(activities: Iterable[ActivityV1]) -> set[str]:
    return {k for a in activities if (k := thread_key(a)) is not None}


def fold_journey(
    before: Mapping[str, Participant],
    stage_after: Mapping[str, str | None],
    questions: Mapping[str, Question],
    newcomers: Mapping[str, Newcomer],
    activities: Sequence[ActivityV1],
    watermark: datetime | None,
    rules: Rules,
) -> JourneyOutcome:
    """Questions, honeymoons and feedback over one batch, in log order, then every question
    and newcomer due by the watermark (the same `watermark` `fold_batch` sweeps with).
    `before`: the participants as loaded (their first activity tells who is new);
    `stage_after`: each activity's actor's stage right after it (`BatchOutcome.stage_after`),
    which goes with their feedback. `questions` must hold the
    batch's threads and every question due by the watermark, `newcomers` the batch's actors and
    everyone due by it."""
    qs = dict(questions)
    ns = dict(newcomers)
    changed_q: dict[str, Question] = {}
    changed_n: dict[str, Newcomer] = {}
    signals: list[Signal] = []

    for activity in activities:
        key = thread_key(activity)
        if key is not None:
            q_before = qs.get(key)
            q_after = observe_question(q_before, activity, rules)
            if q_after is not None and q_after != q_before:
                qs[key] = changed_q[key] = q_after
            if (
                q_after is not None
                and q_after.asked_at is not None
                and not (activity.target and activity.target.thread_is_question)
                and (help_signal := peer_help(activity, rules, in_question=True)) is not None
            ):
                signals.append(help_signal)  # the reply did not say; engagement saw the question
        member_id = activity.actor.member_id
        known = before.get(member_id)
        n_before = ns.get(member_id)
        n_after, out = observe_newcomer(
            n_before, activity, known.first_seen_at if known else None, rules
        )
        if n_after is not None and n_after != n_before:
            ns[member_id] = changed_n[member_id] = n_after
        signals += out
        feedback = product_feedback(activity, stage_after.get(activity.activity_id), rules)
        if feedback is not None:
            signals.append(feedback)

    if watermark is not None:
        for key in sorted(qs):
            q_after, out = advance_question(qs[key], watermark, rules)
            if out:
                qs[key] = changed_q[key] = q_after
                signals += out
        for member_id in sorted(ns):
            n_after, out = advance_newcomer(ns[member_id], watermark, rules)
            if out:
                ns[member_id] = changed_n[member_id] = n_after
                signals += out
    return JourneyOutcome(changed_q, changed_n, signals)


def in_time_order(*streams: Sequence[Signal]) -> list[Signal]:
    """The signals of several folds of one batch in event-time order (stable: equal times keep
    their order): a member's churn risk and drop-off, found by one sweep or by two, come out in
    the same order, so the order per member does not depend on how the log is batched."""
    return sorted((s for stream in streams for s in stream), key=lambda s: _occurred_at(s.data))


def _occurred_at(data: Contract) -> datetime:
    at = getattr(data, "occurred_at", None)
    assert isinstance(at, datetime), f"{type(data).__name__} has no occurred_at"
    return at


def merge_newcomers(
    survivor: Newcomer | None, merged: Newcomer | None, survivor_id: str
) -> Newcomer | None:
    """One honeymoon out of two: the survivor's if it has one (the person is as new as the
    earlier id), else the merged id's under the survivor's id."""
    if survivor is not None:
        return survivor
    return replace(merged, member_id=survivor_id) if merged is not None else None
