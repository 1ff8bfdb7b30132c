"""The parse benchmark's real-log drivers (benchmarks/real_logs.py), each at a tiny size: the log a real
server wrote for its clients parses to the statements the server itself counted.

The count is exact, not within a tolerance: the driver turns statement logging on in the same breath as
it resets pg_stat_statements (its own connection is neither logged nor counted), the server counts
top-level statements only (pg_stat_statements.track = top), as the log shows them, and no entry is
evicted (dealloc is 0). One known difference is corrected from pgbench's own tallies: PostgreSQL 15
counts a utility statement run as a prepared statement (-M prepared's BEGIN and END) once per backend.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from helpers import advisor, no_server

from advisor.db.embedded import EmbeddedError, find_binaries

DRIVER = Path(__file__).resolve().parent.parent / "benchmarks" / "real_logs.py"
SIZE_MB = 2


def _driver():
    spec = importlib.util.spec_from_file_location("real_logs", DRIVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["real_logs"] = module  # SQLAlchemy resolves the models' annotations in their module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def real_logs():
    try:
        find_binaries()
    except EmbeddedError as err:
        no_server(str(err))
    return _driver()


def _parse(log: Path, truth: dict, out: Path) -> dict:
    run = advisor("parse", str(log), "--log-format", "stderr", "--log-line-prefix", truth["log_line_prefix"],
                  "--jobs", "1", "--format", "json", "--output", str(out))
    assert run.returncode == 0, run.stderr
    return json.loads(out.read_text())


@pytest.mark.parametrize("kind", ["pgbench", "psycopg", "orm"])
def test_the_log_parses_to_the_servers_statement_count(real_logs, tmp_path, kind):
    log = tmp_path / real_logs.log_name(kind, SIZE_MB)
    truth = real_logs.write_log(kind, log, SIZE_MB)
    assert truth["bytes"] >= SIZE_MB * real_logs.MIB
    assert json.loads(real_logs.truth_path(log).read_text()) == truth
    assert truth["server"]["pg_stat_statements_dealloc"] == 0
    doc = _parse(log, truth, tmp_path / "parse.json")
    assert doc["skipped_count"] == 0
    assert doc["lines"] == truth["lines"]
    assert doc["statements"] == truth["expected_statements"]
    events = doc["events"]
    assert events["temp_files"]["count"] == truth["server"]["temp_files"]
    assert events["deadlocks"]["count"] == truth["server"]["deadlocks"]
    assert events["sessions"]["count"] > 0
    text = log.read_text()
    if kind == "pgbench":  # both protocols, and the per-transaction connections' sessions
        assert truth["client"]["simple_transactions"] and truth["client"]["prepared_transactions"]
        assert "  statement: UPDATE pgbench_accounts" in text and "  execute P_1: UPDATE pgbench_accounts" in text
        assert truth["client"]["connect_per_transaction"]
        assert doc["statements"] > truth["server"]["pg_stat_statements_calls"]  # the -M prepared correction at work
    if kind == "psycopg":  # the extended protocol with its values, plans, spills, waits and a deadlock
        assert "DETAIL:  parameters: $1 = " in text and '"Plan": {' in text
        assert doc["plans"] > 0
        assert truth["server"]["temp_files"] > 0 and truth["server"]["deadlocks"] == 1
        assert events["lock_waits"]["count"] > 0
    if kind == "orm":  # the ORM's IN lists and its statements through the unit of work
        assert " IN ($1" in text and "INSERT INTO reviews" in text
