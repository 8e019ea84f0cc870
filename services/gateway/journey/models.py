"""Response bodies of the journey read model's routes (they also document them in
/openapi.json)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from services.gateway.http.views import View
from shared.contracts import Dimension


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
