"""Real clients × real server settings × every log format, read back and checked against the server.

Each combination runs one real client (psycopg 3 with server-side binding, psycopg 3's
ClientCursor, pgbench simple and prepared, SQLAlchemy 2 ORM) in a session whose logging
settings travel in the startup packet, reads the lines the harness server wrote for it
(stderr, csvlog and jsonlog, as the nightly report does: a byte range of each file) with
scan_logs/build_workload, and compares every fingerprint with pg_stat_statements for the
client's own database, reset before the run.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import psycopg
import pytest
from helpers import advisor
from psycopg import sql
from sqlalchemy import ForeignKey, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.pool import NullPool

from advisor.db.embedded import find_binaries
from advisor.workload.fingerprint import fingerprint
from advisor.workload.sources import collect, read_logs

# Statement logging, set per session (the tests connect as a superuser).
LOGGING = {
    "min_duration_0": {"log_min_duration_statement": "0"},
    "log_statement_all": {"log_statement": "all", "log_duration": "on"},
    # Only statements over 10 ms are logged, every plan is: most executions leave only their plan.
    "plans_only": {"log_min_duration_statement": "10"},
}
EXPLAIN = {
    "off": {},
    "text": {"auto_explain.log_min_duration": "0", "auto_explain.log_analyze": "on", "auto_explain.log_format": "text"},
    "json": {"auto_explain.log_min_duration": "0", "auto_explain.log_analyze": "on", "auto_explain.log_format": "json"},
}
COMBINATIONS = [(logging, explain) for logging in LOGGING for explain in EXPLAIN
                if not (logging == "plans_only" and explain == "off")]  # nothing would be logged
PLANNED = frozenset({"select", "insert", "update", "delete"})  # statements auto_explain can log

# --- the clients -------------------------------------------------------------------

POINT = "SELECT id, name FROM items WHERE id = %s"
RANGE = "SELECT name\n  FROM items\n WHERE price > %s\n ORDER BY name LIMIT 3"
TOUCH = "UPDATE items SET price = price WHERE id = %s"
SLOW = "SELECT pg_sleep(0.012), count(*) FROM items WHERE id < %s"  # over the 10 ms threshold
FAILING = "SELECT 1 / (price - price) FROM items WHERE id = %s"  # fails while it runs: not an execution


def _psycopg_queries(conn_or_cursor) -> None:
    run = conn_or_cursor.execute
    for i in range(8):  # server-side binding: unprepared five times, then a named prepared statement
        run(POINT, (i + 1,)).fetchall()
    for price in (2, 5):
        run(RANGE, (price,)).fetchall()
    run(TOUCH, (3,))
    run(SLOW, (10,)).fetchall()


def _fail(conn_or_cursor) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn_or_cursor.execute(FAILING, (4,))


def psycopg_extended(dsn: str, app: str, options: str) -> None:
    with psycopg.connect(dsn, autocommit=True, application_name=app, options=options) as conn:
        _psycopg_queries(conn)
        _fail(conn)
        with conn.transaction():  # in a transaction the plan of a SELECT comes after the next parse
            _psycopg_queries(conn)


def psycopg_client_binding(dsn: str, app: str, options: str) -> None:
    with psycopg.connect(dsn, autocommit=True, application_name=app, options=options) as conn:
        cursor = psycopg.ClientCursor(conn)  # literals bound in the client: the simple protocol
        _psycopg_queries(cursor)
        _fail(cursor)


PGBENCH_TRANSACTIONS = 12


def _pgbench(mode: str):
    def run(dsn: str, app: str, options: str) -> None:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        env = {**os.environ, "PGOPTIONS": options, "PGAPPNAME": app, "PGHOST": info["host"],
               "PGPORT": str(info["port"]), "PGUSER": info["user"]}
        done = subprocess.run(
            [str(find_binaries() / "pgbench"), "-n", "-c", "1", "-t", str(PGBENCH_TRANSACTIONS), "-M", mode, info["dbname"]],
            env=env, check=True, capture_output=True, text=True, timeout=60)
        assert f"actually processed: {PGBENCH_TRANSACTIONS}/{PGBENCH_TRANSACTIONS}" in done.stdout
    return run


def sqlalchemy_orm(dsn: str, app: str, options: str) -> None:
    engine = create_engine(_sqlalchemy_url(dsn), poolclass=NullPool,
                           connect_args={"application_name": app, "options": options})
    try:
        with Session(engine) as session:
            customer = Customer(name="ada", orders=[Order(total=5), Order(total=7)])
            session.add(customer)
            session.commit()
            for c in session.scalars(select(Customer).where(Customer.name == "ada").order_by(Customer.id)):
                _ = [o.total for o in c.orders]  # the relationship load, one query per customer
            session.get(Order, customer.orders[0].id)
            session.execute(select(Order).where(Order.total > 6)).all()
            session.commit()
    finally:
        engine.dispose()


def _sqlalchemy_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    orders: Mapped[list[Order]] = relationship(back_populates="customer")


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    total: Mapped[int]
    customer: Mapped[Customer] = relationship(back_populates="orders")


def _setup_items(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric)")
        conn.execute("INSERT INTO items SELECT g, 'item ' || g, g % 10 FROM generate_series(1, 200) g")
        conn.execute("ANALYZE items")


def _setup_pgbench(dsn: str) -> None:
    subprocess.run([str(find_binaries() / "pgbench"), "-i", "-s", "1", "-q", dsn], check=True, capture_output=True, timeout=120)


def _setup_orm(dsn: str) -> None:
    engine = create_engine(_sqlalchemy_url(dsn))
    Base.metadata.create_all(engine)
    engine.dispose()


CLIENTS = {
    "psycopg_extended": (psycopg_extended, _setup_items),
    "psycopg_client_binding": (psycopg_client_binding, _setup_items),
    "pgbench_simple": (_pgbench("simple"), _setup_pgbench),
    "pgbench_prepared": (_pgbench("prepared"), _setup_pgbench),
    "sqlalchemy_orm": (sqlalchemy_orm, _setup_orm),
}

# --- the harness ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def client_dbs(embedded_cluster, pg_dsn):
    """One database per client, so pg_stat_statements can be read and reset per client."""
    dsns = {}
    with psycopg.connect(embedded_cluster.dsn(), autocommit=True) as conn:
        for name, (_, setup) in CLIENTS.items():
            db = f"rc_{name}"
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            dsns[name] = embedded_cluster.create_database(db)
            setup(dsns[name])
    return dsns


def _options(settings: dict[str, str]) -> str:
    return " ".join(f"-c {name}={value}" for name, value in settings.items())


def _log_files(cluster):
    return (cluster.stderr_log, cluster.csv_log, cluster.json_log)


def _line_start(path, offset: int) -> int:
    """``offset``, moved past a line the collector may have been writing when it was taken."""
    if offset == 0:
        return 0
    with open(path, "rb") as f:
        f.seek(offset - 1)
        if f.read(1) == b"\n":
            return offset
        f.readline()
        return f.tell()


def _wait_for(cluster, marker: str, timeout: float = 20.0) -> None:
    """The logging collector writes asynchronously: wait until every file shows the marker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(marker in path.read_text(errors="replace") for path in _log_files(cluster)):
            return
        time.sleep(0.05)
    pytest.fail(f"the server logs never showed {marker}")


def _server(pg_dsn: str, database: str) -> dict[str, list]:
    """pg_stat_statements' [calls, total execution time, statement type] per fingerprint, for one database.

    Top-level statements only: with ``pg_stat_statements.track = all`` (the harness's setting) the
    server also counts what runs inside a statement (the foreign-key checks of an INSERT), which no
    log line shows.
    """
    totals: dict[str, list] = {}
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT s.query, s.calls, s.total_exec_time FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s AND s.toplevel", (database,))
        for query, calls, total_ms in rows:
            fp = fingerprint(query)
            entry = totals.setdefault(fp.id, [0, 0.0, fp.statement_type])
            entry[0] += calls
            entry[1] += total_ms
    return totals


def _reset(pg_dsn: str, database: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset(0, oid, 0) FROM pg_database WHERE datname = %s", (database,))


def run_logged(cluster, pg_dsn, dsn: str, client, settings: dict[str, str]):
    """Run ``client`` with ``settings``; the workload each log file holds of it, and the server's counters."""
    database = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    app = f"rc-{uuid.uuid4().hex[:10]}"
    options = _options(settings)
    _reset(pg_dsn, database)
    starts = {path: path.stat().st_size for path in _log_files(cluster)}
    client(dsn, app, options)
    marker = f"end of {app}"
    with psycopg.connect(dsn, autocommit=True, application_name=app, options=options) as conn:
        conn.execute(f"SELECT '{marker}'").fetchall()  # a literal: the same text in every format
    _wait_for(cluster, marker)
    server = _server(pg_dsn, database)
    workloads = {}
    for path, start in starts.items():
        ranges = {str(path): (_line_start(path, start), None)}
        workloads[path.suffix] = collect(read_logs([str(path)], jobs=1, ranges=ranges))
    return app, workloads, server


def _expected_calls(client_name: str, server: dict[str, list], compared: set[str]) -> dict[str, int]:
    """The server's calls; but PostgreSQL 15's pg_stat_statements counts a utility statement run as a
    prepared statement (pgbench -M prepared: BEGIN; END;) on its first execution only: there,
    pgbench's own count of transactions is the truth."""
    expected = {fp: server[fp][0] for fp in compared}
    if client_name == "pgbench_prepared":
        for fp in compared:
            if server[fp][2] == "utility":
                expected[fp] = PGBENCH_TRANSACTIONS
    return expected


# Total time: the log's duration against pg_stat_statements' total_exec_time, per fingerprint.
# - The log rounds each duration to 1 µs (±0.0005 ms a call). For a SELECT over the extended
#   protocol, ExecutorFinish runs when the portal is dropped, after the execute line was written:
#   counted by the server, not by the log, a few µs. So the log may fall short of the server by
#   no more than LOG_SHORT_MS a call.
#   Measured: never more than 0.0004 ms a call short.
# - The log's duration also covers what the server's execution time leaves out: parsing, planning
#   and the protocol for the simple protocol, the executor's start and end (and auto_explain
#   writing its plan to the log) for an execute: tens of µs to 2 ms a call measured here. The
#   first run of a shape in a new backend also loads the catalog caches while it plans (measured
#   up to 11 ms), and on this shared 2-core machine a backend may wait for the CPU: LOG_COLD_MS
#   once per fingerprint.
# The lower bound is the sharp one: a duration lost or read from the wrong line shows there; a
# plan or a statement counted twice shows in the calls.
LOG_SHORT_MS = 0.01
LOG_OVER_MS = 2.0
LOG_COLD_MS = 100.0


@pytest.mark.parametrize("logging, explain", COMBINATIONS, ids=[f"{a}-{b}" for a, b in COMBINATIONS])
@pytest.mark.parametrize("client_name", list(CLIENTS))
def test_log_counts_equal_pg_stat_statements(embedded_cluster, pg_dsn, client_dbs, client_name, logging, explain):
    client, _ = CLIENTS[client_name]
    settings = {**LOGGING[logging], **EXPLAIN[explain]}
    app, workloads, server = run_logged(embedded_cluster, pg_dsn, client_dbs[client_name], client, settings)
    compared = {fp for fp, (_, _, kind) in server.items() if logging != "plans_only" or kind in PLANNED}
    for suffix, w in workloads.items():
        where = f"{client_name}, {logging}, auto_explain {explain}, {suffix}"
        assert w.skipped_count == 0, where
        assert all(q.applications == (app,) for q in w.queries), where  # the range holds this run alone
        logged = {q.fingerprint: q for q in w.queries
                  if logging != "plans_only" or q.statement_type in PLANNED}
        assert {fp: q.calls for fp, q in logged.items()} == _expected_calls(client_name, server, compared), where
        for fp, q in logged.items():
            calls, server_ms, kind = server[fp]
            assert q.timed_calls == q.calls, (where, q.normalized)
            if client_name == "pgbench_prepared" and kind == "utility":
                continue  # the server timed the first execution only (see _expected_calls)
            assert server_ms - calls * LOG_SHORT_MS <= q.total_ms <= server_ms + calls * LOG_OVER_MS + LOG_COLD_MS, (
                where, q.normalized, q.total_ms, server_ms)
        # One plan per execution of a plannable statement, read as a plan: none became a call of its own.
        planned_calls = sum(q.calls for q in logged.values() if q.statement_type in PLANNED)
        assert w.plans == (planned_calls if explain != "off" else 0), where



# --- the advisor's own traffic -------------------------------------------------------

SHOP_QUERIES = {  # the application's statements and how often it runs each
    "SELECT id, name FROM items WHERE price = %s": 6,
    "SELECT count(*) FROM items WHERE name LIKE %s": 3,
}


def test_no_statement_of_the_advisor_is_in_a_log_workload(embedded_cluster, pg_dsn):
    """scan, suggest-indexes and bench pool run against a database that logs every statement and
    every plan; the workload read back from each log holds the application's statements only."""
    with psycopg.connect(embedded_cluster.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS rc_own WITH (FORCE)")
    dsn = embedded_cluster.create_database("rc_own")
    _setup_items(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        if embedded_cluster.has_hypopg:
            conn.execute("CREATE EXTENSION hypopg")
        for name, value in {**LOGGING["min_duration_0"], **EXPLAIN["json"]}.items():
            conn.execute(sql.SQL("ALTER DATABASE rc_own SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    starts = {path: path.stat().st_size for path in _log_files(embedded_cluster)}
    with psycopg.connect(dsn, autocommit=True, application_name="shop") as conn:
        for query, runs in SHOP_QUERIES.items():
            for i in range(runs):
                conn.execute(query, (i if "price" in query else f"item {i}%",)).fetchall()
    for command in (("scan", "--dsn", dsn), ("suggest-indexes", "--dsn", dsn),
                    ("bench", "pool", "--dsn", dsn, "--duration", "0.3", "--warmup", "0.1", "--concurrency", "1")):
        done = advisor(*command, "--format", "json")
        assert done.returncode in (0, 1), (command, done.stderr[-2000:])  # 1: findings at --fail-on
    marker = "end of the advisor traffic run"
    with psycopg.connect(dsn, autocommit=True, application_name="shop") as conn:
        conn.execute(f"SELECT '{marker}'").fetchall()
    _wait_for(embedded_cluster, marker)
    expected = {fingerprint(q.replace("%s", "$1")).id: runs for q, runs in SHOP_QUERIES.items()}
    expected[fingerprint(f"SELECT '{marker}'").id] = 1
    for path, start in starts.items():
        ranges = {str(path): (_line_start(path, start), None)}
        w = collect(read_logs([str(path)], jobs=1, ranges=ranges))
        assert {q.fingerprint: q.calls for q in w.queries} == expected, path.suffix
        assert all(q.applications == ("shop",) for q in w.queries), path.suffix
        assert w.plans == sum(expected.values()), path.suffix  # the application's plans; the advisor's are left out too
        with open(path, "rb") as f:
            f.seek(ranges[str(path)][0])
            raw = f.read().decode(errors="replace")
        assert "/* advisor */" in raw  # the advisor's statements were logged, and left out:
        assert w.advisor_statements > 0 and any("sent by the advisor itself" in n for n in w.notes), path.suffix
