"""What every reader yields: one export item, with where it came from and what it became."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from importers.platform import Delivery, Malformed, Mapped
from shared.contracts import ActivityV1

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ExportError(Exception):
    """The export as a whole cannot be read (missing file, not XML/JSON): nothing is sent."""


@dataclass(frozen=True, slots=True)
class Item:
    """One record of the export: an activity, a bad row (`problem`), or skipped on purpose.

    `at` orders the merged streams in event time; `where` is `file:line` or `file[index]`.
    """

    at: datetime
    where: str
    activity: ActivityV1 | None = None
    problem: str | None = None
    skipped: str | None = None


def bad(where: str, problem: str, at: datetime = EPOCH) -> Item:
    return Item(at, where, problem=problem)


def skip(where: str, reason: str, at: datetime = EPOCH) -> Item:
    return Item(at, where, skipped=reason)


def from_mapped(where: str, mapped: Mapped, at: datetime = EPOCH) -> Iterator[Item]:
    """A webhook mapper's answer as items: its activities, or why there are none."""
    if not mapped.activities:
        yield skip(where, mapped.ignored or "nothing to import", at)
        return
    for activity in mapped.activities:
        yield Item(activity.occurred_at, where, activity)


def guarded(where: str, build: Callable[[], Iterator[Item]], at: datetime = EPOCH) -> list[Item]:
    """Run a mapping; a record it cannot map becomes a bad row naming the field."""
    try:
        return list(build())
    except Malformed as exc:
        return [bad(where, f"{exc.pointer or '/'}: {exc.detail}", at)]
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        loc = "/".join(str(p) for p in first["loc"])
        return [bad(where, f"not a valid activity: /{loc}: {first['msg']}", at)]
    except (KeyError, TypeError, ValueError) as exc:
        return [bad(where, f"cannot map: {type(exc).__name__}: {exc}", at)]


def map_delivery(
    where: str, mapper: Callable[[Delivery], Mapped], d: Delivery, at: datetime | None = None
) -> list[Item]:
    """A webhook mapper on one delivery built from an export record, as items."""
    return guarded(where, lambda: from_mapped(where, mapper(d), d.received_at), at or EPOCH)


def timed(items: Iterator[Item]) -> Iterator[Item]:
    """Give bad and skipped rows without a time the time of the item before them, so a
    stream stays sorted for the merge."""
    last = EPOCH
    for item in items:
        if item.at == EPOCH and item.activity is None:
            yield Item(last, item.where, None, item.problem, item.skipped)
        else:
            last = item.at
            yield item


def as_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ExportError(f"{where}: expected a JSON object, found {type(value).__name__}")
    return value
