"""A single-node KRaft Apache Kafka broker run as a local JVM process, for development and tests.

Why not a container: most laptops and CI runners here have Java but no Docker engine. The broker
jars come from Maven Central once (deploy/kafka/pom.xml) into a cache outside the repository,
shared by every checkout and every test session.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import shutil
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.common import (
    PidRecord,
    Progress,
    StackError,
    file_lock,
    read_pidfile,
    remove_pidfile,
    run_async,
    stop_process_group,
    tail,
    wait_tcp,
    write_pidfile,
)
from devstack.kafka_ready import broker_listed

if TYPE_CHECKING:
    from devstack.kafka_security import BrokerSecurity

POM = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "pom.xml"
"""The broker's Maven coordinates, kept with the other deployable files under deploy/."""
PIDFILE = "kafka"
HEAP_OPTS_ENV = "FLYWHEEL_KAFKA_HEAP_OPTS"
DEFAULT_HEAP_OPTS = "-Xmx512m"
STOP_TIMEOUT_S = 30.0

LOG4J2_PROPERTIES = """\
# Written by devstack/stack.py. Broker log to a file, warnings only, so consoles stay quiet.
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/kafka.log
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
# One INFO line worth having: "[KafkaRaftServer nodeId=1] Kafka Server started".
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
"""


def kafka_version(pom: Path = POM) -> str:
    """The broker version pinned in the POM (`kafka.version`), which names the jar cache."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise StackError(f"{pom} has no <kafka.version> property")
    return (node.text or "").strip()


def cache_dir(version: str) -> Path:
    """`${XDG_CACHE_HOME:-~/.cache}/flywheel/kafka-<version>`: outside the repo, shared."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "flywheel" / f"kafka-{version}"


def ensure_jars(progress: Progress, pom: Path = POM) -> Path:
    """The broker's classpath directory, fetched with Maven unless the cache is complete.

    The completion marker holds the POM's hash, so editing the POM (say, a log4j bump)
    refetches; a half-finished download never counts because files land in `libs.partial`
    and are renamed only after mvn succeeds.
    """
    version = kafka_version(pom)
    base = cache_dir(version)
    libs = base / "libs"
    marker = base / ".complete"
    pom_hash = hashlib.sha256(pom.read_bytes()).hexdigest()

    def complete() -> bool:
        with contextlib.suppress(OSError):
            return libs.is_dir() and marker.read_text().strip() == pom_hash
        return False

    if complete():
        return libs
    with file_lock(base / ".lock"):
        if complete():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError(
                "Maven (mvn) is not on PATH; it fetches the Kafka broker jars once. Install "
                "Maven, or set KAFKA_BOOTSTRAP_SERVERS to use a broker you already run."
            )
        progress(f"fetching Kafka {version} jars with Maven into {libs} ...")
        started = time.monotonic()
        partial = base / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={partial}",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError("mvn did not finish fetching the Kafka jars within 15 min") from exc
        output = result.stdout.decode("utf-8", "replace")
        if result.returncode != 0:
            last = "\n".join(output.splitlines()[-30:])
            raise StackError(
                f"mvn failed (exit {result.returncode}) fetching the Kafka broker jars:\n"
                f"  {' '.join(cmd)}\n{last}"
            )
        if not any(partial.glob("kafka_*.jar")):
            raise StackError(f"mvn succeeded but left no kafka_*.jar in {partial}:\n{output}")
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        for stale in base.glob("*.jsa"):  # class-data archives of the old jars are useless
            stale.unlink(missing_ok=True)
        marker.write_text(pom_hash + "\n")
        progress(f"Kafka jars fetched in {time.monotonic() - started:.1f} s")
    return libs


def java_executable() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError(
            "java is not on PATH; the local Kafka broker needs Java 17 or newer. Install a JDK, "
            "or set KAFKA_BOOTSTRAP_SERVERS to use a broker you already run."
        )
    return java


def new_cluster_id() -> str:
    """A 22-character base64url UUID, the form `kafka-storage random-uuid` prints."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class LocalKafka:
    """One broker+controller JVM whose config, data and pidfile live in the state dir."""

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int,
        controller_port: int,
        partitions: int,
        progress: Progress,
        security: BrokerSecurity | None = None,
    ) -> None:
        """`security`: SASL_SSL and the authorizer (devstack.kafka_security); None: PLAINTEXT."""
        self.state_dir = state_dir
        self.security = security
        self.port = port
        self.controller_port = controller_port
        self.partitions = partitions
        self.progress = progress
        self.dir = state_dir / "kafka"
        self.data_dir = self.dir / "data"
        self.log_dir = state_dir / "logs"
        self.log_file = self.log_dir / "kafka.log"
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, *, timeout_s: float = 60.0) -> None:
        """Fetch jars if needed, format storage once, spawn the JVM and wait until it serves."""
        libs = ensure_jars(self.progress)
        java = java_executable()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        server_props = self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            self._format(java, libs, server_props)
            (self.dir / "formatted-secure").write_text(f"{int(self.security is not None)}\n")
        self._check_formatted_security()

        started = time.monotonic()
        cmd = [java, *self._jvm_opts(java, libs), "kafka.Kafka", str(server_props)]
        with self.log_file.open("ab") as log:
            self._popen = subprocess.Popen(
                cmd,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: `down` stops it, Ctrl-C does not
            )
        write_pidfile(self.state_dir, PIDFILE, self._popen.pid)
        try:
            run_async(self._wait_ready(timeout_s))
        except BaseException:
            self.stop(kill=True)
            raise
        self.progress(f"broker ready in {time.monotonic() - started:.1f} s at {self.bootstrap}")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the broker recorded in the pidfile (ours or an earlier `up`'s)."""
        record = read_pidfile(self.state_dir, PIDFILE)
        if record is not None:
            self.progress(f"stopping Kafka broker (pid {record.pid}) ...")
            popen = self._popen if self._popen and self._popen.pid == record.pid else None
            stop_process_group(record, timeout_s=STOP_TIMEOUT_S, popen=popen, kill=kill)
            remove_pidfile(self.state_dir, PIDFILE)
        self._popen = None
        self._keep_class_archive()

    def record(self) -> PidRecord | None:
        return read_pidfile(self.state_dir, PIDFILE)

    # --- pieces -------------------------------------------------------------------------------

    def _properties(self) -> dict[str, str]:
        """The broker's server.properties: one combined broker+controller node (the cluster's
        nodes, devstack/cluster.py, change what differs)."""
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": str(self.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "12",  # 50 by default: slow first group join
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "12",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After a kill -9 the controller keeps the dead broker's registration until its
            # session expires (9 s by default) and only then accepts the restarted one.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "auto.create.topics.enable": "false",
        }
        if self.security is not None:  # the secured broker: devstack/kafka_security.py
            props.update(self.security.broker_properties(self.port, self.controller_port))
        return props

    def _write_config(self) -> Path:
        """(Re)write the config every start, so a restart may move to other ports."""
        server_props = self.dir / "server.properties"
        body = "".join(f"{k}={v}\n" for k, v in self._properties().items())
        server_props.write_text("# Written by devstack at every start.\n" + body)
        (self.dir / "log4j2.properties").write_text(self._log4j2())
        return server_props

    def _log4j2(self) -> str:
        return LOG4J2_PROPERTIES

    def _check_formatted_security(self) -> None:
        """SCRAM users are made when the storage is formatted: a state dir formatted plaintext
        cannot become secured (nor the other way round) without starting afresh."""
        marker = self.dir / "formatted-secure"
        wanted = "1" if self.security is not None else "0"
        formatted = marker.read_text().strip() if marker.exists() else "0"  # before the marker
        if formatted != wanted:
            was = "with" if wanted == "0" else "without"
            raise StackError(
                f"the Kafka storage in {self.data_dir} was formatted {was} SASL users "
                "(FLYWHEEL_KAFKA_SECURE): use another --state-dir, or remove this one"
            )

    def _logging_opts(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log_dir}",
        ]

    def _format(self, java: str, libs: Path, server_props: Path) -> None:
        id_file = self.dir / "cluster.id"
        if not id_file.exists():
            id_file.write_text(new_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        self.progress(f"formatting storage in {self.data_dir} ...")
        cmd = [
            java, "-XX:TieredStopAtLevel=1", "-cp", f"{libs}/*", *self._logging_opts(),
            "kafka.tools.StorageTool", "format",
            f"--cluster-id={cluster_id}",  # "=": an id may start with "-"
            "-c", str(server_props),
            *(self.security.format_args() if self.security is not None else ()),
        ]  # fmt: skip
        result = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120, check=False
        )
        output = result.stdout.decode("utf-8", "replace")
        with self.log_file.open("a") as log:
            log.write(output)
        if result.returncode != 0:
            raise StackError(
                f"formatting Kafka storage failed (exit {result.returncode}):\n{output}"
            )

    def _jvm_opts(self, java: str, libs: Path) -> list[str]:
        heap = os.environ.get(HEAP_OPTS_ENV, DEFAULT_HEAP_OPTS).split()
        return [
            *heap,
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            *self._class_archive_opts(java, libs),
            "-cp",
            f"{libs}/*",
            *self._logging_opts(),
        ]

    # A dynamic class-data-sharing archive halves broker start-up (about 2.8 s -> 1.4 s here).
    # The first broker writes it when it exits; later ones map it. The JVM checks that the
    # archive matches the JVM and classpath, and silently ignores it otherwise.

    def _class_archive(self, java: str, libs: Path) -> Path:
        real = Path(java).resolve()
        key = f"{real}:{real.stat().st_mtime_ns}"
        return libs.parent / f"cds-{hashlib.sha1(key.encode()).hexdigest()[:12]}.jsa"

    def _class_archive_opts(self, java: str, libs: Path) -> list[str]:
        quiet = ["-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
        archive = self._class_archive(java, libs)
        (self.dir / "cds-target").write_text(str(archive))
        if archive.exists():
            return [f"-XX:SharedArchiveFile={archive}", *quiet]
        return [f"-XX:ArchiveClassesAtExit={self.dir / 'cds.jsa.partial'}", *quiet]

    def _keep_class_archive(self) -> None:
        """Move an archive the stopped JVM wrote into the shared jar cache."""
        partial = self.dir / "cds.jsa.partial"
        target_file = self.dir / "cds-target"
        if not partial.exists() or not target_file.exists():
            return
        target = Path(target_file.read_text().strip())
        try:
            if partial.stat().st_size > 1_000_000 and not target.exists():
                tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
                shutil.move(partial, tmp)
                tmp.replace(target)
        except OSError:
            pass
        partial.unlink(missing_ok=True)

    async def _wait_ready(self, timeout_s: float) -> None:
        """Poll until the broker is registered and unfenced (it is listed in metadata)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._popen is not None and self._popen.poll() is not None:
                raise StackError(
                    f"the Kafka broker exited with code {self._popen.returncode} while starting; "
                    f"see {self.log_file}\n{tail(self.log_file)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StackError(
                    f"the Kafka broker did not answer on {self.bootstrap} within "
                    f"{timeout_s:.0f} s; see {self.log_file}\n{tail(self.log_file)}"
                )
            if await wait_tcp("127.0.0.1", self.port, min(0.5, remaining)) and await broker_listed(
                self.bootstrap,
                min(5.0, max(remaining, 0.1)),
                security=self.security.client_options() if self.security is not None else {},
            ):
                return
            await asyncio.sleep(0.05)
