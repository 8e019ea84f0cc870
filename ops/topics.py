"""`flywheel topics create | describe`: the registry's topics on the broker."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ops.target import Target, admin_client, bounded, consumer_client, out, run


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
        created = await bounded(
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


def topics_describe() -> None:
    """Each registry topic: partitions, replicas, records held, retention."""
    from shared.topics import ALL_TOPICS, FOREVER

    async def work(target: Target) -> None:
        admin = await admin_client(target)
        consumer = await consumer_client(target)
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
