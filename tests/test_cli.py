"""`advisor parse` as a user runs it: the installed entry point, in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from helpers import advisor

from advisor.workload.fingerprint import fingerprint

LOG = """\
2026-11-22 03:00:00.001 UTC [700] app@shop LOG:  duration: 4.000 ms  statement: SELECT * FROM orders WHERE customer_id = 42 AND note = 'secret note'
2026-11-22 03:00:01.001 UTC [700] app@shop LOG:  duration: 2.000 ms  statement: SELECT * FROM orders WHERE customer_id = 43 AND note = 'other'
2026-11-22 03:00:02.001 UTC [701] app@shop LOG:  duration: 1.000 ms  execute <unnamed>: UPDATE orders SET paid = true WHERE id = $1
2026-11-22 03:00:02.001 UTC [701] app@shop DETAIL:  parameters: $1 = '9'
not a log line
"""


@pytest.fixture
def log(tmp_path: Path) -> str:
    path = tmp_path / "postgresql.log"
    path.write_text(LOG)
    return str(path)


def test_json_document_has_the_documented_fields(log):
    run = advisor("parse", log, "--format", "json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["schema_version"] == 2
    assert (doc["lines"], doc["statements"], doc["skipped_count"]) == (5, 3, 1)
    assert doc["skipped"] == [{"file": log, "line": 5, "reason": "does not match the log_line_prefix", "text": "not a log line"}]
    first = doc["queries"][0]
    for key in ("fingerprint", "normalized", "calls", "total_ms", "mean_ms", "min_ms", "max_ms",
                "p50_ms", "p95_ms", "p99_ms", "first_seen", "last_seen"):  # fmt: skip
        assert key in first
    assert (first["calls"], first["total_ms"], first["min_ms"], first["max_ms"]) == (2, 6.0, 2.0, 4.0)
    assert first["first_seen"] == "2026-11-22 03:00:00.001 UTC" and first["last_seen"] == "2026-11-22 03:00:01.001 UTC"


def test_literal_values_are_masked_unless_asked_for(log):
    masked = advisor("parse", log, "--format", "json").stdout
    assert "secret note" not in masked and "'9'" not in masked
    shown = advisor("parse", log, "--format", "json", "--show-values").stdout
    assert "secret note" in shown


def test_text_output_is_a_table_and_stdin_works(log):
    run = advisor("parse", "-", stdin=Path(log).read_text())
    assert run.returncode == 0, run.stderr
    assert "3 statements in 2 distinct queries" in run.stdout
    assert "orders" in run.stdout


def test_sort_and_top(log):
    doc = json.loads(advisor("parse", log, "--format", "json", "--sort", "calls", "--top", "1").stdout)
    assert len(doc["queries"]) == 1 and doc["queries"][0]["calls"] == 2


@pytest.mark.parametrize("command", ["parse", "scan", "report"])
def test_help_names_the_extras_with_their_brackets(command):
    """typer reads help as Rich markup: an unescaped [dask] is taken for a style and vanishes."""
    shown = advisor(command, "--help", env={"COLUMNS": "250"}).stdout
    assert all(f"'advisor[{extra}]'" in shown for extra in ("dask", "s3", "gcs", "remote"))


def test_missing_file_exits_2_with_cause_and_fix(tmp_path):
    run = advisor("parse", str(tmp_path / "missing.log"))
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert lines[0].startswith("error: no such log file") and lines[1].startswith("fix:")
    assert "Traceback" not in run.stderr


def test_wrong_dsn_exits_2_and_never_prints_the_password(log):
    run = advisor("parse", log, "--dsn", "postgresql://bob:Sup3rSecret@127.0.0.1:1/shop")
    assert run.returncode == 2
    assert "Sup3rSecret" not in run.stdout + run.stderr
    assert "error:" in run.stderr and "fix:" in run.stderr


def test_pg_stat_statements_merges_with_the_log(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id int, customer_id int, note text, paid bool)")
        conn.execute("SELECT pg_stat_statements_reset()")
        for i in range(9):
            conn.execute("SELECT * FROM orders WHERE customer_id = %s AND note = %s", (i, "n")).fetchall()
    path = tmp_path / "pg.log"
    path.write_text(LOG)
    doc = json.loads(advisor("parse", str(path), "--dsn", pg_dsn, "--format", "json").stdout)
    key = fingerprint("SELECT * FROM orders WHERE customer_id = 1 AND note = 'x'").id
    (query,) = [q for q in doc["queries"] if q["fingerprint"] == key]
    # The server saw nine executions, the log two: the server's counters win, the log keeps its percentiles.
    assert query["calls"] == 9
    assert set(query["sources"]) == {"log", "pg_stat_statements"}
    assert query["p50_ms"] == 2.0
    assert any(s.startswith("pg_stat_statements") for s in doc["source"])
