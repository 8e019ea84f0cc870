"""`flywheel member show ID`: a member's journey, from the gateway's API."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ops.target import Target, Unreachable, out, run


def member_show(
    member_id: Annotated[str, typer.Argument(help="The member id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON as is.")] = False,
) -> None:
    """A member's current stages and every transition with its reason."""
    import httpx

    async def work(target: Target) -> None:
        if not target.gateway_url:
            raise Unreachable("no gateway URL: set FLYWHEEL_GATEWAY_URL or run a dev stack")
        headers = {"X-API-Key": target.api_key} if target.api_key else {}
        try:
            async with httpx.AsyncClient(
                base_url=target.gateway_url, timeout=target.timeout_s, headers=headers
            ) as client:
                response = await client.get(f"/v1/members/{member_id}/journey")
        except httpx.HTTPError as exc:
            raise Unreachable(
                f"the gateway at {target.gateway_url} is unreachable: {exc}"
            ) from None
        if response.status_code != 200:
            try:
                detail = response.json().get("detail") or response.text
            except ValueError:
                detail = response.text
            raise Unreachable(f"gateway answered {response.status_code}: {detail}")
        journey = response.json()
        if as_json:
            out.print_json(json.dumps(journey))
            return
        out.print(f"[bold]{journey['member_id']}[/bold]")
        for dimension, stage in journey.get("stages", {}).items():
            score = f" (score {stage['score']:g})" if stage.get("score") is not None else ""
            out.print(f"  {dimension:<11} {stage['stage']}{score} since {stage['since']}")
        table = Table()
        for column in ("when", "dimension", "from", "to", "reason"):
            table.add_column(column, overflow="fold")
        for t in journey.get("timeline", []):
            table.add_row(
                t["occurred_at"], t["dimension"], t["from_stage"] or "-", t["to_stage"], t["reason"]
            )
        out.print(table)

    run(work)
