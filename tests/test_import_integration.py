"""Imports on the real broker and PostgreSQL, through a real gateway and engagement service.

A Stack Exchange history's accepted answer becomes peer help for the answer's author on
`signals.support`; a GitHub item imported and then delivered live by its webhook carries the
same event id, and the engagement service's inbox applies it once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from services.gateway.bootstrap import build_app

from importers.runner import run_import
from importers.sender import GatewaySender
from services.engagement.__main__ import SPEC as ENGAGEMENT
from shared.cloudevents import derive_event_id
from shared.contracts import PEER_HELP
from tests.conftest import Namespace, envelopes, read_topic, running
from tests.test_import_parsers import stackexchange_dump
from tests.test_webhooks_api import GITHUB_SECRET, REPO, issue_comment
from tests.test_webhooks_integration import post_github

pytestmark = pytest.mark.integration

KEY = "import-tests-ingest-key-0123456789"


@asynccontextmanager
async def deployed(namespace: Namespace) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway (ticks off, as for any backfill) and the engagement service."""
    settings = namespace.settings(
        await namespace.create_database("gateway"),
        clock_tick_interval_s=0,
        api_keys=f"importer={KEY}:ingest",
        github_webhook_secret=GITHUB_SECRET,
    )
    app = build_app(settings)
    engagement = namespace.settings(await namespace.create_database("engagement"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
        running(ENGAGEMENT, engagement),
    ):
        yield client


async def test_stackexchange_history_turns_into_peer_help(
    namespace: Namespace, tmp_path: Path
) -> None:
    dump = stackexchange_dump(tmp_path / "dump")
    async with deployed(namespace) as client:
        summary = await run_import(
            "stackexchange",
            dump,
            GatewaySender(client, api_key=KEY),
            checkpoint_path=tmp_path / "cp.json",
            progress=False,
        )
        assert summary.bad == 2 and summary.sent == 7, summary
        signals = envelopes(await read_topic(namespace, "signals.support", until=2))
    signals = [e for e in signals if e.type == PEER_HELP.type]  # besides question_answered
    helps = {(e.data.activity_id, e.data.accepted) for e in signals}  # type: ignore[attr-defined]
    assert helps == {("stackexchange:post:2", False), ("stackexchange:accepted:2", True)}
    for e in signals:
        assert e.data.helper_member_id == "stackexchange:8"  # type: ignore[attr-defined]
        assert e.data.helped_member_id == "stackexchange:7"  # type: ignore[attr-defined]
        assert e.data.thread_id == "stackexchange:question:1"  # type: ignore[attr-defined]


async def test_a_webhook_of_an_imported_item_is_recognised(
    namespace: Namespace, tmp_path: Path
) -> None:
    live = issue_comment()
    # a question (issue 15: a comment is peer help only in a question)
    live["issue"]["labels"] = [{"name": "question"}]
    export = tmp_path / "github"
    export.mkdir()
    (export / "repo.json").write_text(json.dumps(REPO))
    issue = {**live["issue"], "created_at": "2026-01-05T09:00:00Z"}
    (export / "issues.json").write_text(json.dumps([issue]))
    comment = {
        **live["comment"],
        "issue_url": "https://api.github.com/repos/octo/flywheel/issues/7",
    }
    (export / "comments.json").write_text(json.dumps([comment]))

    async with deployed(namespace) as client:
        summary = await run_import(
            "github",
            export,
            GatewaySender(client, api_key=KEY),
            checkpoint_path=tmp_path / "cp.json",
            progress=False,
        )
        assert summary.sent == 2 and summary.bad == 0, summary
        # GitHub then delivers the same comment live (or redelivers it)
        response = await post_github(client, live, "72d3162e-live")
        assert response.status_code == 202, response.text
        assert response.json()["activities"] == ["github:issue_comment:5"]
        activities = envelopes(await read_topic(namespace, "member-activity", until=3))
        signals = envelopes(await read_topic(namespace, "signals.support", until=1))
    copies = [e for e in activities if e.data.activity_id == "github:issue_comment:5"]  # type: ignore[attr-defined]
    assert len(copies) == 2
    assert {e.id for e in copies} == {
        derive_event_id("activity", "github", "github:issue_comment:5")
    }
    helps = [e for e in signals if e.type == PEER_HELP.type]
    assert [e.data.activity_id for e in helps] == ["github:issue_comment:5"]  # type: ignore[attr-defined]
