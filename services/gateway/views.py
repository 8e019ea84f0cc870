"""Response bodies of the gateway API (they also document it in /openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import Dimension


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class Accepted(View):
    accepted: list[str] = Field(
        description="The activity_id of every activity of the request, in request order. "
        "Each is durably on the member-activity topic (acks=all)."
    )


class FieldError(View):
    pointer: str = Field(
        description="JSON pointer (RFC 6901) into the request body, e.g. "
        "`/activities/3/actor/member_id`; empty for the body as a whole."
    )
    detail: str


class Problem(View):
    """RFC 9457 problem details, served as application/problem+json."""

    type: str = Field(description="URI identifying the kind of problem.")
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request.")
    errors: list[FieldError] | None = Field(
        default=None, description="Each invalid field of the body (validation problems only)."
    )


class Readiness(View):
    status: Literal["ready", "not ready"]
    problems: dict[str, str] = Field(description="Component -> why it is not ready.")


class StageView(View):
    stage: str
    since: datetime = Field(description="Event time of the transition into this stage.")
    score: float | None = None


class TimelineEntry(View):
    dimension: Dimension
    from_stage: str | None
    to_stage: str
    reason: str
    score: float | None
    occurred_at: datetime
    caused_by: list[str] = Field(description="Ids of the activities that caused it.")


class MemberJourney(View):
    member_id: str
    stages: dict[str, StageView] = Field(
        description="Current stage per dimension (awareness, engagement, advocacy): the "
        "transition with the latest event time."
    )
    timeline: list[TimelineEntry] = Field(description="Every transition, by event time.")


class StageCounts(View):
    members: int = Field(description="Members with at least one stage.")
    dimensions: dict[str, dict[str, int]] = Field(
        description="Dimension -> stage -> number of members currently in it; every "
        "dimension is present, possibly empty."
    )
