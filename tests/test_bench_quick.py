"""The benchmark runs: `python -m bench --quick` prints its figures and writes them as JSON.

Figures are printed, never asserted (timing targets are met in benchmarks, not in tests: this
machine is shared). What is checked is that every figure is there, with the command, the
machine and the versions that make it readable.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from bench.workload import check_sample, community
from shared.cloudevents import _ID_NAMESPACE, derive_event_id

REPO = Path(__file__).resolve().parents[1]


def test_derive_event_id_is_uuid5() -> None:
    """derive_event_id is computed without a UUID object; it must stay the same UUIDv5."""
    causes = [("activity", "web", "b-1"), ("x",), ("journey", "m-é", "", "engaged", "t", "a:1")]
    for cause in causes:
        assert derive_event_id(*cause) == str(uuid.uuid5(_ID_NAMESPACE, "\x1f".join(cause)))


def test_workload_decodes_with_the_services_decoder() -> None:
    """The backlog is built without pydantic, in the gateway's layout; it must decode."""
    records = list(community(3000, 300, seed=1))
    assert len(records) == 3000
    assert check_sample(records, every=1) == 3000
    growth = list(community(1000, 400, seed=2, all_members_first=True))
    assert len({r.key for r in growth}) >= 400


def test_stage_topics_match_the_services() -> None:
    """The bench watches each service's lag on the topics its SPEC consumes."""
    from bench.phases import CONSUMES
    from services.advocacy.__main__ import SPEC as ADVOCACY
    from services.awareness.__main__ import SPEC as AWARENESS
    from services.engagement.__main__ import SPEC as ENGAGEMENT

    for spec in (AWARENESS, ENGAGEMENT, ADVOCACY):
        assert set(CONSUMES[spec.name]) == {t.name for t in spec.consumes}
        assert spec.consumer_group == spec.name


def test_a_ratio_is_never_printed_on_the_wrong_side_of_its_target() -> None:
    """The table's verdicts say met or NOT met; the ratio beside them must not say otherwise."""
    from bench.run import _ratio

    assert _ratio(0.997, 1.0) == "0.997"  # not "1.00", beside "NOT met"
    assert _ratio(0.5996, 0.6) == "0.5996"
    assert _ratio(0.596, 0.6) == "0.596"
    assert _ratio(1.004, 1.0) == "1.00"
    assert _ratio(0.77, 1.0) == "0.77"
    assert _ratio(0.6, 0.6) == "0.60"


def test_the_floor_is_a_figure_beside_the_stages_not_a_verdict() -> None:
    """The runtime's floor is shown against the ceiling, without a met or NOT met of its own
    (it is not a service the targets are for), and its ratio is in the JSON's ratios."""
    from bench.run import catch_up_ratios, table

    run = {"rate_per_s": 8000.0, "records_per_cpu_s": 9000.0, "finished": True}
    cu = {
        "passthrough_before": {**run, "rate_per_s": 10000.0},
        "awareness": {**run, "rate_per_s": 5000.0},
        "floor": run,
    }
    rows = {row[0]: row for row in table({"figures": {"catch_up": cu}})}
    floor = rows["2. the runtime's floor (no rules) catch-up (records/s)"]
    assert floor[2] == "side by side" and floor[3] == "0.80x ceiling"
    assert rows["2. awareness catch-up (records/s)"][3] == "0.50x ceiling (NOT met)"
    assert catch_up_ratios(cu)["floor"] == {"to_ceiling": 0.8}


def test_the_memory_growth_runs_to_the_last_sample_not_the_last_checkpoint() -> None:
    """A run that ends short of its top checkpoint (999,140 members of a 1M mark) still
    reports its growth from the first checkpoint to where it ended."""
    from bench.run import table

    def mark(members: int, rss: float) -> dict[str, Any]:
        per = dict.fromkeys(("awareness", "engagement", "advocacy"), rss)
        return {"members": members, "at_s": 1.0, "rss_mib": per, "database_mib": per}

    memory = {
        "checkpoints": [mark(10_000, 100.0), mark(100_000, 110.0)],
        "final": mark(999_140, 125.0),
        "finished": True,
        "wall_s": 700.0,
    }
    rows = {row[0]: row for row in table({"figures": {"memory": memory}})}
    assert "5. memory at 999,140 members: RSS MiB (aw/en/ad), DB MiB" in rows
    growth = rows["5. RSS growth 10,000 -> 999,140 members (MiB)"]
    assert growth[1] == "+25 / +25 / +25"


@pytest.mark.integration
def test_quick_mode_prints_figures_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        # the read model apart (as deploy/k8s runs it), so its process is measured too
        [
            *(sys.executable, "-m", "bench", "--quick"),
            *("--gateway-read-model", "own-process", "--out", str(out)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(proc.stdout[-6000:])  # the figures, for whoever reads the CI log
    assert proc.returncode == 0, proc.stderr[-4000:]
    for figure in (
        "1. ceiling",
        "2. awareness",
        "2. engagement",
        "2. advocacy",
        "2. the runtime's floor",
    ):
        assert figure in proc.stdout
    quix = importlib.util.find_spec("quixstreams") is not None  # the `bench` extra
    assert ("engagement on Quix" in proc.stdout) == quix
    for figure in (
        "3. gateway ingest",
        "4. end to end",
        "5. memory",
        "6. replay",
        "7. history",
        "7b. backfill",
        "9. 1 x engagement",
    ):
        assert figure in proc.stdout
    (written,) = out.glob("bench-quick-*.json")
    report = json.loads(written.read_text())
    assert report["command"].startswith("python -m bench --quick")
    assert report["machine"]["cores"] >= 1 and "load_1_5_15" in report["machine"]
    for name in ("python", "kafka", "postgresql", "aiokafka", "pydantic"):
        assert report["versions"][name]
    figures = report["figures"]
    for run in ("passthrough_before", "awareness", "engagement", "advocacy", "floor"):
        assert figures["catch_up"][run]["rate_per_s"] > 0
    assert figures["gateway_ingest"]["rate_per_s"] > 0
    e2e = figures["end_to_end"]
    assert e2e["transitions_matched"] > 0
    assert len(e2e["from_request_p50_p95_p99_ms"]) == 3
    # the quick run (8 s) is not longer than the warm-up the steady-state figures leave out
    assert e2e["steady_after_s"] >= e2e["seconds"] and e2e["steady_p50_p95_p99_ms"] is None
    assert "no steady-state figure" in proc.stdout
    assert figures["memory"]["checkpoints"] or figures["memory"]["final"]
    assert figures["replay"]["wall_s"] > 0
    assert all(r["rate_per_s"] > 0 for r in figures["replicas"]["runs"].values())
    imported = figures["import"]
    assert imported["settled"] and imported["rate_per_s"] > 0, imported
    assert imported["plain_ingest"]["rate_per_s"] > 0 and imported["ratio_to_plain"] > 0
    assert imported["importer_peak_rss_mib"] > 0
    # the read model ran in a process of its own, as asked, and did its work
    assert report["parameters"]["gateway_read_model"] == "own-process"
    assert imported["cpu_s"]["gateway-read-model"] > 0
    backfill = figures["backfill"]  # issue 13: the same activities POSTed, every service up
    assert backfill["settled"] and backfill["rate_per_s"] > 0, backfill
    assert set(backfill["group_settled_s"]) <= set(backfill["lag_when_fed"])
    assert report["table"] and all(len(row) == 4 for row in report["table"])
