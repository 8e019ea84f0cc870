"""Where a running dev stack is: its state directory and the `endpoints.json` it writes there.

Standard library only: the operator CLI (`ops`) reads this file too, to find a dev stack when
no environment variables say where things are.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

ENDPOINTS_FILE = "endpoints.json"


def repo_root() -> Path | None:
    """The checkout this module lives in, or None when installed as a package."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").exists() else None


def default_state_dir() -> Path:
    """FLYWHEEL_STATE_DIR, else `.flywheel/` at the repo root (gitignored), else in the cwd."""
    if env := os.environ.get("FLYWHEEL_STATE_DIR"):
        return Path(env)
    return (repo_root() or Path.cwd()) / ".flywheel"


@dataclass
class Endpoints:
    """Where the running stack is; also written to `<state>/endpoints.json`."""

    kafka_bootstrap: str
    postgres_admin_url: str
    database_urls: dict[str, str]  # service name -> that service's own PostgreSQL URL
    gateway_url: str | None = None  # None until the gateway runs
    health_urls: dict[str, str] = field(default_factory=dict)  # service -> base URL of /readyz
    log_dir: str = ""
    state_dir: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Endpoints:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
