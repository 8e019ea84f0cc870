"""The garbage-collector tuning every service process applies at start (shared/runtime.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.settings import Settings

PROBE = """
import gc, json
from shared.runtime import tune_garbage_collector
from shared.settings import Settings
before = gc.get_freeze_count()
tune_garbage_collector(Settings().gc_threshold)
print(json.dumps({"threshold": gc.get_threshold(), "frozen_before": before,
                  "frozen_after": gc.get_freeze_count()}))
"""


def _probe(env: dict[str, str]) -> dict[str, object]:
    """Runs the tuning in a process of its own: it changes process-wide state."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_a_service_process_collects_every_50000_allocations_and_freezes_its_start_up() -> None:
    seen = _probe({})
    assert seen["threshold"] == [50_000, 20, 100]
    assert seen["frozen_before"] == 0
    assert isinstance(seen["frozen_after"], int) and seen["frozen_after"] > 10_000


def test_the_thresholds_come_from_the_environment() -> None:
    assert _probe({"FLYWHEEL_GC_THRESHOLD": "[700,10,10]"})["threshold"] == [700, 10, 10]


def test_a_malformed_threshold_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLYWHEEL_GC_THRESHOLD", "[700,-1,10]")
    with pytest.raises(ValidationError, match="gc_threshold"):
        Settings()
    monkeypatch.setenv("FLYWHEEL_GC_THRESHOLD", "[700,10]")
    with pytest.raises(ValidationError, match="gc_threshold"):
        Settings()
