"""Imports on the real broker and PostgreSQL, through a real gateway and engagement service.

A Stack Exchange history's accepted answer becomes peer help for the answer's author on
`signals.support`; a GitHub item imported and then delivered live by its webhook carries the
same event id, and the engagement service's inbox applies it once. Identities join as they
would live: an identity linked to a member before the import lands on that member, in the
import and in the live webhook of the same item alike; an erased person's is not published.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from importers.runner import run_import
from importers.sender import GatewaySender
from services.engagement.__main__ import SPEC as ENGAGEMENT
from services.gateway.bootstrap import build_app
from shared.cloudevents import derive_event_id
from shared.contracts import PEER_HELP
from tests.conftest import Namespace, envelopes, member_of, read_topic, running
from tests.test_erasure import read_all
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
        api_keys=f"importer={KEY}:ingest,admin",
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


def github_export(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    """An issue by ada (GitHub user 11) and bob's (12) comment on it, as REST pages, and the
    live `issue_comment.created` delivery of that comment."""
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
    return export, live


async def test_a_webhook_of_an_imported_item_is_recognised(
    namespace: Namespace, tmp_path: Path
) -> None:
    export, live = github_export(tmp_path)
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


def sender(client: httpx.AsyncClient) -> GatewaySender:
    """As `import_async` makes it for a platform's export: identities resolved."""
    return GatewaySender(client, api_key=KEY, resolve_identities=True)


async def test_imported_activities_land_on_the_linked_members(
    namespace: Namespace, tmp_path: Path
) -> None:
    """Both GitHub identities were linked to members before the import: the import and the
    live webhook of the same comment both publish those members, and the comment is one
    piece of peer help, bob's to ada."""
    export, live = github_export(tmp_path)
    headers = {"authorization": f"Bearer {KEY}"}
    async with deployed(namespace) as client:
        for member, user in (("m-ada", "11"), ("m-bob", "12")):
            linked = await client.post(
                f"/v1/members/{member}/identities",
                json={"platform": "github", "platform_user_id": user},
                headers=headers,
            )
            assert linked.status_code == 200, linked.text
        summary = await run_import(
            "github", export, sender(client), checkpoint_path=tmp_path / "cp.json", progress=False
        )
        assert summary.sent == 2 and summary.bad == 0, summary
        response = await post_github(client, live, "72d3162e-live-linked")
        assert response.status_code == 202, response.text
        activities = envelopes(await read_topic(namespace, "member-activity", until=3))
        signals = envelopes(await read_topic(namespace, "signals.support", until=1))
    by_id: dict[str, list[object]] = {}
    for e in activities:
        by_id.setdefault(e.data.activity_id, []).append(e.data)  # type: ignore[attr-defined]
    (issue,) = by_id["github:issue:1"]
    assert issue.actor.member_id == "m-ada"  # type: ignore[attr-defined]
    imported, webhook = by_id["github:issue_comment:5"]
    assert imported == webhook  # the very same activity, whichever way it came
    assert imported.actor.member_id == "m-bob"  # type: ignore[attr-defined]
    assert imported.actor.platform_user_id is None  # type: ignore[attr-defined]  # not in the log
    assert imported.target.thread_author_member_id == "m-ada"  # type: ignore[attr-defined]
    assert {e.key for e in activities} == {"m-ada", "m-bob"}  # keyed by the member
    (help_,) = signals  # one effect: the inbox dropped the webhook's copy
    assert help_.data.helper_member_id == "m-bob"  # type: ignore[attr-defined]
    assert help_.data.helped_member_id == "m-ada"  # type: ignore[attr-defined]


async def test_an_erased_persons_history_is_not_imported(
    namespace: Namespace, tmp_path: Path
) -> None:
    """bob's GitHub identity was linked to a member who was then erased: the identity is
    blocked, and bob's comment in the export is acknowledged and not published (as his live
    webhook would be); ada's issue is."""
    export, _ = github_export(tmp_path)
    headers = {"authorization": f"Bearer {KEY}"}
    async with deployed(namespace) as client:
        linked = await client.post(
            "/v1/members/m-bob/identities",
            json={"platform": "github", "platform_user_id": "12"},
            headers=headers,
        )
        assert linked.status_code == 200, linked.text
        erased = await client.delete("/v1/members/m-bob", headers=headers)
        assert erased.status_code == 202, erased.text
        summary = await run_import(
            "github", export, sender(client), checkpoint_path=tmp_path / "cp.json", progress=False
        )
        assert summary.sent == 2 and summary.bad == 0, summary  # acknowledged, both
        published = envelopes(await read_all(namespace, "member-activity"))
    assert [e.data.activity_id for e in published] == ["github:issue:1"]  # type: ignore[attr-defined]
    assert published[0].data.actor.member_id == member_of("github", 11)  # type: ignore[attr-defined]
