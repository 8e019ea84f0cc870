"""GET /v1/members/{id}/journey and GET /v1/stages: the journey read model, out."""

from __future__ import annotations

from fastapi import APIRouter

from services.gateway.http import auth, problems
from services.gateway.http.problems import MEMBER_NOT_FOUND, ProblemError
from services.gateway.journey.models import MemberJourney, StageCounts
from services.gateway.journey.store import JourneyReader


def router(journey: JourneyReader) -> APIRouter:
    routes = APIRouter(tags=["journey"])

    @routes.get(
        "/v1/members/{member_id:path}/journey",
        summary="A member's journey",
        description="Current stage per dimension and every transition, by event time. The "
        "read model follows `journey-transitions` asynchronously: a just-submitted activity "
        "shows up after the stage services processed it.",
        response_model=MemberJourney,
        dependencies=[auth.require("read")],
        responses={
            **auth.RESPONSES,
            404: problems.doc("No transition is known for this member."),
            422: problems.doc("The member id is not a valid path parameter."),
            503: problems.doc("The read model's database is unreachable."),
        },
    )
    async def member_journey(member_id: str) -> MemberJourney:
        found = await journey.member_journey(member_id)
        if found is None:
            raise ProblemError(
                404,
                MEMBER_NOT_FOUND,
                "Member not found",
                f"no journey transition is known for member {member_id!r}",
            )
        return found

    @routes.get(
        "/v1/stages",
        summary="Members per dimension and stage",
        response_model=StageCounts,
        dependencies=[auth.require("read")],
        responses={
            **auth.RESPONSES,
            503: problems.doc("The read model's database is unreachable."),
        },
    )
    async def stages() -> StageCounts:
        return await journey.stage_counts()

    return routes
