"""POST and GET /v1/members/{id}/identities, GET /v1/identities, DELETE /v1/members/{id}:
linking identities (merging whoever had them), finding whose an email or account is (a
request to be erased comes with an email, and member ids are pseudonyms) and erasing people,
for operators (`admin` scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query
from starlette.responses import JSONResponse

from services.gateway.http import auth, problems
from services.gateway.identity.directory import IdentityStore
from services.gateway.identity.models import (
    Erased,
    Found,
    Linked,
    LinkRequest,
    MemberIdentities,
)
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

    @routes.get(
        "/v1/identities",
        summary="Whose is this email or platform account?",
        description="The member a verified email (`email`) or a platform identity "
        "(`platform` and `platform_user_id`) belongs to: member ids of platform identities are "
        "pseudonyms (`m-...`), so this is how an operator finds the person a request (to see "
        "or erase their data) is about. 404 when the gateway knows no such identity.",
        response_model=Found,
        responses={**responses, 404: problems.doc("No member has this email or identity.")},
    )
    async def find(
        email: Annotated[str | None, Query(max_length=320)] = None,
        platform: Annotated[str | None, Query(max_length=40)] = None,
        platform_user_id: Annotated[str | None, Query(max_length=200)] = None,
    ) -> Found:
        if (email is None) == (platform is None or platform_user_id is None):
            raise problems.ProblemError(
                400,
                problems.INVALID_REQUEST,
                "Say which identity",
                "give either `email`, or both `platform` and `platform_user_id`",
            )
        member = await store.find(email=email, platform=platform, platform_user_id=platform_user_id)
        if member is None:
            raise problems.ProblemError(
                404,
                problems.TYPE_PREFIX + "identity-unknown",
                "Unknown identity",
                "no member has this email" if email else f"no member has this {platform} account",
            )
        return Found(member_id=member)

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
