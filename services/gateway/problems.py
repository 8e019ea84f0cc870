"""RFC 9457 problem details: every error the gateway answers has this shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse

from services.gateway.views import FieldError, Problem

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
