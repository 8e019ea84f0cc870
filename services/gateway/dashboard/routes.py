"""The dashboard's routes under /dashboard: login and logout, the pages, the CSV download and
the static assets shipped with the package. Every page wants a session (else a redirect to
the login form); the pages read through `directory.Directory`, as the API does."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from importlib import resources
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from services.gateway.dashboard import pages
from services.gateway.dashboard.session import COOKIE, PATH, Session, Sessions
from services.gateway.directory.reader import Directory
from services.gateway.directory.routes import INVALID_PARAMETER, csv_response, parse_or_400
from services.gateway.http.auth import PUBLIC, ApiKeys
from services.gateway.http.problems import ProblemError
from shared.settings import Settings

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC_TYPES = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
DEFAULT_WEEKS = 12


class LoginRequired(Exception):
    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def _safe_next(value: str | None) -> str:
    """Only a path of this dashboard: no open redirect."""
    if value and value.startswith(PATH) and not value.startswith("//") and "\\" not in value:
        return value
    return PATH


def _date(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ProblemError(
            400,
            INVALID_PARAMETER,
            "Invalid query parameter",
            f"`{name}`: {value!r} is not a date (YYYY-MM-DD)",
        ) from exc


def _at(d: date | None) -> datetime | None:
    return None if d is None else datetime(d.year, d.month, d.day, tzinfo=UTC)


def router(directory: Directory, settings: Settings) -> APIRouter:
    sessions = Sessions(settings)
    routes = APIRouter(include_in_schema=False)

    def session_of(request: Request) -> Session:
        keys: ApiKeys = getattr(request.app.state, "api_keys", ApiKeys())
        found = sessions.verify(request.cookies.get(COOKIE), keys)
        if found is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(target)
        return found

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"

    async def window(request: Request) -> tuple[date | None, date | None]:
        start = _date(request.query_params.get("from"), "from")
        end = _date(request.query_params.get("to"), "to")
        if start is None and end is None and "from" not in request.query_params:
            now = await directory.now()
            if now is not None:  # the last weeks of event time, up to the newest activity
                end = now.date() + timedelta(days=1)
                start = end - timedelta(weeks=DEFAULT_WEEKS)
        if start and end and start >= end:
            raise ProblemError(
                400,
                INVALID_PARAMETER,
                "Invalid query parameter",
                "`from`: must be before `to`",
            )
        return start, end

    @routes.get("/dashboard/login", openapi_extra=PUBLIC)
    async def login_form(request: Request, next: str | None = None) -> Response:
        return _html(pages.login_page(None, _safe_next(next)))

    @routes.post("/dashboard/login", openapi_extra=PUBLIC)
    async def login(request: Request) -> Response:
        # a urlencoded form of two fields, read by hand (no multipart parser needed)
        form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0]
        next = (form.get("next") or [PATH])[0]
        if not same_origin(request):
            return _html(pages.login_page("Sign in from this dashboard's own page.", PATH), 403)
        keys: ApiKeys = getattr(request.app.state, "api_keys", ApiKeys())
        found = keys.identify(key.strip()) if key else None
        if found is None or "read" not in found.scopes:
            why = "That key is not valid." if found is None else "That key lacks the read scope."
            return _html(pages.login_page(why, _safe_next(next)), 401)
        response = RedirectResponse(_safe_next(next), status_code=303, headers=HEADERS)
        response.set_cookie(
            COOKIE,
            sessions.issue(found.name),
            max_age=int(sessions.ttl_s),
            path=PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @routes.post("/dashboard/logout", openapi_extra=PUBLIC)
    async def logout(request: Request) -> Response:
        response = RedirectResponse(f"{PATH}/login", status_code=303, headers=HEADERS)
        response.delete_cookie(
            COOKIE,
            path=PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @routes.get("/dashboard/static/{name}", openapi_extra=PUBLIC)
    async def static(name: str) -> Response:
        if name not in STATIC_TYPES:
            return Response(status_code=404)
        data = resources.files("services.gateway.dashboard").joinpath("static", name).read_bytes()
        return Response(
            data,
            media_type=STATIC_TYPES[name],
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    @routes.get("/dashboard", openapi_extra=PUBLIC)
    async def overview(request: Request) -> Response:
        session_of(request)
        start, end = await window(request)
        report = await directory.flywheel(_at(start), _at(end))
        series = await directory.series(_at(start), _at(end))
        ops = await directory.operations()
        return _html(pages.overview_page(report, series, ops, start, end))

    def directory_params(request: Request) -> dict[str, list[str]]:
        """The form's fields as the API's parameters: empty fields dropped, dates as UTC."""
        params: dict[str, list[str]] = {}
        for name, value in request.query_params.multi_items():
            if not value.strip():
                continue
            dated = name in ("active_after", "active_before", "joined_after", "joined_before")
            if dated and len(value) == 10:  # <input type=date>: a day, read as UTC midnight
                value = f"{value}T00:00:00+00:00"
            params.setdefault(name, []).append(value)
        return params

    @routes.get("/dashboard/members", openapi_extra=PUBLIC)
    async def members(request: Request) -> Response:
        session_of(request)
        query = parse_or_400(directory_params(request))
        page = await directory.page(query)
        form = {k: v for k, v in request.query_params.items()}
        return _html(pages.members_page(page, form))

    @routes.get("/dashboard/members.csv", openapi_extra=PUBLIC)
    async def members_csv(request: Request) -> Response:
        session_of(request)
        params = directory_params(request)
        params.pop("cursor", None)
        params.pop("limit", None)
        return await csv_response(directory, parse_or_400(params, paged=False))

    @routes.get("/dashboard/members/{member_id:path}", openapi_extra=PUBLIC)
    async def profile(request: Request, member_id: str) -> Response:
        session_of(request)
        found = await directory.profile(member_id)
        if found is None:
            body = pages.layout(
                "Member not found",
                f"<p>No member {pages.e(member_id)} in the directory. "
                '<a href="/dashboard/members">Back to the members</a></p>',
                current="/dashboard/members",
            )
            return _html(body, 404)
        return _html(pages.profile_page(found))

    @routes.get("/dashboard/leaderboards", openapi_extra=PUBLIC)
    async def leaderboards(request: Request) -> Response:
        session_of(request)
        start, end = await window(request)
        board = await directory.leaderboards(_at(start), _at(end))
        return _html(pages.leaderboards_page(board, start, end))

    return routes


async def login_redirect(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return RedirectResponse(
        f"{PATH}/login?next={quote(exc.next_url, safe='')}", status_code=303, headers=HEADERS
    )
