"""GitHub deliveries (X-GitHub-Event and the payload's `action`) as activities.

Threads are a repository's issue, pull request or discussion number (`github:<repo id>#<n>`:
the three share one sequence, and the repository id survives renames), so a comment, a
review and the thread they belong to agree. Authors associated with the repository as OWNER
or MEMBER are the team; `type: Bot` accounts are bots.

Activity ids name the platform object (`github:issue_comment:<id>`), so whatever delivers it
again — a redelivery, a second hook on the organisation — carries the same id. `star.created`
and `watch.started` (GitHub sends both when someone stars a repository) share one id on
purpose: the star is counted once. Only what GitHub gives no object id for (`member.added`)
is named by the delivery id.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.gateway.webhooks.mapping import (
    Delivery,
    Fields,
    Mapped,
    actor,
    excerpt,
    properties,
    target,
)
from shared.contracts import ActivityV1, Actor

SOURCE = "github"
TEAM_ASSOCIATIONS = frozenset({"OWNER", "MEMBER"})


def _person(user: Fields, association: str | None = None) -> Actor:
    login = user.opt_text("login")
    return actor(
        user.member(SOURCE, "id"),
        user.ident("id"),
        handle=login,
        is_bot=user.raw("type") == "Bot" or (login or "").endswith("[bot]"),
        is_team_member=association in TEAM_ASSOCIATIONS,
    )


def _author(item: Fields, key: str = "user") -> Actor:
    return _person(item.obj(key), item.opt_text("author_association"))


def _thread(repo: Fields, number: int) -> str:
    return f"github:{repo.ident('id')}#{number}"


def _labels(item: Fields) -> list[str]:
    labels = item.raw("labels")
    if not isinstance(labels, list):
        return []
    return [str(label["name"]) for label in labels if isinstance(label, dict) and label.get("name")]


def _activity(
    activity_id: str,
    kind: str,
    at: datetime,
    who: Actor,
    **fields: object,
) -> ActivityV1:
    return ActivityV1.model_validate(
        {
            "activity_id": activity_id,
            "occurred_at": at,
            "source": SOURCE,
            "kind": kind,
            "actor": who,
            **fields,
        }
    )


def _issue_opened(d: Delivery, p: Fields) -> Mapped:
    issue, repo = p.obj("issue"), p.obj("repository")
    changes = p.opt_obj("changes")
    if changes is not None and changes.has("old_issue"):
        return Mapped.ignore("an issue transferred from another repository: counted there")
    who = _author(issue)
    labels = _labels(issue)
    return Mapped(
        [
            _activity(
                f"github:issue:{issue.ident('id')}",
                "post",
                issue.time("created_at"),
                who,
                target=target(
                    thread_id=_thread(repo, issue.integer("number")),
                    thread_title=issue.opt_text("title"),
                    thread_author=who.member_id,
                    url=issue.raw("html_url"),
                ),
                properties=properties(
                    repository=repo.opt_text("full_name"),
                    number=issue.integer("number"),
                    tags=labels,
                    question=True if "question" in {label.lower() for label in labels} else None,
                    text=excerpt(issue.opt_text("body")),
                ),
            )
        ]
    )


def _is_team(item: Fields) -> bool:
    return item.opt_text("author_association") in TEAM_ASSOCIATIONS


def _issue_comment_created(d: Delivery, p: Fields) -> Mapped:
    comment, issue, repo = p.obj("comment"), p.obj("issue"), p.obj("repository")
    asker = _author(issue).member_id
    labels = {label.lower() for label in _labels(issue)}
    return Mapped(
        [
            _activity(
                f"github:issue_comment:{comment.ident('id')}",
                "reply",
                comment.time("created_at"),
                _author(comment),
                target=target(
                    thread_id=_thread(repo, issue.integer("number")),
                    thread_title=issue.opt_text("title"),
                    thread_author=asker,
                    parent_author=asker,  # a comment answers the issue itself
                    url=comment.raw("html_url"),
                    # an issue labelled question asks; a pull request never does
                    thread_is_question=not issue.has("pull_request") and "question" in labels,
                    thread_author_is_team_member=_is_team(issue),
                ),
                properties=properties(
                    repository=repo.opt_text("full_name"),
                    number=issue.integer("number"),
                    pull_request=True if issue.has("pull_request") else None,
                    text=excerpt(comment.opt_text("body")),
                ),
            )
        ]
    )


def _pull_request(d: Delivery, p: Fields, *, merged: bool) -> Mapped:
    pr, repo = p.obj("pull_request"), p.obj("repository")
    if merged and not pr.flag("merged"):
        return Mapped.ignore("a pull request closed without being merged")
    who = _author(pr)
    merged_by = pr.opt_obj("merged_by")
    return Mapped(
        [
            _activity(
                f"github:pull_request:{pr.ident('id')}:{'merged' if merged else 'opened'}",
                "code_contribution",
                pr.time("merged_at") if merged else pr.time("created_at"),
                who,
                target=target(
                    thread_id=_thread(repo, pr.integer("number")),
                    thread_title=pr.opt_text("title"),
                    thread_author=who.member_id,
                    url=pr.raw("html_url"),
                ),
                properties=properties(
                    repository=repo.opt_text("full_name"),
                    number=pr.integer("number"),
                    merged=True if merged else None,
                    merged_by=_person(merged_by).member_id if merged and merged_by else None,
                    draft=True if pr.flag("draft") else None,
                    tags=_labels(pr),
                    text=None if merged else excerpt(pr.opt_text("body")),
                ),
            )
        ]
    )


def _review_submitted(d: Delivery, p: Fields) -> Mapped:
    review, pr, repo = p.obj("review"), p.obj("pull_request"), p.obj("repository")
    author = _author(pr).member_id
    return Mapped(
        [
            _activity(
                f"github:pull_request_review:{review.ident('id')}",
                "reply",
                review.opt_time("submitted_at") or d.received_at,
                _author(review),
                target=target(
                    thread_id=_thread(repo, pr.integer("number")),
                    thread_title=pr.opt_text("title"),
                    thread_author=author,
                    parent_author=author,
                    url=review.raw("html_url"),
                ),
                properties=properties(
                    repository=repo.opt_text("full_name"),
                    number=pr.integer("number"),
                    review_state=review.opt_text("state"),
                    text=excerpt(review.opt_text("body")),
                ),
            )
        ]
    )


def _discussion_created(d: Delivery, p: Fields) -> Mapped:
    discussion, repo = p.obj("discussion"), p.obj("repository")
    who = _author(discussion)
    category = discussion.opt_obj("category")
    return Mapped(
        [
            _activity(
                f"github:discussion:{discussion.ident('id')}",
                "post",
                discussion.time("created_at"),
                who,
                target=target(
                    thread_id=_thread(repo, discussion.integer("number")),
                    thread_title=discussion.opt_text("title"),
                    thread_author=who.member_id,
                    url=discussion.raw("html_url"),
                ),
                properties=properties(
                    repository=repo.opt_text("full_name"),
                    number=discussion.integer("number"),
                    question=True if category and category.flag("is_answerable") else None,
                    category=category.opt_text("name") if category else None,
                    tags=_labels(discussion),
                    text=excerpt(discussion.opt_text("body")),
                ),
            )
        ]
    )


def _discussion_answered(d: Delivery, p: Fields) -> Mapped:
    """Credited to the answer's author; the asker is the thread's author."""
    discussion, answer, repo = p.obj("discussion"), p.obj("answer"), p.obj("repository")
    chosen_by = discussion.opt_obj("answer_chosen_by") or p.opt_obj("sender")
    return Mapped(
        [
            _activity(
                f"github:discussion_answer:{answer.ident('id')}",
                "answer_accepted",
                discussion.opt_time("answer_chosen_at") or d.received_at,
                _author(answer),
                target=target(
                    thread_id=_thread(repo, discussion.integer("number")),
                    thread_title=discussion.opt_text("title"),
                    thread_author=_author(discussion).member_id,
                    url=answer.raw("html_url"),
                ),
                properties=properties(
                    repository=repo.opt_text("full_name"),
                    number=discussion.integer("number"),
                    chosen_by=_person(chosen_by).member_id if chosen_by else None,
                ),
            )
        ]
    )


def _discussion_comment_created(d: Delivery, p: Fields) -> Mapped:
    comment, discussion, repo = p.obj("comment"), p.obj("discussion"), p.obj("repository")
    asker = _author(discussion).member_id
    category = discussion.opt_obj("category")
    parent = comment.opt_ident("parent_id")
    return Mapped(
        [
            _activity(
                f"github:discussion_comment:{comment.ident('id')}",
                "reply",
                comment.time("created_at"),
                _author(comment),
                target=target(
                    thread_id=_thread(repo, discussion.integer("number")),
                    thread_title=discussion.opt_text("title"),
                    thread_author=asker,
                    parent_id=f"github:discussion_comment:{parent}" if parent else None,
                    parent_author=None if parent else asker,
                    url=comment.raw("html_url"),
                    # a discussion in an answerable (Q&A) category asks
                    thread_is_question=bool(category and category.flag("is_answerable")),
                    thread_author_is_team_member=_is_team(discussion),
                ),
                properties=properties(
                    repository=repo.opt_text("full_name"),
                    number=discussion.integer("number"),
                    text=excerpt(comment.opt_text("body")),
                ),
            )
        ]
    )


def _starred(d: Delivery, p: Fields) -> Mapped:
    repo, sender = p.obj("repository"), p.obj("sender")
    return Mapped(
        [
            _activity(
                f"github:star:{repo.ident('id')}:{sender.ident('id')}",
                "star",
                p.opt_time("starred_at") or d.received_at,
                _person(sender),
                target=target(url=repo.raw("html_url")),
                properties=properties(repository=repo.opt_text("full_name"), via=d.event),
            )
        ]
    )


def _forked(d: Delivery, p: Fields) -> Mapped:
    forkee, repo = p.obj("forkee"), p.obj("repository")
    return Mapped(
        [
            _activity(
                f"github:fork:{forkee.ident('id')}",
                "fork",
                forkee.opt_time("created_at") or d.received_at,
                _person(p.obj("sender")),
                # the repository forked, not the fork: a fork's name and URL carry its
                # owner's login, which must not reach the log (docs/SECURITY.md)
                target=target(url=repo.raw("html_url")),
                properties=properties(repository=repo.opt_text("full_name")),
            )
        ]
    )


def _release_published(d: Delivery, p: Fields) -> Mapped:
    release, repo = p.obj("release"), p.obj("repository")
    return Mapped(
        [
            _activity(
                f"github:release:{release.ident('id')}",
                "content_published",
                release.opt_time("published_at") or release.time("created_at"),
                _person(release.obj("author")),
                target=target(
                    thread_title=release.opt_text("name") or release.opt_text("tag_name"),
                    url=release.raw("html_url"),
                ),
                properties=properties(
                    repository=repo.opt_text("full_name"),
                    tag=release.opt_text("tag_name"),
                    prerelease=True if release.flag("prerelease") else None,
                ),
            )
        ]
    )


def _member_added(d: Delivery, p: Fields) -> Mapped:
    member, repo = p.obj("member"), p.obj("repository")
    sender = p.opt_obj("sender")
    changes = p.opt_obj("changes")
    permission = changes.opt_obj("permission") if changes else None
    return Mapped(
        [
            _activity(
                f"github:member_added:{repo.ident('id')}:{member.ident('id')}:{d.delivery_id}",
                "repository_member_added",
                d.received_at,
                _person(member),
                target=target(url=repo.raw("html_url")),
                properties=properties(
                    repository=repo.opt_text("full_name"),
                    added_by=_person(sender).member_id if sender else None,
                    permission=permission.opt_text("to") if permission else None,
                ),
            )
        ]
    )


_MAPPERS: dict[str, Callable[[Delivery, Fields], Mapped]] = {
    "issues.opened": _issue_opened,
    "issue_comment.created": _issue_comment_created,
    "pull_request.opened": lambda d, p: _pull_request(d, p, merged=False),
    "pull_request.closed": lambda d, p: _pull_request(d, p, merged=True),
    "pull_request_review.submitted": _review_submitted,
    "discussion.created": _discussion_created,
    "discussion.answered": _discussion_answered,
    "discussion_comment.created": _discussion_comment_created,
    "star.created": _starred,
    "watch.started": _starred,
    "fork": _forked,
    "release.published": _release_published,
    "member.added": _member_added,
}

_WHY_NOT: dict[str, str] = {
    "ping": "ping: GitHub checks the webhook is set up",
    "pull_request_review_comment": "review comments are counted by their review "
    "(pull_request_review.submitted)",
    "release.released": "counted by release.published",
    "release.created": "counted when published",
}


def map_github(delivery: Delivery) -> Mapped:
    """The activities of one GitHub delivery, or why it has none."""
    mapper = _MAPPERS.get(delivery.name)
    if mapper is None:
        reason = _WHY_NOT.get(delivery.name) or _WHY_NOT.get(delivery.event)
        return Mapped.ignore(reason or f"{delivery.name} is not mapped to an activity")
    return mapper(delivery, Fields.root(delivery.payload))
