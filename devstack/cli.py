"""`python -m devstack up|down|status`: the dev stack from a shell, detached.

    python -m devstack up [--infra-only] [--state-dir DIR]   # start, detached
    python -m devstack status [--state-dir DIR]
    python -m devstack down [--state-dir DIR]

What it starts and where things come from: `devstack.stack`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from devstack.common import (
    PortInUseError,
    StackAlreadyRunningError,
    StackError,
    all_pidfiles,
    read_pidfile,
    run_async,
    wait_tcp,
)
from devstack.containers import Containers
from devstack.endpoints import ENDPOINTS_FILE, Endpoints, default_state_dir
from devstack.postgres import LocalPostgres
from devstack.stack import (
    DEFAULT_KAFKA_PORT,
    DEFAULT_POSTGRES_PORT,
    DEFAULT_SERVICE_PORTS,
    KAFKA_CONTROLLER_PORT_ENV,
    KAFKA_PORT_ENV,
    POSTGRES_PORT_ENV,
    SERVICE_PORT_ENV,
    DevStack,
    http_ok,
)
from services.registry import SERVICE_NAMES

# --- CLI --------------------------------------------------------------------------------------


def _env_port(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise StackError(f"{name}={value!r} is not a port number") from exc


def _say(message: str) -> None:
    try:
        print(message, flush=True)
    except BrokenPipeError:  # `up | head`: the stack is up; the reader just stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _cmd_up(state_dir: Path, infra_only: bool) -> int:
    kafka_port = _env_port(KAFKA_PORT_ENV, DEFAULT_KAFKA_PORT)
    stack = DevStack(
        state_dir,
        kafka_port=kafka_port,
        kafka_controller_port=_env_port(KAFKA_CONTROLLER_PORT_ENV, kafka_port + 1),
        postgres_port=_env_port(POSTGRES_PORT_ENV, DEFAULT_POSTGRES_PORT),
        service_ports={
            s: _env_port(SERVICE_PORT_ENV[s], p) for s, p in DEFAULT_SERVICE_PORTS.items()
        },
        with_services=not infra_only,
        detach=True,
        progress=_say,
    )
    endpoints = stack.start()
    _say("")
    _say(f"Kafka bootstrap servers  {endpoints.kafka_bootstrap}")
    _say(f"PostgreSQL (superuser)   {endpoints.postgres_admin_url}")
    for service, url in endpoints.database_urls.items():
        _say(f"  {service:<22} {url}")
    if endpoints.gateway_url:
        _say(f"Gateway                  {endpoints.gateway_url}")
        key = stack.api_keys().split("=", 1)[-1].split(":", 1)[0]
        _say(f"  API key                {key}  (Authorization: Bearer <key>)")
    for service, url in endpoints.health_urls.items():
        if service != "gateway":
            _say(f"  {service:<22} {url}/readyz")
    _say(f"Logs                     {endpoints.log_dir}")
    _say(f"Endpoints file           {state_dir / ENDPOINTS_FILE}")
    _say("Stop with                python -m devstack down")
    return 0


def _cmd_down(state_dir: Path) -> int:
    recorded = (
        all_pidfiles(state_dir)
        or LocalPostgres(state_dir, port=0, progress=_say).running_pid()
        or Containers(state_dir, detach=True).recorded()
    )
    if not recorded:
        _say(f"nothing running in {state_dir}")
        (state_dir / ENDPOINTS_FILE).unlink(missing_ok=True)
        return 0
    DevStack(state_dir, progress=_say, detach=True).stop()
    _say("stack stopped")
    return 0


def _cmd_status(state_dir: Path) -> int:
    """One line per component; exit 0 only if everything recorded is alive and answers."""
    endpoints_path = state_dir / ENDPOINTS_FILE
    endpoints: Endpoints | None = None
    with contextlib.suppress(OSError, ValueError, TypeError):
        endpoints = Endpoints.from_json(endpoints_path.read_text())
    if endpoints is None:
        _say(f"no stack running in {state_dir} (no {ENDPOINTS_FILE})")
        return 1
    healthy = True
    _say(f"state dir  {state_dir}")

    record = read_pidfile(state_dir, "kafka")
    kafka_up = _listening(endpoints.kafka_bootstrap.split(",")[0])
    if record is not None:
        state = f"pid {record.pid}" if record.alive() else f"DEAD (pid {record.pid} is gone)"
    else:
        state = "external or container"
    healthy &= kafka_up and (record is None or record.alive())
    _say(f"kafka      {state:<28} {endpoints.kafka_bootstrap} {_answers(kafka_up)}")

    pg_pid = LocalPostgres(state_dir, port=0, progress=_say).running_pid()
    parts = urlsplit(endpoints.postgres_admin_url)
    pg_up = _listening(f"{parts.hostname}:{parts.port or 5432}")
    healthy &= pg_up
    pg_state = f"pid {pg_pid}" if pg_pid else "external or container"
    _say(f"postgres   {pg_state:<28} {parts.hostname}:{parts.port or 5432} {_answers(pg_up)}")

    for service in SERVICE_NAMES:
        record = read_pidfile(state_dir, service)
        url = endpoints.health_urls.get(service)
        if record is None:
            continue
        alive = record.alive()
        ready = alive and url is not None and http_ok(f"{url}/readyz")
        healthy &= ready
        desc = f"pid {record.pid}" if alive else f"DEAD (pid {record.pid} is gone)"
        _say(f"{service:<10} {desc:<28} {url}/readyz {'200' if ready else 'not ready'}")
    _say(f"logs       {endpoints.log_dir}")
    return 0 if healthy else 1


def _listening(host_port: str) -> bool:
    host, _, port = host_port.rpartition(":")
    return run_async(wait_tcp(host.strip("[]") or "127.0.0.1", int(port), 1.0))


def _answers(ok: bool) -> str:
    return "answers" if ok else "NOT ANSWERING"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="The dev stack: Kafka, PostgreSQL and (optionally) the four services on one "
        "machine.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack, detached")
    up.add_argument("--infra-only", action="store_true", help="Kafka and PostgreSQL only")
    for name, text in (("down", "stop the stack"), ("status", "show what runs and where")):
        sub.add_parser(name, help=text)
    for command in sub.choices.values():
        command.add_argument(
            "--state-dir", type=Path, default=None, help="default: .flywheel/ at the repo root"
        )
    args = parser.parse_args(argv)
    state_dir = (args.state_dir or default_state_dir()).resolve()
    try:
        if args.command == "up":
            return _cmd_up(state_dir, args.infra_only)
        if args.command == "down":
            return _cmd_down(state_dir)
        return _cmd_status(state_dir)
    except (PortInUseError, StackAlreadyRunningError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
