"""`flywheel status`: per service, consumer lag, outbox backlog, dead letters and the last
applied event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from ops.dlq import read_all
from ops.target import Target, Unreachable, connect, group_lag, out, run, service_spec
from services.registry import SERVICE_NAMES


@dataclass
class DbStatus:
    outbox_rows: int = 0
    outbox_oldest_s: float = 0.0
    watermark: datetime | None = None
    last_applied: datetime | None = None


async def db_status(target: Target, service: str) -> DbStatus:
    import asyncpg

    conn = await connect(target, service)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n,"
            " COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS age FROM outbox"
        )
        watermark = await conn.fetchval("SELECT max(event_time) FROM watermark")
        last = await conn.fetchval("SELECT max(applied_at) FROM inbox")
        return DbStatus(int(row["n"]), float(row["age"]), watermark, last)
    except asyncpg.UndefinedTableError:
        raise Unreachable(f"{service}'s database has no flywheel tables (never started?)") from None
    finally:
        await conn.close()


def status(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Lag per partition.")] = False,
) -> None:
    """Per service: consumer lag, outbox backlog, dead letters, last applied event."""

    async def work(target: Target) -> None:
        table = Table(
            title=f"flywheel at {target.kafka}" + (f" ({target.prefix})" if target.prefix else "")
        )
        for column in (
            "service",
            "ready",
            "lag",
            "outbox",
            "oldest",
            "dead letters",
            "watermark",
            "last applied",
        ):
            table.add_column(
                column, justify="right" if column in ("lag", "outbox", "dead letters") else "left"
            )
        dead = await dead_letters_by_service(target)
        details: list[str] = []
        for name in SERVICE_NAMES:
            spec = service_spec(name)
            lag = await group_lag(target, spec)
            if verbose:
                details += [f"{name:<11} {tp:<40} {n}" for tp, n in lag.items()]
            try:
                db = await db_status(target, name)
                outbox, oldest = str(db.outbox_rows), f"{db.outbox_oldest_s:.0f} s"
                watermark = _when(db.watermark)
                last = _when(db.last_applied)
            except Unreachable as exc:
                outbox = oldest = watermark = last = "?"
                details.append(f"{name}: {exc}")
            table.add_row(
                name,
                await _ready(target, name),
                str(sum(lag.values())),
                outbox,
                oldest,
                str(dead.get(name, 0)),
                watermark,
                last,
            )
        out.print(table)
        for line in details:
            out.print(line)

    run(work)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


async def _ready(target: Target, service: str) -> str:
    url = target.health_urls.get(service)
    if not url:
        return "-"
    import httpx

    try:
        async with httpx.AsyncClient(timeout=min(target.timeout_s, 3)) as client:
            response = await client.get(f"{url}/readyz")
        if response.status_code == 200:
            return "ready"
        problems = response.json().get("problems", {})
        return "no: " + "; ".join(f"{k}" for k in problems)
    except (httpx.HTTPError, ValueError):
        return "down"


async def dead_letters_by_service(target: Target) -> dict[str, int]:
    from shared.topics import CONSUMED_TOPICS

    counts: dict[str, int] = {}
    for topic in CONSUMED_TOPICS:
        for letter in await read_all(target, target.topic(topic.dlq)):
            service = letter.header("dlq_service") or "?"
            counts[service] = counts.get(service, 0) + 1
    return counts
