"""The directory's API (scope `read`): GET /v1/members (a page, or CSV with Accept: text/csv),
GET /v1/members.csv (the streamed export), GET /v1/members/{id}/profile, GET /v1/leaderboards,
GET /v1/flywheel/series (the dashboard's charts) and GET /v1/operations (its strip)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from services.gateway.directory import query as q
from services.gateway.directory.models import (
    Leaderboards,
    MemberPage,
    MemberProfile,
    Operations,
    Series,
)
from services.gateway.directory.reader import Directory
from services.gateway.http import auth, problems
from services.gateway.http.problems import MEMBER_NOT_FOUND, TYPE_PREFIX, ProblemError

INVALID_PARAMETER = TYPE_PREFIX + "invalid-parameter"
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"

_QUERY_DOC = (
    "Filters (all optional, combined with AND): `awareness`, `engagement`, `advocacy` (a "
    "stage, or several comma-separated), `cohort` (newcomer, core, at_risk, regular), "
    "`score_min`/`score_max`, `source` (a platform), `active_after`/`active_before`, "
    "`joined_after`/`joined_before` (ISO 8601 with a zone), `customer` and `advocate` (true "
    "or false), `q` (prefix of the handle or the member id, case-insensitive). `sort`: "
    "`score`, `last_active` or `joined`, a leading `-` for descending (default "
    "`-last_active`). An unknown parameter, a bad value, a `limit` outside 1-500 or a cursor "
    "from another sort is a 400 naming the parameter."
)


def params_of(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        params.setdefault(name, []).append(value)
    return params


def parse_or_400(params: Mapping[str, list[str]], *, paged: bool = True) -> q.Query:
    try:
        return q.parse(params, paged=paged)
    except q.BadParameter as exc:
        raise ProblemError(
            400, INVALID_PARAMETER, "Invalid query parameter", f"`{exc.name}`: {exc.detail}"
        ) from exc


def check_window(start: datetime | None, end: datetime | None) -> None:
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.tzinfo is None:
            raise ProblemError(
                400,
                INVALID_PARAMETER,
                "Invalid query parameter",
                f"`{name}`: needs a time zone, e.g. 2026-11-01T00:00:00Z",
            )
    if start and end and start >= end:
        raise ProblemError(
            400, INVALID_PARAMETER, "Invalid query parameter", "`from`: must be before `to`"
        )


async def csv_response(directory: Directory, query: q.Query) -> Response:
    await directory.check()
    return StreamingResponse(
        directory.csv_chunks(query),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": 'attachment; filename="members.csv"'},
    )


def wants_csv(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


_ERRORS = {
    **auth.RESPONSES,
    400: problems.doc("An unknown parameter or a bad value; the detail names the parameter."),
    503: problems.doc("The read model's database is unreachable."),
}


def router(directory: Directory) -> APIRouter:
    routes = APIRouter(tags=["directory"])

    @routes.get(
        "/v1/members",
        summary="The member directory",
        description="Members with their current stages, cohort, score and activity, filtered, "
        "sorted and paged by an opaque cursor (keyset on the sort key and the member id, so "
        "pages stay stable while transitions arrive). `Accept: text/csv` answers the whole "
        "export instead (as GET /v1/members.csv). " + _QUERY_DOC,
        response_model=MemberPage,
        dependencies=[auth.require("read")],
        responses={**_ERRORS, 200: {"content": {"text/csv": {}}}},
    )
    async def members(
        request: Request,
        limit: Annotated[str | None, Query(description="Page size, 1-500 (default 50).")] = None,
        cursor: Annotated[str | None, Query(description="next_cursor of the page before.")] = None,
    ) -> Response | MemberPage:
        params = params_of(request)
        if wants_csv(request):
            params.pop("limit", None)
            params.pop("cursor", None)
            return await csv_response(directory, parse_or_400(params, paged=False))
        return await directory.page(parse_or_400(params))

    @routes.get(
        "/v1/members.csv",
        summary="The member directory as CSV",
        description="Every member the filters match, streamed as CSV with a header row "
        "(keyset chunks: memory stays bounded at any size). Cells a spreadsheet would run as "
        "a formula are prefixed with an apostrophe. " + _QUERY_DOC,
        dependencies=[auth.require("read")],
        responses={**_ERRORS, 200: {"content": {"text/csv": {}}}},
        response_class=StreamingResponse,
    )
    async def members_csv(request: Request) -> Response:
        return await csv_response(directory, parse_or_400(params_of(request), paged=False))

    @routes.get(
        "/v1/members/{member_id:path}/profile",
        summary="A member's profile",
        description="The member's directory row, every transition with its reason, "
        "contributions per kind, advocacy evidence, peer help given and received, linked "
        "identities and recent activity.",
        response_model=MemberProfile,
        dependencies=[auth.require("read")],
        responses={**_ERRORS, 404: problems.doc("No such member in the directory.")},
    )
    async def profile(member_id: str) -> MemberProfile:
        found = await directory.profile(member_id)
        if found is None:
            raise ProblemError(
                404, MEMBER_NOT_FOUND, "Member not found", f"no member {member_id!r}"
            )
        return found

    @routes.get(
        "/v1/leaderboards",
        summary="Top advocates and the current champions",
        description="Advocates ranked by the highest advocacy score signalled in the window "
        "[from, to), with the latest signal's evidence counts and links; and every current "
        "champion with the reason of the transition that made them one.",
        response_model=Leaderboards,
        dependencies=[auth.require("read")],
        responses=_ERRORS,
    )
    async def leaderboards(
        start: Annotated[datetime | None, Query(alias="from")] = None,
        end: Annotated[datetime | None, Query(alias="to")] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> Leaderboards:
        check_window(start, end)
        return await directory.leaderboards(start, end, limit)

    @routes.get(
        "/v1/flywheel/series",
        summary="The flywheel over time",
        description="Transitions per week and stage entered, the peer-answer share per week "
        "(in the window [from, to)), cohort retention by sign-up month and the health ratios "
        "(members active in the last 30 days of event time, customers, advocates).",
        response_model=Series,
        dependencies=[auth.require("read")],
        responses=_ERRORS,
    )
    async def series(
        start: Annotated[datetime | None, Query(alias="from")] = None,
        end: Annotated[datetime | None, Query(alias="to")] = None,
    ) -> Series:
        check_window(start, end)
        return await directory.series(start, end)

    @routes.get(
        "/v1/operations",
        summary="The operations strip",
        description="The read model's consumer lag and the dead letters of the topics it "
        "reads (from the broker, 2 s at most; null when it does not answer), its outbox "
        "backlog and event-time clock.",
        response_model=Operations,
        dependencies=[auth.require("read")],
        responses=_ERRORS,
    )
    async def operations() -> Operations:
        return await directory.operations()

    return routes
