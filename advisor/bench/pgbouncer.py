"""A throwaway PgBouncer in front of the target, for `advisor bench pool --local-pgbouncer`.

Launched the way ``advisor.db.embedded`` launches PostgreSQL: the distribution's
``pgbouncer`` binary, on a free loopback port (no Unix socket), in a fresh directory
under /tmp removed on stop, tied to this process by a parent-death signal, and, as
root, run as the same unprivileged user as the throwaway server (PgBouncer refuses
root). One database alias, ``advisor_target``, points at the DSN's database, in the
pooling mode and with the pool size asked for.

Authentication: the ``auth_file`` (mode 0600, in that directory only) holds the
DSN's user and password in plain text; PgBouncer answers clients with md5 and logs
in to the server with the same password (md5 or SCRAM, whatever the server asks).
A DSN without a password (trust, peer, a password file) gets a random one for the
client side; the server is then asked with that, which only a server that does not
ask for one accepts. The password is never printed: callers scrub it from messages.

Our traffic stays ours through PgBouncer too: clients send ``application_name``
(a startup parameter PgBouncer keeps per client); each server connection is named by
the alias's ``application_name`` in its startup packet, then runs ``connect_query``,
one tagged statement that applies the settings the benchmark's direct sessions send
as startup ``options`` (which PgBouncer would pass on to no server): timeouts,
read-only, statement logging off.
PgBouncer's own statements are tagged or off: the server check query is tagged, and
there is no reset query (``DISCARD ALL`` would be an untagged statement, and would
undo ``connect_query``; our clients leave no session state behind).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from psycopg import conninfo as pg_conninfo

from advisor.db.connect import TAG
from advisor.db.embedded import alive, child_env, free_port, read_pid, run_as, tie_to_parent, user_kwargs
from advisor.errors import AdvisorError

__all__ = ["ALIAS", "POOL_MODES", "PREPARED_SINCE", "LocalPgBouncer", "PgBouncerError", "find_pgbouncer",
           "max_client_conn", "pgbouncer_version"]

INSTALL_FIX = "install PgBouncer (apt-get install pgbouncer) or run scripts/setup.sh"
ALIAS = "advisor_target"
POOL_MODES = ("transaction", "session")
PREPARED_SINCE = (1, 21)  # max_prepared_statements: protocol-level prepared statements in transaction mode
_PREFIX = "advisor-pgbouncer-"
_SEARCH = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")


class PgBouncerError(AdvisorError):
    """PgBouncer is missing or did not start: one line of cause, one of fix."""


def find_pgbouncer() -> Path:
    """The ``pgbouncer`` binary: PATH, then the usual sbin folders (Debian's is /usr/sbin, not on every PATH)."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path=os.pathsep.join(_SEARCH))
    if not found:
        raise PgBouncerError("pgbouncer is not installed (not on PATH nor in /usr/sbin)", INSTALL_FIX)
    return Path(found)


def pgbouncer_version(binary: Path) -> tuple[int, int, int]:
    """(1, 18, 0) from ``pgbouncer --version`` ("PgBouncer 1.18.0")."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"PgBouncer\s+(\d+)\.(\d+)(?:\.(\d+))?", out)
    if not match:
        raise PgBouncerError(f"cannot read PgBouncer's version from {out.strip()[:80]!r}", INSTALL_FIX)
    return int(match[1]), int(match[2]), int(match[3] or 0)


def max_client_conn(clients: int) -> int:
    """Room for twice the clients: one that just closed still counts until PgBouncer has seen it go (100 clients
    opening a connection per request hit a limit of 110)."""
    return 2 * clients + 10


def _quoted(value: object) -> str:
    """A value in PgBouncer's connection-string syntax (single quotes, a quote doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def _auth_line(user: str, password: str) -> str:
    def q(s: str) -> str:
        return '"' + s.replace('"', '""') + '"'
    return f"{q(user)} {q(password)}\n"


def _sweep_stale(parent: Path) -> None:
    """Remove directories of runs that were killed (their PgBouncer died with them)."""
    for base in parent.glob(_PREFIX + "*"):
        owner = read_pid(base / "owner.pid")
        if owner is not None and not alive(owner):
            shutil.rmtree(base, ignore_errors=True)


class LocalPgBouncer:
    """A throwaway PgBouncer in front of one database; use as a context manager."""

    def __init__(self, target: Mapping[str, str], *, user: str, dbname: str, pool_mode: str, pool_size: int,
                 max_clients: int, session_settings: Mapping[str, str], binary: Path | None = None) -> None:
        if pool_mode not in POOL_MODES:
            raise PgBouncerError(f"unknown PgBouncer pool mode {pool_mode!r}", f"use one of {', '.join(POOL_MODES)}")
        self.binary = binary or find_pgbouncer()
        self.version = pgbouncer_version(self.binary)
        self.target, self.user, self.dbname = dict(target), user, dbname
        self.pool_mode, self.pool_size, self.max_clients = pool_mode, pool_size, max_clients
        self.session_settings = dict(session_settings)
        # The client side's password: the DSN's, else one of our own (see the module docstring).
        self.password = target.get("password") or secrets.token_urlsafe(18)
        self.port = 0
        self.base_dir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._user = run_as()

    @property
    def prepared_statements(self) -> bool:
        """True when this PgBouncer keeps protocol-level prepared statements in transaction mode."""
        return self.version >= PREPARED_SINCE

    def conninfo(self, **extra: str) -> str:
        """Where clients connect: loopback, our alias, the auth_file's user and password."""
        params = {"host": "127.0.0.1", "port": str(self.port), "dbname": ALIAS, "user": self.user,
                  "password": self.password}
        return pg_conninfo.make_conninfo("", **{**params, **extra})

    # -- lifecycle
    def __enter__(self) -> LocalPgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalPgBouncer:
        parent = Path("/tmp") if Path("/tmp").is_dir() else Path(tempfile.gettempdir())
        _sweep_stale(parent)
        self.base_dir = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=parent))
        atexit.register(self.stop)
        try:
            for _ in range(3):  # another process may take the port between our probe and PgBouncer's bind
                self.port = free_port()
                self._write_files()
                if self._launch():
                    return self
            raise PgBouncerError(f"PgBouncer could not bind a loopback port: {self._log_tail()}",
                                 "free some ports, or run again")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)  # immediate shutdown: our clients are gone already
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=10)
            self._proc = None
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
        atexit.unregister(self.stop)

    # -- steps of start()
    @property
    def _base(self) -> Path:
        """This run's directory: its files, its log (only between start() and stop())."""
        assert self.base_dir is not None, "LocalPgBouncer used before start()"
        return self.base_dir

    def _connect_query(self, settings: Mapping[str, str]) -> str:
        # One statement, so the tag leads all of it; set_config's values need no quoting of ours.
        calls = ", ".join(f"set_config({_dollar(name)}, {_dollar(value)}, false)" for name, value in settings.items())
        return f"{TAG}SELECT {calls}"

    def _database_line(self) -> str:
        server = {"dbname": self.dbname, "user": self.user}
        host = self.target.get("hostaddr") or self.target.get("host")
        if host:
            server["host"] = host.split(",")[0]
        if self.target.get("port"):
            server["port"] = self.target["port"].split(",")[0]
        settings = dict(self.session_settings)
        if "application_name" in settings:  # in the startup packet: the backend is named from its first line on
            server["application_name"] = settings.pop("application_name")
        if settings:
            server["connect_query"] = self._connect_query(settings)
        return f"{ALIAS} = " + " ".join(f"{k}={_quoted(v)}" for k, v in server.items()) + "\n"

    def _ini(self) -> str:
        base = self._base
        settings = {
            "listen_addr": "127.0.0.1", "listen_port": self.port, "unix_socket_dir": "",
            "auth_type": "md5", "auth_file": base / "userlist.txt",
            "pool_mode": self.pool_mode, "default_pool_size": self.pool_size, "min_pool_size": 0,
            "reserve_pool_size": 0, "max_db_connections": self.pool_size,
            "max_client_conn": max_client_conn(self.max_clients),
            # clients send application_name (kept per client) and nothing else PgBouncer would refuse
            "ignore_startup_parameters": "extra_float_digits,options",
            "server_reset_query": "", "server_check_query": f"{TAG}SELECT 1",
            "query_wait_timeout": 30, "logfile": base / "pgbouncer.log", "pidfile": "",
            "log_connections": 0, "log_disconnections": 0, "stats_period": 3600,
        }
        if self.prepared_statements:
            settings["max_prepared_statements"] = 200
        lines = ["[databases]\n", self._database_line(), "\n[pgbouncer]\n"]
        lines += [f"{k} = {v}\n" for k, v in settings.items()]
        return "".join(lines)

    def _write_files(self) -> None:
        base = self._base
        (base / "owner.pid").write_text(f"{os.getpid()}\n")
        for name, text in (("userlist.txt", _auth_line(self.user, self.password)), ("pgbouncer.ini", self._ini())):
            path = base / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(path, 0o600)
        if self._user is not None:
            for path in (base, base / "userlist.txt", base / "pgbouncer.ini"):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _launch(self) -> bool:
        """Start PgBouncer and wait until it accepts connections; False when its port was taken meanwhile."""
        log = self._base / "pgbouncer.log"
        with contextlib.suppress(FileNotFoundError):
            log.unlink()
        with open(self._base / "startup.log", "ab") as out:
            self._proc = subprocess.Popen(
                [str(self.binary), str(self._base / "pgbouncer.ini")], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=child_env(self._base), cwd=self._base, start_new_session=True,
                preexec_fn=tie_to_parent(os.getpid()), **user_kwargs(self._user),
            )
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self._log_tail()
                self._proc = None
                if "Address already in use" in tail:
                    return False
                raise PgBouncerError(f"pgbouncer exited on start: {tail}", "read the message above; " + INSTALL_FIX)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
            time.sleep(0.02)
        raise PgBouncerError("pgbouncer did not accept connections within 15 s", f"its log: {self._log_tail()}")

    def _log_tail(self) -> str:
        lines: list[str] = []
        for name in ("startup.log", "pgbouncer.log"):
            with contextlib.suppress(OSError):
                lines += (self._base / name).read_text(errors="replace").splitlines()
        return " | ".join(lines[-3:]) or "(no output)"


def _dollar(text: str) -> str:
    """``text`` as a dollar-quoted SQL literal (no single quote to escape inside PgBouncer's own quoting)."""
    tag = "$a$"
    while tag in text:
        tag = f"$a{secrets.token_hex(2)}$"
    return f"{tag}{text}{tag}"
