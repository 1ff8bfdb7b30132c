"""pg_stat_statements as a source, against a real server."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from advisor.db.embedded import EmbeddedCluster
from advisor.workload.model import StatementRow
from advisor.workload.sources.stat_statements import StatStatementsError, read_pg_stat_statements


def _dbname(dsn: str) -> str:
    return conninfo_to_dict(dsn)["dbname"]


@pytest.fixture(scope="module")
def workload(pg_dsn):
    """7 point lookups with different ids and 3 counts of another shape."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t SELECT g, 'v' || (g % 3) FROM generate_series(1, 100) g")
        for i in range(1, 8):
            conn.execute("SELECT * FROM t WHERE id = %s", (i * 10,))
        for v in ("v0", "v1", "v2"):
            conn.execute("SELECT count(*) FROM t WHERE v = %s", (v,))
    return pg_dsn


def _ours(rows, dsn: str, needle: str) -> list[StatementRow]:
    return [r for r in rows if r.database == _dbname(dsn) and needle in r.query]


def test_calls_match_the_workload(workload):
    with psycopg.connect(workload) as conn:
        rows = read_pg_stat_statements(conn)
        me = conn.execute("SELECT current_user").fetchone()[0]
    (lookup,) = _ours(rows, workload, "FROM t WHERE id =")
    (count,) = _ours(rows, workload, "count(*) FROM t WHERE v =")
    assert (lookup.calls, lookup.rows) == (7, 7)
    assert (count.calls, count.rows) == (3, 3)
    assert lookup.query == "SELECT * FROM t WHERE id = $1"  # psycopg binds on the server: one shape
    assert lookup.user == me and isinstance(lookup.queryid, int) and lookup.queryid != 0
    assert lookup.total_ms >= lookup.max_ms >= lookup.mean_ms >= lookup.min_ms >= 0
    assert lookup.mean_ms == pytest.approx(lookup.total_ms / 7, rel=1e-6)
    assert lookup.stddev_ms is not None and rows.hidden == 0 and rows.note is None


def test_what_hypopg_runs_for_the_advisor_is_not_workload(workload, pg_cluster):
    """HypoPG reads the highest oid in use for each hypothetical index; with track = all pg_stat_statements
    keeps that as a nested, untagged statement of its own. It is the advisor's traffic, not the application's."""
    if not pg_cluster.has_hypopg:
        pytest.skip("HypoPG is not installed on this server")
    from advisor.indexes.model import AdvisedQuery, IndexCandidate
    from advisor.indexes.whatif import WhatIf
    query = AdvisedQuery("q", "SELECT count(*) FROM t WHERE v = 'v1'", None, 1.0)
    with WhatIf(workload) as whatif:  # what suggest-indexes does for every configuration it costs
        whatif.cost(query, [IndexCandidate("public.t", ("v",))])
    with psycopg.connect(workload) as conn:
        nested = conn.execute("SELECT count(*) FROM pg_stat_statements WHERE NOT toplevel "
                              "AND query LIKE 'SELECT max(oid) FROM pg_catalog.pg_class%%'").fetchone()[0]
        rows = read_pg_stat_statements(conn)
    assert nested >= 1  # the server did record it, so the filter below is what keeps it out
    assert not [r for r in rows if "max(oid)" in r.query]
    assert rows.own >= nested


def test_read_leaves_no_open_transaction(workload):
    with psycopg.connect(workload) as conn:
        read_pg_stat_statements(conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_missing_extension_names_the_fix(pg_cluster):
    dsn = pg_cluster.create_database(f"advisor_noext_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(dsn) as conn, pytest.raises(StatStatementsError) as info:
        read_pg_stat_statements(conn)
    assert "not installed in database" in info.value.cause
    assert "CREATE EXTENSION pg_stat_statements;" in info.value.fix


def test_unprivileged_role_sees_hidden_rows_counted(pg_cluster, workload):
    role = f"advisor_lowpriv_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(workload, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'lowpriv'").format(sql.Identifier(role)))
    try:
        dsn = make_conninfo(workload, user=role, password="lowpriv")
        try:
            conn = psycopg.connect(dsn)
        except psycopg.OperationalError as err:
            pytest.skip(f"cannot log in as a new role on this server: {err}")
        with conn:
            conn.execute("SELECT 42 AS lowpriv_marker").fetchone()
            conn.commit()
            rows = read_pg_stat_statements(conn)
        assert rows.hidden > 0 and "pg_read_all_stats" in rows.note  # the admin's statements
        assert all(r.user == role for r in rows)
        assert any("lowpriv_marker" in r.query for r in rows)
    finally:
        with psycopg.connect(workload, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_library_not_preloaded_names_the_fix(pg_binaries):
    with EmbeddedCluster({"shared_preload_libraries": ""}, bin_dir=pg_binaries) as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        with psycopg.connect(cluster.dsn()) as conn, pytest.raises(StatStatementsError) as info:
            read_pg_stat_statements(conn)
    assert "not loaded" in info.value.cause
    assert "shared_preload_libraries = 'pg_stat_statements'" in info.value.fix
