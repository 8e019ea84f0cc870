"""Where an import got to: a small JSON file, replaced atomically after each acknowledged batch.

The readers are deterministic (same export, same order of items), so a position in the
stream of items is enough: a resumed import reads the export again from the start, sends
nothing up to the position, and carries on. At most the batch in flight when the import was
stopped is sent twice, and its activities keep their ids, so the stage services' inbox drops
the copies. The export's files (names, sizes, modification times) are recorded: a checkpoint
of another export, or of a changed one, is refused rather than skipping the wrong items.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1


def fingerprint(files: list[Path]) -> list[list[Any]]:
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(files)]


def default_path(source: str, export: Path) -> Path:
    """`.flywheel-import/<source>-<hash of the export's absolute path>.json` in the cwd."""
    digest = hashlib.sha256(str(export.resolve()).encode()).hexdigest()[:12]
    return Path(".flywheel-import") / f"{source}-{digest}.json"


@dataclass
class Checkpoint:
    source: str
    export: str
    files: list[list[Any]]
    position: int = 0  # items of the stream fully handled (sent and acknowledged, or reported)
    sent: int = 0
    bad: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    done: bool = False
    version: int = VERSION

    def save(self, path: Path) -> None:
        """Write a temporary file, fsync it, rename it over the old one: never half-written."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as f:
            json.dump(asdict(self), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        if data.get("version") != VERSION:
            raise ValueError(f"{path}: a checkpoint of another version ({data.get('version')})")
        return cls(**data)

    def matches(self, source: str, files: list[list[Any]]) -> bool:
        return self.source == source and self.files == files
