"""Sending and resuming: batches, retries, a refused item reported by file and line and the
rest of its batch kept, a checkpoint that resumes without losing or repeating items."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from importers.bench import generate_stackexchange
from importers.checkpoint import Checkpoint
from importers.items import ExportError
from importers.runner import run_import
from importers.sender import GatewaySender, Sent


def gateway(handler: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://gw")


async def test_retries_503_and_429_then_succeeds() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(503, headers={"retry-after": "0"}, json={"detail": "down"})
        if len(calls) == 2:
            return httpx.Response(429, json={})
        return httpx.Response(202, json={"accepted": ["a"]})

    async with gateway(handler) as client:
        sent = await GatewaySender(client, initial_backoff_s=0.01).send([b"{}"])
    assert len(calls) == 3 and sent.retries == 2 and sent.rejected == {}


async def test_a_refused_item_is_reported_and_the_rest_sent() -> None:
    bodies: list[list[Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["activities"]
        bodies.append(items)
        bad = [i for i, a in enumerate(items) if a.get("bad")]
        if bad:
            return httpx.Response(
                422,
                json={
                    "type": "urn:flywheel:problem:invalid-activity",
                    "status": 422,
                    "errors": [
                        {"pointer": f"/activities/{i}/kind", "detail": "not allowed"} for i in bad
                    ],
                },
            )
        return httpx.Response(202, json={"accepted": []})

    encoded = [json.dumps({"n": i, "bad": i in (1, 3)}).encode() for i in range(5)]
    async with gateway(handler) as client:
        sent = await GatewaySender(client).send(encoded)
    assert sent.rejected == {1: ["/kind: not allowed"], 3: ["/kind: not allowed"]}
    assert [a["n"] for a in bodies[-1]] == [0, 2, 4]


async def test_a_refusal_without_pointers_stops_the_import() -> None:
    from importers.sender import SendError

    async with gateway(lambda r: httpx.Response(401, json={"detail": "no key"})) as client:
        with pytest.raises(SendError, match="401"):
            await GatewaySender(client).send([b"{}"])


class Downstream:
    """The gateway and the stage services' inbox: what counts is each id applied once."""

    def __init__(self, die_after: int | None = None) -> None:
        self.received: list[str] = []
        self.batches = 0
        self.die_after = die_after

    async def send(self, encoded: list[bytes]) -> Sent:
        self.received += [json.loads(e)["activity_id"] for e in encoded]
        self.batches += 1
        if self.die_after is not None and self.batches >= self.die_after:
            # the gateway took the batch, the importer died before its checkpoint
            raise KeyboardInterrupt
        return Sent()


async def test_interrupted_then_resumed_applies_each_activity_once(tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    rows = generate_stackexchange(dump, 1000)
    cp = tmp_path / "cp.json"
    first = Downstream()
    with pytest.raises(KeyboardInterrupt):
        await run_import(
            "stackexchange",
            dump,
            first,
            batch_size=100,
            checkpoint_path=cp,
            progress=False,
            stop_after_batches=3,
        )
    saved = Checkpoint.load(cp)
    assert saved is not None and saved.sent == 300 and not saved.done

    # killed after the gateway acknowledged a batch but before the checkpoint was written
    second = Downstream(die_after=2)
    with pytest.raises(KeyboardInterrupt):
        await run_import(
            "stackexchange", dump, second, batch_size=100, checkpoint_path=cp, progress=False
        )
    third = Downstream()
    summary = await run_import(
        "stackexchange", dump, third, batch_size=100, checkpoint_path=cp, progress=False
    )
    everything = first.received + second.received + third.received
    assert len(set(everything)) == rows
    # at most one batch went twice: the one in flight when the import died
    assert len(everything) - rows == 100
    assert set(third.received[:100]) == set(second.received[100:])
    assert summary.sent == rows and summary.bad == 0
    again = Downstream()
    await run_import("stackexchange", dump, again, checkpoint_path=cp, progress=False)
    assert again.received == [], "a finished import sends nothing again"


async def test_a_changed_export_does_not_resume_from_another_checkpoint(tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    generate_stackexchange(dump, 200)
    cp = tmp_path / "cp.json"
    with pytest.raises(KeyboardInterrupt):
        await run_import(
            "stackexchange",
            dump,
            Downstream(),
            batch_size=50,
            checkpoint_path=cp,
            progress=False,
            stop_after_batches=1,
        )
    with (dump / "Posts.xml").open("a") as f:
        f.write("\n")
    with pytest.raises(ExportError, match="changed export"):
        await run_import("stackexchange", dump, Downstream(), checkpoint_path=cp, progress=False)


async def test_bad_rows_are_written_to_the_report(tmp_path: Path) -> None:
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"activity_id": "x"}\n')
    summary = await run_import(
        "activities", jsonl, Downstream(), checkpoint_path=tmp_path / "cp.json", progress=False
    )
    assert summary.bad == 1 and summary.bad_rows[0].startswith("a.jsonl:1: ")
    assert read_report(summary.report or "")[0]["where"] == "a.jsonl:1"


def read_report(path: str) -> list[Any]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_the_cli_knows_every_source() -> None:
    from importers import cli, runner

    assert set(cli.SOURCES) == set(runner.SOURCES)
    assert (cli.DEFAULT_BATCH, cli.MAX_BATCH) == (runner.DEFAULT_BATCH, runner.MAX_BATCH)


def test_flywheel_import_dry_run(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ops.cli import app

    generate_stackexchange(tmp_path / "dump", 300)
    result = CliRunner().invoke(
        app,
        [
            "import",
            "stackexchange",
            str(tmp_path / "dump"),
            "--dry-run",
            "--checkpoint",
            str(tmp_path / "cp.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "300 activities validated (dry run)" in result.output
    (tmp_path / "dump" / "Posts.xml").write_text("garbage")
    result = CliRunner().invoke(
        app,
        [
            "import",
            "stackexchange",
            str(tmp_path / "dump"),
            "--dry-run",
            "--checkpoint",
            str(tmp_path / "cp.json"),
        ],
    )
    assert result.exit_code == 2 and "not XML" in result.output
