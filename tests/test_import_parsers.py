"""The importers' readers and mappers on small exports built here, bad rows included."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from importers import activities, discourse, github, slack, stackexchange
from importers.items import ExportError, Item
from importers.meter import Meter
from importers.runner import run_import
from importers.sender import Sent


def read(module: Any, path: Path) -> list[Item]:
    return list(module.items(path, Meter(), None))


def by_id(items: list[Item]) -> dict[str, Any]:
    return {i.activity.activity_id: i.activity for i in items if i.activity is not None}


def problems(items: list[Item]) -> list[tuple[str, str]]:
    return [(i.where, i.problem) for i in items if i.problem is not None]


def xml(path: Path, root: str, *rows: str) -> None:
    body = "\n".join(f"  <row {r} />" for r in rows)
    path.write_text(f'<?xml version="1.0" encoding="utf-8"?>\n<{root}>\n{body}\n</{root}>\n')


def stackexchange_dump(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    xml(
        d / "Users.xml",
        "users",
        'Id="-1" CreationDate="2010-01-01T00:00:00.000" DisplayName="Community"',
        'Id="7" CreationDate="2010-01-02T10:00:00.000" DisplayName="ada"',
        'Id="8" CreationDate="2010-01-02T11:00:00.000" DisplayName="bob"',
        'Id="9" CreationDate="not a date" DisplayName="broken"',
    )
    xml(
        d / "Posts.xml",
        "posts",
        'Id="1" PostTypeId="1" AcceptedAnswerId="2" CreationDate="2010-01-03T09:00:00.000" '
        'OwnerUserId="7" Title="How do I replay?" Tags="&lt;kafka&gt;&lt;replay&gt;" '
        'Body="&lt;p&gt;help&lt;/p&gt;"',
        'Id="2" PostTypeId="2" ParentId="1" CreationDate="2010-01-03T15:00:00.000" '
        'OwnerUserId="8" Body="reset the group"',
        'Id="3" PostTypeId="2" ParentId="1" CreationDate="2010-01-03T16:00:00.000" Body="x"',
        'Id="4" PostTypeId="5" CreationDate="2010-01-03T16:00:00.000" OwnerUserId="7"',
        'PostTypeId="1" CreationDate="2010-01-03T16:00:00.000" OwnerUserId="7"',
    )
    xml(
        d / "Comments.xml",
        "comments",
        'Id="11" PostId="2" UserId="7" CreationDate="2010-01-03T17:00:00.000" Text="thanks"',
        'Id="12" PostId="999" UserId="7" CreationDate="2010-01-03T17:00:00.000" Text="?"',
    )
    xml(
        d / "Votes.xml",
        "votes",
        'Id="21" PostId="2" VoteTypeId="2" CreationDate="2010-01-03T00:00:00.000"',
        'Id="22" PostId="2" VoteTypeId="1" CreationDate="2010-01-03T00:00:00.000"',
    )
    return d


def test_stackexchange_maps_questions_answers_comments_and_acceptances(tmp_path: Path) -> None:
    items = read(stackexchange, stackexchange_dump(tmp_path / "se"))
    found = by_id(items)
    q = found["stackexchange:post:1"]
    assert (q.kind, q.actor.member_id, q.target.thread_id) == (
        "post",
        "stackexchange:7",
        "stackexchange:question:1",
    )
    assert q.properties["tags"] == ["kafka", "replay"] and q.properties["question"] is True
    answer = found["stackexchange:post:2"]
    assert answer.kind == "reply" and answer.target.thread_author_member_id == "stackexchange:7"
    accepted = found["stackexchange:accepted:2"]
    # the actor is the answer's author; the asker is the thread's author (JOURNEY-MODEL.md)
    assert accepted.kind == "answer_accepted"
    assert accepted.actor.member_id == "stackexchange:8"
    assert accepted.target.thread_author_member_id == "stackexchange:7"
    # the vote has a day only: placed no earlier than the answer itself
    assert accepted.occurred_at == answer.occurred_at
    comment = found["stackexchange:comment:11"]
    assert comment.target.parent_author_member_id == "stackexchange:8"
    assert found["stackexchange:user:-1"].actor.is_bot
    assert problems(items) == [
        ("Users.xml:6", "CreationDate 'not a date' is not a time"),
        ("Posts.xml:7", "no Id"),
    ]
    skipped = {i.where: i.skipped for i in items if i.skipped}
    assert "deleted user" in skipped["Posts.xml:5"]
    assert "PostTypeId 5" in skipped["Posts.xml:6"]
    assert "not in Posts.xml" in skipped["Comments.xml:4"]
    assert "not an acceptance" in skipped["Votes.xml:3"]
    times = [i.at for i in items]
    assert times == sorted(times), "the streams are merged in event time"


def test_stackexchange_malformed_or_missing_files_stop_before_anything(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"Posts\.xml is missing"):
        stackexchange.check(tmp_path)
    (tmp_path / "Posts.xml").write_text("this is not xml")
    with pytest.raises(ExportError, match=r"Posts.xml:1: not XML"):
        stackexchange.check(tmp_path)
    (tmp_path / "Posts.xml").write_text("<users><row Id='1'/></users>")
    with pytest.raises(ExportError, match="not <posts>"):
        stackexchange.check(tmp_path)


class Recorder:
    """A sender that remembers what it was given."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []

    async def send(self, encoded: list[bytes]) -> Sent:
        self.batches.append([json.loads(e) for e in encoded])
        return Sent()


async def test_a_malformed_export_sends_nothing(tmp_path: Path) -> None:
    d = stackexchange_dump(tmp_path / "se")
    (d / "Comments.xml").write_text("{not xml")
    sender = Recorder()
    with pytest.raises(ExportError, match=r"Comments\.xml"):
        await run_import(
            "stackexchange", d, sender, checkpoint_path=tmp_path / "cp.json", progress=False
        )
    assert sender.batches == []


def test_activities_jsonl_and_csv(tmp_path: Path) -> None:
    good = {
        "activity_id": "a-1",
        "occurred_at": "2026-01-05T09:00:00Z",
        "source": "crm",
        "kind": "purchase",
        "actor": {"member_id": "m-1"},
    }
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(json.dumps(good) + "\nnot json\n" + json.dumps({**good, "actor": {}}) + "\n")
    items = read(activities, jsonl)
    assert list(by_id(items)) == ["a-1"]
    assert [w for w, _ in problems(items)] == ["a.jsonl:2", "a.jsonl:3"]
    assert "/actor/member_id: Field required" in problems(items)[1][1]

    csv_file = tmp_path / "a.csv"
    csv_file.write_text(
        "activity_id,occurred_at,source,kind,actor.member_id,actor.is_bot,target.thread_id,"
        "properties\n"
        'a-2,2026-01-05T09:00:00Z,forum,post,m-2,false,t-1,"{""question"": true}"\n'
        "a-3,yesterday,forum,post,m-2,,,\n"
    )
    items = read(activities, csv_file)
    a2 = by_id(items)["a-2"]
    assert a2.target.thread_id == "t-1" and a2.properties == {"question": True}
    assert [w for w, _ in problems(items)] == ["a.csv:3"]
    (tmp_path / "b.csv").write_text("id,when\n1,2\n")
    with pytest.raises(ExportError, match="lacks"):
        activities.check(tmp_path / "b.csv")


def slack_export(d: Path, as_zip: bool = False) -> Path:
    files: dict[str, Any] = {
        "users.json": [
            {"id": "U1", "name": "ada", "profile": {"display_name": "Ada"}},
            {"id": "U2", "name": "bob"},
            {"id": "B1", "name": "helperbot", "is_bot": True},
            {"id": "U9", "name": "lurker"},
        ],
        "channels.json": [{"id": "C1", "name": "general"}],
        "general/2024-01-01.json": [
            {"type": "message", "subtype": "channel_join", "user": "U1", "ts": "1704103200.000100"},
            {
                "type": "message",
                "user": "U1",
                "text": "how do I replay?",
                "ts": "1704106800.000200",
                "thread_ts": "1704106800.000200",
                "reply_count": 1,
                "reactions": [{"name": "eyes", "users": ["U2"], "count": 1}],
            },
            {
                "type": "message",
                "user": "U2",
                "text": "reset the group",
                "ts": "1704107000.000300",
                "thread_ts": "1704106800.000200",
                "parent_user_id": "U1",
            },
            {"type": "message", "text": "no ts"},
        ],
        "general/2024-01-02.json": [
            {
                "type": "message",
                "subtype": "bot_message",
                "bot_id": "B1",
                "text": "deploy done",
                "ts": "1704200000.000100",
            }
        ],
    }
    if as_zip:
        with zipfile.ZipFile(d, "w") as z:
            for name, data in files.items():
                z.writestr(f"export/{name}", json.dumps(data))
        return d
    for name, data in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(json.dumps(data))
    return d


@pytest.mark.parametrize("as_zip", [False, True])
def test_slack_export(tmp_path: Path, as_zip: bool) -> None:
    path = slack_export(tmp_path / ("export.zip" if as_zip else "export"), as_zip)
    items = read(slack, path)
    found = by_id(items)
    assert found["slack:message:C1:1704106800.000200"].kind == "post"
    reply = found["slack:message:C1:1704107000.000300"]
    assert reply.kind == "reply" and reply.target.thread_author_member_id == "slack:U1"
    assert reply.target.thread_id == "slack:C1:1704106800.000200"
    assert found["slack:reaction:message:C1:1704106800.000200:U2:eyes"].kind == "reaction"
    assert found["slack:user:U1"].kind == "signup"
    assert found["slack:message:C1:1704200000.000100"].actor.is_bot
    assert any(a.kind == "channel_joined" for a in found.values())
    assert problems(items) == [("general/2024-01-01.json[3]", "a message without a valid ts")]
    assert any(i.skipped and "no activity" in i.skipped for i in items)  # U9


def test_slack_export_without_users_is_refused(tmp_path: Path) -> None:
    (tmp_path / "channels.json").write_text("[]")
    with pytest.raises(ExportError, match=r"users\.json is missing"):
        slack.check(tmp_path)
    (tmp_path / "x.zip").write_text("nope")
    with pytest.raises(ExportError, match="not a zip"):
        slack.check(tmp_path / "x.zip")


def test_discourse_pages(tmp_path: Path) -> None:
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "1.json").write_text(
        json.dumps(
            [
                {"id": 7, "username": "ada", "created_at": "2026-01-01T00:00:00Z", "active": True},
                {"id": 8, "username": "bob", "created_at": "bad time"},
            ]
        )
    )
    topic = {
        "id": 61,
        "title": "How do I replay a topic?",
        "slug": "replay",
        "created_at": "2026-01-05T09:00:00.000Z",
        "archetype": "regular",
        "details": {"created_by": {"id": 7, "username": "ada"}},
        "tags": ["question"],
    }
    (tmp_path / "topics.json").write_text(json.dumps(topic))
    post: dict[str, Any] = {
        "id": 145,
        "username": "bob",
        "user_id": 8,
        "created_at": "2026-01-05T10:00:00.000Z",
        "post_number": 2,
        "post_type": 1,
        "topic_id": 61,
        "topic_slug": "replay",
        "topic_title": "How do I replay a topic?",
        "raw": "Reset the group.",
        "accepted_answer": True,
    }
    first = {**post, "id": 144, "post_number": 1, "user_id": 7}
    (tmp_path / "posts.json").write_text(
        json.dumps({"post_stream": {"posts": [first, post, {"id": 146}]}})
    )
    (tmp_path / "likes.json").write_text(
        json.dumps(
            {
                "user_actions": [
                    {
                        "action_type": 1,
                        "post_id": 145,
                        "topic_id": 61,
                        "post_number": 2,
                        "target_user_id": 8,
                        "acting_user_id": 7,
                        "acting_username": "ada",
                        "created_at": "2026-01-05T11:00:00Z",
                    }
                ]
            }
        )
    )
    items = read(discourse, tmp_path)
    found = by_id(items)
    assert found["discourse:topic:61"].properties["question"] is True
    reply = found["discourse:post:145"]
    # the router fills the thread author from the topics it saw: the importer does the same
    assert reply.target.thread_author_member_id == "discourse:7"
    solution = found["discourse:solution:145"]
    assert solution.kind == "answer_accepted" and solution.actor.member_id == "discourse:8"
    assert solution.target.thread_author_member_id == "discourse:7"
    like = found["discourse:like:145:7"]
    assert like.occurred_at.hour == 11 and like.target.parent_author_member_id == "discourse:8"
    assert found["discourse:user:7"].actor.email is None
    assert [w for w, _ in problems(items)] == ["1.json page 1 [1]", "posts.json page 1 [2]"]


def test_github_pages_and_bad_rows(tmp_path: Path) -> None:
    repo = {"id": 35129377, "full_name": "o/r", "html_url": "https://github.com/o/r"}
    (tmp_path / "repo.json").write_text(json.dumps(repo))
    ada = {"id": 1, "login": "ada", "type": "User"}
    bob = {"id": 2, "login": "bob", "type": "User"}
    issue = {
        "id": 100,
        "number": 1,
        "title": "crash",
        "user": ada,
        "created_at": "2026-01-05T09:00:00Z",
        "labels": [{"name": "question"}],
        "author_association": "NONE",
    }
    pr_issue = {**issue, "id": 101, "number": 2, "pull_request": {"url": "x"}}
    # gh api --paginate writes the pages back to back
    (tmp_path / "issues.json").write_text(json.dumps([issue]) + json.dumps([pr_issue, {"id": 5}]))
    pr = {
        "id": 200,
        "number": 2,
        "title": "fix",
        "user": bob,
        "created_at": "2026-01-06T09:00:00Z",
        "merged_at": "2026-01-07T09:00:00Z",
        "head": {},
    }
    (tmp_path / "pulls.json").write_text(json.dumps([pr]))
    comment = {
        "id": 300,
        "user": bob,
        "created_at": "2026-01-05T10:00:00Z",
        "issue_url": "https://api.github.com/repos/o/r/issues/1",
        "body": "try this",
    }
    (tmp_path / "comments.json").write_text(json.dumps([comment]))
    review = {
        "id": 400,
        "user": ada,
        "state": "APPROVED",
        "submitted_at": "2026-01-06T12:00:00Z",
        "pull_request_url": "https://api.github.com/repos/o/r/pulls/2",
    }
    (tmp_path / "reviews").mkdir()
    (tmp_path / "reviews" / "2.json").write_text(json.dumps([review]))
    (tmp_path / "stargazers.json").write_text(
        json.dumps([{"starred_at": "2026-01-04T00:00:00Z", "user": bob}, {"user": ada}])
    )
    (tmp_path / "forks.json").write_text(
        json.dumps([{"id": 500, "owner": ada, "created_at": "2026-01-08T00:00:00Z"}])
    )
    items = read(github, tmp_path)
    found = by_id(items)
    assert found["github:issue:100"].target.thread_id == "github:35129377#1"
    assert found["github:issue_comment:300"].target.thread_author_member_id == "github:1"
    assert found["github:pull_request:200:opened"].kind == "code_contribution"
    assert found["github:pull_request:200:merged"].occurred_at.day == 7
    assert found["github:pull_request_review:400"].target.thread_author_member_id == "github:2"
    assert "github:star:35129377:2" in found and "github:fork:500" in found
    assert problems(items) == [
        ("issues.json page 2 [1]", "no valid time (created_at / submitted_at / merged_at)")
    ]
    skipped = [i.skipped for i in items if i.skipped]
    assert any("pull request in the issues list" in s for s in skipped)
    assert any("starred_at" in s for s in skipped)
    (tmp_path / "repo.json").unlink()
    with pytest.raises(ExportError, match=r"repo\.json is missing"):
        github.check(tmp_path)
