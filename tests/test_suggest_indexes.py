"""`advisor suggest-indexes` against a real server with HypoPG, on the demo fixture."""

from __future__ import annotations

import json
from dataclasses import replace

import psycopg
import pytest
from helpers import advisor

from advisor import demo
from advisor.indexes.advice import workload_seconds
from advisor.workload.sources import collect, read_logs

SCALE = demo.Scale(lots=40, dies=25)

# Parametric results with many tests per die: the first page of a die's results in test
# order is where the known best index, (wafer_id, die_x, die_y, test_name), pays: equality
# columns most selective first (200 wafers, 20 die columns, 5 die rows), then the sort
# column, so the scan reads ten index entries in order and stops.
PARAMETRIC = """
CREATE TABLE parametric AS
SELECT w AS wafer_id, d % 20 AS die_x, d / 20 AS die_y, 't' || lpad(t::text, 3, '0') AS test_name, random() AS value
FROM generate_series(1, 200) w, generate_series(0, 99) d, generate_series(1, 50) t;
ANALYZE parametric;
"""
WORKLOAD = """
SELECT test_name, value FROM parametric WHERE wafer_id = 42 AND die_x = 3 AND die_y = 2 ORDER BY test_name LIMIT 10;
SELECT test_name, value FROM parametric WHERE wafer_id = 117 AND die_x = 11 AND die_y = 4 ORDER BY test_name LIMIT 10;
SELECT id, wafer_no, yield_pct FROM wafers WHERE lot_id = 42;
SELECT id, lot_code, status FROM lots WHERE lot_code = 'LOT000042';
SELECT * FROM lots WHERE id = 7;
"""


@pytest.fixture(scope="module")
def fixture_db(pg_cluster, pg_dsn):
    if not pg_cluster.has_hypopg:
        pytest.fail("HypoPG is not installed on the test server: run scripts/setup.sh")
    demo.load_fixture(pg_dsn, SCALE)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(PARAMETRIC)
    return pg_dsn


@pytest.fixture(scope="module")
def workload_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sql") / "workload.sql"
    path.write_text(WORKLOAD)
    return path


def suggest(dsn: str, sql, *extra: str) -> dict:
    run = advisor("suggest-indexes", "--dsn", dsn, "--sql", str(sql), "--format", "json", *extra)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def index_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'").fetchone()[0]


def test_the_known_best_composite_index_in_its_column_order(fixture_db, workload_file):
    doc = suggest(fixture_db, workload_file, "--max-width", "4")
    on_results = [r for r in doc["recommendations"] if r["table"].endswith("parametric")]
    assert [r["columns"] for r in on_results] == [["wafer_id", "die_x", "die_y", "test_name"]]
    (rec,) = on_results
    assert rec["ddl"].startswith("CREATE INDEX CONCURRENTLY idx_parametric_wafer_id_die_x_die_y_test_name ON public.parametric")
    assert rec["estimated_size_bytes"] > 0 and rec["validated"] == "hypothetical"
    helped = {q["normalized"] for q in rec["queries"]}
    assert any("die_x" in text for text in helped)
    assert all(q["cost_after"] < q["cost_before"] / 10 for q in rec["queries"])
    assert doc["workload_cost_after"] < doc["workload_cost_before"] and doc["whatif_calls"] > 0
    search = doc["search"]  # what the search asked the planner, and where its time went
    assert search["cost_requests"] == doc["whatif_calls"] + search["cache_hits"] + search["derived"]
    assert search["cache_hits"] > 0 and 0 <= search["never_costed"] < search["candidates"]
    assert 0 < search["whatif_seconds"] <= doc["seconds"] * 2 and 0 < search["client_seconds"]


def test_nothing_for_queries_existing_indexes_serve(fixture_db, workload_file):
    doc = suggest(fixture_db, workload_file)
    lots = [r for r in doc["recommendations"] if r["table"].endswith(".lots")]
    assert lots == []  # lot_code is UNIQUE, id the primary key
    assert any("lots_lot_code_key" in m["served_by"] or "lots_pkey" in m["served_by"] for m in doc["moot_candidates"])


def test_count_and_budget_limits(fixture_db, workload_file):
    assert len(suggest(fixture_db, workload_file, "--max-indexes", "1")["recommendations"]) == 1
    small = suggest(fixture_db, workload_file, "--budget-mb", "1")
    assert sum(r["estimated_size_bytes"] for r in small["recommendations"]) <= 1024 * 1024
    big = suggest(fixture_db, workload_file, "--budget-mb", "1000")
    assert len(big["recommendations"]) >= len(small["recommendations"])


def test_sql_output_is_a_migration_file(fixture_db, workload_file):
    run = advisor("suggest-indexes", "--dsn", fixture_db, "--sql", str(workload_file), "--format", "sql")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("-- Index advice") and "CREATE INDEX CONCURRENTLY" in run.stdout


def test_verify_measures_and_leaves_no_index(fixture_db, workload_file):
    before = index_count(fixture_db)
    refused = advisor("suggest-indexes", "--dsn", fixture_db, "--sql", str(workload_file), "--verify")
    assert refused.returncode == 2 and "--scratch" in refused.stderr
    doc = suggest(fixture_db, workload_file, "--scratch", "--verify", "--max-width", "4")
    assert doc["validation"].startswith("measured")
    rec = next(r for r in doc["recommendations"] if r["table"].endswith("parametric"))
    measured = [q for q in rec["queries"] if "after_ms" in q]
    assert measured and all(q["after_ms"] < q["before_ms"] for q in measured)
    assert index_count(fixture_db) == before


def test_without_hypopg_a_clear_fix_or_the_scratch_fallback(pg_cluster, fixture_db, workload_file):
    with psycopg.connect(fixture_db, autocommit=True) as conn:
        conn.execute("DROP EXTENSION hypopg")
    try:
        refused = advisor("suggest-indexes", "--dsn", fixture_db, "--sql", str(workload_file))
        assert refused.returncode == 2 and "hypopg" in refused.stderr.lower() and "fix:" in refused.stderr
        before = index_count(fixture_db)
        doc = suggest(fixture_db, workload_file, "--scratch", "--max-width", "4")
        assert doc["validation"] == "real index, rolled back"
        assert ["wafer_id", "die_x", "die_y", "test_name"] in [r["columns"] for r in doc["recommendations"]]
        assert index_count(fixture_db) == before
    finally:
        with psycopg.connect(fixture_db, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")


LEDGER_LOG = "".join(
    f"2026-11-22 03:00:0{s}.001 UTC [700] app@shop LOG:  duration: 9.000 ms  statement: "
    f"SELECT id, amount FROM ledger WHERE account = {account}\n"
    for s, account in ((0, 42), (1, 7), (2, 1234)))


def test_a_log_s_time_span_scales_the_write_counters_of_the_tables_it_reads(fixture_db, tmp_path):
    with psycopg.connect(fixture_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger (id bigint PRIMARY KEY, account int NOT NULL, amount numeric(12,2) NOT NULL)")
        conn.execute("INSERT INTO ledger SELECT g, g % 5000, g % 1000 FROM generate_series(1, 100000) g")
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")
        conn.execute("VACUUM ANALYZE ledger")
        # Writes after the ANALYZE that the log does not hold: quick inserts are not slow statements.
        conn.execute("INSERT INTO ledger SELECT g, g % 5000, 1 FROM generate_series(100001, 110000) g")
        conn.execute("SELECT pg_stat_force_next_flush()")
    log = tmp_path / "slow.log"
    log.write_text(LEDGER_LOG)

    def ledger_advice(*extra: str) -> tuple[dict, list[str]]:
        run = advisor("suggest-indexes", "--dsn", fixture_db, "--log", str(log), "--format", "json", *extra)
        assert run.returncode == 0, run.stderr
        doc = json.loads(run.stdout)
        recs = [r for r in doc["recommendations"] if r["table"] == "public.ledger"]
        assert [r["columns"][0] for r in recs] == ["account"], doc["recommendations"]
        return recs[0], doc["notes"]

    by_calls, notes = ledger_advice()  # three calls over two seconds of log
    assert by_calls["write_cost"] > 0
    assert any("charged in its write cost" in n for n in notes), notes
    by_time, notes = ledger_advice("--weight", "time")  # weights in ms: a rate of rows cannot join them
    assert by_time["write_cost"] == 0
    assert any("public.ledger's counters" in n and "not counted" in n for n in notes), notes


def test_the_span_is_the_log_s_and_none_when_pg_stat_statements_counted_calls(tmp_path):
    # (Through the CLI, --pg-stat-statements would read the whole test cluster's statements.)
    log = tmp_path / "slow.log"
    log.write_text(LEDGER_LOG)
    workload = collect(read_logs([str(log)], jobs=1))
    assert workload_seconds(workload) == pytest.approx(2.0)
    first, *rest = workload.queries
    counted = replace(workload, queries=(replace(first, sources=(*first.sources, "pg_stat_statements")), *rest))
    assert workload_seconds(counted) is None


def test_search_seconds_stops_the_search_and_the_output_says_so(fixture_db, workload_file):
    doc = suggest(fixture_db, workload_file, "--search-seconds", "0")
    assert doc["search"]["stopped_early"] and doc["recommendations"] == []
    assert any("--search-seconds" in note for note in doc["notes"])
    text = advisor("suggest-indexes", "--dsn", fixture_db, "--sql", str(workload_file), "--search-seconds", "0")
    assert text.returncode == 0 and "stopped at --search-seconds" in " ".join(text.stdout.split())
