"""The project's own schema: ActivityV1, one per line (JSONL) or one per CSV row.

CSV columns are the activity's fields, nested ones dotted (`actor.member_id`,
`target.thread_id`); `properties` is a JSON object; `true`/`false` for the flags; an empty
cell is an absent field. Whatever another system exported in this shape imports as is: its
ids are the ids it chose.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from importers.items import ExportError, Item, bad
from importers.meter import Meter
from shared.contracts import ActivityV1

FLAGS = frozenset({"actor.anonymous", "actor.is_team_member", "actor.is_bot"})


def check(path: Path) -> list[Path]:
    if not path.is_file():
        raise ExportError(f"{path}: expected a .jsonl or .csv file")
    if path.suffix.lower() not in (".jsonl", ".ndjson", ".csv"):
        raise ExportError(f"{path}: expected a .jsonl, .ndjson or .csv file")
    with path.open(encoding="utf-8", errors="replace") as f:
        first = next((line for line in f if line.strip()), "")
    if path.suffix.lower() == ".csv":
        header = next(csv.reader(io.StringIO(first)), [])
        missing = {"activity_id", "occurred_at", "source", "kind", "actor.member_id"} - set(header)
        if missing:
            raise ExportError(f"{path.name}:1: the CSV header lacks {', '.join(sorted(missing))}")
    else:
        try:
            if not isinstance(json.loads(first), dict):
                raise ValueError("not an object")
        except ValueError as exc:
            raise ExportError(f"{path.name}:1: not a JSON object per line: {exc}") from None
    return [path]


def parse(data: Any) -> ActivityV1:
    """The mapping core: a JSON value to an activity (pydantic validates it)."""
    return ActivityV1.model_validate(data)


def from_csv_row(row: dict[str, str]) -> dict[str, Any]:
    """Dotted columns to the nested object; empty cells left out."""
    out: dict[str, Any] = {}
    for column, value in row.items():
        if column is None or value is None or value == "":
            continue
        parsed: Any = value
        if column == "properties":
            parsed = json.loads(value)
        elif column in FLAGS:
            parsed = value.strip().lower() in ("true", "1", "yes")
        node = out
        *parents, leaf = column.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = parsed
    return out


def _problem(exc: ValidationError) -> str:
    return "; ".join(
        f"/{'/'.join(str(p) for p in e['loc'])}: {e['msg']}"
        for e in exc.errors(include_url=False, include_input=False)[:5]
    )


def items(path: Path, meter: Meter, _base_url: str | None = None) -> Iterator[Item]:
    """Line by line: constant memory. Items stay in file order (the file's own order)."""
    meter.plan(path.stat().st_size)
    meter.phase = "importing"
    with path.open(encoding="utf-8", newline="") as f:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(f)
            for row in reader:
                where = f"{path.name}:{reader.line_num}"
                meter.advance(sum(len(v or "") + 1 for v in row.values()))
                try:
                    a = parse(from_csv_row(row))
                except json.JSONDecodeError as exc:
                    yield bad(where, f"properties is not JSON: {exc}")
                except ValidationError as exc:
                    yield bad(where, _problem(exc))
                else:
                    yield Item(a.occurred_at, where, a)
            return
        for number, line in enumerate(f, 1):
            meter.advance(len(line))
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                a = parse(json.loads(line))
            except json.JSONDecodeError as exc:
                yield bad(where, f"not JSON: {exc}")
            except ValidationError as exc:
                yield bad(where, _problem(exc))
            else:
                yield Item(a.occurred_at, where, a)
