"""GET /v1/flywheel?from=&to=: the flywheel figures over an event-time window."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from services.gateway.directory.store import cohort_retention
from services.gateway.flywheel.models import FlywheelReport
from services.gateway.flywheel.store import flywheel_report
from services.gateway.http import auth
from services.gateway.http.problems import TYPE_PREFIX, ProblemError
from shared.postgres import Connection

INVALID_WINDOW = TYPE_PREFIX + "invalid-window"


def router(connect: Callable[[], AbstractAsyncContextManager[Connection]]) -> APIRouter:
    """`connect`: the reports' connections (services/gateway/reports.py)."""
    routes = APIRouter(tags=["journey"])

    @routes.get(
        "/v1/flywheel",
        dependencies=[auth.require("read")],
        summary="Is the flywheel turning?",
        description="Stage counts, stage-to-stage conversion, median time in stage, the "
        "share of new members who came through a member's referral, peer help and the share "
        "of questions answered by peers, and churn risk, over an event-time window "
        "[from, to). Both bounds are optional.",
        response_model=FlywheelReport,
    )
    async def flywheel(
        start: Annotated[
            datetime | None, Query(alias="from", description="Window start (ISO 8601).")
        ] = None,
        end: Annotated[
            datetime | None, Query(alias="to", description="Window end (ISO 8601).")
        ] = None,
    ) -> FlywheelReport:
        for name, value in (("from", start), ("to", end)):
            if value is not None and value.tzinfo is None:
                raise ProblemError(
                    422,
                    INVALID_WINDOW,
                    "Invalid window",
                    f"`{name}` needs a time zone, e.g. 2026-11-01T00:00:00Z",
                )
        if start and end and start >= end:
            raise ProblemError(422, INVALID_WINDOW, "Invalid window", "`from` must be before `to`")
        async with connect() as conn:
            report = await flywheel_report(conn, start, end)
            # issue #14's figure, apart from the report's own (services/gateway/directory/)
            report.cohort_retention = await cohort_retention(conn)
            return report

    return routes
