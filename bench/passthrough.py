"""The ceiling: consume, produce, commit, with nothing in between (no parsing, no database).

    python -m bench.passthrough --bootstrap HOST:PORT --source TOPIC --sink TOPIC --group G

Same broker, same client library, same producer guarantees (acks=all, idempotent) and batch
size as a stage service; what a service achieves beyond this is the price of its work. Runs as
its own process (uvloop, as the services do) until stopped; the bench watches its lag.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.kafka import client_security, producer_options
from shared.settings import Settings


async def run(bootstrap: str, source: str, sink: str, group: str, max_records: int) -> None:
    settings = Settings(kafka_bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **client_security(settings),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, **producer_options(settings), **client_security(settings)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=max_records)
            futures = [
                await producer.send(sink, r.value, key=r.key, headers=list(r.headers))
                for records in batch.values()
                for r in records
            ]
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--max-records", type=int, default=Settings().consumer_max_records)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(run(args.bootstrap, args.source, args.sink, args.group, args.max_records))


if __name__ == "__main__":
    main()
