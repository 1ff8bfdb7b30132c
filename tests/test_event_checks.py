"""Findings from the server's events (issue #13): ADV104 temp-file spills, ADV107 failing
statements, ADV108 connection churn (then ADV105 lock waits, ADV106 deadlocks).

A driver on a cluster of its own, with the events' logging on, does each check's bad case and its
good case (the fix the finding prints, applied); the log it wrote is read as `scan --log` reads
it, without a database. Each finding's numbers are asserted against what the driver did and, where
the server keeps a counter, against it (pg_stat_database).
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import psycopg
import pytest
from helpers import EVENT_LOGGING, started_cluster

from advisor.checks import CHECKS
from advisor.checks.context import Context
from advisor.findings import Finding
from advisor.workload.fingerprint import fingerprint
from advisor.workload.model import Workload
from advisor.workload.sources import collect, read_logs

SETTINGS = EVENT_LOGGING
SORT = "SELECT id, pad FROM big ORDER BY pad"  # one sort, one temp file a run under 64kB of work_mem
SORT_RUNS = 3
DONE = "SELECT 'driver done'"  # the last statement: once it is in the log, so is everything before


def _norm(sql: str) -> str:
    return fingerprint(sql).normalized


@pytest.fixture(scope="module")
def cluster():
    c = started_cluster(SETTINGS)
    try:
        with psycopg.connect(c.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE shop")
        with psycopg.connect(c.dsn("shop"), autocommit=True, application_name="setup") as setup:
            setup.execute("CREATE TABLE big AS SELECT g AS id, md5(g::text) AS pad FROM generate_series(1, 50000) g")
            setup.execute("ANALYZE big")
        yield c
    finally:
        c.stop()


def _temp_counters(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT temp_files, temp_bytes FROM pg_stat_database WHERE datname = 'shop'").fetchone()
    return int(row[0]), int(row[1])


def _settled(dsn: str, before: tuple[int, int], timeout: float = 10.0) -> tuple[int, int]:
    """Backends report their counters a little after their statements: wait for them to move."""
    deadline = time.monotonic() + timeout
    while _temp_counters(dsn) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    return _temp_counters(dsn)


def _segment(cluster, run, dest: Path) -> Path:
    """What the server logged (jsonlog: one record a line) while ``run`` drove it, as a log of its own."""
    log = cluster.json_log
    start = log.stat().st_size
    run()
    with psycopg.connect(cluster.dsn("shop"), autocommit=True, application_name="driver") as conn:
        conn.execute(DONE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the logging collector writes asynchronously
        with log.open("rb") as f:
            f.seek(start)
            text = f.read()
        if b"driver done" in text and text.endswith(b"\n"):
            break
        time.sleep(0.1)
    dest.write_bytes(text)
    return dest


def _workload(path: Path) -> Workload:
    return collect(read_logs([str(path)], jobs=1))


def _findings(path: Path, code: str) -> list[Finding]:
    """What scan without a database reports for ``code`` from this log."""
    [check] = [c for c in CHECKS if c.code == code]
    return list(check.run(Context(_workload(path))))


# --- ADV104 temp-file spills ----------------------------------------------------------------------


def _sorts(dsn: str, *settings: str, sql: str = SORT) -> None:
    with psycopg.connect(dsn, application_name="reports") as conn:
        for _ in range(SORT_RUNS):
            with conn.transaction():
                for s in settings:
                    conn.execute(s)
                conn.execute(sql).fetchall()


HASH = "SELECT count(*) FROM big AS a JOIN big AS b USING (pad)"  # a hash join in batches: many files a run
SERIAL_HASH = ("SET LOCAL enable_mergejoin = off", "SET LOCAL max_parallel_workers_per_gather = 0")
SPILLS = {
    "sort": (SORT, (), "CREATE INDEX CONCURRENTLY ON big (pad);"),
    "hash_join": (HASH, SERIAL_HASH, None),
}


@pytest.mark.parametrize("case", SPILLS)
def test_temp_spill_fires_and_its_work_mem_quiets_it(cluster, tmp_path, case):
    sql, settings, index = SPILLS[case]
    dsn = cluster.dsn("shop")
    before = _temp_counters(dsn)
    bad = _segment(cluster, lambda: _sorts(dsn, *settings, "SET LOCAL work_mem = '64kB'", sql=sql), tmp_path / "bad.json")
    files, size = (a - b for a, b in zip(_settled(dsn, before), before, strict=True))
    assert files >= SORT_RUNS  # the server's own count: a sort writes one file a run, a hash join many
    [finding] = _findings(bad, "ADV104")
    e = finding.evidence
    assert finding.normalized == _norm(sql) and finding.application == "reports"
    assert (e["temp_files"], e["temp_bytes"], e["calls"]) == (files, size, SORT_RUNS)
    assert e["share_of_runs_at_most"] == 1.0 and e["bytes_per_spilling_run"] == -(-size // SORT_RUNS)
    work_mem = e["suggested_work_mem"]
    assert re.fullmatch(r"\d+MB", work_mem) and f"SET LOCAL work_mem = '{work_mem}';" in finding.suggestion
    assert "ALTER ROLE" in finding.suggestion and (index is None or index in finding.suggestion.splitlines())
    assert finding.impact_ms is not None and finding.impact_ms > 0

    before = _temp_counters(dsn)
    good = _segment(cluster, lambda: _sorts(dsn, *settings, f"SET LOCAL work_mem = '{work_mem}'", sql=sql),
                    tmp_path / "good.json")
    assert _settled(dsn, before, timeout=1.0) == before  # the printed work_mem keeps it in memory …
    assert any(q.normalized == _norm(sql) and q.calls == SORT_RUNS for q in _workload(good).queries)
    assert _findings(good, "ADV104") == []  # … and the check goes quiet


def _index_build(dsn: str, memory: str) -> None:
    with psycopg.connect(dsn, autocommit=True, application_name="migrations") as conn:
        conn.execute("DROP INDEX IF EXISTS big_pad_idx")
        conn.execute(f"SET maintenance_work_mem = '{memory}'")
        conn.execute("SET max_parallel_maintenance_workers = 0")
        conn.execute("CREATE INDEX big_pad_idx ON big (pad)")


def test_an_index_build_that_spills_is_told_maintenance_work_mem(cluster, tmp_path):
    """CREATE INDEX sorts in maintenance_work_mem: SET LOCAL work_mem would change nothing."""
    dsn = cluster.dsn("shop")
    before = _temp_counters(dsn)
    bad = _segment(cluster, lambda: _index_build(dsn, "1MB"), tmp_path / "bad.json")
    assert _settled(dsn, before)[0] > before[0]  # the server counted its temp files
    [finding] = _findings(bad, "ADV104")
    memory = finding.evidence["suggested_maintenance_work_mem"]
    assert "maintenance_work_mem" in finding.title and "work_mem = " not in finding.title.replace("maintenance_work_mem", "")
    assert f"SET maintenance_work_mem = '{memory}';" in finding.suggestion and "SET LOCAL work_mem" not in finding.suggestion

    before = _temp_counters(dsn)
    good = _segment(cluster, lambda: _index_build(dsn, memory), tmp_path / "good.json")
    assert _settled(dsn, before, timeout=1.0) == before  # the printed setting builds it in memory
    assert _findings(good, "ADV104") == []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX big_pad_idx")  # the other tests sort big by pad


def test_temp_spill_stays_quiet_where_the_plan_speaks(cluster, tmp_path):
    """ADV004 (the plan) and ADV104 (the log) on one query: one finding, the plan's."""
    from advisor.checks.context import ExplainedQuery
    from advisor.plans import parse_plan

    dsn = cluster.dsn("shop")
    log = _segment(cluster, lambda: _sorts(dsn, "SET LOCAL work_mem = '64kB'"), tmp_path / "spill.json")
    workload = _workload(log)
    [query] = [q for q in workload.queries if q.normalized == _norm(SORT)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET work_mem = '64kB'")
        [[doc]] = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, SETTINGS, FORMAT JSON) {SORT}").fetchall()
    ctx = Context(workload, explained=(ExplainedQuery(query, parse_plan(doc), analyzed=True),))
    codes = [f.code for c in CHECKS if c.code in ("ADV004", "ADV104") for f in c.run(ctx)]
    assert codes == ["ADV004"]


# --- ADV107 failing statements --------------------------------------------------------------------

DUPLICATE = "INSERT INTO u VALUES (1)"
UPSERT = "INSERT INTO u VALUES (1) ON CONFLICT DO NOTHING"
TIMEOUT = "SELECT pg_sleep(1)"
MISSING = "SELECT id FROM no_such_table"
FAILS = 3  # each failure, as often as failing_min_count asks


def _failures(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True, application_name="web") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS u (id int PRIMARY KEY)")
        conn.execute("DELETE FROM u")
        conn.execute(DUPLICATE)  # succeeds once: the application is known from its logged run
        for _ in range(FAILS):
            with pytest.raises(psycopg.errors.UniqueViolation):
                conn.execute(DUPLICATE)
        for _ in range(FAILS):
            conn.execute(UPSERT)  # the printed fix: the same work, no failure
        conn.execute("SET statement_timeout = '50ms'")
        for _ in range(FAILS):
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute(TIMEOUT)
        conn.execute("RESET statement_timeout")
        for _ in range(FAILS - 1):  # under the threshold
            with pytest.raises(psycopg.errors.UndefinedTable):
                conn.execute(MISSING)


def test_failing_statements_by_sqlstate_with_a_fix_by_class(cluster, tmp_path):
    dsn = cluster.dsn("shop")
    log = _segment(cluster, lambda: _failures(dsn), tmp_path / "errors.json")
    found = {(f.normalized, f.evidence["sqlstate"]): f for f in _findings(log, "ADV107")}
    assert set(found) == {(_norm(DUPLICATE), "23505"), (_norm(TIMEOUT), "57014")}  # MISSING failed too few times
    dup = found[(_norm(DUPLICATE), "23505")]
    assert (dup.evidence["failed"], dup.evidence["succeeded"], dup.application) == (FAILS, 1, "web")
    assert "ON CONFLICT DO NOTHING" in dup.suggestion and dup.impact_ms is None
    assert 'unique constraint "u_pkey"' in dup.title
    timeout = found[(_norm(TIMEOUT), "57014")]
    assert timeout.evidence["failed"] == FAILS and "plan" in timeout.suggestion
    assert timeout.evidence["message"] == "canceling statement due to statement timeout"
    assert not any(f.normalized == _norm(UPSERT) for f in found.values())  # the fix, run as often: quiet


def test_application_bugs_are_named_with_their_application(cluster, tmp_path):
    from dataclasses import replace

    from advisor.thresholds import DEFAULT

    def run() -> None:
        with psycopg.connect(dsn, autocommit=True, application_name="billing") as conn:
            conn.execute("SELECT 1 FROM big LIMIT 1")
            for sql in ("SELECT nope FROM big", "SELEC 1"):
                with pytest.raises(psycopg.ProgrammingError):
                    conn.execute(sql)

    dsn = cluster.dsn("shop")
    log = _segment(cluster, run, tmp_path / "bugs.json")
    [check] = [c for c in CHECKS if c.code == "ADV107"]
    found = {f.evidence["sqlstate"]: f for f in check.run(Context(_workload(log), config=replace(DEFAULT, failing_min_count=1)))}
    assert set(found) == {"42703", "42601"}
    assert all("A bug in the application billing:" in f.suggestion and f.application == "billing" for f in found.values())
    assert found["42703"].evidence["kind"] == "undefined column"


# --- ADV108 connection churn ----------------------------------------------------------------------

REQUESTS = 30
REQUEST = "SELECT id FROM big WHERE id = %s"


def _per_request(dsn: str, wall_ms: list[float]) -> None:
    """A connection per request, as a web handler without a pool does."""
    for i in range(REQUESTS):
        started = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True, application_name="web") as conn:
            conn.execute(REQUEST, (i,)).fetchall()
        wall_ms.append((time.perf_counter() - started) * 1000)


def _pooled(dsn: str, min_size: int, max_size: int) -> None:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(dsn, min_size=min_size, max_size=max_size, open=True,
                        kwargs={"autocommit": True, "application_name": "web"}) as pool:
        for i in range(REQUESTS):
            with pool.connection() as conn:
                conn.execute(REQUEST, (i,)).fetchall()


def test_connection_churn_fires_and_the_printed_pool_quiets_it(cluster, tmp_path):
    from advisor.thresholds import DEFAULT

    dsn, wall_ms = cluster.dsn("shop"), []
    bad = _segment(cluster, lambda: _per_request(dsn, wall_ms), tmp_path / "churn.json")
    [finding] = _findings(bad, "ADV108")
    e = finding.evidence
    assert finding.application == "web" and e["sessions"] == REQUESTS
    assert e["per_second"] >= DEFAULT.churn_min_per_s
    assert 0 < e["median_session_ms"] <= max(wall_ms)  # the server's session is inside the client's wall time
    assert e["time_lost_to_connecting_ms"] == REQUESTS * DEFAULT.connect_ms == finding.impact_ms
    assert "assumed" in e["connect_ms_is"] and "--local-pgbouncer" in finding.suggestion
    low, high = e["pool_min_size"], e["pool_max_size"]
    assert f"ConnectionPool(conninfo, min_size={low}, max_size={high})" in finding.suggestion
    assert f"pool_size={low}, max_overflow={high - low}" in finding.suggestion and 1 <= low < high

    good = _segment(cluster, lambda: _pooled(dsn, low, high), tmp_path / "pooled.json")
    sessions = _workload(good).events.applications()["web"]
    assert sessions.count <= high  # the same requests over the pool's few long sessions …
    assert _findings(good, "ADV108") == []  # … are not flagged


# --- ADV105 lock waits ----------------------------------------------------------------------------

QUEUE = "SELECT id FROM jobs WHERE NOT done ORDER BY id LIMIT 1 FOR UPDATE"
HOLD_S = 0.4


def _workers(dsn: str, take: str) -> float:
    """Two workers take a job each; the first holds its row HOLD_S. Returns the second's wait, ms."""
    with psycopg.connect(dsn, autocommit=True, application_name="setup") as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS jobs (id int PRIMARY KEY, done bool NOT NULL DEFAULT false)")
        setup.execute("TRUNCATE jobs")
        setup.execute("INSERT INTO jobs SELECT g FROM generate_series(1, 5) g")
    waited: list[float] = []

    def second() -> None:
        with psycopg.connect(dsn, application_name="worker-b") as b:
            started = time.perf_counter()
            b.execute(take).fetchall()
            waited.append((time.perf_counter() - started) * 1000)
            b.commit()

    with psycopg.connect(dsn, application_name="worker-a") as a:
        [(job,)] = a.execute(take).fetchall()
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(HOLD_S)
        a.execute("UPDATE jobs SET done = true WHERE id = %s", (job,))
        a.commit()
        thread.join()
    return waited[0]


def test_lock_waits_name_the_blocker_and_skip_locked_quiets_a_queue(cluster, tmp_path):
    dsn, wall = cluster.dsn("shop"), []
    bad = _segment(cluster, lambda: wall.append(_workers(dsn, QUEUE)), tmp_path / "queue.json")
    [finding] = _findings(bad, "ADV105")
    e = finding.evidence
    assert finding.normalized == _norm(QUEUE) and finding.application == "worker-a, worker-b"
    assert (e["waits"], e["acquired"], e["pattern"]) == (1, 1, "queue")
    assert HOLD_S * 1000 * 0.5 <= e["max_wait_ms"] <= wall[0] and e["total_wait_ms_at_least"] == e["max_wait_ms"]
    assert e["blocking"] == [{"normalized": _norm(QUEUE), "application": "worker-a"}]
    assert finding.impact_ms == e["max_wait_ms"] and "lock_timeout" in finding.suggestion
    fixed = QUEUE + " SKIP LOCKED"
    assert f"{_norm(fixed)};" in finding.suggestion.splitlines()

    good = _segment(cluster, lambda: wall.append(_workers(dsn, fixed)), tmp_path / "skip.json")
    assert wall[1] < HOLD_S * 1000 / 2  # the second worker took the next job at once
    assert _findings(good, "ADV105") == []


# --- ADV106 deadlocks -----------------------------------------------------------------------------

FIRST, SECOND = "UPDATE t SET v = v + 10 WHERE id = 11", "UPDATE t SET v = v + 20 WHERE id = 10"


def _deadlock_counter(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return int(conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = 'shop'").fetchone()[0])


def _opposite_orders(dsn: str, lock_first: str | None = None) -> int:
    """Two transactions update rows 10 and 11 in opposite orders; with ``lock_first`` each locks both
    first (the printed fix). Returns the deadlocks psycopg saw."""
    with psycopg.connect(dsn, autocommit=True, application_name="setup") as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, v int)")
        setup.execute("INSERT INTO t SELECT g, 0 FROM generate_series(1, 20) g ON CONFLICT DO NOTHING")
    seen = []

    def transaction(name: str, first: int, then: str, pause: float) -> None:
        with psycopg.connect(dsn, application_name=name) as conn:
            try:
                if lock_first:
                    conn.execute(lock_first, ([10, 11],)).fetchall()
                conn.execute("UPDATE t SET v = 0 WHERE id = %s", (first,))
                time.sleep(pause)
                conn.execute(then)
                conn.commit()
            except psycopg.errors.DeadlockDetected:
                seen.append(name)
                conn.rollback()

    one = threading.Thread(target=transaction, args=("first", 10, FIRST, 0.3))
    one.start()
    time.sleep(0.1)
    transaction("second", 11, SECOND, 0.5)
    one.join()
    return len(seen)


def test_deadlocks_give_the_cycle_and_the_order_that_avoids_it(cluster, tmp_path):
    dsn = cluster.dsn("shop")
    before, victims = _deadlock_counter(dsn), []
    bad = _segment(cluster, lambda: victims.append(_opposite_orders(dsn)), tmp_path / "deadlock.json")
    deadline = time.monotonic() + 5
    while _deadlock_counter(dsn) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert victims == [1] and _deadlock_counter(dsn) - before == 1  # psycopg's and the server's count
    [finding] = _findings(bad, "ADV106")
    e = finding.evidence
    assert e["deadlocks"] == 1 and sorted(e["cycle"]) == sorted([_norm(FIRST), _norm(SECOND)])
    assert finding.normalized in (_norm(FIRST), _norm(SECOND)) and e["tables"] == ["t"]
    lock = "SELECT id FROM t WHERE id = ANY($1) ORDER BY id FOR UPDATE;"
    assert lock in finding.suggestion.splitlines() and "40P01" in finding.suggestion

    before = _deadlock_counter(dsn)
    good = _segment(cluster, lambda: victims.append(_opposite_orders(dsn, lock.replace("$1", "%s").rstrip(";"))),
                    tmp_path / "ordered.json")
    time.sleep(0.5)
    assert victims[1] == 0 and _deadlock_counter(dsn) == before
    assert _findings(good, "ADV106") == []


# --- all of them through the CLI -------------------------------------------------------------------


def test_scan_without_a_database_reports_the_event_findings(cluster, tmp_path):
    from typer.testing import CliRunner

    from advisor.cli import app

    def everything() -> None:
        _sorts(dsn, "SET LOCAL work_mem = '64kB'")
        _failures(dsn)
        _per_request(dsn, [])

    dsn = cluster.dsn("shop")
    log = _segment(cluster, everything, tmp_path / "scan.json")
    run = CliRunner().invoke(app, ["scan", "--log", str(log), "--format", "json"])
    assert run.exit_code == 0, run.output
    found = {(f["code"], f["normalized"]): f for f in json.loads(run.output)["findings"]}
    assert found[("ADV104", _norm(SORT))]["evidence"]["temp_files"] == SORT_RUNS
    assert found[("ADV107", _norm(DUPLICATE))]["evidence"]["failed"] == FAILS
    assert found[("ADV107", _norm(TIMEOUT))]["evidence"]["failed"] == FAILS
    assert found[("ADV108", None)]["evidence"]["sessions"] == REQUESTS + 1  # the failures' session is web's too


def test_scan_with_a_database_measures_the_connect_cost_only_when_adv108_fires(cluster, tmp_path):
    from advisor.commands.scan import scan

    dsn = cluster.dsn("shop")
    churn = _workload(_segment(cluster, lambda: _per_request(dsn, []), tmp_path / "churn.json"))
    pooled = _workload(_segment(cluster, lambda: _pooled(dsn, 1, 2), tmp_path / "pooled.json"))

    def scanned(workload: Workload) -> tuple[list[Finding], int]:
        """ADV108's findings, and the sessions the scan itself opened (application_name advisor)."""
        log = _segment(cluster, lambda: found.extend(scan(workload, dsn, max_queries=1).findings), tmp_path / "own.json")
        records = [json.loads(line) for line in log.read_text().splitlines()]
        own = [r for r in records if r.get("application_name") == "advisor" and r["message"].startswith("disconnection")]
        return [f for f in found if f.code == "ADV108"], len(own)

    found: list[Finding] = []
    [finding], opened = scanned(churn)
    e = finding.evidence
    assert e["connect_ms_is"].startswith("measured") and 0 < e["connect_ms"] < 1000
    assert finding.impact_ms == e["time_lost_to_connecting_ms"] == pytest.approx(REQUESTS * e["connect_ms"], abs=0.01)
    assert opened == 1 + 5  # the scan's own session, and the five it timed (each closed at once)

    found.clear()
    assert scanned(pooled) == ([], 1)  # no churn: nothing to time, no extra connection
