"""`flywheel import SOURCE PATH`: registered in the operator CLI by one line.

Light to import (typer only): the readers, the gateway's mappers and httpx are loaded when
the command runs, so the operator CLI starts as fast as before.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

SOURCES = ("stackexchange", "slack", "discourse", "github", "activities")
DEFAULT_BATCH = 500
MAX_BATCH = 1000

err = Console(stderr=True, highlight=False)


def import_command(
    source: Annotated[str, typer.Argument(help=f"One of {', '.join(SOURCES)}.")],
    path: Annotated[Path, typer.Argument(help="The export: a directory, zip or file.")],
    gateway: Annotated[
        str, typer.Option(envvar="FLYWHEEL_GATEWAY_URL", help="The gateway's base URL.")
    ] = "http://localhost:8080",
    api_key: Annotated[
        str | None,
        typer.Option(envvar="FLYWHEEL_API_KEY", help="A key with the ingest scope."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=MAX_BATCH, help="Activities per request.")
    ] = DEFAULT_BATCH,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Default: .flywheel-import/<source>-<hash>.json")
    ] = None,
    restart: Annotated[bool, typer.Option(help="Ignore the checkpoint, start over.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Read, map and validate; send nothing.")] = False,
    base_url: Annotated[
        str | None, typer.Option(help="The site's URL for links (Stack Exchange, Discourse).")
    ] = None,
) -> None:
    """Import a community's history from a platform's export (docs/IMPORTING.md)."""
    from importers.api import import_async
    from importers.items import ExportError
    from importers.runner import print_summary
    from importers.sender import SendError

    try:
        summary = asyncio.run(
            import_async(
                source,
                path,
                gateway_url=None if dry_run else gateway,
                api_key=api_key or os.environ.get("FLYWHEEL_API_KEY"),
                batch_size=batch_size,
                checkpoint=checkpoint,
                restart=restart,
                base_url=base_url,
                progress=True,
                console=err,
            )
        )
    except ExportError as exc:
        err.print(f"[red]error:[/red] {exc} (nothing more was sent)", soft_wrap=True)
        raise typer.Exit(2) from None
    except SendError as exc:
        err.print(f"[red]error:[/red] {exc}; the checkpoint has every acknowledged batch")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to resume from the checkpoint")
        raise typer.Exit(130) from None
    print_summary(summary, err)
    if summary.bad:
        raise typer.Exit(3)
