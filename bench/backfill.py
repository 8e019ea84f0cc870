"""Backfills until every service has settled (issues 16 and 13): a history import
(`flywheel import stackexchange` as its own process) and the same activities POSTed plainly
through the gateway, each with every service up, in a namespace of its own.

Both phases time from the first activity sent until every consumer group (the three stages,
the gateway's read model and its outbound-webhook fan-out) is at lag 0 with every outbox
(stages and gateway) empty. They also look at each group's lag every second while the
activities go in, so the JSON says which group settled last and how far behind each was when
the last activity was acknowledged; with `profile_dir`, py-spy samples the importer, the
gateway and the stage services the whole time (bench/profile.py summarises them).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx

from bench.env import LagWatch, Namespace, ProcessWatch, outboxes_empty
from bench.phases import (
    POLL_S,
    STAGES,
    Bench,
    _py_spy,
    _settle_groups,
    _spread,
    _stop_py_spy,
    stop,
)
from bench.workload import Record

LAG_EVERY_S = 1.0


async def _until_settled(
    bench: Bench,
    ns: Namespace,
    procs: dict[str, subprocess.Popen[bytes]],
    feeder: Callable[[], Coroutine[Any, Any, None]],
    watch: ProcessWatch,
    budget_s: float,
    feeder_name: str,
) -> dict[str, Any]:
    """Run `feeder` (it sends every activity and returns), then wait for everything to
    settle; return the times, per-group lags over time and each group's settle time."""
    groups = _settle_groups(ns)
    databases = [ns.databases[s] for s in (*STAGES, "gateway")]
    started = time.monotonic()
    task = asyncio.create_task(feeder())
    fed_s: float | None = None
    settled_s: float | None = None
    timeline: list[dict[str, Any]] = []
    group_zero: dict[str, float] = {}
    lags_at_fed: dict[str, int] = {}
    lags: dict[str, int] = {}
    rss: list[tuple[float, float]] = []
    at_bound: dict[str, dict[str, int]] = {}
    next_lag = 0.0
    try:
        async with LagWatch(bench.bootstrap) as lag_watch:
            while True:
                now = time.monotonic() - started
                watch.sample()
                if feeder_name in watch.last_rss:
                    rss.append((round(now, 1), round(watch.last_rss[feeder_name] / 2**20, 1)))
                if fed_s is None and task.done():
                    task.result()  # a failed feeder fails the phase
                    fed_s = now
                    for name, (group, topics) in groups.items():
                        lags_at_fed[name] = await lag_watch.lag(group, topics)
                if now >= next_lag:
                    next_lag = now + LAG_EVERY_S
                    for name, (group, topics) in groups.items():
                        lags[name] = await lag_watch.lag(group, topics)
                    timeline.append({"t": round(now, 1), **lags})
                    if fed_s is not None:
                        for name, lag in lags.items():
                            if lag == 0:
                                group_zero.setdefault(name, round(now, 1))
                            else:
                                group_zero.pop(name, None)
                if fed_s is not None and await _settled(lag_watch, groups, databases, lags):
                    settled_s = time.monotonic() - started
                    break
                if now > budget_s:
                    # how far everything got: each group's records consumed of those there
                    for name, (group, topics) in groups.items():
                        end = await lag_watch.ends(topics)
                        lag = await lag_watch.lag(group, topics)
                        at_bound[name] = {"consumed": end - lag, "end": end}
                    break
                for name, p in procs.items():
                    if p.poll() is not None:
                        raise RuntimeError(f"{name} exited with {p.returncode}; see the logs")
                await asyncio.sleep(POLL_S)
    finally:
        if not task.done():
            task.cancel()
    return {
        "fed_s": round(fed_s, 2) if fed_s is not None else None,
        "settled_s": round(settled_s if settled_s is not None else time.monotonic() - started, 2),
        "settled": settled_s is not None,
        "unsettled_lag": {k: v for k, v in lags.items() if v} if settled_s is None else {},
        "lag_when_fed": lags_at_fed,
        "group_settled_s": group_zero,
        "at_bound": at_bound,
        "lag_timeline": timeline,
        "_rss": rss,
    }


async def _settled(
    lag_watch: LagWatch,
    groups: dict[str, tuple[str, list[str]]],
    databases: list[str],
    lags: dict[str, int],
) -> bool:
    """Outboxes empty, every group at lag 0, outboxes still empty: nothing left anywhere (an
    event an outbox published between the two looks shows as lag in the first)."""
    if not await outboxes_empty(databases):
        return False
    for name, (group, topics) in groups.items():
        lags[name] = await lag_watch.lag(group, topics)
    if any(lags.values()):
        return False
    return await outboxes_empty(databases)


def _spies(
    profile_dir: Path | None, pids: dict[str, int]
) -> dict[str, tuple[Path, subprocess.Popen[bytes]]]:
    if profile_dir is None:
        return {}
    spies = {}
    for name, pid in pids.items():
        out = profile_dir / f"py-spy-{name}.txt"
        spies[name] = (out, _py_spy(pid, out))
    return spies


def _summaries(spies: dict[str, tuple[Path, subprocess.Popen[bytes]]]) -> dict[str, Any]:
    from bench.profile import summarize

    found: dict[str, Any] = {}
    for name, (out, proc) in spies.items():
        _stop_py_spy(proc)
        if out.exists():
            found[name] = summarize(out, top=25)
    return found


def _sent(checkpoint: Path) -> int:
    """Activities the importer had sent (acknowledged), from its checkpoint."""
    try:
        return int(json.loads(checkpoint.read_text()).get("sent", 0))
    except (OSError, ValueError):
        return 0


def _projection(result: dict[str, Any], activities: int) -> float | None:
    """A phase stopped at its bound: the time to settle everything at the pace it had, i.e.
    the time so far over the share of all activities the slowest group has handled (the
    share sent, times that group's share of the records there are so far)."""
    at = result["at_bound"]
    sent = at.get("sent", 0)
    shares = [g["consumed"] / g["end"] for k, g in at.items() if k != "sent" and g["end"]]
    done = (sent / activities) * min(shares, default=1.0) if activities else 0.0
    return round(result["settled_s"] / done, 1) if done > 0 else None


async def history_import(
    bench: Bench,
    ns: Namespace,
    dump: Path,
    activities: int,
    budget_s: float,
    *,
    batch_size: int = 1000,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Every service up (the gateway with clock ticks off, as for any backfill), then
    `python -m ops.cli import stackexchange DUMP` as its own process; the time counts from the
    importer's start until everything settled. The importer's resident memory is sampled."""
    key, procs = await bench.start_all(ns)
    url = bench.stack.endpoints.gateway_url
    assert url is not None
    argv = [
        *("ops.cli", "import", "stackexchange", str(dump)),
        *("--gateway", url, "--api-key", key, "--batch-size", str(batch_size)),
        *("--checkpoint", str(bench.state_dir / f"{ns.prefix}import.json")),
    ]
    importer = bench.spawn("importer", argv)
    pids = {"importer": importer.pid, **{n: p.pid for n, p in procs.items()}}
    watch = ProcessWatch({**pids, **bench.infra})
    spies = _spies(profile_dir, pids)
    importer_cpu = 0.0

    async def feeder() -> None:
        nonlocal importer_cpu
        while (code := importer.poll()) is None:
            importer_cpu = max(importer_cpu, watch.cpu_seconds()["importer"])
            await asyncio.sleep(POLL_S)
        if code != 0:
            raise RuntimeError(f"the importer exited with {code}; see its log")

    try:
        result = await _until_settled(bench, ns, procs, feeder, watch, budget_s, "importer")
        cpu_all = watch.cpu_seconds()
    finally:
        profiles = _summaries(spies)
        stop(importer)
        await bench.stop_all(procs)
    if not result["settled"]:
        result["at_bound"]["sent"] = _sent(bench.state_dir / f"{ns.prefix}import.json")
        result["projected_settle_s"] = _projection(result, activities)
    rss = result.pop("_rss")
    # the importer's RSS while it ran (after it exited it reads as its last sample)
    fed = result["fed_s"] or result["settled_s"]
    rss = [(t, r) for t, r in rss if t <= fed]
    seconds = result["settled_s"]
    return {
        "activities": activities,
        "batch_size": batch_size,
        "imported_s": result["fed_s"],
        **result,
        "sent_rate_per_s": round(activities / result["fed_s"], 1) if result["fed_s"] else 0.0,
        "rate_per_s": round(activities / seconds, 1) if result["settled"] else 0.0,
        "importer_peak_rss_mib": round(max((r for _, r in rss), default=0.0), 1),
        "importer_rss_mib": _spread(rss),
        "cpu_s": {k: round(v, 2) for k, v in {**cpu_all, "importer": importer_cpu}.items()},
        "peak_rss_mib": {k: round(v / 2**20, 1) for k, v in watch.peak_rss.items()},
        **({"profiles": profiles} if profiles else {}),
    }


async def gateway_backfill(
    bench: Bench,
    ns: Namespace,
    records: list[Record],
    budget_s: float,
    *,
    batch: int = 1000,
    concurrency: int = 4,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Issue 13's backfill: the activities POSTed to `/v1/activities` (batches of `batch`,
    `concurrency` in flight) with every service up, until everything settled."""
    key, procs = await bench.start_all(ns)
    url = bench.stack.endpoints.gateway_url
    assert url is not None
    pids = {n: p.pid for n, p in procs.items()}
    watch = ProcessWatch({**pids, **bench.infra})
    spies = _spies(profile_dir, pids)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    starts = list(range(0, len(records), batch))

    async def feeder() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:

            async def worker() -> None:
                while starts:
                    i = starts.pop(0)
                    body = (
                        b'{"activities":['
                        + b",".join(r.value for r in records[i : i + batch])
                        + b"]}"
                    )
                    for attempt in range(50):
                        response = await client.post("/v1/activities", content=body)
                        if response.status_code == 202:
                            break
                        if response.status_code not in (429, 503):
                            raise RuntimeError(f"gateway: {response.status_code} {response.text}")
                        await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))
                    else:
                        raise RuntimeError("gateway: still busy after 50 attempts")

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    try:
        result = await _until_settled(bench, ns, procs, feeder, watch, budget_s, "gateway")
        cpu_all = watch.cpu_seconds()
    finally:
        profiles = _summaries(spies)
        await bench.stop_all(procs)
    result.pop("_rss")
    if not result["settled"]:
        result["at_bound"]["sent"] = len(records) - len(starts) * batch  # about: posted so far
        result["projected_settle_s"] = _projection(result, len(records))
    seconds = result["settled_s"]
    return {
        "activities": len(records),
        "batch": batch,
        "concurrency": concurrency,
        **result,
        "sent_rate_per_s": round(len(records) / result["fed_s"], 1) if result["fed_s"] else 0.0,
        "rate_per_s": round(len(records) / seconds, 1) if result["settled"] else 0.0,
        "cpu_s": {k: round(v, 2) for k, v in cpu_all.items()},
        "peak_rss_mib": {k: round(v / 2**20, 1) for k, v in watch.peak_rss.items()},
        **({"profiles": profiles} if profiles else {}),
    }
