"""The dashboard's queries at size: `python -m bench.dashboard [--members 100000,300000]`.

Rows are generated straight into a fresh gateway read-model database (migrations applied;
directory_members, member_stages, journey_transitions, flywheel facts, weekly stage flows)
with generate_series, the flywheel's precomputed series are rebuilt from scratch over them
(the cohort counters follow by their trigger), then each dashboard query runs 5 times and its
median is reported. Not a test: figures, printed and returned (docs/DASHBOARD.md and
docs/PERFORMANCE.md quote them).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from services.gateway.bootstrap import SPEC
from services.gateway.directory import query as dq
from services.gateway.directory import store
from services.gateway.flywheel import series
from services.gateway.flywheel.store import flywheel_report
from shared import lifecycle
from shared.postgres import PLUMBING_MIGRATIONS, Connection, migrate

GENERATE = """
INSERT INTO directory_members (member_id, anonymous, first_seen_at, last_active_at,
    activities, sources, awareness_stage, engagement_stage, advocacy_stage, score)
SELECT 'm-' || i, i % 10 = 0,
       t0 + (i % 365) * interval '1 day',
       t0 + (i % 365) * interval '1 day' + ((i * 7919) % 120) * interval '1 day',
       1 + i % 50,
       CASE i % 3 WHEN 0 THEN ARRAY['discourse'] WHEN 1 THEN ARRAY['github', 'slack']
            ELSE ARRAY['web'] END,
       CASE WHEN i % 10 = 0 THEN 'visitor' WHEN i % 7 = 0 THEN 'customer' ELSE 'member' END,
       (ARRAY['engaged', 'at_risk', 'dormant', 'reactivated', NULL])[1 + i % 5],
       CASE WHEN i % 50 = 0 THEN 'champion' WHEN i % 9 = 0 THEN 'advocate' END,
       ((i * 104729) % 10000) / 100.0
FROM generate_series(1, $1::bigint) AS i, (SELECT '2025-01-06'::timestamptz AS t0) c
"""
HANDLES = """
INSERT INTO member_handles (member_id, handle, seen_at)
SELECT member_id, 'user' || substr(member_id, 3), last_active_at FROM directory_members
"""
STAGES = """
INSERT INTO member_stages (member_id, dimension, stage, since, score, event_id)
SELECT member_id, d.dimension, d.stage, first_seen_at, score, member_id || d.dimension
FROM directory_members,
     LATERAL (VALUES ('awareness', awareness_stage), ('engagement', engagement_stage),
                     ('advocacy', advocacy_stage)) AS d(dimension, stage)
WHERE d.stage IS NOT NULL
"""
TRANSITIONS = """
INSERT INTO journey_transitions (event_id, member_id, dimension, from_stage, to_stage, reason,
                                 score, occurred_at)
SELECT event_id, member_id, dimension, NULL, stage, 'bench', score, since FROM member_stages
"""
WEEKS = """
INSERT INTO directory_stage_weeks (week, dimension, stage, n)
SELECT (date_trunc('week', occurred_at AT TIME ZONE 'UTC'))::date, dimension, to_stage, count(*)
FROM journey_transitions GROUP BY 1, 2, 3
"""
QUESTIONS = """
INSERT INTO flywheel_questions (activity_id, member_id, thread_id, occurred_at)
SELECT 'q-' || member_id, member_id, 't-' || member_id, first_seen_at
FROM directory_members WHERE activities % 4 = 0
"""
HELP = """
INSERT INTO flywheel_peer_help (event_id, helper_member_id, helped_member_id, thread_id,
                                accepted, occurred_at)
SELECT 'h-' || member_id, 'm-1', member_id, thread_id, true, occurred_at + interval '1 day'
FROM flywheel_questions WHERE length(member_id) % 2 = 0
"""


async def _median(fn: Callable[[], Awaitable[Any]], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


class _Timed:
    """A connection that notes how long each statement of flywheel_report takes."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.times: dict[str, float] = {}

    def _wrap(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def call(sql: str, *args: Any) -> Any:
            started = time.perf_counter()
            try:
                return await getattr(self.conn, name)(sql, *args)
            finally:
                key = " ".join(sql.split())[:70]
                self.times[key] = self.times.get(key, 0) + (time.perf_counter() - started) * 1000

        return call

    def __getattr__(self, name: str) -> Any:
        return self._wrap(name)


async def _flywheel_endpoint(conn: Connection, start: Any, end: Any) -> None:
    """What GET /v1/flywheel (and the dashboard's overview) runs: the report and the cohorts."""
    report = await flywheel_report(conn, start, end)
    report.cohort_retention = await store.cohort_retention(conn)


async def _export(pool: asyncpg.Pool) -> dict[str, Any]:
    """The whole directory streamed as CSV (as GET /v1/members.csv does, into a sink): rows,
    seconds, and how much the process's peak memory grew meanwhile."""
    sink = io.StringIO()
    writer = csv.writer(sink, lineterminator="\r\n")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    rows = size = 0
    async for chunk in store.export_rows(pool, dq.parse({}, paged=False)):
        writer.writerows(dq.csv_values(r) for r in chunk)
        rows += len(chunk)
        size += sink.tell()
        sink.seek(0)
        sink.truncate()
    return {
        "export_rows": rows,
        "export_s": round(time.perf_counter() - started, 1),
        "export_mb": round(size / 1e6, 1),
        "export_peak_rss_growth_mb": round(
            (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024, 1
        ),
    }


async def measure(url: str, members: int) -> dict[str, Any]:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    await migrate(pool, [PLUMBING_MIGRATIONS, SPEC.migrations, lifecycle.MIGRATIONS])
    async with pool.acquire() as conn:
        started = time.perf_counter()
        for sql in (GENERATE, HANDLES, STAGES, TRANSITIONS, WEEKS, QUESTIONS, HELP):
            await (conn.execute(sql, members) if "$1" in sql else conn.execute(sql))
        # the flywheel's series from scratch, as a rebuild would (the projection keeps them
        # batch by batch; the generated rows bypass it)
        series_started = time.perf_counter()
        await series.refresh(conn, None)
        await series.refresh_answers(conn, everyone=True)
        series_s = time.perf_counter() - series_started
        # as autovacuum leaves a settled database: statistics, and visibility maps for the
        # index-only scans (without it a figure depended on whether autovacuum had reached
        # the table before the queries ran)
        await conn.execute("VACUUM ANALYZE")
        generated_s = time.perf_counter() - started
        now = await store.read_model_now(conn)
        assert now is not None
        start, end = now.replace(year=now.year - 1), now
        timed = _Timed(conn)
        await flywheel_report(timed, start, end)  # type: ignore[arg-type]
        breakdown = {k: round(v, 1) for k, v in sorted(timed.times.items(), key=lambda kv: -kv[1])}
        figures: dict[str, Any] = {
            "load_average_1m": os.getloadavg()[0],
            "generate_s": round(generated_s, 1),
            "series_rebuild_s": round(series_s, 1),
            "flywheel_report_ms": await _median(lambda: flywheel_report(conn, start, end)),
            "flywheel_endpoint_ms": await _median(lambda: _flywheel_endpoint(conn, start, end)),
            "cohort_retention_ms": await _median(lambda: store.cohort_retention(conn)),
            "series_ms": await _median(lambda: store.series(conn, start, end)),
            "health_ms": await _median(lambda: store.health(conn)),
            "directory_page_ms": await _median(
                lambda: store.member_page(conn, dq.parse({"limit": ["50"]}))
            ),
            "directory_filtered_page_ms": await _median(
                lambda: store.member_page(
                    conn, dq.parse({"engagement": ["at_risk"], "customer": ["true"]})
                )
            ),
            "directory_cohort_core_ms": await _median(
                lambda: store.member_page(conn, dq.parse({"cohort": ["core"], "sort": ["-score"]}))
            ),
            "directory_search_ms": await _median(
                lambda: store.member_page(conn, dq.parse({"q": ["user1234"]}))
            ),
            "leaderboards_ms": await _median(lambda: store.leaderboards(conn, start, end)),
            "profile_ms": await _median(lambda: store.member_profile(conn, "m-4242")),
            **await _export(pool),
            "flywheel_report_breakdown_ms": breakdown,
            "load_average_1m_after": os.getloadavg()[0],
        }
    await pool.close()
    return figures


async def on_server(admin_url: str, sizes: list[int]) -> dict[str, dict[str, Any]]:
    """The `dashboard` phase of `python -m bench`: one fresh database per size."""
    results: dict[str, dict[str, Any]] = {}
    for size in sizes:
        conn = await asyncpg.connect(admin_url)
        name = f"bench_dashboard_{size}"
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        head = admin_url.partition("?")[0].rsplit("/", 1)[0]
        results[str(size)] = await measure(f"{head}/{name}", size)
        print(size, results[str(size)], flush=True)
        conn = await asyncpg.connect(admin_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.close()
    return results


async def run(sizes: list[int]) -> dict[str, dict[str, Any]]:
    from devstack.stack import DevStack

    state = Path(tempfile.mkdtemp(prefix="flywheel-bench-dashboard-"))
    state.chmod(0o755)  # noqa: ASYNC240 (before the stack starts)
    stack = DevStack(state)
    endpoints = stack.start()
    try:
        return await on_server(endpoints.postgres_admin_url, sizes)
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    p.add_argument("--members", default="100000", help="sizes, comma-separated")
    args = p.parse_args(argv)
    asyncio.run(run([int(s) for s in args.members.split(",")]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
