"""The nightly report shows the server events (issue #13): the events over time, each top query's
events, and an error kind new since the last night as a regression.

A cluster of its own logs temp files, lock waits and sessions. Night 1: sessions of the app insert
rows (no unique violation), sort past work_mem; night 2: the same, plus a lock wait and inserts that
violate the primary key. `advisor report` reads the server's log after each night (night 2 reads
what was appended). Counts are asserted against what the driver did and the server's counters.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from datetime import datetime, timedelta

import psycopg
import pytest
from helpers import EVENT_LOGGING, advisor, started_cluster
from sqlalchemy import text

from advisor.history import History
from advisor.workload.events import LogEvents, Statement
from advisor.workload.fingerprint import fingerprint
from advisor.workload.model import Workload
from advisor.workload.timeline import BUCKETS_KEPT, Timeline

SETTINGS = EVENT_LOGGING
APP = "shop"
INSERT = "INSERT INTO u VALUES (%s)"  # the same query succeeds and, on night 2, violates the key
SORT = "SELECT g FROM generate_series(1, 100000) g ORDER BY g DESC"  # spills under 64kB of work_mem
HOLD, WAIT = "UPDATE t SET v = v + 1 WHERE id = 1", "UPDATE t SET v = 2 WHERE id = 1"
SESSIONS = 4
DUPLICATES = 3


def _temp(conn) -> tuple[int, int]:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute("SELECT temp_files, temp_bytes FROM pg_stat_database WHERE datname = 'shop'").fetchone()
    return int(row[0]), int(row[1])


def _night(dsn: str, admin, first_id: int, *, second: bool) -> dict:
    """Sessions of the app; on the second night a lock wait and unique violations. What the server counted."""
    before = _temp(admin)
    for n in range(SESSIONS):
        with psycopg.connect(dsn, autocommit=True, application_name=APP) as conn:
            conn.execute(INSERT, (first_id + n,))
            conn.execute("SET work_mem = '64kB'")
            conn.execute(SORT).fetchall()
            if second and n == 0:
                for _ in range(DUPLICATES):
                    with pytest.raises(psycopg.errors.UniqueViolation):
                        conn.execute(INSERT, (first_id,))
    if second:
        with psycopg.connect(dsn, application_name=APP) as holder, \
                psycopg.connect(dsn, autocommit=True, application_name=APP) as waiter:
            holder.execute(HOLD)
            thread = threading.Thread(target=waiter.execute, args=(WAIT,))
            thread.start()
            time.sleep(0.5)  # five times deadlock_timeout: the wait is logged
            holder.commit()
            thread.join()
    deadline = time.monotonic() + 10
    while (now := _temp(admin))[0] - before[0] < SESSIONS and time.monotonic() < deadline:
        time.sleep(0.1)  # backends report their counters at exit, a little later
    time.sleep(0.3)
    now = _temp(admin)
    # the last statement of a log waits for the next read: a session of another name ends the night
    with psycopg.connect(dsn, autocommit=True, application_name="marker") as conn:
        conn.execute(_marker(first_id))
    return {"temp_files": now[0] - before[0], "temp_bytes": now[1] - before[1]}


def _marker(night: int) -> str:
    return f"SELECT {night} AS night"


def _logged(cluster, text: str, timeout: float = 10.0) -> None:
    """The logging collector writes asynchronously: wait until ``text`` is in the log."""
    deadline = time.monotonic() + timeout
    while text not in cluster.stderr_log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"never logged: {text}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    cluster = started_cluster(SETTINGS)
    out = tmp_path_factory.mktemp("report-events") / "out"
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE shop")
        dsn = cluster.dsn("shop")
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("CREATE TABLE u (id int PRIMARY KEY)")
            admin.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
            admin.execute("INSERT INTO t VALUES (1, 0)")
            docs, counted = [], []
            for night in (1, 2):
                counted.append(_night(dsn, admin, night * 100, second=night == 2))
                _logged(cluster, _marker(night * 100))
                run = advisor("report", "--dsn", dsn, "--log", str(cluster.stderr_log), "--out", str(out),
                              "--time-budget", "20")
                assert run.returncode in (0, 1), run.stdout + run.stderr
                docs.append(json.loads((out / "report.json").read_text()))
        yield {"docs": docs, "counted": counted, "out": out, "cluster": cluster}
    finally:
        cluster.stop()


def _insert_key() -> str:
    return fingerprint(INSERT.replace("%s", "$1")).id


def test_an_error_kind_new_tonight_is_listed_once_with_its_query(nights):
    first, second = nights["docs"]
    assert first["history"]["new_error_kinds"] == [] and first["workload"]["events"]["errors"]["count"] == 0
    kinds = second["history"]["new_error_kinds"]
    assert [(k["fingerprint"], k["sqlstate"], k["count"]) for k in kinds] == [(_insert_key(), "23505", DUPLICATES)]
    summary = (nights["out"] / "summary.md").read_text()
    assert f"- new error kind: SQLSTATE 23505 ×{DUPLICATES} in `{kinds[0]['normalized']}`" in summary
    assert "1 new error kind" in summary
    html = (nights["out"] / "report.html").read_text()
    assert "<h3>New error kinds</h3>" in html.split('<section id="history">')[1]


def test_the_second_nights_events_match_the_driver_and_the_server(nights):
    doc, counted = nights["docs"][1]["workload"]["events"], nights["counted"][1]
    assert doc["errors"]["count"] == DUPLICATES and doc["errors"]["by_sqlstate"] == {"23505": DUPLICATES}
    assert doc["lock_waits"]["count"] == 1
    assert (doc["temp_files"]["count"], doc["temp_files"]["bytes"]) == (counted["temp_files"], counted["temp_bytes"])
    assert doc["sessions"]["by_application"][APP]["sessions"] == SESSIONS + 2  # and the lock wait's two


@pytest.mark.parametrize("night", [0, 1])
def test_the_timeline_adds_up_to_the_totals(nights, night):
    e = nights["docs"][night]["workload"]["events"]
    t = e["timeline"]
    assert t["unit"] == "minute" and t["buckets"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d", b["start"]) for b in t["buckets"])
    assert [b["start"] for b in t["buckets"]] == sorted(b["start"] for b in t["buckets"])

    def total(key: str) -> int:
        return sum(b[key] for b in t["buckets"]) + t["outside"][key]

    assert total("temp_bytes") == e["temp_files"]["bytes"] > 0
    assert total("temp_files") == e["temp_files"]["count"]
    assert total("lock_waits") == e["lock_waits"]["count"]
    assert total("errors") == e["errors"]["count"]


def test_the_whole_logs_sessions_add_up(nights):
    """In one pass over the whole log every session's start and end is read: the timeline's sessions
    are the sessions."""
    run = advisor("parse", str(nights["cluster"].stderr_log), "--format", "json")
    e = json.loads(run.stdout)["events"]
    assert sum(b["sessions"] for b in e["timeline"]["buckets"]) == e["sessions"]["count"]
    assert e["sessions"]["by_application"][APP]["sessions"] == 2 * SESSIONS + 2


def test_html_shows_the_charts_and_each_querys_events(nights, tmp_path):
    html = (nights["out"] / "report.html").read_text()
    events = html.split('<section id="events">')[1].split("</section>")[0]
    assert events.count('<svg class="timeline"') == 4 and "<rect" in events
    assert f"errors: {DUPLICATES}" in events and "lock waits: 1" in events
    top = html.split('<section id="top-queries">')[1].split("</section>")[0]
    assert f"{DUPLICATES:,} errors 23505" in top
    sort = nights["docs"][1]["workload"]["events"]["temp_files"]["by_query"][0]
    assert sort["normalized"] == fingerprint(SORT).normalized and f"{sort['count']:,} temp files, " in top
    assert "<script" not in html.lower()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("ADVISOR_REQUIRE_PG") == "1":
            pytest.fail("chromium is not installed (bash scripts/setup.sh installs it)", pytrace=False)
        pytest.skip("chromium is not installed")
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", (nights["out"] / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert re.search(r'<section id="events">\s*<h2>', dom.stdout)
    assert dom.stdout.count('<svg class="timeline"') == 4


# --- the pieces without a server: the history store's error kinds, and the timeline's bounds ----------


def _workload(errors: list[tuple[str | None, str, int]]) -> Workload:
    """A workload whose logs held ``count`` errors of each (query or None, SQLSTATE)."""
    events = LogEvents()
    for sql, state, count in errors:
        q = Statement(fingerprint(sql).id, fingerprint(sql).normalized) if sql else None
        for _ in range(count):
            events.error(q, state, "masked message")
    return Workload(queries=(), sources=("pg.log",), lines=1, statements=0, other_events=0, skipped_count=0, events=events)


def test_a_store_written_before_error_kinds_still_opens_and_compares(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with History(url) as old:  # a store of before this change: without the error kinds' tables
        old.record("shop", _workload([]), [], "2026-03-01T02:00:00+00:00")
        with old.engine.begin() as conn:
            conn.execute(text("DROP TABLE error_kinds"))
            conn.execute(text("DROP TABLE event_runs"))
    with History(url) as h:
        h.record("shop", _workload([("INSERT INTO u VALUES (1)", "23505", 2)]), [], "2026-03-02T02:00:00+00:00")
        assert h.compare("shop").new_error_kinds == ()  # the run before recorded no error kinds: nothing to compare
        h.record("shop", _workload([("INSERT INTO u VALUES (1)", "23505", 5), ("SELECT 1/0", "22012", 1),
                                    (None, "57014", 4)]), [], "2026-03-03T02:00:00+00:00")
        kinds = h.compare("shop").new_error_kinds
        # 22012 is told with its query; 57014 has none (no statement logged), so it is told alone; 23505 is old
        assert [(k.normalized, k.sqlstate, k.count) for k in kinds] == [
            (fingerprint("SELECT 1/0").normalized, "22012", 1), (None, "57014", 4)]
        h.record("shop", Workload(queries=(), sources=("pg_stat_statements",), lines=0, statements=0,
                                  other_events=0, skipped_count=0), [], "2026-03-04T02:00:00+00:00")
        assert h.compare("shop").new_error_kinds == ()  # a night that read no log has no error kinds to compare
        assert h.prune("shop", 1) == 3


def _timeline(minutes: list[int]) -> Timeline:
    t = Timeline()
    for m in minutes:
        t.bucket((datetime(2026, 1, 1) + timedelta(minutes=m)).strftime("%Y-%m-%d %H:%M:%S.123 UTC")).errors += 1
    return t


def test_the_timeline_is_per_hour_past_two_hours_and_bounded_and_merges_as_one_pass():
    assert _timeline([0, 1, 119]).series()[0] == "minute"
    unit, series = _timeline([0, 1, 60, 120]).series()
    assert unit == "hour" and [(k, b.errors) for k, b in series] == [
        ("2026-01-01T00:00", 2), ("2026-01-01T01:00", 1), ("2026-01-01T02:00", 1)]
    unit, series = _timeline([0, 3]).series()  # the minutes between, empty: columns even in time
    assert unit == "minute" and [(k[-5:], b.errors) for k, b in series] == [("00:00", 1), ("00:01", 0), ("00:02", 0), ("00:03", 1)]
    many = list(range(0, 60 * 24 * 40, 30))  # forty days, two events an hour: past a month of hours
    whole = _timeline(many)
    assert whole.hourly and len(whole.buckets) == BUCKETS_KEPT
    assert sum(b.errors for b in whole.buckets.values()) + whole.outside.errors == len(many)
    assert min(whole.buckets) == (datetime(2026, 1, 1) + timedelta(hours=24 * 40 - BUCKETS_KEPT)).strftime("%Y-%m-%dT%H:00")
    parts = _timeline(many[:100]).merge(_timeline(many[100:1500])).merge(_timeline(many[1500:]))
    assert parts.buckets == whole.buckets and parts.outside == whole.outside
    syslog = Timeline()
    syslog.bucket("Dec  3 14:01:29").errors += 1  # a yearless date: outside the buckets, still counted
    assert not syslog.buckets and syslog.outside.errors == 1 and syslog
