"""The body of GET /v1/flywheel; each field's description states its formula (and so
documents it in the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from services.gateway.directory.models import CohortRetention


class Conversion(BaseModel):
    from_dimension: str
    from_stage: str
    to_dimension: str
    to_stage: str
    entered: int = Field(description="Members who entered the first stage within the window.")
    converted: int = Field(
        description="Of those, members who reached the second stage after it, before `to`."
    )
    rate: float | None = Field(description="converted / entered (null when none entered).")


class TimeInStage(BaseModel):
    dimension: str
    stage: str
    left: int = Field(description="Members who left the stage within the window.")
    median_days: float = Field(
        description="Median of (time of leaving - time of entering) over those members."
    )


class Ratio(BaseModel):
    """A count with what it is a share of: a number alone is vanity, its ratio is health."""

    name: str
    count: float = Field(description="The count (the numerator).")
    of: int = Field(description="What it is counted among (the denominator).")
    ratio: float | None = Field(description="count / of (null when `of` is 0).")
    per: int = Field(default=1, description="The ratio is per this many (1, or 100).")
    read_as: str = Field(description="How to read it.")


class FirstTouch(BaseModel):
    channel: str = Field(description="referral, campaign, search, social, community, direct.")
    new_members: int = Field(description="Members who joined in the window, by first touch.")
    customers: int = Field(description="Conversions to customer in the window, by first touch.")


class CommunityInfluence(BaseModel):
    customers: int = Field(description="Conversions to customer in the window.")
    community_influenced: int = Field(
        description="Of those, with at least one community touchpoint before buying."
    )
    influenced_share: float | None = Field(description="community_influenced / customers.")
    considering_entered: int = Field(description="Members who started considering in the window.")
    considering_converted: int = Field(description="Of those, who became customers before `to`.")
    considering_converted_with_community: int = Field(
        description="Of the converted, with community touchpoints before buying."
    )
    considering_converted_without_community: int = Field(description="Of the converted, with none.")
    considering_conversion_rate: float | None = Field(
        description="considering_converted / considering_entered."
    )


class Retention(BaseModel):
    customers_per_stage: dict[str, int] = Field(
        description="Current customers by retention stage: customer (first spell, nothing "
        "renewed yet), retained, lapsed, churned."
    )
    took_part_per_stage: dict[str, int] = Field(
        description="Of each, members with a counted community activity on record before `to`."
    )
    took_part_share_per_stage: dict[str, float | None] = Field(
        description="took_part / customers, per stage: do retained customers take part more "
        "than churned ones?"
    )


class FirstResponse(BaseModel):
    answered: int = Field(description="Questions first answered in the window.")
    unanswered_signals: int = Field(
        description="signal.question_unanswered.v1 in the window (no reply within the rules' "
        "hours)."
    )
    median_hours: float | None = Field(description="Median time to first response.")
    p90_hours: float | None = Field(description="90th percentile of time to first response.")


class FlywheelReport(BaseModel):
    window_from: datetime | None
    window_to: datetime | None
    members_per_stage: dict[str, dict[str, int]] = Field(
        description="Current stage counts per dimension (not windowed)."
    )
    entered_per_stage: dict[str, dict[str, int]] = Field(
        description="Members who entered each stage within the window."
    )
    conversions: list[Conversion]
    time_in_stage: list[TimeInStage]
    new_members: int = Field(description="visitor/none -> member transitions in the window.")
    new_members_via_referral: int = Field(
        description="member.acquired.v1 (via referral) events in the window."
    )
    referral_share: float | None = Field(
        description="new_members_via_referral / new_members: the loop's strength."
    )
    peer_help: int = Field(description="signal.peer_help.v1 events in the window.")
    peer_help_accepted: int = Field(description="Of those, accepted answers.")
    questions: int = Field(
        description="Questions asked in the window (posts flagged `question` or ending in ?)."
    )
    questions_answered_by_peers: int = Field(
        description="Of those, questions whose thread got peer help from another member "
        "before `to`."
    )
    peer_answer_share: float | None = Field(description="questions_answered_by_peers / questions.")
    churn_risk_signals: int = Field(description="signal.churn_risk.v1 events in the window.")
    at_risk_now: int = Field(description="Members currently at_risk.")
    first_touch: list[FirstTouch] = Field(
        description="New members and new customers per first-touch channel (awareness's "
        "transition details)."
    )
    community_influenced_conversion: CommunityInfluence
    retention: Retention
    time_to_first_response: FirstResponse
    newcomer_drop_offs: dict[str, int] = Field(
        description="signal.newcomer_drop_off.v1 in the window, by newcomer_as (member, customer)."
    )
    product_feedback: dict[str, int] = Field(
        description="signal.product_feedback.v1 in the window by kind, plus `from_champions`."
    )
    health: list[Ratio] = Field(
        description="Each count with its ratio: active members, peer-answer share, new "
        "members engaged within 30 days, advocates per 100 active members "
        "(docs/JOURNEY-MODEL.md, Health, not vanity)."
    )

    # --- cohort retention (issue #14; computed by services/gateway/directory/) ---------------
    cohort_retention: list[CohortRetention] = Field(
        default_factory=list,
        description="Per sign-up month (not windowed): the share of the cohort still active 1, "
        "2, 4, 8 and 12 weeks after joining (directory.cohort_retention).",
    )
