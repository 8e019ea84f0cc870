"""A bench phase: generate N rows of a Stack Exchange dump, import them, report the rate.

`python -m importers.bench --rows 10000` (a dry run: reading, mapping and validating), or
with `--gateway URL --api-key KEY` through a running gateway. Not wired into bench/.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import quoteattr

from importers.api import import_async

T0 = datetime(2020, 1, 1, tzinfo=UTC)


def _at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.000")


def generate_stackexchange(directory: Path, rows: int, people: int = 200) -> int:
    """About `rows` rows over the four files: users, questions with two answers each (the
    second accepted), a comment per answer. Returns the number of rows written."""
    directory.mkdir(parents=True, exist_ok=True)
    people = max(2, min(people, rows // 10 or 2))
    threads = max(1, (rows - people) // 5)  # question, 2 answers, 1 comment, 1 vote
    # a thread an hour up to 2,000 people; more people, closer threads: each person asks
    # about every 2,000 hours whatever the size, and 1M rows span ~2 years, not 22 (which
    # would run past the present by more than any gateway's max_future_s)
    spacing = min(60.0, 60.0 * 2000 / people)
    with (directory / "Users.xml").open("w") as f:
        f.write('<?xml version="1.0" encoding="utf-8"?>\n<users>\n')
        for u in range(1, people + 1):
            f.write(f'  <row Id="{u}" CreationDate="{_at(u)}" DisplayName="user {u}" />\n')
        f.write("</users>\n")
    with (
        (directory / "Posts.xml").open("w") as posts,
        (directory / "Comments.xml").open("w") as comments,
        (directory / "Votes.xml").open("w") as votes,
    ):
        posts.write('<?xml version="1.0" encoding="utf-8"?>\n<posts>\n')
        comments.write('<?xml version="1.0" encoding="utf-8"?>\n<comments>\n')
        votes.write('<?xml version="1.0" encoding="utf-8"?>\n<votes>\n')
        for t in range(threads):
            q, a1, a2 = 3 * t + 1, 3 * t + 2, 3 * t + 3
            asker = 1 + t % people
            minute = people + spacing * t
            title = quoteattr(f"How do I do thing {t}?")
            posts.write(
                f'  <row Id="{q}" PostTypeId="1" AcceptedAnswerId="{a2}" '
                f'CreationDate="{_at(minute)}" OwnerUserId="{asker}" Title={title} '
                f'Tags="&lt;python&gt;&lt;kafka&gt;" Body="&lt;p&gt;question {t}&lt;/p&gt;" />\n'
            )
            for n, a in enumerate((a1, a2), 1):
                helper = 1 + (t + n) % people
                posts.write(
                    f'  <row Id="{a}" PostTypeId="2" ParentId="{q}" '
                    f'CreationDate="{_at(minute + 10 * n)}" OwnerUserId="{helper}" '
                    f'Body="&lt;p&gt;answer {a}&lt;/p&gt;" />\n'
                )
            comments.write(
                f'  <row Id="{t + 1}" PostId="{a2}" UserId="{asker}" '
                f'CreationDate="{_at(minute + 25)}" Text="thanks!" />\n'
            )
            votes.write(
                f'  <row Id="{t + 1}" PostId="{a2}" VoteTypeId="1" '
                f'CreationDate="{_at(minute + 30)[:10]}T00:00:00.000" />\n'
            )
        posts.write("</posts>\n")
        comments.write("</comments>\n")
        votes.write("</votes>\n")
    return people + 5 * threads


async def bench(rows: int, gateway_url: str | None = None, api_key: str | None = None) -> str:
    with tempfile.TemporaryDirectory(prefix="flywheel-import-bench-") as tmp:
        written = generate_stackexchange(Path(tmp) / "dump", rows)
        started = time.monotonic()
        summary = await import_async(
            "stackexchange",
            Path(tmp) / "dump",
            gateway_url=gateway_url,
            api_key=api_key,
            checkpoint=Path(tmp) / "checkpoint.json",
            batch_size=1000,
        )
        elapsed = time.monotonic() - started
    mode = "dry run" if gateway_url is None else f"to {gateway_url}"
    return (
        f"stackexchange import ({mode}): {written:,} rows, {summary.read:,} items read, "
        f"{summary.sent:,} activities in {elapsed:.2f} s: {summary.read / elapsed:,.0f} "
        f"items/s, {summary.sent / elapsed:,.0f} activities/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--gateway", default=None)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    print(asyncio.run(bench(args.rows, args.gateway, args.api_key)))


if __name__ == "__main__":
    main()
