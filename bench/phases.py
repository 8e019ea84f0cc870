"""The measurements, one function per figure. Each phase gets its own namespace (topic prefix,
consumer groups, fresh databases) on the one stack, so phases never see each other's work.

Services run as processes (`DevStack.start_service`, i.e. `python -m services.<name>`, uvloop,
INFO logs: what production runs), so their memory and CPU are theirs alone, and py-spy can
attach to them. A rate is measured from outside, on committed consumer-group lag, the way an
operator sees it: from the last look with nothing committed to lag 0 with the outbox drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer

from bench.env import (
    PASSTHROUGH_OUT,
    QUIX_OUT,
    LagWatch,
    Namespace,
    ProcessWatch,
    database_bytes,
    load,
    outbox_empty,
    outboxes_empty,
)
from bench.workload import Record, community, e2e_activity
from devstack.common import free_ports
from devstack.stack import DevStack, http_ok
from services import registry
from shared.kafka import FETCH_MAX_WAIT_MS, client_security
from shared.settings import Settings
from shared.topics import JOURNEY_TRANSITIONS, MEMBER_ACTIVITY

Say = Callable[[str], None]

STAGES = tuple(name for name in registry.SERVICE_NAMES if name != "gateway")
"""The stage services, each measured catching up alone (the gateway is driven over HTTP)."""
CONSUMES: dict[str, tuple[str, ...]] = {
    name: tuple(t.name for t in registry.spec(name).consumes) for name in STAGES
}
"""Each stage service's topics, from its spec in services.registry."""
POLL_S = 0.25


@dataclass
class Run:
    """One consumer's catch-up: how fast, at what cost."""

    process: str  # the name its CPU and memory are filed under
    name: str = ""
    records: int = 0  # consumed (the rate's numerator)
    backlog: int = 0
    seconds: float = 0.0  # from the last look with nothing committed to lag 0, outbox drained
    wall_s: float = 0.0  # from process start to the same point (start-up included)
    rate: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: float = 0.0
    finished: bool = True
    timeline: list[tuple[float, int]] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        own = self.cpu_s.get(self.process, 0.0)
        return {
            "records": self.records,
            "backlog": self.backlog,
            "seconds": round(self.seconds, 2),
            "wall_s": round(self.wall_s, 2),
            "rate_per_s": round(self.rate, 1),
            "cpu_s": {k: round(v, 2) for k, v in self.cpu_s.items()},
            "records_per_cpu_s": round(self.records / own, 1) if own > 0 else None,
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "finished": self.finished,
            "timeline": [(round(t, 2), lag) for t, lag in self.timeline],
        }


class Bench:
    """The stack, and how to start and stop what runs on it."""

    def __init__(self, stack: DevStack, state_dir: Path, say: Say) -> None:
        self.stack = stack
        self.state_dir = state_dir
        self.say = say
        self.bootstrap = stack.endpoints.kafka_bootstrap
        self.admin_url = stack.endpoints.postgres_admin_url
        self.infra = self._infra_pids()
        self.service_env: dict[str, str] = {}  # experiments: --service-env KEY=VALUE
        self.read_model_apart = False  # --gateway-read-model own-process (phases 4, 7, 7b)
        self._n = 0

    def _infra_pids(self) -> dict[str, int]:
        from bench.env import infra_pids

        return infra_pids(str(self.state_dir))

    async def namespace(self, phase: str, extra_topics: Sequence[Any] = ()) -> Namespace:
        self._n += 1
        ns = Namespace(self.bootstrap, self.admin_url, f"b{os.getpid()}-{self._n}-{phase}.")
        await ns.create(extra_topics)
        return ns

    def start_service(self, name: str, ns: Namespace, **env: str) -> subprocess.Popen[bytes]:
        """`python -m services.<name>` in the namespace, with the run's --service-env."""
        extra = {**self.service_env, **env}
        return self.stack.start_service(name, ns.env(name, **extra), wait_ready=False)

    def stop_service(self, name: str) -> None:
        self.stack.stop_service(name)

    async def start_all(
        self, ns: Namespace, **gateway_env: str
    ) -> tuple[str, dict[str, subprocess.Popen[bytes]]]:
        """Every service, ready, with an API key made for the run: the gateway runs its read
        model (role `all`), or with `--gateway-read-model own-process` the read model runs in
        a process of its own (`READ_MODEL`) beside an `api` gateway. What started is stopped
        again if anything fails to."""
        for name in (*STAGES, "gateway"):
            await ns.database(name)
        key = _api_key()
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name in STAGES:
                procs[name] = self.start_service(name, ns)
            procs["gateway"] = self.start_service(
                "gateway",
                ns,
                FLYWHEEL_API_KEYS=f"bench={key}:ingest,read,admin",
                FLYWHEEL_GATEWAY_ROLE="api" if self.read_model_apart else "all",
                **gateway_env,
            )
            for name in list(procs):
                await asyncio.to_thread(self.stack.wait_service_ready, name, 180)
            if self.read_model_apart:  # after the API's start: its migrations ran
                procs[READ_MODEL], ready_url = self.start_read_model(ns, **gateway_env)
                await _wait_ready(procs[READ_MODEL], ready_url, 180)
        except BaseException:
            await self.stop_all(procs)
            raise
        return key, procs

    async def stop_all(self, procs: dict[str, subprocess.Popen[bytes]]) -> None:
        for name, proc in procs.items():
            if name == READ_MODEL:
                await asyncio.to_thread(stop, proc)
            else:
                await asyncio.to_thread(self.stop_service, name)

    def start_read_model(self, ns: Namespace, **env: str) -> tuple[subprocess.Popen[bytes], str]:
        """A gateway process running only the read model (`FLYWHEEL_GATEWAY_ROLE=read-model`)
        on the namespace's gateway database, and the URL of its /readyz."""
        port = free_ports(1)[0]
        proc_env = self.process_env(
            ns,
            "gateway",
            **env,
            FLYWHEEL_GATEWAY_ROLE="read-model",
            FLYWHEEL_HEALTH_PORT=str(port),
        )
        proc = self.spawn("gateway-read-model", ["services.gateway"], env=proc_env)
        return proc, f"http://127.0.0.1:{port}/readyz"

    def process_env(
        self, ns: Namespace, database: str, *, principal: str | None = None, **env: str
    ) -> dict[str, str]:
        """What a service process of the namespace started outside DevStack's bookkeeping runs
        with: this environment, DevStack's for `principal` (its broker and, on a secured stack,
        its credentials; default: the service of `database`), the namespace's for `database`,
        the run's --service-env, then `env`."""
        return {
            **os.environ,
            **self.stack.service_env(principal or database),
            **ns.env(database, **{**self.service_env, **env}),
            "PYTHONUNBUFFERED": "1",
        }

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A bench process (the ceiling, the Quix peer), logging beside the services."""
        log = (self.state_dir / "logs" / f"{name}.log").open("ab")
        with log:
            return subprocess.Popen(
                [sys.executable, "-m", *argv],
                cwd=Path(__file__).resolve().parents[1],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


READ_MODEL = "gateway-read-model"
"""The read model's own process, when the run keeps it apart (`--gateway-read-model`)."""


async def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(http_ok, url):
        if proc.poll() is not None:
            raise RuntimeError(f"{READ_MODEL} exited with {proc.returncode}; see its log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{READ_MODEL} not ready at {url} within {timeout_s:.0f} s")
        await asyncio.sleep(0.2)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM, wait, SIGKILL: only this process (and its group), which the bench started."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# --------------------------------------------------------------------------------------------
# watching a consumer catch up
# --------------------------------------------------------------------------------------------


async def watch_catch_up(
    bench: Bench,
    name: str,
    proc: subprocess.Popen[bytes],
    group: str,
    topics: Sequence[str],
    *,
    database_url: str | None,
    budget_s: float,
    started: float,
) -> Run:
    """Poll lag until 0 (and the outbox empty); the rate counts from the first commit."""
    run = Run(name, name)
    watch = ProcessWatch({name: proc.pid, **bench.infra})
    async with LagWatch(bench.bootstrap) as lags:
        run.backlog = await lags.ends(topics)
        idle_until = started  # the last look before anything was committed
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see the logs")
            now = time.monotonic()
            lag = await lags.lag(group, topics)
            watch.sample()
            run.timeline.append((now - started, lag))
            if lag >= run.backlog:
                idle_until = now
            if lag == 0 and (database_url is None or await outbox_empty(database_url)):
                break
            if now - started > budget_s:
                run.finished = False
                break
            await asyncio.sleep(POLL_S)
    end = time.monotonic()
    run.wall_s = end - started
    run.cpu_s = watch.cpu_seconds()
    run.peak_rss_mib = watch.peak_rss[name] / 2**20
    # from the last look with nothing committed to the first with everything done: the true
    # interval is inside it, so the rate is a slight underestimate (by up to 2 looks' time)
    run.records = run.backlog - lag
    run.seconds = end - idle_until
    run.rate = run.records / run.seconds if run.seconds > 0 else 0.0
    return run


async def load_backlog(bench: Bench, ns: Namespace, records: Iterable[Record]) -> dict[str, Any]:
    n, took = await asyncio.to_thread(
        load, bench.bootstrap, ns.topic(MEMBER_ACTIVITY.name), records
    )
    bench.say(f"  loaded {n:,} activities in {took:.1f} s ({n / took:,.0f}/s)")
    return {"records": n, "seconds": round(took, 2)}


# --------------------------------------------------------------------------------------------
# 1, 2: the ceiling, the stage services, the Quix peer
# --------------------------------------------------------------------------------------------


async def ceiling(bench: Bench, ns: Namespace, label: str, budget_s: float) -> Run:
    group = f"{ns.prefix}passthrough-{label}"
    started = time.monotonic()
    proc = bench.spawn(
        f"passthrough-{label}",
        [
            "bench.passthrough",
            "--bootstrap",
            bench.bootstrap,
            "--source",
            ns.topic(MEMBER_ACTIVITY.name),
            "--sink",
            ns.topic(PASSTHROUGH_OUT.name),
            "--group",
            group,
        ],
    )
    try:
        run = await watch_catch_up(
            bench,
            "passthrough",
            proc,
            group,
            [ns.topic(MEMBER_ACTIVITY.name)],
            database_url=None,
            budget_s=budget_s,
            started=started,
        )
    finally:
        stop(proc)
    run.name = f"passthrough ({label})"
    return run


async def stage(
    bench: Bench,
    ns: Namespace,
    service: str,
    budget_s: float,
    *,
    env: dict[str, str] | None = None,
    profile: Path | None = None,
) -> Run:
    """One stage service alone, catching up on its topics from an empty database."""
    url = await ns.database(service) if service not in ns.databases else ns.databases[service]
    started = time.monotonic()
    proc = bench.start_service(service, ns, **(env or {}))
    return await _catch_up_of(
        bench,
        service,
        proc,
        [ns.topic(t) for t in CONSUMES[service]],
        group=ns.prefix + service,
        database_url=url,
        budget_s=budget_s,
        started=started,
        profile=profile,
        stop_it=lambda: bench.stop_service(service),
    )


async def _catch_up_of(
    bench: Bench,
    name: str,
    proc: subprocess.Popen[bytes],
    topics: Sequence[str],
    *,
    group: str,
    database_url: str,
    budget_s: float,
    started: float,
    profile: Path | None,
    stop_it: Callable[[], None],
) -> Run:
    """`watch_catch_up` of a consumer process, sampled by py-spy when `profile` is given, and
    the process stopped by `stop_it` whatever happens."""
    spy = _py_spy(proc.pid, profile) if profile is not None else None
    try:
        return await watch_catch_up(
            bench,
            name,
            proc,
            group,
            topics,
            database_url=database_url,
            budget_s=budget_s,
            started=started,
        )
    finally:
        if spy is not None:
            _stop_py_spy(spy)
        await asyncio.to_thread(stop_it)


async def floor(bench: Bench, ns: Namespace, budget_s: float, profile: Path | None = None) -> Run:
    """The stage runtime with a handler that does nothing (`bench.floor`), on the same backlog
    from an empty database, configured as a stage service is: the most any stage can reach."""
    url = await ns.database("floor")
    # a stage's principal: the floor reads what awareness reads
    env = bench.process_env(ns, "floor", principal="awareness", FLYWHEEL_HEALTH_PORT="0")
    started = time.monotonic()
    proc = bench.spawn("floor", ["bench.floor"], env=env)
    run = await _catch_up_of(
        bench,
        "floor",
        proc,
        [ns.topic(MEMBER_ACTIVITY.name)],
        group=ns.prefix + "floor",
        database_url=url,
        budget_s=budget_s,
        started=started,
        profile=profile,
        stop_it=lambda: stop(proc),
    )
    run.name = "floor (the runtime, no rules)"
    return run


async def quix(
    bench: Bench, ns: Namespace, budget_s: float, guarantee: str, *, journey: bool = True
) -> Run:
    """The engagement stage as a Quix Streams app (`bench.quix_engagement`) on the same
    backlog; `journey=False` leaves the honeymoons and product feedback out."""
    variant = guarantee if journey else f"{guarantee}-scoring"  # its own group and state
    group = f"{ns.prefix}quix-engagement-{variant}"
    state = bench.state_dir / f"quix-state-{variant}"
    started = time.monotonic()
    proc = bench.spawn(
        f"quix-{variant}",
        [
            "bench.quix_engagement",
            "--bootstrap",
            bench.bootstrap,
            "--source",
            ns.topic(MEMBER_ACTIVITY.name),
            "--sink",
            ns.topic(QUIX_OUT.name),
            "--group",
            group,
            "--state-dir",
            str(state),
            "--guarantee",
            guarantee,
            *(() if journey else ("--no-journey",)),
        ],
    )
    try:
        run = await watch_catch_up(
            bench,
            "quix",
            proc,
            group,
            [ns.topic(MEMBER_ACTIVITY.name)],
            database_url=None,
            budget_s=budget_s,
            started=started,
        )
    finally:
        stop(proc)
    run.name = f"quix engagement ({guarantee}{'' if journey else ', scoring only'})"
    return run


async def replicas(
    bench: Bench, ns: Namespace, service: str, count: int, budget_s: float
) -> dict[str, Any]:
    """`count` replicas of one stage service (one consumer group, one database, distinct
    static member ids) catching up together on the namespace's backlog, from an empty
    database: rate = records over the time from the last look with nothing committed to lag
    0 with the outbox drained, as for one service alone; CPU summed over the replicas."""
    url = await ns.database(service)
    group = ns.prefix + service
    topics = [ns.topic(t) for t in CONSUMES[service]]
    started = time.monotonic()
    procs = [
        _spawn_service(bench, ns, service, FLYWHEEL_INSTANCE_ID=f"replica-{i}")
        for i in range(count)
    ]
    names = [f"{service}-{i}" for i in range(count)]
    watch = ProcessWatch({n: p.pid for n, p in zip(names, procs, strict=True)} | bench.infra)
    timeline: list[tuple[float, int]] = []
    finished = True
    try:
        async with LagWatch(bench.bootstrap) as lags:
            backlog = await lags.ends(topics)
            idle_until = started
            while True:
                for n, p in zip(names, procs, strict=True):
                    if p.poll() is not None:
                        raise RuntimeError(f"{n} exited with {p.returncode}; see the logs")
                now = time.monotonic()
                lag = await lags.lag(group, topics)
                watch.sample()
                timeline.append((round(now - started, 2), lag))
                if lag >= backlog:
                    idle_until = now
                if lag == 0 and await outbox_empty(url):
                    break
                if now - started > budget_s:
                    finished = False
                    break
                await asyncio.sleep(POLL_S)
        end = time.monotonic()
        cpu = watch.cpu_seconds()
    finally:
        for p in procs:
            await asyncio.to_thread(stop, p)
    records = backlog - lag
    seconds = end - idle_until
    own = sum(cpu[n] for n in names)
    return {
        "replicas": count,
        "partitions": ns.partitions,
        "records": records,
        "seconds": round(seconds, 2),
        "wall_s": round(end - started, 2),
        "rate_per_s": round(records / seconds, 1) if seconds > 0 else 0.0,
        "records_per_cpu_s": round(records / own, 1) if own > 0 else None,
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "peak_rss_mib": {n: round(watch.peak_rss[n] / 2**20, 1) for n in names},
        "finished": finished,
        "timeline": timeline,
    }


def _spawn_service(
    bench: Bench, ns: Namespace, service: str, **env: str
) -> subprocess.Popen[bytes]:
    """`python -m services.<service>` in the namespace, outside DevStack's one-process-per-
    service bookkeeping (replicas): no health port, its own log."""
    full = bench.process_env(ns, service, **{**env, "FLYWHEEL_HEALTH_PORT": "0"})
    root = Path(__file__).resolve().parents[1]
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), full.get("PYTHONPATH", "")) if p)
    name = f"{service}-{env.get('FLYWHEEL_INSTANCE_ID', 'x')}"
    log = (bench.state_dir / "logs" / f"{ns.prefix}{name}.log").open("ab")
    with log:
        return subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            cwd=root,
            env=full,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Sample the service without pausing it (--nonblocking), until told to stop."""
    out.parent.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        raise SystemExit("--profile needs py-spy: pip install -e '.[bench]'")
    return subprocess.Popen(
        [
            *(str(py_spy), "record", "--pid", str(pid), "--rate", "97", "--nonblocking"),
            *("--format", "raw", "--output", str(out), "--duration", "3600"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop_py_spy(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes what it sampled on Ctrl-C
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --------------------------------------------------------------------------------------------
# 3, 4: the gateway's ingest, end-to-end latency
# --------------------------------------------------------------------------------------------


def _api_key() -> str:
    import secrets

    return "bench-" + secrets.token_hex(20)


async def gateway_ingest(
    bench: Bench,
    ns: Namespace,
    records: list[Record],
    batch: int,
    concurrency: int,
    profile: Path | None = None,
) -> dict[str, Any]:
    """POST the activities in batches, `concurrency` requests in flight; rate = accepted/s."""
    await ns.database("gateway")
    key = _api_key()
    proc = bench.start_service("gateway", ns, FLYWHEEL_API_KEYS=f"bench={key}:ingest,read,admin")
    await asyncio.to_thread(bench.stack.wait_service_ready, "gateway", 180)
    url = bench.stack.endpoints.gateway_url
    assert url is not None
    watch = ProcessWatch({"gateway": proc.pid, **bench.infra})
    bodies = [
        b'{"activities":[' + b",".join(r.value for r in records[i : i + batch]) + b"]}"
        for i in range(0, len(records), batch)
    ]
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    spy = _py_spy(proc.pid, profile) if profile is not None else None
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:

            async def worker() -> None:
                while not queue.empty():
                    body = queue.get_nowait()
                    for attempt in range(20):
                        t0 = time.monotonic()
                        response = await client.post("/v1/activities", content=body)
                        if response.status_code == 202:
                            latencies.append(time.monotonic() - t0)
                            break
                        if response.status_code != 503:
                            raise RuntimeError(f"gateway: {response.status_code} {response.text}")
                        await asyncio.sleep(0.2 * (attempt + 1))
                    watch.sample()

            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            took = time.monotonic() - started
    finally:
        cpu = watch.cpu_seconds()
        if spy is not None:
            _stop_py_spy(spy)
        await asyncio.to_thread(bench.stop_service, "gateway")
    return {
        "activities": len(records),
        "batch": batch,
        "concurrency": concurrency,
        "seconds": round(took, 2),
        "rate_per_s": round(len(records) / took, 1),
        "request_p50_ms": round(_pct(latencies, 50) * 1000, 1),
        "request_p99_ms": round(_pct(latencies, 99) * 1000, 1),
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "peak_rss_mib": round(watch.peak_rss["gateway"] / 2**20, 1),
    }


def _pct(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def _p50_p95_p99_ms(seconds: Sequence[float]) -> list[float] | None:
    """None when there is nothing to take percentiles of."""
    return [round(_pct(seconds, q) * 1000, 1) for q in (50, 95, 99)] if seconds else None


WARM_UP_S = 10.0
"""The end-to-end phase's steady-state figures leave out activities sent in its first seconds."""


async def end_to_end(
    bench: Bench, ns: Namespace, rate: int, seconds: float, drain_s: float = 15.0
) -> dict[str, Any]:
    """Every service running; `rate` activities/s over HTTP (open loop: the schedule does not
    wait for answers); latency from the 202 to the transition on journey-transitions."""
    key, procs = await bench.start_all(ns)
    try:
        url = bench.stack.endpoints.gateway_url
        assert url is not None
        return await _drive(bench, ns, url, key, rate, seconds, drain_s, procs)
    finally:
        await bench.stop_all(procs)


async def _drive(
    bench: Bench,
    ns: Namespace,
    url: str,
    key: str,
    rate: int,
    seconds: float,
    drain_s: float,
    procs: dict[str, subprocess.Popen[bytes]],
) -> dict[str, Any]:
    accepted: dict[str, float] = {}  # activity id -> when its request's 202 came back
    posted: dict[str, float] = {}  # activity id -> when its request was sent
    seen: dict[str, tuple[float, str]] = {}
    watch = ProcessWatch({n: p.pid for n, p in procs.items()})
    consumer = AIOKafkaConsumer(
        ns.topic(JOURNEY_TRANSITIONS.name),
        bootstrap_servers=bench.bootstrap,
        group_id=None,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,  # as the services: the bench must not add its own
        **client_security(Settings()),
    )
    await consumer.start()
    await consumer.getmany(timeout_ms=500)  # assigned, positioned at the end
    stopping = asyncio.Event()

    async def read() -> None:
        import orjson

        while not stopping.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for records in batch.values():
                for r in records:
                    data = orjson.loads(r.value or b"{}")
                    for cause in data.get("caused_by", ()):
                        seen.setdefault(cause, (now, data.get("dimension", "?")))

    reader = asyncio.create_task(read())
    tick_s = 0.05
    per_tick = max(1, round(rate * tick_s))
    n = 0
    members: list[str] = []  # signed up (accepted), not yet given a talk
    retried = 0  # requests sent again after a transport error
    causes: dict[str, str] = {}  # activities that must each cause one transition: their kind
    late = 0
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    try:
        async with httpx.AsyncClient(
            base_url=url,
            headers=headers,
            timeout=30,
            # Idle connections closed by us before the gateway's keep-alive (5 s) can: one it
            # closes as a request starts on it is an httpx.ReadError, and a lost request.
            limits=httpx.Limits(
                max_connections=64, max_keepalive_connections=64, keepalive_expiry=2.0
            ),
        ) as client:
            in_flight: set[asyncio.Task[None]] = set()

            async def post(activities: list[dict[str, Any]]) -> None:
                nonlocal retried
                body = {"activities": activities}
                sent_at = time.monotonic()
                for attempt in range(3):
                    try:
                        response = await client.post("/v1/activities", json=body)
                        break
                    except httpx.TransportError:
                        if attempt == 2:
                            raise
                        retried += 1  # the same ids again: the services drop a duplicate
                now = time.monotonic()
                if response.status_code == 202:
                    for a in activities:
                        accepted[a["activity_id"]] = now
                        posted[a["activity_id"]] = sent_at
                        if a["kind"] == "signup":
                            # Talked about only once the sign-up is in the log: requests in
                            # flight together may be written in any order, and a talk read
                            # first would make the member (awareness's "first seen as a
                            # member"), leaving the sign-up nothing to transition.
                            members.append(a["actor"]["member_id"])

            loop = asyncio.get_running_loop()
            begin = loop.time()
            ticks = int(seconds / tick_s)
            for tick in range(ticks):
                due = begin + tick * tick_s
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -tick_s:
                    late += 1
                at = datetime.now(UTC)
                batch: list[dict[str, Any]] = []
                newest = "e2e-m-0"
                for i in range(per_tick):
                    n += 1
                    slot = i % 5
                    if slot in (0, 1):  # a new member: awareness moves them to member
                        newest = f"e2e-m-{n}"
                        batch.append(e2e_activity(n, newest, "signup", at, email=True))
                        causes[batch[-1]["activity_id"]] = "signup"
                    elif slot == 2 and len(members) > 50:  # a talk: engaged at once
                        batch.append(e2e_activity(n, members.pop(0), "event_talk", at))
                        causes[batch[-1]["activity_id"]] = "event_talk"
                    else:  # reading and reacting: no transition
                        # by a member this request signs up, after the sign-up: a few
                        # reactions each, never enough to engage before the talk
                        batch.append(e2e_activity(n, newest, "reaction", at))
                task = asyncio.create_task(post(batch))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                watch.sample()
            sent_s = loop.time() - begin
            if in_flight:
                await asyncio.gather(*in_flight)
        # Every transition is waited for (up to drain_s): the slowest are what p99 is about,
        # so stopping at "most of them" would flatter it. Those still missing are reported.
        deadline = time.monotonic() + drain_s
        while any(a not in seen for a in causes):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        stopping.set()
        await reader
        await consumer.stop()
    lat: dict[str, list[float]] = {}
    by_second: dict[int, list[float]] = {}
    t0 = min(accepted.values(), default=0.0)
    for activity_id, (t_seen, dimension) in seen.items():
        t_ok = accepted.get(activity_id)
        if t_ok is not None:
            lat.setdefault(dimension, []).append(max(0.0, t_seen - t_ok))
            by_second.setdefault(int(t_ok - t0), []).append(max(0.0, t_seen - t_ok))
    every = [x for xs in lat.values() for x in xs]
    # From the request's sending instead: the 202 comes back only once the gateway's event loop
    # gets to it, while the services may already be applying the record; a busy gateway makes
    # the figure from the 202 look shorter. This one is what a client waits in all.
    whole = [t_seen - posted[a] for a, (t_seen, _) in seen.items() if a in posted]
    answered = [accepted[a] - posted[a] for a in posted]
    # The same two figures without the first WARM_UP_S seconds, when the stack is new to the
    # load (the broker's and PostgreSQL's first seconds more than the services': PERFORMANCE.md,
    # fifth round): nearer what a long-running deployment sees. The target is judged on the
    # whole run; this tells whether its p99 is the warm-up's.
    t0_sent = min(posted.values(), default=0.0)
    steady = [a for a in seen if a in posted and posted[a] - t0_sent >= WARM_UP_S]
    missing = [a for a in causes if a not in seen]
    result: dict[str, Any] = {
        "offered_rate_per_s": rate,
        "seconds": seconds,
        "sent": n,
        "accepted": len(accepted),
        "achieved_rate_per_s": round(len(accepted) / sent_s, 1) if sent_s else 0,
        "late_ticks": late,
        "retried_requests": retried,
        "transitions_matched": len(every),
        "transitions_expected": len(causes),
        "transitions_missing": len(missing),
        "transitions_missing_by_kind": dict(Counter(causes[a] for a in missing)),
        "missing_never_accepted": sum(1 for a in missing if a not in accepted),
        # when the missing were accepted, in seconds after the first: the run's last moments
        # (still in flight when the drain ended) or anywhere (lost, or held back)
        "missing_accepted_at_s": sorted(
            round(accepted[a] - t0, 1) for a in missing if a in accepted
        )[:20],
        "p50_ms": round(_pct(every, 50) * 1000, 1),
        "p95_ms": round(_pct(every, 95) * 1000, 1),
        "p99_ms": round(_pct(every, 99) * 1000, 1),
        "max_ms": round(max(every) * 1000, 1) if every else None,
        "from_request_p50_p95_p99_ms": [round(_pct(whole, q) * 1000, 1) for q in (50, 95, 99)],
        "request_p50_p99_ms": [round(_pct(answered, q) * 1000, 1) for q in (50, 99)],
        "steady_after_s": WARM_UP_S,
        # None when the run is no longer than the warm-up (`--quick`)
        "steady_p50_p95_p99_ms": _p50_p95_p99_ms([seen[a][0] - accepted[a] for a in steady]),
        "steady_from_request_p50_p95_p99_ms": _p50_p95_p99_ms(
            [seen[a][0] - posted[a] for a in steady]
        ),
        "by_dimension_p99_ms": {d: round(_pct(xs, 99) * 1000, 1) for d, xs in lat.items()},
        "mean_ms": round(statistics.fmean(every) * 1000, 1) if every else None,
        "p99_ms_by_second": [
            round(_pct(by_second[k], 99) * 1000) for k in sorted(by_second)
        ],  # warm-up shows here, separate from the steady state
        "cpu_s": {k: round(v, 2) for k, v in watch.cpu_seconds().items()},
        "peak_rss_mib": {k: round(v / 2**20, 1) for k, v in watch.peak_rss.items()},
    }
    return result


# --------------------------------------------------------------------------------------------
# 5, 6: memory as members grow, and a replay into empty databases
# --------------------------------------------------------------------------------------------


MEMBERS_SQL = "SELECT count(*) FROM people WHERE stage IN ('member', 'customer')"
"""Members awareness holds (visitors, and visitor ids merged at sign-up, are not members)."""


async def _members(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(MEMBERS_SQL))
    except asyncpg.UndefinedTableError:
        return 0  # not migrated yet
    finally:
        await conn.close()


async def all_stages(
    bench: Bench,
    ns: Namespace,
    budget_s: float,
    *,
    checkpoints: Sequence[int] = (),
    progress_every_s: float = 5.0,
) -> dict[str, Any]:
    """The three stage services at once from empty databases on the namespace's backlog, until
    every group is at lag 0 with its outbox drained (or the budget is spent). At each member
    checkpoint: every service's resident memory and database size."""
    for s in STAGES:
        await ns.database(s)
    started = time.monotonic()
    procs = {s: bench.start_service(s, ns) for s in STAGES}
    watch = ProcessWatch({s: p.pid for s, p in procs.items()})
    marks: list[dict[str, Any]] = []
    pending = sorted(checkpoints)
    last_print = 0.0
    finished = False
    try:
        async with LagWatch(bench.bootstrap) as lags:
            totals = {s: await lags.ends([ns.topic(t) for t in CONSUMES[s]]) for s in STAGES}
            while True:
                for s, p in procs.items():
                    if p.poll() is not None:
                        raise RuntimeError(f"{s} exited with {p.returncode}; see the logs")
                now = time.monotonic() - started
                watch.sample()
                lag = {
                    s: await lags.lag(ns.prefix + s, [ns.topic(t) for t in CONSUMES[s]])
                    for s in STAGES
                }
                if pending or now - last_print >= progress_every_s:
                    members = await _members(ns.databases["awareness"])
                    while pending and members >= pending[0]:
                        marks.append(await _mark(ns, watch, pending.pop(0), members, now))
                if now - last_print >= progress_every_s:
                    last_print = now
                    done = sum(totals[s] - lag[s] for s in STAGES)
                    whole = sum(totals[s] for s in STAGES) or 1
                    bench.say(
                        f"  {now:6.0f} s  {done / whole:6.1%}  "
                        + "  ".join(f"{s} {totals[s] - lag[s]:,}/{totals[s]:,}" for s in STAGES)
                        + f"  members {members:,}"
                    )
                if all(v == 0 for v in lag.values()):
                    if await outboxes_empty(ns.databases[s] for s in STAGES):
                        finished = True
                        break
                    totals = {
                        s: await lags.ends([ns.topic(t) for t in CONSUMES[s]]) for s in STAGES
                    }
                if now > budget_s:
                    break
                await asyncio.sleep(1.0)
            wall = time.monotonic() - started
            cpu = watch.cpu_seconds()  # before the processes stop
            # what each consumed, against its topics' ends now (advocacy's backlog grew with
            # the signals engagement emitted meanwhile)
            totals = {s: await lags.ends([ns.topic(t) for t in CONSUMES[s]]) for s in STAGES}
            consumed = {
                s: totals[s] - await lags.lag(ns.prefix + s, [ns.topic(t) for t in CONSUMES[s]])
                for s in STAGES
            }
        members = await _members(ns.databases["awareness"])
        final = await _mark(ns, watch, members, members, wall)
    finally:
        for s in STAGES:
            await asyncio.to_thread(bench.stop_service, s)
    return {
        "finished": finished,
        "wall_s": round(wall, 1),
        "backlog": totals,
        "consumed": consumed,
        "checkpoints": marks,
        "final": final,
        "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
    }


async def _mark(
    ns: Namespace, watch: ProcessWatch, checkpoint: int, members: int, at_s: float
) -> dict[str, Any]:
    return {
        "checkpoint_members": checkpoint,
        "members": members,
        "at_s": round(at_s, 1),
        "rss_mib": {s: round(watch.last_rss[s] / 2**20, 1) for s in STAGES},
        "peak_rss_mib": {s: round(watch.peak_rss[s] / 2**20, 1) for s in STAGES},
        "database_mib": {
            s: round(await database_bytes(ns.databases[s]) / 2**20, 1) for s in STAGES
        },
    }


def growth_backlog(members: int, extra: float = 0.5, seed: int = 5) -> Iterator[Record]:
    """Every member signs up (half after a visit), then `extra` activities per member more.
    A generator: a million members' backlog is produced as it is made, never held."""
    total = int(members * (1.5 + extra))
    return community(total, members, seed=seed, all_members_first=True, prefix=f"g{members}")


# --------------------------------------------------------------------------------------------
# 7: a history import (`flywheel import`) through the gateway, until every service settled
# --------------------------------------------------------------------------------------------


def _settle_groups(ns: Namespace) -> dict[str, tuple[str, list[str]]]:
    """Every consumer group of the deployment: name -> (group, its topics)."""
    from services.gateway.delivery import fanout
    from services.gateway.delivery.worker import CONSUMER_GROUP as WEBHOOKS_GROUP

    groups = {s: (ns.prefix + s, [ns.topic(t) for t in CONSUMES[s]]) for s in STAGES}
    gateway = registry.spec("gateway")
    groups["gateway"] = (
        ns.prefix + gateway.consumer_group,
        [ns.topic(t.name) for t in gateway.consumes],
    )
    groups["gateway-webhooks"] = (
        ns.prefix + WEBHOOKS_GROUP,
        [ns.topic(t.name) for t in fanout.OUTPUT_TOPICS],
    )
    return groups


def import_activities(dump: Path) -> list[Record]:
    """The activities `flywheel import stackexchange` sends for the dump, encoded as it sends
    them (read, mapped and validated here, before any clock runs): the plain ingest's load."""
    from importers.meter import Meter
    from importers.runner import SOURCES

    records: list[Record] = []
    for item in SOURCES["stackexchange"].items(dump, Meter(), None):
        if item.activity is not None and item.problem is None and item.skipped is None:
            value = item.activity.model_dump_json(exclude_none=True).encode()
            records.append(Record(b"", value, [], item.activity.activity_id))
    return records


def _spread(samples: list[tuple[float, float]]) -> dict[str, float]:
    """The importer's RSS at 10 %, 50 % and 90 % of its run, and at its end: flat or not."""
    if not samples:
        return {}
    end = samples[-1][0] or 1.0
    at = {
        f"at_{p}pct": next((r for t, r in samples if t >= end * p / 100), samples[-1][1])
        for p in (10, 50, 90)
    }
    return {**at, "last": samples[-1][1]}
