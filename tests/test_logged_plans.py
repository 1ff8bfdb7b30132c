"""Plan checks on the plans auto_explain logged (issue #13), on a real server.

Two throwaway clusters run the same deterministic workload with auto_explain
(log_analyze, log_buffers) writing text in one and JSON in the other: a full
scan keeping 0.1 % of a 100,000-row table (ADV001), a sort spilling under a
64 kB work_mem (ADV004) and a page at OFFSET 50,000 (ADV009), plus plan shapes
the text reader must know (hash join and hashed aggregate, bitmap OR, CTE and
InitPlan, index-only scan, a node never executed). The text reader is held to
EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) of the same queries key by key; scan
reads the logs without a database and must report what scanning with one
reports by explaining, and with a database must not run a logged query again.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields, replace

import psycopg
import pytest

from advisor.commands.scan import scan
from advisor.db.embedded import EmbeddedCluster, EmbeddedError
from advisor.plan_text import PlanTextError, logged_plan, text_plan
from advisor.plans import PlanNode, parse_plan
from advisor.workload.fingerprint import fingerprint
from advisor.workload.model import Workload
from advisor.workload.sources import load_workload
from advisor.workload.sources.logs import LogFiles

FULL_SCAN = "SELECT id, pad FROM big WHERE k = 7"
SPILL = "SELECT k, pad FROM big ORDER BY pad DESC"
OFFSET = "SELECT id, pad FROM big ORDER BY id LIMIT %s OFFSET %s"  # extended protocol, logged parameters
SHAPES = (
    "SELECT b.k, count(*) FROM big b JOIN small s ON s.id = b.k GROUP BY b.k",
    "SELECT id, k FROM big WHERE id < 50 OR id > 99990",
    "WITH x AS MATERIALIZED (SELECT * FROM big WHERE id < 10) SELECT x.id, m.top FROM x, (SELECT max(id) AS top FROM big) m",
    "SELECT id FROM big WHERE id BETWEEN 10 AND 2000",
    "SELECT b.id, s.name FROM big b JOIN small s ON s.id = b.k WHERE b.id = -1",
)
# Deterministic plans on both servers: no parallel workers; ANALYZE samples every row (300 × the target ≥ 100,000).
SETTINGS = {"work_mem": "64kB", "max_parallel_workers_per_gather": "0", "auto_explain.log_min_duration": "-1",
            "default_statistics_target": "1000"}
TIMING = {"Actual Startup Time", "Actual Total Time"}
TEXT_OMITS = {"Inner Unique"}  # the text format prints it only with VERBOSE


def _driver(cluster: EmbeddedCluster, fmt: str) -> None:
    """The workload: loaded and warmed up unlogged, then each query once under auto_explain."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")  # counts the EXPLAINs scan runs
        conn.execute("CREATE TABLE big (id int PRIMARY KEY, k int, pad text)")
        conn.execute("INSERT INTO big SELECT g, g % 1000, md5(g::text) FROM generate_series(1, 100000) g")
        conn.execute("CREATE TABLE small (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO small SELECT g, 'n' || g FROM generate_series(0, 999) g")
        conn.execute("VACUUM ANALYZE big")
        conn.execute("VACUUM ANALYZE small")
        for _ in range(2):  # warm: the logged run and the EXPLAINs below then read the same buffers
            _queries(conn)
        conn.execute("SET log_min_duration_statement = 0")
        conn.execute("SET auto_explain.log_min_duration = 0")
        conn.execute("SET auto_explain.log_analyze = on")
        conn.execute("SET auto_explain.log_buffers = on")
        conn.execute(f"SET auto_explain.log_format = {fmt}")
        _queries(conn)
        conn.execute("SET auto_explain.log_min_duration = -1")
        conn.execute("SELECT 'end of run'").fetchall()
    deadline = time.monotonic() + 15
    logs = (cluster.stderr_log, cluster.csv_log, cluster.json_log)
    while not all(f.exists() and "'end of run'" in f.read_text(errors="replace") for f in logs):
        assert time.monotonic() < deadline, "the server logs never showed the end of the run"
        time.sleep(0.1)


def _queries(conn: psycopg.Connection) -> None:
    conn.execute(FULL_SCAN).fetchall()
    conn.execute(SPILL).fetchall()
    conn.execute(OFFSET, (10, 50_000)).fetchall()
    for sql in SHAPES:
        conn.execute(sql).fetchall()


@pytest.fixture(scope="module", params=["text", "json"])
def logged(request):
    """(format, cluster, workload read from its stderr log) for a cluster whose auto_explain writes ``format``."""
    try:
        cluster = EmbeddedCluster(settings=SETTINGS).start()
    except EmbeddedError as e:
        pytest.skip(f"no local PostgreSQL: {e}")
    try:
        _driver(cluster, request.param)
        yield request.param, cluster, _workload(cluster, str(cluster.stderr_log))
    finally:
        cluster.stop()


def _workload(cluster: EmbeddedCluster, path: str) -> Workload:
    prefix = cluster.log_line_prefix if path == str(cluster.stderr_log) else None  # csvlog and jsonlog need none
    return load_workload([LogFiles((path,), prefix=prefix)])


def _query(workload: Workload, sql: str):
    fp = fingerprint(sql.replace("%s", "1")).id
    return next(q for q in workload.queries if q.fingerprint == fp)


def _same(mine: dict, theirs: dict, path: str = "Plan") -> list[str]:
    """Every key of either tree that differs, timings and what text never prints aside."""
    diffs = []
    for key in sorted((set(mine) | set(theirs)) - TIMING - TEXT_OMITS):
        a, b = mine.get(key, "missing"), theirs.get(key, "missing")
        if key in ("Plans", "Workers") and isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                diffs += _same(x, y, f"{path}/{key}[{i}]")
        elif key == "Shared Hit Blocks" and isinstance(a, int) and isinstance(b, int):
            if abs(a - b) > 5 + 0.01 * b:  # two runs: a sort's or a hash's own lookups may hit a few more
                diffs.append(f"{path}: {key}: text {a!r}, JSON {b!r}")
        elif a != b:
            diffs.append(f"{path}: {key}: text {a!r}, JSON {b!r}")
    return diffs


# --- the text reader against the server's own JSON ------------------------------------------


def test_text_plans_read_as_explain_json(logged):
    fmt, cluster, workload = logged
    if fmt != "text":
        pytest.skip("the text cluster's plans")
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        for sql, params in [(FULL_SCAN, None), (SPILL, None), (OFFSET, (10, 50_000)), *((s, None) for s in SHAPES)]:
            q = _query(workload, sql)
            assert q.plan is not None and not q.plan.lstrip().startswith("{"), sql
            doc = text_plan(q.plan)
            assert doc["Query Text"] == sql.replace("%s", "$1", 1).replace("%s", "$2")
            explained = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params).fetchone()[0][0]
            assert _same(doc["Plan"], explained["Plan"]) == [], sql


NODE_FIELDS = [f.name for f in fields(PlanNode) if not f.name.endswith("_ms") and f.name not in
               ("raw", "children", "buffers", "exclusive_buffers", "workers")]


def test_text_and_json_logs_give_the_same_trees(logged):
    """The same workload logged as text by one server and as JSON by the other: the same plan trees."""
    fmt, _, workload = logged
    other_fmt, other = _FIRST.setdefault("run", (fmt, workload))
    if other_fmt == fmt:
        pytest.skip("compared when the second format has run")
    for sql in (FULL_SCAN, SPILL, OFFSET, *SHAPES):
        mine, theirs = logged_plan(_query(workload, sql).plan or ""), logged_plan(_query(other, sql).plan or "")
        assert mine.analyzed and theirs.analyzed
        for a, b in zip(mine.nodes(), theirs.nodes(), strict=True):
            assert {f: getattr(a, f) for f in NODE_FIELDS} == {f: getattr(b, f) for f in NODE_FIELDS}, sql


_FIRST: dict[str, tuple[str, Workload]] = {}  # the first format's workload, for the second to compare with


# --- scan on logged plans ---------------------------------------------------------------------


def _by_code(result, sql: str) -> dict[str, dict]:
    fp = fingerprint(sql.replace("%s", "1")).id
    return {f.code: f.evidence for f in result.findings if f.fingerprint == fp}


FIGURES = {"ADV001": ("table_rows", "rows_scanned", "rows_returned", "loops"),
           "ADV004": ("temp_blocks_written", "needed_kb"),
           "ADV009": ("offset", "limit", "rows_read", "rows_returned", "rows_discarded")}


@pytest.mark.parametrize("log", ["stderr_log", "csv_log", "json_log"])
def test_scan_without_a_database_checks_the_logged_plans(logged, log):
    _, cluster, _ = logged
    workload = _workload(cluster, str(getattr(cluster, log)))
    result = scan(workload)
    for sql, code in ((FULL_SCAN, "ADV001"), (SPILL, "ADV004"), (OFFSET, "ADV009")):
        evidence = _by_code(result, sql)[code]
        assert evidence["plan_source"] == "log (auto_explain)"
        assert evidence["plan_logged_at"] == _query(workload, sql).plan_at
    skipped = dict(result.skipped_checks)
    assert not any(check.startswith("ADV00") for check in skipped)  # the plan checks ran
    assert skipped["ADV201 index_hygiene"] == "needs a database (--dsn): the catalog"


def test_same_findings_and_figures_as_explaining(logged):
    _, cluster, workload = logged
    from_log = scan(workload)
    explained = scan(workload, cluster.dsn(), explain="always", measure_round_trip=False)
    for sql, code in ((FULL_SCAN, "ADV001"), (SPILL, "ADV004"), (OFFSET, "ADV009")):
        mine, theirs = _by_code(from_log, sql)[code], _by_code(explained, sql)[code]
        assert "plan_source" not in theirs  # always: the advisor's own EXPLAIN
        assert {k: mine[k] for k in FIGURES[code]} == {k: theirs[k] for k in FIGURES[code]}, code
    plan_codes = {f.code for f in explained.findings if f.code.startswith("ADV00")}
    assert plan_codes <= {f.code for f in from_log.findings}


def _explains(cluster: EmbeddedCluster) -> dict[str, int]:
    """EXPLAIN statements on big since the last reset, by text, as pg_stat_statements counted them."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        rows = conn.execute("SELECT query, calls FROM pg_stat_statements WHERE query ILIKE '%explain%big%'").fetchall()
    return dict(rows)


def _reset(cluster: EmbeddedCluster) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def test_explain_missing_does_not_run_a_logged_query_again(logged):
    _, cluster, workload = logged
    _reset(cluster)
    result = scan(workload, cluster.dsn(), measure_round_trip=False)  # --explain missing, the default
    assert {"ADV001", "ADV004", "ADV009"} <= {f.code for f in result.findings}
    assert _explains(cluster) == {}, "a query with a logged plan was explained again"
    assert result.explained == 1  # only SELECT 'end of run': logged without a plan
    _reset(cluster)
    scan(workload, cluster.dsn(), explain="always", measure_round_trip=False)
    ran = _explains(cluster)
    assert any("k = $1" in q or "k = 7" in q for q in ran), ran  # always: the full scan is explained again


def test_explain_never_runs_no_explain(logged):
    _, cluster, workload = logged
    _reset(cluster)
    # a query the log has no plan for: with never it stays unexplained, and says why
    bare = replace(_query(workload, FULL_SCAN), plan=None, plan_at=None, fingerprint="unplanned")
    result = scan(replace(workload, queries=(*workload.queries, bare)), cluster.dsn(), explain="never",
                  measure_round_trip=False)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        explains = conn.execute("SELECT count(*) FROM pg_stat_statements WHERE query ILIKE '%explain%'").fetchone()[0]
    assert explains == 0
    assert {"ADV001", "ADV004", "ADV009"} <= {f.code for f in result.findings}
    assert ("unplanned", "no plan in the log, and --explain never") in {
        (n.fingerprint, n.reason) for n in result.not_explained}


def test_a_log_without_plans_scans_as_before(logged):
    """No logged plan: the plan checks are skipped for want of a database, as they always were."""
    _, _, workload = logged
    bare = replace(workload, queries=tuple(replace(q, plan=None, plan_at=None) for q in workload.queries))
    result = scan(bare)
    assert result.notes == ()
    assert dict(result.skipped_checks)["ADV001 full_scan"] == "needs a database (--dsn): query plans"
    assert {f.code for f in result.findings} <= {"ADV009", "ADV101", "ADV102", "ADV103"}  # the text-only checks


def test_an_unreadable_plan_is_noted_and_explained(logged):
    _, cluster, workload = logged
    q = _query(workload, FULL_SCAN)
    broken = replace(q, plan="Query Text: " + FULL_SCAN + "\nno plan here")
    others = tuple(x for x in workload.queries if x.fingerprint != q.fingerprint)
    without_db = scan(replace(workload, queries=(broken, *others)))
    assert any(n.startswith(f"query {q.fingerprint}: its logged plan could not be read") for n in without_db.notes)
    assert "ADV001" not in _by_code(without_db, FULL_SCAN)
    with_db = scan(replace(workload, queries=(broken, *others)), cluster.dsn(), measure_round_trip=False)
    assert "plan_source" not in _by_code(with_db, FULL_SCAN)["ADV001"]  # explained instead


# --- the text reader's own rules ------------------------------------------------------------


def test_text_reader_says_what_it_cannot_read():
    with pytest.raises(PlanTextError, match="no plan node"):
        text_plan("Query Text: SELECT 1\nsomething else")
    with pytest.raises(PlanTextError, match="does not know"):
        text_plan("Query Text: SELECT 1\nResult  (cost=0.00..0.01 rows=1 width=4)\n  what is this")
    with pytest.raises(PlanTextError, match="unreadable JSON"):
        logged_plan('{"Query Text": "SELECT 1"')


def test_text_reader_details():
    doc = text_plan(
        "Query Text: SELECT …\n"
        "Hash Right Anti Join  (cost=1.00..2.00 rows=1 width=4) (actual rows=3 loops=1)\n"
        "  Hash Cond: (a.id = b.id)\n"
        "  ->  Seq Scan on public.a x  (cost=0.00..1.00 rows=10 width=4) (never executed)\n"
        "        Filter: (f(x.k, 2) > 0)\n"
        "  ->  Hash  (cost=1.00..1.00 rows=1 width=4) (actual rows=1 loops=1)\n"
        "        Buckets: 4096 (originally 1024)  Batches: 4 (originally 1)  Memory Usage: 9kB\n"
        "        ->  Sort  (cost=1.00..1.00 rows=1 width=4) (actual rows=1 loops=1)\n"
        "              Sort Key: lower(b.name), b.id DESC\n"
        "              Sort Method: quicksort  Memory: 25kB\n"
        "              Worker 0:  Sort Method: external merge  Disk: 4696kB\n"
        "              ->  Seq Scan on b  (cost=0.00..1.00 rows=1 width=4) (actual rows=1 loops=1)\n"
        "JIT:\n"
        "  Functions: 3\n")
    join = doc["Plan"]
    assert (join["Node Type"], join["Join Type"], join["Actual Rows"]) == ("Hash Join", "Right Anti", 3)
    scan_a, hash_node = join["Plans"]
    assert (scan_a["Schema"], scan_a["Relation Name"], scan_a["Alias"], scan_a["Actual Loops"]) == ("public", "a", "x", 0)
    assert scan_a["Parent Relationship"] == "Outer" and hash_node["Parent Relationship"] == "Inner"
    assert scan_a["Rows Removed by Filter"] == 0
    assert (hash_node["Hash Buckets"], hash_node["Original Hash Buckets"], hash_node["Hash Batches"],
            hash_node["Original Hash Batches"], hash_node["Peak Memory Usage"]) == (4096, 1024, 4, 1, 9)
    sort = hash_node["Plans"][0]
    assert sort["Sort Key"] == ["lower(b.name)", "b.id DESC"]
    assert (sort["Sort Method"], sort["Sort Space Used"], sort["Sort Space Type"]) == ("quicksort", 25, "Memory")
    assert sort["Workers"] == [{"Worker Number": 0, "Sort Method": "external merge", "Sort Space Used": 4696,
                                "Sort Space Type": "Disk"}]
    plan = parse_plan(doc)
    assert plan.analyzed and plan.root.rows_total == 3
    json.dumps(doc)  # plain JSON, like the server's
