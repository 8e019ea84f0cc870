"""The main job, small: the whole stack, a simulated community, a closed flywheel loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack import demo

pytestmark = pytest.mark.integration


def test_demo_grows_a_community_and_closes_the_loop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the demo configures its services through its environment: give it back afterwards
    for name in ("FLYWHEEL_API_KEYS", "FLYWHEEL_CLOCK_TICK_INTERVAL_S"):
        monkeypatch.delenv(name, raising=False)
    code = demo.main(["--people", "80", "--weeks", "10", "--state-dir", str(tmp_path / "demo")])
    out = capsys.readouterr().out
    assert code == 0, out
    for stage in ("visitor", "member", "customer", "engaged", "at_risk", "advocate", "champion"):
        assert f" {stage} " in out, f"no {stage} in the stage counts:\n{out}"
    assert "The flywheel loop:" in out
    assert "Is the flywheel turning?" in out
    assert out.rstrip().endswith("stopped cleanly")
