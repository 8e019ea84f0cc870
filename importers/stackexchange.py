"""Stack Exchange data dumps (`Users.xml`, `Posts.xml`, `Comments.xml`, `Votes.xml`).

There is no Stack Exchange webhook, so the ids are this module's: `stackexchange:<user id>`
for members, `stackexchange:question:<id>` for threads, `stackexchange:post:<id>`,
`stackexchange:comment:<id>`, `stackexchange:user:<id>`, `stackexchange:accepted:<answer id>`
for activities. They depend only on the dump's ids, so re-importing gives the same ids.

Memory: an answer needs its question (thread id, asker) and a comment or an acceptance vote
its post's author, but the dump's files are not joined. A first pass over Posts.xml keeps
only three 32-bit numbers per post id (owner user id, question id, creation time) in `array`s
indexed by post id: 12 bytes x the highest post id (about 24 MB for a site of 2 M posts, about
1 GB for Stack Overflow's 80 M).
Then four streams (users, posts, comments, votes; each in id order, which is creation order)
are merged by event time. XML is read with expat's push parser, which builds no tree and
knows each row's line: constant memory whatever the file size.
"""

from __future__ import annotations

import heapq
import re
import xml.parsers.expat
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from importers.items import ExportError, Item, bad, skip, timed
from importers.meter import Meter
from importers.platform import IdentityError, excerpt, member_id
from shared.contracts import ActivityV1, Actor, Target

SOURCE = "stackexchange"
FILES = ("Users.xml", "Posts.xml", "Comments.xml", "Votes.xml")
REQUIRED = ("Posts.xml",)
ROOTS = {
    "Users.xml": "users",
    "Posts.xml": "posts",
    "Comments.xml": "comments",
    "Votes.xml": "votes",
}
QUESTION, ANSWER = "1", "2"
ACCEPTED_BY_ORIGINATOR = "1"
NO_USER = -(2**31)
NOT_A_POST = -1  # parent of a post id not in Posts.xml
OTHER_POST = -2  # parent of a wiki, tag excerpt, ...: not a question or an answer
CHUNK = 1 << 20

Row = dict[str, str]


class BadRow(ValueError):
    """A row the mapping cannot use: reported with its file and line."""


# --- reading -----------------------------------------------------------------------------------


def rows(path: Path, meter: Meter | None = None) -> Iterator[tuple[int, Row]]:
    """Every `<row>` of a dump file with its line, in file order, without building a tree."""
    parser = xml.parsers.expat.ParserCreate()
    pending: list[tuple[int, Row]] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        if name == "row":
            pending.append((parser.CurrentLineNumber, attrs))

    parser.StartElementHandler = start
    with path.open("rb") as f:
        while True:
            chunk = f.read(CHUNK)
            try:
                parser.Parse(chunk, not chunk)
            except xml.parsers.expat.ExpatError as exc:
                raise ExportError(f"{path.name}:{exc.lineno}: not well-formed XML: {exc}") from None
            if meter is not None:
                meter.advance(len(chunk))
            yield from pending
            pending.clear()
            if not chunk:
                return


def check(path: Path) -> list[Path]:
    """The dump's files, each checked to be the XML it should be, before anything is sent."""
    if not path.is_dir():
        raise ExportError(f"{path}: a Stack Exchange dump is a directory with Posts.xml etc.")
    files = [path / name for name in FILES if (path / name).is_file()]
    for name in REQUIRED:
        if not (path / name).is_file():
            raise ExportError(f"{path}: {name} is missing")
    for file in files:
        root = _root(file)
        if root != ROOTS[file.name]:
            raise ExportError(
                f"{file.name}: the root element is <{root}>, not <{ROOTS[file.name]}>"
            )
    return files


def _root(path: Path) -> str:
    parser = xml.parsers.expat.ParserCreate()
    found: list[str] = []
    parser.StartElementHandler = lambda name, _: found.append(name)
    with path.open("rb") as f:
        while not found:
            chunk = f.read(64 * 1024)
            try:
                parser.Parse(chunk, not chunk)
            except xml.parsers.expat.ExpatError as exc:
                raise ExportError(f"{path.name}:{exc.lineno}: not XML: {exc}") from None
            if not chunk:
                break
    if not found:
        raise ExportError(f"{path.name}: no XML element")
    return found[0]


# --- the compact facts of the first pass -------------------------------------------------------


@dataclass
class PostFacts:
    """Per post id: its owner's user id, its question's id (0 for a question), and when it
    was created (Unix seconds)."""

    owner: array[int]
    parent: array[int]
    created: array[int]

    @classmethod
    def empty(cls) -> PostFacts:
        return cls(array("i"), array("i"), array("I"))

    def add(self, post_id: int, owner: int, parent: int, created: int) -> None:
        if post_id >= len(self.owner):
            grow = max(post_id + 1 - len(self.owner), len(self.owner) // 2, 1024)
            self.owner.extend([NO_USER] * grow)
            self.parent.extend([NOT_A_POST] * grow)
            self.created.extend([0] * grow)
        self.owner[post_id] = owner
        self.parent[post_id] = parent
        self.created[post_id] = created

    def created_at(self, post_id: int) -> datetime | None:
        seconds = self.created[post_id] if 0 <= post_id < len(self.created) else 0
        return datetime.fromtimestamp(seconds, UTC) if seconds else None

    def owner_of(self, post_id: int) -> int:
        return self.owner[post_id] if 0 <= post_id < len(self.owner) else NO_USER

    def parent_of(self, post_id: int) -> int:
        return self.parent[post_id] if 0 <= post_id < len(self.parent) else NOT_A_POST


def collect(path: Path, meter: Meter | None = None) -> PostFacts:
    facts = PostFacts.empty()
    for _, row in rows(path, meter):
        try:
            post_id = int(row["Id"])
            kind = row.get("PostTypeId")
            parent = 0 if kind == QUESTION else int(row.get("ParentId") or 0)
            if kind not in (QUESTION, ANSWER) or (kind == ANSWER and parent <= 0):
                parent = OTHER_POST
            owner = int(row["OwnerUserId"]) if row.get("OwnerUserId") else NO_USER
            created = int(parse_date(row.get("CreationDate")).timestamp())
        except (KeyError, ValueError):
            continue  # reported as a bad row by the second pass
        if post_id > 0:
            facts.add(post_id, owner, parent, max(created, 0))
    return facts


# --- the mapping core: rows to activities, no I/O -----------------------------------------------


def parse_date(value: str | None) -> datetime:
    """Dump times are UTC without a zone: `2008-07-31T21:42:52.667`."""
    if not value:
        raise BadRow("no CreationDate")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRow(f"CreationDate {value[:40]!r} is not a time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _int(row: Row, key: str) -> int:
    try:
        return int(row[key])
    except KeyError:
        raise BadRow(f"no {key}") from None
    except ValueError:
        raise BadRow(f"{key} {row[key][:40]!r} is not a number") from None


def member(user_id: int) -> str:
    try:
        return member_id(SOURCE, user_id)
    except IdentityError as exc:
        raise BadRow(str(exc)) from None


def _person(user_id: int, handle: str | None = None) -> Actor:
    """User -1 is the site's `Community` account: a bot."""
    return Actor(
        member_id=member(user_id),
        platform_user_id=str(user_id),
        handle=(handle or "").strip()[:200] or None,
        is_bot=user_id < 1,
    )


def thread(question_id: int) -> str:
    return f"{SOURCE}:question:{question_id}"


def post_activity_id(post_id: int) -> str:
    return f"{SOURCE}:post:{post_id}"


def tags(value: str | None) -> list[str]:
    """`<python><xml>` (older dumps) or `|python|xml|` (newer ones)."""
    return [t for t in re.split(r"[<>|]+", value or "") if t]


def _url(base_url: str | None, kind: str, post_id: int) -> str | None:
    return f"{base_url.rstrip('/')}/{kind}/{post_id}" if base_url else None


def map_user(row: Row) -> ActivityV1:
    user_id = _int(row, "Id")
    return ActivityV1(
        activity_id=f"{SOURCE}:user:{user_id}",
        occurred_at=parse_date(row.get("CreationDate")),
        source=SOURCE,
        kind="signup",
        actor=_person(user_id, row.get("DisplayName")),
        # not AccountId: the person's id across the whole network, which must not reach the log
    )


def map_post(row: Row, facts: PostFacts, base_url: str | None = None) -> ActivityV1 | str:
    """A question is a `post` that starts its thread; an answer a `reply` to the question."""
    post_id, kind = _int(row, "Id"), row.get("PostTypeId")
    at = parse_date(row.get("CreationDate"))
    if kind not in (QUESTION, ANSWER):
        return f"a post of PostTypeId {kind} (wiki, tag excerpt, ...): not a contribution"
    if not row.get("OwnerUserId"):
        return "a post without OwnerUserId (a deleted user): nobody to credit"
    who = _person(_int(row, "OwnerUserId"))
    text = excerpt(row.get("Body"))
    if kind == QUESTION:
        return ActivityV1(
            activity_id=post_activity_id(post_id),
            occurred_at=at,
            source=SOURCE,
            kind="post",
            actor=who,
            target=Target(
                thread_id=thread(post_id),
                thread_title=(row.get("Title") or "").strip()[:500] or None,
                thread_author_member_id=who.member_id,
                url=_url(base_url, "q", post_id),
            ),
            properties={
                k: v
                for k, v in {"question": True, "tags": tags(row.get("Tags")), "text": text}.items()
                if v
            },
        )
    question = _int(row, "ParentId")
    asker = facts.owner_of(question)
    asker_id = member(asker) if asker != NO_USER else None
    return ActivityV1(
        activity_id=post_activity_id(post_id),
        occurred_at=at,
        source=SOURCE,
        kind="reply",
        actor=who,
        target=Target(
            thread_id=thread(question),
            thread_author_member_id=asker_id,
            parent_id=post_activity_id(question),
            parent_author_member_id=asker_id,
            parent_kind="post",
            url=_url(base_url, "a", post_id),
            thread_is_question=True,  # an answer, in a question: peer help
        ),
        properties={"text": text} if text else {},
    )


def map_comment(row: Row, facts: PostFacts) -> ActivityV1 | str:
    """A comment is a `reply` in its post's thread, to the post's author."""
    comment_id, post_id = _int(row, "Id"), _int(row, "PostId")
    at = parse_date(row.get("CreationDate"))
    parent = facts.parent_of(post_id)
    if parent == NOT_A_POST:
        return "a comment on a post not in Posts.xml (deleted)"
    if parent == OTHER_POST:
        return "a comment on a wiki or tag excerpt: not in a thread"
    if not row.get("UserId"):
        return "a comment without UserId (a deleted user): nobody to credit"
    question = post_id if parent == 0 else parent
    post_owner, asker = facts.owner_of(post_id), facts.owner_of(question)
    text = excerpt(row.get("Text"))
    return ActivityV1(
        activity_id=f"{SOURCE}:comment:{comment_id}",
        occurred_at=at,
        source=SOURCE,
        kind="reply",
        actor=_person(_int(row, "UserId"), row.get("UserDisplayName")),
        target=Target(
            thread_id=thread(question),
            thread_author_member_id=member(asker) if asker != NO_USER else None,
            parent_id=post_activity_id(post_id),
            parent_author_member_id=member(post_owner) if post_owner != NO_USER else None,
            parent_kind="post" if parent == 0 else "reply",
        ),
        properties={"comment": True, **({"text": text} if text else {})},
    )


def map_vote(row: Row, facts: PostFacts, base_url: str | None = None) -> ActivityV1 | str:
    """VoteTypeId 1 (AcceptedByOriginator): credited to the answer's author, the asker being
    the thread's author (docs/JOURNEY-MODEL.md). The dump gives the vote's day only: the
    acceptance is placed at that day's start, or at the answer's creation if later."""
    if row.get("VoteTypeId") != ACCEPTED_BY_ORIGINATOR:
        return "not an acceptance vote (other votes are anonymous in the dump)"
    answer = _int(row, "PostId")
    at = parse_date(row.get("CreationDate"))
    answered_at = facts.created_at(answer)
    if answered_at is not None and answered_at > at:
        at = answered_at
    question = facts.parent_of(answer)
    if question <= 0:
        return "an acceptance of a post that is not an answer in Posts.xml"
    author, asker = facts.owner_of(answer), facts.owner_of(question)
    if author == NO_USER:
        return "an accepted answer without an owner (a deleted user): nobody to credit"
    return ActivityV1(
        activity_id=f"{SOURCE}:accepted:{answer}",
        occurred_at=at,
        source=SOURCE,
        kind="answer_accepted",
        actor=_person(author),
        target=Target(
            thread_id=thread(question),
            thread_author_member_id=member(asker) if asker != NO_USER else None,
            parent_id=post_activity_id(answer),
            parent_author_member_id=member(author),
            parent_kind="reply",
            url=_url(base_url, "a", answer),
        ),
        properties={"chosen_by": member(asker)} if asker != NO_USER else {},
    )


# --- the streams -------------------------------------------------------------------------------


def _stream(
    path: Path, meter: Meter | None, mapper: Callable[[Row], ActivityV1 | str]
) -> Iterator[Item]:
    for line, row in rows(path, meter):
        where = f"{path.name}:{line}"
        try:
            mapped = mapper(row)
        except BadRow as exc:
            yield bad(where, str(exc))
            continue
        except ValueError as exc:  # pydantic: an invalid activity
            yield bad(where, f"not a valid activity: {exc}".splitlines()[0][:300])
            continue
        if isinstance(mapped, str):
            yield skip(where, mapped)
        else:
            yield Item(mapped.occurred_at, where, mapped)


def items(path: Path, meter: Meter, base_url: str | None = None) -> Iterator[Item]:
    """The dump's activities, merged by event time (each file is in creation order)."""
    files = {f.name: f for f in check(path)}
    for name, f in files.items():
        meter.plan(f.stat().st_size * (2 if name == "Posts.xml" else 1))
    meter.phase = "indexing posts"
    facts = collect(files["Posts.xml"], meter)
    meter.phase = "importing"
    streams: list[Iterator[Item]] = []
    if "Users.xml" in files:
        streams.append(_stream(files["Users.xml"], meter, map_user))
    streams.append(_stream(files["Posts.xml"], meter, lambda r: map_post(r, facts, base_url)))
    if "Comments.xml" in files:
        streams.append(_stream(files["Comments.xml"], meter, lambda r: map_comment(r, facts)))
    if "Votes.xml" in files:
        streams.append(_stream(files["Votes.xml"], meter, lambda r: map_vote(r, facts, base_url)))
    yield from heapq.merge(*(timed(s) for s in streams), key=lambda i: i.at)
