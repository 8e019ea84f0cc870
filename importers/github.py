"""GitHub REST API pages (`gh api --paginate ...`), mapped by the webhook mapper itself.

Each REST object is wrapped in the payload its webhook would carry (`issues.opened`,
`issue_comment.created`, `pull_request.opened`/`closed`, `pull_request_review.submitted`,
`star.created`, `fork`) and given to `map_github`: activity ids, member ids and thread ids
are then those of the live webhooks by construction, and a webhook redelivery of an imported
item is recognised downstream.

The REST objects leave out what the payload has around them: the repository (from
`repo.json`), a comment's or review's issue or pull request (from a first pass over
`issues` and `pulls`, keeping per number only its author, title, whether it is a pull
request and whether it is labelled a question: memory grows with the number of issues, not
with comments).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from importers import jsonpages
from importers.items import EPOCH, ExportError, Item, bad, map_delivery, skip, timed
from importers.meter import Meter
from importers.platform import Delivery, map_github, parse_time

SOURCE = "github"
STREAMS = ("issues", "pulls", "comments", "reviews", "stargazers", "forks")
_NUMBER = re.compile(r"/(?:issues|pulls)/(\d+)$")


def check(path: Path) -> list[Path]:
    if not path.is_dir():
        raise ExportError(f"{path}: a GitHub export is a directory with repo.json and pages")
    repo = path / "repo.json"
    if not repo.is_file():
        raise ExportError(f"{path}: repo.json is missing (gh api repos/OWNER/REPO > repo.json)")
    found = [repo]
    for stem in STREAMS:
        found += jsonpages.files(path, stem)
    if len(found) == 1:
        raise ExportError(f"{path}: no pages ({', '.join(s + '.json' for s in STREAMS)})")
    for f in found:
        jsonpages.check_json(f)
    repository = next(jsonpages.values(repo))
    if not isinstance(repository, dict) or "id" not in repository:
        raise ExportError("repo.json: not a repository object (no id)")
    return found


def delivery(event: str, action: str | None, payload: dict[str, Any], at: datetime) -> Delivery:
    """A webhook delivery as GitHub would send it for this object."""
    return Delivery(SOURCE, event, action, "import", {"action": action, **payload}, at)


# --- the mapping core: REST objects to webhook payloads, no I/O --------------------------------


def issue_payload(issue: dict[str, Any], repo: dict[str, Any]) -> Delivery | str:
    if "pull_request" in issue:
        return "a pull request in the issues list: imported from pulls"
    at = parse_time(issue.get("created_at")) or EPOCH
    return delivery(
        "issues", "opened", {"issue": issue, "repository": repo, "sender": issue.get("user")}, at
    )


def pull_payloads(pr: dict[str, Any], repo: dict[str, Any]) -> list[Delivery]:
    """Opened, and merged when it was (the list endpoint has `merged_at`, not `merged`)."""
    merged = pr.get("merged_at") is not None
    pr = {**pr, "merged": merged}
    out = [
        delivery(
            "pull_request",
            "opened",
            {"pull_request": pr, "repository": repo, "number": pr.get("number")},
            parse_time(pr.get("created_at")) or EPOCH,
        )
    ]
    if merged:
        out.append(
            delivery(
                "pull_request",
                "closed",
                {"pull_request": pr, "repository": repo, "number": pr.get("number")},
                parse_time(pr.get("merged_at")) or EPOCH,
            )
        )
    return out


def number_of(url: Any) -> int | None:
    match = _NUMBER.search(url) if isinstance(url, str) else None
    return int(match.group(1)) if match else None


def comment_payload(
    comment: dict[str, Any], repo: dict[str, Any], issues: dict[int, dict[str, Any]]
) -> Delivery | str:
    number = number_of(comment.get("issue_url"))
    if number is None:
        return "a comment without issue_url"
    issue = issues.get(number)
    if issue is None:
        return "a comment on an issue not in the export (issues pages)"
    at = parse_time(comment.get("created_at")) or EPOCH
    return delivery(
        "issue_comment", "created", {"comment": comment, "issue": issue, "repository": repo}, at
    )


def review_payload(
    review: dict[str, Any], repo: dict[str, Any], issues: dict[int, dict[str, Any]]
) -> Delivery | str:
    if review.get("state") == "PENDING" or not review.get("submitted_at"):
        return "a pending review: not submitted"
    number = number_of(review.get("pull_request_url"))
    pr = issues.get(number) if number is not None else None
    if pr is None:
        return "a review of a pull request not in the export (pulls or issues pages)"
    at = parse_time(review.get("submitted_at")) or EPOCH
    return delivery(
        "pull_request_review",
        "submitted",
        {"review": review, "pull_request": pr, "repository": repo},
        at,
    )


def star_payload(star: dict[str, Any], repo: dict[str, Any]) -> Delivery | str:
    """Stargazers saved with `Accept: application/vnd.github.star+json` carry `starred_at`."""
    at = parse_time(star.get("starred_at"))
    if at is None:
        return (
            "a stargazer without starred_at "
            "(save with -H 'Accept: application/vnd.github.star+json')"
        )
    return delivery(
        "star",
        "created",
        {"starred_at": star["starred_at"], "repository": repo, "sender": star.get("user")},
        at,
    )


def fork_payload(fork: dict[str, Any], repo: dict[str, Any]) -> Delivery:
    at = parse_time(fork.get("created_at")) or EPOCH
    return delivery(
        "fork", None, {"forkee": fork, "repository": repo, "sender": fork.get("owner")}, at
    )


def thread_facts(item: dict[str, Any]) -> dict[str, Any]:
    """What a comment's or review's payload needs of its issue or pull request."""
    kept = {k: item.get(k) for k in ("number", "title", "user", "author_association")}
    if "pull_request" in item or "merged_at" in item or "head" in item:
        kept["pull_request"] = {}
    labels = item.get("labels")
    if isinstance(labels, list) and any(
        isinstance(label, dict) and str(label.get("name", "")).lower() == "question"
        for label in labels
    ):
        kept["labels"] = [{"name": "question"}]  # its comments answer a question: peer help
    return kept


# --- the streams -------------------------------------------------------------------------------


def _stream(
    files: list[Path],
    meter: Meter,
    build: Callable[[dict[str, Any]], Delivery | str | list[Delivery]],
) -> Iterator[Item]:
    for f in files:
        for where, record in jsonpages.records(f, meter=meter):
            if not isinstance(record, dict):
                yield bad(where, "expected a JSON object")
                continue
            try:
                built = build(record)
            except (KeyError, TypeError, ValueError) as exc:
                yield bad(where, f"cannot read: {exc}")
                continue
            if isinstance(built, str):
                yield skip(where, built)
                continue
            for d in built if isinstance(built, list) else [built]:
                if d.received_at == EPOCH:
                    yield bad(where, "no valid time (created_at / submitted_at / merged_at)")
                    continue
                yield from map_delivery(where, map_github, d)


def items(path: Path, meter: Meter, _base_url: str | None = None) -> Iterator[Item]:
    """Every stream merged by event time (save each in ascending order: docs/IMPORTING.md)."""
    check(path)
    repo = next(jsonpages.values(path / "repo.json"))
    found = {stem: jsonpages.files(path, stem) for stem in STREAMS}
    for stem in ("issues", "pulls"):
        for f in found[stem]:
            meter.plan(f.stat().st_size)
    for fs in found.values():
        for f in fs:
            meter.plan(f.stat().st_size)
    meter.phase = "indexing issues"
    threads: dict[int, dict[str, Any]] = {}
    for stem in ("pulls", "issues"):  # an issue entry of a pull request has less: pulls first
        for f in found[stem]:
            for _, record in jsonpages.records(f, meter=meter):
                if isinstance(record, dict) and isinstance(record.get("number"), int):
                    threads.setdefault(record["number"], thread_facts(record))
    meter.phase = "importing"
    streams = [
        _stream(found["issues"], meter, lambda r: issue_payload(r, repo)),
        _stream(found["pulls"], meter, lambda r: pull_payloads(r, repo)),
        _stream(found["comments"], meter, lambda r: comment_payload(r, repo, threads)),
        _stream(found["reviews"], meter, lambda r: review_payload(r, repo, threads)),
        _stream(found["stargazers"], meter, lambda r: star_payload(r, repo)),
        _stream(found["forks"], meter, lambda r: fork_payload(r, repo)),
    ]
    yield from heapq.merge(*(timed(s) for s in streams), key=lambda i: i.at)
