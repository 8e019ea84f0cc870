"""JSON page files as saved from REST APIs, one page in memory at a time.

`gh api --paginate` writes the pages back to back (`[...][...]`), `--slurp` wraps them in one
array, and a loop of `curl` writes a file per page: all three are read here. A file is read
in chunks and decoded one top-level value (a page) at a time, so memory is bounded by the
largest page, not the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from importers.items import ExportError
from importers.meter import Meter

CHUNK = 1 << 20
_decoder = json.JSONDecoder()


def values(path: Path, meter: Meter | None = None) -> Iterator[Any]:
    """Every top-level JSON value of the file, in order."""
    buffer = ""
    eof = False
    with path.open(encoding="utf-8") as f:
        while True:
            buffer = buffer.lstrip()
            if buffer:
                try:
                    value, end = _decoder.raw_decode(buffer)
                except json.JSONDecodeError as exc:
                    if eof:
                        raise ExportError(f"{path.name}: not JSON: {exc}") from None
                else:
                    yield value
                    buffer = buffer[end:]
                    continue
            elif eof:
                return
            chunk = f.read(CHUNK)
            if meter is not None:
                meter.advance(len(chunk))
            eof = not chunk
            buffer += chunk


def pages(path: Path, meter: Meter | None = None) -> Iterator[Any]:
    """The pages of a file: a `--slurp` array of arrays is unwrapped into its pages."""
    for value in values(path, meter):
        if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            yield from value
        else:
            yield value


def records(
    path: Path, key: str | None = None, meter: Meter | None = None
) -> Iterator[tuple[str, Any]]:
    """`(where, record)` for every record of every page; `key` picks the list out of an
    object page (Discourse's `{"latest_posts": [...]}`), dotted for nested ones, `|` between
    alternatives."""
    for number, page in enumerate(pages(path, meter), 1):
        found = page
        if isinstance(page, dict) and key:
            for alternative in key.split("|"):
                found = page
                for part in alternative.split("."):
                    found = found.get(part) if isinstance(found, dict) else None
                if isinstance(found, list):
                    break
        if not isinstance(found, list):
            found = [page] if isinstance(page, dict) else None
        if found is None:
            raise ExportError(f"{path.name} page {number}: expected a JSON array or object")
        for index, record in enumerate(found):
            yield f"{path.name} page {number} [{index}]", record


def check_json(path: Path) -> None:
    """The file starts with a JSON array or object: read its first page."""
    try:
        first = next(iter(pages(path)), None)
    except ExportError:
        raise
    except UnicodeDecodeError as exc:
        raise ExportError(f"{path.name}: not JSON text: {exc}") from None
    if not isinstance(first, list | dict):
        raise ExportError(f"{path.name}: expected a JSON array or object")


def files(directory: Path, stem: str) -> list[Path]:
    """`stem.json` and/or every `.json` file in `stem/`, sorted by name."""
    found = [directory / f"{stem}.json"] if (directory / f"{stem}.json").is_file() else []
    if (directory / stem).is_dir():
        found += sorted((directory / stem).glob("*.json"))
    return found
