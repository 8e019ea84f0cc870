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


def state_dir() -> Path:
    """Where checkpoints go by default: `$FLYWHEEL_STATE_DIR/imports` (the operator CLI's state
    directory), else the user's state directory (`$XDG_STATE_HOME/flywheel/imports`, by default
    `~/.local/state/flywheel/imports`). Not the working directory (a resume from another one
    would start over), not beside the export (often read-only, or shared by people importing
    it into different deployments)."""
    if env := os.environ.get("FLYWHEEL_STATE_DIR"):
        return Path(env) / "imports"
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "flywheel" / "imports"


def default_path(source: str, export: Path, gateway: str | None = None) -> Path:
    """`<state_dir()>/<source>-<hash>.json`, the hash of the export's absolute path and the
    gateway's URL: the same export imported into staging and then production has a checkpoint
    for each (one would otherwise find the other's finished and send nothing)."""
    key = str(export.resolve()) + "\x1f" + (gateway or "").rstrip("/")
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return state_dir() / f"{source}-{digest}.json"


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
