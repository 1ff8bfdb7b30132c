"""Log reading: framing, the execution rules, bad input, compression, parallel parts.

The log text here is as PostgreSQL 15 writes it (copied from the harness
server's logs and from the shared corpus); the round trip through a live
server is in test_logs_server.py.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advisor.workload.fingerprint import fingerprint
from advisor.workload.logs.formats import read_executions, sniff
from advisor.workload.logs.prefix import PrefixError, detect_prefix, prefix_regex
from advisor.workload.logs.reader import LogInputError
from advisor.workload.logs.records import Tally
from advisor.workload.sources import collect, read_logs

DEBIAN = "%m [%p] %q%u@%d "


def write(tmp_path: Path, text: str, name: str = "postgresql.log") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def workload(paths, **kw):
    return collect(read_logs(paths if isinstance(paths, list) else [paths], jobs=1, **kw))


def by_text(w):
    return {q.normalized: q for q in w.queries}


# --- log_line_prefix ---------------------------------------------------------


def test_prefix_reads_every_field_and_percent_q_makes_the_rest_optional():
    regex = prefix_regex("%m [%p] %c %q%u@%d app=%a ")
    m = regex.match("2026-11-22 02:51:13.201 UTC [4242] 673fe2a1.1092 alice@shop app=psql LOG:  statement: SELECT 1")
    assert m.group("timestamp") == "2026-11-22 02:51:13.201 UTC"
    assert (m.group("pid"), m.group("session"), m.group("user"), m.group("database")) == ("4242", "673fe2a1.1092", "alice", "shop")
    assert m.group("application") == "psql"
    assert m.group("message") == "statement: SELECT 1"
    background = regex.match("2026-11-22 02:51:13.201 UTC [4100] 673fe2a1.1004 LOG:  checkpoint starting: time")
    assert background.group("user") is None and background.group("severity") == "LOG"


def test_prefix_with_padding_and_application_names_with_spaces():
    regex = prefix_regex("%t [%-6p] app=%a,user=%u ")
    m = regex.match("2026-11-22 02:51:13 UTC [42    ] app=PostgreSQL JDBC Driver,user=bob ERROR:  boom")
    assert (m.group("pid"), m.group("application"), m.group("user")) == ("42", "PostgreSQL JDBC Driver", "bob")


def test_unknown_escape_is_a_clear_error():
    with pytest.raises(PrefixError, match="%y"):
        prefix_regex("%t %y ")


@pytest.mark.parametrize(
    "line, expected",
    [
        ("2021-12-03 07:14:48.591 UTC [4913] user1@mydb LOG:  duration: 1.0 ms  statement: SELECT 1", DEBIAN),
        ("2017-09-06 08:49:22 CEST [23451]: [1-1] user=postgres,db=bench,app=pgbench,client=[local] LOG:  statement: SELECT 1",
         "%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h "),
        ("2018-03-07 13:13:16 UTC:10.0.0.3(51844):app@prod:[6969]:LOG:  duration: 0.2 ms  statement: SELECT 1", "%t:%r:%u@%d:[%p]:"),
    ],
)  # fmt: skip
def test_common_prefixes_are_detected(line, expected):
    assert detect_prefix([line]) == expected


def test_user_prefix_is_used_as_given(tmp_path):
    log = write(tmp_path, "<42>|alice|shop|LOG:  duration: 2.500 ms  statement: SELECT * FROM t WHERE a = 1\n")
    w = workload(log, prefix="<%p>|%u|%d|")
    assert w.statements == 1 and w.skipped_count == 0
    assert w.queries[0].users == ("alice",) and w.queries[0].total_ms == 2.5


@pytest.mark.parametrize("prefix", ["\t%m [%p] ", "%a: "])
def test_a_prefix_that_may_begin_with_whitespace_still_reads_tab_lines_as_heads(tmp_path, prefix):
    """A TAB line is taken as a continuation without a match only when no head can begin so."""
    head = "\t2026-11-22 03:00:00.001 UTC [7] " if prefix.startswith("\t") else "\tpsql: "
    log = write(tmp_path, f"{head}LOG:  duration: 1.000 ms  statement: SELECT 1\n"
                          f"{head}LOG:  duration: 2.000 ms  statement: SELECT 2\n")
    w = workload(log, prefix=prefix)
    assert w.statements == 2 and w.skipped_count == 0


# --- the execution rules -----------------------------------------------------

EXTENDED = """\
2026-11-22 03:00:00.001 UTC [700] app@shop LOG:  duration: 0.050 ms  parse <unnamed>: SELECT * FROM orders WHERE customer_id = $1
2026-11-22 03:00:00.002 UTC [700] app@shop LOG:  duration: 0.020 ms  bind <unnamed>: SELECT * FROM orders WHERE customer_id = $1
2026-11-22 03:00:00.002 UTC [700] app@shop DETAIL:  parameters: $1 = '7'
2026-11-22 03:00:00.003 UTC [700] app@shop LOG:  duration: 0.110 ms  execute <unnamed>: SELECT * FROM orders WHERE customer_id = $1
2026-11-22 03:00:00.003 UTC [700] app@shop DETAIL:  parameters: $1 = '7'
2026-11-22 03:00:00.004 UTC [700] app@shop LOG:  duration: 0.020 ms  bind S_1: SELECT * FROM orders WHERE customer_id = $1
2026-11-22 03:00:00.004 UTC [700] app@shop DETAIL:  parameters: $1 = '8'
2026-11-22 03:00:00.005 UTC [700] app@shop LOG:  duration: 0.090 ms  execute S_1: SELECT * FROM orders WHERE customer_id = $1
2026-11-22 03:00:00.005 UTC [700] app@shop DETAIL:  parameters: $1 = '8'
"""


def test_parse_bind_execute_is_one_execution_with_its_parameters(tmp_path):
    w = workload(write(tmp_path, EXTENDED))
    assert w.statements == 2
    (q,) = w.queries
    assert q.calls == 2 and q.total_ms == pytest.approx(0.2)
    assert q.sample_parameters == "$1 = '7'"  # the slower of the two


def test_statement_then_bare_duration_join_and_a_lone_statement_inherits_nothing(tmp_path):
    log = write(
        tmp_path,
        "2026-11-22 03:00:00.001 UTC [701] a@b LOG:  statement: SELECT 1\n"
        "2026-11-22 03:00:00.002 UTC [701] a@b LOG:  duration: 3.000 ms\n"
        "2026-11-22 03:00:00.003 UTC [702] a@b LOG:  statement: SELECT 2 + 2\n",
    )
    w = workload(log)
    assert w.statements == 2
    assert sorted((q.timed_calls, q.total_ms) for q in w.queries) == [(0, 0.0), (1, 3.0)]


AUTO_EXPLAIN = """\
2026-11-22 03:00:01.000 UTC [703] a@b LOG:  duration: 12.000 ms  plan:
\tQuery Text: SELECT count(*) FROM big WHERE flag
\tAggregate  (cost=10.00..10.01 rows=1 width=8)
\t  ->  Seq Scan on big  (cost=0.00..9.00 rows=400 width=0)
2026-11-22 03:00:01.000 UTC [703] a@b LOG:  duration: 12.100 ms  statement: SELECT count(*) FROM big WHERE flag
2026-11-22 03:00:02.000 UTC [703] a@b LOG:  duration: 30.000 ms  plan:
\t{
\t  "Query Text": "SELECT max(id) FROM big",
\t  "Plan": {"Node Type": "Aggregate"}
\t}
"""


def test_auto_explain_plan_is_attached_not_counted(tmp_path):
    w = workload(write(tmp_path, AUTO_EXPLAIN))
    assert w.plans == 2
    assert w.statements == 2  # one statement with its plan, one plan with no statement logged
    assert {q.calls for q in w.queries} == {1}
    assert sum(q.total_ms for q in w.queries) == pytest.approx(42.1)


# As the harness server wrote them (log_line_prefix '%m [%p] %c %q%u@%d app=%a ',
# auto_explain.log_min_duration = 0): psycopg 3 in autocommit, in a transaction, with log_statement.
def _session(lines: str, head: str = "2026-12-03 09:21:20.002 UTC [11034] 6b11348f.2b1a postgres@postgres app=tx ") -> str:
    """Prefix every head line (not the TAB continuation lines) as the server does."""
    return "".join(line if line.startswith("\t") else head + line for line in lines.splitlines(keepends=True))


SELECT_THEN_PLAN = """\
LOG:  duration: 0.353 ms  parse <unnamed>: SELECT v FROM t WHERE id = $1
LOG:  duration: 0.341 ms  bind <unnamed>: SELECT v FROM t WHERE id = $1
DETAIL:  parameters: $1 = '0'
LOG:  duration: 0.034 ms  execute <unnamed>: SELECT v FROM t WHERE id = $1
DETAIL:  parameters: $1 = '0'
LOG:  duration: 0.031 ms  plan:
\tQuery Text: SELECT v FROM t WHERE id = $1
\tIndex Scan using t_pkey on t  (cost=0.15..8.17 rows=1 width=32) (actual time=0.030..0.030 rows=0 loops=1)
\t  Index Cond: (id = '0'::smallint)
LOG:  duration: 0.030 ms  parse <unnamed>: UPDATE t SET v = v WHERE id = $1
LOG:  duration: 0.060 ms  bind <unnamed>: UPDATE t SET v = v WHERE id = $1
DETAIL:  parameters: $1 = '3'
LOG:  duration: 0.028 ms  plan:
\tQuery Text: UPDATE t SET v = v WHERE id = $1
\tUpdate on t  (cost=0.15..8.17 rows=0 width=0) (actual time=0.028..0.028 rows=0 loops=1)
\t  ->  Index Scan using t_pkey on t  (cost=0.15..8.17 rows=1 width=38) (actual time=0.005..0.006 rows=1 loops=1)
\t        Index Cond: (id = '3'::smallint)
LOG:  duration: 0.563 ms  execute <unnamed>: UPDATE t SET v = v WHERE id = $1
DETAIL:  parameters: $1 = '3'
LOG:  duration: 0.003 ms  plan:
\tQuery Text: SELECT 'mark1'
\tResult  (cost=0.00..0.01 rows=1 width=32) (actual time=0.001..0.001 rows=1 loops=1)
LOG:  duration: 0.347 ms  statement: SELECT 'mark1'
"""

# Inside a transaction the unnamed portal lives until the next Bind: the plan comes after the next parse.
PLAN_AFTER_NEXT_PARSE = """\
LOG:  duration: 0.321 ms  parse <unnamed>: SELECT v FROM t WHERE id = $1
LOG:  duration: 0.519 ms  bind <unnamed>: SELECT v FROM t WHERE id = $1
DETAIL:  parameters: $1 = '0'
LOG:  duration: 0.133 ms  execute <unnamed>: SELECT v FROM t WHERE id = $1
DETAIL:  parameters: $1 = '0'
LOG:  duration: 0.049 ms  parse <unnamed>: SELECT v FROM t WHERE id = $1
LOG:  duration: 0.129 ms  plan:
\tQuery Text: SELECT v FROM t WHERE id = $1
\tIndex Scan using t_pkey on t  (cost=0.15..8.17 rows=1 width=32)
\t  Index Cond: (id = '0'::smallint)
LOG:  duration: 0.188 ms  bind <unnamed>: SELECT v FROM t WHERE id = $1
DETAIL:  parameters: $1 = '1'
LOG:  duration: 0.013 ms  execute <unnamed>: SELECT v FROM t WHERE id = $1
DETAIL:  parameters: $1 = '1'
LOG:  duration: 0.079 ms  parse <unnamed>: UPDATE t SET v = v WHERE id = $1
LOG:  duration: 0.011 ms  plan:
\tQuery Text: SELECT v FROM t WHERE id = $1
\tIndex Scan using t_pkey on t  (cost=0.15..8.17 rows=1 width=32)
\t  Index Cond: (id = '1'::smallint)
LOG:  duration: 0.073 ms  bind <unnamed>: UPDATE t SET v = v WHERE id = $1
DETAIL:  parameters: $1 = '3'
LOG:  duration: 0.031 ms  plan:
\tQuery Text: UPDATE t SET v = v WHERE id = $1
\tUpdate on t  (cost=0.15..8.17 rows=0 width=0)
\t  ->  Index Scan using t_pkey on t  (cost=0.15..8.17 rows=1 width=38)
\t        Index Cond: (id = '3'::smallint)
LOG:  duration: 0.103 ms  execute <unnamed>: UPDATE t SET v = v WHERE id = $1
DETAIL:  parameters: $1 = '3'
LOG:  duration: 0.294 ms  statement: COMMIT
"""

# log_statement = all + log_duration: the statement is written when it starts, its plan and time after.
PLAN_AFTER_LOG_STATEMENT = """\
LOG:  duration: 0.238 ms
LOG:  duration: 0.285 ms
LOG:  execute <unnamed>: SELECT v FROM t WHERE id = $1
DETAIL:  parameters: $1 = '1'
LOG:  duration: 0.040 ms
LOG:  duration: 0.028 ms  plan:
\t{
\t  "Query Text": "SELECT v FROM t WHERE id = $1",
\t  "Plan": {"Node Type": "Index Scan", "Relation Name": "t"}
\t}
LOG:  statement: SELECT v FROM t WHERE id = 1
LOG:  duration: 0.006 ms  plan:
\t{
\t  "Query Text": "SELECT v FROM t WHERE id = 1",
\t  "Plan": {"Node Type": "Index Scan", "Relation Name": "t"}
\t}
LOG:  duration: 0.839 ms
"""


@pytest.mark.parametrize("log, calls", [
    (SELECT_THEN_PLAN, {"SELECT v FROM t WHERE id = $1": 1, "UPDATE t SET v = v WHERE id = $1": 1, "SELECT 'mark1'": 1}),
    (PLAN_AFTER_NEXT_PARSE, {"SELECT v FROM t WHERE id = $1": 2, "UPDATE t SET v = v WHERE id = $1": 1, "COMMIT": 1}),
    (PLAN_AFTER_LOG_STATEMENT, {"SELECT v FROM t WHERE id = $1": 1, "SELECT v FROM t WHERE id = 1": 1}),
], ids=["extended-autocommit", "extended-in-transaction", "log-statement-json"])  # fmt: skip
def test_plans_before_or_after_their_statement_are_never_executions(tmp_path, log, calls):
    path = write(tmp_path, _session(log))
    tally = Tally(path)
    executions = list(read_executions(path, sniff(path), tally))
    assert Counter(e.sql for e in executions) == calls
    assert tally.plans == sum(1 for e in executions if e.plan is not None)  # every plan found its execution
    assert all(e.plan is None or e.sql in e.plan for e in executions)  # ... and the right one
    assert all(e.duration_ms is not None for e in executions)


def test_parameters_of_a_bind_stay_off_the_previous_execute(tmp_path):
    path = write(tmp_path, _session(PLAN_AFTER_NEXT_PARSE))
    executions = list(read_executions(path, sniff(path), Tally(path)))
    assert [e.parameters for e in executions if e.sql.startswith("SELECT")] == ["$1 = '0'", "$1 = '1'"]


# log_min_duration_statement = 10 ms, auto_explain.log_min_duration = 0: only the slow statement is
# logged; the fast ones leave only their plans, each of which is the one trace of one execution.
PLANS_OVER_A_STATEMENT_THRESHOLD = """\
LOG:  duration: 0.020 ms  plan:
\tQuery Text: SELECT v FROM t WHERE id = $1
\tIndex Scan using t_pkey on t  (cost=0.15..8.17 rows=1 width=32)
LOG:  duration: 0.018 ms  plan:
\tQuery Text: SELECT v FROM t WHERE id = $1
\tIndex Scan using t_pkey on t  (cost=0.15..8.17 rows=1 width=32)
LOG:  duration: 15.102 ms  plan:
\tQuery Text: SELECT pg_sleep(0.015),
\t       1
\tResult  (cost=0.00..0.01 rows=1 width=4)
LOG:  duration: 15.400 ms  statement: SELECT pg_sleep(0.015),
\t       1
LOG:  duration: 0.019 ms  plan:
\tQuery Text: SELECT v FROM t WHERE id = $1
\tIndex Scan using t_pkey on t  (cost=0.15..8.17 rows=1 width=32)
LOG:  duration: 12.000 ms  execute <unnamed>: SELECT v FROM t WHERE id = $1
LOG:  duration: 11.900 ms  plan:
\tQuery Text: SELECT v FROM t WHERE id = $1
\tIndex Scan using t_pkey on t  (cost=0.15..8.17 rows=1 width=32)
"""


def test_a_plan_whose_statement_was_not_logged_counts_once(tmp_path):
    w = workload(write(tmp_path, _session(PLANS_OVER_A_STATEMENT_THRESHOLD)))
    assert w.plans == 5
    calls = {q.fingerprint: (q.calls, round(q.total_ms, 3)) for q in w.queries}
    assert calls == {
        fingerprint("SELECT v FROM t WHERE id = $1").id: (4, 12.057),  # three plans alone and one logged execute
        fingerprint("SELECT pg_sleep(0.015), 1").id: (1, 15.4),  # the statement's time, not its plan's
    }


# An UPDATE's plan comes before its execute line; the execution logged before it (same text, under
# the plan threshold) went without a plan. Time tells: a plan cannot outlast its execution.
TIME_TELLS = """\
LOG:  duration: 2.000 ms  execute <unnamed>: UPDATE t SET v = v WHERE id = $1
LOG:  duration: 9.000 ms  plan:
\tQuery Text: UPDATE t SET v = v WHERE id = $1
\tUpdate on t  (cost=0.15..8.17 rows=0 width=0)
LOG:  duration: 9.500 ms  execute <unnamed>: UPDATE t SET v = v WHERE id = $1
LOG:  duration: 3.000 ms  execute <unnamed>: UPDATE t SET v = v WHERE id = $1
"""


def test_timing_gives_a_plan_to_the_execution_that_ran_it(tmp_path):
    path = write(tmp_path, _session(TIME_TELLS))
    executions = list(read_executions(path, sniff(path), Tally(path)))
    assert [(e.duration_ms, e.plan is not None) for e in executions] == [(2.0, False), (9.5, True), (3.0, False)]


# log_statement = all + log_duration: a statement that fails gets no duration, and is no execution
# (pg_stat_statements does not count it either).
FAILED_STATEMENTS = """\
LOG:  statement: SELECT 1 / (price - price) FROM items WHERE id = 4
ERROR:  division by zero
STATEMENT:  SELECT 1 / (price - price) FROM items WHERE id = 4
LOG:  execute <unnamed>: SELECT 1 / (price - price) FROM items WHERE id = $1
DETAIL:  parameters: $1 = '4'
ERROR:  division by zero
STATEMENT:  SELECT 1 / (price - price) FROM items WHERE id = $1
LOG:  statement: SELECT 1
LOG:  duration: 0.100 ms
ERROR:  relation "nope" does not exist at character 15
STATEMENT:  SELECT * FROM nope
"""


def test_a_statement_that_failed_is_not_an_execution(tmp_path):
    path = write(tmp_path, _session(FAILED_STATEMENTS))
    assert [e.sql for e in read_executions(path, sniff(path), Tally(path))] == ["SELECT 1"]


def test_multi_line_statements_are_joined(tmp_path):
    log = write(
        tmp_path,
        "2026-11-22 03:00:00.001 UTC [704] a@b LOG:  duration: 1.000 ms  statement: SELECT a,\n"
        "\t       b\n"
        "\tFROM t\n"
        "2026-11-22 03:00:00.002 UTC [704] a@b LOG:  duration: 1.000 ms  statement: SELECT a, b FROM t\n",
    )
    w = workload(log)
    assert w.statements == 2 and len(w.queries) == 1 and w.skipped_count == 0


# --- bad input -----------------------------------------------------------------


def test_garbage_lines_are_counted_with_line_numbers_and_the_run_goes_on(tmp_path):
    log = write(
        tmp_path,
        "2026-11-22 03:00:00.001 UTC [705] a@b LOG:  duration: 1.000 ms  statement: SELECT 1\n"
        "this is not a log line\n"
        "\x00\x01\x02 binary\n"
        "2026-11-22 03:00:00.002 UTC [705] a@b LOG:  duration: 1.000 ms  statement: SELECT 1\n",
    )
    w = workload(log, prefix=DEBIAN)
    assert w.statements == 2
    assert w.skipped_count == 2
    assert [(s.line, s.reason) for s in w.skipped] == [
        (2, "does not match the log_line_prefix"),
        (3, "does not match the log_line_prefix"),
    ]


def test_only_the_first_hundred_skipped_lines_are_kept(tmp_path):
    log = write(tmp_path, "2026-11-22 03:00:00.001 UTC [1] a@b LOG:  statement: SELECT 1\n" + "junk\n" * 250)
    w = workload(log, prefix=DEBIAN)
    assert w.skipped_count == 250 and len(w.skipped) == 100 and w.skipped[-1].line == 101


def test_truncated_last_line_latin1_bytes_and_empty_files(tmp_path):
    log = tmp_path / "cut.log"
    log.write_bytes(
        b"2026-11-22 03:00:00.001 UTC [9] a@b LOG:  duration: 1.000 ms  statement: SELECT 'caf\xe9'\n"
        b"2026-11-22 03:00:00.002 UTC [9] a@b LOG:  duration: 2.000 ms  statement: SELECT 'x"
    )
    w = workload(str(log), prefix=DEBIAN)
    assert w.statements == 2 and w.lines == 2
    empty = write(tmp_path, "", "empty.log")
    w = workload(empty)
    assert (w.statements, w.lines, w.skipped_count) == (0, 0, 0)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(LogInputError, match="no such log file"):
        workload(str(tmp_path / "nope.log"))


def test_ten_megabyte_statement(tmp_path):
    values = ",".join(str(i) for i in range(1_500_000))
    log = write(tmp_path, f"2026-11-22 03:00:00.001 UTC [9] a@b LOG:  duration: 5.000 ms  statement: SELECT * FROM t WHERE id IN ({values})\n")
    assert Path(log).stat().st_size > 10_000_000
    w = workload(log)
    assert w.statements == 1 and w.queries[0].total_ms == 5.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000))
def test_parsing_never_raises_on_arbitrary_bytes(tmp_path, data):
    log = tmp_path / "fuzz.log"
    log.write_bytes(b"2026-11-22 03:00:00.001 UTC [9] a@b LOG:  statement: SELECT 1\n" + data)
    w = workload(str(log))
    assert w.statements >= 0 and w.lines >= 1


# --- compression, stdin-free globs, parallel parts ---------------------------


def test_compressed_logs_read_the_same(tmp_path):
    plain = write(tmp_path, EXTENDED * 3)
    data = Path(plain).read_bytes()
    expected = workload(plain)
    for suffix, compress in ((".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)):
        path = tmp_path / f"log{suffix}"
        path.write_bytes(compress(data))
        got = workload(str(path))
        assert (got.statements, got.queries) == (expected.statements, expected.queries)


def test_globs_expand_in_order(tmp_path):
    write(tmp_path, EXTENDED, "a.log")
    write(tmp_path, EXTENDED, "b.log")
    w = workload(str(tmp_path / "*.log"))
    assert w.statements == 4 and len(w.sources) == 2


def _big_log(tmp_path: Path, copies: int) -> str:
    block = []
    for i in range(copies):
        pid = 800 + i % 7
        block.append(
            f"2026-11-22 03:{i // 3600 % 60:02d}:{i // 60 % 60:02d}.{i % 1000:03d} UTC [{pid}] u{i % 3}@db LOG:  duration: {i % 97}.{i % 10}00 ms  execute <unnamed>: SELECT * FROM t{i % 5} WHERE id = $1\n"
            f"2026-11-22 03:00:00.000 UTC [{pid}] u{i % 3}@db DETAIL:  parameters: $1 = '{i}'\n"
            f"2026-11-22 03:00:00.000 UTC [{pid}] u{i % 3}@db LOG:  duration: {i % 13}.500 ms  statement: UPDATE t{i % 4} SET a = {i}\n"
            f"\tWHERE b = 'x{i}'\n"
            + ("garbage line\n" if i % 1000 == 0 else "")
        )
    return write(tmp_path, "".join(block), "big.log")


def test_parallel_parts_give_exactly_the_single_pass_result(tmp_path):
    log = _big_log(tmp_path, 20_000)
    single = collect(read_logs([log], jobs=1))
    parallel = collect(read_logs([log], jobs=3, min_part_bytes=256 << 10))
    assert single.statements == 40_000
    assert parallel.queries == single.queries
    assert (parallel.lines, parallel.skipped_count, parallel.skipped) == (single.lines, single.skipped_count, single.skipped)


def test_sniffing_tells_formats_apart(tmp_path):
    csv = write(tmp_path, '2026-11-22 03:00:00.001 UTC,"a","b",9,"[local]",673f.1,1,"SELECT",2026-11-22 03:00:00 UTC,3/1,0,LOG,00000,"statement: SELECT 1",,,,,,,,,"psql","client backend",,0\n', "x.csv")
    js = write(tmp_path, '{"timestamp":"2026-11-22 03:00:00.001 UTC","pid":9,"error_severity":"LOG","message":"statement: SELECT 1","query_id":42}\n', "x.json")
    assert sniff(csv).name == "csvlog" and sniff(js).name == "jsonlog"
    assert workload(csv).statements == 1
    q = workload(js).queries[0]
    assert q.query_ids == (42,)


# --- the real-world corpus (pgBadger's own test logs) -----------------------

# statements counted by pgBadger 12.0 (`queries_number`, measured on this corpus),
# which the advisor must match: the same statements, counted the same way.
PGBADGER_COUNTS = {
    "light.postgres.log.bz2": 629,
    "rds.log.bz2": 114_594,
    "pg-syslog.1.bz2": 59_871,
    "logplex.gz": 4,
    "multiline_param.log": 5,
    "queryid.log.gz": 20,
    "tempfile_only.log.gz": 65,
    "stmt_type.log": 12,
    "cloudsql.log.gz": 1,
    "anonymize.log": 5,
    "weeknumber.log": 6,
    "postgresql_param_range.log": 3,
    "csv_statement_without_duration.log": 2,
}


@pytest.mark.corpus
def test_every_corpus_file_parses_without_error(corpus_dir):
    for path in sorted(corpus_dir.iterdir()):
        if path.name in ("MANIFEST.tsv", "README.md"):
            continue
        w = workload(str(path))
        assert w.lines > 0, path.name
        assert w.statements + w.other_events + w.skipped_count > 0, path.name


@pytest.mark.corpus
@pytest.mark.parametrize("name, count", sorted(PGBADGER_COUNTS.items()))
def test_statement_counts_match_pgbadger(corpus_dir, name, count):
    w = workload(str(corpus_dir / name))
    assert w.statements == count


@pytest.mark.corpus
def test_corpus_figures_pgbadger_asserts(corpus_dir):
    # t/03_consistency.t: the logplex CTE took 21761.546 ms in all.
    logplex = workload(str(corpus_dir / "logplex.gz"))
    assert any(q.normalized.upper().startswith("WITH") and round(q.total_ms, 3) == 21761.546 for q in logplex.queries)
    # t/07: a statement-only csv line must not inherit the previous duration.
    csv = workload(str(corpus_dir / "csv_statement_without_duration.log"))
    assert sorted(q.total_ms for q in csv.queries) == [0.0, 688786.283]
    # rds.log.bz2 is 114,604 lines of RDS format.
    assert workload(str(corpus_dir / "rds.log.bz2")).lines == 114_604
    # multi-line bind parameters stay with their execute.
    multi = workload(str(corpus_dir / "multiline_param.log"))
    assert any(q.sample_parameters and re.search(r"njchar\nhello", q.sample_parameters) for q in multi.queries)


@pytest.mark.corpus
def test_pgbouncer_logs_are_recognised_not_skipped(corpus_dir):
    w = workload(str(corpus_dir / "pgbouncer.log.gz"))
    assert w.statements == 0 and w.skipped_count == 0 and w.other_events == 127_910
    assert "PgBouncer" in w.notes[0]


def test_a_cursor_fetch_is_the_same_execution(tmp_path):
    log = write(
        tmp_path,
        "2026-11-22 03:00:00.001 UTC [710] a@b LOG:  duration: 0.110 ms  execute S_1/C_1: SELECT * FROM orders WHERE id > $1\n"
        "2026-11-22 03:00:00.001 UTC [710] a@b DETAIL:  parameters: $1 = '5'\n"
        "2026-11-22 03:00:00.002 UTC [710] a@b LOG:  duration: 0.090 ms  execute fetch from S_1/C_1: SELECT * FROM orders WHERE id > $1\n",
    )
    (q,) = workload(log).queries
    assert q.calls == 1 and q.total_ms == pytest.approx(0.2)  # as pg_stat_statements counts it


# --- the advisor's own statements ---------------------------------------------

OWN = """\
2026-11-22 03:00:00.001 UTC [720] 6740.1 app@shop app=shop LOG:  duration: 1.000 ms  statement: SELECT * FROM orders WHERE id = 1
2026-11-22 03:00:00.002 UTC [721] 6740.2 app@shop app=advisor_bench LOG:  duration: 1.000 ms  execute <unnamed>: SELECT balance FROM accounts WHERE id = $1
2026-11-22 03:00:00.002 UTC [721] 6740.2 app@shop app=advisor_bench DETAIL:  parameters: $1 = '1'
2026-11-22 03:00:00.003 UTC [722] 6740.3 app@shop app=psql LOG:  duration: 1.000 ms  statement: /* advisor */ EXPLAIN (FORMAT JSON) SELECT 1
2026-11-22 03:00:00.004 UTC [723] 6740.4 app@shop app=advisor LOG:  duration: 2.000 ms  plan:
\tQuery Text: SELECT count(*) FROM pg_class
\tAggregate  (cost=10.00..10.01 rows=1 width=8)
"""


@pytest.mark.parametrize("ranged", [False, True], ids=["scan", "incremental range"])
def test_the_advisors_own_statements_are_left_out_and_counted(tmp_path, ranged):
    path = write(tmp_path, OWN)
    w = workload(path, ranges={path: (0, None)} if ranged else None)
    assert [q.sample for q in w.queries] == ["SELECT * FROM orders WHERE id = 1"]
    assert (w.statements, w.advisor_statements, w.plans) == (1, 3, 0)
    assert "3 statements sent by the advisor itself were left out" in w.notes
