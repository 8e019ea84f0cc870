"""`flywheel` / `python -m ops.cli`: the operator's tool for a running deployment.

    status                         lag, outbox, dead letters and last applied event per service
    topics create | describe       the registry's topics on the broker
    replay SERVICE --from-beginning | --from TIME
    import SOURCE PATH             a community's history from platform exports (importers/)
    dlq list | show | redrive      dead letters: read them, put them back
    member show ID                 a member's journey, from the gateway's API

Where things are: `<state-dir>/endpoints.json` of a dev stack (`python -m devstack up`),
overridden by the environment, which is what a deployment uses: `KAFKA_BOOTSTRAP_SERVERS`,
`FLYWHEEL_TOPIC_PREFIX`, `FLYWHEEL_<SERVICE>_DATABASE_URL` (e.g.
`FLYWHEEL_AWARENESS_DATABASE_URL`), `FLYWHEEL_GATEWAY_URL` and `FLYWHEEL_API_KEY`. Anything
unreachable is one line on stderr and exit code 1, never a traceback.

This module is the command line only: each command lives in its own module (`ops.status`,
`ops.topics`, `ops.replay`, `ops.dlq`, `ops.member`), and `ops.target` finds and reaches the
deployment for all of them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from importers.cli import import_command
from ops import dlq, member, replay, status, topics
from ops.target import options

app = typer.Typer(
    name="flywheel",
    help="Operate a flywheel deployment: status, topics, replays, dead letters, journeys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
topics_app = typer.Typer(help="The registry's topics on the broker.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: list, show, redrive.", no_args_is_help=True)
member_app = typer.Typer(help="Members' journeys, from the gateway.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
app.add_typer(member_app, name="member")
app.command("import")(import_command)  # importers/: history from platform exports

app.command()(status.status)
app.command()(replay.replay)
topics_app.command("create")(topics.topics_create)
topics_app.command("describe")(topics.topics_describe)
dlq_app.command("list")(dlq.dlq_list)
dlq_app.command("show")(dlq.dlq_show)
dlq_app.command("redrive")(dlq.dlq_redrive)
member_app.command("show")(member.member_show)

State = Annotated[
    Path | None,
    typer.Option("--state-dir", envvar="FLYWHEEL_STATE_DIR", help="A dev stack's state dir."),
]
Timeout = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for anything to answer.")
]


@app.callback()
def _main(state_dir: State = None, timeout: Timeout = 10.0) -> None:
    options.update(state_dir=state_dir, timeout=timeout)


def main() -> None:
    """The `flywheel` console script."""
    app()


if __name__ == "__main__":
    sys.exit(app())
