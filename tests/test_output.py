"""What a person reads: plan excerpts that keep their numbers, tables readable at 80 and 60 columns,
empty logs explained, numbers rounded and counted in words, hidden pg_stat_statements rows said loudly.

Plans come from EXPLAIN ANALYZE on this module's database; the CLI runs as a user runs it (a subprocess).
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import time
from dataclasses import replace
from io import StringIO

import psycopg
import pytest
from helpers import ADVISOR, advisor
from psycopg import conninfo
from rich.console import Console

from advisor.checks._plan import excerpt, fmt
from advisor.findings import Finding, ScanResult, Severity
from advisor.plans import parse_plan
from advisor.report.jsondoc import finding_document
from advisor.report.text import findings_table, queries_table, scan_summary
from advisor.words import plural
from advisor.workload.model import Query, Workload

SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL, v int NOT NULL);
INSERT INTO items SELECT g, 'note-' || (g % 50), g FROM generate_series(1, 20000) g;
VACUUM ANALYZE items
"""
SECRET = "note-7"
LITERAL_SQL = f"SELECT id FROM items WHERE note = '{SECRET}' AND v > 4242"
LIMITED_ROLE = "advisor_test_no_stats"


def render(renderable, width: int) -> str:
    out = StringIO()
    Console(width=width, file=out, color_system=None).print(renderable)
    return out.getvalue()


# --- item 7: plan excerpts keep their numbers ------------------------------------------------


@pytest.fixture
def literal_finding(schema_conn) -> tuple[Finding, str]:
    """A finding whose evidence holds the real plan's scan line, with a literal in its filter."""
    with schema_conn.transaction(force_rollback=True):
        schema_conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        doc = schema_conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {LITERAL_SQL}").fetchone()[0][0]
    [scan] = [n for n in parse_plan(doc).nodes() if n.node_type == "Seq Scan"]
    line = excerpt(scan)
    finding = Finding(code="ADV001", check="full_scan", severity=Severity.high, title="Full scan of items",
                      suggestion="CREATE INDEX ON items (note, v);", fingerprint="f" * 16,
                      normalized="SELECT id FROM items WHERE note = $1 AND v > $2",
                      evidence={"plan": line, "filter": scan.filter, "plan_ms": doc["Execution Time"] + 1e-13})
    return finding, line


def test_masked_plan_excerpt_keeps_every_number_and_hides_the_literals(literal_finding, schema_conn):
    finding, line = literal_finding
    scanned = schema_conn.execute("SELECT count(*) FROM items").fetchone()[0]
    returned = schema_conn.execute(f"SELECT count(*) FROM ({LITERAL_SQL}) q").fetchone()[0]
    assert f"rows {fmt(scanned)} scanned, {fmt(returned)} returned" in line and SECRET in line and "4242" in line

    masked = finding_document(finding)["evidence"]
    # Only the literals changed: the plan's rows, estimates and times are all there, digit for digit.
    assert masked["plan"] == line.replace(f"'{SECRET}'", "?").replace("4242", "?")
    assert f"rows {fmt(scanned)} scanned, {fmt(returned)} returned" in masked["plan"]
    assert re.search(r"[\d,]+\.\d ms self, [\d,]+\.\d ms total\)$", masked["plan"])
    assert SECRET not in json.dumps(masked) and "4242" not in json.dumps(masked)
    # Floats read as people read them, and the same with --show-values.
    assert masked["plan_ms"] == round(finding.evidence["plan_ms"], 3)

    shown = finding_document(finding, show_values=True)["evidence"]
    assert shown["plan"] == line and SECRET in shown["filter"]


def test_scan_masks_the_literals_of_its_plan_excerpts_unless_asked(pg_dsn, schema_conn, tmp_path):
    """Through the CLI: the full scan's plan excerpt keeps the server's row counts; --show-values shows the literal."""
    log = tmp_path / "pg.log"
    log.write_text("".join(f"2026-11-22 03:00:0{i}.001 UTC [700] app@shop LOG:  duration: 900.000 ms  statement: "
                           f"{LITERAL_SQL}\n" for i in range(3)))
    scanned = schema_conn.execute("SELECT count(*) FROM items").fetchone()[0]
    returned = schema_conn.execute(f"SELECT count(*) FROM ({LITERAL_SQL}) q").fetchone()[0]
    plans = {}
    for flag in ((), ("--show-values",)):
        run = advisor("scan", "--dsn", pg_dsn, "--log", str(log), "--format", "json", *flag)
        assert run.returncode == 0, run.stderr
        [finding] = [f for f in json.loads(run.stdout)["findings"] if f["code"] == "ADV001"]
        plans[flag] = finding["evidence"]["plan"]
    masked, shown = plans[()], plans[("--show-values",)]
    for plan in (masked, shown):
        assert f"rows {fmt(scanned)} scanned, {fmt(returned)} returned" in plan and re.search(r"[\d.]+ ms self", plan)
    assert SECRET not in masked and "4242" not in masked and f"'{SECRET}'" in shown and "4242" in shown


def test_text_output_shows_the_plan_with_its_numbers(literal_finding):
    finding, line = literal_finding
    workload = Workload(queries=(), sources=("test",), lines=0, statements=0, other_events=0, skipped_count=0)
    result = ScanResult(workload, (finding,), explained=1, server_version_num=150000)
    masked = render(scan_summary(result), 400)
    hidden = line.replace(f"'{SECRET}'", "?").replace("4242", "?")
    assert f"plan: {hidden}" in masked and SECRET not in masked
    assert f"plan: {line}" in render(scan_summary(result, show_values=True), 400)
    assert f"plan_ms {round(finding.evidence['plan_ms'], 3):,}" in masked and "e-13" not in masked


# --- item 11: readable at any width ----------------------------------------------------------

LONG_SQL = ("SELECT o.id, o.customer_id, o.total, c.name, c.email FROM orders o JOIN customers c ON c.id = o.customer_id "
            "WHERE o.created_at > $1 AND o.status = $2 ORDER BY o.created_at DESC LIMIT $3")
LOG = f"""\
2026-11-22 03:00:00.001 UTC [700] app@shop LOG:  duration: 4.000 ms  statement: {LONG_SQL.replace('$1', "'2026-01-01'").replace('$2', "'paid'").replace('$3', '10')}
2026-11-22 03:00:01.001 UTC [700] app@shop LOG:  duration: 2.000 ms  statement: {LONG_SQL.replace('$1', "'2026-02-01'").replace('$2', "'open'").replace('$3', '20')}
2026-11-22 03:00:02.001 UTC [701] app@shop LOG:  duration: 1234.500 ms  statement: SELECT count(*) FROM orders
"""


def _query(normalized: str, calls: int, total: float) -> Query:
    return Query(fingerprint=normalized[:16], normalized=normalized, parsed=True, statement_type="select", calls=calls,
                 total_ms=total, mean_ms=total / calls, min_ms=None, max_ms=None, p50_ms=total / calls,
                 p95_ms=total / calls, p99_ms=total / calls, timed_calls=calls, rows=None, first_seen=None,
                 last_seen=None)


@pytest.mark.parametrize("width", [60, 80, 200])
def test_tables_keep_the_query_and_the_numbers_at_any_width(width):
    workload = Workload(queries=(_query(LONG_SQL, 1234, 98765.4), _query("SELECT 1", 1, 0.5)), sources=("test",),
                        lines=3, statements=1235, other_events=0, skipped_count=0)
    text = render(queries_table(workload, top=10), width)
    assert "SELECT o.id, o.customer_id" in text and "SELEC…" not in text
    for number in ("1,234", "98,765.4", "80.04", "0.50"):
        assert number in text
    assert max(map(len, text.splitlines())) <= width
    finding = Finding(code="ADV001", check="full_scan", severity=Severity.high, suggestion="…", impact_ms=12345.67,
                      title="Full scan of orders (1,000,000 rows) for WHERE status = $1 in 80 % of the time")
    text = render(findings_table([finding]), width)
    assert "Full scan of orders" in re.sub(r"\s+", " ", text) and "12,345.7" in text


def test_names_and_sql_with_brackets_are_printed_not_read_as_markup(literal_finding):
    finding, _ = literal_finding
    finding = replace(finding, application="[unknown]", normalized="SELECT tags[1] FROM items WHERE id = $1",
                      title="Full scan of items [bold]")
    workload = Workload(queries=(), sources=("test",), lines=1, statements=1, other_events=0, skipped_count=0)
    text = render(scan_summary(ScanResult(workload, (finding,), explained=1), top=5), 200)
    assert "from: [unknown]" in re.sub(r"\s+", " ", text)
    assert "tags[1]" in text and "Full scan of items [bold]" in text


@pytest.mark.parametrize("columns", ["60", "80"])
def test_parse_in_a_narrow_pipe_prints_the_queries(tmp_path, columns):
    log = tmp_path / "pg.log"
    log.write_text(LOG)
    run = advisor("parse", str(log), env={"COLUMNS": columns})
    assert run.returncode == 0, run.stderr
    assert "SELECT o.id, o.customer_id" in run.stdout and "SELECT COUNT(*) FROM orders" in run.stdout
    assert "2 calls" in run.stdout and "1 call " in run.stdout and "total 1,234.5" in run.stdout
    assert "mean 3.00" in run.stdout
    assert max(map(len, run.stdout.splitlines())) <= int(columns)


def _on_a_terminal(*args: str) -> str:
    """What the advisor writes to stderr when stderr is a terminal (a pseudo-terminal), escape codes removed."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([*ADVISOR, *args], stdout=subprocess.DEVNULL, stderr=follower,
                               env={**os.environ, "COLUMNS": "100", "TERM": "xterm"})
    os.close(follower)
    written = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        written += chunk
    process.wait(timeout=120)
    os.close(leader)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", written.decode(errors="replace"))


def test_progress_shows_the_elapsed_time_on_a_terminal_only(tmp_path):
    log = tmp_path / "pg.log"
    log.write_text(LOG * 300)
    shown = _on_a_terminal("parse", str(log))
    assert "reading the logs" in shown and re.search(r"\d:\d\d:\d\d", shown)  # rich's elapsed-time column
    assert not re.search(r"\w+\.py:\d+", shown)
    piped = advisor("parse", str(log))
    assert piped.returncode == 0 and piped.stderr == ""  # quiet off a terminal


def test_an_empty_log_says_what_was_found_and_why(tmp_path):
    empty = tmp_path / "empty.log"
    empty.write_text("")
    run = advisor("parse", str(empty))
    assert run.returncode == 0 and "no statements found" in run.stdout and "the log is empty" in run.stdout

    quiet = tmp_path / "quiet.log"  # a server with log_min_duration_statement = -1: connections, no statements
    quiet.write_text("2026-11-22 03:00:00.001 UTC [700] app@shop LOG:  connection authorized: user=app database=shop\n"
                     "2026-11-22 03:00:00.002 UTC [700] app@shop LOG:  disconnection: session time: 0:00:00.001\n")
    text = " ".join(advisor("parse", str(quiet)).stdout.split())
    assert "no statements found (2 log lines, 2 other events, 0 lines skipped)" in text
    assert "log_min_duration_statement" in text
    doc = json.loads(advisor("parse", str(quiet), "--format", "json").stdout)
    assert doc["statements"] == 0 and any("log_min_duration_statement" in n for n in doc["notes"])

    ours = tmp_path / "ours.log"  # a night in which only the advisor ran: the server did log, nothing to fix there
    ours.write_text("".join(f"2026-11-22 03:00:0{i}.001 UTC [701] app@shop LOG:  duration: 0.050 ms  "
                            f"statement: /* advisor */ SELECT {i}\n" for i in range(3)))
    text = " ".join(advisor("parse", str(ours)).stdout.split())
    assert "every statement it held was the advisor's own (3, left out)" in text
    assert "log_min_duration_statement" not in text


def test_a_window_of_failed_statements_says_they_are_errors(embedded_cluster, pg_dsn, tmp_path):
    """A night in which the application's statements all failed: not 'it ran nothing'."""
    log = embedded_cluster.stderr_log
    start = log.stat().st_size
    logged = "-c log_min_duration_statement=0"
    with psycopg.connect(pg_dsn, autocommit=True, application_name="advisor", options=logged) as own:
        own.execute("/* advisor */ SELECT 1")
    with psycopg.connect(pg_dsn, autocommit=True, application_name="signup", options=logged) as app:
        for column in ("nope", "nope", "nope_end"):
            with pytest.raises(psycopg.errors.UndefinedColumn):
                app.execute(f"SELECT {column} FROM pg_class")
    deadline = time.monotonic() + 10
    while "nope_end" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the server log never showed the run"
        time.sleep(0.1)
    window = tmp_path / "window.log"
    window.write_bytes(log.read_bytes()[start:])
    text = " ".join(advisor("parse", str(window)).stdout.split())
    assert "(3 errors)" in text and "that did not fail (failed statements are errors, not executions)" in text


def test_evidence_numbers_read_as_a_person_reads_them():
    from advisor.report.words import round_floats
    assert round_floats({"ms": 96.95300000000002, "share": 0.000412345, "rows": [190050.0, 0.5], "n": 3}) == \
        {"ms": 96.953, "share": 0.000412, "rows": [190050, 0.5], "n": 3}
    assert isinstance(round_floats(190050.0), int) and round_floats(0.0) == 0.0


def test_counts_agree_with_their_nouns():
    assert [plural(n, "query") for n in (0, 1, 2)] == ["0 queries", "1 query", "2 queries"]
    assert [plural(n, "index") for n in (1, 3)] == ["1 index", "3 indexes"]
    assert plural(1234, "new finding") == "1,234 new findings"


# --- item 6 (report side): rows hidden from the role ----------------------------------------


@pytest.fixture
def limited_dsn(pg_dsn, schema_conn):
    """A role without pg_read_all_stats, and pg_stat_statements rows of another role (the superuser) it may not read."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (LIMITED_ROLE,)).fetchone():
            conn.execute(f"CREATE ROLE {LIMITED_ROLE} LOGIN")
        conn.execute("SELECT pg_stat_statements_reset()")
        for v in range(3):
            conn.execute("SELECT count(*) FROM items WHERE v > %s", (v,)).fetchone()
    return conninfo.make_conninfo(pg_dsn, user=LIMITED_ROLE)


def hidden_rows(pg_dsn) -> int:
    """The rows the limited role cannot read, counted by the server (twice: the first count adds its own row)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        count = "SELECT count(*) FROM pg_stat_statements WHERE userid <> %s::regrole"
        conn.execute(count, (LIMITED_ROLE,)).fetchone()
        return conn.execute(count, (LIMITED_ROLE,)).fetchone()[0]


def test_scan_says_which_rows_are_hidden_and_the_grant(pg_dsn, limited_dsn):
    hidden = hidden_rows(pg_dsn)
    assert hidden >= 3
    run = advisor("scan", "--dsn", limited_dsn, env={"COLUMNS": "400"})
    assert run.returncode == 0, run.stderr
    assert f"note: {hidden} pg_stat_statements rows hidden (<insufficient privilege>): GRANT pg_read_all_stats" in run.stdout
    assert any("GRANT pg_read_all_stats" in line for line in run.stdout.splitlines()[:3])  # first, not last
    note = f"{hidden} pg_stat_statements rows hidden (<insufficient privilege>)"
    doc = json.loads(advisor("scan", "--dsn", limited_dsn, "--format", "json").stdout)
    assert doc["workload"]["queries"] == 0 and any(note in n for n in doc["notes"])
    assert f"> **Note:** {note}" in advisor("scan", "--dsn", limited_dsn, "--format", "markdown").stdout


def test_report_shows_hidden_rows_first_and_says_first_run(pg_dsn, limited_dsn, tmp_path):
    hidden = hidden_rows(pg_dsn)
    out = tmp_path / "out"
    run = advisor("report", "--dsn", limited_dsn, "--out", str(out), "--time-budget", "10", "--progress")
    assert run.returncode == 0, run.stderr
    note = f"{hidden} pg_stat_statements rows hidden (<insufficient privilege>): GRANT pg_read_all_stats"
    doc = json.loads((out / "report.json").read_text())
    assert [w for w in doc["summary"]["warnings"] if note in w]
    summary = (out / "summary.md").read_text()
    assert f"> **Warning:** {note}" in summary and summary.index(note) < summary.index("## Since the last run")
    html = (out / "report.html").read_text()
    assert html.index(note.replace("<", "&lt;").replace(">", "&gt;")) < html.index('<section id="top-queries">')
    assert f"warning: {note}" in " ".join(run.stderr.split())
    # the first run says so, rather than "0 new"
    assert "first run: nothing to compare with yet" in run.stdout and "0 new" not in run.stdout
    # --progress off a terminal: plain step lines, without the source path of the code that logged them
    assert "reading pg_stat_statements" in run.stderr and not re.search(r"\w+\.py:\d+", run.stderr)
