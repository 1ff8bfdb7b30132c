"""Bad input is counted, never fatal: two logs that stopped `advisor parse` with a traceback, found when
mypy first read the bodies of workload/logs (a value that may be None, read as if it could not be)."""

from __future__ import annotations

import json

from helpers import advisor

from advisor.workload.logs.formats import LogFormat, read_executions, sniff
from advisor.workload.logs.records import Tally

PREFIX = "%m [%p] "


def test_a_stray_detail_after_a_forgotten_failed_statement(tmp_path):
    """The STATEMENT line of an error drops the failed execution; a DETAIL after it has nothing to belong to."""
    log = tmp_path / "failed.log"
    log.write_text(
        "2024-01-01 00:00:00.000 UTC [1] LOG:  statement: SELECT 1/0\n"
        "2024-01-01 00:00:00.001 UTC [1] ERROR:  division by zero\n"
        "2024-01-01 00:00:00.001 UTC [1] STATEMENT:  SELECT 1/0\n"
        "2024-01-01 00:00:00.002 UTC [1] DETAIL:  parameters: $1 = '1'\n"
        "2024-01-01 00:00:00.003 UTC [1] LOG:  duration: 1.000 ms  statement: SELECT 2\n")
    tally = Tally(str(log))
    found = list(read_executions(str(log), sniff(str(log), "stderr", PREFIX), tally))
    assert [(e.sql, e.duration_ms, e.parameters) for e in found] == [("SELECT 2", 1.0, None)]
    assert (tally.lines, tally.other_events) == (5, 2)  # the ERROR and its STATEMENT


def test_stderr_without_a_known_prefix_is_skipped_whatever_the_jobs(tmp_path):
    """--log-format stderr on a prefix nobody can detect: every line skipped with the reason, as with one job,
    not a TypeError while cutting the file for the workers."""
    log = tmp_path / "odd.log"
    log.write_text("".join(f"<<{i}>> LOG:  duration: 1.0 ms  statement: SELECT {i}\n" for i in range(50)))
    assert sniff(str(log), "stderr") == LogFormat("stderr", None)
    assert not LogFormat("stderr", None).splittable and LogFormat("stderr", PREFIX).splittable
    runs = [advisor("parse", str(log), "--log-format", "stderr", "--format", "json", "-j", jobs) for jobs in ("1", "2")]
    assert [r.returncode for r in runs] == [0, 0], runs[1].stderr
    one, two = (json.loads(r.stdout) for r in runs)
    assert one == two
    assert (one["statements"], one["skipped_count"]) == (0, 50)
    assert "log-line-prefix" in one["skipped"][0]["reason"]
