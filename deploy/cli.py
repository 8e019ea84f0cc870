"""`flywheel` / `python -m deploy.cli`: the operator's tool for a running deployment.

    status                         lag, outbox, dead letters and last applied event per service
    topics create | describe       the registry's topics on the broker
    replay SERVICE --from-beginning | --from TIME
    dlq list | show | redrive      dead letters: read them, put them back
    member show ID                 a member's journey, from the gateway's API

Where things are: `<state-dir>/endpoints.json` of a dev stack (`python -m deploy.stack up`),
overridden by the environment, which is what a deployment uses: `KAFKA_BOOTSTRAP_SERVERS`,
`FLYWHEEL_TOPIC_PREFIX`, `FLYWHEEL_<SERVICE>_DATABASE_URL` (e.g.
`FLYWHEEL_AWARENESS_DATABASE_URL`), `FLYWHEEL_GATEWAY_URL` and `FLYWHEEL_API_KEY`. Anything
unreachable is one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

T = TypeVar("T")

SERVICES = ("awareness", "engagement", "advocacy", "gateway")
DLQ_PREFIX = "dlq_"
KEEP_ON_REPLAY_PREFIXES = ("webhook_",)
"""Tables a replay leaves alone: configuration and the webhook worker's delivery log (its own
consumer group and inbox), not state derived from the service's input topics."""

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="flywheel",
    help="Operate a flywheel deployment: status, topics, replays, dead letters, journeys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
topics_app = typer.Typer(help="The registry's topics on the broker.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: list, show, redrive.", no_args_is_help=True)
member_app = typer.Typer(help="Members' journeys, from the gateway.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
app.add_typer(member_app, name="member")


class Unreachable(Exception):
    """Something the command needs did not answer: one line for the operator."""


# ---- where things are ---------------------------------------------------------------------


@dataclass
class Target:
    kafka: str
    prefix: str
    database_urls: dict[str, str] = field(default_factory=dict)
    gateway_url: str | None = None
    health_urls: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    timeout_s: float = 10.0

    def topic(self, name: str) -> str:
        return self.prefix + name

    def database(self, service: str) -> str:
        url = self.database_urls.get(service)
        if not url:
            variable = f"FLYWHEEL_{service.upper()}_DATABASE_URL"
            raise Unreachable(f"no database URL for {service}: set {variable} or run a dev stack")
        return url


def _target(state_dir: Path | None, timeout_s: float) -> Target:
    from deploy.stack import ENDPOINTS_FILE, Endpoints, default_state_dir

    endpoints: Endpoints | None = None
    path = (state_dir or default_state_dir()) / ENDPOINTS_FILE
    if path.exists():
        try:
            endpoints = Endpoints.from_json(path.read_text())
        except (ValueError, TypeError) as exc:
            raise Unreachable(f"{path} is not a stack's endpoints file: {exc}") from None
    env = os.environ
    kafka = (
        env.get("KAFKA_BOOTSTRAP_SERVERS")
        or env.get("FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS")
        or (endpoints.kafka_bootstrap if endpoints else "127.0.0.1:9092")
    )
    urls = dict(endpoints.database_urls) if endpoints else {}
    for service in SERVICES:
        if value := env.get(f"FLYWHEEL_{service.upper()}_DATABASE_URL"):
            urls[service] = value
    return Target(
        kafka=kafka,
        prefix=env.get("FLYWHEEL_TOPIC_PREFIX", ""),
        database_urls=urls,
        gateway_url=env.get("FLYWHEEL_GATEWAY_URL")
        or (endpoints.gateway_url if endpoints else None),
        health_urls=dict(endpoints.health_urls) if endpoints else {},
        api_key=env.get("FLYWHEEL_API_KEY"),
        timeout_s=timeout_s,
    )


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    group: str
    consumes: tuple[str, ...]


def service_info(name: str) -> ServiceInfo:
    """Group and input topics, from the service's own spec (the code that runs it)."""
    if name == "gateway":
        from services.gateway.bootstrap import SPEC
    elif name == "awareness":
        from services.awareness.__main__ import SPEC
    elif name == "engagement":
        from services.engagement.__main__ import SPEC
    elif name == "advocacy":
        from services.advocacy.__main__ import SPEC
    else:
        raise typer.BadParameter(f"unknown service {name!r}; one of {', '.join(SERVICES)}")
    return ServiceInfo(SPEC.name, SPEC.consumer_group, tuple(t.name for t in SPEC.consumes))


State = Annotated[
    Path | None,
    typer.Option("--state-dir", envvar="FLYWHEEL_STATE_DIR", help="A dev stack's state dir."),
]
Timeout = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for anything to answer.")
]
_options: dict[str, Any] = {"state_dir": None, "timeout": 10.0}


@app.callback()
def _main(state_dir: State = None, timeout: Timeout = 10.0) -> None:
    _options.update(state_dir=state_dir, timeout=timeout)


def run(work: Callable[[Target], Coroutine[Any, Any, T]]) -> T:
    """Run one command; what is unreachable becomes one line and exit code 1."""
    from aiokafka.errors import KafkaError

    # The clients' own reports (aiokafka logs every failed connect) would bury the one line.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        target = _target(_options["state_dir"], _options["timeout"])
        return asyncio.run(work(target))
    except Unreachable as exc:
        _fail(str(exc))
    except TimeoutError:
        _fail(f"timed out after {_options['timeout']:g} s (is everything up? --timeout to wait)")
    except KafkaError as exc:
        _fail(f"Kafka: {type(exc).__name__}: {exc}")
    except (OSError, ConnectionError) as exc:
        _fail(f"unreachable: {exc}")
    except Exception as exc:
        import asyncpg

        if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
            _fail(f"PostgreSQL: {type(exc).__name__}: {exc}")
        raise


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(1)


async def _bounded(target: Target, what: str, work: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(target.timeout_s):
            return await work
    except TimeoutError:
        raise Unreachable(f"{what} did not answer within {target.timeout_s:g} s") from None


# ---- Kafka helpers ------------------------------------------------------------------------


async def _admin(target: Target) -> Any:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=target.kafka,
        client_id="flywheel-cli",
        request_timeout_ms=int(target.timeout_s * 1000),
    )
    try:
        await _bounded(target, f"Kafka at {target.kafka}", admin.start())
    except Exception as exc:
        await admin.close()
        if isinstance(exc, Unreachable):
            raise
        raise Unreachable(f"Kafka at {target.kafka} is unreachable: {exc}") from None
    return admin


async def _consumer(target: Target, group: str | None = None) -> Any:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        bootstrap_servers=target.kafka,
        group_id=group,
        enable_auto_commit=False,
        client_id="flywheel-cli",
        request_timeout_ms=int(target.timeout_s * 1000),
        isolation_level="read_committed",
    )
    try:
        await _bounded(target, f"Kafka at {target.kafka}", consumer.start())
    except Exception as exc:
        await consumer.stop()
        if isinstance(exc, Unreachable):
            raise
        raise Unreachable(f"Kafka at {target.kafka} is unreachable: {exc}") from None
    return consumer


async def _partitions(admin: Any, topics: Sequence[str]) -> list[Any]:
    from aiokafka import TopicPartition

    described = await admin.describe_topics(list(topics))
    missing = [d["topic"] for d in described if d["error_code"] != 0]
    if missing:
        raise Unreachable(f"topic(s) missing: {', '.join(missing)} (flywheel topics create)")
    return [
        TopicPartition(d["topic"], p["partition"])
        for d in described
        for p in sorted(d["partitions"], key=lambda p: int(p["partition"]))
    ]


async def group_lag(target: Target, info: ServiceInfo) -> dict[str, int]:
    from shared.kafka import consumer_lag

    topics = [target.topic(t) for t in info.consumes]
    try:
        return await _bounded(
            target,
            f"Kafka at {target.kafka}",
            consumer_lag(target.kafka, target.prefix + info.group, topics),
        )
    except Unreachable:
        raise
    except Exception as exc:
        raise Unreachable(f"Kafka at {target.kafka}: {type(exc).__name__}: {exc}") from None


async def group_members(target: Target, group: str) -> list[str]:
    """Client ids of the group's live members (a running service is one)."""
    admin = await _admin(target)
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    members: list[str] = []
    for response in responses:
        for described in response.groups:
            members.extend(str(m[1]) for m in described[5])  # (member_id, client_id, ...)
    return members


@dataclass
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return ""

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers if not k.startswith(DLQ_PREFIX)]


async def read_all(target: Target, topic: str, limit: int = 50_000) -> list[DeadLetter]:
    """Every record of a topic from its start to its current end (at most `limit`)."""
    consumer = await _consumer(target)
    try:
        partitions = [tp for tp in await _admin_partitions(target, [topic])]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        records: list[DeadLetter] = []
        pending = {tp for tp in partitions if ends[tp] > starts[tp]}
        for tp in partitions:
            consumer.seek(tp, starts[tp])
        deadline = time.monotonic() + target.timeout_s * 3
        while pending and len(records) < limit and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, part in batch.items():
                for r in part:
                    if r.offset < ends[tp]:
                        records.append(
                            DeadLetter(
                                r.topic,
                                r.partition,
                                r.offset,
                                r.timestamp,
                                r.key,
                                r.value,
                                list(r.headers or ()),
                            )
                        )
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return sorted(records, key=lambda d: (d.timestamp, d.partition, d.offset))[:limit]
    finally:
        await consumer.stop()


async def _admin_partitions(target: Target, topics: Sequence[str]) -> list[Any]:
    admin = await _admin(target)
    try:
        return await _partitions(admin, topics)
    finally:
        await admin.close()


# ---- PostgreSQL helpers ---------------------------------------------------------------------


async def _connect(target: Target, service: str) -> Any:
    import asyncpg

    from shared.postgres import redact

    url = target.database(service)
    try:
        return await _bounded(target, f"PostgreSQL of {service}", asyncpg.connect(url))
    except Unreachable:
        raise
    except Exception as exc:
        raise Unreachable(
            f"PostgreSQL of {service} at {redact(url)} is unreachable: {type(exc).__name__}: {exc}"
        ) from None


@dataclass
class DbStatus:
    outbox_rows: int = 0
    outbox_oldest_s: float = 0.0
    watermark: datetime | None = None
    last_applied: datetime | None = None


async def db_status(target: Target, service: str) -> DbStatus:
    import asyncpg

    conn = await _connect(target, service)
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


# ---- status -------------------------------------------------------------------------------


@app.command()
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
        dead = await _dead_letters_by_service(target)
        details: list[str] = []
        for name in SERVICES:
            info = service_info(name)
            lag = await group_lag(target, info)
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


async def _dead_letters_by_service(target: Target) -> dict[str, int]:
    from shared.topics import CONSUMED_TOPICS

    counts: dict[str, int] = {}
    for topic in CONSUMED_TOPICS:
        for letter in await read_all(target, target.topic(topic.dlq)):
            service = letter.header("dlq_service") or "?"
            counts[service] = counts.get(service, 0) + 1
    return counts


# ---- topics -------------------------------------------------------------------------------


@topics_app.command("create")
def topics_create(
    partitions: Annotated[
        int | None, typer.Option(help="Default: FLYWHEEL_TOPIC_PARTITIONS.")
    ] = None,
    replication_factor: Annotated[
        int | None, typer.Option(help="Default: FLYWHEEL_TOPIC_REPLICATION_FACTOR.")
    ] = None,
) -> None:
    """Create every registry topic that does not exist yet (an existing one is left alone)."""
    from shared.kafka import ensure_topics
    from shared.settings import Settings

    async def work(target: Target) -> None:
        settings = Settings()
        created = await _bounded(
            target,
            f"Kafka at {target.kafka}",
            ensure_topics(
                target.kafka,
                partitions=partitions or settings.topic_partitions,
                replication_factor=replication_factor or settings.topic_replication_factor,
                prefix=target.prefix,
            ),
        )
        out.print(f"created: {', '.join(created)}" if created else "all topics exist")

    run(work)


@topics_app.command("describe")
def topics_describe() -> None:
    """Each registry topic: partitions, replicas, records held, retention."""
    from shared.topics import ALL_TOPICS, FOREVER

    async def work(target: Target) -> None:
        admin = await _admin(target)
        consumer = await _consumer(target)
        try:
            described = {
                d["topic"]: d
                for d in await admin.describe_topics([target.topic(t.name) for t in ALL_TOPICS])
            }
            table = Table()
            for column in ("topic", "partitions", "replicas", "records", "retention"):
                table.add_column(column)
            for topic in ALL_TOPICS:
                d = described.get(target.topic(topic.name))
                if d is None or d["error_code"] != 0:
                    table.add_row(topic.name, "[red]missing[/red]", "", "", "")
                    continue
                from aiokafka import TopicPartition

                tps = [TopicPartition(d["topic"], p["partition"]) for p in d["partitions"]]
                ends = await consumer.end_offsets(tps)
                starts = await consumer.beginning_offsets(tps)
                replicas = {len(p["replicas"]) for p in d["partitions"]}
                retention = (
                    "forever"
                    if topic.retention_ms == FOREVER
                    else f"{topic.retention_ms // 86_400_000} d"
                )
                table.add_row(
                    topic.name,
                    str(len(tps)),
                    ",".join(map(str, sorted(replicas))),
                    str(sum(ends[tp] - starts[tp] for tp in tps)),
                    retention,
                )
            out.print(table)
        finally:
            await consumer.stop()
            await admin.close()

    run(work)


# ---- replay -------------------------------------------------------------------------------


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command()
def replay(
    service: Annotated[str, typer.Argument(help=f"One of {', '.join(SERVICES)}.")],
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
    service's state tables, inbox, outbox and watermark are truncated; the service rebuilds
    everything from the log, emitting the same events with the same ids (consumers drop them).
    --from TIME: offsets to the first record at or after TIME; state and inbox are kept, so
    only what was never applied (e.g. records dead-lettered by a bug since fixed) is applied.
    """
    if from_beginning == (from_time is not None):
        raise typer.BadParameter("give exactly one of --from-beginning and --from TIME")
    info = service_info(service)
    since = _parse_time(from_time) if from_time else None

    async def work(target: Target) -> None:
        group = target.prefix + info.group
        members = await group_members(target, group)
        if members:
            raise Unreachable(
                f"{service} is running ({len(members)} consumer(s) in group {group}: "
                f"{', '.join(sorted(set(members)))}); stop every replica first"
            )
        tables = await _replay_tables(target, service) if from_beginning else []
        what = (
            f"reset {group} to the beginning and TRUNCATE {', '.join(tables)}"
            if from_beginning
            else f"reset {group} to {since.isoformat() if since else ''} (state kept)"
        )
        if not yes and not typer.confirm(f"{what}?", default=False):
            raise typer.Exit(1)
        moved = await reset_and_truncate(target, info, since, tables)
        out.print(f"{service}: {what}: {moved} record(s) to read again")
        if watch:
            out.print(f"start {service} now; watching its catch-up (Ctrl-C stops watching)")
            await watch_catch_up(target, info, moved)

    run(work)


async def _replay_tables(target: Target, service: str) -> list[str]:
    conn = await _connect(target, service)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
    finally:
        await conn.close()
    return [
        r["tablename"]
        for r in rows
        if r["tablename"] != "schema_migrations"
        and not r["tablename"].startswith(KEEP_ON_REPLAY_PREFIXES)
    ]


async def reset_and_truncate(
    target: Target, info: ServiceInfo, since: datetime | None, tables: list[str]
) -> int:
    """Truncate inside a transaction, reset the offsets, then commit: if the reset fails
    nothing changed; if the commit fails after it, the old state and inbox are still there
    and the re-read is dropped as duplicates. Returns the records to read again."""
    from aiokafka.structs import OffsetAndMetadata

    group = target.prefix + info.group
    partitions = await _admin_partitions(target, [target.topic(t) for t in info.consumes])
    conn = await _connect(target, info.name) if tables else None
    consumer = await _consumer(target, group)
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
    info: ServiceInfo,
    total: int,
    *,
    poll_s: float = 1.0,
    max_s: float | None = None,
) -> int:
    """A progress bar of the group's lag going to 0, with an estimate; returns the last lag."""
    started = time.monotonic()
    lag = total
    with Progress(
        TextColumn(f"{info.name}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} records"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=out,
    ) as progress:
        task = progress.add_task("replay", total=max(total, 1))
        while True:
            lag = sum((await group_lag(target, info)).values())
            progress.update(task, completed=max(0, total - lag))
            if lag == 0 or (max_s is not None and time.monotonic() - started > max_s):
                return lag
            await asyncio.sleep(poll_s)


# ---- dead letters -------------------------------------------------------------------------


def _dlq_topic(name: str) -> str:
    from shared.topics import CONSUMED_TOPICS

    logical = name if name.endswith(".dlq") else f"{name}.dlq"
    known = {t.dlq for t in CONSUMED_TOPICS}
    if logical not in known:
        raise typer.BadParameter(
            f"no dead-letter topic {logical!r}; one of {', '.join(sorted(known))}"
        )
    return logical


@dlq_app.command("list")
def dlq_list(
    topic: Annotated[
        str | None, typer.Argument(help="A consumed topic or its .dlq (default: all).")
    ] = None,
    service: Annotated[str | None, typer.Option(help="Only this service's.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (the newest).")] = 50,
) -> None:
    """Dead letters: where they came from, who failed them, why."""
    from shared.topics import CONSUMED_TOPICS

    names = [_dlq_topic(topic)] if topic else [t.dlq for t in CONSUMED_TOPICS]

    async def work(target: Target) -> None:
        table = Table()
        for column in ("dlq", "partition", "offset", "time", "key", "service", "from", "reason"):
            table.add_column(column, overflow="fold")
        letters: list[DeadLetter] = []
        for name in names:
            letters += await read_all(target, target.topic(name))
        letters = [d for d in letters if service is None or d.header("dlq_service") == service]
        for d in letters[-limit:]:
            table.add_row(
                d.topic.removeprefix(target.prefix),
                str(d.partition),
                str(d.offset),
                datetime.fromtimestamp(d.timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S"),
                (d.key or b"").decode("utf-8", "replace"),
                d.header("dlq_service"),
                f"{d.header('dlq_topic').removeprefix(target.prefix)}[{d.header('dlq_partition')}]"
                f"@{d.header('dlq_offset')}",
                d.header("dlq_reason")[:200],
            )
        out.print(table)
        out.print(f"{len(letters)} dead letter(s)")

    run(work)


@dlq_app.command("show")
def dlq_show(
    topic: Annotated[str, typer.Argument(help="A consumed topic or its .dlq.")],
    partition: Annotated[int, typer.Argument()],
    offset: Annotated[int, typer.Argument()],
) -> None:
    """One dead letter in full: every header, the value (as JSON when it is JSON)."""
    name = _dlq_topic(topic)

    async def work(target: Target) -> None:
        letter = await _find_letter(target, name, partition, offset)
        key = (letter.key or b"").decode("utf-8", "replace")
        out.print(f"[bold]{name}[{partition}]@{offset}[/bold]  key={key}")
        for key, value in letter.headers:
            out.print(f"  {key}: {value.decode('utf-8', 'replace')}")
        raw = letter.value or b""
        try:
            out.print_json(raw.decode())
        except (UnicodeDecodeError, ValueError):
            out.print(repr(raw))

    run(work)


async def _find_letter(target: Target, name: str, partition: int, offset: int) -> DeadLetter:
    for letter in await read_all(target, target.topic(name)):
        if letter.partition == partition and letter.offset == offset:
            return letter
    raise Unreachable(f"no dead letter at {name}[{partition}]@{offset}")


@dlq_app.command("redrive")
def dlq_redrive(
    topic: Annotated[str, typer.Argument(help="A consumed topic or its .dlq.")],
    partition: Annotated[int | None, typer.Option(help="With --offset: just this one.")] = None,
    offset: Annotated[int | None, typer.Option(help="With --partition: just this one.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter of the topic.")] = False,
    service: Annotated[str | None, typer.Option(help="Only the ones this service failed.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Republish dead letters to their original topic: original key, bytes and headers, no
    dlq_* headers. Safe to repeat: an event applied meanwhile is dropped by the inbox."""
    name = _dlq_topic(topic)
    if all_ == (partition is not None and offset is not None):
        raise typer.BadParameter("give --partition and --offset, or --all")

    async def work(target: Target) -> None:
        if all_:
            letters = await read_all(target, target.topic(name))
        else:
            assert partition is not None and offset is not None
            letters = [await _find_letter(target, name, partition, offset)]
        letters = [d for d in letters if service is None or d.header("dlq_service") == service]
        if not letters:
            out.print("nothing to redrive")
            return
        if not yes and not typer.confirm(f"republish {len(letters)} record(s)?", default=False):
            raise typer.Exit(1)
        sent = await redrive(target, letters)
        out.print(f"redriven {sent} record(s) to {name.removesuffix('.dlq')}")

    run(work)


async def redrive(target: Target, letters: Sequence[DeadLetter]) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=target.kafka,
        client_id="flywheel-cli-redrive",
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=int(target.timeout_s * 1000),
    )
    await _bounded(target, f"Kafka at {target.kafka}", producer.start())
    try:
        futures = []
        for letter in letters:
            original = letter.header("dlq_topic") or target.topic(
                letter.topic.removeprefix(target.prefix).removesuffix(".dlq")
            )
            futures.append(
                await producer.send(
                    original, value=letter.value, key=letter.key, headers=letter.original_headers
                )
            )
        await _bounded(target, f"Kafka at {target.kafka}", asyncio.gather(*futures))
        return len(futures)
    finally:
        await producer.stop()


# ---- members ------------------------------------------------------------------------------


@member_app.command("show")
def member_show(
    member_id: Annotated[str, typer.Argument(help="The member id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON as is.")] = False,
) -> None:
    """A member's current stages and every transition with its reason."""
    import httpx

    async def work(target: Target) -> None:
        if not target.gateway_url:
            raise Unreachable("no gateway URL: set FLYWHEEL_GATEWAY_URL or run a dev stack")
        headers = {"X-API-Key": target.api_key} if target.api_key else {}
        try:
            async with httpx.AsyncClient(
                base_url=target.gateway_url, timeout=target.timeout_s, headers=headers
            ) as client:
                response = await client.get(f"/v1/members/{member_id}/journey")
        except httpx.HTTPError as exc:
            raise Unreachable(
                f"the gateway at {target.gateway_url} is unreachable: {exc}"
            ) from None
        if response.status_code != 200:
            try:
                detail = response.json().get("detail") or response.text
            except ValueError:
                detail = response.text
            raise Unreachable(f"gateway answered {response.status_code}: {detail}")
        journey = response.json()
        if as_json:
            out.print_json(json.dumps(journey))
            return
        out.print(f"[bold]{journey['member_id']}[/bold]")
        for dimension, stage in journey.get("stages", {}).items():
            score = f" (score {stage['score']:g})" if stage.get("score") is not None else ""
            out.print(f"  {dimension:<11} {stage['stage']}{score} since {stage['since']}")
        table = Table()
        for column in ("when", "dimension", "from", "to", "reason"):
            table.add_column(column, overflow="fold")
        for t in journey.get("timeline", []):
            table.add_row(
                t["occurred_at"], t["dimension"], t["from_stage"] or "-", t["to_stage"], t["reason"]
            )
        out.print(table)

    run(work)


def main() -> None:
    """The `flywheel` console script."""
    app()


if __name__ == "__main__":
    sys.exit(app())
