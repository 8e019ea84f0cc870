"""`flywheel replay SERVICE --from-beginning | --from TIME`: move a stopped service's consumer
group back and, from the beginning, truncate the tables its spec names (`replay_tables`).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ops.target import (
    Target,
    Unreachable,
    admin_partitions,
    connect,
    consumer_client,
    err,
    group_lag,
    group_members,
    out,
    run,
    service_spec,
)
from services.registry import SERVICE_NAMES
from shared.kafka import SESSION_TIMEOUT_MS
from shared.service import ServiceSpec


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def replay(
    service: Annotated[str, typer.Argument(help=f"One of {', '.join(SERVICE_NAMES)}.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Rebuild the state from the whole log.")
    ] = False,
    from_time: Annotated[
        str | None,
        typer.Option("--from", help="Re-read from this broker time (ISO 8601); state is kept."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    watch: Annotated[
        bool, typer.Option("--watch/--no-watch", help="Then show the catch-up until lag is 0.")
    ] = True,
) -> None:
    """Move a stopped service's consumer group back and (from the beginning) wipe its state.

    --from-beginning: offsets to the start of every input topic, and in one transaction the
    tables of state the service derives from them, its inbox and event-time clock are
    truncated; the service rebuilds them from the log, emitting the same events with the same
    ids (consumers drop them). Its outbox (unsent events), configuration and identities stay.
    --from TIME: offsets to the first record at or after TIME; state and inbox are kept, so
    only what was never applied (e.g. records dead-lettered by a bug since fixed) is applied.
    """
    if from_beginning == (from_time is not None):
        raise typer.BadParameter("give exactly one of --from-beginning and --from TIME")
    spec = service_spec(service)
    since = _parse_time(from_time) if from_time else None

    async def work(target: Target) -> None:
        group = target.prefix + spec.consumer_group
        # Exactly the spec's tables, listed alphabetically as the confirmation always has.
        tables = sorted(spec.replay_tables) if from_beginning else []
        absent: list[str] = []
        if from_beginning:  # an unreachable PostgreSQL is reported at once, before any wait
            conn = await connect(target, service)
            try:
                absent = await absent_tables(conn, tables)
            finally:
                await conn.close()
            tables = [t for t in tables if t not in absent]
        members = await members_after_stop(target, group)
        if members:
            raise Unreachable(
                f"{service} is running ({len(members)} consumer(s) in group {group}: "
                f"{', '.join(sorted(set(members)))}); stop every replica first"
            )
        what = (
            f"reset {group} to the beginning and TRUNCATE {', '.join(tables)}"
            if from_beginning
            else f"reset {group} to {since.isoformat() if since else ''} (state kept)"
        )
        if absent:
            what += f" (not created yet by this database's migrations: {', '.join(absent)})"
        if not yes and not typer.confirm(f"{what}?", default=False):
            raise typer.Exit(1)
        moved = await reset_and_truncate(target, spec, since, tables)
        out.print(f"{service}: {what}: {moved} record(s) to read again")
        if watch:
            out.print(f"start {service} now; watching its catch-up (Ctrl-C stops watching)")
            await watch_catch_up(target, spec, moved)

    run(work)


STOPPED_MEMBER_EXPIRY_S = SESSION_TIMEOUT_MS / 1000 + 5
"""How long a replica stopped a moment ago may still be listed in its group: a static member
(FLYWHEEL_INSTANCE_ID) does not leave when it stops, the coordinator drops it once its session
times out."""


async def members_after_stop(target: Target, group: str, poll_s: float = 0.5) -> list[str]:
    """The group's members, once those of replicas just stopped have expired: the ones still
    there after `STOPPED_MEMBER_EXPIRY_S` are alive."""
    members = await group_members(target, group)
    if members:
        err.print(
            f"{group} has {len(members)} member(s); waiting up to {STOPPED_MEMBER_EXPIRY_S:.0f} s "
            "for those of stopped replicas to expire (static members stay until their session "
            "times out)"
        )
    deadline = time.monotonic() + STOPPED_MEMBER_EXPIRY_S
    while members and time.monotonic() < deadline:
        await asyncio.sleep(poll_s)
        members = await group_members(target, group)
    return members


async def absent_tables(conn: Any, tables: list[str]) -> list[str]:
    """The tables of the list this database does not have: a service deployed before the
    migration that creates one has nothing in it to truncate."""
    rows = await conn.fetch(
        "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(quote_ident(t)) IS NULL", tables
    )
    return [r["t"] for r in rows]


async def reset_and_truncate(
    target: Target, spec: ServiceSpec, since: datetime | None, tables: list[str]
) -> int:
    """Truncate inside a transaction, reset the offsets, then commit: if the reset fails
    nothing changed; if the commit fails after it, the old state and inbox are still there
    and the re-read is dropped as duplicates. Returns the records to read again."""
    from aiokafka.structs import OffsetAndMetadata

    group = target.prefix + spec.consumer_group
    partitions = await admin_partitions(target, [target.topic(t.name) for t in spec.consumes])
    conn = await connect(target, spec.name) if tables else None
    consumer = await consumer_client(target, group)
    try:
        transaction = conn.transaction() if conn is not None else None
        if conn is not None and transaction is not None:
            await transaction.start()
            quoted = ", ".join(f'"{t}"' for t in tables)
            await conn.execute(f"SET LOCAL lock_timeout = '{int(target.timeout_s * 1000)}ms'")
            await conn.execute(f"TRUNCATE {quoted}")
        try:
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            if since is None:
                offsets = await consumer.beginning_offsets(partitions)
            else:
                found = await consumer.offsets_for_times(
                    {tp: int(since.timestamp() * 1000) for tp in partitions}
                )
                offsets = {tp: (f.offset if f is not None else ends[tp]) for tp, f in found.items()}
            await consumer.commit({tp: OffsetAndMetadata(offsets[tp], "") for tp in partitions})
        except BaseException:
            if transaction is not None:
                await transaction.rollback()
            raise
        if transaction is not None:
            await transaction.commit()
        return sum(max(0, ends[tp] - offsets[tp]) for tp in partitions)
    finally:
        await consumer.stop()
        if conn is not None:
            await conn.close()


async def watch_catch_up(
    target: Target,
    spec: ServiceSpec,
    total: int,
    *,
    poll_s: float = 1.0,
    max_s: float | None = None,
) -> int:
    """A progress bar of the group's lag going to 0, with an estimate; returns the last lag."""
    started = time.monotonic()
    lag = total
    with Progress(
        TextColumn(f"{spec.name}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} records"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=out,
    ) as progress:
        task = progress.add_task("replay", total=max(total, 1))
        while True:
            lag = sum((await group_lag(target, spec)).values())
            progress.update(task, completed=max(0, total - lag))
            if lag == 0 or (max_s is not None and time.monotonic() - started > max_s):
                return lag
            await asyncio.sleep(poll_s)
