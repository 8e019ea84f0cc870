"""The main job, small: the whole stack, a simulated community, a closed flywheel loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack import demo

pytestmark = pytest.mark.integration


DEMO_ENVIRONMENT = ("FLYWHEEL_API_KEYS", "FLYWHEEL_CLOCK_TICK_INTERVAL_S", "FLYWHEEL_MAX_FUTURE_S")
"""What the demo sets in its own environment (devstack/demo.py) for its services."""


def hand_back_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the demo sets is undone after the test, set before or not (a plain delenv of
    an unset variable records nothing, and the demo's values would leak into later tests)."""
    for name in DEMO_ENVIRONMENT:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_demo_grows_a_community_and_closes_the_loop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hand_back_the_environment(monkeypatch)
    code = demo.main(["--people", "100", "--weeks", "12", "--state-dir", str(tmp_path / "demo")])
    out = capsys.readouterr().out
    assert code == 0, out
    stages = (
        *("visitor", "member", "considering", "customer", "retained", "lapsed", "churned"),
        *("engaged", "at_risk", "advocate", "champion"),
    )
    for stage in stages:
        assert f" {stage} " in out, f"no {stage} in the stage counts:\n{out}"
    assert "The flywheel loop:" in out
    assert "Is the flywheel turning?" in out
    assert out.rstrip().endswith("stopped cleanly")


def results(out: str) -> str:
    """What the demo found: its figures and journeys, without the stack's progress lines and
    the wall-clock timings (how long posting and catching up took). Everything it prints is
    compared, the first touch of new members too: awareness settles it in event time
    (member.first_touch.v1), once its clock has passed each member's joining."""
    start = out.index("every service caught up")
    body = out[out.index("\n", start) + 1 : out.rindex("stopped cleanly")]
    return "\n".join(line for line in body.splitlines() if not line.startswith("stack:"))


def test_the_same_seed_prints_the_same_figures_and_journeys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twice the same community (same seed), on two fresh stacks: the same stage counts,
    flywheel figures, champion reviews and journeys, line for line."""
    hand_back_the_environment(monkeypatch)
    printed = []
    for run in ("one", "two"):
        args = [
            "--people",
            "80",
            "--weeks",
            "14",
            "--seed",
            "5",
            "--state-dir",
            str(tmp_path / run),
        ]
        assert demo.main(args) == 0
        printed.append(results(capsys.readouterr().out))
    assert "champion" in printed[0], printed[0]
    assert printed[0] == printed[1]
