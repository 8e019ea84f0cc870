"""The library call: one import against a gateway URL (or a dry run), synchronously."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from rich.console import Console

from importers.runner import DEFAULT_BATCH, Summary, run_import
from importers.sender import GatewaySender


async def import_async(
    source: str,
    path: Path,
    *,
    gateway_url: str | None,
    api_key: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    checkpoint: Path | None = None,
    restart: bool = False,
    base_url: str | None = None,
    progress: bool = False,
    console: Console | None = None,
    timeout_s: float = 60.0,
) -> Summary:
    """`gateway_url` None is a dry run: read, map and validate everything, send nothing."""
    if gateway_url is None:
        return await run_import(
            source,
            path,
            None,
            batch_size=batch_size,
            checkpoint_path=checkpoint,
            base_url=base_url,
            progress=progress,
            console=console,
        )
    async with httpx.AsyncClient(base_url=gateway_url, timeout=timeout_s) as client:
        return await run_import(
            source,
            path,
            GatewaySender(client, api_key=api_key),
            batch_size=batch_size,
            checkpoint_path=checkpoint,
            restart=restart,
            base_url=base_url,
            progress=progress,
            console=console,
        )


def import_export(source: str, path: str | Path, **options: object) -> Summary:
    """Synchronous `import_async` (see its options)."""
    return asyncio.run(import_async(source, Path(path), **options))  # type: ignore[arg-type]
