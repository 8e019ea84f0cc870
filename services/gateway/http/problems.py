"""RFC 9457 problem details: every error the gateway answers has this shape, and the handlers
that make it so (FastAPI's own 422/404/405, a dependency that is down, the unexpected)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from services.gateway.http.views import FieldError, Problem

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:flywheel:problem:"

INVALID_ACTIVITY = TYPE_PREFIX + "invalid-activity"
INVALID_REQUEST = TYPE_PREFIX + "invalid-request"
MALFORMED_BODY = TYPE_PREFIX + "malformed-body"
BODY_TOO_LARGE = TYPE_PREFIX + "body-too-large"
UNSUPPORTED_MEDIA_TYPE = TYPE_PREFIX + "unsupported-media-type"
UNAVAILABLE = TYPE_PREFIX + "dependency-unavailable"
MEMBER_NOT_FOUND = TYPE_PREFIX + "member-not-found"
INTERNAL = TYPE_PREFIX + "internal-error"
GENERIC = "about:blank"  # RFC 9457: the title is then the HTTP status phrase


DEFAULT_RETRY_AFTER_S = 5


class Unavailable(Exception):
    """A dependency (the broker, the database) cannot serve now; the client should retry.

    Answered as 503 with Retry-After: the request was fine, so it is never the client's fault.
    """

    def __init__(self, dependency: str, detail: str, retry_after_s: int = DEFAULT_RETRY_AFTER_S):
        super().__init__(f"{dependency}: {detail}")
        self.dependency = dependency
        self.detail = detail
        self.retry_after_s = retry_after_s


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


class ProblemError(Exception):
    """Raised anywhere in request handling; answered as a problem document."""

    def __init__(
        self,
        status: int,
        type_: str,
        title: str,
        detail: str,
        errors: Sequence[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.problem = Problem(
            type=type_,
            title=title,
            status=status,
            detail=detail,
            errors=list(errors) if errors is not None else None,
        )
        self.headers = dict(headers or {})

    def response(self) -> ProblemResponse:
        return problem_response(self.problem, self.headers)


def problem_response(problem: Problem, headers: Mapping[str, str] | None = None) -> ProblemResponse:
    body: dict[str, Any] = problem.model_dump(mode="json", exclude_none=True)
    return ProblemResponse(body, status_code=problem.status, headers=dict(headers or {}))


def generic(status: int, detail: str, headers: Mapping[str, str] | None = None) -> ProblemResponse:
    """A plain HTTP error (404 route, 405 method, ...) as a problem document."""
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return problem_response(
        Problem(type=GENERIC, title=phrase, status=status, detail=detail), headers
    )


def json_pointer(location: Sequence[str | int]) -> str:
    """RFC 6901: `("activities", 3, "actor")` -> `/activities/3/actor`; `~` and `/` escaped."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in location)


def doc(description: str) -> dict[str, Any]:
    """An OpenAPI response entry: `description`, answered as a problem document."""
    return {
        "description": description,
        "model": Problem,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def install(app: FastAPI) -> None:
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
