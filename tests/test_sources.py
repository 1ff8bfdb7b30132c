"""The workload sources' contract: partials merge, in input order, to what one pass gives.

What a distributed engine relies on: parts of a real server log parsed apart (and shipped as
pickles, as a remote worker's results are) and combined by a tree reduction give exactly the
single pass's workload, counts, skipped lines and session patterns included.
"""

from __future__ import annotations

import pickle
import uuid

import psycopg
import pytest

from advisor.errors import AdvisorError
from advisor.workload.logs.formats import sniff
from advisor.workload.sources import Partial, SqlFile, collect, load_workload, read_logs
from advisor.workload.sources.logs import Part, parse_part, parts_of
from tests.test_logs_server import _wait_for

CHILD = "SELECT id, name FROM src_items WHERE id = %s"


@pytest.fixture(scope="module")
def server_log(embedded_cluster, pg_dsn):
    """The harness server's stderr log after a tagged N+1 run: 4 parents, each with 6 children, in one unit of work."""
    app = f"sources-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS src_items (id int PRIMARY KEY, name text)")
        setup.execute("INSERT INTO src_items SELECT g, 'n' || g FROM generate_series(1, 100) g ON CONFLICT DO NOTHING")
    with psycopg.connect(pg_dsn, autocommit=True, application_name=app) as conn:
        conn.execute("SET log_min_duration_statement = 0")
        for parent in range(4):
            conn.execute("SELECT id FROM src_items WHERE id <= %s ORDER BY id", (6 + parent,)).fetchall()
            for key in range(6):
                conn.execute(CHILD, (parent * 10 + key + 1,)).fetchall()
        conn.execute("SELECT 'sources end'").fetchall()
    _wait_for(embedded_cluster, "'sources end'")
    return str(embedded_cluster.stderr_log), app


def _tree(partials: list[Partial]) -> Partial:
    """Pairwise, left before right, as a distributed engine's tree reduction combines results."""
    while len(partials) > 1:
        partials = [partials[i].merge(partials[i + 1]) if i + 1 < len(partials) else partials[i]
                    for i in range(0, len(partials), 2)]
    return partials[0]


def test_parts_reduced_as_a_tree_give_the_single_pass_workload(server_log):
    path, app = server_log
    fmt = sniff(path)
    parts = parts_of(path, fmt, jobs=5, min_part_bytes=1)
    assert len(parts) == 5 and parts[1].continues
    shipped = [pickle.loads(pickle.dumps(parse_part(p))) for p in parts]  # what a remote worker sends back
    tree = collect(_tree(shipped))
    single = collect(read_logs([path], jobs=1))

    # Other modules wrote this log too, with log_statement and auto_explain: their duration lines and plans
    # in the part after their statement's still count there (test_part_boundaries.py cuts at every line).
    def numbers(w):
        return sorted((q.fingerprint, q.calls, q.total_ms, q.timed_calls, q.min_ms, q.max_ms) for q in w.queries)

    assert [q for q in tree.queries if app in q.applications] == [q for q in single.queries if app in q.applications]
    assert numbers(tree) == numbers(single)
    assert (tree.lines, tree.skipped_count, tree.skipped, tree.plans) == \
        (single.lines, single.skipped_count, single.skipped, single.plans)
    ours = [q for q in single.queries if app in q.applications and "src_items WHERE id = $1" in q.normalized]
    assert [q.calls for q in ours] == [24]  # what the client ran
    n_plus_one = [r for r in single.repeats if r.child_fingerprint == ours[0].fingerprint]
    assert [r.statements for r in n_plus_one] == [24]
    # Session patterns: a unit of work that a part boundary cuts is seen as two (the next issue stitches
    # them); whatever the shape of the reduction, the parts give the same patterns.
    in_order = collect(read_logs([path], jobs=5, min_part_bytes=1))
    assert tree.repeats == in_order.repeats and tree.cache == in_order.cache


def test_a_bare_duration_in_the_next_part_keeps_its_statement_s_time(tmp_path):
    lines = [
        "2026-12-03 10:00:00.000 UTC [11] 6a.1 app@db app=x LOG:  statement: UPDATE t SET a = 1 WHERE id = 2\n",
        "2026-12-03 10:00:00.002 UTC [11] 6a.1 app@db app=x LOG:  duration: 0.057 ms\n",
    ]
    path = tmp_path / "boundary.log"
    path.write_text("".join(lines))
    fmt = sniff(str(path), prefix="%m [%p] %c %q%u@%d app=%a ")
    whole = collect(read_logs([str(path)], jobs=1, formats={str(path): fmt}))
    cut = len(lines[0])
    parts = [Part(str(path), fmt, 0, cut, followed=True), Part(str(path), fmt, cut, None, continues=True)]
    split = collect(_tree([parse_part(p) for p in parts]))
    assert [q.total_ms for q in whole.queries] == [0.057]
    assert [q.total_ms for q in split.queries] == [0.057]


def test_a_sql_file_is_a_workload_by_fingerprint(tmp_path):
    path = tmp_path / "plan.sql"
    path.write_text("SELECT * FROM t WHERE a = 1;\r\n\r\nSELECT *\n  FROM t WHERE a = 2;\nSELECT b FROM u;\n")
    workload = load_workload([SqlFile(path)])
    assert [(q.calls, q.sample) for q in sorted(workload.queries, key=lambda q: q.calls)] == \
        [(1, "SELECT b FROM u"), (2, "SELECT * FROM t WHERE a = 1")]
    assert workload.statements == 3 and workload.sources == (str(path),)
    assert all(q.mean_ms is None and q.timed_calls == 0 for q in workload.queries)  # a file says nothing of time


@pytest.mark.parametrize(("text", "cause"), [(None, "cannot read"), ("  \n;\n", "no statements in")])
def test_an_unreadable_or_empty_sql_file_says_why(tmp_path, text, cause):
    path = tmp_path / "w.sql"
    if text is not None:
        path.write_text(text)
    with pytest.raises(AdvisorError) as raised:
        load_workload([SqlFile(path)])
    assert raised.value.cause.startswith(cause) and raised.value.fix


def test_a_failed_source_is_reported_and_the_others_still_count(tmp_path):
    seen = []
    workload = load_workload([SqlFile(tmp_path / "missing.sql"), SqlFile(_write(tmp_path, "SELECT 1;\n"))],
                             failed=lambda source, error: seen.append((source.label, error.cause)))
    assert seen and seen[0][0] == "reading the SQL file" and "missing.sql" in seen[0][1]
    assert workload.statements == 1


def _write(tmp_path, text: str):
    path = tmp_path / "one.sql"
    path.write_text(text)
    return path
