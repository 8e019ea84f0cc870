"""The dashboard in a real browser (Debian's chromium through Playwright) against the real
stack: four service processes, a real broker and PostgreSQL, a small simulated community
(devstack.community) posted through the gateway.

Each page loads without console errors; the overview's figures equal GET /v1/flywheel's and
GET /v1/flywheel/series'; a filter changes the directory; the CSV downloads and parses and
equals GET /v1/members.csv. A screenshot of each page is saved under
artifacts/screenshots/ (gitignored) and its path printed.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.community import simulate
from shared.kafka import consumer_lag
from tests.conftest import REPO, Namespace

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
SERVICES = ("awareness", "engagement", "advocacy", "gateway")
API_KEY = "dashboard-test-key-0123456789"
SHOTS = REPO / "artifacts" / "screenshots"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def community(namespace: Namespace) -> AsyncIterator[dict[str, Any]]:
    if not Path(CHROMIUM).exists():  # noqa: ASYNC240 (once, before anything runs)
        pytest.skip(f"{CHROMIUM} is missing (.ci/run installs Debian's chromium)")
    from services.registry import specs

    devstack = namespace.stack.devstack
    urls = {name: await namespace.create_database(name) for name in SERVICES}
    for name in SERVICES:
        env = namespace.env(
            urls[name],
            FLYWHEEL_CLOCK_TICK_INTERVAL_S="0",
            FLYWHEEL_API_KEYS=f"dash={API_KEY}:ingest,read",
        )
        await asyncio.to_thread(devstack.start_service, name, env)
    gateway = devstack.endpoints.gateway_url
    try:
        activities = simulate(people=60, weeks=10, seed=5)
        async with httpx.AsyncClient(
            base_url=gateway, timeout=30, headers={"Authorization": f"Bearer {API_KEY}"}
        ) as client:
            for i in range(0, len(activities), 250):
                response = await client.post(
                    "/v1/activities", json={"activities": activities[i : i + 250]}
                )
                assert response.status_code == 202, response.text
        # every consumer group caught up, twice in a row (the outboxes flush in between)
        groups = {
            namespace.prefix + s.consumer_group: [namespace.topic(t.name) for t in s.consumes]
            for s in specs().values()
        }
        quiet = 0
        for _ in range(240):
            lag = 0
            for group, topics in groups.items():
                lag += sum(
                    (await consumer_lag(namespace.stack.kafka_bootstrap, group, topics)).values()
                )
            quiet = quiet + 1 if lag == 0 else 0
            if quiet >= 3:
                break
            await asyncio.sleep(0.5)
        assert quiet >= 3, f"the services did not catch up ({lag} records behind)"
        yield {
            "gateway": gateway,
            "activities": activities,
            "log": devstack.log_dir / "gateway.log",
        }
    except BaseException:
        log = devstack.log_dir / "gateway.log"
        print(log.read_text()[-6000:] if log.exists() else "no gateway log")
        raise
    finally:
        for name in SERVICES:
            await asyncio.to_thread(devstack.stop_service, name)


def _shot(name: str) -> str:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    print(f"screenshot: {path}")
    return str(path)


async def test_dashboard_pages_show_the_apis_figures(community: dict[str, Any]) -> None:
    from playwright.async_api import async_playwright

    gateway = community["gateway"]
    api = httpx.AsyncClient(
        base_url=gateway, timeout=30, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    errors: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        page = await context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            # no session: the login form; a wrong key is refused; the right one signs in
            await page.goto(f"{gateway}/dashboard")
            assert "/dashboard/login" in page.url
            await page.fill("#key", "not-the-key-at-all-000")
            await page.click("button[type=submit]")
            assert await page.locator("[role=alert]").count() == 1
            errors.clear()  # the refused login's 401 is logged by the browser, as it should be
            await page.fill("#key", API_KEY)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{gateway}/dashboard")
            cookies = {c["name"]: c for c in await context.cookies()}
            session = cookies["flywheel_session"]
            assert session["httpOnly"] and session["sameSite"] == "Strict"
            assert API_KEY not in session["value"]

            # the overview: its figures are the API's, over the same window
            await page.screenshot(path=_shot("overview"), full_page=True)
            start = await page.input_value("#from")
            end = await page.input_value("#to")
            window = {"from": f"{start}T00:00:00Z", "to": f"{end}T00:00:00Z"}
            report = (await api.get("/v1/flywheel", params=window)).json()
            series = (await api.get("/v1/flywheel/series", params=window)).json()

            async def figure(name: str, attr: str = "data-value") -> str | None:
                return await page.get_attribute(f'[data-figure="{name}"]', attr)

            async def text(name: str) -> str:
                return (await page.inner_text(f'[data-figure="{name}"]')).strip()

            for c in report["conversions"]:
                key = f"conversion:{c['from_stage']}-{c['to_stage']}"
                assert int(await text(f"{key}:entered")) == c["entered"]
                assert int(await text(f"{key}:converted")) == c["converted"]
                assert (await figure(f"{key}:rate")) == (
                    "" if c["rate"] is None else str(c["rate"])
                )
            assert (await figure("peer_answer_share")) == str(report["peer_answer_share"])
            health = series["health"]
            assert health["members"] > 20
            assert int(await text("count:members")) == health["members"]
            assert (await figure("health:active_share")) == str(health["active_share"])
            assert (
                await text("count:active_share") == f"{health['active_30d']} of {health['members']}"
            )
            assert report["cohort_retention"], "the community has cohorts"
            for cohort in report["cohort_retention"]:
                for weeks, value in cohort["retained"].items():
                    shown = await figure(f"retention:{cohort['cohort']}:{weeks}")
                    assert shown == ("" if value is None else str(value))
            assert await page.locator("svg#funnel").count() == 1
            assert await page.locator("svg#retention polyline").count() >= 1
            assert await page.locator("svg#flow-engagement polyline").count() >= 1
            assert await page.locator("svg#peer-answers").count() == 1
            ops = (await api.get("/v1/operations")).json()
            assert ops["consumer_lag"] is not None and ops["dead_letters"] is not None
            assert await text("ops:dead_letters") == str(ops["dead_letters"])

            # the directory: a filter changes it, and matches the API's
            await page.click("nav >> text=Members")
            await page.wait_for_url(f"{gateway}/dashboard/members")
            await page.screenshot(path=_shot("members"), full_page=True)
            everyone = await page.locator("#directory tbody tr").count()
            listing = (await api.get("/v1/members", params={"limit": 50})).json()
            assert everyone == len(listing["members"]) > 0
            await page.select_option("#f-engagement", "engaged")  # the script submits at once
            await page.wait_for_url("**engagement=engaged**")
            engaged = await page.locator("#directory tbody tr").all()
            expected = (await api.get("/v1/members", params={"engagement": "engaged"})).json()
            assert 0 < len(engaged) < everyone or listing["next_cursor"]
            shown_ids = [await row.get_attribute("data-member") for row in engaged]
            assert shown_ids == [m["member_id"] for m in expected["members"]]
            await page.screenshot(path=_shot("members-engaged"), full_page=True)

            # the CSV of that filter downloads, parses and equals the API's export
            async with page.expect_download() as download_info:
                await page.click("#csv")
            download = await download_info.value
            path = await download.path()
            assert path is not None
            downloaded = await asyncio.to_thread(Path(path).read_text)
            rows = list(csv.DictReader(io.StringIO(downloaded)))
            assert [r["member_id"] for r in rows] == shown_ids or len(rows) >= len(shown_ids)
            assert {r["engagement_stage"] for r in rows} == {"engaged"}
            api_csv = await api.get("/v1/members.csv", params={"engagement": "engaged"})
            assert list(csv.DictReader(io.StringIO(api_csv.text))) == rows

            # a profile, from the directory's link
            first = shown_ids[0]
            assert first is not None
            await page.click(f'#directory tbody tr[data-member="{first}"] a')
            await page.wait_for_load_state()
            await page.screenshot(path=_shot("profile"), full_page=True)
            profile = (await api.get(f"/v1/members/{first}/profile")).json()
            assert await text("stage:engagement") == "engaged"
            assert await page.locator("#timeline tbody tr").count() == len(profile["timeline"])
            assert await page.locator("#recent tbody tr").count() == len(profile["recent_activity"])

            # the leaderboards
            await page.click("nav >> text=Leaderboards")
            await page.wait_for_url(f"{gateway}/dashboard/leaderboards")
            await page.screenshot(path=_shot("leaderboards"), full_page=True)
            lstart = await page.input_value("#from")
            lend = await page.input_value("#to")
            boards = (
                await api.get(
                    "/v1/leaderboards",
                    params={"from": f"{lstart}T00:00:00Z", "to": f"{lend}T00:00:00Z"},
                )
            ).json()
            shown = await page.locator("#advocates tbody tr").all()
            assert [await r.get_attribute("data-member") for r in shown] == [
                a["member_id"] for a in boards["advocates"]
            ]
            champions = await page.locator("#champions tbody tr").count()
            assert champions == len(boards["champions"])

            # keyboard: the skip link is the first stop, and leads to the content
            await page.keyboard.press("Tab")
            assert await page.evaluate("document.activeElement.className") == "skip"

            # sign out: the pages want a login again
            await page.click("text=Sign out")
            await page.wait_for_url("**/dashboard/login")
            await page.goto(f"{gateway}/dashboard/members")
            assert "/dashboard/login" in page.url
            assert errors == [], f"console errors: {errors}"
        except BaseException:
            log = community["log"]
            print(log.read_text()[-6000:] if log.exists() else "no gateway log")
            raise
        finally:
            await browser.close()
            await api.aclose()
