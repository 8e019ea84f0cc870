"""Where things are and how the commands reach them: the `Target` (from a dev stack's
`endpoints.json`, overridden by the environment), running one command with anything
unreachable turned into one line and exit code 1, and the Kafka and PostgreSQL connections
every command shares.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from services import registry
from shared.service import ServiceSpec

T = TypeVar("T")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class Unreachable(Exception):
    """Something the command needs did not answer: one line for the operator."""


@dataclass
class Target:
    kafka: str
    prefix: str
    database_urls: dict[str, str] = field(default_factory=dict)
    gateway_url: str | None = None
    health_urls: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    timeout_s: float = 10.0

    def topic(self, name: str) -> str:
        return self.prefix + name

    def database(self, service: str) -> str:
        url = self.database_urls.get(service)
        if not url:
            variable = f"FLYWHEEL_{service.upper()}_DATABASE_URL"
            raise Unreachable(f"no database URL for {service}: set {variable} or run a dev stack")
        return url


def load_target(state_dir: Path | None, timeout_s: float) -> Target:
    from devstack.endpoints import ENDPOINTS_FILE, Endpoints, default_state_dir

    endpoints: Endpoints | None = None
    path = (state_dir or default_state_dir()) / ENDPOINTS_FILE
    if path.exists():
        try:
            endpoints = Endpoints.from_json(path.read_text())
        except (ValueError, TypeError) as exc:
            raise Unreachable(f"{path} is not a stack's endpoints file: {exc}") from None
    env = os.environ
    kafka = (
        env.get("KAFKA_BOOTSTRAP_SERVERS")
        or env.get("FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS")
        or (endpoints.kafka_bootstrap if endpoints else "127.0.0.1:9092")
    )
    urls = dict(endpoints.database_urls) if endpoints else {}
    for service in registry.SERVICE_NAMES:
        if value := env.get(f"FLYWHEEL_{service.upper()}_DATABASE_URL"):
            urls[service] = value
    return Target(
        kafka=kafka,
        prefix=env.get("FLYWHEEL_TOPIC_PREFIX", ""),
        database_urls=urls,
        gateway_url=env.get("FLYWHEEL_GATEWAY_URL")
        or (endpoints.gateway_url if endpoints else None),
        health_urls=dict(endpoints.health_urls) if endpoints else {},
        api_key=env.get("FLYWHEEL_API_KEY"),
        timeout_s=timeout_s,
    )


def service_spec(name: str) -> ServiceSpec:
    """The service's spec (group, input topics, replay tables) from services.registry; an
    unknown name is a usage error (exit code 2)."""
    try:
        return registry.spec(name)
    except registry.UnknownService as exc:
        raise typer.BadParameter(str(exc)) from None


options: dict[str, Any] = {"state_dir": None, "timeout": 10.0}
"""The global options (--state-dir, --timeout), set by `ops.cli` before a command runs."""


def run(work: Callable[[Target], Coroutine[Any, Any, T]]) -> T:
    """Run one command; what is unreachable becomes one line and exit code 1."""
    from aiokafka.errors import KafkaError

    # The clients' own reports (aiokafka logs every failed connect) would bury the one line.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        target = load_target(options["state_dir"], options["timeout"])
        return asyncio.run(work(target))
    except Unreachable as exc:
        _fail(str(exc))
    except TimeoutError:
        _fail(f"timed out after {options['timeout']:g} s (is everything up? --timeout to wait)")
    except KafkaError as exc:
        _fail(f"Kafka: {type(exc).__name__}: {exc}")
    except (OSError, ConnectionError) as exc:
        _fail(f"unreachable: {exc}")
    except Exception as exc:
        import asyncpg

        if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
            _fail(f"PostgreSQL: {type(exc).__name__}: {exc}")
        raise


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(1)


async def bounded(target: Target, what: str, work: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(target.timeout_s):
            return await work
    except TimeoutError:
        raise Unreachable(f"{what} did not answer within {target.timeout_s:g} s") from None


async def admin_client(target: Target) -> Any:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=target.kafka,
        client_id="flywheel-cli",
        request_timeout_ms=int(target.timeout_s * 1000),
    )
    try:
        await bounded(target, f"Kafka at {target.kafka}", admin.start())
    except Exception as exc:
        await admin.close()
        if isinstance(exc, Unreachable):
            raise
        raise Unreachable(f"Kafka at {target.kafka} is unreachable: {exc}") from None
    return admin


async def consumer_client(target: Target, group: str | None = None) -> Any:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        bootstrap_servers=target.kafka,
        group_id=group,
        enable_auto_commit=False,
        client_id="flywheel-cli",
        request_timeout_ms=int(target.timeout_s * 1000),
        isolation_level="read_committed",
    )
    try:
        await bounded(target, f"Kafka at {target.kafka}", consumer.start())
    except Exception as exc:
        await consumer.stop()
        if isinstance(exc, Unreachable):
            raise
        raise Unreachable(f"Kafka at {target.kafka} is unreachable: {exc}") from None
    return consumer


async def _partitions(admin: Any, topics: Sequence[str]) -> list[Any]:
    from aiokafka import TopicPartition

    described = await admin.describe_topics(list(topics))
    missing = [d["topic"] for d in described if d["error_code"] != 0]
    if missing:
        raise Unreachable(f"topic(s) missing: {', '.join(missing)} (flywheel topics create)")
    return [
        TopicPartition(d["topic"], p["partition"])
        for d in described
        for p in sorted(d["partitions"], key=lambda p: int(p["partition"]))
    ]


async def admin_partitions(target: Target, topics: Sequence[str]) -> list[Any]:
    admin = await admin_client(target)
    try:
        return await _partitions(admin, topics)
    finally:
        await admin.close()


async def group_lag(target: Target, spec: ServiceSpec) -> dict[str, int]:
    from shared.kafka import consumer_lag

    topics = [target.topic(t.name) for t in spec.consumes]
    try:
        return await bounded(
            target,
            f"Kafka at {target.kafka}",
            consumer_lag(target.kafka, target.prefix + spec.consumer_group, topics),
        )
    except Unreachable:
        raise
    except Exception as exc:
        raise Unreachable(f"Kafka at {target.kafka}: {type(exc).__name__}: {exc}") from None


async def group_members(target: Target, group: str) -> list[str]:
    """Client ids of the group's live members (a running service is one)."""
    admin = await admin_client(target)
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    members: list[str] = []
    for response in responses:
        for described in response.groups:
            members.extend(str(m[1]) for m in described[5])  # (member_id, client_id, ...)
    return members


async def connect(target: Target, service: str) -> Any:
    import asyncpg

    from shared.postgres import redact

    url = target.database(service)
    try:
        return await bounded(target, f"PostgreSQL of {service}", asyncpg.connect(url))
    except Unreachable:
        raise
    except Exception as exc:
        raise Unreachable(
            f"PostgreSQL of {service} at {redact(url)} is unreachable: {type(exc).__name__}: {exc}"
        ) from None
