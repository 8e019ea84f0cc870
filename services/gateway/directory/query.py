"""The directory's query, pure: which parameters exist, what they mean, how a page's cursor is
written and read, and the SQL's WHERE and ORDER BY they make. No I/O; the routes parse, the
store runs.

Pagination is keyset on (sort key, member_id): a page starts strictly after the last row of
the one before, so rows that move or arrive while someone pages (a new transition, a new
member) never shift the pages already read into duplicates or gaps. The cursor is opaque to
clients: base64url of {"sort", "key", "id"}; a cursor made under another sort is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

MAX_LIMIT: Final = 500
DEFAULT_LIMIT: Final = 50
NEWCOMER_DAYS: Final = 30.0
"""Engagement's default `newcomer_days`: a member first seen less than this before now."""
CORE_TOP_FRACTION: Final = 0.1
"""Engagement's default `core_top_fraction` of engaged/reactivated members by score."""

STAGES: Final[dict[str, tuple[str, ...]]] = {
    "awareness": ("visitor", "member", "customer"),
    "engagement": ("engaged", "at_risk", "dormant", "reactivated"),
    "advocacy": ("advocate", "champion"),
}
ACTIVE_STAGES: Final = ("engaged", "reactivated")
COHORTS: Final = ("newcomer", "core", "at_risk", "regular")
SORTS: Final[dict[str, str]] = {
    "score": "score",
    "last_active": "last_active_at",
    "joined": "first_seen_at",
}
"""Public sort name -> column; `-name` sorts descending."""
DEFAULT_SORT: Final = "-last_active"

PARAMETERS: Final = frozenset(
    {
        "awareness",
        "engagement",
        "advocacy",
        "cohort",
        "score_min",
        "score_max",
        "source",
        "active_after",
        "active_before",
        "joined_after",
        "joined_before",
        "customer",
        "advocate",
        "q",
        "sort",
        "limit",
        "cursor",
        "format",
    }
)


class BadParameter(ValueError):
    """A query parameter that cannot be used; `name` is the parameter."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


@dataclass(frozen=True)
class Cursor:
    sort: str
    key: Any  # float or ISO timestamp, as the sort's column
    member_id: str

    def encode(self) -> str:
        key = self.key.isoformat() if isinstance(self.key, datetime) else self.key
        raw = json.dumps(
            {"sort": self.sort, "key": key, "id": self.member_id}, separators=(",", ":")
        )
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, sort: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            data = json.loads(raw)
            cursor_sort, key, member_id = data["sort"], data["key"], data["id"]
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise BadParameter("cursor", "not a cursor this API handed out") from exc
        if not isinstance(member_id, str) or cursor_sort not in _all_sorts():
            raise BadParameter("cursor", "not a cursor this API handed out")
        if cursor_sort != sort:
            raise BadParameter(
                "cursor",
                f"the cursor belongs to sort={cursor_sort}, not sort={sort}: start again "
                "without a cursor when you change the sort",
            )
        column = SORTS[sort.lstrip("-")]
        try:
            value: Any = float(key) if column == "score" else datetime.fromisoformat(key)
        except (TypeError, ValueError) as exc:
            raise BadParameter("cursor", "not a cursor this API handed out") from exc
        if isinstance(value, float) and not math.isfinite(value):
            raise BadParameter("cursor", "not a cursor this API handed out")
        return cls(sort, value, member_id)


def _all_sorts() -> set[str]:
    return set(SORTS) | {f"-{s}" for s in SORTS}


@dataclass(frozen=True)
class Query:
    """A parsed directory query: filters, sort, page."""

    stages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cohort: str | None = None
    score_min: float | None = None
    score_max: float | None = None
    source: str | None = None
    active_after: datetime | None = None
    active_before: datetime | None = None
    joined_after: datetime | None = None
    joined_before: datetime | None = None
    customer: bool | None = None
    advocate: bool | None = None
    search: str | None = None
    sort: str = DEFAULT_SORT
    limit: int = DEFAULT_LIMIT
    cursor: Cursor | None = None

    @property
    def column(self) -> str:
        return SORTS[self.sort.lstrip("-")]

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    def without_page(self) -> Query:
        return Query(**{**self.__dict__, "cursor": None})


def _one(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadParameter(name, "give it once")
    return values[0].strip() or None


def _time(params: Mapping[str, list[str]], name: str) -> datetime | None:
    text = _one(params, name)
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadParameter(name, f"{text!r} is not an ISO 8601 date or time") from exc
    if value.tzinfo is None:
        raise BadParameter(name, "needs a time zone, e.g. 2026-11-01T00:00:00Z")
    return value


def _number(params: Mapping[str, list[str]], name: str) -> float | None:
    text = _one(params, name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise BadParameter(name, f"{text!r} is not a number") from exc
    if not math.isfinite(value):
        raise BadParameter(name, "must be a finite number")
    return value


def _flag(params: Mapping[str, list[str]], name: str) -> bool | None:
    text = _one(params, name)
    if text is None:
        return None
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise BadParameter(name, "must be true or false")


def parse(params: Mapping[str, list[str]], *, paged: bool = True) -> Query:
    """The query from its parameters (each name -> its values), or BadParameter naming the
    first wrong one. Unknown parameters are refused, so a misspelt filter never silently
    widens an export."""
    unknown = sorted(set(params) - PARAMETERS)
    if unknown:
        raise BadParameter(unknown[0], f"unknown parameter; known: {', '.join(sorted(PARAMETERS))}")
    stages: dict[str, tuple[str, ...]] = {}
    for dimension, known in STAGES.items():
        text = _one(params, dimension)
        if text is None:
            continue
        wanted = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
        bad = [s for s in wanted if s not in known]
        if bad or not wanted:
            raise BadParameter(
                dimension, f"unknown stage {', '.join(bad)!s}; one or more of {', '.join(known)}"
            )
        stages[dimension] = wanted
    cohort = _one(params, "cohort")
    if cohort is not None and cohort not in COHORTS:
        raise BadParameter("cohort", f"one of {', '.join(COHORTS)}")
    sort = _one(params, "sort") or DEFAULT_SORT
    if sort not in _all_sorts():
        raise BadParameter(
            "sort", f"one of {', '.join(sorted(_all_sorts()))} (a leading - sorts descending)"
        )
    limit = DEFAULT_LIMIT
    text = _one(params, "limit")
    if text is not None:
        if not paged:
            raise BadParameter("limit", "an export has every matching member: no limit")
        try:
            limit = int(text)
        except ValueError as exc:
            raise BadParameter("limit", f"{text!r} is not a whole number") from exc
        if not 1 <= limit <= MAX_LIMIT:
            raise BadParameter("limit", f"between 1 and {MAX_LIMIT}")
    cursor_text = _one(params, "cursor")
    if cursor_text is not None and not paged:
        raise BadParameter("cursor", "an export has every matching member: no cursor")
    search = _one(params, "q")
    if search is not None and len(search) > 200:
        raise BadParameter("q", "at most 200 characters")
    source = _one(params, "source")
    if source is not None and len(source) > 40:
        raise BadParameter("source", "at most 40 characters")
    query = Query(
        stages=stages,
        cohort=cohort,
        score_min=_number(params, "score_min"),
        score_max=_number(params, "score_max"),
        source=source,
        active_after=_time(params, "active_after"),
        active_before=_time(params, "active_before"),
        joined_after=_time(params, "joined_after"),
        joined_before=_time(params, "joined_before"),
        customer=_flag(params, "customer"),
        advocate=_flag(params, "advocate"),
        search=search,
        sort=sort,
        limit=limit,
        cursor=Cursor.decode(cursor_text, sort) if cursor_text else None,
    )
    if (
        query.score_min is not None
        and query.score_max is not None
        and query.score_min > query.score_max
    ):
        raise BadParameter("score_min", "must not exceed score_max")
    return query


@dataclass(frozen=True)
class CohortClock:
    """What a cohort is judged against: the read model's now (its newest event time) and the
    lowest score of the core (the top CORE_TOP_FRACTION of engaged/reactivated members)."""

    now: datetime
    core_min_score: float | None  # None: nobody is engaged, so nobody is core

    @property
    def newcomer_since(self) -> datetime:
        return self.now - timedelta(days=NEWCOMER_DAYS)


def cohort_sql(p: _Params, clock: CohortClock) -> str:
    """A CASE expression naming each row's cohort: engagement's rule (newcomer, core,
    at_risk, regular; first match wins), judged at the read model's now."""
    since = p.add(clock.newcomer_since)
    core = p.add(clock.core_min_score)
    active = p.add(list(ACTIVE_STAGES))
    return (
        f"CASE WHEN NOT anonymous AND first_seen_at > {since} THEN 'newcomer'"
        f" WHEN engagement_stage = ANY({active}::text[]) AND {core}::float8 IS NOT NULL"
        f" AND score >= {core}::float8 THEN 'core'"
        " WHEN engagement_stage = 'at_risk' THEN 'at_risk'"
        f" WHEN engagement_stage = ANY({active}::text[]) THEN 'regular' END"
    )


class _Params:
    """Positional SQL parameters, numbered as they are added."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _like_prefix(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def build_sql(
    query: Query,
    clock: CohortClock,
    *,
    after: Cursor | None = None,
    limit: int | None = None,
    member_id: str | None = None,
) -> tuple[str, list[Any]]:
    """SELECT of the query's rows, in its order, from `after` on, at most `limit` (or the one
    row of `member_id`)."""
    p = _Params()
    cohort = cohort_sql(p, clock)
    where: list[str] = []
    if member_id is not None:
        where.append(f"member_id = {p.add(member_id)}")
    for dimension, stages in query.stages.items():
        where.append(f"{dimension}_stage = ANY({p.add(list(stages))}::text[])")
    if query.cohort is not None:
        where.append(f"({cohort}) = {p.add(query.cohort)}")
    if query.score_min is not None:
        where.append(f"score >= {p.add(query.score_min)}")
    if query.score_max is not None:
        where.append(f"score <= {p.add(query.score_max)}")
    if query.source is not None:
        where.append(f"sources @> ARRAY[{p.add(query.source)}::text]")
    for name, column, op in (
        ("active_after", "last_active_at", ">="),
        ("active_before", "last_active_at", "<"),
        ("joined_after", "first_seen_at", ">="),
        ("joined_before", "first_seen_at", "<"),
    ):
        value = getattr(query, name)
        if value is not None:
            where.append(f"{column} {op} {p.add(value)}")
    if query.customer is not None:
        where.append(
            "awareness_stage = 'customer'"
            if query.customer
            else "awareness_stage IS DISTINCT FROM 'customer'"
        )
    if query.advocate is not None:
        where.append(
            "advocacy_stage IN ('advocate', 'champion')"
            if query.advocate
            else "advocacy_stage IS NULL"
        )
    if query.search is not None:
        prefix = p.add(_like_prefix(query.search))
        where.append(f"(lower(handle) LIKE {prefix} OR lower(member_id) LIKE {prefix})")
    column, direction = query.column, "DESC" if query.descending else "ASC"
    if after is not None:
        op = "<" if query.descending else ">"
        where.append(f"({column}, member_id) {op} ({p.add(after.key)}, {p.add(after.member_id)})")
    sql = (
        "SELECT member_id, handle, anonymous, first_seen_at, last_active_at, activities, "
        "sources, awareness_stage, engagement_stage, advocacy_stage, score, "
        f"{cohort} AS cohort FROM directory_members LEFT JOIN member_handles USING (member_id)"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY {column} {direction}, member_id {direction}"
        + (f" LIMIT {p.add(limit)}" if limit is not None else "")
    )
    return sql, p.values


def cursor_after(query: Query, row: Any) -> Cursor:
    return Cursor(query.sort, row[query.column], row["member_id"])


CSV_COLUMNS: Final = (
    "member_id",
    "handle",
    "awareness_stage",
    "engagement_stage",
    "advocacy_stage",
    "cohort",
    "score",
    "customer",
    "advocate",
    "sources",
    "joined_at",
    "last_active_at",
    "activities",
)


def _cell(value: Any) -> str:
    """One CSV cell; text a spreadsheet would run as a formula (=, +, -, @, tab, CR) is
    prefixed with an apostrophe (OWASP's CSV injection advice)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return repr(round(value, 4))
    text = str(value)
    if text and text[0] in "=+-@\t\r":
        text = "'" + text
    return text


def csv_values(row: Any) -> list[str]:
    return [
        _cell(v)
        for v in (
            row["member_id"],
            row["handle"],
            row["awareness_stage"],
            row["engagement_stage"],
            row["advocacy_stage"],
            row["cohort"],
            float(row["score"]),
            row["awareness_stage"] == "customer",
            row["advocacy_stage"] in ("advocate", "champion"),
            ";".join(row["sources"]),
            row["first_seen_at"],
            row["last_active_at"],
            row["activities"],
        )
    ]


Direction = Literal["asc", "desc"]
