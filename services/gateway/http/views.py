"""Response bodies every part of the gateway API shares: problems and readiness (they also
document it in /openapi.json). Each feature keeps its own bodies in its package."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


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
