"""POST and GET /v1/members/{id}/identities, DELETE /v1/members/{id}: linking identities
(merging whoever had them) and erasing people, for operators (`admin` scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body
from starlette.responses import JSONResponse

from services.gateway.http import auth, problems
from services.gateway.identity.directory import IdentityStore
from services.gateway.identity.models import Erased, Linked, LinkRequest, MemberIdentities
from shared.contracts import Identifier


def router(store: IdentityStore) -> APIRouter:
    routes = APIRouter(tags=["identity"], dependencies=[auth.require("admin")])
    responses = {**auth.RESPONSES, 503: problems.doc("The gateway's database is unreachable.")}

    @routes.post(
        "/v1/members/{member_id:path}/identities",
        summary="Link an identity to a member (merging whoever had it)",
        description="Links the platform identity, and the email if given (it must be verified: "
        "emails join identities to one person), to the member. If either belonged to another "
        "member B, B is this person too: B is merged into the member and `member.merged.v1` "
        "is published; every service folds B's state into the member's, and activity still "
        "keyed by B lands on the member. Linking to a merged id links to its survivor.",
        response_model=Linked,
        responses={
            **responses,
            409: problems.doc("The member was erased, or the identity belonged to an erased one."),
        },
    )
    async def link(member_id: Identifier, request: Annotated[LinkRequest, Body()]) -> Linked:
        return await store.link(
            member_id, request.platform, request.platform_user_id, request.email
        )

    @routes.get(
        "/v1/members/{member_id:path}/identities",
        summary="A member's identities, verified emails and merged ids",
        response_model=MemberIdentities,
        responses=responses,
    )
    async def identities(member_id: Identifier) -> MemberIdentities:
        return await store.identities(member_id)

    @routes.delete(
        "/v1/members/{member_id:path}",
        summary="Erase a member everywhere",
        description="Erases the person: this member and every id merged into it. The gateway "
        "deletes their journey, flywheel facts and identities at once and blocks those "
        "identities; `member.erased.v1` (member id and time, no personal data) goes out on "
        "`member-lifecycle`, on which every stage service deletes what it holds, and webhook "
        "subscribers to that type are told. Activity arriving later for the member, or for a "
        "blocked identity, is acknowledged and not published. What is not removed (the "
        "`member-activity` log until its retention) is listed in docs/ARCHITECTURE.md, "
        "Erasure. Idempotent.",
        status_code=202,
        response_model=Erased,
        responses=responses,
    )
    async def erase(member_id: Identifier) -> JSONResponse:
        erased = await store.erase(member_id)
        return JSONResponse(erased.model_dump(mode="json"), status_code=202)

    return routes
