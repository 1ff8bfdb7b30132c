"""`advisor bench pool` against the harness server: short windows, concurrency 1 and 2."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from helpers import advisor, session_names
from psycopg import conninfo, sql

from advisor.bench.pool import MODES, PGBOUNCER_MODES, PoolBenchConfig, run_pool_bench
from advisor.db.embedded import EmbeddedCluster

ARM_FIELDS = ("mode", "transport", "concurrency", "requests", "ops_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms",
              "connect_ms", "connect_p95_ms", "errors", "timeouts", "peak_backends")
POOLED = ("psycopg_pool", "psycopg_pool_checked", "sqlalchemy_queuepool")
OPENING = ("new_connection", "sqlalchemy_nullpool")
PASSWORD = "s3cret-bench-pw"
CSV_USER, CSV_DB, CSV_MESSAGE, CSV_APP = 1, 2, 13, 22  # csvlog columns


@pytest.fixture(scope="module")
def dsn(pg_cluster, pg_dsn) -> str:
    """pg_dsn, with a password added where the server ignores it (our trust-auth cluster): it must never show."""
    if not isinstance(pg_cluster, EmbeddedCluster):
        return pg_dsn
    return conninfo.make_conninfo(pg_dsn, password=PASSWORD)


@pytest.fixture(scope="module")
def run(dsn) -> subprocess.CompletedProcess:
    """One end-to-end run through the CLI; most tests read its JSON."""
    return advisor("bench", "pool", "--dsn", dsn, "--duration", "0.5", "--warmup", "0.2",
                   "--concurrency", "1,2", "--format", "json")


@pytest.fixture(scope="module")
def doc(run) -> dict:
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_document_and_every_arm_have_every_field(doc, pg_cluster):
    assert doc["schema_version"] == 1 and doc["kind"] == "bench_pool"
    for key in ("host_cores", "server_version_num", "max_connections", "query", "arms", "verdict"):
        assert key in doc
    assert doc["host_cores"] >= 1 and doc["server_version_num"] >= 100000 and doc["max_connections"] > 0
    transports = {a["transport"] for a in doc["arms"]}
    if isinstance(pg_cluster, EmbeddedCluster):  # loopback TCP plus the socket folder we chose
        assert transports == {"tcp", "unix"}
    expected = {(m, t, c) for m in MODES if m not in PGBOUNCER_MODES for t in transports for c in (1, 2)}
    assert {(a["mode"], a["transport"], a["concurrency"]) for a in doc["arms"]} == expected
    for arm in doc["arms"]:
        assert set(ARM_FIELDS) <= set(arm), arm
        assert arm["requests"] > 0 and arm["errors"] == 0 and arm["timeouts"] == 0, arm
        assert arm["p50_ms"] <= arm["p95_ms"] <= arm["p99_ms"] <= arm["max_ms"], arm
        assert arm["peak_backends"] is not None and arm["peak_backends"] <= arm["concurrency"] + 1, arm
    assert doc["query"].endswith("WHERE id = $1") and "advisor_bench_" in doc["query"]  # the key is a parameter


def test_pooled_arms_beat_a_new_connection_per_request(doc):
    by = {(a["mode"], a["transport"], a["concurrency"]): a for a in doc["arms"]}
    for (mode, transport, c), arm in by.items():
        if mode in POOLED:
            base = by[("new_connection", transport, c)]["ops_per_s"]
            assert arm["ops_per_s"] > 1.5 * base, (mode, transport, c, arm["ops_per_s"], base)
    speedups = doc["verdict"]["speedups"]
    assert speedups and all(s["speedup"] > 1.5 and s["best_mode"] in POOLED for s in speedups)
    assert doc["verdict"]["headroom"]["concurrency"] == 2
    assert {s["transport"] for s in doc["verdict"]["saturation"]} == {a["transport"] for a in doc["arms"]}


def test_connect_time_only_for_arms_that_open_connections(doc):
    for arm in doc["arms"]:
        if arm["mode"] in OPENING:
            assert arm["connect_ms"] > 0 and arm["connect_p95_ms"] >= arm["connect_ms"] * 0.5, arm
            assert 0 < arm["connect_p50_ms"] <= arm["connect_p95_ms"], arm
            assert arm["connections_opened"] == arm["requests"], arm
        else:  # pools are filled before the warm-up: nothing is opened in the window
            assert arm["connect_ms"] is None and arm["connect_p50_ms"] is None and arm["connect_p95_ms"] is None, arm
            assert arm["connections_opened"] == 0, arm


def test_temporary_schema_is_dropped(doc, pg_dsn):
    schema = doc["workload"]["schema"]
    assert doc["workload"]["kind"] == "table" and schema.startswith("advisor_bench_")
    with psycopg.connect(pg_dsn) as conn:
        left = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'advisor\\_bench\\_%'").fetchall()
    assert left == []


def test_password_is_never_printed(run, doc):
    assert PASSWORD not in run.stdout and PASSWORD not in run.stderr


def test_text_output(dsn):
    run = advisor("bench", "pool", "--dsn", dsn, "--duration", "0.2", "--warmup", "0", "--concurrency", "1",
                  "--modes", "new_connection,psycopg_pool", "--transports", "tcp")
    assert run.returncode == 0, run.stderr
    for words in ("throughput", "psycopg_pool", "new_connection", "verdict", "host cores", "share"):
        assert words in run.stdout, run.stdout
    assert PASSWORD not in run.stdout + run.stderr


def test_a_writing_query_is_refused(dsn):
    run = advisor("bench", "pool", "--dsn", dsn, "--query", "DELETE FROM x", "--duration", "0.2")
    assert run.returncode == 2
    assert "read-only SELECT" in run.stderr and "Traceback" not in run.stderr
    assert run.stdout == ""


def test_a_read_only_target_falls_back_to_select_1(pg_cluster):
    name = "advisor_bench_pool_readonly"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    target = pg_cluster.create_database(name)
    try:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(sql.Identifier(name)))
        result = run_pool_bench(PoolBenchConfig(
            dsn=target, concurrency=(1,), duration_s=0.3, warmup_s=0, modes=("new_connection", "psycopg_pool"),
            transports=("tcp",)))
    finally:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    assert result.workload == {"kind": "select1", "schema": None, "rows": None}
    assert result.query == "SELECT ?"
    assert any("read-only" in n and "SELECT 1" in n for n in result.notes)
    assert all(a.requests > 0 and a.errors == 0 for a in result.arms)



# --- our traffic: named, tagged, and kept out of the server's log ---------------------------------

LOGGED_DB = "advisor_bench_pool_logged"
PLAIN_ROLE = "advisor_bench_plain"
BENCH_EXECUTE = re.compile(r"^duration: [\d.]+ ms  execute [^:]*: /\* advisor \*/ SELECT balance FROM advisor_bench_")


@pytest.fixture(scope="module")
def logged_db(embedded_cluster):
    """A database whose sessions log every statement (log_min_duration_statement = 0, as the user had), with
    pg_stat_statements, and a plain role (no superuser) that may create schemas in it."""
    admin = embedded_cluster.dsn()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(LOGGED_DB)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(PLAIN_ROLE)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(PLAIN_ROLE)))
    dsn = embedded_cluster.create_database(LOGGED_DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(LOGGED_DB),
                                                                         sql.Identifier(PLAIN_ROLE)))
        conn.execute(sql.SQL("ALTER DATABASE {} SET log_min_duration_statement = 0").format(sql.Identifier(LOGGED_DB)))
    yield dsn
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(LOGGED_DB)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(PLAIN_ROLE)))


def _settled_rows(path: Path) -> list[list[str]]:
    """The csvlog's rows once the logging collector has caught up (two reads alike)."""
    previous = None
    for _ in range(50):
        rows = list(csv.reader(path.read_text().splitlines(keepends=True)))
        if previous is not None and len(rows) == len(previous):
            return rows
        previous = rows
        time.sleep(0.1)
    return previous


def _db_rows(cluster, since: int) -> list[list[str]]:
    return [r for r in _settled_rows(cluster.csv_log)[since:] if len(r) > CSV_APP and r[CSV_DB] == LOGGED_DB]


def _reset_statements(admin_dsn: str) -> None:
    """Empty LOGGED_DB's pg_stat_statements (the fixture's own statements go), from another database."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        oid = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (LOGGED_DB,)).fetchone()[0]
        conn.execute("SELECT pg_stat_statements_reset(0, %s, 0)", (oid,))


def _untagged_statements(admin_dsn: str) -> list[tuple[str, int]]:
    """pg_stat_statements of LOGGED_DB whose text does not start with the tag (read from another database)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT query, calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = %s AND query NOT LIKE '/* advisor */%%'", (LOGGED_DB,)).fetchall()


def test_superuser_run_is_tagged_named_and_stays_out_of_the_log(embedded_cluster, logged_db):
    admin = embedded_cluster.dsn()
    _reset_statements(admin)
    before = len(_settled_rows(embedded_cluster.csv_log))
    with session_names(admin, LOGGED_DB) as seen:  # every mode (SQLAlchemy's start-up, the pool's health check)
        result = run_pool_bench(PoolBenchConfig(dsn=logged_db, concurrency=(1, 2), duration_s=0.3, warmup_s=0.1))
    requests = sum(a.requests for a in result.arms)
    assert requests > 1000 and all(a.errors == 0 for a in result.arms)

    assert _untagged_statements(admin) == []  # not even a BEGIN or SQLAlchemy's "select current_schema()"
    assert seen and all(name.startswith("advisor") for name in seen), seen
    # log_min_duration_statement = 0 for the database, yet only the statements that read the settings are logged
    rows = _db_rows(embedded_cluster, before)
    assert len(rows) <= 4, [r[CSV_MESSAGE][:80] for r in rows]
    assert not any("warning" in n or "logging stays on" in n for n in result.notes)


def test_plain_role_is_warned_before_the_run_with_the_count_the_server_logs(embedded_cluster, logged_db):
    plain = conninfo.make_conninfo(logged_db, user=PLAIN_ROLE)
    _reset_statements(embedded_cluster.dsn())
    before = len(_settled_rows(embedded_cluster.csv_log))
    events: list[tuple[str, str]] = []
    result = run_pool_bench(
        PoolBenchConfig(dsn=plain, requests=40, warmup_s=0, concurrency=(1,), transports=("tcp",),
                        modes=("new_connection", "psycopg_pool", "psycopg_pool_checked")),
        step=lambda text: events.append(("step", text)), warn=lambda text: events.append(("warn", text)))
    assert sum(a.requests for a in result.arms) == 3 * 40
    warnings = [i for i, (kind, _) in enumerate(events) if kind == "warn"]
    first_arm = next(i for i, (_, text) in enumerate(events) if text.startswith("new_connection over"))
    assert len(warnings) == 1 and warnings[0] < first_arm, events  # once, before the first arm
    warning = events[warnings[0]][1]
    assert f'GRANT SET ON PARAMETER log_min_duration_statement TO "{PLAIN_ROLE}"' in warning and "--requests" in warning
    warned = re.search(r"The server will log every one of the up to ([\d,]+) statements", warning)
    assert warned, warning

    rows = _db_rows(embedded_cluster, before)
    executes = sum(1 for r in rows if BENCH_EXECUTE.match(r[CSV_MESSAGE]))
    checks = sum(1 for r in rows if re.match(r"^duration: [\d.]+ ms  statement: /\* advisor \*/ $", r[CSV_MESSAGE]))
    assert (executes, checks) == (3 * 40, 40)  # the requests, and psycopg_pool's check before each checkout
    assert int(warned[1].replace(",", "")) == executes + checks
    # every line the server logged for the role's sessions names the benchmark, every statement is tagged
    assert rows and all(r[CSV_APP].startswith("advisor") for r in rows if r[CSV_USER] == PLAIN_ROLE)
    assert _untagged_statements(embedded_cluster.dsn()) == []


def test_the_cli_prints_the_warning_where_steps_are_not_shown(logged_db):
    run = advisor("bench", "pool", "--dsn", conninfo.make_conninfo(logged_db, user=PLAIN_ROLE), "--requests", "5",
                  "--warmup", "0", "--concurrency", "1", "--modes", "psycopg_pool", "--transports", "tcp",
                  "--format", "json")
    assert run.returncode == 0, run.stderr
    assert "warning: statement logging stays on" in run.stderr and "up to 5 statements" in run.stderr, run.stderr
    assert any("logging stays on" in n for n in json.loads(run.stdout)["notes"])


def test_a_role_granted_set_turns_logging_off_and_is_not_warned(embedded_cluster, logged_db):
    """PostgreSQL 15+: the GRANT the warning proposes is enough; the bench then logs no request."""
    with psycopg.connect(logged_db, autocommit=True) as conn:
        if conn.info.server_version < 150000:
            pytest.skip("GRANT SET ON PARAMETER exists from PostgreSQL 15")
        conn.execute(sql.SQL("GRANT SET ON PARAMETER log_min_duration_statement TO {}").format(sql.Identifier(PLAIN_ROLE)))
    before = len(_settled_rows(embedded_cluster.csv_log))
    warned: list[str] = []
    try:
        result = run_pool_bench(PoolBenchConfig(
            dsn=conninfo.make_conninfo(logged_db, user=PLAIN_ROLE), requests=40, warmup_s=0, concurrency=(1,),
            transports=("tcp",), modes=("new_connection", "psycopg_pool")), warn=warned.append)
    finally:
        with psycopg.connect(logged_db, autocommit=True) as conn:
            conn.execute(sql.SQL("REVOKE SET ON PARAMETER log_min_duration_statement FROM {}")
                         .format(sql.Identifier(PLAIN_ROLE)))
    assert sum(a.requests for a in result.arms) == 2 * 40 and warned == []
    rows = _db_rows(embedded_cluster, before)
    messages = [r[CSV_MESSAGE] for r in rows if r[CSV_USER] == PLAIN_ROLE]  # not our GRANT and REVOKE
    assert not any(BENCH_EXECUTE.match(m) for m in messages), messages
    # only the three statements that read the settings and the rights (parse, bind and execute lines); no error
    assert len(messages) <= 9 and all("pg_settings" in m or "current_user" in m or "has_parameter_privilege" in m
                                      for m in messages), messages
