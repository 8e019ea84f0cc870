"""An imported item has the activity, member and thread ids its webhook gives it.

GitHub's own example deliveries (octokit/webhooks, beside the repository, read-only, never
copied in) are turned into the REST API pages an export holds — the REST objects are the
objects the payloads carry — imported, and compared with the webhook mapper's answer for the
delivery itself.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from importers import github
from importers.meter import Meter
from importers.platform import Delivery, map_github

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "webhook-samples" / "github"
CASES = [
    "issues/opened.payload.json",
    "issues/opened.with-organization.payload.json",
    "issue_comment/created.payload.json",
    "issue_comment/created.with-organization.payload.json",
    "pull_request/opened.payload.json",
    "pull_request/closed.payload.json",
    "pull_request_review/submitted.payload.json",
    "star/created.payload.json",
    "fork/payload.json",
]

pytestmark = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason="GitHub's sample deliveries are not beside the repository"
)


def export_of(event: str, p: dict[str, Any], d: Path) -> None:
    """The pages `gh api --paginate` would have saved for this delivery's objects."""
    d.mkdir()
    (d / "repo.json").write_text(json.dumps(p["repository"]))
    pages: dict[str, list[Any]] = {}
    if event == "issues":
        pages["issues"] = [p["issue"]]
    elif event == "issue_comment":
        pages["issues"] = [p["issue"]]
        pages["comments"] = [p["comment"]]
    elif event == "pull_request":
        pages["pulls"] = [p["pull_request"]]
    elif event == "pull_request_review":
        pages["pulls"] = [p["pull_request"]]
        pages["reviews"] = [p["review"]]
    elif event == "star":
        pages["stargazers"] = [{"starred_at": p["starred_at"], "user": p["sender"]}]
    elif event == "fork":
        pages["forks"] = [{**p["forkee"], "owner": p["sender"]}]
    for stem, records in pages.items():
        (d / f"{stem}.json").write_text(json.dumps(records))


def summary(a: Any) -> tuple[str, str, str | None, str | None]:
    t = a.target
    return (
        a.kind,
        a.actor.member_id,
        t.thread_id if t else None,
        t.thread_author_member_id if t else None,
    )


@pytest.mark.parametrize("case", CASES)
def test_an_imported_item_has_its_webhook_ids(case: str, tmp_path: Path) -> None:
    payload = json.loads((SAMPLES / case).read_text())
    event = case.split("/")[0]
    action = payload.get("action")
    live = map_github(
        Delivery("github", event, action, "d-1", payload, datetime(2030, 1, 1, tzinfo=UTC))
    )
    export_of(event, payload, tmp_path / "export")
    imported = {
        i.activity.activity_id: i.activity
        for i in github.items(tmp_path / "export", Meter())
        if i.activity is not None
    }
    if event == "star" and payload.get("starred_at") is None:
        pytest.skip("this sample has no starred_at")
    assert live.activities or live.ignored
    for activity in live.activities:
        assert activity.activity_id in imported, (activity.activity_id, list(imported))
        assert summary(imported[activity.activity_id]) == summary(activity)
        assert imported[activity.activity_id].occurred_at == activity.occurred_at
