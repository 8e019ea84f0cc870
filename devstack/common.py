"""Plumbing shared by the dev stack's parts: errors, ports, pidfiles, stopping process groups.

Kept apart from `devstack.stack` so the Kafka, PostgreSQL and container back-ends can use it
without importing the stack.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

# psutil ships without type information; types-psutil may or may not be installed.
import psutil  # type: ignore[import-untyped,unused-ignore]

T = TypeVar("T")

Progress = Callable[[str], None]
"""Where progress lines go: `print` for the CLI, a logger for tests."""


class StackError(Exception):
    """A problem the user can act on; the CLI prints the message alone, without a traceback."""


class PortInUseError(StackError):
    """A port the stack needs is taken by a process that is not part of this stack."""

    def __init__(self, port: int, message: str) -> None:
        super().__init__(message)
        self.port = port


class StackAlreadyRunningError(StackError):
    """An earlier `up` in the same state directory still has live processes."""


# --- ports ------------------------------------------------------------------------------------


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on host:port.

    SO_REUSEADDR makes sockets in TIME_WAIT (left by a broker we just stopped) not count as
    "in use", while a listening socket still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports nobody listens on now (all held open while choosing)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def describe_port_owner(port: int) -> str | None:
    """'pid N, cmdline' of the process listening on `port`, if the OS lets us see it."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and int(conn.laddr.port) == port:
            if conn.pid is None:
                return None
            pid = int(conn.pid)
            try:
                cmdline = " ".join(str(part) for part in psutil.Process(pid).cmdline())
            except (psutil.Error, OSError):
                cmdline = "?"
            if len(cmdline) > 100:
                cmdline = cmdline[:97] + "..."
            return f"pid {pid}, {cmdline}"
    return None


def check_port_free(port: int, what: str, env_var: str | None) -> None:
    """Raise PortInUseError with a one-line message naming the owner and the way out."""
    if port_is_free(port):
        return
    owner = describe_port_owner(port)
    who = f" ({owner})" if owner else ""
    hint = f"set {env_var} or stop it" if env_var else "stop it or choose another port"
    raise PortInUseError(port, f"port {port} ({what}) is in use by another process{who}; {hint}")


async def wait_tcp(host: str, port: int, timeout_s: float) -> bool:
    """True once host:port accepts a connection, False if it did not within timeout_s."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


# --- pidfiles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PidRecord:
    """A process we started, identified by pid *and* start time so a recycled pid is not ours."""

    name: str
    pid: int
    create_time: float

    def process(self) -> psutil.Process | None:
        """The live process this record names, or None if it is gone (or a zombie)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(float(proc.create_time()) - self.create_time) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return proc

    def alive(self) -> bool:
        return self.process() is not None


def pid_dir(state_dir: Path) -> Path:
    return state_dir / "pids"


def write_pidfile(state_dir: Path, name: str, pid: int) -> PidRecord:
    """Record a child so `down` (a later, separate process) can find and stop it."""
    try:
        create_time = float(psutil.Process(pid).create_time())
    except psutil.NoSuchProcess:
        create_time = time.time()
    record = PidRecord(name, pid, create_time)
    directory = pid_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.pid"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": pid, "create_time": create_time}))
    tmp.replace(path)
    return record


def read_pidfile(state_dir: Path, name: str) -> PidRecord | None:
    path = pid_dir(state_dir) / f"{name}.pid"
    try:
        data = json.loads(path.read_text())
        return PidRecord(name, int(data["pid"]), float(data["create_time"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def remove_pidfile(state_dir: Path, name: str) -> None:
    (pid_dir(state_dir) / f"{name}.pid").unlink(missing_ok=True)


def all_pidfiles(state_dir: Path) -> list[PidRecord]:
    directory = pid_dir(state_dir)
    if not directory.is_dir():
        return []
    records = [read_pidfile(state_dir, p.stem) for p in sorted(directory.glob("*.pid"))]
    return [r for r in records if r is not None]


# --- stopping ---------------------------------------------------------------------------------


def stop_process_group(
    record: PidRecord,
    *,
    timeout_s: float,
    popen: subprocess.Popen[bytes] | None = None,
    kill: bool = False,
) -> int | None:
    """SIGTERM the record's process group (SIGKILL if `kill`), wait, then SIGKILL.

    Our children run in their own session, so their pid is their process group id and the
    whole group (e.g. a JVM's helpers, uvicorn workers) goes together. Returns the exit code
    when it is known (only for our own children).
    """
    return stop_process_groups([(record, popen)], timeout_s=timeout_s, kill=kill)[record.pid]


def stop_process_groups(
    targets: list[tuple[PidRecord, subprocess.Popen[bytes] | None]],
    *,
    timeout_s: float,
    kill: bool = False,
) -> dict[int, int | None]:
    """`stop_process_group` for several at once: signal all first, so they shut down together."""
    first = signal.SIGKILL if kill else signal.SIGTERM
    live: list[tuple[PidRecord, psutil.Process, subprocess.Popen[bytes] | None]] = []
    codes: dict[int, int | None] = {}
    for record, popen in targets:
        proc = record.process()
        if proc is None:
            codes[record.pid] = popen.poll() if popen is not None else None
            continue
        _signal_group(record.pid, first)
        live.append((record, proc, popen))
    deadline = time.monotonic() + timeout_s
    for record, proc, popen in live:
        if not _wait_gone(proc, popen, max(0.0, deadline - time.monotonic())):
            _signal_group(record.pid, signal.SIGKILL)
            _wait_gone(proc, popen, 10.0)
        codes[record.pid] = popen.returncode if popen is not None else None
    return codes


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(
    proc: psutil.Process, popen: subprocess.Popen[bytes] | None, timeout_s: float
) -> bool:
    """Wait for exit; through Popen when we have it, so our child is reaped, not a zombie.

    Another process's child (what `down` stops) counts as gone once it is a zombie: its new
    parent (init, or a container's pid 1) may take its time to reap it.
    """
    if popen is not None:
        try:
            popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


# --- misc -------------------------------------------------------------------------------------


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages that point at it."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16_384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, even when the caller already runs an event loop.

    The DevStack is sync (pytest fixtures, CLI), but may be created inside an async fixture; a
    second loop on a helper thread avoids "asyncio.run() cannot be called from a running loop".
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so two `up`s (or two test sessions) do not race."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def monotonic_since(start: float) -> float:
    return time.monotonic() - start
