"""The gateway's read model alone, on the records an import really produced (issue 16).

`python -m bench.readmodel --rows 100000` starts a stack, imports a generated Stack Exchange
dump of that many rows with every service up (bench/backfill.py), captures every record of the
read model's topics, then applies them in-process through the gateway's `BatchProcessor` and
handler (decode, inbox, projections, one transaction per batch, as the service does) into a
fresh database, batches of `--batch` per topic partition in the order the consumer would see
them. It reports records per second and where the time goes: the wall time of every SQL
statement the handler ran, summed per statement (the first words of its text).

`--records FILE` reuses a capture (`--save FILE` writes one), against a PostgreSQL of its own
(or `--admin-url`), so a change of the write side can be measured against the same records,
`--runs` times, without importing again.
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import re
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from services.gateway.bootstrap import SPEC
from shared.consumer import BatchProcessor
from shared.lifecycle.store import record_bootstrap
from shared.postgres import PLUMBING_MIGRATIONS, migrate
from shared.settings import Settings


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp: int | None


def batches(records: list[Rec], size: int) -> Iterator[list[Rec]]:
    """Per partition in offset order, round robin over partitions, `size` at most each (what
    a consumer fetching every partition hands over, roughly)."""
    by_tp: dict[tuple[str, int], list[Rec]] = defaultdict(list)
    for r in records:
        by_tp[(r.topic, r.partition)].append(r)
    for rs in by_tp.values():
        rs.sort(key=lambda r: r.offset)
    cursors = dict.fromkeys(by_tp, 0)
    while cursors:
        batch: list[Rec] = []
        for tp in list(cursors):
            i = cursors[tp]
            take = by_tp[tp][i : i + max(1, size // max(1, len(cursors)))]
            batch += take
            cursors[tp] = i + len(take)
            if cursors[tp] >= len(by_tp[tp]):
                del cursors[tp]
        yield batch


_WORDS = re.compile(r"\s+")


def _label(sql: str) -> str:
    return _WORDS.sub(" ", sql.strip())[:90]


class Timed:
    """A connection proxy that times each statement by its text."""

    def __init__(self, conn: Any, times: dict[str, list[float]]) -> None:
        self._conn = conn
        self._times = times

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._conn, name)
        if name not in ("execute", "fetch", "fetchrow", "fetchval", "executemany",
                        "copy_records_to_table"):  # fmt: skip
            return attr

        async def timed(sql: str, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await attr(sql, *args, **kwargs)
            finally:
                entry = self._times[_label(sql)]
                entry[0] += time.perf_counter() - t0
                entry[1] += 1

        return timed


async def replay(admin_url: str, records: list[Rec], prefix: str, batch: int) -> dict[str, Any]:
    name = f"readmodel_{int(time.time() * 1000)}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    try:
        await migrate(pool, [PLUMBING_MIGRATIONS, *SPEC.extra_migrations, SPEC.migrations])
        async with pool.acquire() as conn:  # no erasure in an import: nothing to read first
            await record_bootstrap(conn, (), None)
        settings = Settings(topic_prefix=prefix)
        handler = SPEC.build_handler(settings)
        times: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])

        async def timed_handler(uow: Any, events: list[Any]) -> None:
            real = uow.conn
            uow.conn = Timed(real, times)
            try:
                await handler(uow, events)
            finally:
                uow.conn = real

        processor = BatchProcessor(
            service="gateway",
            pool=pool,
            handle_batch=timed_handler,
            topic_prefix=prefix,
            max_future_s=None,
        )
        started = time.perf_counter()
        n = 0
        for chunk in batches(records, batch):
            await processor.process(chunk)
            n += len(chunk)
        seconds = time.perf_counter() - started
        sql_s = sum(t for t, _ in times.values())
        return {
            "records": n,
            "seconds": round(seconds, 2),
            "records_per_s": round(n / seconds, 1),
            "handler_sql_s": round(sql_s, 2),
            "statements": sorted(
                ((round(t, 2), c, label) for label, (t, c) in times.items()), reverse=True
            ),
        }
    finally:
        await pool.close()
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def capture(bootstrap: str, topics: list[str]) -> list[Rec]:
    from aiokafka import AIOKafkaConsumer

    from bench.env import LagWatch

    async with LagWatch(bootstrap) as watch:
        tps = await watch.partitions(topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Rec] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            got = await consumer.getmany(timeout_ms=1000, max_records=10000)
            for tp, msgs in got.items():
                out += [
                    Rec(
                        tp.topic,
                        tp.partition,
                        m.offset,
                        m.key,
                        m.value,
                        list(m.headers),
                        m.timestamp,
                    )
                    for m in msgs
                ]
        return out
    finally:
        await consumer.stop()


async def _import_and_capture(stack: Any, state_dir: Path, rows: int) -> tuple[list[Rec], str]:
    from bench import backfill, phases
    from importers.bench import generate_stackexchange

    bench = phases.Bench(stack, state_dir, print)
    dump = state_dir / "dump"
    generate_stackexchange(dump, rows, people=max(200, rows // 50))
    ns = await bench.namespace("readmodel")
    result = await backfill.history_import(bench, ns, dump, rows, 3600)
    print(
        f"imported in {result['imported_s']} s, settled in {result['settled_s']} s "
        f"(groups: {result['group_settled_s']})"
    )
    topics = [ns.topic(t.name) for t in SPEC.consumes]
    return await capture(bench.bootstrap, topics), ns.prefix


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=2000, help="records per batch (the default)")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--records", type=Path, help="a capture to reuse (needs --admin-url)")
    p.add_argument("--save", type=Path, help="write the capture here")
    p.add_argument("--admin-url", help="PostgreSQL admin URL (with --records)")
    a = p.parse_args()
    if a.records:
        records, prefix = pickle.loads(a.records.read_bytes())
        if a.admin_url:
            for _ in range(a.runs):
                _report(asyncio.run(replay(a.admin_url, records, prefix, a.batch)))
            return
        from devstack.common import free_ports
        from devstack.postgres import LocalPostgres

        pg_dir = Path(tempfile.mkdtemp(prefix="flywheel-readmodel-pg-", dir="/tmp"))
        pg_dir.chmod(0o755)
        pg = LocalPostgres(pg_dir, port=free_ports(1)[0], progress=print)
        try:
            pg.start()
            for _ in range(a.runs):
                _report(asyncio.run(replay(pg.admin_url, records, prefix, a.batch)))
        finally:
            pg.stop()
            shutil.rmtree(pg_dir, ignore_errors=True)
        return
    from devstack.stack import DevStack

    state_dir = Path(tempfile.mkdtemp(prefix="flywheel-readmodel-", dir="/tmp"))
    state_dir.chmod(0o755)
    stack = DevStack(state_dir, secure=False, service_timeout_s=180.0, progress=print)
    try:
        stack.start()
        records, prefix = asyncio.run(_import_and_capture(stack, state_dir, a.rows))
        print(f"captured {len(records):,} records")
        if a.save:
            a.save.write_bytes(pickle.dumps((records, prefix)))
        for _ in range(a.runs):
            _report(
                asyncio.run(replay(stack.endpoints.postgres_admin_url, records, prefix, a.batch))
            )
    finally:
        stack.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def _report(r: dict[str, Any]) -> None:
    print(
        f"\n{r['records']:,} records in {r['seconds']} s: {r['records_per_s']:,.0f}/s; "
        f"handler SQL {r['handler_sql_s']} s"
    )
    for t, c, label in r["statements"][:25]:
        print(f"  {t:8.2f} s {c:6d}x  {label}")


if __name__ == "__main__":
    main()
