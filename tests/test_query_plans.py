"""Every connection plans a statement with its parameters (`shared.postgres.SERVER_SETTINGS`).

Found in the bench: engagement's select of a batch's questions by primary key, prepared by
asyncpg while the table was a few pages, ran as a sequential scan for the rest of a catch-up.
The test repeats that sequence on real PostgreSQL and reads the plan each execution used from
`auto_explain`, whose LOG lines the server sends to this client (`client_min_messages`)."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.postgres import create_pool
from tests.conftest import Namespace

SELECT = "SELECT k, v FROM questions WHERE k = ANY($1::text[])"


async def _plan_after_growth(conn: Any) -> str:
    """The plan the select uses once the table grew, after it ran while the table was small
    (what PostgreSQL may cache as the generic plan of a prepared statement)."""
    plans: list[str] = []

    def on_log(_: Any, message: Any) -> None:
        if "Query Text: SELECT k, v FROM questions" in message.message:
            plans.append(message.message)

    await conn.execute("DROP TABLE IF EXISTS questions")
    await conn.execute("CREATE TABLE questions (k text PRIMARY KEY, v text)")
    await conn.execute(
        "INSERT INTO questions SELECT 'thread:' || i, repeat('x', 250)"
        " FROM generate_series(1, 300) i"
    )
    await conn.execute("ANALYZE questions")  # as autovacuum does early in a new database
    small = [f"thread:{i}" for i in range(1, 301, 2)]
    for _ in range(8):  # a custom plan five times, then PostgreSQL weighs a generic one
        await conn.fetch(SELECT, small)
    await conn.execute(
        "INSERT INTO questions SELECT 'thread:' || i, repeat('x', 250)"
        " FROM generate_series(301, 60000) i"
    )
    await conn.execute("LOAD 'auto_explain'")
    await conn.execute("SET auto_explain.log_min_duration = 0")
    await conn.execute("SET client_min_messages = log")
    conn.add_log_listener(on_log)
    rows = await conn.fetch(SELECT, [f"thread:{i}" for i in range(59000, 59100)])
    conn.remove_log_listener(on_log)
    assert len(rows) == 100
    assert plans, "auto_explain sent no plan"
    return plans[-1]


async def test_a_statement_prepared_on_a_small_table_uses_the_index_once_it_grew(
    namespace: Namespace,
) -> None:
    url = await namespace.create_database("plans")
    pool = await create_pool(url, max_size=1)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
            plan = await _plan_after_growth(conn)
        assert "Seq Scan on questions" not in plan, plan
        assert "Index" in plan, plan

        # Without the setting, the same sequence keeps the plan made for the small table.
        plain = await asyncpg.connect(url)
        try:
            cached = await _plan_after_growth(plain)
        finally:
            await plain.close()
        assert "Seq Scan on questions" in cached, cached
    finally:
        await pool.close()
