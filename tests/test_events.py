"""Server events read from logs a real server wrote (issue #13): temp files, lock waits, deadlocks,
errors, sessions, checkpoints and autovacuum, in stderr, csvlog and jsonlog at once.

A driver on a cluster of its own, with every event's logging on, does known things; each count is
asserted against what the driver did and, where the server keeps one, against its own counter
(pg_stat_database, pg_stat_user_tables, pg_stat_bgwriter). Statements are logged when they end
(log_min_duration_statement = 0); the spills and the lock wait run with log_min_error_statement =
panic, so no STATEMENT line follows their LOG lines and each finds its statement by its backend
(the simple protocol's temp file before its statement line, the extended protocol's after its
execute line, a lock wait before), while the deadlock and the errors keep their STATEMENT.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg
import pytest
from conftest import corpus_path
from helpers import EVENT_LOGGING, started_cluster
from typer.testing import CliRunner

from advisor.cli import app
from advisor.report.jsondoc import events_document
from advisor.workload.events import LogEvents
from advisor.workload.fingerprint import fingerprint
from advisor.workload.logs.server_events import sqlstate_of
from advisor.workload.sources import collect, read_logs

SETTINGS = {
    **EVENT_LOGGING,
    "log_checkpoints": "on",
    "log_autovacuum_min_duration": "0",
    "autovacuum_naptime": "1s",
}
SORT = "SELECT g FROM generate_series(1, 200000) g ORDER BY g DESC"  # spills under 64kB of work_mem
HASH = "SELECT count(*) FROM big a JOIN big b USING (id) WHERE a.id > %s"  # a hash join in batches
SORTED = "SELECT g FROM generate_series(1, %s) g ORDER BY g"  # the same, extended protocol: its files go at portal drop
QUIET = "SET log_min_error_statement = panic"  # no STATEMENT after its LOG lines: the backend tells the statement
HOLD = "UPDATE t SET v = v + 1 WHERE id = 1"
WAIT = "UPDATE t SET v = 2 WHERE id = 1"
FIRST, SECOND = "UPDATE t SET v = v + 10 WHERE id = 11", "UPDATE t SET v = v - 20 WHERE id = 10"
TIMEOUT = "SELECT pg_sleep(2)"
DUPLICATE = "INSERT INTO u VALUES (1)"
SHORT_SESSIONS = 5
DUPLICATES = 3


def _norm(sql: str) -> str:
    return fingerprint(sql).normalized


@pytest.fixture(scope="module")
def driven(tmp_path_factory):
    """Drives the server once and returns (cluster, the server's counters)."""
    cluster = started_cluster(SETTINGS)
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE shop")
        counters = _drive(cluster.dsn("shop"))
        yield cluster, counters
    finally:
        cluster.stop()


def _drive(dsn: str) -> dict:
    with psycopg.connect(dsn, autocommit=True, application_name="setup") as setup:
        setup.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
        setup.execute("INSERT INTO t SELECT g, 0 FROM generate_series(1, 20) g")
        setup.execute("CREATE TABLE u (id int PRIMARY KEY)")
        setup.execute("CREATE TABLE big (id int)")
        setup.execute("INSERT INTO big SELECT generate_series(1, 100000)")
        setup.execute("ANALYZE big")
        setup.execute("CREATE TABLE vac (id int, pad text) WITH (autovacuum_vacuum_threshold = 0, "
                      "autovacuum_vacuum_scale_factor = 0, autovacuum_analyze_threshold = 0, autovacuum_analyze_scale_factor = 0)")
        before = _database_counters(setup)
    pooled = psycopg.connect(dsn, autocommit=True, application_name="pooled")  # one long session beside the short ones
    pooled.execute("SELECT 1")
    _spill(dsn)
    _lock_wait(dsn)
    _deadlock(dsn)
    _errors(dsn)
    for _ in range(SHORT_SESSIONS):  # a connection per request
        with psycopg.connect(dsn, autocommit=True, application_name="per-request") as request:
            request.execute("SELECT 1")
    with psycopg.connect(dsn, autocommit=True, application_name="setup") as setup:
        setup.execute("INSERT INTO vac SELECT g, 'x' FROM generate_series(1, 1000) g")
        setup.execute("DELETE FROM vac WHERE id <= 600")
        setup.execute("CHECKPOINT")
    time.sleep(0.3)
    pooled.close()
    with psycopg.connect(dsn, autocommit=True, application_name="check") as check:
        vacuum = _wait_for_autovacuum(check)
        after = _settled_counters(check, before)
        bgwriter = check.execute("SELECT checkpoints_timed, checkpoints_req FROM pg_stat_bgwriter").fetchone()
    return {"temp_files": after[0] - before[0], "temp_bytes": after[1] - before[1], "deadlocks": after[2] - before[2],
            "vacuums": vacuum[0], "analyzes": vacuum[1], "checkpoints_timed": bgwriter[0], "checkpoints_req": bgwriter[1]}


def _spill(dsn: str) -> None:
    """A sort over the simple protocol (its temp file is logged before its statement) and a hash
    join over the extended one (logged after its execute, when the portal is dropped)."""
    with psycopg.connect(dsn, autocommit=True, application_name="reports", cursor_factory=psycopg.ClientCursor) as conn:
        conn.execute(QUIET)
        conn.execute("SET work_mem = '64kB'")
        conn.execute(SORT).fetchall()
    with psycopg.connect(dsn, autocommit=True, application_name="reports") as conn:
        conn.execute(QUIET)
        conn.execute("SET work_mem = '64kB'")
        conn.execute("SET max_parallel_workers_per_gather = 0")
        conn.execute("SET enable_mergejoin = off")
        conn.execute(HASH, (0,)).fetchall()
        conn.execute(SORTED, (200000,)).fetchall()


def _lock_wait(dsn: str) -> None:
    """HOLD keeps row 1 locked while WAIT waits on it, longer than deadlock_timeout."""
    with psycopg.connect(dsn, application_name="holder") as holder, \
            psycopg.connect(dsn, autocommit=True, application_name="waiter") as waiter:
        waiter.execute(QUIET)
        holder.execute(HOLD)  # psycopg opens the transaction: the row stays locked
        thread = threading.Thread(target=waiter.execute, args=(WAIT,))
        thread.start()
        time.sleep(0.5)
        holder.commit()
        thread.join()


def _deadlock(dsn: str) -> None:
    """Two transactions take rows 10 and 11 in opposite orders: one of them is the victim."""
    with psycopg.connect(dsn, application_name="first") as one, psycopg.connect(dsn, application_name="second") as two:
        one.execute("UPDATE t SET v = 0 WHERE id = 10")
        two.execute("UPDATE t SET v = 0 WHERE id = 11")
        thread = threading.Thread(target=one.execute, args=(FIRST,))  # waits for two's row 11
        thread.start()
        time.sleep(0.5)  # its wait is logged after deadlock_timeout, before the cycle closes
        with pytest.raises(psycopg.errors.DeadlockDetected):
            two.execute(SECOND)  # closes the cycle: two's deadlock check finds it
        two.rollback()
        thread.join()
        one.commit()


def _errors(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True, application_name="web") as conn:
        conn.execute("SET statement_timeout = '50ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(TIMEOUT)
        conn.execute("RESET statement_timeout")
        conn.execute(DUPLICATE)
        for _ in range(DUPLICATES):
            with pytest.raises(psycopg.errors.UniqueViolation):
                conn.execute(DUPLICATE)


def _database_counters(conn) -> tuple[int, int, int]:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute("SELECT sum(temp_files), sum(temp_bytes), sum(deadlocks) FROM pg_stat_database").fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def _settled_counters(conn, before, timeout: float = 10.0) -> tuple[int, int, int]:
    """Backends report their counters when idle or at exit, a little later: wait for the deadlock and the spills."""
    deadline = time.monotonic() + timeout
    while True:
        now = _database_counters(conn)
        if (now[2] > before[2] and now[0] > before[0]) or time.monotonic() > deadline:
            time.sleep(0.5)  # the last backends' exit reports
            return _database_counters(conn)
        time.sleep(0.1)


def _wait_for_autovacuum(conn, timeout: float = 30.0) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    query = "SELECT autovacuum_count, autoanalyze_count, n_dead_tup FROM pg_stat_user_tables WHERE relname = 'vac'"
    while time.monotonic() < deadline:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        vacuums, analyzes, dead = conn.execute(query).fetchone()
        if vacuums and analyzes and not dead:
            return vacuums, analyzes
        time.sleep(0.2)
    pytest.fail("autovacuum never ran on vac")


def _events(path: Path, *, jobs: int = 1) -> LogEvents:
    events = collect(read_logs([str(path)], jobs=jobs, sessions=False)).events
    assert events is not None
    return events


def _read(cluster, which: str, timeout: float = 15.0) -> LogEvents:
    """The logging collector writes asynchronously: read until the last sessions' ends are there."""
    path = getattr(cluster, which)
    deadline = time.monotonic() + timeout
    while True:
        events = _events(path)
        sessions = events.applications()
        if ("pooled" in sessions and sessions["pooled"].disconnections and events.autovacuum.get("shop.public.vac")) \
                or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


FORMATS = ["stderr_log", "csv_log", "json_log"]


@pytest.mark.parametrize("which", FORMATS)
def test_temp_files_match_the_server_and_their_queries(driven, which):
    cluster, counters = driven
    e = _read(cluster, which)
    assert counters["temp_files"] >= 2
    assert (e.temp_files.count, e.temp_files.bytes) == (counters["temp_files"], counters["temp_bytes"])
    by_query = {q.normalized: t for q, t in e.temp_by_query.items()}
    assert set(by_query) == {_norm(SORT), _norm(HASH.replace("%s", "$1")), _norm(SORTED.replace("%s", "$1"))}
    assert by_query[_norm(SORT)].count == 2  # the function scan's tuplestore and the sort
    assert by_query[_norm(SORTED.replace("%s", "$1"))].count == 2
    assert sum(t.count for t in by_query.values()) == counters["temp_files"]


@pytest.mark.parametrize("which", FORMATS)
def test_lock_waits_name_the_waiting_and_the_blocking_statements(driven, which):
    cluster, _ = driven
    e = _read(cluster, which)
    waits = {q.normalized: w for q, w in e.waits_by_query.items()}
    assert e.lock_waits == 2  # WAIT behind HOLD, FIRST behind the deadlock's second transaction
    assert waits[_norm(WAIT)].count == 1 and waits[_norm(FIRST)].count == 1
    assert waits[_norm(WAIT)].max_wait_ms >= 400  # its `acquired` line: it waited until the commit
    assert list(waits[_norm(WAIT)].blocking) == [(_norm(HOLD), "holder")]
    assert list(waits[_norm(FIRST)].blocking) == [(_norm("UPDATE t SET v = 0 WHERE id = 11"), "second")]


@pytest.mark.parametrize("which", FORMATS)
def test_deadlocks_name_the_victim_and_the_cycle(driven, which):
    cluster, counters = driven
    e = _read(cluster, which)
    assert e.deadlocks == counters["deadlocks"] == 1
    [(victim, dead)] = e.deadlocks_by_query.items()
    assert victim.normalized == _norm(SECOND) and dead.count == 1
    assert _norm(FIRST) != _norm(SECOND) and sorted(dead.cycle) == sorted([_norm(FIRST), _norm(SECOND)])


@pytest.mark.parametrize("which", FORMATS)
def test_errors_by_sqlstate_and_query(driven, which):
    cluster, _ = driven
    e = _read(cluster, which)
    assert e.errors_by_sqlstate == {"23505": DUPLICATES, "57014": 1, "40P01": 1}
    assert e.errors == DUPLICATES + 2
    by_query = {(q.normalized, state): err for (q, state), err in e.errors_by_query.items()}
    assert by_query[(_norm(DUPLICATE), "23505")].count == DUPLICATES
    assert by_query[(_norm(TIMEOUT), "57014")].message == "canceling statement due to statement timeout"
    assert by_query[(_norm(SECOND), "40P01")].count == 1


@pytest.mark.parametrize("which", FORMATS)
def test_sessions_per_application(driven, which):
    cluster, _ = driven
    e = _read(cluster, which)
    short, long = e.applications()["per-request"], e.applications()["pooled"]
    assert (short.count, short.connections, short.disconnections) == (SHORT_SESSIONS,) * 3
    assert long.count == 1
    assert long.times.quantile(0.5) > short.times.quantile(0.95)  # held across the whole run
    doc = events_document(e)["sessions"]["by_application"]
    assert doc["per-request"]["sessions"] == SHORT_SESSIONS and doc["per-request"]["per_second"] > 0


@pytest.mark.parametrize("which", FORMATS)
def test_checkpoints_and_autovacuum_match_the_server(driven, which):
    cluster, counters = driven
    e = _read(cluster, which)
    c = e.checkpoints
    assert c.requested == counters["checkpoints_req"] >= 1  # our CHECKPOINT
    assert c.timed <= counters["checkpoints_timed"]  # the server counts timed checkpoints it skipped, unlogged
    assert c.write_ms >= 0 and c.sync_ms >= 0
    vac = e.autovacuum["shop.public.vac"]
    assert (vac.vacuums, vac.analyzes) == (counters["vacuums"], counters["analyzes"])
    assert vac.removed_tuples == 600


def test_the_three_formats_give_the_same_events(driven):
    cluster, _ = driven
    docs = [events_document(_read(cluster, which)) for which in FORMATS]
    for doc in docs:  # the check connection's own session may or may not have ended yet
        doc["sessions"]["by_application"].pop("check", None)
        doc["sessions"].pop("count")
        for application in doc["sessions"]["by_application"].values():
            application.pop("per_second")  # spans differ by the lines each format was at when read
    assert docs[0] == docs[1] == docs[2]


def test_parts_parsed_apart_give_the_single_pass_events(driven):
    """Parts merged in order (sessions cut by a boundary stitched) give what one pass gives. The one
    exception, as for units of work: a temp file or lock wait whose statement is logged after it, in
    the next part (parts begin at statements), is counted but tied to no statement."""
    cluster, _ = driven
    for which in FORMATS:
        path = getattr(cluster, which)
        whole = events_document(_events(path))
        parted = collect(read_logs([str(path)], jobs=3, min_part_bytes=2048, sessions=False))
        assert parted.events is not None
        cut = events_document(parted.events)
        for kind in ("temp_files", "lock_waits"):
            tied = {q["fingerprint"]: q["count"] for q in whole[kind].pop("by_query")}
            for q in cut[kind].pop("by_query"):
                assert q["count"] <= tied[q["fingerprint"]], which
        assert cut == whole, which


def test_parse_json_carries_the_events(driven, tmp_path):
    cluster, counters = driven
    _read(cluster, "csv_log")
    run = CliRunner().invoke(app, ["parse", str(cluster.csv_log), "--format", "json"])
    assert run.exit_code == 0, run.output
    doc = json.loads(run.output)
    assert doc["schema_version"] == 2
    assert list(doc["events"]) == ["temp_files", "lock_waits", "deadlocks", "errors", "sessions", "checkpoints", "autovacuum", "timeline"]
    assert doc["events"]["deadlocks"]["count"] == counters["deadlocks"]
    assert doc["events"]["temp_files"]["bytes"] == counters["temp_bytes"]


@pytest.mark.parametrize(("message", "state"), [
    ("duplicate key value violates unique constraint \"u_pkey\"", "23505"),
    ("canceling statement due to statement timeout", "57014"),
    ("deadlock detected", "40P01"),
    ("canceling statement due to lock timeout", "55P03"),
    ("relation \"nope\" does not exist", "42P01"),
    ("syntax error at or near \"SELEC\"", "42601"),
    ("something new", "unknown"),
])
def test_sqlstate_from_the_message(message, state):
    assert sqlstate_of(message) == state


def test_corpus_autovacuum_counts_equal_pgbadgers():
    """pgBadger's t/03_consistency.t: 2094 autovacuums and 1450 autoanalyzes, in stderr and jsonlog."""
    for name in ("pg_vacuums.log.gz", "pg_vacuums.json.gz"):
        v = _events(corpus_path(name)).autovacuum.values()
        assert (sum(t.vacuums for t in v), sum(t.analyzes for t in v)) == (2094, 1450), name


def test_corpus_temp_files_tied_to_their_statements():
    e = _events(corpus_path("tempfile_only.log.gz"))
    assert e.temp_files.count == 5 == sum(t.count for t in e.temp_by_query.values())
    assert e.checkpoints.count == e.checkpoints.timed == 39


def _stderr_events(tmp_path, prefix_fmt: str, lines: list[str]) -> LogEvents:
    path = tmp_path / "postgresql.log"
    path.write_text("\n".join(lines) + "\n")
    events = collect(read_logs([str(path)], prefix=prefix_fmt, jobs=1, sessions=False)).events
    assert events is not None
    return events


def test_sqlstate_from_the_prefix_and_a_statement_logged_when_it_started(tmp_path):
    """%e gives the SQLSTATE of any message; with log_statement, a temp file without STATEMENT
    belongs to the statement that has no duration yet, not to the next one."""
    e = _stderr_events(tmp_path, "%m [%p] %e ", [
        "2026-01-01 00:00:00.000 UTC [7] 00000 LOG:  statement: SELECT * FROM t ORDER BY a",
        "2026-01-01 00:00:00.100 UTC [7] 00000 LOG:  temporary file: path \"base/pgsql_tmp/pgsql_tmp7.0\", size 1024",
        "2026-01-01 00:00:00.200 UTC [7] 00000 LOG:  duration: 200.000 ms",
        "2026-01-01 00:00:00.300 UTC [7] 00000 LOG:  statement: SELECT 1",
        "2026-01-01 00:00:00.400 UTC [7] P0001 ERROR:  custom failure 42",
        "2026-01-01 00:00:00.400 UTC [7] P0001 STATEMENT:  SELECT raise_it(42)",
    ])
    [(q, t)] = e.temp_by_query.items()
    assert (q.normalized, t.count, t.bytes) == (_norm("SELECT * FROM t ORDER BY a"), 1, 1024)
    assert e.errors_by_sqlstate == {"P0001": 1}
    [((q, state), err)] = e.errors_by_query.items()
    assert (q.normalized, state, err.message) == (_norm("SELECT raise_it(42)"), "P0001", "custom failure ?")


def test_the_advisors_own_sessions_are_left_out(tmp_path):
    e = _stderr_events(tmp_path, "%m [%p] ", [
        "2026-01-01 00:00:00.000 UTC [7] LOG:  connection authorized: user=u database=d application_name=advisor",
        "2026-01-01 00:00:00.000 UTC [8] LOG:  connection authorized: user=u database=d application_name=web",
        "2026-01-01 00:00:01.000 UTC [7] LOG:  disconnection: session time: 0:00:01.000 user=u database=d host=h port=1",
        "2026-01-01 00:00:02.000 UTC [8] LOG:  disconnection: session time: 0:00:02.000 user=u database=d host=h port=2",
    ])
    apps = e.applications()
    assert list(apps) == ["web"] and apps["web"].count == 1 and apps["web"].times.quantile(0.5) == 2000.0


def test_parse_text_shows_events_after_the_queries(driven):
    cluster, _ = driven
    _read(cluster, "stderr_log")
    out = CliRunner().invoke(app, ["parse", str(cluster.stderr_log)], env={"COLUMNS": "200"}).output
    assert "Server events:" in out and out.index("Server events:") > out.index("queries")
    assert "deadlocks: 1;" in out and "errors: 5 (23505 × 3, 40P01 × 1, 57014 × 1)" in out
