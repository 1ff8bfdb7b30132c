"""Round trip through a real server: run known statements with logging on, read the logs back.

The harness cluster writes stderr, csvlog and jsonlog at once, so the three
readers are checked against the same executions. Each test run tags its
statements with a unique application_name and reads only those back.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import psycopg
import pytest

from advisor.workload.fingerprint import fingerprint
from advisor.workload.logs.formats import LogFormat, read_executions, sniff
from advisor.workload.logs.records import Tally
from advisor.workload.sources import collect, read_logs
from advisor.workload.sources.stat_statements import read_pg_stat_statements

POINT = "SELECT id, name FROM items WHERE id = %s"
RANGE = "SELECT name FROM items WHERE price > 5 ORDER BY name LIMIT 3"
MULTI = "SELECT count(*)\n  FROM items\n WHERE name LIKE 'item 1%'"
EXPLAINED = "SELECT max(price) FROM items WHERE name <> 'none'"


@pytest.fixture(scope="module")
def logged_run(embedded_cluster, pg_dsn):
    """Runs the known workload once, tagged, and waits until the logs hold all of it."""
    app = f"logtest-{uuid.uuid4().hex[:8]}"  # not advisor…: that is the advisor's own traffic
    with psycopg.connect(pg_dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, name text, price numeric)")
        setup.execute("INSERT INTO items SELECT g, 'item ' || g, g % 10 FROM generate_series(1, 200) g ON CONFLICT DO NOTHING")
        setup.execute("SELECT pg_stat_statements_reset()")
    starts = {path: path.stat().st_size for path in (embedded_cluster.stderr_log, embedded_cluster.csv_log, embedded_cluster.json_log)}
    with psycopg.connect(pg_dsn, autocommit=True, application_name=app) as conn:
        conn.execute("SET log_min_duration_statement = 0")
        for i in range(7):  # psycopg prepares after 5: unnamed, then named statements
            conn.execute(POINT, (i + 1,)).fetchall()
        for _ in range(3):
            conn.execute(RANGE).fetchall()
        for _ in range(2):
            conn.execute(MULTI).fetchall()
        conn.execute("SET auto_explain.log_min_duration = 0")
        conn.execute("SET auto_explain.log_format = 'json'")
        conn.execute(EXPLAINED).fetchall()
        conn.execute("SET auto_explain.log_min_duration = -1")
        conn.execute("SELECT 'end of run'").fetchall()
    _wait_for(embedded_cluster, "'end of run'")
    return embedded_cluster, app, starts  # starts: where this run begins in each log (earlier modules wrote before)


def _wait_for(cluster, marker: str, timeout: float = 15.0) -> None:
    """The logging collector writes asynchronously: wait until every file shows the marker."""
    deadline = time.monotonic() + timeout
    files = (cluster.stderr_log, cluster.csv_log, cluster.json_log)
    while time.monotonic() < deadline:
        if all(f.exists() and marker in f.read_text(errors="replace") for f in files):
            return
        time.sleep(0.1)
    pytest.fail(f"the server logs never showed {marker}")


def _executions(path, app: str):
    tally = Tally(str(path))
    fmt = sniff(str(path))
    return [e for e in read_executions(str(path), fmt, tally) if e.application == app], fmt, tally


def _calls(executions) -> Counter:
    return Counter(fingerprint(e.sql).id for e in executions)


EXPECTED = {POINT.replace("%s", "$1"): 7, RANGE: 3, MULTI: 2, EXPLAINED: 1}


@pytest.mark.parametrize("which", ["stderr_log", "csv_log", "json_log"])
def test_each_format_reads_back_what_ran(logged_run, which):
    cluster, app, _ = logged_run
    executions, _fmt, tally = _executions(getattr(cluster, which), app)
    calls = _calls(executions)
    for sql, count in EXPECTED.items():
        assert calls[fingerprint(sql).id] == count, (which, sql)
    assert tally.skipped_count == 0
    point = [e for e in executions if fingerprint(e.sql).id == fingerprint(POINT.replace("%s", "$1")).id]
    assert sorted(e.parameters for e in point) == sorted(f"$1 = '{i}'" for i in range(1, 8))
    assert all(e.duration_ms is not None and e.duration_ms >= 0 for e in executions)
    explained = [e for e in executions if fingerprint(e.sql).id == fingerprint(EXPLAINED).id]
    assert explained[0].plan is not None and '"Node Type"' in explained[0].plan


def test_stderr_prefix_is_detected_and_fields_read(logged_run):
    cluster, app, _ = logged_run
    assert sniff(str(cluster.stderr_log)) == LogFormat("stderr", cluster.log_line_prefix)
    executions, _, _ = _executions(cluster.stderr_log, app)
    assert {e.user for e in executions} == {"postgres"}
    assert {e.database for e in executions} == {"advisor_test_logs_server"}
    assert len({e.session for e in executions}) == 1  # %c: one session id for the one connection


def test_jsonlog_query_id_joins_pg_stat_statements(logged_run, pg_dsn):
    cluster, app, _ = logged_run
    executions, _, _ = _executions(cluster.json_log, app)
    point_id = fingerprint(POINT.replace("%s", "$1")).id
    logged_ids = {e.query_id for e in executions if fingerprint(e.sql).id == point_id}
    with psycopg.connect(pg_dsn) as conn:
        rows = read_pg_stat_statements(conn)
    server_ids = {r.queryid for r in rows if fingerprint(r.query).id == point_id}
    assert len(logged_ids) == 1 and logged_ids == server_ids


def test_whole_pipeline_agrees_across_formats(logged_run):
    _, app, starts = logged_run
    totals = {}
    for path, start in starts.items():
        w = collect(read_logs([str(path)], jobs=1, ranges={str(path): (start, None)}))
        assert all(q.applications == (app,) for q in w.queries)
        totals[path.suffix] = {q.fingerprint: q.calls for q in w.queries}
    assert totals[".log"] == totals[".csv"] == totals[".json"]
    assert sum(totals[".log"].values()) >= sum(EXPECTED.values())
