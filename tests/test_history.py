"""The run history on SQLite and on the harness PostgreSQL: trends, new and resolved findings, regressions, pruning."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import select

from advisor.findings import Finding, Severity
from advisor.history import History, database_label, engine_url, metadata
from advisor.report.nightly import regression_document, summary_markdown
from advisor.report.words import regression_text
from advisor.workload.model import Query, Workload

PASSWORD = "s3cr3t-P@ss"
TARGET_DSN = f"postgresql://alice:{PASSWORD.replace('@', '%40')}@db.example.com:5433/shop?sslmode=require"
TARGET_KV = f"host=db.example.com port=5433 dbname=shop user=alice password='{PASSWORD}'"


# The least report document summary_markdown renders (its history part is replaced per test).
REPORT_DOC = {
    "run": {"database": "shop", "started_at": "2026-03-04T02:00:00+00:00", "window": {"first_seen": None, "last_seen": None}},
    "summary": {"statements": 0, "queries": 0, "top_findings": [], "warnings": [],
                "estimated_savings": {"index_ms": 0.0, "findings_impact_ms": 0.0, "workload_total_ms": 0.0}},
    "unanalysed": [],
    "history": {"previous_run": None, "threshold_pct": 20.0, "new_findings": [], "resolved_findings": [], "regressions": []},
}


def query(fp: str, calls: int, total_ms: float, p95_ms: float | None, normalized: str | None = None) -> Query:
    return Query(
        fingerprint=fp,
        normalized=normalized or f"SELECT * FROM t_{fp} WHERE id = $1",
        parsed=True,
        statement_type="select",
        calls=calls,
        total_ms=total_ms,
        mean_ms=total_ms / calls if calls else None,
        min_ms=None,
        max_ms=None,
        p50_ms=None,
        p95_ms=p95_ms,
        p99_ms=None,
        timed_calls=calls,
        rows=None,
        first_seen=None,
        last_seen=None,
        sample=f"SELECT * FROM t_{fp} WHERE id = 4242 /* literal {PASSWORD} */",
        sample_parameters=f"$1 = '{PASSWORD}'",
        sources=("log",),
    )


def workload(*queries: Query, sources=("/var/log/postgresql/postgresql.log",)) -> Workload:
    return Workload(queries=tuple(queries), sources=tuple(sources), lines=100,
                    statements=sum(q.calls for q in queries), other_events=0, skipped_count=0)


def finding(code: str, fp: str | None, severity=Severity.medium, impact: float | None = 100.0) -> Finding:
    return Finding(code=code, check="check", severity=severity, title=f"{code} on {fp}",
                   suggestion="CREATE INDEX …", fingerprint=fp, normalized=f"SELECT … {fp}", impact_ms=impact)


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history' / 'runs.db'}"
    dsn = request.getfixturevalue("pg_dsn")
    with psycopg.connect(dsn, autocommit=True) as conn:  # every test starts from empty tables
        for table in ("error_kinds", "event_runs", "findings", "query_stats", "runs"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    return dsn


def record_two_runs(h: History, db: str) -> tuple[int, int]:
    first = h.record(
        db,
        workload(query("a", 100, 10_000.0, 200.0), query("b", 50, 50_000.0, 1500.0), query("c", 30, 300.0, 10.0),
                 query("gone", 5, 5.0, 1.0)),
        [finding("ADV001", "a"), finding("ADV002", "b"), finding("ADV009", None, Severity.info, None)],
        started_at="2026-01-01T02:00:00+00:00",
    )
    second = h.record(
        db,
        workload(query("a", 100, 15_000.0, 210.0),  # total +50 %: a regression
                 query("b", 50, 55_000.0, 1600.0),  # +10 % and +6.7 %: under the threshold
                 query("c", 30, 300.0, 30.0),  # p95 tripled: a regression
                 query("new", 1, 1.0, 1.0)),
        [finding("ADV001", "a"), finding("ADV003", "c", Severity.high)],
        started_at="2026-01-02T02:00:00+00:00",
    )
    return first, second


def test_a_finding_whose_query_did_not_run_is_not_resolved(history_url):
    """An incremental read that holds none of a query says nothing of its finding: unseen, not resolved."""
    with History(history_url) as h:
        record_two_runs(h, "quiet")
        h.record("quiet", workload(query("a", 100, 15_000.0, 210.0)), [finding("ADV001", "a")],
                 started_at="2026-01-03T02:00:00+00:00")
        c = h.compare("quiet")
        # ADV003 on "c" fired the night before; "c" did not run tonight.
        assert c.resolved_findings == ()
        h.record("quiet", workload(query("a", 100, 15_000.0, 210.0), query("c", 30, 300.0, 10.0)), [],
                 started_at="2026-01-04T02:00:00+00:00")
        assert {f.key for f in h.compare("quiet").resolved_findings} == {("ADV001", "a")}


def test_url_forms():
    assert engine_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert engine_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert engine_url("sqlite:///x.db") == "sqlite:///x.db"
    assert engine_url("/tmp/h.db") == "sqlite:////tmp/h.db"


def test_database_label_has_no_credentials():
    assert database_label(TARGET_DSN) == "db.example.com:5433/shop"
    assert database_label(TARGET_KV) == "db.example.com:5433/shop"
    assert database_label("postgresql:///shop") == "shop"
    assert database_label("shop") == "shop"


def test_trend_oldest_first(history_url):
    with History(history_url) as h:
        record_two_runs(h, "shop")
        trend = h.trend("shop", "a")
        assert [tuple(p) for p in trend] == [
            ("2026-01-01T02:00:00.000000+00:00", 100, 10_000.0, 200.0),
            ("2026-01-02T02:00:00.000000+00:00", 100, 15_000.0, 210.0),
        ]
        assert len(h.trend("shop", "a", limit=1)) == 1 and h.trend("shop", "a", limit=1)[0].total_ms == 15_000.0
        assert [p.calls for p in h.trend("shop", "new")] == [1]
        assert h.trend("other", "a") == []
        runs = h.runs("shop")
        assert [r.started_at[:10] for r in runs] == ["2026-01-02", "2026-01-01"]  # newest first
        assert runs[0].queries == 4 and runs[0].statements == 181 and runs[0].tool_version
        assert "postgresql.log" in runs[0].source


def test_compare_new_resolved_and_regressions(history_url):
    with History(history_url) as h:
        assert h.compare("shop").before is None
        first, second = record_two_runs(h, "shop")
        c = h.compare("shop")
        assert (c.before.id, c.after.id) == (first, second)
        assert {f.key for f in c.new_findings} == {("ADV003", "c")}
        assert c.new_findings[0].severity is Severity.high
        assert {f.key for f in c.resolved_findings} == {("ADV002", "b"), ("ADV009", None)}
        by_fp = {r.fingerprint: r for r in c.regressions}
        assert set(by_fp) == {"a", "c"}  # b rose by 10 %, under 20 %; "new" and "gone" have no pair
        assert by_fp["a"].metrics == ("total_ms",)
        assert (by_fp["a"].total_ms_before, by_fp["a"].total_ms_after) == (10_000.0, 15_000.0)
        assert by_fp["a"].total_change_pct == pytest.approx(50.0)
        assert by_fp["c"].metrics == ("p95_ms",)
        assert (by_fp["c"].p95_ms_before, by_fp["c"].p95_ms_after) == (10.0, 30.0)
        assert by_fp["c"].normalized == "SELECT * FROM t_c WHERE id = $1"
        # the threshold is a parameter
        assert {r.fingerprint for r in h.compare("shop", threshold_pct=5).regressions} == {"a", "b", "c"}
        assert {r.fingerprint for r in h.compare("shop", threshold_pct=60).regressions} == {"c"}
        assert h.compare("shop", threshold_pct=500).regressions == ()


def test_prune_keeps_the_newest(history_url):
    with History(history_url) as h:
        ids = [h.record("shop", workload(query("a", i + 1, 10.0 * (i + 1), 1.0)), [finding("ADV001", "a")],
                        started_at=f"2026-02-{i + 1:02d}T00:00:00Z") for i in range(5)]
        other = h.record("other", workload(query("a", 1, 1.0, 1.0)), [finding("ADV001", "a")])
        assert h.prune("shop", keep=2) == 3
        assert [r.id for r in h.runs("shop")] == [ids[4], ids[3]]
        assert [p.calls for p in h.trend("shop", "a")] == [4, 5]
        assert h.findings(ids[0]) == [] and h.query_stats(ids[0]) == {}
        assert [r.id for r in h.runs("other")] == [other]  # another database is untouched
        assert h.prune("shop", keep=2) == 0


def test_no_dsn_or_password_is_stored(history_url):
    """A name derived from a DSN with a password, and a DSN passed by mistake: neither leaves a secret behind."""
    with History(history_url) as h:
        label = database_label(TARGET_DSN)
        h.record(label, workload(query("a", 1, 1.0, 1.0),
                                 sources=("/var/log/pg.log", "pg_stat_statements (postgresql://alice:***@db.example.com/shop)")),
                 [finding("ADV001", "a")])
        h.record(TARGET_KV, workload(query("a", 2, 2.0, 1.0)), [finding("ADV001", "a")])  # a DSN given by mistake
        assert [r.database for r in h.runs(label)] == [label, label]
        rows = []
        with h.engine.connect() as conn:
            for table in metadata.sorted_tables:
                rows += [tuple(r) for r in conn.execute(select(table))]
    text = repr(rows)
    assert len(rows) == 2 + 2 + 2
    for secret in (PASSWORD, PASSWORD.replace("@", "%40"), "alice", "password", "4242"):
        assert secret not in text
    assert "$1" in text  # only masked SQL


# --- regressions are not noise (RegressionRule) ----------------------------------------------


def record_runs(h: History, db: str, runs: list[list[Query]]) -> None:
    for day, queries in enumerate(runs, 1):
        h.record(db, workload(*queries), [], started_at=f"2026-03-{day:02d}T02:00:00+00:00")


def test_a_p95_rise_is_reported_as_the_p95_change(history_url):
    """The p95 rose 77 % while the total fell 43 % (fewer calls): the p95 regressed, and its change is printed."""
    with History(history_url) as h:
        record_runs(h, "shop", [[query("r", 400, 5000.0, 10.0)], [query("r", 410, 5100.0, 10.3)],
                                [query("r", 400, 5000.0, 10.0)], [query("r", 200, 2850.0, 17.7)]])
        [g] = h.compare("shop").regressions
    assert g.metrics == ("p95_ms",) and g.p95_change_pct == pytest.approx(77.0)
    doc = regression_document(g)
    assert regression_text(doc) == "p95 +77 % (10.0 → 17.7 ms)"
    assert doc["changes"]["p95_ms"]["spread_pct"] == pytest.approx(3.0, abs=0.1)  # 10.0 → 10.3
    summary = summary_markdown({**REPORT_DOC, "history": {**REPORT_DOC["history"], "previous_run": "x", "regressions": [doc]}})
    assert "p95 +77 % (10.0 → 17.7 ms)" in summary and "-43" not in summary and "+-" not in summary


def test_sub_millisecond_statements_never_regress(history_url):
    """BEGIN at 0.034 → 0.043 ms (+26 %, 1,000 calls on both sides) is under the absolute floors."""
    with History(history_url) as h:
        record_runs(h, "shop", [[query("begin", 1000, 34.0, 0.034, "BEGIN"), query("slow", 1000, 5000.0, 5.0)],
                                [query("begin", 1000, 43.0, 0.043, "BEGIN"), query("slow", 1000, 6500.0, 6.5)]])
        assert [(g.fingerprint, g.metrics) for g in h.compare("shop").regressions] == [("slow", ("p95_ms", "total_ms"))]


def test_too_few_calls_are_not_a_regression(history_url):
    with History(history_url) as h:
        record_runs(h, "shop", [[query("few", 5, 50.0, 10.0), query("many", 50, 500.0, 10.0)],
                                [query("few", 5, 150.0, 30.0), query("many", 50, 1500.0, 30.0)]])
        assert [g.fingerprint for g in h.compare("shop").regressions] == ["many"]


def test_a_query_that_always_jumps_is_not_flagged_within_its_spread(history_url):
    """±40 % from run to run in history: +45 % is its usual noise; a steady query at +45 % is a regression."""
    jumpy = [100.0, 140.0, 100.0, 140.0, 100.0, 145.0]
    steady = [100.0, 101.0, 100.0, 99.0, 100.0, 145.0]
    with History(history_url) as h:
        record_runs(h, "shop", [[query("jumpy", 100, 100 * j, j), query("steady", 100, 100 * s, s)]
                                for j, s in zip(jumpy, steady)])
        [g] = h.compare("shop").regressions
    assert g.fingerprint == "steady" and g.change_pct("p95_ms") == pytest.approx(45.0)
    assert g.spread_pct["p95_ms"] == pytest.approx(1.0, abs=0.05)
