"""The directory's pure parts: parameters, cursors, CSV cells, sessions and charts (no
database; the SQL runs in test_directory.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from services.gateway.dashboard import charts
from services.gateway.dashboard.session import Sessions
from services.gateway.directory import query as q
from services.gateway.http.auth import ApiKeys
from shared.settings import Settings


def test_parameters_are_parsed_and_bad_ones_named() -> None:
    parsed = q.parse(
        {
            "engagement": ["at_risk,dormant"],
            "customer": ["true"],
            "score_min": ["2.5"],
            "active_after": ["2026-11-01T00:00:00Z"],
            "sort": ["-score"],
            "limit": ["10"],
        }
    )
    assert parsed.stages == {"engagement": ("at_risk", "dormant")}
    assert parsed.customer is True and parsed.score_min == 2.5 and parsed.limit == 10
    assert parsed.active_after == datetime(2026, 11, 1, tzinfo=UTC)
    assert parsed.column == "score" and parsed.descending
    for params, name in (
        ({"stage": ["x"]}, "stage"),
        ({"limit": ["0"]}, "limit"),
        ({"limit": ["many"]}, "limit"),
        ({"cohort": ["vip"]}, "cohort"),
        ({"sort": ["name"]}, "sort"),
        ({"joined_before": ["2026-11-01T00:00:00"]}, "joined_before"),
        ({"score_max": ["nan"]}, "score_max"),
        ({"customer": ["maybe"]}, "customer"),
        ({"q": ["a", "b"]}, "q"),
    ):
        with pytest.raises(q.BadParameter) as caught:
            q.parse(params)
        assert caught.value.name == name, params
    with pytest.raises(q.BadParameter) as caught:
        q.parse({"limit": ["10"]}, paged=False)
    assert caught.value.name == "limit"


def test_a_cursor_round_trips_and_belongs_to_its_sort() -> None:
    at = datetime(2026, 11, 2, 10, tzinfo=UTC)
    text = q.Cursor("-last_active", at, "m-1").encode()
    assert "=" not in text and "/" not in text and "+" not in text  # base64url, unpadded
    assert q.Cursor.decode(text, "-last_active") == q.Cursor("-last_active", at, "m-1")
    for bad, sort in ((text, "joined"), ("e30", "score"), ("%%%", "score"), ("", "score")):
        with pytest.raises(q.BadParameter) as caught:
            q.Cursor.decode(bad, sort)
        assert caught.value.name == "cursor"


def test_the_keyset_condition_follows_the_sort() -> None:
    clock = q.CohortClock(datetime(2026, 11, 2, tzinfo=UTC), 10.0)
    after = q.Cursor("-score", 5.0, "m-9")
    sql, args = q.build_sql(q.parse({"sort": ["-score"]}), clock, after=after, limit=51)
    assert "(score, member_id) < (" in sql and "ORDER BY score DESC, member_id DESC" in sql
    assert args[-3:] == [5.0, "m-9", 51]
    sql, _ = q.build_sql(q.parse({"sort": ["joined"], "q": ["50%_x"]}), clock)
    assert "ORDER BY first_seen_at ASC, member_id ASC" in sql


def test_csv_cells_do_not_run_as_formulas() -> None:
    row = {
        "member_id": "m-1",
        "handle": '=HYPERLINK("http://evil")',
        "awareness_stage": "customer",
        "engagement_stage": None,
        "advocacy_stage": "champion",
        "cohort": None,
        "score": 3.14159,
        "sources": ["github", "slack"],
        "first_seen_at": datetime(2026, 1, 1, tzinfo=UTC),
        "last_active_at": datetime(2026, 2, 1, tzinfo=UTC),
        "activities": 4,
    }
    cells = q.csv_values(row)
    assert cells[1].startswith("'=")
    assert cells[6:10] == ["3.1416", "true", "true", "github;slack"]
    assert len(cells) == len(q.CSV_COLUMNS)


def test_sessions_are_signed_expire_and_end_with_their_key() -> None:
    keys = ApiKeys.parse("team=team-key-0123456789:read;etl=etl-key-0123456789:ingest")
    sessions = Sessions(Settings(dashboard_session_secret=SecretStr("s" * 40)))
    cookie = sessions.issue("team", now=1000.0)
    assert sessions.verify(cookie, keys, now=1001.0) is not None
    assert sessions.verify(cookie, keys, now=1000.0 + sessions.ttl_s + 1) is None
    assert sessions.verify(cookie[:-2] + "AA", keys, now=1001.0) is None  # forged
    assert sessions.verify(sessions.issue("etl", now=1000.0), keys, now=1001.0) is None  # no read
    assert sessions.verify(cookie, ApiKeys.parse(""), now=1001.0) is None  # key removed
    with pytest.raises(ValueError):
        Sessions(Settings(dashboard_session_secret=SecretStr("short")))


def test_charts_have_axes_units_and_escape_their_text() -> None:
    svg = charts.line_chart(
        title="<b>retention</b>",
        x_labels=["1 wk", "2 wk"],
        lines=[charts.Line("2026-06", [90.0, None])],
        x_title="weeks",
        y_title="still active (%)",
        unit="%",
        y_max=100,
    )
    assert "&lt;b&gt;" in svg and "<b>" not in svg
    assert "100%" in svg and "still active (%)" in svg and svg.count("<circle") == 1
    bars = charts.bar_chart(title="funnel", bars=[("visitor", 0), ("member", 0)], unit="members")
    assert bars.count("<rect") == 2 and "members" in bars
    assert charts.nice_max(0) == 1 and charts.nice_max(7) == 10 and charts.nice_max(130) == 200
