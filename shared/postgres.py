"""PostgreSQL plumbing: a pool that waits for the server, and ordered SQL migrations."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
"""A plain connection or one lent by a pool: the stores accept either."""

PLUMBING_MIGRATIONS = Path(__file__).with_name("migrations")
_SHARED = Path(__file__).resolve().parent

# Faults that go away by themselves: the server restarts, a connection drops, a lock times out.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions._base.InternalClientError,  # a connection broken mid-operation
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.LockNotAvailableError,
)


def redact(url: str) -> str:
    """The URL without its password (in the user info or a `password=` query parameter), for
    logs and error messages."""
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


_QUERY_PASSWORD = re.compile(r"([?&](?:password|sslpassword)=)[^&#]*", re.IGNORECASE)


SERVER_SETTINGS: dict[str, str] = {"plan_cache_mode": "force_custom_plan"}
"""Set on every connection a service opens. asyncpg prepares each statement once per
connection, and after five executions PostgreSQL may plan it once for all parameters (a
generic plan) and keep that plan for as long as the connection lives. Such a plan knows
neither the length of a `= ANY($1)` array nor how big the table has grown since: one planned
while a service's table was still a few pages (the start of a catch-up or a replay) can be a
sequential scan, and stays one when the table holds millions of rows. Caught in the bench:
engagement's select of a batch's questions by primary key ran as `Seq Scan ... rows=10` for a
whole catch-up, 40-70 ms a call instead of ~1 ms, in one run of three (docs/PERFORMANCE.md).
Planning each execution with its parameters cost nothing the bench could tell apart
(engagement's PostgreSQL CPU in a catch-up: 6.6-7.6 s with it, 6.6-6.8 s without)."""


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 5, wait_s: float = 60.0
) -> asyncpg.Pool:
    """Connect, retrying while the server is starting; a clear error if it never answers.
    Every connection has `SERVER_SETTINGS`."""
    deadline = asyncio.get_running_loop().time() + wait_s
    delay = 0.2
    while True:
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                command_timeout=60,
                server_settings=SERVER_SETTINGS,
            )
            assert pool is not None
            return pool
        except TRANSIENT_DB_ERRORS as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(
                    f"PostgreSQL at {redact(url)} did not answer within {wait_s:.0f} s: {exc}"
                ) from exc
            log.warning("waiting for PostgreSQL at %s: %s", redact(url), exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def migration_name(directory: Path, path: Path) -> str:
    """What `schema_migrations` records a file as: `<service>/<file>` for a service's own
    (services/<service>/migrations), `shared/<file>` for everything under shared/ (the plumbing,
    the lifecycle schema). Databases hold these names, so moving a directory inside shared/
    must not change them (a file would be applied twice)."""
    if directory.resolve().is_relative_to(_SHARED):
        return f"shared/{path.name}"
    return f"{directory.parent.name}/{path.name}"


async def migrate(pool: asyncpg.Pool, directories: Sequence[Path]) -> list[str]:
    """Apply every `*.sql` file not applied yet, in name order, each in its own transaction.

    An advisory lock serialises replicas that start together.
    """
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock(7277001)")
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
            for directory in directories:
                for path in sorted(directory.glob("*.sql")):
                    name = migration_name(directory, path)
                    if name in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(path.read_text())
                        await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
                    applied_now.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(7277001)")
    if applied_now:
        log.info("applied migrations: %s", ", ".join(applied_now))
    return applied_now
