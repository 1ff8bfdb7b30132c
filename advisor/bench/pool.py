"""`advisor bench pool`: what connection pooling buys on this server, measured.

Every *arm* is one mode × transport × concurrency. An arm opens its clients,
runs a warm-up whose numbers are thrown away, then the measured window, in
which ``concurrency`` threads send one request after another until the
duration ends or the request budget is spent. A request is everything the
application would do to run the query once in that mode:

``new_connection``        psycopg.connect, the query, close
``psycopg_pool``          checkout from a psycopg_pool.ConnectionPool (opened with ``open=True``,
                          min_size = max_size = concurrency, filled before the warm-up), query, return
``psycopg_pool_checked``  the same with ``check=ConnectionPool.check_connection`` (one extra round trip)
``sqlalchemy_queuepool``  Engine.connect() on a QueuePool (pool_size = concurrency, max_overflow 0, filled first)
``sqlalchemy_nullpool``   Engine.connect() on a NullPool: a new connection per request, through SQLAlchemy
``pgbouncer``             a new connection per request to PgBouncer (PgBouncer keeps the server ones)
``pgbouncer_pool``        a psycopg_pool through PgBouncer, with ``prepare_threshold=None``
``pgbouncer_pool_prepared``  the same with psycopg's default prepare_threshold (5), as an application not told
                          otherwise runs: through transaction pooling before PgBouncer 1.21 it fails with
                          ``prepared statement "_pg3_0" does not exist`` (or "already exists")

The PgBouncer modes run through ``--pgbouncer-dsn`` (the user's PgBouncer), or with
``--local-pgbouncer`` through a throwaway PgBouncer started for each of these arms
(``advisor.bench.pgbouncer``), once per pooling mode (transport ``pgbouncer-transaction``,
``pgbouncer-session``), with ``pgbouncer_pool_size`` server connections. In session mode
a client pool gets PgBouncer's pool size (a larger one would wait for ever).

Transports: ``tcp`` is the DSN as given; ``unix`` is the same server through its
Unix socket (``host=<dir>`` from ``unix_socket_directories``), tried only when
the DSN's host is local and used only when the socket answers with the same
server (same port setting and postmaster start time). Sessions run in autocommit
with ``default_transaction_read_only = on`` and a statement timeout. Every session
(setup, clients, pools, SQLAlchemy engines, the monitor, teardown) is named
``advisor_bench`` and every statement, also those the drivers send themselves, starts
with ``/* advisor */`` (see ``advisor.bench.load``), so readers of workloads leave
the benchmark out. Statement logging is off in every session where the role may turn
it off; where it may not, the run warns before it starts with the number of
statements the server will log (see ``advisor.bench.quiet``).

Workload: ``--query`` (one read-only SELECT, checked by
``advisor.db.explain.classify``), else a point lookup by a random primary key on
a 10,000-row table in a temporary schema ``advisor_bench_<random>``, dropped at
the end whatever happens; on a read-only target ``SELECT 1`` with a note.

JSON document (``schema_version`` 1)::

    schema_version        1
    kind                  "bench_pool"
    tool_version          advisor's version
    dsn                   the DSN with its password masked
    host_cores            cores this process may use (client and server share them when the server is local)
    server_local          true when the DSN's host is this machine (loopback or a socket)
    server_version_num    e.g. 150008
    max_connections       the server's setting; reserved_connections: superuser (+ PG16 reserved) slots
    query                 the statement as run, literals masked ("?")
    workload              {"kind": "table" | "query" | "select1", "schema": name or null, "rows": 10000 or null}
    settings              {"concurrency", "duration_s", "requests", "warmup_s", "modes", "transports",
                          "request_timeout_s",
                          "pgbouncer": null or {"local", "version", "pool_size", "pool_modes", "max_client_conn"}}
    arms[]                one per mode × transport × concurrency:
        mode, transport, concurrency
        requests          successful requests in the measured window
        elapsed_s         wall time of the measured window (until the last in-flight request ended)
        ops_per_s         requests / elapsed_s
        p50_ms p95_ms p99_ms max_ms   exact quantiles of the recorded latencies (successful requests), null if none
        connect_ms        mean time to open one connection during the window; null when the arm opened none
        connect_p50_ms connect_p95_ms   its median and 95th percentile (null likewise)
        connections_opened  connections opened during the window
        errors            failed requests other than timeouts
        timeouts          requests cut by statement_timeout, connect_timeout or a pool checkout timeout
        peak_backends     most backends of this database seen at once (sampled every 100 ms from a
                          separate monitor connection, which is not counted)
        peak_server_backends  the same for client backends of the whole server
        note              why the arm measured nothing or less than asked, else null
    verdict
        speedups[]        per transport and concurrency: best pooled arm (psycopg_pool*, sqlalchemy_queuepool,
                          pgbouncer) over new_connection: {transport, concurrency, best_mode, best_ops_per_s,
                          new_connection_ops_per_s, speedup}
        saturation[]      per transport, for the pooled mode fastest at the highest concurrency: {transport, mode,
                          series: [[concurrency, ops_per_s]], pool_size}: pool_size is the concurrency after which the
                          next level gained < 10 %; null when throughput still rose at the highest level measured
        headroom          {concurrency, peak_server_backends, max_connections, usable, headroom}: usable is
                          max_connections minus reserved slots, headroom what the highest concurrency left free
        pgbouncer         with a PgBouncer only:
            served[]      per PgBouncer transport at the highest concurrency: {transport, pool_mode, pool_size,
                          concurrency, best_mode, ops_per_s, peak_backends, connect_p50_ms,
                          new_connection_ops_per_s, new_connection_peak_backends, new_connection_connect_p50_ms}
                          (the new_connection figures: straight to the server, tcp, same concurrency)
            prepared_statements  {pool_mode, pgbouncer_version, max_prepared_statements,
                          default_prepare_threshold: {requests, errors, first_error},
                          prepare_threshold_none: {requests, errors, ops_per_s}} or null
            advice[]      client settings behind PgBouncer (NullPool, no client-side reset in transaction mode)
        summary[]         the same in plain sentences
    notes[]               everything the reader should know (fallbacks, skipped transports, the shared host)

Numbers are what this client measured on this host; nothing is extrapolated
to other concurrencies, hosts or drivers.
"""

from __future__ import annotations

import itertools
import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql

from advisor import __version__
from advisor.bench.load import (
    APPLICATION_NAME,
    MAX_REQUESTS_PER_ARM,
    Step,
    TaggedCursor,
    add_options,
    bench_connect,
    conninfo_params,
    create_schema,
    drop_schema,
    first_line,
    host_cores,
    latency_quantiles,
    new_schema_name,
    rounded,
    run_phase,
    scrubber,
)
from advisor.bench.pgbouncer import (
    POOL_MODES,
    PREPARED_SINCE,
    LocalPgBouncer,
    find_pgbouncer,
    max_client_conn,
    pgbouncer_version,
)
from advisor.bench.quiet import Logging, quiet_session
from advisor.db.connect import TAG, redact_dsn, scrub_secrets
from advisor.errors import AdvisorError

__all__ = [
    "MODES", "POOLED_MODES", "SCHEMA_VERSION", "TRANSPORTS", "Arm", "PoolBenchConfig", "PoolBenchResult",
    "pool_bench_document", "pool_bench_text", "run_pool_bench",
]

SCHEMA_VERSION = 1
MODES = ("new_connection", "psycopg_pool", "psycopg_pool_checked", "sqlalchemy_queuepool", "sqlalchemy_nullpool",
         "pgbouncer", "pgbouncer_pool", "pgbouncer_pool_prepared")
PGBOUNCER_MODES = ("pgbouncer", "pgbouncer_pool", "pgbouncer_pool_prepared")  # run only through a PgBouncer
# pgbouncer_pool_prepared shows what the default prepare_threshold does through PgBouncer; it is not advice
POOLED_MODES = ("psycopg_pool", "psycopg_pool_checked", "sqlalchemy_queuepool", "pgbouncer", "pgbouncer_pool")
TRANSPORTS = ("tcp", "unix")
TABLE_ROWS = 10_000
SATURATION_GAIN = 0.10  # less than this gain from one concurrency level to the next: saturated
MONITOR_INTERVAL_S = 0.1
REQUESTS_TIME_CAP_S = 300.0  # a --requests run without --duration still ends
MAX_CONCURRENCY = 1000
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


# --- configuration and results -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolBenchConfig:
    dsn: str
    query: str | None = None
    concurrency: tuple[int, ...] = (1, 4, 16)
    duration_s: float | None = None  # None: 5 s, or only the time cap when ``requests`` is given
    requests: int | None = None  # in total per arm, shared by its threads
    warmup_s: float = 1.0
    pgbouncer_dsn: str | None = None
    local_pgbouncer: bool = False  # start a throwaway PgBouncer per PgBouncer arm (advisor.bench.pgbouncer)
    pgbouncer_pool_size: int | None = None  # its server connections; None: see default_pgbouncer_pool_size
    pgbouncer_pool_modes: tuple[str, ...] = POOL_MODES
    modes: tuple[str, ...] = MODES  # the PGBOUNCER_MODES run only with pgbouncer_dsn or local_pgbouncer
    transports: tuple[str, ...] = TRANSPORTS
    request_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Arm:
    mode: str
    transport: str
    concurrency: int
    requests: int
    elapsed_s: float
    ops_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    connect_ms: float | None
    connect_p50_ms: float | None
    connect_p95_ms: float | None
    connections_opened: int
    errors: int
    timeouts: int
    peak_backends: int | None
    peak_server_backends: int | None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class PoolBenchResult:
    dsn: str  # redacted
    host_cores: int
    server_local: bool
    server_version_num: int
    max_connections: int
    reserved_connections: int
    query: str  # masked
    workload: dict
    settings: dict
    arms: tuple[Arm, ...]
    verdict: dict
    notes: tuple[str, ...] = field(default_factory=tuple)


# --- connection strings ----------------------------------------------------------------


def _session_settings(timeout_s: float) -> dict[str, str]:
    """What every benchmark session on the server runs with (startup options direct, connect_query through
    a local PgBouncer)."""
    return {"statement_timeout": str(int(timeout_s * 1000)), "default_transaction_read_only": "on",
            "idle_in_transaction_session_timeout": "60000", "lock_timeout": "1000"}


def _bench_conninfo(params: dict[str, str], timeout_s: float, *, server_options: bool = True, **override: str) -> str:
    """A conninfo for benchmark sessions: the user's parameters plus ours (ours win)."""
    p = dict(params, **override)
    p["application_name"] = APPLICATION_NAME
    p.setdefault("connect_timeout", str(max(2, int(timeout_s))))
    if server_options:  # PgBouncer refuses startup options it does not know; the server gets them all
        p = add_options(p, " ".join(f"-c {k}={v}" for k, v in _session_settings(timeout_s).items()))
    return pg_conninfo.make_conninfo("", **p)


def _is_local(params: dict[str, str]) -> bool:
    hosts = [h.strip() for h in (params.get("host") or "").split(",") if h.strip()]
    if params.get("hostaddr"):
        hosts = [params["hostaddr"]]
    if not hosts:
        return True  # libpq's default: the local Unix socket
    return all(h in _LOCAL_HOSTS or h.startswith(("/", "@")) for h in hosts)


def _tcp_label(params: dict[str, str]) -> str:
    host = params.get("host") or ""
    return "unix" if host.startswith(("/", "@")) or (not host and not params.get("hostaddr")) else "tcp"


# --- server facts and the workload table ------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Server:
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


def _server_facts(conn: psycopg.Connection, notes: list[str]) -> _Server:
    row = conn.execute(_FACTS).fetchone()
    # Superuser or pg_read_all_settings only; pg_settings hides it from others where current_setting() would
    # raise an error, which the server logs.
    setting = conn.execute(TAG + "SELECT setting FROM pg_settings WHERE name = 'unix_socket_directories'").fetchone()
    if setting is not None:
        dirs = tuple(d.strip() for d in (setting[0] or "").split(",") if d.strip())
    else:
        dirs = _USUAL_SOCKET_DIRS
        notes.append("this role may not read unix_socket_directories: the usual socket folders were tried")
    return _Server(row[0], row[1], row[2], dirs, row[3], row[4], bool(row[5]), row[6], row[7], row[8])


def _create_table(conn: psycopg.Connection, schema: str) -> None:
    s = pg_sql.Identifier(schema)
    create_schema(
        conn, schema,
        pg_sql.SQL("CREATE TABLE {}.accounts (id int PRIMARY KEY, balance int NOT NULL, filler text NOT NULL)").format(s),
        pg_sql.SQL("INSERT INTO {}.accounts SELECT g, g % 1000, repeat('x', 84) FROM generate_series(1, {}) g")
        .format(s, pg_sql.Literal(TABLE_ROWS)),
        pg_sql.SQL("ANALYZE {}.accounts").format(s),
    )


# --- clients: one per arm -------------------------------------------------------------------


class _ConnectTimes:
    """Seconds each new connection took to open; list.append is atomic under the GIL."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def connect(self, conninfo: str, **kwargs) -> psycopg.Connection:
        t0 = time.perf_counter()
        conn = bench_connect(conninfo, **kwargs)
        self.times.append(time.perf_counter() - t0)
        return conn

    def connection_class(self) -> type[psycopg.Connection]:
        times = self.times

        class TimedConnection(psycopg.Connection):
            @classmethod
            def connect(cls, conninfo: str = "", **kwargs):
                t0 = time.perf_counter()
                conn = super().connect(conninfo, **kwargs)
                times.append(time.perf_counter() - t0)
                return conn

        return TimedConnection


def _connect_stats(times: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """Mean, median and p95, in ms, of the connection times (seconds)."""
    if not times:
        return None, None, None
    p50, p95, _, _ = latency_quantiles(times)
    return statistics.fmean(t * 1000.0 for t in times), p50, p95


class _Client:
    """What a request does in one mode; open() before the warm-up, close() after the window."""

    def __init__(self, mode: str, conninfo: str, concurrency: int, sql: str, timeout_s: float,
                 connects: _ConnectTimes, pool_size: int | None = None) -> None:
        self.mode, self.conninfo, self.concurrency, self.sql = mode, conninfo, concurrency, sql
        self.timeout_s, self.connects = timeout_s, connects
        self.pool_size = pool_size or concurrency  # a client pool's size (threads wait for a connection beyond it)
        self.pool = None
        self.engine = None

    def open(self) -> None:
        c, mode = self.pool_size, self.mode
        if mode in ("psycopg_pool", "psycopg_pool_checked", "pgbouncer_pool", "pgbouncer_pool_prepared"):
            from psycopg_pool import ConnectionPool

            # Through PgBouncer's transaction pooling, psycopg's prepared statements (after prepare_threshold,
            # 5, runs of a query) meet another server connection: pgbouncer_pool turns them off, as the advice
            # says; pgbouncer_pool_prepared keeps psycopg's default, as an application that was not told would.
            kwargs = {"autocommit": True, "cursor_factory": TaggedCursor}
            if mode == "pgbouncer_pool":
                kwargs["prepare_threshold"] = None
            self.pool = ConnectionPool(
                self.conninfo, min_size=c, max_size=c, open=True, name=f"advisor-bench-{mode}",
                connection_class=self.connects.connection_class(), kwargs=kwargs,
                check=ConnectionPool.check_connection if mode == "psycopg_pool_checked" else None,
                timeout=self.timeout_s, reconnect_timeout=self.timeout_s,
            )  # fmt: skip
            self.pool.wait(timeout=max(30.0, self.timeout_s))  # every connection open before the warm-up
        elif mode in ("sqlalchemy_queuepool", "sqlalchemy_nullpool"):
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool, QueuePool

            def creator():
                return self.connects.connect(self.conninfo)

            # No hstore lookup: psycopg runs it in a transaction of its own (an untagged BEGIN/COMMIT).
            engine = {"creator": creator, "isolation_level": "AUTOCOMMIT", "use_native_hstore": False}
            if mode == "sqlalchemy_queuepool":
                self.engine = create_engine("postgresql+psycopg://", poolclass=QueuePool, pool_size=c, max_overflow=0,
                                            pool_timeout=self.timeout_s, **engine)
                held = [self.engine.connect() for _ in range(c)]  # fill the pool now, not in the window
                for conn in held:
                    conn.close()
            else:
                self.engine = create_engine("postgresql+psycopg://", poolclass=NullPool, **engine)
                self.engine.connect().close()  # the dialect's one-time initialisation

    def request(self, params: tuple | None) -> None:
        if self.pool is not None:
            with self.pool.connection() as conn:
                conn.execute(self.sql, params).fetchall()
        elif self.engine is not None:
            with self.engine.connect() as conn:
                if params is None:  # SQLAlchemy still hands psycopg an empty tuple: '%' must be doubled
                    conn.exec_driver_sql(self.sql.replace("%", "%%")).fetchall()
                else:
                    conn.exec_driver_sql(self.sql, params).fetchall()
        else:  # new_connection, pgbouncer: one query per connection, so psycopg never prepares it
            conn = self.connects.connect(self.conninfo)
            try:
                conn.execute(self.sql, params).fetchall()
            finally:
                conn.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close(timeout=5.0)
        if self.engine is not None:
            self.engine.dispose()


# --- the backend monitor ----------------------------------------------------------------


class _Monitor:
    """Samples backend counts from its own connection every 100 ms while an arm's window runs."""

    _SAMPLE = TAG + ("SELECT count(*) FILTER (WHERE datname = current_database()), "
                     "count(*) FILTER (WHERE backend_type = 'client backend') "
                     "FROM pg_stat_activity WHERE pid <> pg_backend_pid()")

    def __init__(self, conninfo: str) -> None:
        self.conn = bench_connect(conninfo)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peak = (0, 0)
        self.failed = False

    def _sample(self) -> None:
        try:
            db, server = self.conn.execute(self._SAMPLE).fetchone()
        except psycopg.Error:
            self.failed = True
            return
        self.peak = (max(self.peak[0], db), max(self.peak[1], server))

    def backends(self) -> int | None:
        """Backends of this database now (the monitor not counted); None when the monitor cannot read them."""
        try:
            return self.conn.execute(self._SAMPLE).fetchone()[0]
        except psycopg.Error:
            return None

    def settle(self, baseline: int | None, timeout_s: float = 5.0) -> None:
        """Wait until this database has no more backends than ``baseline`` (those of a stopped PgBouncer exit)."""
        end = time.monotonic() + timeout_s
        while baseline is not None and time.monotonic() < end:
            now = self.backends()
            if now is None or now <= baseline:
                return
            time.sleep(0.02)

    def start(self, cap_s: float) -> None:
        self.peak, self.failed = (0, 0), False
        self._stop.clear()

        def run() -> None:
            end = time.monotonic() + cap_s
            self._sample()
            while not self._stop.wait(MONITOR_INTERVAL_S) and time.monotonic() < end and not self.failed:
                self._sample()

        self._thread = threading.Thread(target=run, daemon=True, name="advisor-bench-monitor")
        self._thread.start()

    def stop(self) -> tuple[int, int] | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return None if self.failed else self.peak

    def close(self) -> None:
        self.conn.close()


# --- the run ---------------------------------------------------------------------------------


def _check_config(cfg: PoolBenchConfig) -> None:
    if not cfg.concurrency or any(c < 1 or c > MAX_CONCURRENCY for c in cfg.concurrency):
        raise AdvisorError(f"concurrency must be between 1 and {MAX_CONCURRENCY}: {list(cfg.concurrency)}",
                           "give a comma-separated list such as --concurrency 1,4,16")
    unknown = [m for m in cfg.modes if m not in MODES] + [t for t in cfg.transports if t not in TRANSPORTS]
    if unknown:
        raise AdvisorError(f"unknown mode or transport: {', '.join(unknown)}",
                           f"modes: {', '.join(MODES)}; transports: {', '.join(TRANSPORTS)}")
    if cfg.duration_s is not None and not 0 < cfg.duration_s <= 3600:
        raise AdvisorError(f"--duration must be in (0, 3600] seconds, not {cfg.duration_s}", "for example --duration 5")
    if cfg.requests is not None and not 1 <= cfg.requests <= MAX_REQUESTS_PER_ARM:
        raise AdvisorError(f"--requests must be between 1 and {MAX_REQUESTS_PER_ARM:,}", "for example --requests 10000")
    if not 0 <= cfg.warmup_s <= 600:
        raise AdvisorError("--warmup must be between 0 and 600 seconds", "for example --warmup 1")
    if cfg.local_pgbouncer and cfg.pgbouncer_dsn:
        raise AdvisorError("--local-pgbouncer and --pgbouncer-dsn measure two different PgBouncers",
                           "give one of them")
    if cfg.pgbouncer_pool_size is not None and not 1 <= cfg.pgbouncer_pool_size <= MAX_CONCURRENCY:
        raise AdvisorError(f"--pgbouncer-pool-size must be between 1 and {MAX_CONCURRENCY}", "for example 8")
    if not cfg.pgbouncer_pool_modes or any(m not in POOL_MODES for m in cfg.pgbouncer_pool_modes):
        raise AdvisorError(f"unknown PgBouncer pool mode in {', '.join(cfg.pgbouncer_pool_modes) or 'nothing'}",
                           f"give {', '.join(POOL_MODES)} or one of them")
    if cfg.query is not None:
        from advisor.db.explain import classify

        verdict = classify(cfg.query)
        if verdict.kind != "read":
            why = verdict.reason or "it changes data"
            raise AdvisorError(f"--query must be one read-only SELECT; refused: {why}",
                               "give a SELECT (the benchmark runs it many times), or omit --query for the built-in lookup")


def run_pool_bench(cfg: PoolBenchConfig, step: Step | None = None, warn: Step | None = None) -> PoolBenchResult:
    """Measure every arm of ``cfg``; the temporary schema (if any) is dropped before returning.

    When this role may not turn statement logging off, ``warn`` (else ``step``) gets a warning with the
    number of statements the server will log, before the first arm; it is in the notes too."""
    step = step or (lambda text: None)
    warn = warn or step
    _check_config(cfg)
    pgbouncer = find_pgbouncer() if cfg.local_pgbouncer else None  # missing: say so before anything runs
    notes: list[str] = []
    setup, dsn, logging = quiet_session(cfg.dsn, notes)  # dsn: cfg.dsn with logging off where the role may
    params = conninfo_params(dsn)
    schema = None
    try:
        with setup:
            server = _server_facts(setup, notes)
            _check_capacity(cfg, server)
            if cfg.query is None and not server.read_only:
                schema = new_schema_name()
            workload, sql_text, param = _workload(cfg, setup, server, schema, notes, step)
            if workload["kind"] != "table":
                schema = None
        plan = _plan(cfg, params, server, notes)
        bouncer = None
        if pgbouncer is not None and any(info is None for _, _, info in plan):
            bouncer = _local_bouncer(cfg, pgbouncer, params, server, logging, notes)
        if logging.left_on:
            warning = _logging_warning(cfg, logging, plan, _bench_conninfo(params, cfg.request_timeout_s), sql_text,
                                       param)
            warn(warning)
            notes.append(warning)
        arms = _run_arms(cfg, plan, params, TAG + sql_text, param, step, bouncer)
    finally:
        if schema is not None:
            step(f"dropping {schema}")
            if (failed := drop_schema(dsn, schema)) is not None:
                notes.append(failed)

    cores = host_cores()
    local = _is_local(params)
    if local:
        notes.append(f"client and server run on the same host and share its {cores} core(s): the client's threads "
                     "(Python, one GIL) compete with the server's backends, so these figures hold for this host only")
    else:
        notes.append(f"the client ran on {cores} core(s); the server's host is elsewhere and its cores are unknown: "
                     "network latency is part of every figure")
    from advisor.workload.fingerprint import mask_literals

    shown = cfg.query.strip() if cfg.query is not None else sql_text.replace("%s", "$1")
    verdict = _verdict(arms, server, cfg)
    if bouncer is not None or cfg.pgbouncer_dsn:
        verdict["pgbouncer"] = _pgbouncer_verdict(arms, cfg, bouncer)
        verdict["summary"] += verdict["pgbouncer"]["summary"]
    return PoolBenchResult(
        dsn=redact_dsn(cfg.dsn), host_cores=cores, server_local=local, server_version_num=server.version_num,
        max_connections=server.max_connections, reserved_connections=server.reserved, query=mask_literals(shown),
        workload=workload,
        settings={"concurrency": list(cfg.concurrency), "duration_s": _duration(cfg), "requests": cfg.requests,
                  "warmup_s": cfg.warmup_s, "modes": list(dict.fromkeys(m for m, _, _ in plan)),
                  "transports": list(cfg.transports), "request_timeout_s": cfg.request_timeout_s,
                  "pgbouncer": None if bouncer is None else {
                      "local": True, "version": ".".join(map(str, bouncer.version)), "pool_size": bouncer.pool_size,
                      "pool_modes": list(cfg.pgbouncer_pool_modes),
                      "max_client_conn": max_client_conn(bouncer.max_clients)}},
        arms=tuple(arms), verdict=verdict, notes=tuple(scrub_secrets(n, cfg.dsn) for n in notes),
    )


def _check_capacity(cfg: PoolBenchConfig, server: _Server) -> None:
    usable = server.max_connections - server.reserved
    needed = max(cfg.concurrency) + 1  # + the monitor
    if needed + server.backends > usable:
        raise AdvisorError(
            f"concurrency {max(cfg.concurrency)} needs {needed} connections; the server allows {usable} "
            f"(max_connections {server.max_connections} - {server.reserved} reserved) and {server.backends} are in use",
            "lower --concurrency, or raise max_connections")


def _workload(cfg: PoolBenchConfig, setup: psycopg.Connection, server: _Server, schema: str | None,
              notes: list[str], step: Step) -> tuple[dict, str, Callable[[random.Random], tuple | None]]:
    """The workload's description, its SQL and its parameter maker; creates the table in ``schema`` if given."""
    select1 = ({"kind": "select1", "schema": None, "rows": None}, "SELECT 1", lambda rng: None)
    if cfg.query is not None:
        return {"kind": "query", "schema": None, "rows": None}, cfg.query.strip(), lambda rng: None
    if schema is None:
        notes.append("the target is read-only (transaction_read_only on, or a standby): "
                     "the benchmark ran SELECT 1 instead of a point lookup on its own table")
        return select1
    step(f"creating {schema}.accounts ({TABLE_ROWS:,} rows)")
    try:
        _create_table(setup, schema)
    except (pg_errors.InsufficientPrivilege, pg_errors.ReadOnlySqlTransaction) as err:
        notes.append(f"cannot create a table here ({first_line(err)}): the target is read-only for this role, "
                     "so the benchmark ran SELECT 1 instead of a point lookup")
        return select1
    return ({"kind": "table", "schema": schema, "rows": TABLE_ROWS},
            f"SELECT balance FROM {schema}.accounts WHERE id = %s", lambda rng: (rng.randint(1, TABLE_ROWS),))


# --- statement logging the role may not turn off ----------------------------------------------

OPENING_MODES = ("new_connection", "sqlalchemy_nullpool", "pgbouncer")  # a new connection per request
CALIBRATION_REQUESTS = 20


def _logging_warning(cfg: PoolBenchConfig, logging: Logging, plan: list[tuple[str, str, str | None]], direct: str,
                     sql_text: str, param: Callable[[random.Random], tuple | None]) -> str:
    """What the server will log of this run, and how to avoid it: exact with --requests, else estimated
    from requests timed here."""
    arms = len(plan) * len(cfg.concurrency)
    per_request = {mode: 2 if mode == "psycopg_pool_checked" else 1 for mode, _, _ in plan}  # + the health check
    if cfg.requests is not None:
        runs = 2 if cfg.warmup_s > 0 else 1  # the warm-up sends at most as many as the window
        total = sum(per_request[m] for m, _, _ in plan) * len(cfg.concurrency) * cfg.requests * runs
        how = (f"{arms} arms × {cfg.requests:,} requests" + (" and as many warm-up requests" if runs == 2 else "")
               + ("; 2 statements per request with a health check" if "psycopg_pool_checked" in per_request else ""))
        amount = f"up to {total:,}"
    else:
        connect_s, request_s = _calibrate(direct, sql_text, param)
        seconds = _duration(cfg) + cfg.warmup_s
        total = sum(round(seconds * min(c, host_cores()) * per_request[m]
                          / (request_s + (connect_s if m in OPENING_MODES else 0.0)))
                    for m, _, _ in plan for c in cfg.concurrency)
        how = (f"an upper estimate: {arms} arms × {seconds:g} s, each client at the {request_s * 1000:.2f} ms a "
               f"request took here ({connect_s * 1000:.1f} ms more with a new connection); --requests makes it exact")
        amount = f"up to about {total:,}"
    which = "every one" if logging.logs_all else f"those slower than {logging.threshold_ms:,} ms"
    return (f"statement logging stays on for this role's sessions ({logging.describe()}): only a superuser, or a "
            f"role granted SET on these parameters, may turn it off. The server will log {which} of the {amount} "
            f"statements the benchmark will send ({how}), each with one or more lines, plus up to 10 a second from "
            f"its backend monitor. To avoid it: run as a superuser, {logging.grant()} (PostgreSQL 15+), "
            "or give a smaller --requests.")


def _calibrate(conninfo: str, sql_text: str, param: Callable[[random.Random], tuple | None]) -> tuple[float, float]:
    """Seconds to open one connection and the median seconds of one request on it."""
    rng = random.Random(1)
    t0 = time.perf_counter()
    with bench_connect(conninfo) as conn:
        connect_s = time.perf_counter() - t0
        times = []
        for _ in range(CALIBRATION_REQUESTS):
            t0 = time.perf_counter()
            conn.execute(sql_text, param(rng)).fetchall()
            times.append(time.perf_counter() - t0)
    return connect_s, statistics.median(times)


def _duration(cfg: PoolBenchConfig) -> float:
    if cfg.duration_s is not None:
        return cfg.duration_s
    return REQUESTS_TIME_CAP_S if cfg.requests is not None else 5.0


def _transports(cfg: PoolBenchConfig, params: dict[str, str], server: _Server, notes: list[str]) -> list[tuple[str, str]]:
    """(label, conninfo) per transport to measure; the Unix socket only when it reaches the same server."""
    out: list[tuple[str, str]] = []
    label = _tcp_label(params)
    if "tcp" in cfg.transports or label == "unix":
        out.append((label, _bench_conninfo(params, cfg.request_timeout_s)))
    if "unix" not in cfg.transports or label == "unix":
        return out
    host = params.get("host") or ""
    if not _is_local(params) or not host:
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
        info = _bench_conninfo(candidate, cfg.request_timeout_s)
        try:
            with bench_connect(info, connect_timeout=3) as conn:
                same = tuple(conn.execute(_IDENTITY).fetchone()) == (server.port, server.started)
        except psycopg.Error as err:
            reasons.append(f"{directory}: {(str(err).strip().splitlines() or [''])[-1].strip()}")
            continue
        if same:
            out.append(("unix", info))
            return out
        reasons.append(f"{directory}: another server answers there")
    notes.append("Unix socket not measured (not connectable from here): " + "; ".join(reasons))
    return out


def _plan(cfg: PoolBenchConfig, params: dict[str, str], server: _Server,
          notes: list[str]) -> list[tuple[str, str, str | None]]:
    """(mode, transport, conninfo) of every arm at one concurrency level; conninfo None: a local PgBouncer's,
    known once it runs (its transport names its pooling mode: pgbouncer-transaction, pgbouncer-session)."""
    plan: list[tuple[str, str, str | None]] = []
    for label, info in _transports(cfg, params, server, notes):
        plan += [(m, label, info) for m in cfg.modes if m not in PGBOUNCER_MODES]
    bouncer_modes = [m for m in cfg.modes if m in PGBOUNCER_MODES]
    if bouncer_modes and cfg.local_pgbouncer:
        plan += [(m, f"pgbouncer-{pool_mode}", None) for pool_mode in cfg.pgbouncer_pool_modes for m in bouncer_modes]
    elif bouncer_modes and cfg.pgbouncer_dsn:
        bparams = conninfo_params(cfg.pgbouncer_dsn)
        info = _bench_conninfo(bparams, cfg.request_timeout_s, server_options=False)
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


@dataclass(frozen=True, slots=True)
class _Bouncer:
    """How to start each local PgBouncer arm's own throwaway PgBouncer (one per arm, so that the backends an arm
    saw are its own: PgBouncer keeps idle server connections for minutes)."""

    binary: Path
    version: tuple[int, int, int]
    target: dict[str, str]
    user: str
    dbname: str
    pool_size: int
    max_clients: int
    settings: dict[str, str]  # run on each server connection (connect_query)

    def launch(self, pool_mode: str) -> LocalPgBouncer:
        return LocalPgBouncer(self.target, user=self.user, dbname=self.dbname, pool_mode=pool_mode,
                              pool_size=self.pool_size, max_clients=self.max_clients, session_settings=self.settings,
                              binary=self.binary)


def default_pgbouncer_pool_size(server_local: bool, cores: int) -> int:
    """Two server connections per core when the server is on this host (PgBouncer's and PostgreSQL's rule of
    thumb for a CPU-bound load), else PgBouncer's own default_pool_size, 20."""
    return max(2, 2 * cores) if server_local else 20


def _local_bouncer(cfg: PoolBenchConfig, binary: Path, params: dict[str, str], server: _Server, logging: Logging,
                   notes: list[str]) -> _Bouncer:
    """The local PgBouncer every PgBouncer arm starts, and a note on what it is."""
    version = pgbouncer_version(binary)
    local, cores = _is_local(params), host_cores()
    size = cfg.pgbouncer_pool_size or default_pgbouncer_pool_size(local, cores)
    why = ("as given" if cfg.pgbouncer_pool_size else
           "2 per core of this host, which the server shares" if local else "PgBouncer's default")
    settings = {"application_name": APPLICATION_NAME, **_session_settings(cfg.request_timeout_s), **logging.quieted}
    notes.append(
        f"local PgBouncer {'.'.join(map(str, version))} ({binary}): one started for each PgBouncer arm on a loopback "
        f"port and stopped after it, pool size {size} ({why}) per pooling mode, up to {max(cfg.concurrency)} clients; "
        "it logs in with the DSN's user and password from an auth_file (mode 0600) in its own directory, removed "
        "after. Its server connections are named advisor_bench in their startup packet, then run one tagged "
        "connect_query with the benchmark's timeouts, read-only default and statement logging off (what direct "
        "sessions send as startup options); no server_reset_query runs.")
    return _Bouncer(binary, version, params, server.user, server.dbname, size, max(cfg.concurrency), settings)


def _run_arms(cfg: PoolBenchConfig, plan: list[tuple[str, str, str | None]], params: dict[str, str], sql_text: str,
              param: Callable[[random.Random], tuple | None], step: Step, bouncer: _Bouncer | None) -> list[Arm]:
    duration = _duration(cfg)
    slack = cfg.request_timeout_s + 5.0
    arms: list[Arm] = []
    server_arms = [info for mode, _, info in plan if mode not in PGBOUNCER_MODES]
    monitor = _Monitor(server_arms[0] if server_arms else _bench_conninfo(params, cfg.request_timeout_s))
    try:
        for concurrency in cfg.concurrency:
            for mode, transport, info in plan:
                step(f"{mode} over {transport}, concurrency {concurrency}")
                if info is not None:
                    arms.append(_run_arm(mode, transport, info, concurrency, sql_text, param, duration, cfg.requests,
                                         cfg, monitor, slack))
                else:
                    arms.append(_run_local_pgbouncer_arm(bouncer, mode, transport, concurrency, sql_text, param,
                                                         duration, cfg, monitor, slack))
    finally:
        monitor.close()
    arms.sort(key=lambda a: (a.mode in PGBOUNCER_MODES, a.transport, a.concurrency, MODES.index(a.mode)))
    return arms


def _run_local_pgbouncer_arm(bouncer: _Bouncer, mode: str, transport: str, concurrency: int, sql_text: str,
                             param: Callable[[random.Random], tuple | None], duration: float, cfg: PoolBenchConfig,
                             monitor: _Monitor, slack: float) -> Arm:
    pool_mode = transport.removeprefix("pgbouncer-")
    # In session mode a client connection holds its server connection until it closes: a client pool larger than
    # PgBouncer's would leave connections waiting for ever, so it gets PgBouncer's size, as a deployment would.
    capped = pool_mode == "session" and mode != "pgbouncer" and concurrency > bouncer.pool_size
    baseline = monitor.backends()
    with bouncer.launch(pool_mode) as pgb:
        info = pgb.conninfo(application_name=APPLICATION_NAME, connect_timeout=str(max(2, int(cfg.request_timeout_s))))
        arm = _run_arm(mode, transport, info, concurrency, sql_text, param, duration, cfg.requests, cfg, monitor,
                       slack, pool_size=bouncer.pool_size if capped else None, secret=info)
    monitor.settle(baseline)  # PgBouncer's server connections are gone before the next arm counts its own
    if capped:
        note = f"client pool of {bouncer.pool_size} (PgBouncer's pool size in session mode) for {concurrency} threads"
        arm = replace(arm, note=f"{arm.note}; {note}" if arm.note else note)
    return arm


def _run_arm(mode: str, transport: str, info: str, concurrency: int, sql_text: str,
             param: Callable[[random.Random], tuple | None], duration: float, requests: int | None,
             cfg: PoolBenchConfig, monitor: _Monitor, slack: float, pool_size: int | None = None,
             secret: str | None = None) -> Arm:
    connects = _ConnectTimes()
    client = _Client(mode, info, concurrency, sql_text, cfg.request_timeout_s, connects, pool_size)
    scrub = scrubber(cfg.dsn, cfg.pgbouncer_dsn, secret)

    def empty(note: str) -> Arm:
        return Arm(mode, transport, concurrency, 0, 0.0, 0.0, None, None, None, None, None, None, None, 0, 0, 0,
                   None, None, scrub(note))

    try:
        try:
            client.open()
        except Exception as err:
            return empty(f"could not open the clients: {type(err).__name__}: {first_line(err)}")
        if cfg.warmup_s > 0:
            run_phase(client.request, concurrency, cfg.warmup_s, requests, param, slack)  # at most as many
        connects.times.clear()  # only connections opened in the measured window count
        monitor.start(cap_s=duration + slack)
        try:
            phase = run_phase(client.request, concurrency, duration, requests, param, slack)
        finally:
            peaks = monitor.stop()
        opened = list(connects.times)
    finally:
        try:
            client.close()
        except Exception:  # a pool that cannot close cleanly must not lose the measurement
            pass
    c_mean, c_p50, c_p95 = _connect_stats(opened)
    n = len(phase.latencies)
    note_parts = []
    if phase.first_error:
        note_parts.append(f"first failure: {phase.first_error}")
    if phase.stuck:
        note_parts.append(f"{phase.stuck} thread(s) still waiting on a request when the arm ended")
    if requests is not None and n + phase.errors + phase.timeouts < requests and not phase.stuck:
        note_parts.append(f"stopped by the {duration:g} s time cap before {requests:,} requests")
    if peaks is None:
        note_parts.append("the backend monitor failed")
    note = scrub("; ".join(note_parts)) if note_parts else None
    return Arm(
        mode=mode, transport=transport, concurrency=concurrency, **phase.figures(),
        connect_ms=rounded(c_mean), connect_p50_ms=rounded(c_p50),
        connect_p95_ms=rounded(c_p95), connections_opened=len(opened),
        errors=phase.errors, timeouts=phase.timeouts,
        peak_backends=None if peaks is None else peaks[0], peak_server_backends=None if peaks is None else peaks[1],
        note=note,
    )


# --- the verdict ---------------------------------------------------------------------------


def _verdict(arms: Sequence[Arm], server: _Server, cfg: PoolBenchConfig) -> dict:
    by = {(a.mode, a.transport, a.concurrency): a for a in arms}
    transports = list(dict.fromkeys(a.transport for a in arms if a.mode not in PGBOUNCER_MODES))
    levels = sorted(set(cfg.concurrency))
    speedups, saturation, summary = [], [], []

    def pooled_at(transport: str, c: int) -> list[Arm]:
        return [a for a in arms if a.mode in POOLED_MODES and a.concurrency == c and a.requests > 0
                and (a.transport == transport or a.mode in PGBOUNCER_MODES)]

    for transport in transports:
        for c in levels:
            base = by.get(("new_connection", transport, c))
            pooled = pooled_at(transport, c)
            if base is None or not pooled:
                continue
            best = max(pooled, key=lambda a: a.ops_per_s)
            ratio = round(best.ops_per_s / base.ops_per_s, 2) if base.ops_per_s > 0 else None
            speedups.append({"transport": transport, "concurrency": c, "best_mode": best.mode,
                             "best_ops_per_s": best.ops_per_s, "new_connection_ops_per_s": base.ops_per_s,
                             "speedup": ratio})
            if ratio is not None:
                summary.append(f"{transport}, concurrency {c}: {best.mode} served {ratio:g}x the requests per second "
                               f"of a new connection per request ({best.ops_per_s:,.0f} vs {base.ops_per_s:,.0f} ops/s).")
            else:
                summary.append(f"{transport}, concurrency {c}: new_connection completed no request; "
                               f"{best.mode} served {best.ops_per_s:,.0f} ops/s.")

    for transport in transports:  # PgBouncer's server pool has a size of its own: not in this series
        top = [a for a in pooled_at(transport, levels[-1]) if a.mode not in PGBOUNCER_MODES]
        if not top:
            continue
        best = max(top, key=lambda a: a.ops_per_s)
        mode, arm_transport = best.mode, best.transport  # pgbouncer keeps its own endpoint's label
        series = [(c, by[(mode, arm_transport, c)].ops_per_s) for c in levels if (mode, arm_transport, c) in by]
        size = None
        for (c0, ops0), (_, ops1) in itertools.pairwise(series):
            if ops1 < ops0 * (1 + SATURATION_GAIN):
                size = c0
                break
        saturation.append({"transport": transport, "mode": mode, "series": [list(p) for p in series], "pool_size": size})
        if len(series) < 2:
            summary.append(f"{transport}: one concurrency level measured, so where throughput stops rising is unknown.")
        elif size is None:
            summary.append(f"{transport}: {mode} throughput still rose by 10 % or more up to concurrency {series[-1][0]}, "
                           "the highest measured; larger pools were not measured.")
        else:
            nxt = next(ops for c, ops in series if c > size)
            cur = dict(series)[size]
            summary.append(f"{transport}: {mode} throughput stopped rising at pool size {size} "
                           f"({cur:,.0f} ops/s; the next level gave {nxt:,.0f}, less than 10 % more).")

    usable = server.max_connections - server.reserved
    top_arms = [a for a in arms if a.concurrency == levels[-1] and a.peak_server_backends is not None]
    headroom = None
    if top_arms:
        peak = max(a.peak_server_backends for a in top_arms)
        headroom = {"concurrency": levels[-1], "peak_server_backends": peak, "max_connections": server.max_connections,
                    "usable": usable, "headroom": usable - peak}
        summary.append(f"At concurrency {levels[-1]} the server peaked at {peak} client backends (all databases, the "
                       f"monitor not counted) of {usable} usable (max_connections {server.max_connections} - "
                       f"{server.reserved} reserved): {usable - peak} left.")
    return {"speedups": speedups, "saturation": saturation, "headroom": headroom, "summary": summary}


def _first_failure(arm: Arm) -> str | None:
    """The first error an arm met, from its note."""
    for part in (arm.note or "").split("; "):
        if part.startswith("first failure: "):
            return part.removeprefix("first failure: ")
    return None


def _pgbouncer_verdict(arms: Sequence[Arm], cfg: PoolBenchConfig, bouncer: _Bouncer | None) -> dict:
    """What PgBouncer bought at the highest concurrency (backends used, throughput, connect time), what psycopg's
    prepared statements did through transaction pooling, and the client settings that go with PgBouncer."""
    from advisor.words import plural

    top = max(cfg.concurrency)
    by = {(a.mode, a.transport, a.concurrency): a for a in arms}
    direct = [a.transport for a in arms if a.mode == "new_connection"]
    base = by.get(("new_connection", "tcp" if "tcp" in direct else (direct or [None])[0], top))
    size = bouncer.pool_size if bouncer else None
    served, summary = [], []
    for transport in dict.fromkeys(a.transport for a in arms if a.mode in PGBOUNCER_MODES):
        pool_mode = transport.removeprefix("pgbouncer-") if bouncer else None
        ran = [by[k] for k in (("pgbouncer", transport, top), ("pgbouncer_pool", transport, top))
               if k in by and by[k].requests > 0]
        if not ran:
            continue
        best = max(ran, key=lambda a: a.ops_per_s)
        opened = by.get(("pgbouncer", transport, top))
        served.append({
            "transport": transport, "pool_mode": pool_mode, "pool_size": size, "concurrency": top,
            "best_mode": best.mode, "ops_per_s": best.ops_per_s, "peak_backends": best.peak_backends,
            "connect_p50_ms": opened.connect_p50_ms if opened else None,
            "new_connection_ops_per_s": base.ops_per_s if base else None,
            "new_connection_peak_backends": base.peak_backends if base else None,
            "new_connection_connect_p50_ms": base.connect_p50_ms if base else None,
        })
        who = f"PgBouncer, {pool_mode} pooling, pool size {size}" if bouncer else "your PgBouncer"
        backends = "?" if best.peak_backends is None else best.peak_backends
        line = (f"{who}: {plural(top, 'client')} served by {backends} backends at {best.ops_per_s:,.0f} ops/s "
                f"({best.mode})")
        if base is not None and base.elapsed_s > 0:
            line += (f"; a new connection per request straight to the server: {base.ops_per_s:,.0f} ops/s, "
                     f"{base.connections_opened / base.elapsed_s:,.0f} backends started a second, "
                     f"{'?' if base.peak_backends is None else base.peak_backends} at once")
        summary.append(line + ".")
        if opened and base and opened.connect_p50_ms and base.connect_p50_ms:
            summary.append(f"{who}: a new connection to PgBouncer opened in {opened.connect_p50_ms:.2f} ms (median), "
                           f"one straight to the server in {base.connect_p50_ms:.2f} ms.")
    prepared = _prepared_verdict(arms, bouncer)
    summary += prepared.pop("summary") if prepared else []
    advice = _pgbouncer_advice(arms, bouncer)
    return {"served": served, "prepared_statements": prepared, "advice": advice, "summary": summary + advice}


def _prepared_verdict(arms: Sequence[Arm], bouncer: _Bouncer | None) -> dict | None:
    """psycopg's default prepare_threshold through (transaction) pooling against prepare_threshold=None."""
    transport = "pgbouncer-transaction" if bouncer else None
    tried = [a for a in arms if a.mode == "pgbouncer_pool_prepared" and (transport is None or a.transport == transport)]
    if not tried:
        return None
    fixed = [a for a in arms if a.mode == "pgbouncer_pool" and a.transport in {a.transport for a in tried}]
    version = ".".join(map(str, bouncer.version)) if bouncer else None
    supported = bouncer.version >= PREPARED_SINCE if bouncer else None
    failed = sum(a.errors for a in tried)
    sent = sum(a.requests + a.errors + a.timeouts for a in tried)
    first = next((f for a in tried if (f := _first_failure(a))), None)
    out = {
        "pool_mode": "transaction" if bouncer else None, "pgbouncer_version": version,
        "max_prepared_statements": 200 if supported else None,
        "default_prepare_threshold": {"requests": sent, "errors": failed, "first_error": first},
        "prepare_threshold_none": {"requests": sum(a.requests + a.errors + a.timeouts for a in fixed),
                                   "errors": sum(a.errors for a in fixed),
                                   "ops_per_s": max((a.ops_per_s for a in fixed), default=None)},
    }
    where = f"PgBouncer {version} in transaction mode" if bouncer else "your PgBouncer"
    fix = out["prepare_threshold_none"]
    measured = (f" (measured: {fix['errors']} errors in {fix['requests']:,} requests, {fix['ops_per_s']:,.0f} ops/s)"
                if fixed and fix["ops_per_s"] is not None else "")
    upgrade = "or PgBouncer 1.21+ with max_prepared_statements set (e.g. 100)"
    if failed:
        out["summary"] = [
            f"prepared statements: psycopg 3 with its default prepare_threshold (it prepares a query after 5 runs) "
            f"failed {failed:,} of {sent:,} requests through {where} (first: {first}): PgBouncer before 1.21 does not "
            f"follow protocol-level prepared statements across the server connections it lends. Fix: connect with "
            f"prepare_threshold=None{measured}, {upgrade}."]
    elif supported:
        out["summary"] = [f"prepared statements: {where} with max_prepared_statements = 200 kept psycopg's prepared "
                          f"statements: no error in {sent:,} requests with the default prepare_threshold."]
    else:
        out["summary"] = [
            f"prepared statements: psycopg's default prepare_threshold raised no error through {where} in {sent:,} "
            "requests (each client kept to one server connection at this concurrency); it fails once clients share "
            f"server connections in transaction mode before PgBouncer 1.21: use prepare_threshold=None, {upgrade}."]
    return out


def _pgbouncer_advice(arms: Sequence[Arm], bouncer: _Bouncer | None) -> list[str]:
    """Client settings for an application behind PgBouncer, where the arms make them matter."""
    advice = ["behind PgBouncer let PgBouncer pool: SQLAlchemy create_engine(..., poolclass=NullPool) opens a "
              "connection to PgBouncer per request (the pgbouncer arm measures just that); a small client pool "
              "(pgbouncer_pool) also saves the connect round trip to PgBouncer."]
    if any(a.mode in PGBOUNCER_MODES and a.transport != "pgbouncer-session" for a in arms):
        advice.append(
            "in transaction mode: no client-side reset (no DISCARD ALL or RESET ALL in a psycopg_pool reset= "
            "callback or a SQLAlchemy checkin event): it runs on a server connection PgBouncer lends to others, costs "
            "a round trip per checkout and, from 1.21, drops the statements PgBouncer prepared; session state (SET, "
            "temporary tables, advisory locks, LISTEN) does not outlive a transaction.")
    return advice


# --- rendering ---------------------------------------------------------------------------


def pool_bench_document(result: PoolBenchResult) -> dict:
    """The versioned JSON document (see the module docstring)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "bench_pool",
        "tool_version": __version__,
        "dsn": result.dsn,
        "host_cores": result.host_cores,
        "server_local": result.server_local,
        "server_version_num": result.server_version_num,
        "max_connections": result.max_connections,
        "reserved_connections": result.reserved_connections,
        "query": result.query,
        "workload": result.workload,
        "settings": result.settings,
        "arms": [asdict(a) for a in result.arms],
        "verdict": result.verdict,
        "notes": list(result.notes),
    }


def pool_bench_text(result: PoolBenchResult):
    """A Rich renderable: the arms as a table, then the verdict and notes in plain words."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    def num(x: float | None, fmt: str = ",.2f") -> str:
        return "-" if x is None else format(x, fmt)

    def table(title: str, columns: tuple[str, ...]):
        t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1),
                  collapse_padding=True, show_edge=False)
        for name in ("mode", "via", "conc") + columns:
            t.add_column(name, justify="left" if name in ("mode", "via") else "right", no_wrap=True)
        return t

    throughput = table("throughput", ("requests", "ops/s", "connect ms", "err/t.o.", "peak"))
    latency = table("latency of a request, ms", ("p50", "p95", "p99", "max"))
    for a in result.arms:
        arm = (a.mode, a.transport, str(a.concurrency))
        connect = "-" if a.connect_ms is None else f"{a.connect_ms:.2f}/{num(a.connect_p95_ms)}"
        throughput.add_row(*arm, f"{a.requests:,}", num(a.ops_per_s, ",.0f"), connect, f"{a.errors}/{a.timeouts}",
                           "-" if a.peak_backends is None else str(a.peak_backends))
        latency.add_row(*arm, num(a.p50_ms), num(a.p95_ms), num(a.p99_ms), num(a.max_ms))
    legend = Text("connect ms: mean/p95 to open one connection during the window (- none opened); err/t.o.: failed "
                  "and timed-out requests; peak: most backends of this database at once (sampled every 100 ms)",
                  style="dim")
    major, minor = divmod(result.server_version_num, 10000)
    head = Text(f"server: PostgreSQL {major}.{minor} ({result.dsn}), max_connections {result.max_connections}; "
                f"host cores: {result.host_cores}; query: {result.query}")
    lines = [head, throughput, legend, latency, Text("verdict:", style="bold")]
    lines += [Text(f"  {s}") for s in result.verdict["summary"]]
    lines += [Text(f"  {a.mode}/{a.transport}/{a.concurrency}: {a.note}") for a in result.arms if a.note]
    if result.notes:
        lines.append(Text("notes:", style="bold"))
        lines += [Text(f"  {n}") for n in result.notes]
    return Group(*lines)
