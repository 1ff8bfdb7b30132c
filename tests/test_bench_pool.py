"""`advisor bench pool` against the harness server: short windows, concurrency 1 and 2."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest
from psycopg import conninfo, sql

from advisor.bench.pool import MODES, PoolBenchConfig, run_pool_bench
from advisor.db.embedded import EmbeddedCluster

ARM_FIELDS = ("mode", "transport", "concurrency", "requests", "ops_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms",
              "connect_ms", "connect_p95_ms", "errors", "timeouts", "peak_backends")
POOLED = ("psycopg_pool", "psycopg_pool_checked", "sqlalchemy_queuepool")
OPENING = ("new_connection", "sqlalchemy_nullpool")
PASSWORD = "s3cret-bench-pw"


def advisor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advisor.cli", *args], capture_output=True, text=True, timeout=120)


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
    expected = {(m, t, c) for m in MODES if m != "pgbouncer" for t in transports for c in (1, 2)}
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
            assert arm["connections_opened"] == arm["requests"], arm
        else:  # pools are filled before the warm-up: nothing is opened in the window
            assert arm["connect_ms"] is None and arm["connect_p95_ms"] is None, arm
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

