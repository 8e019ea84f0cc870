"""The main job: the whole stack plus a simulated community, end to end.

    python -m devstack.demo [--people 300] [--weeks 20] [--seed 7] [--keep-running]

Starts Kafka, PostgreSQL and the four services, grows the community through the gateway's
HTTP API, waits until every consumer group has caught up, prints the stage counts and a few
journeys (one of them a closed flywheel loop), and stops everything unless --keep-running.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from devstack.community import simulate
from devstack.stack import DevStack, StackError, default_state_dir
from shared.eventtime import clock_tick
from shared.kafka import PLAINTEXT, consumer_lag
from shared.outbox import partitions_of
from shared.settings import Settings
from shared.topics import MEMBER_ACTIVITY

console = Console()
HEADERS: dict[str, str] = {}  # the demo's credentials, set in main()


def consumer_groups() -> dict[str, list[str]]:
    """Which consumer group reads which topics, from the services' own declarations: when
    all of them are at lag 0, the flow is done."""
    from services.registry import specs

    return {spec.consumer_group: [t.name for t in spec.consumes] for spec in specs().values()}


def post_activities(gateway: str, activities: list[dict[str, Any]], batch: int = 250) -> None:
    with (
        httpx.Client(base_url=gateway, timeout=30, headers=HEADERS) as client,
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        task = progress.add_task("posting community activity", total=len(activities))
        for i in range(0, len(activities), batch):
            chunk = activities[i : i + batch]
            for attempt in range(10):
                response = client.post("/v1/activities", json={"activities": chunk})
                if response.status_code != 503:
                    break
                time.sleep(float(response.headers.get("retry-after", "1")) * (attempt + 1))
            if response.status_code != 202:
                raise SystemExit(
                    f"the gateway refused a batch: {response.status_code} {response.text[:500]}"
                )
            progress.advance(task, len(chunk))


async def _tick_every_partition(bootstrap: str, security: Mapping[str, Any], at: datetime) -> None:
    tick = clock_tick(at, clock="demo")
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **security
    )
    await producer.start()
    try:
        for partition in await partitions_of(producer, MEMBER_ACTIVITY.name, tick.partition):
            await producer.send_and_wait(
                MEMBER_ACTIVITY.name,
                tick.value,
                key=tick.key,
                headers=tick.headers,
                partition=partition,
            )
    finally:
        await producer.stop()


def close_the_clock(
    bootstrap: str, activities: list[dict[str, Any]], security: Mapping[str, Any] = PLAINTEXT
) -> datetime:
    """The simulated history is over: one clock tick past its end (and the allowed lateness)
    on every partition, as the gateway's ticker would send once time moved on, so every
    service's clock passes the whole history and decides everything due in it (reviews,
    deadlines, settled first touches). Without it the last `FLYWHEEL_ALLOWED_LATENESS_S` of
    the history would stay undecided; the ticker itself is off (the history is simulated)."""
    end = max(datetime.fromisoformat(a["occurred_at"]) for a in activities)
    at = end + timedelta(seconds=Settings().allowed_lateness_s + 1)
    asyncio.run(_tick_every_partition(bootstrap, security, at))
    return at


async def _total_lag(bootstrap: str, security: Mapping[str, Any]) -> int:
    total = 0
    for group, topics in consumer_groups().items():
        total += sum((await consumer_lag(bootstrap, group, topics, security)).values())
    return total


def wait_until_caught_up(
    bootstrap: str, timeout_s: float = 300, security: Mapping[str, Any] = PLAINTEXT
) -> float:
    """Every group at lag 0 twice in a row (the second look lets the outboxes flush)."""
    started = time.monotonic()
    quiet = 0
    with console.status("waiting for every service to catch up...") as status:
        while quiet < 2:
            lag = asyncio.run(_total_lag(bootstrap, security))
            status.update(f"waiting for every service to catch up... {lag} records behind")
            quiet = quiet + 1 if lag == 0 else 0
            if time.monotonic() - started > timeout_s:
                raise SystemExit(
                    f"the services did not catch up within {timeout_s:.0f} s "
                    f"({lag} records behind); see the logs in the state dir"
                )
            time.sleep(1.0)
    return time.monotonic() - started


def show_results(gateway: str, activities: list[dict[str, Any]]) -> dict[str, Any]:
    with httpx.Client(base_url=gateway, timeout=30, headers=HEADERS) as client:
        counts = client.get("/v1/stages").json()
        table = Table(title=f"Stage counts ({counts['members']} people with a stage)")
        table.add_column("dimension")
        table.add_column("stage")
        table.add_column("members", justify="right")
        for dimension, stages in counts["dimensions"].items():
            for stage, n in sorted(stages.items(), key=lambda kv: -kv[1]):
                table.add_row(dimension, stage, str(n))
        console.print(table)
        _print_flywheel(client.get("/v1/flywheel").json())

        referrals = [
            (a["properties"]["referred_by"], a["actor"]["member_id"])
            for a in activities
            if a["kind"] == "signup" and "referred_by" in a["properties"]
        ]
        loop = _closed_loop(client, referrals)
        kinds = Counter(a["kind"] for a in activities)
        console.print(
            f"\n{len(activities)} activities, {kinds['signup']} sign-ups, "
            f"{len(referrals)} of them through a member's referral."
        )
        if loop is not None:
            referrer, referee = loop
            console.print(
                f"\n[bold]The flywheel loop[/bold]: {referrer} referred {referee}, "
                f"who joined and took part; advocacy credited {referrer}."
            )
            for member in (referrer, referee):
                _print_journey(client, member)
        busiest = Counter(
            a["actor"]["member_id"] for a in activities if a["kind"] == "reply"
        ).most_common(1)
        if busiest and (loop is None or busiest[0][0] not in loop):
            _print_journey(client, busiest[0][0])
        # a customer's retention: considered before buying, then renewed or cancelled
        for kind in ("renewal", "cancellation"):
            customer = next(
                (a["actor"]["member_id"] for a in activities if a["kind"] == kind), None
            )
            if customer is not None:
                _print_journey(client, customer)
        return {"counts": counts, "loop": loop}


def _print_flywheel(report: dict[str, Any]) -> None:
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    table = Table(title="Is the flywheel turning?", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for c in report["conversions"]:
        table.add_row(
            f"{c['from_stage']} -> {c['to_stage']}",
            f"{pct(c['rate'])} ({c['converted']}/{c['entered']})",
        )
    table.add_row(
        "new members through a member's referral",
        f"{pct(report['referral_share'])} "
        f"({report['new_members_via_referral']}/{report['new_members']})",
    )
    table.add_row(
        "questions answered by peers",
        f"{pct(report['peer_answer_share'])} "
        f"({report['questions_answered_by_peers']}/{report['questions']})",
    )
    table.add_row(
        "peer help given (accepted)", f"{report['peer_help']} ({report['peer_help_accepted']})"
    )
    table.add_row(
        "churn-risk signals / at risk now",
        f"{report['churn_risk_signals']} / {report['at_risk_now']}",
    )
    influence = report["community_influenced_conversion"]
    table.add_row(
        "customers with community touchpoints before buying",
        f"{pct(influence['influenced_share'])} "
        f"({influence['community_influenced']}/{influence['customers']})",
    )
    table.add_row(
        "considering -> customer (with / without community)",
        f"{pct(influence['considering_conversion_rate'])} "
        f"({influence['considering_converted_with_community']} / "
        f"{influence['considering_converted_without_community']} of "
        f"{influence['considering_entered']})",
    )
    retention = report["retention"]
    for stage in ("retained", "lapsed", "churned"):
        table.add_row(
            f"{stage} customers who took part in the community",
            f"{pct(retention['took_part_share_per_stage'][stage])} "
            f"({retention['took_part_per_stage'][stage]}/"
            f"{retention['customers_per_stage'][stage]})",
        )
    ttfr = report["time_to_first_response"]
    table.add_row(
        "time to first response, median / p90 (hours)",
        f"{ttfr['median_hours']} / {ttfr['p90_hours']} ({ttfr['answered']} answered, "
        f"{ttfr['unanswered_signals']} unanswered signals)",
    )
    drops = report["newcomer_drop_offs"]
    table.add_row(
        "honeymoon drop-offs (members / customers)",
        f"{drops.get('member', 0)} / {drops.get('customer', 0)}",
    )
    feedback = report["product_feedback"]
    table.add_row(
        "product feedback (from champions)",
        ", ".join(f"{k} {v}" for k, v in sorted(feedback.items()) if k != "from_champions")
        + f" ({feedback.get('from_champions', 0)})",
    )
    table.add_row(
        "first touch of new members",
        ", ".join(f"{t['channel']} {t['new_members']}" for t in report["first_touch"]),
    )
    for ratio in report["health"]:
        per = " per 100" if ratio["per"] == 100 else ""
        value = (
            "-"
            if ratio["ratio"] is None
            else (f"{ratio['ratio']:g}{per}" if ratio["per"] == 100 else pct(ratio["ratio"]))
        )
        table.add_row(
            f"health: {ratio['name'].replace('_', ' ')}",
            f"{value} ({ratio['count']:g}/{ratio['of']})",
        )
    console.print(table)


def _closed_loop(client: httpx.Client, referrals: list[tuple[str, str]]) -> tuple[str, str] | None:
    """A referral whose referee engaged and whose referrer is an advocate."""
    for referrer, referee in referrals:
        a = client.get(f"/v1/members/{referrer}/journey")
        b = client.get(f"/v1/members/{referee}/journey")
        if (
            a.status_code == b.status_code == 200
            and "advocacy" in a.json()["stages"]
            and "engagement" in b.json()["stages"]
        ):
            return referrer, referee
    return None


def _print_journey(client: httpx.Client, member_id: str) -> None:
    journey = client.get(f"/v1/members/{member_id}/journey").json()
    table = Table(title=f"Journey of {member_id}", title_justify="left")
    for column in ("when", "dimension", "move", "why"):
        table.add_column(column)
    for t in journey.get("timeline", []):
        table.add_row(
            t["occurred_at"][:10],
            t["dimension"],
            f"{t['from_stage'] or '-'} -> {t['to_stage']}",
            t["reason"],
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--people", type=int, default=300)
    parser.add_argument("--weeks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the stack up; stop it with `python -m devstack down --state-dir <dir>`",
    )
    parser.add_argument("--state-dir", type=Path, default=default_state_dir() / "demo")
    args = parser.parse_args(argv)
    # The community lives on simulated time: wall-clock ticks would age it to today.
    os.environ["FLYWHEEL_CLOCK_TICK_INTERVAL_S"] = "0"
    # ... which starts on a fixed date: a long simulation (--weeks) runs past today, and must
    # not be refused as times in the future (FLYWHEEL_MAX_FUTURE_S, ten years here).
    os.environ["FLYWHEEL_MAX_FUTURE_S"] = str(10 * 365 * 86400)
    # The gateway refuses calls without credentials: this run gets a key of its own.
    api_key = secrets.token_hex(24)
    os.environ["FLYWHEEL_API_KEYS"] = f"demo={api_key}:ingest,read,admin"
    HEADERS["Authorization"] = f"Bearer {api_key}"
    # SIGTERM (a CI timeout, `kill`) stops the stack like Ctrl-C does
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    activities = simulate(people=args.people, weeks=args.weeks, seed=args.seed)
    console.print(
        f"simulated {len(activities)} activities of {args.people} people over "
        f"{args.weeks} weeks (seed {args.seed})"
    )
    stack = DevStack(
        args.state_dir,
        with_services=True,
        detach=args.keep_running,
        progress=lambda m: console.print(f"[dim]stack:[/dim] {m}"),
    )
    try:
        if args.state_dir.exists():
            stack.stop()  # a previous demo left behind: stop it and start from empty
            shutil.rmtree(args.state_dir)
        endpoints = stack.start()
    except StackError as exc:
        console.print(f"[red]cannot start the stack:[/red] {exc}")
        return 2
    try:
        assert endpoints.gateway_url is not None
        started = time.monotonic()
        post_activities(endpoints.gateway_url, activities)
        close_the_clock(endpoints.kafka_bootstrap, activities, security=stack.admin_security())
        posted = time.monotonic() - started
        drained = wait_until_caught_up(endpoints.kafka_bootstrap, security=stack.admin_security())
        console.print(f"posted in {posted:.1f} s; every service caught up {drained:.1f} s later")
        show_results(endpoints.gateway_url, activities)
        if args.keep_running:
            console.print(
                f"\nstill running: gateway {endpoints.gateway_url} "
                f"(OpenAPI at /docs; API key {HEADERS['Authorization'][7:]}; dashboard at "
                f"{endpoints.gateway_url}/dashboard, sign in with that key), "
                f"Kafka {endpoints.kafka_bootstrap}; "
                f"stop with `python -m devstack down --state-dir {args.state_dir}`"
            )
        return 0
    finally:
        if not args.keep_running:
            with console.status("stopping the stack..."):
                stack.stop()
            console.print("stopped cleanly")
        signal.signal(signal.SIGTERM, previous_handler)


if __name__ == "__main__":
    sys.exit(main())
