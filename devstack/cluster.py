"""A KRaft Apache Kafka cluster of N nodes as local JVM processes, for replication tests.

Each node is a combined broker+controller with its own node.id, ports, data dir and log, and
the N of them form one static controller quorum (`controller.quorum.voters`); storage is
formatted with one cluster id for all. Replication settings are production's (RF 3,
min.insync.replicas 2), so a test can kill -9 a partition leader and watch the cluster fail
over. The jars, JVM options and storage formatting are `devstack.kafka`'s (one node); this
module only writes another config per node and starts, kills and restarts them one by one.

    cluster = KafkaCluster(state_dir, nodes=3)
    cluster.start()
    cluster.bootstrap                                  # "127.0.0.1:p1,127.0.0.1:p2,..."
    leader = cluster.leader("member-activity", 0)      # node id
    cluster.kill(leader); ...; cluster.restart(leader)
    cluster.stop()
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.common import (
    Progress,
    StackError,
    free_ports,
    read_pidfile,
    remove_pidfile,
    run_async,
    stop_process_group,
    tail,
    write_pidfile,
)
from devstack.kafka import (
    HEAP_OPTS_ENV,
    STOP_TIMEOUT_S,
    LocalKafka,
    ensure_jars,
    java_executable,
    new_cluster_id,
)
from devstack.kafka_ready import warm_group_coordinator

CLUSTER_HEAP_OPTS = "-Xmx384m"
"""Per node, unless FLYWHEEL_KAFKA_HEAP_OPTS says otherwise: three JVMs share a small machine."""

REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2


def _log_progress(message: str) -> None:
    logging.getLogger("devstack.cluster").info(message)


@dataclass(frozen=True)
class PartitionState:
    """One partition as the cluster's metadata describes it now."""

    topic: str
    partition: int
    leader: int
    """Node id of the leader, -1 while there is none."""
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


class ClusterNode(LocalKafka):
    """One broker+controller of a cluster: `LocalKafka`'s JVM, jars and formatting, with its
    own node id, directory, pidfile and a config naming every voter of the quorum."""

    def __init__(
        self,
        state_dir: Path,
        *,
        node_id: int,
        port: int,
        controller_port: int,
        voters: str,
        replication_factor: int,
        min_insync_replicas: int,
        partitions: int,
        progress: Progress,
    ) -> None:
        super().__init__(
            state_dir,
            port=port,
            controller_port=controller_port,
            partitions=partitions,
            progress=progress,
        )
        self.node_id = node_id
        self.voters = voters
        self.replication_factor = replication_factor
        self.min_insync_replicas = min_insync_replicas
        self.name = f"kafka-{node_id}"
        self.dir = state_dir / self.name
        self.data_dir = self.dir / "data"
        self.log_file = self.log_dir / f"{self.name}.log"

    # --- lifecycle: spawn and wait apart, so the nodes of a quorum start together -------------

    def spawn(self, cluster_id: str) -> None:
        """Format storage (first time) with the cluster's id and start the JVM; do not wait."""
        libs = ensure_jars(self.progress)
        java = java_executable()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "cluster.id").write_text(cluster_id + "\n")  # what _format reads
        server_props = self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            self._format(java, libs, server_props)
        cmd = [java, *self._jvm_opts(java, libs), "kafka.Kafka", str(server_props)]
        with self.log_file.open("ab") as log:
            self._popen = subprocess.Popen(
                cmd,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        write_pidfile(self.state_dir, self.name, self._popen.pid)

    async def wait_ready(self, timeout_s: float) -> None:
        await self._wait_ready(timeout_s)

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (controlled shutdown: leadership moves first), or SIGKILL with `kill`."""
        record = read_pidfile(self.state_dir, self.name)
        if record is not None:
            verb = "killing (SIGKILL)" if kill else "stopping"
            self.progress(f"{verb} Kafka node {self.node_id} (pid {record.pid}) ...")
            popen = self._popen if self._popen and self._popen.pid == record.pid else None
            stop_process_group(record, timeout_s=STOP_TIMEOUT_S, popen=popen, kill=kill)
            remove_pidfile(self.state_dir, self.name)
        self._popen = None
        self._keep_class_archive()

    def alive(self) -> bool:
        record = read_pidfile(self.state_dir, self.name)
        return record is not None and record.alive()

    # --- pieces -------------------------------------------------------------------------------

    def _properties(self) -> dict[str, str]:
        """The single node's properties, as a voter of a quorum of N with production's
        replication: a write is acknowledged once 2 of 3 replicas have it."""
        rf, min_isr = str(self.replication_factor), str(self.min_insync_replicas)
        props = super()._properties()
        props.update(
            {
                "node.id": str(self.node_id),
                "controller.quorum.voters": self.voters,
                "default.replication.factor": rf,
                "min.insync.replicas": min_isr,
                "unclean.leader.election.enable": "false",
                "offsets.topic.replication.factor": rf,
                "transaction.state.log.replication.factor": rf,
                "transaction.state.log.min.isr": min_isr,
                "share.coordinator.state.topic.replication.factor": rf,
                "share.coordinator.state.topic.min.isr": min_isr,
                # Small machine: fewer threads per node than the defaults (8 io, 3 network).
                "num.io.threads": "4",
                "num.network.threads": "2",
                "num.replica.fetchers": "1",
                "log.cleaner.threads": "1",
            }
        )
        return props

    def _log4j2(self) -> str:
        return _log4j2(self.name)

    def _jvm_opts(self, java: str, libs: Path) -> list[str]:
        opts = super()._jvm_opts(java, libs)
        if HEAP_OPTS_ENV in os.environ:
            return opts
        return [*opts, *CLUSTER_HEAP_OPTS.split()]  # the last -Xmx a JVM is given wins


def _log4j2(name: str) -> str:
    from devstack.kafka import LOG4J2_PROPERTIES

    return LOG4J2_PROPERTIES.replace("/kafka.log", f"/{name}.log").replace(
        "devstack/stack.py", "devstack/cluster.py"
    )


class KafkaCluster:
    """N KRaft nodes (broker+controller each) in one state dir, on free ports."""

    def __init__(
        self,
        state_dir: Path | str,
        *,
        nodes: int = 3,
        replication_factor: int = REPLICATION_FACTOR,
        min_insync_replicas: int = MIN_INSYNC_REPLICAS,
        partitions: int = 3,
        progress: Progress | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        if nodes < replication_factor:
            raise StackError(f"{nodes} nodes cannot hold replication factor {replication_factor}")
        self.state_dir = Path(state_dir).resolve()
        self.progress: Progress = progress or _log_progress
        self.timeout_s = timeout_s
        self.replication_factor = replication_factor
        self.min_insync_replicas = min_insync_replicas
        ports = free_ports(2 * nodes)
        ids = range(1, nodes + 1)
        voters = ",".join(f"{i}@127.0.0.1:{ports[2 * (i - 1) + 1]}" for i in ids)
        self.nodes: dict[int, ClusterNode] = {
            i: ClusterNode(
                self.state_dir,
                node_id=i,
                port=ports[2 * (i - 1)],
                controller_port=ports[2 * (i - 1) + 1],
                voters=voters,
                replication_factor=replication_factor,
                min_insync_replicas=min_insync_replicas,
                partitions=partitions,
                progress=self.progress,
            )
            for i in ids
        }
        id_file = self.state_dir / "cluster.id"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not id_file.exists():
            id_file.write_text(new_cluster_id() + "\n")
        self.cluster_id = id_file.read_text().strip()
        self._atexit_registered = False

    @property
    def bootstrap(self) -> str:
        """Every node: clients find the cluster through whichever answers."""
        return ",".join(n.bootstrap for n in self.nodes.values())

    def bootstrap_without(self, node_id: int) -> str:
        return ",".join(n.bootstrap for i, n in self.nodes.items() if i != node_id)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start every node at once (a quorum needs a majority to elect a controller), wait
        until each is registered, and until the group coordinator can serve."""
        began = time.monotonic()
        if not self._atexit_registered:  # a test that dies leaves no JVMs behind
            atexit.register(self._stop_at_exit)
            self._atexit_registered = True
        for node in self.nodes.values():
            node.spawn(self.cluster_id)
        try:
            run_async(self._wait_nodes(self.nodes.values()))
            run_async(warm_group_coordinator(self.bootstrap, self.timeout_s))
        except BaseException:
            self.stop(kill=True)
            raise
        self.progress(
            f"{len(self.nodes)}-node Kafka cluster ready in {time.monotonic() - began:.1f} s"
            f" at {self.bootstrap}"
        )

    def stop(self, *, kill: bool = False) -> None:
        for node in self.nodes.values():
            node.stop(kill=kill)

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(kill=True)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no controlled shutdown, no flush, leadership moves only when the
        controller notices the node's session expired."""
        self.nodes[node_id].stop(kill=True)

    def restart(self, node_id: int) -> float:
        """Start a stopped node again on its ports and data; seconds until it is registered."""
        began = time.monotonic()
        node = self.nodes[node_id]
        node.stop()
        node.spawn(self.cluster_id)
        run_async(self._wait_nodes([node]))
        return time.monotonic() - began

    def alive(self) -> dict[int, bool]:
        return {i: n.alive() for i, n in self.nodes.items()}

    async def _wait_nodes(self, nodes: Iterable[ClusterNode]) -> None:
        await asyncio.gather(*(n.wait_ready(self.timeout_s) for n in nodes))
        await self._wait_registered({n.node_id for n in nodes})

    async def _wait_registered(self, ids: set[int]) -> None:
        """Until the cluster's metadata lists every one of `ids` as a live broker."""
        deadline = time.monotonic() + self.timeout_s
        listed: set[int] = set()
        while time.monotonic() < deadline:
            try:
                listed = set(await self.brokers())
            except Exception:
                listed = set()
            if ids <= listed:
                return
            await asyncio.sleep(0.1)
        logs = "\n".join(f"{n.log_file}:\n{tail(n.log_file)}" for n in self.nodes.values())
        raise StackError(f"Kafka nodes {sorted(ids - listed)} not registered in time\n{logs}")

    # --- metadata -----------------------------------------------------------------------------

    async def _admin_call(self, call: Any) -> Any:
        from aiokafka.admin import AIOKafkaAdminClient

        live = [n.bootstrap for n in self.nodes.values() if n.alive()]
        admin = AIOKafkaAdminClient(
            bootstrap_servers=",".join(live) or self.bootstrap, request_timeout_ms=5000
        )
        await admin.start()
        try:
            return await call(admin)
        finally:
            await admin.close()

    async def brokers(self) -> list[int]:
        """Node ids of the brokers metadata lists now (registered and not fenced)."""
        cluster = await self._admin_call(lambda admin: admin.describe_cluster())
        return sorted(int(b["node_id"]) for b in cluster["brokers"])

    async def controller(self) -> int:
        """Node id metadata names as the controller (for KRaft: a node it forwards to)."""
        cluster = await self._admin_call(lambda admin: admin.describe_cluster())
        return int(cluster["controller_id"])

    async def coordinator(self, group: str) -> int:
        """Node id of the consumer group's coordinator (it holds the group's offsets)."""
        return int(await self._admin_call(lambda admin: admin.find_coordinator(group)))

    async def partitions(self, topic: str) -> list[PartitionState]:
        (described,) = await self._admin_call(lambda admin: admin.describe_topics([topic]))
        if described["error_code"] != 0:
            raise StackError(f"describing {topic}: error {described['error_code']}")
        return sorted(
            (
                PartitionState(
                    topic,
                    int(p["partition"]),
                    int(p["leader"]),
                    tuple(int(r) for r in p["replicas"]),
                    tuple(int(r) for r in p["isr"]),
                )
                for p in described["partitions"]
            ),
            key=lambda p: p.partition,
        )

    async def partition(self, topic: str, partition: int) -> PartitionState:
        for state in await self.partitions(topic):
            if state.partition == partition:
                return state
        raise StackError(f"{topic} has no partition {partition}")

    async def leader(self, topic: str, partition: int) -> int:
        """Node id of the partition's leader now (-1 while it has none)."""
        return (await self.partition(topic, partition)).leader

    async def wait_new_leader(
        self, topic: str, partition: int, old: int, *, timeout_s: float = 60.0
    ) -> PartitionState:
        """Until metadata names a leader other than `old`, that is in the ISR."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                state = await self.partition(topic, partition)
                if state.leader not in (-1, old) and state.leader in state.isr:
                    return state
            except Exception:  # a metadata request to the node just killed
                pass
            if time.monotonic() > deadline:
                raise StackError(f"{topic}[{partition}] got no new leader in {timeout_s:.0f} s")
            await asyncio.sleep(0.05)

    async def wait_fully_replicated(
        self, topics: Iterable[str], *, timeout_s: float = 120.0
    ) -> None:
        """Until every partition of `topics` has all its replicas in sync again."""
        names = list(topics)
        deadline = time.monotonic() + timeout_s
        while True:
            lagging: list[str] = []
            try:
                for topic in names:
                    lagging += [
                        f"{p.topic}[{p.partition}] isr={list(p.isr)}"
                        for p in await self.partitions(topic)
                        if set(p.isr) != set(p.replicas)
                    ]
            except Exception as exc:
                lagging = [repr(exc)]
            if not lagging:
                return
            if time.monotonic() > deadline:
                raise StackError(f"not fully replicated after {timeout_s:.0f} s: {lagging[:5]}")
            await asyncio.sleep(0.2)
