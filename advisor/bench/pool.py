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

JSON document (``schema_version`` 1; built by ``advisor.report.bench``)::

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

import random
import statistics
import time
from collections.abc import Callable

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql

from advisor.bench.load import (
    MAX_REQUESTS_PER_ARM,
    Step,
    bench_connect,
    conninfo_params,
    create_schema,
    drop_schema,
    first_line,
    host_cores,
    new_schema_name,
)
from advisor.bench.pgbouncer import POOL_MODES, find_pgbouncer, max_client_conn
from advisor.bench.pool_arms import local_bouncer, run_arms
from advisor.bench.pool_model import (
    MODES,
    PGBOUNCER_MODES,
    POOLED_MODES,
    TRANSPORTS,
    Arm,
    PoolBenchConfig,
    PoolBenchResult,
)
from advisor.bench.pool_server import Plan, Server, bench_conninfo, is_local, plan_arms, server_facts
from advisor.bench.pool_verdict import pool_verdict
from advisor.bench.quiet import Logging, quiet_session
from advisor.db.connect import TAG, redact_dsn, scrub_secrets
from advisor.errors import AdvisorError

__all__ = [
    "MODES", "PGBOUNCER_MODES", "POOLED_MODES", "TRANSPORTS", "Arm", "PoolBenchConfig", "PoolBenchResult",
    "run_pool_bench",
]

TABLE_ROWS = 10_000
MAX_CONCURRENCY = 1000


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
            server = server_facts(setup, notes)
            _check_capacity(cfg, server)
            if cfg.query is None and not server.read_only:
                schema = new_schema_name()
            workload, sql_text, param = _workload(cfg, setup, server, schema, notes, step)
            if workload["kind"] != "table":
                schema = None
        plan = plan_arms(cfg, params, server, notes)
        bouncer = None
        if pgbouncer is not None and any(info is None for _, _, info in plan):
            bouncer = local_bouncer(cfg, pgbouncer, params, server, logging, notes)
        if logging.left_on:
            warning = _logging_warning(cfg, logging, plan, bench_conninfo(params, cfg.request_timeout_s), sql_text,
                                       param)
            warn(warning)
            notes.append(warning)
        arms = run_arms(cfg, plan, params, TAG + sql_text, param, step, bouncer)
    finally:
        if schema is not None:
            step(f"dropping {schema}")
            if (failed := drop_schema(dsn, schema)) is not None:
                notes.append(failed)

    cores = host_cores()
    local = is_local(params)
    if local:
        notes.append(f"client and server run on the same host and share its {cores} core(s): the client's threads "
                     "(Python, one GIL) compete with the server's backends, so these figures hold for this host only")
    else:
        notes.append(f"the client ran on {cores} core(s); the server's host is elsewhere and its cores are unknown: "
                     "network latency is part of every figure")
    from advisor.workload.fingerprint import mask_literals

    shown = cfg.query.strip() if cfg.query is not None else sql_text.replace("%s", "$1")
    verdict = pool_verdict(arms, server, cfg, bouncer)
    return PoolBenchResult(
        dsn=redact_dsn(cfg.dsn), host_cores=cores, server_local=local, server_version_num=server.version_num,
        max_connections=server.max_connections, reserved_connections=server.reserved, query=mask_literals(shown),
        workload=workload,
        settings={"concurrency": list(cfg.concurrency), "duration_s": cfg.window_s, "requests": cfg.requests,
                  "warmup_s": cfg.warmup_s, "modes": list(dict.fromkeys(m for m, _, _ in plan)),
                  "transports": list(cfg.transports), "request_timeout_s": cfg.request_timeout_s,
                  "pgbouncer": None if bouncer is None else {
                      "local": True, "version": ".".join(map(str, bouncer.version)), "pool_size": bouncer.pool_size,
                      "pool_modes": list(cfg.pgbouncer_pool_modes),
                      "max_client_conn": max_client_conn(bouncer.max_clients)}},
        arms=tuple(arms), verdict=verdict, notes=tuple(scrub_secrets(n, cfg.dsn) for n in notes),
    )


def _check_capacity(cfg: PoolBenchConfig, server: Server) -> None:
    usable = server.max_connections - server.reserved
    needed = max(cfg.concurrency) + 1  # + the monitor
    if needed + server.backends > usable:
        raise AdvisorError(
            f"concurrency {max(cfg.concurrency)} needs {needed} connections; the server allows {usable} "
            f"(max_connections {server.max_connections} - {server.reserved} reserved) and {server.backends} are in use",
            "lower --concurrency, or raise max_connections")


def _workload(cfg: PoolBenchConfig, setup: psycopg.Connection, server: Server, schema: str | None,
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


def _create_table(conn: psycopg.Connection, schema: str) -> None:
    s = pg_sql.Identifier(schema)
    create_schema(
        conn, schema,
        pg_sql.SQL("CREATE TABLE {}.accounts (id int PRIMARY KEY, balance int NOT NULL, filler text NOT NULL)").format(s),
        pg_sql.SQL("INSERT INTO {}.accounts SELECT g, g % 1000, repeat('x', 84) FROM generate_series(1, {}) g")
        .format(s, pg_sql.Literal(TABLE_ROWS)),
        pg_sql.SQL("ANALYZE {}.accounts").format(s),
    )


# --- statement logging the role may not turn off ----------------------------------------------

OPENING_MODES = ("new_connection", "sqlalchemy_nullpool", "pgbouncer")  # a new connection per request
CALIBRATION_REQUESTS = 20


def _logging_warning(cfg: PoolBenchConfig, logging: Logging, plan: Plan, direct: str,
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
        seconds = cfg.window_s + cfg.warmup_s
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
