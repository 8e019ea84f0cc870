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

    # --- cohort retention (issue #14; computed by services/gateway/directory/) ---------------
    cohort_retention: list[CohortRetention] = Field(
        default_factory=list,
        description="Per sign-up month (not windowed): the share of the cohort still active 1, "
        "2, 4, 8 and 12 weeks after joining (directory.cohort_retention).",
    )
