"""Where `advisor bench pool`'s sessions go: the settings and connection strings they run with, what the
server says about itself, and the plan of arms (mode × transport), the Unix socket only where it reaches the
same server."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import conninfo as pg_conninfo

from advisor.bench.load import APPLICATION_NAME, add_options, bench_connect, conninfo_params
from advisor.bench.pool_model import MODES, PGBOUNCER_MODES, PoolBenchConfig
from advisor.db.connect import TAG

Plan = list[tuple[str, str, str | None]]  # (mode, transport, conninfo) per arm; None: a local PgBouncer's
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def session_settings(timeout_s: float) -> dict[str, str]:
    """What every benchmark session on the server runs with (startup options direct, connect_query through
    a local PgBouncer)."""
    return {"statement_timeout": str(int(timeout_s * 1000)), "default_transaction_read_only": "on",
            "idle_in_transaction_session_timeout": "60000", "lock_timeout": "1000"}


def bench_conninfo(params: dict[str, str], timeout_s: float, *, server_options: bool = True, **override: str) -> str:
    """A conninfo for benchmark sessions: the user's parameters plus ours (ours win)."""
    p = dict(params, **override)
    p["application_name"] = APPLICATION_NAME
    p.setdefault("connect_timeout", str(max(2, int(timeout_s))))
    if server_options:  # PgBouncer refuses startup options it does not know; the server gets them all
        p = add_options(p, " ".join(f"-c {k}={v}" for k, v in session_settings(timeout_s).items()))
    return pg_conninfo.make_conninfo("", **p)


def is_local(params: dict[str, str]) -> bool:
    hosts = [h.strip() for h in (params.get("host") or "").split(",") if h.strip()]
    if params.get("hostaddr"):
        hosts = [params["hostaddr"]]
    if not hosts:
        return True  # libpq's default: the local Unix socket
    return all(h in _LOCAL_HOSTS or h.startswith(("/", "@")) for h in hosts)


def _tcp_label(params: dict[str, str]) -> str:
    host = params.get("host") or ""
    return "unix" if host.startswith(("/", "@")) or (not host and not params.get("hostaddr")) else "tcp"


@dataclass(frozen=True, slots=True)
class Server:
    version_num: int
    max_connections: int
    reserved: int
    socket_dirs: tuple[str, ...]
    port: str
    started: str  # pg_postmaster_start_time(), identifies the server behind a second transport
    read_only: bool
    backends: int  # client backends already connected
    user: str  # current_user and current_database(): what a local PgBouncer logs in as, and to
    dbname: str


_FACTS = TAG + """SELECT current_setting('server_version_num')::int, current_setting('max_connections')::int,
    current_setting('superuser_reserved_connections')::int
        + coalesce(current_setting('reserved_connections', true)::int, 0),
    current_setting('port'), pg_postmaster_start_time()::text,
    current_setting('transaction_read_only') = 'on' OR pg_is_in_recovery(),
    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()),
    current_user, current_database()"""

_IDENTITY = TAG + "SELECT current_setting('port'), pg_postmaster_start_time()::text"
# Where libpq and the Debian/upstream builds put the socket, for roles that may not read the setting;
# a socket found there is used only if the same server answers (port and postmaster start time).
_USUAL_SOCKET_DIRS = ("/var/run/postgresql", "/tmp")


def server_facts(conn: psycopg.Connection, notes: list[str]) -> Server:
    row = conn.execute(_FACTS).fetchone()
    assert row is not None  # a SELECT without FROM: one row
    # Superuser or pg_read_all_settings only; pg_settings hides it from others where current_setting() would
    # raise an error, which the server logs.
    setting = conn.execute(TAG + "SELECT setting FROM pg_settings WHERE name = 'unix_socket_directories'").fetchone()
    if setting is not None:
        dirs = tuple(d.strip() for d in (setting[0] or "").split(",") if d.strip())
    else:
        dirs = _USUAL_SOCKET_DIRS
        notes.append("this role may not read unix_socket_directories: the usual socket folders were tried")
    return Server(row[0], row[1], row[2], dirs, row[3], row[4], bool(row[5]), row[6], row[7], row[8])


def _transports(cfg: PoolBenchConfig, params: dict[str, str], server: Server, notes: list[str]) -> list[tuple[str, str]]:
    """(label, conninfo) per transport to measure; the Unix socket only when it reaches the same server."""
    out: list[tuple[str, str]] = []
    label = _tcp_label(params)
    if "tcp" in cfg.transports or label == "unix":
        out.append((label, bench_conninfo(params, cfg.request_timeout_s)))
    if "unix" not in cfg.transports or label == "unix":
        return out
    host = params.get("host") or ""
    if not is_local(params) or not host:
        notes.append(f"Unix socket not measured: the DSN's host ({host or 'default'}) is not a loopback TCP address")
        return out
    if not server.socket_dirs:
        notes.append("Unix socket not measured: the server has no unix_socket_directories")
        return out
    port = params.get("port") or server.port
    reasons = []
    for directory in server.socket_dirs:
        candidate = dict(params, host=directory, port=port)
        candidate.pop("hostaddr", None)
        info = bench_conninfo(candidate, cfg.request_timeout_s)
        try:
            with bench_connect(info, connect_timeout=3) as conn:
                same = conn.execute(_IDENTITY).fetchone() == (server.port, server.started)
        except psycopg.Error as err:
            reasons.append(f"{directory}: {(str(err).strip().splitlines() or [''])[-1].strip()}")
            continue
        if same:
            out.append(("unix", info))
            return out
        reasons.append(f"{directory}: another server answers there")
    notes.append("Unix socket not measured (not connectable from here): " + "; ".join(reasons))
    return out


def plan_arms(cfg: PoolBenchConfig, params: dict[str, str], server: Server, notes: list[str]) -> Plan:
    """(mode, transport, conninfo) of every arm at one concurrency level; conninfo None: a local PgBouncer's,
    known once it runs (its transport names its pooling mode: pgbouncer-transaction, pgbouncer-session)."""
    plan: Plan = []
    for label, info in _transports(cfg, params, server, notes):
        plan += [(m, label, info) for m in cfg.modes if m not in PGBOUNCER_MODES]
    bouncer_modes = [m for m in cfg.modes if m in PGBOUNCER_MODES]
    if bouncer_modes and cfg.local_pgbouncer:
        plan += [(m, f"pgbouncer-{pool_mode}", None) for pool_mode in cfg.pgbouncer_pool_modes for m in bouncer_modes]
    elif bouncer_modes and cfg.pgbouncer_dsn:
        bparams = conninfo_params(cfg.pgbouncer_dsn)
        info = bench_conninfo(bparams, cfg.request_timeout_s, server_options=False)
        plan += [(m, _tcp_label(bparams), info) for m in bouncer_modes]
        notes.append("your PgBouncer (--pgbouncer-dsn): its clients send application_name (PgBouncer passes it on) "
                     "but no startup options, which PgBouncer refuses unless ignore_startup_parameters lists them, "
                     "and then drops: its server connections run with the server's own statement_timeout, no "
                     "read-only default and the server's statement logging, so the benchmark's requests are logged "
                     "where the server logs statements. Its version and pooling mode are not read; its peak backends "
                     "are counted in the DSN's database, which may differ from PgBouncer's target")
    elif bouncer_modes and cfg.modes != MODES:
        notes.append(f"{', '.join(bouncer_modes)} asked for but neither --local-pgbouncer nor --pgbouncer-dsn "
                     "was given: not measured")
    return plan
