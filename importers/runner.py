"""One import: the export's items, in batches, through the sender, with a checkpoint and a
progress bar. The readers and mappers know nothing of sending; the sender nothing of exports."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from importers import activities, discourse, github, slack, stackexchange
from importers.checkpoint import Checkpoint, default_path, fingerprint
from importers.items import ExportError, Item
from importers.meter import Meter
from importers.readahead import read_ahead
from importers.sender import Sent

DEFAULT_BATCH = 500
MAX_BATCH = 1000  # the gateway's FLYWHEEL_MAX_BATCH_ITEMS default
MAX_BATCH_BYTES = 900_000  # under the gateway's FLYWHEEL_MAX_REQUEST_BYTES (1 MiB)
LATENESS = timedelta(hours=1)  # the stage services' FLYWHEEL_ALLOWED_LATENESS_S default
SHOWN_BAD_ROWS = 20


class Sender(Protocol):
    async def send(self, encoded: list[bytes]) -> Sent: ...


@dataclass(frozen=True)
class SourceReader:
    check: Callable[[Path], list[Path]]
    items: Callable[[Path, Meter, str | None], Iterator[Item]]
    about: str


SOURCES: dict[str, SourceReader] = {
    "stackexchange": SourceReader(
        stackexchange.check, stackexchange.items, "a Stack Exchange data dump (directory)"
    ),
    "slack": SourceReader(slack.check, slack.items, "a Slack workspace export (zip or directory)"),
    "discourse": SourceReader(
        discourse.check, discourse.items, "Discourse API pages (users/, topics/, posts/)"
    ),
    "github": SourceReader(
        github.check, github.items, "GitHub REST API pages (repo.json, issues/, pulls/, ...)"
    ),
    "activities": SourceReader(
        activities.check, activities.items, "ActivityV1 as JSONL or CSV (a file)"
    ),
}


@dataclass
class Summary:
    source: str
    export: str
    read: int = 0
    sent: int = 0
    bad: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    retries: int = 0
    late: int = 0
    resumed_from: int = 0
    elapsed_s: float = 0.0
    dry_run: bool = False
    checkpoint: str | None = None
    report: str | None = None
    bad_rows: list[str] = field(default_factory=list)  # the first few, for the screen

    @property
    def rate(self) -> float:
        return (self.read - self.resumed_from) / self.elapsed_s if self.elapsed_s else 0.0


def _absolute(path: Path) -> str:
    return os.path.abspath(path)


def _open_report(path: Path, *, append: bool) -> TextIO:
    """Every bad row, one JSON line each; a resumed import appends, a dry run starts over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a" if append else "w")


def check_export(source: str, path: Path) -> list[Path]:
    """Structure checked up front: a missing file or one that is not XML/JSON stops here."""
    reader = SOURCES.get(source)
    if reader is None:
        raise ExportError(f"unknown source {source!r}; one of {', '.join(SOURCES)}")
    if not path.exists():
        raise ExportError(f"{path}: no such file or directory")
    return reader.check(path)


async def run_import(
    source: str,
    path: Path,
    sender: Sender | None,
    *,
    batch_size: int = DEFAULT_BATCH,
    checkpoint_path: Path | None = None,
    restart: bool = False,
    base_url: str | None = None,
    console: Console | None = None,
    progress: bool = True,
    stop_after_batches: int | None = None,
) -> Summary:
    """Import `path`; `sender` None is a dry run (read, map, validate, send nothing).

    `stop_after_batches` stops as if interrupted (for tests of resuming).
    """
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch size must be 1..{MAX_BATCH}")
    files = check_export(source, path)
    prints = fingerprint(files)
    cp_path = checkpoint_path or default_path(source, path)
    summary = Summary(source, str(path), dry_run=sender is None)
    cp = Checkpoint(source, _absolute(path), prints)
    if sender is not None:
        previous = None if restart else Checkpoint.load(cp_path)
        if previous is not None and not previous.matches(source, prints):
            raise ExportError(
                f"{cp_path} is the checkpoint of another or a changed export; --restart to "
                "start over (activities already sent keep their ids: they are deduplicated)"
            )
        if previous is not None:
            cp = previous
        summary.checkpoint = str(cp_path)
        summary.resumed_from = cp.position
        summary.sent, summary.bad = cp.sent, cp.bad
        summary.skipped.update(cp.skipped)
        summary.batches = cp.batches
    report_path = cp_path.with_suffix(".bad-rows.jsonl")
    summary.report = str(report_path)
    if cp.done:
        summary.read = cp.position
        return summary

    meter = Meter()
    stream = SOURCES[source].items(path, meter, base_url)
    console = console or Console(stderr=True)
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
        transient=False,
    )
    batch: list[bytes] = []
    in_batch: list[Item] = []
    ids: set[str] = set()
    size = 0
    newest: datetime | None = None
    started = time.monotonic()
    shown_at = 0.0
    report = _open_report(report_path, append=sender is not None)

    def report_bad(where: str, problem: str) -> None:
        summary.bad += 1
        line = f"{where}: {problem}"
        if len(summary.bad_rows) < SHOWN_BAD_ROWS:
            summary.bad_rows.append(line)
        report.write(json.dumps({"where": where, "problem": problem}) + "\n")

    def counts() -> str:
        rate = summary.rate if summary.elapsed_s else 0.0
        return (
            f"read {summary.read:,}  sent {summary.sent:,}  bad {summary.bad:,}  "
            f"skipped {sum(summary.skipped.values()):,}  {rate:,.0f}/s"
        )

    async def flush(position: int) -> None:
        nonlocal batch, in_batch, size
        if batch and sender is not None:
            sent = await sender.send(batch)
            summary.retries += sent.retries
            for index, why in sorted(sent.rejected.items()):
                report_bad(in_batch[index].where, "refused by the gateway: " + "; ".join(why))
            summary.sent += len(batch) - len(sent.rejected)
            summary.batches += 1
        elif batch:
            summary.sent += len(batch)  # a dry run: validated, counted as would-be sent
            summary.batches += 1
        batch, in_batch, size = [], [], 0
        ids.clear()
        if sender is not None:
            cp.position, cp.sent, cp.bad = position, summary.sent, summary.bad
            cp.skipped, cp.batches = dict(summary.skipped), summary.batches
            cp.save(cp_path)

    try:
        with bar:
            task = bar.add_task("reading", total=None, counts="")
            position = 0
            for item, encoded in read_ahead(stream, skip=cp.position):
                position += 1
                summary.read = position
                now = time.monotonic()
                if now - shown_at > 0.2:
                    shown_at = now
                    summary.elapsed_s = now - started
                    phase = meter.phase if position > cp.position else "skipping to checkpoint"
                    bar.update(
                        task,
                        description=phase,
                        completed=meter.done,
                        total=meter.total or None,
                        counts=counts(),
                    )
                if position <= cp.position:
                    continue
                if item.problem is not None:
                    report_bad(item.where, item.problem)
                elif item.skipped is not None or item.activity is None:
                    summary.skipped[item.skipped or "nothing to import"] += 1
                else:
                    a = item.activity
                    if a.activity_id in ids:
                        summary.skipped["the same activity twice in the export"] += 1
                        continue
                    if newest is not None and a.occurred_at < newest - LATENESS:
                        summary.late += 1
                    newest = a.occurred_at if newest is None else max(newest, a.occurred_at)
                    assert encoded is not None  # every activity is, after the checkpoint
                    if batch and size + len(encoded) > MAX_BATCH_BYTES:
                        await flush(position - 1)
                    batch.append(encoded)
                    in_batch.append(item)
                    ids.add(a.activity_id)
                    size += len(encoded) + 1
                if len(batch) >= batch_size:
                    await flush(position)
                    if stop_after_batches is not None and summary.batches >= stop_after_batches:
                        raise KeyboardInterrupt
            await flush(position)
            cp.done = True
            if sender is not None:
                cp.save(cp_path)
            summary.elapsed_s = time.monotonic() - started
            bar.update(task, description="done", completed=meter.done, counts=counts())
    finally:
        summary.elapsed_s = time.monotonic() - started
        report.close()
    return summary


def print_summary(summary: Summary, console: Console) -> None:
    what = "validated (dry run)" if summary.dry_run else "sent"
    console.print(
        f"[bold]{summary.source}[/bold] {summary.export}: read {summary.read:,} items in "
        f"{summary.elapsed_s:,.1f} s ({summary.rate:,.0f}/s); {summary.sent:,} activities {what} "
        f"in {summary.batches:,} batches; {summary.bad:,} bad rows; "
        f"{sum(summary.skipped.values()):,} skipped"
        + (f"; resumed after item {summary.resumed_from:,}" if summary.resumed_from else "")
        + (f"; {summary.retries} retries" if summary.retries else "")
    )
    for reason, n in summary.skipped.most_common():
        console.print(f"  skipped {n:,}: {reason}")
    if summary.late:
        console.print(
            f"  {summary.late:,} activities came more than {LATENESS} older than one sent "
            "before them: the stage services may judge them late (see docs/IMPORTING.md)"
        )
    for line in summary.bad_rows:
        console.print(f"  [red]bad[/red] {line}", soft_wrap=True)
    if summary.bad > len(summary.bad_rows):
        console.print(f"  ... every bad row is in {summary.report}")
