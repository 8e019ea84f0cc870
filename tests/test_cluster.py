"""Replication: a three-node KRaft cluster (local JVMs, replication factor 3, min.insync.replicas
2), the three stage services as processes pointed at all three brokers, and a community's
activities published with acks=all and idempotence. Mid-stream the leader of a busy partition
is killed with SIGKILL, publishing goes on, and the node is started again later; then the same
for a partition of a topic the services write. At the end every service's state and the set of
events it emitted equal an undisturbed run's over the same log: 0 activities lost, 0 effects
doubled.

The reference runs on the session's single broker (tests/crashkit.py's `undisturbed`); which
broker carried the log does not change what the services make of it. The comparison is
crashkit's, with its settings (docs/GUARANTEES.md says what is compared and why).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from devstack.cluster import KafkaCluster
from devstack.common import free_ports
from devstack.kafka_ready import wait_topics_online
from services.awareness.__main__ import SPEC as AWARENESS
from shared.cloudevents import OutgoingRecord
from shared.kafka import ensure_topics
from shared.topics import ALL_TOPICS, MEMBER_ACTIVITY, SIGNALS_SUPPORT
from tests import crashkit
from tests.conftest import Namespace, Stack, running

OUTAGE_S = 8.0
"""How long a killed node stays down at least after the failover (a disturbance, not an
assertion)."""
MIN_RECORDS_WHILE_DOWN = 1000


@dataclass
class Report:
    """What the run measured, printed at the end (pytest -s, or -rA)."""

    activities: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    kills: list[dict[str, Any]] = field(default_factory=list)
    lost: dict[str, int] = field(default_factory=dict)
    duplicates_dropped: dict[str, int] = field(default_factory=dict)
    redelivered_on_topics: dict[str, int] = field(default_factory=dict)
    emitted: dict[str, int] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)

    def __str__(self) -> str:
        return crashkit.summary(vars(self).items())


@dataclass
class Publisher:
    """Publishes the log in chunks (crashkit.publish: acks=all, idempotent, a failed chunk sent
    again) and counts what the brokers acknowledged, so an outage can be measured in records."""

    bootstrap: str
    prefix: str
    acked: int = 0
    done: bool = False
    hurry: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, records: list[OutgoingRecord], *, chunk: int, pause_s: float) -> None:
        done = 0
        while done < len(records):
            end = len(records) if self.hurry.is_set() else done + chunk
            part = records[done:end]
            await crashkit.publish(self.bootstrap, self.prefix, part)
            done += len(part)
            self.acked += len(part)
            if not self.hurry.is_set():
                await asyncio.sleep(pause_s)
        self.done = True


async def busiest_partition(cluster: KafkaCluster, topic: str) -> int:
    """The partition of `topic` holding the most records now."""
    partitions = [TopicPartition(topic, p.partition) for p in await cluster.partitions(topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        return max(ends, key=lambda tp: (ends[tp], -tp.partition)).partition
    finally:
        await consumer.stop()


async def total_lag(bootstrap: str, prefix: str) -> int | None:
    with contextlib.suppress(Exception):
        return sum([await crashkit.lag(bootstrap, prefix, s) for s in crashkit.STAGES])
    return None


async def kill_leader_mid_stream(
    cluster: KafkaCluster, publisher: Publisher, topic: str, procs: dict[str, Any]
) -> dict[str, Any]:
    """Kill -9 the leader of the topic's busiest partition; keep it down while the log flows
    (at least OUTAGE_S after the failover, and until MIN_RECORDS_WHILE_DOWN more records were
    acknowledged); start it again; wait until every partition is fully replicated."""
    bootstrap, prefix = cluster.bootstrap, publisher.prefix
    partition = await busiest_partition(cluster, topic)
    leader = await cluster.leader(topic, partition)
    groups = [prefix + s for s in crashkit.STAGES]
    coordinating = [g for g in groups if await cluster.coordinator(g) == leader]
    lag_at_kill = await total_lag(bootstrap, prefix)
    acked_at_kill = publisher.acked
    killed = time.monotonic()
    await asyncio.to_thread(cluster.kill, leader)
    state = await cluster.wait_new_leader(topic, partition, leader, timeout_s=120)
    failover_s = time.monotonic() - killed
    await asyncio.sleep(OUTAGE_S)
    deadline = time.monotonic() + 180
    while publisher.acked - acked_at_kill < MIN_RECORDS_WHILE_DOWN:
        assert not publisher.done, "the log ran out while a node was down"
        assert time.monotonic() < deadline, f"{publisher.acked - acked_at_kill} acked while down"
        await asyncio.sleep(0.2)
    for name, proc in procs.items():
        assert proc.alive(), f"{name} died while node {leader} was down: {proc.log()[-3000:]}"
    published_while_down = publisher.acked - acked_at_kill
    lag_at_restart = await total_lag(bootstrap, prefix)
    restarting = time.monotonic()
    restart_s = await asyncio.to_thread(cluster.restart, leader)
    restarted = time.monotonic()
    names = [prefix + t.name for t in ALL_TOPICS]
    await cluster.wait_fully_replicated(names, timeout_s=300)
    return {
        "topic": topic.removeprefix(prefix),
        "partition": partition,
        "killed node": leader,
        "it coordinated groups": [g.removeprefix(prefix) for g in coordinating],
        "new leader": state.leader,
        "isr after failover": list(state.isr),
        "leader failover s": round(failover_s, 2),
        "node down s": round(restarting - killed, 1),
        "records acked while down": published_while_down,
        "consumer lag at kill": lag_at_kill,
        "consumer lag at restart": lag_at_restart,
        "node restart s": round(restart_s, 1),
        "back in sync s": round(time.monotonic() - restarted, 1),
    }


def test_every_node_names_the_same_quorum_and_production_replication(tmp_path: Path) -> None:
    """The config each node gets (without starting any): own id and ports, one voter set."""
    cluster = KafkaCluster(tmp_path, nodes=3)
    configs = []
    for node in cluster.nodes.values():
        node.dir.mkdir(parents=True)
        lines = node._write_config().read_text().splitlines()
        configs.append(dict(line.split("=", 1) for line in lines if "=" in line))
    assert [c["node.id"] for c in configs] == ["1", "2", "3"]
    assert len({c["listeners"] for c in configs}) == 3
    assert len({c["controller.quorum.voters"] for c in configs}) == 1
    assert configs[0]["controller.quorum.voters"].count("@127.0.0.1:") == 3
    for c in configs:
        assert c["default.replication.factor"] == c["offsets.topic.replication.factor"] == "3"
        assert c["min.insync.replicas"] == c["transaction.state.log.min.isr"] == "2"
    assert cluster.bootstrap.count(",") == 2


@pytest.mark.integration
async def test_a_service_bootstraps_from_a_list_of_brokers(namespace: Namespace) -> None:
    """KAFKA_BOOTSTRAP_SERVERS names several brokers; the first one named is down. (FastStream
    took the whole comma-separated string for one host name before shared.service split it.)"""
    (dead,) = free_ports(1)
    url = await namespace.create_database("awareness")
    settings = namespace.settings(
        url, kafka_bootstrap_servers=f"127.0.0.1:{dead},{namespace.stack.kafka_bootstrap}"
    )
    async with running(AWARENESS, settings) as service:
        deadline = time.monotonic() + 60
        while problems := await service.readiness():  # joined the group, has its partitions
            assert time.monotonic() < deadline, problems
            await asyncio.sleep(0.2)


@pytest.mark.integration
@pytest.mark.slow
async def test_partition_leader_killed_mid_stream_nothing_lost_nothing_doubled(
    namespace: Namespace, tmp_path: Path
) -> None:
    """About 20 000 activities; the leader of a busy member-activity partition, then of a busy
    signals.support partition (written by engagement's relay, read by advocacy), killed and
    brought back while they flow."""
    report = Report()
    records = crashkit.community_records(people=750, weeks=20, seed=11)
    records.append(crashkit.flush_tick(records))
    report.activities = len(records) - 1
    env = crashkit.deterministic_env(crashkit.write_rules(tmp_path))

    began = time.monotonic()
    expected = await crashkit.undisturbed(namespace, records, env, tmp_path)
    report.seconds["undisturbed run (1 broker)"] = round(time.monotonic() - began, 1)

    cluster = KafkaCluster(tmp_path / "cluster", nodes=3, timeout_s=300)
    began = time.monotonic()
    await asyncio.to_thread(cluster.start)
    report.seconds["cluster start"] = round(time.monotonic() - began, 1)
    procs: dict[str, crashkit.ServiceProcess] = {}
    publisher_task: asyncio.Task[None] | None = None
    try:
        bootstrap = cluster.bootstrap
        ns = Namespace(
            Stack(bootstrap, namespace.stack.postgres_admin_url, namespace.stack.devstack),
            f"c{uuid.uuid4().hex[:10]}.",
        )
        await ensure_topics(bootstrap, partitions=3, replication_factor=3, prefix=ns.prefix)
        names = [ns.prefix + t.name for t in ALL_TOPICS]
        await wait_topics_online(bootstrap, names, 60)
        for p in await cluster.partitions(ns.prefix + MEMBER_ACTIVITY.name):
            assert len(p.replicas) == 3 and len(p.isr) == 3, p

        began = time.monotonic()
        urls = {s: await ns.create_database(s) for s in crashkit.STAGES}
        procs = {
            s: crashkit.ServiceProcess(
                s,
                ns.env(urls[s], **env, FLYWHEEL_TOPIC_REPLICATION_FACTOR="3"),
                tmp_path / f"{s}.log",
            )
            for s in crashkit.STAGES
        }
        head, body, tick = records[:2000], records[2000:-1], records[-1]
        await crashkit.publish(bootstrap, ns.prefix, head)
        await crashkit.start_in_order(
            lambda s: procs[s].start(), bootstrap, ns.prefix, list(crashkit.STAGES)
        )
        publisher = Publisher(bootstrap, ns.prefix)
        publisher_task = asyncio.create_task(publisher.run(body, chunk=200, pause_s=0.5))

        def check_alive() -> None:
            for s, proc in procs.items():
                assert proc.alive(), f"{s} died: {proc.log()[-3000:]}"

        for topic in (MEMBER_ACTIVITY.name, SIGNALS_SUPPORT.name):
            await asyncio.sleep(2.0)  # mid-stream: the services are busy with a backlog
            assert not publisher.done, "the log ran out before the disturbance"
            report.kills.append(
                await kill_leader_mid_stream(cluster, publisher, ns.prefix + topic, procs)
            )
        publisher.hurry.set()
        await publisher_task
        published = time.monotonic()
        await crashkit.wait_settled(bootstrap, ns.prefix, urls, timeout_s=600, alive=check_alive)
        report.seconds["catch-up after the last record"] = round(time.monotonic() - published, 1)
        await crashkit.publish(bootstrap, ns.prefix, [tick])
        await crashkit.wait_settled(bootstrap, ns.prefix, urls, timeout_s=120, alive=check_alive)
        actual = await crashkit.outcome(bootstrap, ns.prefix, urls)
        report.seconds["disturbed run (3 nodes)"] = round(time.monotonic() - began, 1)
    finally:
        if publisher_task is not None:
            publisher_task.cancel()
        for s, proc in procs.items():
            if proc.alive():
                report.exit_codes[s] = (await asyncio.to_thread(proc.terminate))[0]
        await asyncio.to_thread(cluster.stop)

    report.lost = {
        s: len(set(expected.state[s]["inbox"]) - set(actual.state[s]["inbox"]))
        for s in crashkit.STAGES
    }
    report.duplicates_dropped = {
        s: crashkit.duplicates_dropped(p.log(whole=True)) for s, p in procs.items()
    }
    report.redelivered_on_topics = {
        t: actual.redelivered(t) for t in actual.events if actual.redelivered(t)
    }
    report.emitted = {t: len(expected.ids(t)) for t in expected.events if expected.ids(t)}
    print(f"\ncluster run: {report}")

    problems = crashkit.differences(expected, actual, crashkit.owners(records))
    assert not problems, "\n".join(problems)
    assert report.lost == dict.fromkeys(crashkit.STAGES, 0)
    assert report.exit_codes == dict.fromkeys(crashkit.STAGES, 0), report.exit_codes
    assert len(report.kills) == 2 and all(k["records acked while down"] for k in report.kills)
    # the comparison means something only if the run did emit
    assert expected.ids("journey-transitions") and expected.ids("signals.support")
    assert not any(expected.events[t] for t in crashkit.DEAD_LETTERS)
    assert all(actual.state[s]["outbox"] == [] for s in crashkit.STAGES)
