"""Plan checks on real plans: each fires on a bad plan and stays quiet once its own fix is applied.

Every case builds the bad plan on this module's database (data large enough,
or session settings that force the planner's hand), runs the check, applies
the fix the finding suggests (its index, work_mem, ANALYZE, statistics,
keyset query) and checks the same query again. With ADVISOR_RECORD_PLANS=1
the captured plans are written to tests/plans/checks/ (the query text in
"Query Text", as auto_explain writes it); the offline test replays them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from advisor.checks import (
    CHECKS,
    adv001_full_scan,
    adv002_index_filter,
    adv003_row_misestimate,
    adv004_disk_spill,
    adv005_nested_loop_scan,
    adv006_index_only_heap_fetches,
    adv007_lossy_bitmap,
    adv008_parallel_workers_short,
    adv009_large_offset,
)
from advisor.checks.context import Context, ExplainedQuery
from advisor.findings import Severity
from advisor.plans import parse_plan
from advisor.thresholds import DEFAULT
from advisor.workload.model import Query, Workload

CHECKS_DIR = Path(__file__).parent / "plans" / "checks"
RECORD = os.environ.get("ADVISOR_RECORD_PLANS") == "1"
MODULES = {m.CODE: m for m in (adv001_full_scan, adv002_index_filter, adv003_row_misestimate, adv004_disk_spill,
                               adv005_nested_loop_scan, adv006_index_only_heap_fetches, adv007_lossy_bitmap,
                               adv008_parallel_workers_short, adv009_large_offset)}

SCHEMA = """
CREATE TABLE lots (id int PRIMARY KEY, fab text NOT NULL);
INSERT INTO lots SELECT g, 'fab' || (g % 5) FROM generate_series(1, 2000) g;
CREATE TABLE results (id int PRIMARY KEY, lot_id int NOT NULL, status text NOT NULL, value float8 NOT NULL,
                      created date NOT NULL, pad text NOT NULL);
INSERT INTO results SELECT g, 1 + g % 2000, CASE WHEN g % 1000 = 0 THEN 'fail' ELSE 'pass' END, random(),
       date '2024-01-01' + (g * 7919) % 365, repeat('x', 40) FROM generate_series(1, 200000) g;
CREATE INDEX results_created ON results (created);
CREATE INDEX results_lot ON results (lot_id);
CREATE TABLE picks (lot_id int NOT NULL, note text NOT NULL);
INSERT INTO picks SELECT 1 + (g * 7) % 1000, repeat('n', 100) FROM generate_series(1, 3000) g;
CREATE TABLE fabs (id int NOT NULL, name text NOT NULL);
INSERT INTO fabs SELECT g, 'fab' || g FROM generate_series(1, 500) g;
CREATE TABLE parts (a int NOT NULL, b int NOT NULL, c int NOT NULL);  -- b and c follow a
INSERT INTO parts SELECT g % 50, g % 50, g % 50 FROM generate_series(1, 100000) g;
CREATE TABLE events (id int NOT NULL, kind text NOT NULL) WITH (autovacuum_enabled = off);
INSERT INTO events SELECT g, 'old' FROM generate_series(1, 10000) g;
CREATE TABLE readings (id int PRIMARY KEY, v int NOT NULL) WITH (autovacuum_enabled = off);
INSERT INTO readings SELECT g, g FROM generate_series(1, 100000) g;
SELECT pg_stat_force_next_flush();  -- the inserts' counts reach the stats now, so ANALYZE zeroes them
VACUUM ANALYZE lots, results, picks, fabs, parts, events, readings;
INSERT INTO events SELECT g, 'new' FROM generate_series(10001, 110000) g;
UPDATE readings SET v = v + 1 WHERE id % 3 = 0;
SELECT pg_stat_force_next_flush()
"""
SERIAL = ("SET max_parallel_workers_per_gather = 0",)
NO_JOINS = SERIAL + ("SET enable_hashjoin = off", "SET enable_mergejoin = off")


def explain(schema_conn, sql: str, *settings: str, setup: tuple[str, ...] = ()) -> dict:
    """EXPLAIN ANALYZE's document; settings and setup (DDL, SET) live in a rolled-back transaction."""
    with schema_conn.transaction(force_rollback=True):
        for statement in settings + setup:
            schema_conn.execute(statement)
        doc = schema_conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, SETTINGS, FORMAT JSON) {sql}").fetchone()[0][0]
    return {**doc, "Query Text": sql}


def context(doc: dict, *, catalog=None, total_ms: float = 60_000.0, calls: int = 100) -> Context:
    sql = doc["Query Text"]
    # The checks read the sample and the plan; the fingerprint only has to be stable and unique here.
    query = Query(fingerprint=hashlib.sha1(sql.encode()).hexdigest()[:16], normalized=sql, parsed=True,
                  statement_type="select",
                  calls=calls, total_ms=total_ms, mean_ms=total_ms / calls, min_ms=None, max_ms=None, p50_ms=None,
                  p95_ms=None, p99_ms=None, timed_calls=calls, rows=None, first_seen=None, last_seen=None,
                  applications=("app",), sample=sql)
    plan = parse_plan(doc)
    workload = Workload(queries=(query,), sources=("test",), lines=0, statements=calls, other_events=0,
                        skipped_count=0)
    return Context(workload=workload, catalog=catalog, explained=(ExplainedQuery(query, plan, plan.analyzed),))


def findings(code: str, doc: dict, *, name: str = "", catalog=None):
    if RECORD and name:
        CHECKS_DIR.mkdir(parents=True, exist_ok=True)
        (CHECKS_DIR / f"{code.lower()}_{name}.json").write_text(json.dumps([doc], indent=1) + "\n")
    found = list(MODULES[code].run(context(doc, catalog=catalog)))
    for finding in found:
        assert finding.code == code and finding.check == MODULES[code].NAME
        assert finding.title and finding.suggestion and finding.evidence
        assert finding.fingerprint and finding.application == "app"
        assert finding.impact_ms is not None and 0 <= finding.impact_ms <= 60_000.0
    return found


def fix_ddl(suggestion: str) -> tuple[str, ...]:
    """The suggestion's CREATE INDEX / CREATE STATISTICS / ANALYZE / SET LOCAL, runnable in a transaction."""
    statements = [s.strip() for s in suggestion.split(";")]
    runnable = [s.replace("CONCURRENTLY ", "") for s in statements
                if re.match(r"(CREATE (INDEX|STATISTICS)|ANALYZE|ALTER TABLE|SET LOCAL)", s)]
    assert runnable, suggestion
    return tuple(runnable)


# --- ADV001 full scan ------------------------------------------------------------


def test_full_scan_fires_and_its_index_fixes_it(schema_conn):
    sql = "SELECT id, value FROM results WHERE status = 'fail' AND value > 0.5"
    bad = findings("ADV001", explain(schema_conn, sql, *SERIAL), name="bad")
    assert len(bad) == 1
    finding = bad[0]
    assert finding.severity >= Severity.medium and finding.tables == ("results",)
    assert finding.evidence["rows_scanned"] == 200_000 and finding.evidence["removed_share"] > 0.99
    assert finding.evidence["plan"].startswith("Seq Scan on results (rows 200,000 scanned, ")
    assert finding.suggestion.startswith("CREATE INDEX CONCURRENTLY ON results (status, value);")
    assert "advisor suggest-indexes" in finding.suggestion
    good = explain(schema_conn, sql, *SERIAL, setup=fix_ddl(finding.suggestion))
    assert not findings("ADV001", good, name="good")


def test_full_scan_quiet_when_the_filter_keeps_most_rows(schema_conn):
    assert not findings("ADV001", explain(schema_conn, "SELECT count(*) FROM results WHERE status = 'pass'", *SERIAL))


def test_full_scan_on_a_parallel_plan(schema_conn):
    doc = explain(schema_conn, "SELECT id FROM results WHERE status = 'fail'", "SET parallel_setup_cost = 0",
                  "SET parallel_tuple_cost = 0", "SET min_parallel_table_scan_size = 0")
    [finding] = findings("ADV001", doc)
    assert finding.evidence["table_rows"] == pytest.approx(200_000, abs=10)
    assert finding.evidence["plan"].startswith("Parallel Seq Scan on results")


def test_full_scan_from_plain_explain_needs_the_catalog(schema_conn):
    with schema_conn.transaction(force_rollback=True):
        schema_conn.execute(SERIAL[0])
        doc = schema_conn.execute("EXPLAIN (FORMAT JSON) SELECT id FROM results WHERE status = 'fail'").fetchone()[0][0]
    doc["Query Text"] = "SELECT id FROM results WHERE status = 'fail'"
    assert not list(adv001_full_scan.run(context(doc)))
    catalog = SimpleNamespace(table=lambda name, schema=None: SimpleNamespace(rows=200_000, n_mod_since_analyze=0))
    [finding] = adv001_full_scan.run(context(doc, catalog=catalog))
    assert finding.evidence["estimated"] and finding.evidence["rows_scanned"] == 200_000


# --- ADV002 index then filter ------------------------------------------------------


def test_index_filter_fires_and_the_composite_index_fixes_it(schema_conn):
    sql = "SELECT id, pad FROM results WHERE created BETWEEN '2024-03-01' AND '2024-03-10' AND status = 'fail'"
    [finding] = findings("ADV002", explain(schema_conn, sql, *SERIAL), name="bad")
    assert finding.evidence["rows_removed"] >= 5_000 and finding.evidence["removed_share"] > 0.99
    assert finding.suggestion.startswith("CREATE INDEX CONCURRENTLY ON results (status, created);")
    good = explain(schema_conn, sql, *SERIAL, setup=fix_ddl(finding.suggestion))
    assert not findings("ADV002", good, name="good")


def test_index_filter_quiet_under_the_minimum(schema_conn):
    # lot 42 has 100 rows: the filter removes them all, but 100 is below index_filter_min_removed.
    assert not findings("ADV002", explain(schema_conn, "SELECT * FROM results WHERE lot_id = 42 AND status = 'fail'",
                                          *SERIAL, "SET enable_bitmapscan = off"))


# --- ADV003 row misestimate ----------------------------------------------------------


@pytest.fixture(scope="module")
def catalog(schema_conn):
    """The real catalog, once the INSERT after ANALYZE shows in pg_stat_user_tables (flushed asynchronously).

    Read once: an ANALYZE resets n_mod_since_analyze even when its transaction rolls back.
    """
    from advisor.db.catalog import read_catalog

    for _ in range(50):
        catalog = read_catalog(schema_conn)
        if catalog.table("events").n_mod_since_analyze >= 100_000:
            return catalog
        time.sleep(0.1)
    pytest.fail("pg_stat_user_tables never showed the inserted rows")


def test_misestimate_on_stale_statistics_suggests_analyze(schema_conn, catalog):
    sql = "SELECT count(*) FROM events WHERE kind = 'new'"
    [finding] = findings("ADV003", explain(schema_conn, sql, *SERIAL), name="stale_bad", catalog=catalog)
    assert finding.severity == Severity.high  # estimated ~1 row (no 'new' in the stats), 100,000 actual
    assert finding.evidence["direction"] == "underestimate" and finding.evidence["factor"] >= 1000
    assert finding.evidence["stale_tables"][0]["table"] == "events"
    assert finding.suggestion.startswith("ANALYZE events;")
    good = explain(schema_conn, sql, *SERIAL, setup=fix_ddl(finding.suggestion))
    assert not findings("ADV003", good, name="stale_good")


def test_misestimate_on_correlated_columns_suggests_extended_statistics(schema_conn, catalog):
    sql = "SELECT count(*) FROM parts WHERE a = 1 AND b = 1 AND c = 1"
    [finding] = findings("ADV003", explain(schema_conn, sql, *SERIAL), name="correlated_bad", catalog=catalog)
    assert finding.severity == Severity.high  # 2,000 rows; (1/50)³ of 100,000 < 1 row estimated
    assert not finding.evidence["stale_tables"]
    assert finding.suggestion.startswith(
        "CREATE STATISTICS parts_a_b_c_stats (dependencies, mcv) ON a, b, c FROM parts;")
    good = explain(schema_conn, sql, *SERIAL, setup=fix_ddl(finding.suggestion))
    assert not findings("ADV003", good, name="correlated_good")


def test_misestimate_reports_the_deepest_node_once(schema_conn):
    sql = "SELECT p.a, count(*) FROM parts p JOIN parts q ON q.a = p.a WHERE p.a = 1 AND p.b = 1 GROUP BY p.a"
    found = findings("ADV003", explain(schema_conn, sql, *SERIAL))
    assert len(found) == 1 and found[0].evidence["plan"].startswith("Seq Scan on parts p")
    assert found[0].evidence["other_misestimated_nodes"] >= 1


def test_misestimate_quiet_under_a_limit(schema_conn):
    # The Limit stops the scan early: far fewer rows than estimated is expected, not a misestimate.
    assert not findings("ADV003", explain(schema_conn, "SELECT * FROM results WHERE status = 'pass' LIMIT 5", *SERIAL))


# --- ADV004 spill to disk ----------------------------------------------------------------

SPILLS = {
    "sort": ("SELECT id FROM results ORDER BY value OFFSET 199990", (), "Sort"),
    "hash": ("SELECT count(*) FROM results r JOIN results r2 ON r2.id = r.id", ("SET enable_mergejoin = off",),
             "Hash"),
    "hashagg": ("SELECT lot_id, created, count(*) FROM results GROUP BY lot_id, created", ("SET enable_sort = off",),
                "HashAggregate"),
}


@pytest.mark.parametrize("case", SPILLS)
def test_spill_fires_and_the_suggested_work_mem_fixes_it(schema_conn, case):
    sql, settings, kind = SPILLS[case]
    bad = explain(schema_conn, sql, *SERIAL, *settings, "SET work_mem = '1MB'")
    [finding] = findings("ADV004", bad, name=f"{case}_bad")
    assert kind in finding.title and finding.evidence["spills"]
    work_mem = finding.evidence["suggested_work_mem"]
    assert re.fullmatch(r"\d+MB", work_mem) and f"SET LOCAL work_mem = '{work_mem}';" in finding.suggestion
    good = explain(schema_conn, sql, *SERIAL, *settings, setup=fix_ddl(finding.suggestion))
    assert not findings("ADV004", good, name=f"{case}_good"), work_mem


# --- ADV005 nested loop over a scan --------------------------------------------------------


@pytest.mark.parametrize("material", ["on", "off"])
def test_nested_loop_over_a_scan_fires_and_an_index_fixes_it(schema_conn, material):
    sql = "SELECT count(*) FROM picks p JOIN fabs f ON f.id = p.lot_id"
    settings = NO_JOINS + (f"SET enable_material = {material}",)
    [finding] = findings("ADV005", explain(schema_conn, sql, *settings), name=f"material_{material}_bad")
    assert finding.evidence["inner_loops"] == 3000
    assert finding.evidence["settings"]["enable_hashjoin"] == "off"
    assert ("Materialize" in " ".join(finding.evidence["plan"])) == (material == "on")
    assert finding.suggestion.startswith("CREATE INDEX CONCURRENTLY ON fabs (id);")
    assert "enable_hashjoin" in finding.suggestion
    good = explain(schema_conn, sql, *settings, setup=fix_ddl(finding.suggestion))
    assert not findings("ADV005", good, name=f"material_{material}_good")


def test_nested_loop_with_memoize_over_an_index_is_quiet(schema_conn):
    doc = explain(schema_conn, "SELECT count(*) FROM picks p JOIN results r ON r.lot_id = p.lot_id", *NO_JOINS)
    assert any(n.node_type == "Memoize" for n in parse_plan(doc).nodes())
    assert not findings("ADV005", doc, name="memoize_good")


# --- ADV006 / ADV007 / ADV008 -----------------------------------------------------------------


def test_lossy_bitmap_fires_and_the_suggested_work_mem_fixes_it(schema_conn):
    sql = "SELECT count(pad) FROM results WHERE created BETWEEN '2024-02-01' AND '2024-02-05'"
    settings = SERIAL + ("SET enable_seqscan = off", "SET enable_indexscan = off")
    [finding] = findings("ADV007", explain(schema_conn, sql, *settings, "SET work_mem = '64kB'"), name="bad")
    assert finding.evidence["lossy_heap_blocks"] > 0
    good = explain(schema_conn, sql, *settings, setup=fix_ddl(finding.suggestion))
    assert not findings("ADV007", good, name="good")


def test_workers_not_launched_fires(schema_conn):
    sql = "SELECT count(*) FROM results WHERE value < 0.5"
    parallel = ("SET max_parallel_workers_per_gather = 2", "SET parallel_setup_cost = 0",
                "SET parallel_tuple_cost = 0", "SET min_parallel_table_scan_size = 0")
    [finding] = findings("ADV008", explain(schema_conn, sql, *parallel, "SET max_parallel_workers = 0"), name="bad")
    assert finding.evidence["workers_planned"] == 2 and finding.evidence["workers_launched"] == 0
    assert "max_parallel_workers" in finding.suggestion
    assert not findings("ADV008", explain(schema_conn, sql, *parallel, "SET max_parallel_workers = 8"), name="good")


def test_heap_fetches_fire_until_vacuum(schema_conn):
    sql = "SELECT count(id) FROM readings WHERE id < 60000"
    settings = SERIAL + ("SET enable_seqscan = off", "SET enable_bitmapscan = off")
    [finding] = findings("ADV006", explain(schema_conn, sql, *settings), name="bad")
    assert finding.evidence["heap_fetches"] >= 20_000 and finding.suggestion.startswith("VACUUM (ANALYZE) readings;")
    schema_conn.execute("VACUUM (ANALYZE) readings")  # the fix itself; this table serves no other test
    assert not findings("ADV006", explain(schema_conn, sql, *settings), name="good")


# --- ADV009 large offset -----------------------------------------------------------------------


def test_large_offset_fires_and_the_keyset_query_returns_the_same_page(schema_conn):
    sql = ("SELECT id, created, value FROM results WHERE status = 'pass' OR lot_id = 7 "
           "ORDER BY created DESC, id DESC LIMIT 20 OFFSET 5000")
    [finding] = findings("ADV009", explain(schema_conn, sql, *SERIAL), name="bad")
    assert finding.evidence["rows_discarded"] == 5000 and finding.evidence["offset"] == 5000
    keyset = finding.suggestion.split(";")[0]
    assert "OFFSET" not in keyset and "(created, id) < (:last_created, :last_id)" in keyset
    assert "(status = 'pass' OR lot_id = 7) AND" in keyset
    # The last row of the previous page, bound into the keyset query, gives exactly the OFFSET page.
    last = schema_conn.execute(sql.replace("LIMIT 20 OFFSET 5000", "LIMIT 1 OFFSET 4999")).fetchone()
    bound = keyset.replace(":last_created", f"'{last[1]}'::date").replace(":last_id", str(last[0]))
    assert schema_conn.execute(bound).fetchall() == schema_conn.execute(sql).fetchall()
    assert not findings("ADV009", explain(schema_conn, bound, *SERIAL), name="good")


def test_large_offset_mixed_directions_and_text_only_queries(schema_conn):
    sql = "SELECT id FROM results ORDER BY created DESC, id LIMIT 10 OFFSET 2000"
    ctx = context(explain(schema_conn, sql, *SERIAL))
    text_only = Context(workload=ctx.workload, explained=())  # no plan: the text suffices
    [finding] = adv009_large_offset.run(text_only)
    assert "(created < :last_created OR (created = :last_created AND id > :last_id))" in finding.suggestion
    assert finding.impact_ms == pytest.approx(60_000.0 * 2000 / 2010, rel=1e-3)
    last = schema_conn.execute(sql.replace("LIMIT 10 OFFSET 2000", "LIMIT 1 OFFSET 1999")).fetchone()
    created = schema_conn.execute("SELECT created FROM results WHERE id = %s", [last[0]]).fetchone()[0]
    bound = (finding.suggestion.split(";")[0].replace(":last_created", f"'{created}'::date")
             .replace(":last_id", str(last[0])))
    assert schema_conn.execute(bound).fetchall() == schema_conn.execute(sql).fetchall()
    assert not list(adv009_large_offset.run(context(explain(schema_conn, sql.replace("2000", "20"), *SERIAL))))


# --- recorded plans ------------------------------------------------------------------------------


RECORDED = sorted(CHECKS_DIR.glob("*.json"))


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_recorded_plans(path):
    """Offline replay: a recorded *_bad plan makes its check fire, a *_good plan does not."""
    code = path.stem.split("_", 1)[0].upper()
    doc = json.loads(path.read_text())[0]
    found = list(MODULES[code].run(context(doc)))
    assert bool(found) == path.stem.endswith("_bad"), [f.title for f in found]


def test_checks_are_documented():
    codes = [m.CODE for m in MODULES.values()]
    assert len(set(codes)) == len(codes)
    for module in MODULES.values():
        doc = module.__doc__ or ""
        assert doc.startswith(f"{module.CODE} {module.NAME}:"), module.__name__
        assert "Signal" in doc and "Fix" in doc and "Impact" in doc
        fields = set(re.findall(r"``([a-z_]+)``", doc)) & set(DEFAULT.__dataclass_fields__)
        assert all(hasattr(DEFAULT, f) for f in fields)


def test_file_code_and_fixtures_share_one_name():
    """As sqlfluff's rules: a check's module is named after its code and NAME, its recorded plans after its code."""
    for check in CHECKS:
        assert check.run.__module__ == f"advisor.checks.{check.code.lower()}_{check.name}"
    assert RECORDED and {path.stem.split("_", 1)[0] for path in RECORDED} <= {check.code.lower() for check in CHECKS}


# --- helpers, without a server ---------------------------------------------------------------------


@pytest.mark.parametrize("text, alias, equality, ranges", [
    ("((status)::text = ANY ('{a,b}'::text[]))", None, ("status",), ()),
    ("((created >= '2024-02-01'::date) AND (status = 'x'::text))", None, ("status",), ("created",)),
    ("((r.lot_id = p.lot_id) AND (r.id < 100000))", "r", ("lot_id",), ("id",)),
    ("(lower(name) = 'x'::text)", None, ("(LOWER(name))",), ()),
    ("((name)::text ~~ 'abc%'::text)", None, (), ("name",)),
    ("((name)::text ~~ '%abc'::text)", None, (), ()),  # a leading wildcard: no b-tree help
    ("((a = 1) OR (b = 2))", None, (), ()),
    ("(NOT (hashed SubPlan 1))", None, (), ()),
    ("((n)::double precision > $1)", None, (), ("n",)),
])
def test_condition_columns(text, alias, equality, ranges):
    from advisor.checks._plan import condition_columns

    keys = condition_columns(text, alias=alias, relation="t")
    assert (keys.equality, keys.range) == (equality, ranges)


@pytest.mark.parametrize("sql, expected", [
    ("SELECT lot_id, count(*) FROM results GROUP BY lot_id ORDER BY 2 DESC, 1 DESC LIMIT 10 OFFSET 2000",
     "HAVING (COUNT(*), lot_id) < (:last_key1, :last_lot_id) ORDER BY 2 DESC, 1 DESC LIMIT 10"),
    ("SELECT * FROM (SELECT id FROM results ORDER BY id LIMIT 10 OFFSET 9000) s",
     "SELECT * FROM (SELECT id FROM results WHERE id > :last_id ORDER BY id LIMIT 10) AS s"),
    ("SELECT id FROM results WHERE lot_id = $1 ORDER BY id LIMIT $2 OFFSET $3",
     "WHERE lot_id = $1 AND id > :last_id ORDER BY id LIMIT $2"),
])
def test_keyset_rewrites(sql, expected):
    query = Query(fingerprint="f", normalized=sql, parsed=True, statement_type="select", calls=1, total_ms=1.0,
                  mean_ms=1.0, min_ms=None, max_ms=None, p50_ms=None, p95_ms=None, p99_ms=None, timed_calls=1,
                  rows=None, first_seen=None, last_seen=None, sample=sql, sample_parameters="$2 = '10', $3 = '5000'")
    paging = adv009_large_offset.read_paging(query)
    assert paging.offset >= 2000
    assert expected in adv009_large_offset.keyset_rewrite(paging)[0]
