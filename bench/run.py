"""`python -m bench [--quick]`: the flywheel's performance figures on the real stack.

Starts its own DevStack (a Kafka 4.1 broker and PostgreSQL as local processes) in a temporary
state directory, measures, prints a table, writes the same figures as JSON to bench/results/
(with the exact command, the machine and the versions), and stops everything it started.

Figures (docs/PERFORMANCE.md explains each and what limits it):
 1. the ceiling: a raw aiokafka consume-produce-commit passthrough on the same broker;
 2. each stage service's sustained catch-up rate on a backlog, and its ratio to the ceiling;
    the stage runtime with a handler that does nothing (the floor under every stage);
    the engagement stage once more as a Quix Streams application, side by side;
 3. the gateway's ingest rate over HTTP batches;
 4. end-to-end latency (HTTP 202 -> transition on journey-transitions) at a steady load;
 5. resident memory of each service and database size as members grow;
 6. a replay of a large log into empty databases: wall time;
 7. a history import (`flywheel import stackexchange`) through the gateway until every service
    has settled: its rate against a plain POST /v1/activities of the same activities, and the
    importer's resident memory;
 8. the dashboard's queries on generated read models (bench/dashboard.py);
 9. 1, 2 and 3 replicas of engagement catching up together on a 6-partition backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = (
    "ceiling",
    "stages",
    "floor",
    "quix",
    "gateway",
    "e2e",
    "memory",
    "replay",
    "import",
    "backfill",
    "dashboard",
    "replicas",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes: a few minutes (CI)")
    p.add_argument("--activities", type=int, help="catch-up backlog (200,000; quick 20,000)")
    p.add_argument("--members", type=int, help="members of that backlog (activities / 8)")
    p.add_argument("--gateway-activities", type=int, help="ingest (100,000; quick 10,000)")
    p.add_argument("--e2e-rate", type=int, default=1000, help="offered activities/s (1000)")
    p.add_argument("--e2e-seconds", type=float, help="steady load duration (60; quick 8)")
    p.add_argument(
        "--memory-sizes", help="member checkpoints, comma-separated (10k,100k,1M; quick 1k,5k,10k)"
    )
    p.add_argument("--replay", type=int, help="activities replayed (1,000,000; quick 20,000)")
    p.add_argument(
        "--import-rows", type=int, help="Stack Exchange rows imported (1,000,000; quick 10,000)"
    )
    p.add_argument("--budget-s", type=float, help="bound of one catch-up (900; quick 240)")
    p.add_argument("--import-budget-s", type=float, help="bound of the import (1800; quick 300)")
    p.add_argument("--memory-budget-s", type=float, help="bound of the memory run (1200; q 240)")
    p.add_argument("--replay-budget-s", type=float, help="bound of the replay (1800; quick 240)")
    p.add_argument(
        "--dashboard-members", help="read-model sizes of the dashboard phase (100k,1M; quick 10k)"
    )
    p.add_argument("--replicas", help="replica counts of the replicas phase (1,2,3; quick 1,2)")
    p.add_argument(
        "--replica-service", default="engagement", help="the service the replicas phase runs"
    )
    p.add_argument("--only", help=f"comma-separated phases of {','.join(PHASES)}")
    p.add_argument("--quix-guarantee", default="exactly-once", help="exactly-once|at-least-once")
    p.add_argument(
        "--quix-peer",
        default="stage",
        help="what the Quix peer does, comma-separated for several: stage (the engagement"
        " stage's per-member work: scoring, peer help, honeymoons, product feedback; the one"
        " the ratios use) or scoring (scoring and peer help only: the peer as first written)",
    )
    p.add_argument(
        "--profile", action="store_true", help="py-spy each stage service while it catches up"
    )
    p.add_argument(
        "--gateway-read-model",
        choices=("in-process", "own-process"),
        default="in-process",
        help="phases 4, 7 and 7b: the gateway's read model inside the API's process "
        "(FLYWHEEL_GATEWAY_ROLE=all, as devstack and compose) or in one of its own "
        "(=api beside =read-model, as deploy/k8s)",
    )
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of every service started (experiments, e.g. "
        "FLYWHEEL_CONSUMER_MAX_RECORDS=2000)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    p.add_argument("--seed", type=int, default=11)
    a = p.parse_args(argv)
    q = a.quick
    a.activities = a.activities or (20_000 if q else 200_000)
    a.members = a.members or max(100, a.activities // 8)
    a.gateway_activities = a.gateway_activities or (10_000 if q else 100_000)
    a.e2e_seconds = a.e2e_seconds or (8.0 if q else 60.0)
    a.memory_sizes = [
        int(float(x.lower().replace("k", "e3").replace("m", "e6")))
        for x in (a.memory_sizes or ("1k,5k,10k" if q else "10k,100k,1M")).split(",")
    ]
    a.replay = a.replay or (20_000 if q else 1_000_000)
    a.import_rows = a.import_rows or (10_000 if q else 1_000_000)
    a.import_budget_s = a.import_budget_s or (300.0 if q else 1800.0)
    a.budget_s = a.budget_s or (240.0 if q else 900.0)
    a.memory_budget_s = a.memory_budget_s or (240.0 if q else 1200.0)
    a.replay_budget_s = a.replay_budget_s or (240.0 if q else 1800.0)
    a.dashboard_members = a.dashboard_members or ("10000" if q else "100000,1000000")
    a.replicas = a.replicas or ("1,2" if q else "1,2,3")
    a.phases = tuple(a.only.split(",")) if a.only else PHASES
    unknown = set(a.phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phase(s) {sorted(unknown)}; known: {', '.join(PHASES)}")
    if unknown_peers := set(a.quix_peer.split(",")) - {"stage", "scoring"}:
        p.error(f"--quix-peer: unknown {sorted(unknown_peers)}; known: stage, scoring")
    return a


def say(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("FLYWHEEL_LOG_LEVEL", "INFO")
    # Not under pytest's or the user's tmp root with 0700: the embedded PostgreSQL runs as an
    # unprivileged user when we are root, and must traverse the state dir.
    state_dir = Path(tempfile.mkdtemp(prefix="flywheel-bench-", dir="/tmp"))
    state_dir.chmod(0o755)
    from devstack.stack import DevStack

    stack = DevStack(
        state_dir, secure=False, service_timeout_s=180.0, progress=lambda m: say(f"stack: {m}")
    )
    started = time.monotonic()
    try:
        stack.start()
        report = asyncio.run(_measure(args, stack, state_dir, command))
    finally:
        stack.stop()
        _remove_cluster(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
    report["total_s"] = round(time.monotonic() - started, 1)
    rows = table(report)
    report["table"] = rows
    say("")
    say(markdown(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"bench-{'quick-' if args.quick else ''}{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    say(f"\nfigures written to {path} (total {report['total_s']:.0f} s)")
    return 0


def _remove_cluster(state_dir: Path) -> None:
    """Under root the embedded PostgreSQL keeps its data outside the state dir (see
    devstack/postgres.py); a bench's databases run to gigabytes, so remove ours now rather than
    leave it to the next stack's orphan collection."""
    cluster_id = state_dir / "postgres" / "cluster-id"
    if cluster_id.exists():
        name = cluster_id.read_text().strip()
        if name:
            shutil.rmtree(Path(tempfile.gettempdir()) / "flywheel-postgres" / name, True)


async def _measure(
    args: argparse.Namespace, stack: Any, state_dir: Path, command: str
) -> dict[str, Any]:
    from bench import env, phases
    from bench.workload import check_sample, community

    bench = phases.Bench(stack, state_dir, say)
    endpoints = stack.endpoints
    report: dict[str, Any] = {
        "command": command,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": env.machine(),
        "versions": {
            **env.versions(),
            "postgresql": await env.postgres_version(endpoints.postgres_admin_url),
        },
        "note": "taken on a shared machine: other work ran beside it (see machine.load_*)",
        "parameters": {
            k: v for k, v in vars(args).items() if k not in ("out",) and not k.startswith("_")
        },
        "figures": {},
    }
    figures: dict[str, Any] = report["figures"]
    bench.service_env = dict(kv.split("=", 1) for kv in args.service_env)
    bench.read_model_apart = args.gateway_read_model == "own-process"
    want = set(args.phases)

    if want & {"ceiling", "stages", "floor", "quix"}:
        say(f"\n== catch-up: {args.activities:,} activities, up to {args.members:,} members")
        ns = await bench.namespace("catchup", (env.PASSTHROUGH_OUT, env.QUIX_OUT))
        records = list(community(args.activities, args.members, seed=args.seed))
        say(f"  backlog made; {check_sample(records)} sampled records decode")
        figures["backlog"] = await phases.load_backlog(bench, ns, records)
        figures["backlog"]["members"] = len({r.key for r in records})
        del records
        runs: dict[str, Any] = {}
        if "ceiling" in want:
            runs["passthrough_before"] = await phases.ceiling(bench, ns, "before", args.budget_s)
            say(_run_line(runs["passthrough_before"]))
        if "stages" in want:
            for service in phases.STAGES:
                profile = state_dir / f"py-spy-{service}.txt" if args.profile else None
                run = await phases.stage(bench, ns, service, args.budget_s, profile=profile)
                runs[service] = run
                say(_run_line(run))
                _keep_profile(args, figures, service, profile)
        if "floor" in want:
            profile = state_dir / "py-spy-floor.txt" if args.profile else None
            runs["floor"] = await phases.floor(bench, ns, args.budget_s, profile)
            say(_run_line(runs["floor"]))
            _keep_profile(args, figures, "floor", profile)
        if "quix" in want and importlib.util.find_spec("quixstreams") is None:
            say("  quix: skipped, quixstreams is not installed (pip install -e '.[bench]')")
            figures["quix_skipped"] = "quixstreams is not installed"
        elif "quix" in want:
            for guarantee in args.quix_guarantee.split(","):
                for peer in args.quix_peer.split(","):
                    run = await phases.quix(
                        bench, ns, args.budget_s, guarantee, journey=peer == "stage"
                    )
                    runs[f"quix_{guarantee}" + ("" if peer == "stage" else "_scoring")] = run
                    say(_run_line(run))
        if "ceiling" in want:
            runs["passthrough_after"] = await phases.ceiling(bench, ns, "after", args.budget_s)
            say(_run_line(runs["passthrough_after"]))
        figures["catch_up"] = {k: r.figures() for k, r in runs.items()}
        figures["catch_up_ratios"] = catch_up_ratios(figures["catch_up"])

    if "gateway" in want:
        say(f"\n== gateway ingest: {args.gateway_activities:,} activities over HTTP")
        ns = await bench.namespace("gateway")
        records = list(
            community(args.gateway_activities, max(100, args.gateway_activities // 8), seed=3)
        )
        profile = state_dir / "py-spy-gateway.txt" if args.profile else None
        figures["gateway_ingest"] = await phases.gateway_ingest(
            bench, ns, records, batch=500, concurrency=4, profile=profile
        )
        _keep_profile(args, figures, "gateway", profile)
        say(f"  {figures['gateway_ingest']['rate_per_s']:,.0f} activities/s")

    if "e2e" in want:
        say(f"\n== end to end: {args.e2e_rate}/s for {args.e2e_seconds:g} s, every service up")
        ns = await bench.namespace("e2e")
        figures["end_to_end"] = await phases.end_to_end(bench, ns, args.e2e_rate, args.e2e_seconds)
        e = figures["end_to_end"]
        say(f"  p50 {e['p50_ms']} ms, p95 {e['p95_ms']} ms, p99 {e['p99_ms']} ms from the 202")
        whole = e["from_request_p50_p95_p99_ms"]
        say(f"  p50 {whole[0]} ms, p95 {whole[1]} ms, p99 {whole[2]} ms from the request sent")
        say(f"  {_steady_state(e)}")

    if "memory" in want:
        top = max(args.memory_sizes)
        say(f"\n== memory: members growing to {top:,} (checkpoints {args.memory_sizes})")
        ns = await bench.namespace("memory")
        figures["memory_backlog"] = await phases.load_backlog(bench, ns, phases.growth_backlog(top))
        figures["memory"] = await phases.all_stages(
            bench, ns, args.memory_budget_s, checkpoints=args.memory_sizes
        )

    if "replay" in want:
        say(f"\n== replay: {args.replay:,} activities into empty databases")
        ns = await bench.namespace("replay")
        replayed = community(args.replay, max(100, args.replay // 10), seed=args.seed + 1)
        figures["replay_backlog"] = await phases.load_backlog(bench, ns, replayed)
        figures["replay"] = await phases.all_stages(bench, ns, args.replay_budget_s)

    if "replicas" in want:
        counts = [int(x) for x in args.replicas.split(",")]
        service = args.replica_service
        say(f"\n== replicas: {counts} x {service} on {args.activities:,} activities, 6 partitions")
        runs_by_count: dict[str, Any] = {}
        for count in counts:
            ns = await bench.namespace(f"replicas{count}")
            await phases.load_backlog(
                bench, ns, community(args.activities, args.members, seed=args.seed)
            )
            r = await phases.replicas(bench, ns, service, count, args.budget_s)
            runs_by_count[str(count)] = r
            say(
                f"  {count} x {service}: {r['rate_per_s']:,.0f} records/s "
                f"({r['records_per_cpu_s'] or 0:,.0f} per CPU-second of the replicas)"
                + ("" if r["finished"] else "; BOUNDED")
            )
        one = runs_by_count.get("1", {}).get("rate_per_s")
        for r in runs_by_count.values():
            if one:
                r["speed_up"] = round(r["rate_per_s"] / one, 3)
        figures["replicas"] = {"service": service, "runs": runs_by_count}

    if want & {"import", "backfill"}:
        figures.update(await _import(args, bench, state_dir, figures, want))
    if "dashboard" in want:
        from bench import dashboard

        sizes = [int(x) for x in args.dashboard_members.split(",")]
        say(f"\n== dashboard queries: read models of {sizes} members")
        figures["dashboard"] = await dashboard.on_server(endpoints.postgres_admin_url, sizes)

    report["machine_end"] = env.machine()
    return report


async def _import(
    args: argparse.Namespace,
    bench: Any,
    state_dir: Path,
    figures: dict[str, Any],
    want: set[str],
) -> dict[str, Any]:
    """The dump generated; the same activities POSTed plain (the gateway alone, batches of
    1000 one at a time, as the importer sends); then, each with every service up, the same
    activities POSTed as a backfill (issue 13) and the import (issue 16) until settled."""
    from bench import backfill, phases
    from importers.bench import generate_stackexchange

    out: dict[str, Any] = {}
    say(f"\n== history import: {args.import_rows:,} Stack Exchange rows through the gateway")
    dump = state_dir / "import-dump"
    rows = generate_stackexchange(dump, args.import_rows, people=max(200, args.import_rows // 50))
    records = await asyncio.to_thread(phases.import_activities, dump)
    activities = len(records)
    say(f"  dump of {rows:,} rows made: {activities:,} activities")
    plain = await phases.gateway_ingest(
        bench, await bench.namespace("import-plain"), records, batch=1000, concurrency=1
    )
    say(f"  plain POST /v1/activities of the same: {plain['rate_per_s']:,.0f} activities/s")
    profiles = state_dir / "profiles" if args.profile else None
    if "backfill" in want:
        b = await backfill.gateway_backfill(
            bench,
            await bench.namespace("backfill"),
            records,
            args.import_budget_s,
            profile_dir=profiles / "backfill" if profiles else None,
        )
        b["plain_ingest"] = plain
        b["ratio_to_plain"] = round(b["rate_per_s"] / plain["rate_per_s"], 3)
        _projected_ratio(b, plain)
        _keep_profiles(args, b, profiles / "backfill" if profiles else None, "backfill")
        say(
            f"  backfill through the gateway: sent in {b['fed_s']} s, settled in "
            f"{b['settled_s']} s: {b['rate_per_s']:,.0f} activities/s "
            f"({b['ratio_to_plain']:.2f}x plain)"
        )
        out["backfill"] = b
    del records
    if "import" in want:
        result = await backfill.history_import(
            bench,
            await bench.namespace("import"),
            dump,
            activities,
            args.import_budget_s,
            profile_dir=profiles / "import" if profiles else None,
        )
        _keep_profiles(args, result, profiles / "import" if profiles else None, "import")
        result["rows"] = rows
        result["plain_ingest"] = plain
        result["ratio_to_plain"] = round(result["rate_per_s"] / plain["rate_per_s"], 3)
        _projected_ratio(result, plain)
        if "gateway_ingest" in figures:
            gateway = figures["gateway_ingest"]["rate_per_s"]
            result["ratio_to_gateway_phase"] = round(result["rate_per_s"] / gateway, 3)
        say(
            f"  imported in {result['imported_s']} s, settled in {result['settled_s']} s: "
            f"{result['rate_per_s']:,.0f} activities/s ({result['ratio_to_plain']:.2f}x plain); "
            f"importer peak RSS {result['importer_peak_rss_mib']:,.0f} MiB"
        )
        out["import"] = result
    shutil.rmtree(dump, ignore_errors=True)
    return out


def _projected_ratio(result: dict[str, Any], plain: dict[str, Any]) -> None:
    """A phase stopped at its bound: its projected rate, and that over the plain ingest's."""
    projected = result.get("projected_settle_s")
    if not result["settled"] and projected:
        result["projected_rate_per_s"] = round(result["activities"] / projected, 1)
        result["projected_ratio_to_plain"] = round(
            result["projected_rate_per_s"] / plain["rate_per_s"], 3
        )


def _keep_profiles(
    args: argparse.Namespace, result: dict[str, Any], where: Path | None, phase: str
) -> None:
    """The raw py-spy samples of a backfill phase beside the JSON."""
    if where is None or not where.exists():
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for raw in where.glob("py-spy-*.txt"):
        shutil.copy(raw, args.out / f"{phase}-{raw.name}")


def _keep_profile(
    args: argparse.Namespace, figures: dict[str, Any], name: str, profile: Path | None
) -> None:
    """The py-spy summary goes into the figures, the raw samples beside the JSON."""
    if profile is None or not profile.exists():
        return
    from bench.profile import summarize

    figures.setdefault("profiles", {})[name] = summarize(profile)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copy(profile, args.out / profile.name)


def _run_line(run: Any) -> str:
    f = run.figures()
    return (
        f"  {run.name:<32} {f['rate_per_s']:>9,.0f} records/s  ({f['records']:,} in "
        f"{f['seconds']:.1f} s; {f['records_per_cpu_s'] or 0:,.0f} per CPU-second"
        f"{'' if run.finished else '; BOUNDED: did not finish'})"
    )


def _steady_state(e: dict[str, Any]) -> str:
    """The end-to-end p99s without the run's first seconds (the verdict is the whole run's)."""
    steady, whole = e["steady_p50_p95_p99_ms"], e["steady_from_request_p50_p95_p99_ms"]
    if steady is None or whole is None:
        return f"no steady-state figure: the run is not longer than {e['steady_after_s']:g} s"
    return (
        f"after the first {e['steady_after_s']:g} s: p99 {steady[2]} ms from the 202, "
        f"{whole[2]} ms from the request sent"
    )


def _ratio(value: float, target: float) -> str:
    """Two decimals, or as many more as it takes not to round across the target: 0.997x of a
    1.0x target reads "0.997x (NOT met)", not "1.00x (NOT met)"."""
    for decimals in range(2, 7):
        text = f"{value:.{decimals}f}"
        if (float(text) >= target) == (value >= target):
            break
    return text


def _fmt(x: float) -> str:
    return f"{x:,.0f}"


CEILING_TARGET = 0.6
QUIX_TARGET = 1.0
"""Issue 13: every stage service catches up at >= 0.6x the passthrough ceiling and >= 1.0x
the Quix engagement peer (exactly-once), in the same run."""


def catch_up_ratios(cu: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each stage service's rate over the mean ceiling and over the Quix peer's (exactly-once),
    and its records per CPU-second over the peer's: the figures issue 13 is judged by. The
    floor (the runtime without a stage) is set against the ceiling only: no peer does its work."""
    ceilings = [cu[k]["rate_per_s"] for k in ("passthrough_before", "passthrough_after") if k in cu]
    ceiling = sum(ceilings) / len(ceilings) if ceilings else 0.0
    peer = cu.get("quix_exactly-once")
    ratios: dict[str, dict[str, float]] = {}
    for name in ("awareness", "engagement", "advocacy", "floor"):
        if name not in cu:
            continue
        r = cu[name]
        found: dict[str, float] = {}
        if ceiling:
            found["to_ceiling"] = round(r["rate_per_s"] / ceiling, 3)
        versus = peer if name != "floor" else None
        if versus and versus["rate_per_s"]:
            found["to_quix"] = round(r["rate_per_s"] / versus["rate_per_s"], 3)
        if versus and versus.get("records_per_cpu_s") and r.get("records_per_cpu_s"):
            found["to_quix_per_cpu_s"] = round(
                r["records_per_cpu_s"] / versus["records_per_cpu_s"], 3
            )
        ratios[name] = found
    return ratios


def table(report: dict[str, Any]) -> list[list[str]]:
    """[figure, value, target, verdict]: what the markdown table and the JSON both carry."""
    f = report["figures"]
    rows: list[list[str]] = []
    cu = f.get("catch_up", {})
    ceilings = [cu[k]["rate_per_s"] for k in ("passthrough_before", "passthrough_after") if k in cu]
    ceiling = sum(ceilings) / len(ceilings) if ceilings else 0.0
    if ceilings:
        rows.append(
            [
                "1. ceiling: aiokafka passthrough (records/s)",
                " / ".join(_fmt(c) for c in ceilings) + " (before / after)",
                "-",
                f"mean {_fmt(ceiling)}",
            ]
        )
    ratios = catch_up_ratios(cu)
    peers = [f"quix_{g}{p}" for g in ("exactly-once", "at-least-once") for p in ("", "_scoring")]
    for name in ("awareness", "engagement", "advocacy", "floor", *peers):
        if name not in cu:
            continue
        r = cu[name]
        side_by_side = name.startswith("quix") or name == "floor"  # figures, not targets
        if name == "floor":
            label = "the runtime's floor (no rules)"
        elif name.startswith("quix"):
            label = f"engagement on Quix ({name[5:].replace('_scoring', ', scoring only')})"
        else:
            label = name
        if ceiling:
            ratio = r["rate_per_s"] / ceiling
            verdict = f"{_ratio(ratio, CEILING_TARGET)}x ceiling"
            if not side_by_side:
                verdict += " (met)" if ratio >= CEILING_TARGET else " (NOT met)"
        else:
            verdict = "no ceiling in this run"
        peer = ratios.get(name, {})
        if "to_quix" in peer:
            met = peer["to_quix"] >= QUIX_TARGET
            verdict += f"; {_ratio(peer['to_quix'], QUIX_TARGET)}x Quix"
            verdict += " (met)" if met else " (NOT met)"
            verdict += f", {peer['to_quix_per_cpu_s']:.2f}x per CPU-s"
        if not r["finished"]:
            verdict += "; bounded"
        rows.append(
            [
                f"2. {label} catch-up (records/s)",
                f"{_fmt(r['rate_per_s'])} ({r['records_per_cpu_s'] or 0:,.0f}/CPU-s)",
                f">= {CEILING_TARGET}x ceiling, >= {QUIX_TARGET}x Quix"
                if not side_by_side
                else "side by side",
                verdict,
            ]
        )
    if "gateway_ingest" in f:
        g = f["gateway_ingest"]
        rows.append(
            [
                "3. gateway ingest over HTTP (activities/s)",
                f"{_fmt(g['rate_per_s'])} (batches of {g['batch']}, {g['concurrency']} in flight)",
                "-",
                f"request p99 {g['request_p99_ms']} ms",
            ]
        )
    if "end_to_end" in f:
        e = f["end_to_end"]
        whole = e["from_request_p50_p95_p99_ms"]
        ok = e["p99_ms"] == e["p99_ms"] and e["p99_ms"] < 250 and whole[2] < 250
        rows.append(
            [
                f"4. end to end at {e['offered_rate_per_s']}/s: p50 / p95 / p99 (ms)",
                f"{e['p50_ms']} / {e['p95_ms']} / {e['p99_ms']} (from the request sent: "
                f"{whole[0]} / {whole[1]} / {whole[2]})",
                "p99 < 250 ms",
                f"{'met' if ok else 'NOT met'} ({e['achieved_rate_per_s']}/s achieved, "
                f"{e['transitions_matched']} transitions, "
                f"{e.get('transitions_missing', 0)} missing; {_steady_state(e)})",
            ]
        )
    if "memory" in f:
        m = f["memory"]
        marks = list(m["checkpoints"])
        if not marks or m["final"]["members"] > marks[-1]["members"]:
            marks.append(m["final"])  # past the last checkpoint it reached: the growth to it
        for mark in marks:
            rows.append(
                [
                    f"5. memory at {mark['members']:,} members: RSS MiB (aw/en/ad), DB MiB",
                    " / ".join(
                        _fmt(mark["rss_mib"][s]) for s in ("awareness", "engagement", "advocacy")
                    )
                    + "; DB "
                    + " / ".join(
                        _fmt(mark["database_mib"][s])
                        for s in ("awareness", "engagement", "advocacy")
                    ),
                    "flat RSS",
                    f"at {mark['at_s']:.0f} s",
                ]
            )
        first, last = marks[0], marks[-1]
        growth = {
            s: last["rss_mib"][s] - first["rss_mib"][s]
            for s in ("awareness", "engagement", "advocacy")
        }
        rows.append(
            [
                f"5. RSS growth {first['members']:,} -> {last['members']:,} members (MiB)",
                " / ".join(f"{v:+.0f}" for v in growth.values()),
                "flat",
                ("reached " if m["finished"] else "BOUNDED at ")
                + f"{m['final']['members']:,} members in {m['wall_s']:.0f} s",
            ]
        )
    if "replay" in f:
        r = f["replay"]
        total = sum(r["backlog"].values())
        done = sum(r["consumed"].values())
        if r["finished"]:
            value = f"{r['wall_s']:.0f} s ({r['wall_s'] / 60:.1f} min)"
        else:
            projected = r["wall_s"] * total / max(1, done)
            value = (
                f"BOUNDED at {r['wall_s']:.0f} s, {done / total:.0%} done; "
                f"~{projected / 60:.0f} min projected"
            )
        rows.append(
            [
                f"6. replay of {f['replay_backlog']['records']:,} activities (3 services at once)",
                value,
                "minutes",
                f"{done / max(1.0, r['wall_s']):,.0f} records/s summed over services",
            ]
        )
    if "replicas" in f:
        rep = f["replicas"]
        for count, r in rep["runs"].items():
            rows.append(
                [
                    f"9. {count} x {rep['service']} on {r['partitions']} partitions (records/s)",
                    f"{_fmt(r['rate_per_s'])} ({r['records_per_cpu_s'] or 0:,.0f}/CPU-s)",
                    "scales with cores",
                    f"{r.get('speed_up', 1.0):.2f}x one replica"
                    + ("" if r["finished"] else "; bounded"),
                ]
            )
    if "import" in f:
        i = f["import"]
        per_million = _per_million(i)
        spread = i["importer_rss_mib"]
        rows.append(
            [
                f"7. history import of {i['activities']:,} activities until settled (activities/s)",
                f"{_fmt(i['rate_per_s'])} ({i['settled_s']:.0f} s; sent in {i['imported_s']} s)"
                + ("" if i["settled"] else _bounded(i)),
                "1M in < 3 min",
                f"{i['ratio_to_plain']:.2f}x plain ingest ({_fmt(i['plain_ingest']['rate_per_s'])}"
                f"/s); 1M ~{per_million / 60:.1f} min; importer RSS "
                + " / ".join(f"{spread[k]:,.0f}" for k in ("at_10pct", "at_50pct", "at_90pct"))
                + f" MiB (peak {i['importer_peak_rss_mib']:,.0f})",
            ]
        )
    if "backfill" in f:
        b = f["backfill"]
        rows.append(
            [
                f"7b. backfill of {b['activities']:,} activities through the gateway until "
                "settled (activities/s)",
                f"{_fmt(b['rate_per_s'])} ({b['settled_s']:.0f} s; sent in {b['fed_s']} s)"
                + ("" if b["settled"] else _bounded(b)),
                "1M in < 3 min",
                f"{b['ratio_to_plain']:.2f}x plain ingest ({_fmt(b['plain_ingest']['rate_per_s'])}"
                f"/s); batches of {b['batch']}, {b['concurrency']} in flight",
            ]
        )
    return rows


def _per_million(f: dict[str, Any]) -> float:
    """Seconds for 1M activities at the phase's pace (a bounded one: its projection)."""
    if f["rate_per_s"]:
        return float(1_000_000 / f["rate_per_s"])
    projected = f.get("projected_settle_s")
    return float(projected * 1_000_000 / f["activities"]) if projected else float("inf")


def _bounded(f: dict[str, Any]) -> str:
    sent = f.get("at_bound", {}).get("sent", 0)
    projected = f.get("projected_settle_s")
    return f"; BOUNDED: not settled ({sent:,} of {f['activities']:,} sent" + (
        f"; ~{projected / 60:.0f} min projected)" if projected else ")"
    )


def markdown(rows: list[list[str]]) -> str:
    lines = ["| figure | measured | target | verdict |", "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
