"""Kafka and PostgreSQL in Docker containers through testcontainers, for machines with Docker.

NOT EXERCISED HERE: the machine this was written on has no Docker engine, so this path has never
run. It is kept small on purpose; the local-process path in `devstack.kafka` and
`devstack.postgres` is the one tests use.

Kafka: testcontainers' `KafkaContainer` (4.x) only drives Confluent `cp-kafka` images (its
start script sources /etc/confluent/docker/*), so the official `apache/kafka` image is run as a
generic container configured through its documented `KAFKA_*` environment variables, as a
single KRaft broker+controller. The host port is fixed before start so it can be advertised.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from devstack.common import StackError
from devstack.kafka import new_cluster_id

KAFKA_IMAGE = "apache/kafka:4.1.1"
POSTGRES_IMAGE = "postgres:17"
CONTAINERS_FILE = "containers.json"


def docker_available(timeout_s: float = 2.0) -> bool:
    """True if a Docker engine answers a ping (quickly False when there is no socket at all)."""
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker  # type: ignore[import-untyped,unused-ignore]

        client = docker.from_env(timeout=timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


class Containers:
    """The Kafka and Postgres containers of one stack, recorded in `<state>/containers.json`."""

    def __init__(self, state_dir: Path, *, detach: bool) -> None:
        self.state_dir = state_dir
        self.detach = detach
        self._kafka: Any = None
        self._postgres: Any = None

    def _prepare(self) -> None:
        if self.detach:
            # Ryuk removes containers when this process exits; `up` must leave them running,
            # and `down` removes them by the ids in containers.json instead.
            from testcontainers.core.config import testcontainers_config

            testcontainers_config.ryuk_disabled = True

    def start_kafka(self, host_port: int, partitions: int) -> str:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import LogMessageWaitStrategy

        self._prepare()
        container = DockerContainer(KAFKA_IMAGE)
        host = container.get_docker_client().host()
        env = {
            "CLUSTER_ID": new_cluster_id(),
            "KAFKA_NODE_ID": "1",
            "KAFKA_PROCESS_ROLES": "broker,controller",
            "KAFKA_LISTENERS": "PLAINTEXT://0.0.0.0:9092,CONTROLLER://localhost:9093",
            "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{host_port}",
            "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
            "KAFKA_NUM_PARTITIONS": str(partitions),
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
            "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
            "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        }
        for key, value in env.items():
            container.with_env(key, value)
        container.with_bind_ports(9092, host_port)
        container.waiting_for(LogMessageWaitStrategy("Kafka Server started"))
        container.start()
        self._kafka = container
        self._record("kafka", container)
        return f"{host}:{host_port}"

    def start_postgres(self, host_port: int, password: str) -> str:
        from testcontainers.community.postgres import PostgresContainer

        self._prepare()
        container = PostgresContainer(
            POSTGRES_IMAGE, username="postgres", password=password, dbname="postgres", driver=None
        )
        container.with_bind_ports(5432, host_port)
        container.start()
        self._postgres = container
        self._record("postgres", container)
        return str(container.get_connection_url())

    def restart(self, which: str) -> None:
        """Restart a container in place: same ports, same data (crash tests)."""
        container = self._kafka if which == "kafka" else self._postgres
        if container is None:
            raise StackError(f"no {which} container of this stack to restart")
        container.get_wrapped_container().restart(timeout=10)

    def stop(self) -> None:
        """Remove this stack's containers: the live handles, or by id for a later `down`."""
        for container in (self._kafka, self._postgres):
            if container is not None:
                with contextlib.suppress(Exception):
                    container.stop()
        self._kafka = self._postgres = None
        path = self.state_dir / CONTAINERS_FILE
        if not path.exists():
            return
        ids = json.loads(path.read_text())
        from testcontainers.core.docker_client import DockerClient

        client = DockerClient().client
        for container_id in ids.values():
            with contextlib.suppress(Exception):
                client.containers.get(container_id).remove(force=True, v=True)
        path.unlink(missing_ok=True)

    def recorded(self) -> dict[str, str]:
        path = self.state_dir / CONTAINERS_FILE
        with contextlib.suppress(OSError, ValueError):
            return {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
        return {}

    def _record(self, which: str, container: Any) -> None:
        ids = self.recorded()
        ids[which] = str(container.get_wrapped_container().id)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / CONTAINERS_FILE).write_text(json.dumps(ids, indent=2) + "\n")
