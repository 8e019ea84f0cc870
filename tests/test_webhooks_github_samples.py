"""GitHub's own example deliveries (octokit/webhooks), signed and posted to the gateway.

The samples live beside the repository (`../shared/webhook-samples/github/<event>/*.json`,
read-only, never copied in). Every one must be mapped or deliberately acknowledged, none may
get a 5xx, and the mapped ones must name the right member, kind and thread: the expectations
below read the payload's own fields, independently of the mapping code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_webhooks_api import Hooks, make_hooks

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "webhook-samples" / "github"

pytestmark = pytest.mark.skipif(
    not SAMPLES.is_dir(),
    reason=f"GitHub's sample deliveries are not beside the repository ({SAMPLES})",
)


def _files() -> list[Path]:
    return sorted(SAMPLES.glob("*/*.json")) if SAMPLES.is_dir() else []


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


Expected = tuple[str, str, str | None, str | None]
"""kind, actor member id, thread id, thread author member id."""


def _gh(user: dict[str, Any]) -> str:
    return f"github:{user['id']}"


def _thread(p: dict[str, Any], number: int) -> str:
    return f"github:{p['repository']['id']}#{number}"


ORACLE: dict[str, Callable[[dict[str, Any]], Expected]] = {
    "issues.opened": lambda p: (
        "post",
        _gh(p["issue"]["user"]),
        _thread(p, p["issue"]["number"]),
        _gh(p["issue"]["user"]),
    ),
    "issue_comment.created": lambda p: (
        "reply",
        _gh(p["comment"]["user"]),
        _thread(p, p["issue"]["number"]),
        _gh(p["issue"]["user"]),
    ),
    "pull_request.opened": lambda p: (
        "code_contribution",
        _gh(p["pull_request"]["user"]),
        _thread(p, p["number"]),
        _gh(p["pull_request"]["user"]),
    ),
    "pull_request_review.submitted": lambda p: (
        "reply",
        _gh(p["review"]["user"]),
        _thread(p, p["pull_request"]["number"]),
        _gh(p["pull_request"]["user"]),
    ),
    "discussion.created": lambda p: (
        "post",
        _gh(p["discussion"]["user"]),
        _thread(p, p["discussion"]["number"]),
        _gh(p["discussion"]["user"]),
    ),
    "discussion.answered": lambda p: (
        "answer_accepted",
        _gh(p["answer"]["user"]),
        _thread(p, p["discussion"]["number"]),
        _gh(p["discussion"]["user"]),
    ),
    "discussion_comment.created": lambda p: (
        "reply",
        _gh(p["comment"]["user"]),
        _thread(p, p["discussion"]["number"]),
        _gh(p["discussion"]["user"]),
    ),
    "star.created": lambda p: ("star", _gh(p["sender"]), None, None),
    "watch.started": lambda p: ("star", _gh(p["sender"]), None, None),
    "fork": lambda p: ("fork", _gh(p["sender"]), None, None),
    "release.published": lambda p: ("content_published", _gh(p["release"]["author"]), None, None),
    "member.added": lambda p: ("repository_member_added", _gh(p["member"]), None, None),
}
DELIBERATELY_IGNORED = {
    "issues/opened.with-transfer.payload.json",  # transferred: counted where it was opened
    "pull_request/closed.payload.json",  # closed without merging
    "pull_request/closed.with-organization.payload.json",
}


def _name(path: Path, payload: dict[str, Any]) -> str:
    action = payload.get("action")
    return f"{path.parent.name}.{action}" if isinstance(action, str) else path.parent.name


@pytest.fixture(scope="module")
def hooks() -> Iterator[Hooks]:
    yield from make_hooks()


@pytest.mark.parametrize("path", _files(), ids=_id)
def test_every_sample_is_mapped_or_acknowledged(hooks: Hooks, path: Path) -> None:
    payload = json.loads(path.read_bytes())
    before = len(hooks.publisher.records)
    response = hooks.github(
        path.parent.name, path.read_bytes(), delivery="sample-" + _id(path).replace("/", "-")
    )

    assert response.status_code in (200, 202), response.text
    receipt = response.json()
    name = _name(path, payload)
    assert receipt["event"] == name
    published = hooks.activities()[before:]
    if name in ORACLE and _id(path) not in DELIBERATELY_IGNORED:
        assert response.status_code == 202, response.text
        [activity] = published
        target = activity.target
        got = (
            activity.kind,
            activity.actor.member_id,
            target.thread_id if target else None,
            target.thread_author_member_id if target else None,
        )
        assert got == ORACLE[name](payload)
        assert activity.source == "github"
        assert activity.actor.platform_user_id == activity.actor.member_id.removeprefix("github:")
        assert receipt["activities"] == [activity.activity_id]
    else:
        assert response.status_code == 200, response.text
        assert receipt["status"] == "ignored" and receipt["reason"]
        assert published == []


def test_the_samples_cover_every_mapped_event() -> None:
    names = {_name(p, json.loads(p.read_bytes())) for p in _files()}
    assert set(ORACLE) <= names


def _sample(relative: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / relative).read_bytes())
    return loaded


def test_an_accepted_discussion_answer_credits_its_author() -> None:
    """Concretely, from discussion/answered: the answer by 1253226 in 4595477's thread."""
    for hooks in make_hooks():
        response = hooks.github(
            "discussion", json.dumps(_sample("discussion/answered.payload.json")).encode()
        )
        assert response.status_code == 202, response.text
        [answer] = hooks.activities()
        assert answer.kind == "answer_accepted"
        assert answer.actor.member_id == "github:1253226"
        assert answer.target is not None
        assert answer.target.thread_author_member_id == "github:4595477"
        assert answer.target.thread_id == "github:186853002#4"
        assert answer.occurred_at.isoformat() == "2021-03-30T19:17:18-04:00"


def test_an_issue_comment_and_its_issue_share_the_thread() -> None:
    for hooks in make_hooks():
        hooks.github(
            "issues", json.dumps(_sample("issues/opened.payload.json")).encode(), delivery="a"
        )
        comment = _sample("issue_comment/created.payload.json")
        hooks.github("issue_comment", json.dumps(comment).encode(), delivery="b")
        issue, reply = hooks.activities()
        assert issue.target and reply.target
        assert issue.target.thread_id == reply.target.thread_id == "github:186853002#1"
        assert issue.target.url == "https://github.com/Codertocat/Hello-World/issues/1"
        # Codertocat owns the repository: the team, whose activity never counts
        assert issue.actor.is_team_member and reply.actor.is_team_member


def test_a_merged_pull_request_credits_its_author() -> None:
    """No sample is merged: the closed one, as GitHub sends it when merged."""
    payload = _sample("pull_request/closed.payload.json")
    payload["pull_request"] |= {
        "merged": True,
        "merged_at": "2019-05-15T15:21:18Z",
        "merged_by": {"id": 99, "login": "maintainer", "type": "User"},
    }
    for hooks in make_hooks():
        response = hooks.github("pull_request", json.dumps(payload).encode())
        assert response.status_code == 202, response.text
        [merged] = hooks.activities()
        assert (merged.kind, merged.actor.member_id) == ("code_contribution", "github:21031067")
        assert merged.properties["merged_by"] == "github:99"
        assert merged.activity_id.endswith(":merged")


def test_a_bot_is_flagged() -> None:
    payload = _sample("issue_comment/created.payload.json")
    payload["comment"]["user"] |= {"login": "dependabot[bot]", "type": "Bot", "id": 49699333}
    for hooks in make_hooks():
        assert hooks.github("issue_comment", json.dumps(payload).encode()).status_code == 202
        [comment] = hooks.activities()
        assert comment.actor.is_bot and comment.actor.handle == "dependabot[bot]"


def test_a_comment_says_whether_its_thread_asks_and_whether_its_author_is_the_team() -> None:
    """Peer help means help: only in a question, and not to the team (issue 15)."""
    payload = _sample("issue_comment/created.payload.json")
    payload["comment"]["user"] |= {"login": "helper", "id": 777}
    payload["comment"]["author_association"] = "NONE"
    for hooks in make_hooks():
        assert hooks.github("issue_comment", json.dumps(payload).encode()).status_code == 202
        [comment] = hooks.activities()
        assert comment.target is not None
        # the sample's issue is by the repository's owner and has no question label
        assert comment.target.thread_author_is_team_member is True
        assert comment.target.thread_is_question is False
    payload["issue"]["labels"] = [{"name": "Question"}]
    payload["issue"]["author_association"] = "CONTRIBUTOR"
    for hooks in make_hooks():
        assert hooks.github("issue_comment", json.dumps(payload).encode()).status_code == 202
        [comment] = hooks.activities()
        assert comment.target is not None
        assert comment.target.thread_is_question is True
        assert comment.target.thread_author_is_team_member is False
