"""Discourse API pages (users, topics, posts, likes), mapped by the webhook mapper itself.

Each API object is wrapped in the payload of its webhook (`user_created`, `topic_created`,
`post_created`, `post_liked`, `accepted_solution`) and given to `map_discourse`: the ids are
those of the live webhooks by construction. What the API does not say, the importer takes
from the export: a post's thread author from the topics pages (a first pass keeping one
member id per topic), an acceptance's and a like's time from the post and the user action
(the API gives no acceptance time: the accepted answer's own time is used).
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from importers import jsonpages
from importers.items import EPOCH, ExportError, Item, bad, map_delivery, skip, timed
from importers.meter import Meter
from importers.platform import Delivery, map_discourse, member_id, parse_time
from shared.contracts import ActivityV1

SOURCE = "discourse"
STREAMS = ("users", "topics", "posts", "likes")
KEYS = {
    "users": "users",  # a plain array (/admin/users/list/all.json) or {"users": [...]}
    "topics": "topic_list.topics",  # /latest.json pages, or topic objects (/t/{id}.json)
    # /posts.json pages, or /t/{id}/posts.json pages
    "posts": "latest_posts|post_stream.posts",
    "likes": "user_actions",  # /user_actions.json?filter=1 pages
}
LIKE = 1  # user action type: a like given


def check(path: Path) -> list[Path]:
    if not path.is_dir():
        raise ExportError(f"{path}: a Discourse export is a directory of users/, topics/, posts/")
    found: list[Path] = []
    for stem in STREAMS:
        found += jsonpages.files(path, stem)
    if not any(
        f.parent.name in ("topics", "posts") or f.stem in ("topics", "posts") for f in found
    ):
        raise ExportError(f"{path}: neither topics nor posts pages are there")
    for f in found:
        jsonpages.check_json(f)
    return found


def delivery(event: str, payload: dict[str, Any], at: Any, base_url: str | None) -> Delivery:
    return Delivery(SOURCE, event, None, "import", payload, parse_time(at) or EPOCH, base_url)


# --- the mapping core: API objects to webhook payloads, no I/O ---------------------------------


def topic_creator(topic: dict[str, Any]) -> dict[str, Any] | None:
    """Who started a topic: `details.created_by` (topic view), `created_by`, `user_id`, or the
    topic list's poster described as the Original Poster."""
    details = topic.get("details")
    if isinstance(details, dict) and isinstance(details.get("created_by"), dict):
        return dict(details["created_by"])
    if isinstance(topic.get("created_by"), dict):
        return dict(topic["created_by"])
    if topic.get("user_id") is not None:
        return {"id": topic["user_id"]}
    for poster in topic.get("posters") or []:
        if isinstance(poster, dict) and "Original Poster" in str(poster.get("description", "")):
            return {"id": poster.get("user_id")}
    return None


def topic_delivery(topic: dict[str, Any], base_url: str | None) -> Delivery | str:
    creator = topic_creator(topic)
    if creator is None:
        return "a topic without its creator (save /t/{id}.json or /latest.json)"
    payload = {**topic, "created_by": creator, "user_id": creator.get("id")}
    payload.setdefault("archetype", topic.get("archetype") or "regular")
    return delivery("topic_created", {"topic": payload}, topic.get("created_at"), base_url)


def post_deliveries(post: dict[str, Any], base_url: str | None) -> list[Delivery]:
    out = [delivery("post_created", {"post": post}, post.get("created_at"), base_url)]
    if post.get("accepted_answer") is True:
        out.append(
            delivery("accepted_solution", {"solved": post}, post.get("created_at"), base_url)
        )
    return out


def like_delivery(action: dict[str, Any], base_url: str | None) -> Delivery | str:
    if action.get("action_type") not in (None, LIKE):
        return "a user action other than a like given"
    post = {
        "id": action.get("post_id"),
        "topic_id": action.get("topic_id"),
        "user_id": action.get("target_user_id", action.get("user_id")),
        "post_number": action.get("post_number"),
        "post_type": action.get("post_type") or 1,
        "topic_slug": action.get("slug"),
        "topic_title": action.get("title"),
        "topic_archetype": action.get("archetype") or "regular",
    }
    user = {"id": action.get("acting_user_id"), "username": action.get("acting_username")}
    return delivery(
        "post_liked", {"like": {"post": post, "user": user}}, action.get("created_at"), base_url
    )


def with_thread_author(activity: ActivityV1, authors: dict[str, str]) -> ActivityV1:
    """What the gateway's router does live from the topics it saw: the asker of a reply."""
    t = activity.target
    if t is None or not t.thread_id or t.thread_author_member_id:
        return activity
    author = authors.get(t.thread_id)
    if author is None:
        return activity
    update: dict[str, Any] = {"thread_author_member_id": author}
    if activity.kind == "reply" and t.parent_id is None and t.parent_author_member_id is None:
        update["parent_author_member_id"] = author
    return activity.model_copy(update={"target": t.model_copy(update=update)})


# --- the streams -------------------------------------------------------------------------------


def _stream(
    files: list[Path],
    stem: str,
    meter: Meter,
    build: Callable[[dict[str, Any]], Delivery | str | list[Delivery]],
    authors: dict[str, str],
) -> Iterator[Item]:
    for f in files:
        for where, record in jsonpages.records(f, KEYS[stem], meter):
            if not isinstance(record, dict):
                yield bad(where, "expected a JSON object")
                continue
            if stem == "users" and record.get("id") is not None and "user" not in record:
                record = {"user": record}
            built = build(record)
            if isinstance(built, str):
                yield skip(where, built)
                continue
            for d in built if isinstance(built, list) else [built]:
                if d.received_at == EPOCH:
                    yield bad(where, "no valid created_at")
                    continue
                for item in map_delivery(where, map_discourse, d):
                    if item.activity is not None:
                        item = Item(item.at, item.where, with_thread_author(item.activity, authors))
                    yield item


def items(path: Path, meter: Meter, base_url: str | None = None) -> Iterator[Item]:
    check(path)
    found = {stem: jsonpages.files(path, stem) for stem in STREAMS}
    for fs in found.values():
        for f in fs:
            meter.plan(f.stat().st_size)
    for f in found["topics"]:
        meter.plan(f.stat().st_size)
    meter.phase = "indexing topics"
    authors: dict[str, str] = {}
    for f in found["topics"]:
        for _, topic in jsonpages.records(f, KEYS["topics"], meter):
            creator = topic_creator(topic) if isinstance(topic, dict) else None
            if (
                creator is not None
                and creator.get("id") is not None
                and topic.get("id") is not None
            ):
                with contextlib.suppress(ValueError):  # a bad row of the topics stream
                    authors[f"discourse:topic:{topic['id']}"] = member_id(SOURCE, creator["id"])
    meter.phase = "importing"
    streams = [
        _stream(
            found["users"],
            "users",
            meter,
            lambda r: delivery(
                "user_created",
                r,
                r["user"].get("created_at") if isinstance(r.get("user"), dict) else None,
                base_url,
            ),
            authors,
        ),
        _stream(found["topics"], "topics", meter, lambda r: topic_delivery(r, base_url), authors),
        _stream(found["posts"], "posts", meter, lambda r: post_deliveries(r, base_url), authors),
        _stream(found["likes"], "likes", meter, lambda r: like_delivery(r, base_url), authors),
    ]
    yield from heapq.merge(*(timed(s) for s in streams), key=lambda i: i.at)
