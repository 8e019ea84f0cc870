"""The operations routes every gateway serves without an API key: liveness, readiness and the
AsyncAPI document of the event contracts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse

from services.gateway.http import auth
from services.gateway.http.views import Readiness

ReadinessCheck = Callable[[], Awaitable[dict[str, str]]]
"""Returns {component: problem} for what is not ready; empty when ready."""


def router(readiness: ReadinessCheck, asyncapi_document: dict[str, Any]) -> APIRouter:
    routes = APIRouter(tags=["operations"])

    @routes.get(
        "/healthz",
        summary="Liveness: the process answers",
        openapi_extra=auth.PUBLIC,
    )
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @routes.get(
        "/readyz",
        summary="Readiness: the database and the broker answer",
        openapi_extra=auth.PUBLIC,
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Something is not ready."}},
    )
    async def readyz() -> JSONResponse:
        problems = await readiness()
        body = Readiness(status="not ready" if problems else "ready", problems=problems)
        return JSONResponse(body.model_dump(mode="json"), status_code=503 if problems else 200)

    @routes.get(
        "/asyncapi.json",
        summary="The event contracts (AsyncAPI 3.0)",
        description="Every topic as a channel, every event type as a message with its JSON "
        "schema, the CloudEvents headers and the record key; generated from the registries.",
        openapi_extra=auth.PUBLIC,
    )
    async def asyncapi() -> dict[str, Any]:
        return asyncapi_document

    return routes
