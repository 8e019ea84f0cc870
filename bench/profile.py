"""Where a service's CPU goes, from py-spy's raw (collapsed-stack) samples.

Each sample is a stack `outer;...;inner count`. It is charged to the innermost frame that belongs
to a known part (the database driver, the Kafka client, pydantic, the domain rules...); frames of
the standard library are charged to whoever called them. Idle samples are not recorded (py-spy
without --idle), so the shares are shares of busy time.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

# (part, substrings of a frame that mark it), first match from the innermost frame wins
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("event ids (uuid5/sha1)", ("derive_event_id", "uuid.py")),
    ("decode: pydantic validation", ("validate_json", "pydantic", "cloudevents.py:")),
    ("telemetry and metrics", ("opentelemetry", "shared/telemetry.py", "shared/metrics.py")),
    ("logging", ("logging/__init__.py",)),
    ("PostgreSQL driver (asyncpg)", ("asyncpg",)),
    ("Kafka client (aiokafka)", ("aiokafka",)),
    ("FastStream", ("faststream",)),
    ("lifecycle (aliases, erasures)", ("shared/lifecycle/",)),
    ("domain rules", ("/domain.py",)),
    ("handler and store (set-based SQL)", ("/handlers.py", "/store.py", "eventtime.py")),
    ("inbox and outbox (uow)", ("shared/uow.py",)),
    ("outbox relay", ("shared/outbox.py",)),
    ("batch processor", ("shared/consumer.py",)),
)


def part_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for part, marks in PARTS:
            if any(m in frame for m in marks):
                return part
    return "event loop and other"


def summarize(raw: Path, top: int = 15) -> dict[str, object]:
    """Shares of busy samples per part, and the functions with the most own samples."""
    parts: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        stack = stack_text.split(";")
        total += count
        parts[part_of(stack)] += count
        own[stack[-1].strip()] += count
    return {
        "samples": total,
        "parts": {p: round(100 * c / total, 1) for p, c in parts.most_common()} if total else {},
        "top_own": [(f, round(100 * c / total, 1)) for f, c in own.most_common(top)]
        if total
        else [],
    }
