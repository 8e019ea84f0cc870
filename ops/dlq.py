"""`flywheel dlq list | show | redrive`: dead letters, read and put back on their original
topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from ops.target import Target, Unreachable, admin_partitions, bounded, consumer_client, out, run

DLQ_PREFIX = "dlq_"


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
    consumer = await consumer_client(target)
    try:
        partitions = [tp for tp in await admin_partitions(target, [topic])]
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


def dlq_topic(name: str) -> str:
    from shared.topics import CONSUMED_TOPICS

    logical = name if name.endswith(".dlq") else f"{name}.dlq"
    known = {t.dlq for t in CONSUMED_TOPICS}
    if logical not in known:
        raise typer.BadParameter(
            f"no dead-letter topic {logical!r}; one of {', '.join(sorted(known))}"
        )
    return logical


def dlq_list(
    topic: Annotated[
        str | None, typer.Argument(help="A consumed topic or its .dlq (default: all).")
    ] = None,
    service: Annotated[str | None, typer.Option(help="Only this service's.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (the newest).")] = 50,
) -> None:
    """Dead letters: where they came from, who failed them, why."""
    from shared.topics import CONSUMED_TOPICS

    names = [dlq_topic(topic)] if topic else [t.dlq for t in CONSUMED_TOPICS]

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


def dlq_show(
    topic: Annotated[str, typer.Argument(help="A consumed topic or its .dlq.")],
    partition: Annotated[int, typer.Argument()],
    offset: Annotated[int, typer.Argument()],
) -> None:
    """One dead letter in full: every header, the value (as JSON when it is JSON)."""
    name = dlq_topic(topic)

    async def work(target: Target) -> None:
        letter = await find_letter(target, name, partition, offset)
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


async def find_letter(target: Target, name: str, partition: int, offset: int) -> DeadLetter:
    for letter in await read_all(target, target.topic(name)):
        if letter.partition == partition and letter.offset == offset:
            return letter
    raise Unreachable(f"no dead letter at {name}[{partition}]@{offset}")


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
    name = dlq_topic(topic)
    if all_ == (partition is not None and offset is not None):
        raise typer.BadParameter("give --partition and --offset, or --all")

    async def work(target: Target) -> None:
        if all_:
            letters = await read_all(target, target.topic(name))
        else:
            assert partition is not None and offset is not None
            letters = [await find_letter(target, name, partition, offset)]
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
    await bounded(target, f"Kafka at {target.kafka}", producer.start())
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
        await bounded(target, f"Kafka at {target.kafka}", asyncio.gather(*futures))
        return len(futures)
    finally:
        await producer.stop()
