"""Tools for the fault tests: a big deterministic log, service processes we can kill, and ways to
wait for a quiet system and compare what two runs left behind.

The crash test's settings (`LATENESS` longer than the log, `RULES` crediting only what a
member's own partition carries, the log starting after a review boundary) date from before the
services' clocks were per partition (docs/GUARANTEES.md, "Event time"): they keep the crash
test about crashes. tests/test_determinism.py runs the defaults across paces, batchings, a kill
and a replay. A final clock tick on every partition (`flush_tick`) far after the log fires
every demotion and every champion review.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from devstack.common import free_ports
from devstack.community import START, simulate
from services.advocacy.__main__ import SPEC as ADVOCACY
from services.advocacy.domain import Rules as AdvocacyRules
from services.advocacy.domain import boundary_at_or_before
from services.awareness.__main__ import SPEC as AWARENESS
from services.engagement.__main__ import SPEC as ENGAGEMENT
from shared.cloudevents import BROADCAST, OutgoingRecord, encode, header_map
from shared.contracts import ACTIVITY, ActivityV1
from shared.eventtime import CLOCK_ONLY_TYPES, clock_tick
from shared.kafka import consumer_lag, ensure_topics
from shared.outbox import close_producer
from shared.topics import (
    JOURNEY_TRANSITIONS,
    MEMBER_LIFECYCLE,
    SIGNALS_ADVOCACY,
    SIGNALS_PRODUCT,
    SIGNALS_SALES,
    SIGNALS_SUCCESS,
    SIGNALS_SUPPORT,
    Topic,
)
from tests.conftest import Namespace

REPO = Path(__file__).resolve().parents[1]

STAGES = ("awareness", "engagement", "advocacy")
CONSUMES: dict[str, tuple[Topic, ...]] = {
    spec.name: spec.consumes for spec in (AWARENESS, ENGAGEMENT, ADVOCACY)
}
EMITTED = (
    JOURNEY_TRANSITIONS,
    MEMBER_LIFECYCLE,
    SIGNALS_SUPPORT,
    SIGNALS_SALES,
    SIGNALS_SUCCESS,
    SIGNALS_ADVOCACY,
    SIGNALS_PRODUCT,
)
DEAD_LETTERS = tuple(sorted({t.dlq for topics in CONSUMES.values() for t in topics}))

LATENESS = timedelta(days=1000)  # longer than any log the tests build
RULES = """\
# Written by tests/crashkit.py: advocacy credits only what a member's own partition carries.
[advocacy]
content_engagement_cap = 1000000

[advocacy.weights]
peer_help = 0
answer_accepted = 0
content_engaged = 0
referral_joined = 0
"""

# What the final state is compared on. Wall-clock columns differ between any two runs by
# nature (inbox.applied_at, schema_migrations.applied_at: when, not what). advocacy_members'
# evidence links are kept in the order contributions were credited, and contributions from
# other partitions and topics (weight 0 under RULES) arrive in no fixed order: only the counts
# are compared. Everything else is compared whole.
STATE_QUERIES: dict[str, dict[str, str]] = {
    "awareness": {
        "people": "SELECT * FROM people ORDER BY member_id",
        "aliases": "SELECT * FROM aliases ORDER BY anonymous_id",
    },
    "engagement": {
        "participants": "SELECT * FROM participants ORDER BY member_id",
    },
    "advocacy": {
        "advocacy_members": "SELECT member_id, stage, score, evidence->'counts' AS counts"
        " FROM advocacy_members ORDER BY member_id",
        "contributions": "SELECT * FROM contributions ORDER BY key",
        "review_clock": "SELECT * FROM review_clock",
        "pending_contributions": "SELECT * FROM pending_contributions ORDER BY key",
    },
}
PLUMBING_QUERIES = {
    "inbox": "SELECT event_id FROM inbox ORDER BY event_id",
    "watermark": "SELECT event_time FROM watermark",
    "outbox": "SELECT event_id, topic FROM outbox ORDER BY seq",
}


# --- the log ------------------------------------------------------------------------------------


def _log_shift(period: timedelta) -> timedelta:
    """How far to move the simulated community so that it starts one hour after a review
    boundary: the first event any consumer reads then sets the same starting boundary."""
    boundary = boundary_at_or_before(START, period) + period
    return boundary + timedelta(hours=1) - START


def community_records(people: int, weeks: int, seed: int = 11) -> list[OutgoingRecord]:
    """The simulated community's activities as the gateway would publish them."""
    shift = _log_shift(AdvocacyRules().period)
    records = []
    for raw in simulate(people=people, weeks=weeks, seed=seed):
        activity = ActivityV1.model_validate(raw)
        activity = activity.model_copy(update={"occurred_at": activity.occurred_at + shift})
        records.append(
            encode(
                ACTIVITY,
                activity,
                event_id=f"{activity.source}:{activity.activity_id}",
                source="/tests/crashkit",
            )
        )
    return records


def flush_tick(records: Sequence[OutgoingRecord]) -> OutgoingRecord:
    """A clock tick on every partition, so far after the log that every clock passes every
    deadline and every review boundary the log could have set."""
    newest = max(datetime.fromisoformat(header_map(r.headers)["ce_time"]) for r in records)
    return clock_tick((newest + LATENESS + timedelta(days=365)).astimezone(UTC), "crashkit")


def write_rules(directory: Path) -> Path:
    path = directory / "crash-rules.toml"
    path.write_text(RULES)
    return path


MAX_FUTURE = timedelta(days=3650)
"""The flush tick is years after the log, and the log's times are not anchored to the wall
clock that stamps its Kafka records: a simulated history, not a far-future event to refuse."""


def deterministic_env(rules_file: Path, **extra: str) -> dict[str, str]:
    """The settings that make two runs over one log comparable (see the module docstring)."""
    return {
        "FLYWHEEL_ALLOWED_LATENESS_S": str(int(LATENESS.total_seconds())),
        "FLYWHEEL_MAX_FUTURE_S": str(int(MAX_FUTURE.total_seconds())),
        "FLYWHEEL_RULES_FILE": str(rules_file),
        "FLYWHEEL_CLOCK_TICK_INTERVAL_S": "0",
        "FLYWHEEL_TRANSIENT_RETRY_INITIAL_S": "0.1",
        "FLYWHEEL_TRANSIENT_RETRY_MAX_S": "2",
        **extra,
    }


async def publish(
    bootstrap: str,
    prefix: str,
    records: Sequence[OutgoingRecord],
    *,
    chunk: int = 0,
    pause_s: float = 0.0,
    hurry: asyncio.Event | None = None,
) -> None:
    """Publish in order (idempotent producer, acks=all). With `chunk`, pause between chunks so
    the log keeps flowing while the test disturbs the services; once `hurry` is set, the rest
    goes at once. A chunk whose sending fails (the broker restarting) is sent again: records
    may then be on the topic twice, which the consumers' inbox drops."""
    done = 0
    while done < len(records):
        hurried = hurry is not None and hurry.is_set()
        part = records[done : len(records) if hurried or not chunk else done + chunk]
        for attempt in range(60):
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                # Also how long a batch may wait for a partition leader before it fails (aiokafka
                # has one setting for both). Longer than any restart here: a batch that failed
                # while a later one of the same partition was written would reorder the log
                # when the chunk is sent again (a fresh producer's first sequence number is not
                # checked by the broker).
                request_timeout_ms=120_000,
            )
            try:
                # Bounded: a client that bootstrapped from a broker still starting up can be
                # left with no broker to ask and wait forever (aiokafka logs "Unable to update
                # metadata from []"); a fresh client gets out of it.
                await asyncio.wait_for(_send_all(producer, prefix, part), ATTEMPT_S)
                break
            except Exception:
                if attempt == 59:
                    raise
                await asyncio.sleep(1.0)
            finally:
                await close_producer(producer)  # nothing it holds may land after a re-send
        done += len(part)
        if pause_s and done < len(records) and not (hurry is not None and hurry.is_set()):
            await asyncio.sleep(pause_s)


ATTEMPT_S = 150.0
"""How long one attempt at sending a chunk may take (longer than the producer's own timeout)."""


async def _send_all(
    producer: AIOKafkaProducer, prefix: str, part: Sequence[OutgoingRecord]
) -> None:
    await producer.start()
    futures = []
    for r in part:
        partitions: list[int | None] = [r.partition]
        if r.partition == BROADCAST:  # a clock tick: one copy per partition
            partitions = sorted(await producer.partitions_for(prefix + r.topic))
        futures += [
            await producer.send(
                prefix + r.topic, r.value, key=r.key, headers=r.headers, partition=p
            )
            for p in partitions
        ]
    await asyncio.gather(*futures)


# --- waiting for a quiet system -----------------------------------------------------------------


async def lag(bootstrap: str, prefix: str, service: str) -> int:
    """Records on the service's topics its consumer group has not committed yet."""
    topics = [prefix + t.name for t in CONSUMES[service]]
    return sum((await consumer_lag(bootstrap, prefix + service, topics)).values())


async def outbox_rows(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM outbox"))
    finally:
        await conn.close()


async def wait_settled(
    bootstrap: str,
    prefix: str,
    urls: Mapping[str, str],
    *,
    timeout_s: float,
    alive: Any = None,
) -> None:
    """Until every group has committed everything and every outbox is empty, twice in a row
    (a relay publishing the last rows makes new lag for advocacy). `alive()`, if given, is
    called on each round to fail fast when a service process died."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    last: dict[str, int] = {}
    while True:
        if alive is not None:
            alive()
        try:
            last = {s: await lag(bootstrap, prefix, s) for s in urls}
            last |= {f"{s} outbox": await outbox_rows(u) for s, u in urls.items()}
        except Exception as exc:  # the broker or database is restarting: not settled
            last = {"error": 1, repr(exc)[:200]: 1}
        quiet = quiet + 1 if not any(last.values()) else 0
        if quiet >= 2:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled after {timeout_s:.0f} s: {last}")
        await asyncio.sleep(0.5)


async def wait_progress(
    bootstrap: str, prefix: str, service: str, *, below: int, timeout_s: float = 120.0
) -> None:
    """Until the service's lag drops below `below` (it is working through the log)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            if await lag(bootstrap, prefix, service) < below:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{service} made no progress in {timeout_s:.0f} s")
        await asyncio.sleep(0.2)


async def committed(bootstrap: str, prefix: str, service: str) -> int:
    """How many records the group has committed across its topics (0 before its first)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(prefix + service)
        return sum(max(0, m.offset) for m in offsets.values())
    finally:
        await admin.close()


async def first_commit_after(
    bootstrap: str, prefix: str, service: str, before: int, *, timeout_s: float
) -> float | None:
    """time.monotonic() when the group first committed past `before` records, or None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await committed(bootstrap, prefix, service) > before:
                return time.monotonic()
        await asyncio.sleep(0.1)
    return None


# --- what a run left behind ---------------------------------------------------------------------


CLOCK_DECIDED = frozenset(
    {
        "signal.question_unanswered.v1",
        "signal.question_answered.v1",
        "signal.newcomer_drop_off.v1",
    }
)
"""Signals decided when the clock passes a deadline that other members' partitions decide
(a question answered or not; a honeymoon): in event-time order among themselves, but their
place among the member's own-record events depends on when the clock moved, so they are left
out of the per-member order (docs/GUARANTEES.md); their ids are compared like any other."""


@dataclass(frozen=True, order=True)
class Seen:
    """One record of an emitted topic, as much as the comparison needs."""

    partition: int
    offset: int
    key: str
    id: str
    source: str
    causes: tuple[str, ...]
    type: str = ""
    """The ids it names as its cause: `caused_by` of a transition, `activity_id` of a signal."""
    body: bytes = b""
    """The record's value: an event's content, which its id does not always determine (a
    transition's id names its stages and causes, not its reason or details)."""


@dataclass
class Outcome:
    """The final state of every service and every event emitted, of one run."""

    state: dict[str, dict[str, list[tuple[Any, ...]]]] = field(default_factory=dict)
    events: dict[str, list[Seen]] = field(default_factory=dict)
    """topic -> its records in log order."""

    def ids(self, topic: str) -> set[str]:
        return {e.id for e in self.events[topic]}

    def bodies(self, topic: str) -> dict[str, bytes]:
        """Each event id's content (its first copy: a re-send carries the same outbox row),
        without what is promised as "as known" only (`as_promised`)."""
        result: dict[str, bytes] = {}
        for e in self.events[topic]:
            if e.id not in result:
                result[e.id] = as_promised(e.body)
        return result

    def redelivered(self, topic: str) -> int:
        """Records on the topic that repeat an id already there (at-least-once re-sends)."""
        return len(self.events[topic]) - len(self.ids(topic))

    def sequences(self, topic: str, owners: Mapping[str, str]) -> dict[tuple[str, str], list[str]]:
        """Per (key, source): the ids in the order they first appeared, of the events whose
        causes are records of that same key (`owners` maps a record's ids to its key).

        Those are the events the per-key order is promised for: their causes were read in
        order from one partition. An event caused by another key's record (awareness's
        visitor -> merged, emitted from the member's sign-up) is published when that other
        partition is read, which no consumer orders against this one.
        """
        seen: set[str] = set()
        result: dict[tuple[str, str], list[str]] = defaultdict(list)
        for e in self.events[topic]:
            if e.id in seen:
                continue
            seen.add(e.id)
            if e.type in CLOCK_DECIDED:
                continue
            if all(owners.get(c, e.key) == e.key for c in e.causes):
                result[(e.key, e.source)].append(e.id)
        return dict(result)


async def snapshot(urls: Mapping[str, str]) -> dict[str, dict[str, list[tuple[Any, ...]]]]:
    state: dict[str, dict[str, list[tuple[Any, ...]]]] = {}
    for service, url in urls.items():
        conn = await asyncpg.connect(url)
        try:
            queries = {**STATE_QUERIES[service], **PLUMBING_QUERIES}
            state[service] = {
                table: [tuple(r.values()) for r in await conn.fetch(sql)]
                for table, sql in queries.items()
            }
        finally:
            await conn.close()
    return state


async def read_all(bootstrap: str, topic: str) -> list[Seen]:
    """Every record of a topic up to its end now, in log order per partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await _partitions(bootstrap, topic)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        out: list[Seen] = []
        deadline = time.monotonic() + 120
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end")
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                out.extend(_seen(r) for r in records if not _moves_clocks_only(r))
        return sorted(out)
    finally:
        await consumer.stop()


def _moves_clocks_only(record: Any) -> bool:
    """Ticks and in-band watermarks: how often a clock moved depends on the pace by nature;
    what the clocks decide is in the other events and the state."""
    return header_map(record.headers).get("ce_type") in CLOCK_ONLY_TYPES


def _seen(record: Any) -> Seen:
    headers = header_map(record.headers)
    causes: tuple[str, ...] = ()
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        data = json.loads(record.value)
        causes = tuple(
            data.get("caused_by") or ([data["activity_id"]] if "activity_id" in data else ())
        )
    return Seen(
        record.partition,
        record.offset,
        record.key.decode() if record.key is not None else "",
        headers.get("ce_id", ""),
        headers.get("ce_source", ""),
        causes,
        headers.get("ce_type", ""),
        record.value or b"",
    )


def reordered(log: Sequence[Seen], records: Sequence[OutgoingRecord]) -> list[str]:
    """Members whose records the topic holds in another order than `records` (first copies;
    re-sent copies come later and are dropped by the inbox). Empty unless the test's own
    publishing went wrong: then the runs read different logs, and their outcomes may differ
    for that reason alone."""
    intended: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r.partition != BROADCAST:
            intended[r.key.decode()].append(r.event_id)
    found: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for e in log:
        if e.id not in seen:
            seen.add(e.id)
            found[e.key].append(e.id)
    return sorted(k for k, ids in intended.items() if found.get(k) != ids)


def owners(records: Iterable[OutgoingRecord]) -> dict[str, str]:
    """Each log record's event id and activity id -> its key (the member it is about)."""
    result: dict[str, str] = {}
    for r in records:
        result[r.event_id] = r.key.decode()
        with contextlib.suppress(ValueError, KeyError, TypeError):
            result[json.loads(r.value)["activity_id"]] = r.key.decode()
    return result


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        assert described["error_code"] == 0, f"topic {topic}: error {described['error_code']}"
        return sorted(int(p["partition"]) for p in described["partitions"])
    finally:
        await admin.close()


async def outcome(bootstrap: str, prefix: str, urls: Mapping[str, str]) -> Outcome:
    result = Outcome(state=await snapshot(urls))
    for topic in (*(t.name for t in EMITTED), *DEAD_LETTERS):
        result.events[topic] = await read_all(bootstrap, prefix + topic)
    return result


AS_KNOWN = ("first_touch_channel", "first_touch_detail")
"""An awareness transition's first touch is what awareness knew when it decided it: a
visitor's history on another partition may come later (docs/GUARANTEES.md, "Not promised").
The settled one, member.first_touch.v1, is compared like every other event."""


def as_promised(body: bytes) -> bytes:
    """The content the determinism promise covers: an awareness transition without its
    as-known first touch; anything else whole."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict) or data.get("dimension") != "awareness":
        return body
    details = data.get("details")
    if isinstance(details, dict):
        for key in AS_KNOWN:
            details.pop(key, None)
    return json.dumps(data, sort_keys=True).encode()


def _frozen(value: Any) -> Any:
    """A row made hashable: PostgreSQL arrays come back as lists, JSON as dicts."""
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return value


def differences(expected: Outcome, actual: Outcome, owners: Mapping[str, str]) -> list[str]:
    """What differs between two runs, readably (empty when they agree)."""
    problems: list[str] = []
    for service, tables in expected.state.items():
        for table, rows in tables.items():
            got = actual.state[service][table]
            if got != rows:
                got_set, rows_set = {_frozen(r) for r in got}, {_frozen(r) for r in rows}
                missing = [r for r in rows if _frozen(r) not in got_set][:3]
                extra = [r for r in got if _frozen(r) not in rows_set][:3]
                problems.append(
                    f"{service}.{table}: {len(rows)} rows expected, {len(got)} found;"
                    f" e.g. missing {missing}, unexpected {extra}"
                )
    for topic in expected.events:
        want, got_ids = expected.ids(topic), actual.ids(topic)
        if want != got_ids:
            problems.append(
                f"{topic}: {len(want - got_ids)} event ids missing,"
                f" {len(got_ids - want)} unexpected (e.g. {sorted(want - got_ids)[:2]}"
                f" / {sorted(got_ids - want)[:2]})"
            )
            continue
        if not topic.endswith(".dlq"):  # dead letters carry the error and when it happened
            bodies, got_bodies = expected.bodies(topic), actual.bodies(topic)
            changed = sorted(i for i in want if bodies[i] != got_bodies[i])
            if changed:
                first = changed[0]
                problems.append(
                    f"{topic}: {len(changed)} events differ in content, e.g. {first}:"
                    f"\n  {bodies[first][:400]!r}\n  {got_bodies[first][:400]!r}"
                )
        order, got_order = expected.sequences(topic, owners), actual.sequences(topic, owners)
        bad = [k for k, v in order.items() if got_order.get(k) != v]
        if bad:
            problems.append(f"{topic}: order per member differs for {len(bad)}, e.g. {bad[:3]}")
    return problems


# --- service processes --------------------------------------------------------------------------


class ServiceProcess:
    """`python -m services.<name>` as its own process with its own health port and log file: a
    second replica beside DevStack's, or a process a test signals itself."""

    def __init__(self, name: str, env: Mapping[str, str], log_file: Path) -> None:
        self.name = name
        self.port = free_ports(1)[0]
        self.log_file = log_file
        self.env = {
            **env,
            "FLYWHEEL_HEALTH_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    def start(self, *, wait_ready: bool = True, timeout_s: float = 60.0) -> ServiceProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait_ready:
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not _http_ok(f"http://127.0.0.1:{self.port}/readyz"):
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}): {self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready in {timeout_s:.0f} s: {self.log()}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush, no commit."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout_s: float = 60.0) -> tuple[int | None, float]:
        """SIGTERM, then wait: (exit code, seconds from the signal to the exit)."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            code = None
        return code, time.monotonic() - began

    def log(self, *, whole: bool = False) -> str:
        """What this process (since its last start, unless `whole`) wrote to its log."""
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(0 if whole else self._log_start)
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


DUPLICATES = re.compile(r"dropped (\d+) duplicate")


def duplicates_dropped(log_text: str) -> int:
    """Redelivered events the inbox dropped, summed from the services' batch log lines."""
    return sum(int(m.group(1)) for m in DUPLICATES.finditer(log_text))


def log_since(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def summary(counts: Iterable[tuple[str, Any]]) -> str:
    return json.dumps(dict(counts), default=str)


# --- runs ---------------------------------------------------------------------------------------


async def undisturbed(
    namespace: Namespace,
    records: Sequence[OutgoingRecord],
    env: Mapping[str, str],
    workdir: Path,
    services: Sequence[str] = STAGES,
) -> Outcome:
    """The reference: the same log (its last record, the flush tick, once the rest is
    applied), in a namespace of its own, with nothing going wrong."""
    stack = namespace.stack
    ref = Namespace(stack, f"r{uuid.uuid4().hex[:10]}.")
    await ensure_topics(
        stack.kafka_bootstrap, partitions=3, replication_factor=1, prefix=ref.prefix
    )
    urls = {s: await ref.create_database(s) for s in services}
    await publish(stack.kafka_bootstrap, ref.prefix, records[:-1])
    procs = {
        s: ServiceProcess(s, ref.env(urls[s], **env), workdir / f"ref-{s}.log") for s in services
    }
    try:
        await start_in_order(
            lambda s: procs[s].start(), stack.kafka_bootstrap, ref.prefix, services
        )
        await wait_settled(stack.kafka_bootstrap, ref.prefix, urls, timeout_s=600)
        await publish(stack.kafka_bootstrap, ref.prefix, records[-1:])
        await wait_settled(stack.kafka_bootstrap, ref.prefix, urls, timeout_s=120)
        result = await outcome(stack.kafka_bootstrap, ref.prefix, urls)
    finally:
        codes = {s: p.terminate()[0] for s, p in procs.items() if p.alive()}
    assert codes == dict.fromkeys(services, 0), codes
    return result


async def start_in_order(
    start: Callable[[str], object], bootstrap: str, prefix: str, services: Sequence[str]
) -> None:
    """Advocacy first, and the others once it has committed its first batch: its first batch
    then comes from member-activity alone, never from a signal the others emitted."""
    if "advocacy" in services:
        await asyncio.to_thread(start, "advocacy")
        deadline = time.monotonic() + 60
        while await committed(bootstrap, prefix, "advocacy") == 0:
            assert time.monotonic() < deadline, "advocacy committed nothing in 60 s"
            await asyncio.sleep(0.2)
    for service in services:
        if service != "advocacy":
            await asyncio.to_thread(start, service)
