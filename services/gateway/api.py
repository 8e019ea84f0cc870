"""The gateway's HTTP API: community activity in, journey read model out.

`create_app` takes its collaborators (publisher, journey reader, readiness check) as
arguments, so tests run it with in-memory fakes; `runtime.build_app` wires the real ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from services.gateway import auth, intake
from services.gateway.asyncapi import build_asyncapi
from services.gateway.intake import ActivityBatch
from services.gateway.ports import ActivityPublisher, JourneyReader, ReadinessCheck, Unavailable
from services.gateway.problems import (
    INTERNAL,
    INVALID_REQUEST,
    MEMBER_NOT_FOUND,
    PROBLEM_JSON,
    UNAVAILABLE,
    ProblemError,
    generic,
    json_pointer,
    problem_response,
)
from services.gateway.views import (
    Accepted,
    FieldError,
    MemberJourney,
    Problem,
    Readiness,
    StageCounts,
)
from shared.contracts import ActivityV1
from shared.settings import Settings

log = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

API_VERSION = "1.0.0"
DESCRIPTION = """\
Community activity comes in here and leaves as CloudEvents on the `member-activity` Kafka
topic; the stage services (awareness, engagement, advocacy) turn it into
`journey.stage_changed.v1` events, which this gateway projects into a read model.

* Every error is an [RFC 9457](https://www.rfc-editor.org/rfc/rfc9457) problem document
  (`application/problem+json`); validation problems name each bad field as a JSON pointer.
* A batch is all-or-nothing: one invalid activity and nothing is published.
* Retrying is safe: an activity's event id is derived from its `source` and `activity_id`,
  so a re-sent activity is dropped as a duplicate downstream.
* The event contracts are at [`/asyncapi.json`](/asyncapi.json) (AsyncAPI 3.0).
* Every call but health, these documents and the signed platform webhooks needs an API key
  (`Authorization: Bearer <key>` or `X-API-Key: <key>`) holding the scope the operation
  names: `ingest`, `read` or `admin`. Without one: 401; without the scope: 403.
"""


def _problem_content(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "model": Problem,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


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


def create_app(
    *,
    publisher: ActivityPublisher,
    journey: JourneyReader,
    readiness: ReadinessCheck,
    settings: Settings | None = None,
    lifespan: Lifespan | None = None,
) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="Community flywheel gateway",
        version=API_VERSION,
        summary="Community activity in; members' journeys out.",
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[auth.guard],  # deny by default: see services/gateway/auth.py
        openapi_tags=[
            {"name": "activities", "description": "Ingest community activity."},
            {"name": "journey", "description": "The journey read model."},
            {"name": "operations", "description": "Health and machine-readable contracts."},
        ],
    )
    asyncapi_document = build_asyncapi(
        topic_prefix=settings.topic_prefix,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        version=API_VERSION,
    )
    _install_problem_handlers(app)
    auth.install(app, settings)

    @app.post(
        "/v1/activities",
        tags=["activities"],
        summary="Submit one activity or a batch",
        description="Validates the whole request, then publishes each activity as a "
        "`community.activity.v1` CloudEvent keyed by `actor.member_id` and answers once the "
        "broker has acknowledged all of them (acks=all).",
        status_code=202,
        response_model=Accepted,
        dependencies=[auth.require("ingest")],
        responses={
            **auth.RESPONSES,
            400: _problem_content("The body is not JSON."),
            413: _problem_content("The body (or one activity) is too large."),
            415: _problem_content("The body is not declared as JSON."),
            422: _problem_content("An activity is invalid; `errors` names every bad field."),
            503: _problem_content("The broker did not take the events; retry after Retry-After."),
        },
        openapi_extra=_ACTIVITIES_BODY,
    )
    async def post_activities(request: Request) -> JSONResponse:
        intake.check_content_type(request.headers.get("content-type"))
        raw = await intake.read_body(
            request.headers.get("content-length"), request.stream(), settings.max_request_bytes
        )
        body = intake.parse_json(raw)
        activities = intake.parse_activities(body, max_items=settings.max_batch_items)
        is_batch = isinstance(body, dict) and "activities" in body
        records = intake.to_records(activities, batch=is_batch)
        await publisher.publish(records)
        accepted = Accepted(accepted=[a.activity_id for a in activities])
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202)

    @app.get(
        "/v1/members/{member_id:path}/journey",
        tags=["journey"],
        summary="A member's journey",
        description="Current stage per dimension and every transition, by event time. The "
        "read model follows `journey-transitions` asynchronously: a just-submitted activity "
        "shows up after the stage services processed it.",
        response_model=MemberJourney,
        dependencies=[auth.require("read")],
        responses={
            **auth.RESPONSES,
            404: _problem_content("No transition is known for this member."),
            422: _problem_content("The member id is not a valid path parameter."),
            503: _problem_content("The read model's database is unreachable."),
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

    @app.get(
        "/v1/stages",
        tags=["journey"],
        summary="Members per dimension and stage",
        response_model=StageCounts,
        dependencies=[auth.require("read")],
        responses={
            **auth.RESPONSES,
            503: _problem_content("The read model's database is unreachable."),
        },
    )
    async def stages() -> StageCounts:
        return await journey.stage_counts()

    @app.get(
        "/healthz",
        tags=["operations"],
        summary="Liveness: the process answers",
        openapi_extra=auth.PUBLIC,
    )
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Readiness: the database and the broker answer",
        openapi_extra=auth.PUBLIC,
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Something is not ready."}},
    )
    async def readyz() -> JSONResponse:
        problems = await readiness()
        body = Readiness(status="not ready" if problems else "ready", problems=problems)
        return JSONResponse(body.model_dump(mode="json"), status_code=503 if problems else 200)

    @app.get(
        "/asyncapi.json",
        tags=["operations"],
        summary="The event contracts (AsyncAPI 3.0)",
        description="Every topic as a channel, every event type as a message with its JSON "
        "schema, the CloudEvents headers and the record key; generated from the registries.",
        openapi_extra=auth.PUBLIC,
    )
    async def asyncapi() -> dict[str, Any]:
        return asyncapi_document

    _install_openapi(app)
    return app


def _install_problem_handlers(app: FastAPI) -> None:
    """Every error leaves as application/problem+json, FastAPI's own 422/404/405 included."""

    async def on_problem(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return exc.response()

    async def on_unavailable(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Unavailable)
        log.warning("%s %s: 503, %s", request.method, request.url.path, exc)
        return problem_response(
            Problem(
                type=UNAVAILABLE,
                title="Service unavailable",
                status=503,
                detail=f"{exc.dependency} is unavailable ({exc.detail}); nothing is claimed "
                "accepted: retry the same request (activities sent twice are deduplicated)",
            ),
            {"Retry-After": str(exc.retry_after_s)},
        )

    async def on_request_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = []
        for err in exc.errors():
            where, *path = err.get("loc", ()) or ("body",)
            if where == "body":
                pointer = json_pointer(path)
            else:  # a path or query parameter: not in the body, so no JSON pointer
                pointer = f"{where}:{'.'.join(map(str, path))}"
            errors.append(FieldError(pointer=pointer, detail=str(err.get("msg", ""))))
        return ProblemError(
            422,
            INVALID_REQUEST,
            "Invalid request",
            "the request is invalid",
            errors,
        ).response()

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return generic(exc.status_code, str(exc.detail), exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return problem_response(
            Problem(
                type=INTERNAL,
                title="Internal error",
                status=500,
                detail="the gateway failed unexpectedly; it is logged",
            )
        )

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(Unavailable, on_unavailable)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def _install_openapi(app: FastAPI) -> None:
    """The raw-body route documents its body by reference: add those schemas to components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            _, defs = models_json_schema(
                [(ActivityV1, "validation"), (ActivityBatch, "validation")],
                ref_template="#/components/schemas/{model}",
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
