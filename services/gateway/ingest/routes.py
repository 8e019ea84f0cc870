"""POST /v1/activities: community activity in, published as `community.activity.v1`.

The route reads the raw body itself (see `intake.py`: size limits on the bytes received, one
validation pass naming every bad field) and answers once the broker acknowledged every event
(`publisher.py`). Its body is documented by reference: `OPENAPI_MODELS` are the schemas the
bootstrap adds to the OpenAPI components.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from services.gateway.http import auth, problems
from services.gateway.http.views import View
from services.gateway.ingest import intake
from services.gateway.ingest.intake import ActivityBatch
from services.gateway.ingest.publisher import ActivityPublisher
from shared.contracts import ActivityV1
from shared.settings import Settings

Resolver = Callable[[str, list[ActivityV1]], Awaitable[list[ActivityV1]]]
"""(platform, activities) -> the same activities with member ids from the identity tables:
the gateway's `IdentityStore.resolve_activities`, the webhooks' resolver."""

RESOLUTION_UNAVAILABLE = problems.TYPE_PREFIX + "identity-resolution-unavailable"

OPENAPI_MODELS: tuple[type[BaseModel], ...] = (ActivityV1, ActivityBatch)
"""Referenced by the route's hand-written request body, so added to the OpenAPI components."""


class Accepted(View):
    """What POST /v1/activities answers."""

    accepted: list[str] = Field(
        description="The activity_id of every activity of the request, in request order. "
        "Each is durably on the member-activity topic (acks=all)."
    )


_ACTIVITY_EXAMPLE: dict[str, Any] = {
    "activity_id": "discourse-post-1234",
    "occurred_at": "2026-01-05T09:00:00Z",
    "source": "discourse",
    "kind": "post",
    "actor": {"member_id": "m-42", "handle": "ada"},
    "target": {"thread_id": "t-7", "thread_title": "How do I replay a topic?"},
    "properties": {"question": True},
}

_ACTIVITIES_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": 'One activity, or `{"activities": [...]}` (at most `max_batch_items`).',
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/ActivityV1"},
                        {"$ref": "#/components/schemas/ActivityBatch"},
                    ]
                },
                "examples": {
                    "single": {"summary": "One activity", "value": _ACTIVITY_EXAMPLE},
                    "batch": {
                        "summary": "A batch",
                        "value": {"activities": [_ACTIVITY_EXAMPLE]},
                    },
                },
            }
        },
    }
}


async def resolve_identities_of(
    resolve: Resolver, activities: Sequence[ActivityV1]
) -> list[ActivityV1]:
    """Each source's activities through the resolver, as the webhooks of that platform are;
    the request's order is kept."""
    by_source: dict[str, list[int]] = {}
    for i, activity in enumerate(activities):
        by_source.setdefault(activity.source, []).append(i)
    resolved = list(activities)
    for source, places in by_source.items():
        answers = await resolve(source, [activities[i] for i in places])
        for i, activity in zip(places, answers, strict=True):
            resolved[i] = activity
    return resolved


def router(
    publisher: ActivityPublisher, settings: Settings, resolve: Resolver | None = None
) -> APIRouter:
    """`resolve`: the identity resolver `?resolve_identities=true` asks for (the gateway's
    `IdentityStore.resolve_activities`); without one, such a request is refused (501)."""
    routes = APIRouter(tags=["activities"])

    @routes.post(
        "/v1/activities",
        summary="Submit one activity or a batch",
        description="Validates the whole request, then publishes each activity as a "
        "`community.activity.v1` CloudEvent keyed by `actor.member_id` and answers once the "
        "broker has acknowledged all of them (acks=all).",
        status_code=202,
        response_model=Accepted,
        dependencies=[auth.require("ingest")],
        responses={
            **auth.RESPONSES,
            400: problems.doc("The body is not JSON."),
            413: problems.doc("The body (or one activity) is too large."),
            415: problems.doc("The body is not declared as JSON."),
            422: problems.doc(
                "An activity is invalid, or dated more than `max_future_s` ahead of the "
                "gateway's clock; `errors` names every bad field."
            ),
            501: problems.doc("resolve_identities asked of a gateway without identities."),
            503: problems.doc("The broker did not take the events; retry after Retry-After."),
        },
        openapi_extra=_ACTIVITIES_BODY,
    )
    async def post_activities(
        request: Request,
        resolve_identities: Annotated[
            bool,
            Query(
                description="Resolve platform identities as the signed webhooks do (what "
                "`flywheel import` sets): an actor whose `member_id` is the derived id "
                "`<source>:<platform_user_id>` is published as the member that identity is "
                "linked to (recorded on first sight under its pseudonym `m-...`; its `email` "
                "is taken as verified and joins the member who has it), and a thread's or "
                "parent's author or a member-id property named by a derived id likewise. Off: "
                "member ids are published as sent. Either way `actor.handle`, `actor.email` "
                "and `actor.platform_user_id` are used here and never published."
            ),
        ] = False,
    ) -> JSONResponse:
        intake.check_content_type(request.headers.get("content-type"))
        raw = await intake.read_body(
            request.headers.get("content-length"), request.stream(), settings.max_request_bytes
        )
        body = intake.parse_json(raw)
        activities = intake.parse_activities(body, max_items=settings.max_batch_items)
        is_batch = isinstance(body, dict) and "activities" in body
        intake.refuse_future(
            activities, now=datetime.now(UTC), max_future_s=settings.max_future_s, batch=is_batch
        )
        if resolve_identities:
            if resolve is None:
                raise problems.ProblemError(
                    501,
                    RESOLUTION_UNAVAILABLE,
                    "Identity resolution unavailable",
                    "this gateway has no identity store; send without resolve_identities",
                )
            activities = await resolve_identities_of(resolve, activities)
        records = intake.to_records(activities, batch=is_batch)
        await publisher.publish(records)
        accepted = Accepted(accepted=[a.activity_id for a in activities])
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202)

    return routes
