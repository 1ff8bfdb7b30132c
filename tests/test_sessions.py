"""N+1 runs and cache replays from the order of statements in a log."""

from __future__ import annotations

from pathlib import Path

import pytest

from advisor.workload.sessions import CACHE_CONFIGS, timestamp_ms
from advisor.workload.sources import collect, read_logs


class LogWriter:
    """Writes stderr lines as PostgreSQL does, with a clock the test moves."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ms = 0.0

    def run(self, pid: int, sql: str, duration: float = 0.05, after_ms: float = 1.0, params: str | None = None) -> None:
        self.ms += after_ms
        seconds, millis = divmod(self.ms, 1000)
        minutes, seconds = divmod(int(seconds), 60)
        ts = f"2026-11-22 04:{minutes:02d}:{seconds:02d}.{int(millis):03d} UTC"
        verb = "execute <unnamed>" if params else "statement"
        self.lines.append(f"{ts} [{pid}] app@shop LOG:  duration: {duration:.3f} ms  {verb}: {sql}")
        if params:
            self.lines.append(f"{ts} [{pid}] app@shop DETAIL:  parameters: {params}")

    def workload(self, tmp_path: Path):
        path = tmp_path / "pg.log"
        path.write_text("\n".join(self.lines) + "\n")
        return collect(read_logs([str(path)], jobs=1))


def request_with_n_plus_one(log: LogWriter, pid: int, children: int, start: int = 0) -> None:
    log.run(pid, "BEGIN", after_ms=50)
    log.run(pid, "SELECT id, name FROM authors ORDER BY name LIMIT 20")
    for i in range(children):
        log.run(pid, "SELECT id, title FROM books WHERE author_id = $1", params=f"$1 = '{start + i}'")
    log.run(pid, "COMMIT")


def test_one_pooled_backend_serving_many_requests(tmp_path):
    log = LogWriter()
    for request in range(4):  # one backend, four requests, each its own transaction
        request_with_n_plus_one(log, pid=900, children=8, start=request * 10)
    (run,) = log.workload(tmp_path).repeats
    assert run.kind == "n_plus_one"
    assert (run.occurrences, run.statements, run.most_per_occurrence) == (4, 32, 8)
    assert run.child_normalized == "SELECT id, title FROM books WHERE author_id = $1"
    assert run.parent_normalized == "SELECT id, name FROM authors ORDER BY name LIMIT $1"
    assert run.child_ms == pytest.approx(32 * 0.05)
    assert run.sessions == ("900",)


def test_pauses_split_units_of_work_without_transactions(tmp_path):
    log = LogWriter()
    for i in range(6):  # six lookups, but two seconds apart: six separate requests
        log.run(901, "SELECT * FROM books WHERE id = $1", params=f"$1 = '{i}'", after_ms=2000)
    for i in range(6):  # the same six close together: one N+1 run
        log.run(902, "SELECT * FROM books WHERE id = $1", params=f"$1 = '{i}'", after_ms=3)
    (run,) = log.workload(tmp_path).repeats
    assert (run.occurrences, run.statements, run.sessions) == (1, 6, ("902",))


def test_same_parameters_and_short_runs_are_not_n_plus_one(tmp_path):
    log = LogWriter()
    log.run(903, "BEGIN", after_ms=50)
    for _ in range(10):  # the same row ten times: a cache candidate
        log.run(903, "SELECT * FROM settings WHERE key = $1", params="$1 = 'theme'")
    for i in range(3):  # a batch job's three lookups: below n1_min_repeats
        log.run(903, "SELECT * FROM books WHERE id = $1", params=f"$1 = '{i}'")
    log.run(903, "COMMIT")
    w = log.workload(tmp_path)
    assert w.repeats == ()
    (cached,) = [c for c in w.cache if "settings" in c.normalized]
    assert cached.lookups == 10
    assert all(hits == 9 for _, _, hits in cached.hits)  # the first is a miss, the rest hit every cache


def test_row_at_a_time_writes(tmp_path):
    log = LogWriter()
    log.run(904, "BEGIN", after_ms=50)
    for i in range(12):
        log.run(904, f"INSERT INTO audit (lot_id, action) VALUES ({i}, 'viewed')")
    log.run(904, "COMMIT")
    (run,) = log.workload(tmp_path).repeats
    assert run.kind == "n_plus_one_writes" and run.statements == 12


def test_cache_replay_honours_ttl(tmp_path):
    log = LogWriter()
    for _ in range(5):  # the same read every 5 seconds
        log.run(905, "SELECT * FROM products WHERE id = 3", after_ms=5000)
    (cached,) = log.workload(tmp_path).cache
    hits = {(ttl, size): h for ttl, size, h in cached.hits}
    assert hits[(1.0, 1000)] == 0  # expired before each repeat
    assert hits[(10.0, 1000)] == 2  # filled at 5 s, expires at 15 s: every other read misses
    assert hits[(300.0, 10_000)] == 4
    assert len(cached.hits) == len(CACHE_CONFIGS)


def test_timestamps_of_every_format():
    assert timestamp_ms("2026-11-22 04:00:01.250 UTC") - timestamp_ms("2026-11-22 04:00:00 UTC") == 1250
    assert timestamp_ms("2020-05-02T13:00:20.5Z") - timestamp_ms("2020-05-02T13:00:20.000Z") == 500
    assert timestamp_ms("1700000000.123") == 1700000000123.0
    assert timestamp_ms("garbage") is None and timestamp_ms(None) is None


def test_sqlcommenter_tags_and_application_name_point_to_the_code(tmp_path):
    from advisor.commands.scan import origin

    log = LogWriter()
    log.run(906, "SELECT * FROM orders WHERE id = 1 /*controller='orders',route='%2Forders%2F%3Aid',traceparent='00-ab'*/")
    (q,) = log.workload(tmp_path).queries
    assert origin(q) == "controller=orders, route=/orders/:id"


def test_quiet_sessions_are_closed_as_time_passes(tmp_path):
    from advisor.workload.fingerprint import fingerprint
    from advisor.workload.model import Execution
    from advisor.workload.sessions import SessionPatterns

    patterns = SessionPatterns()
    fp = fingerprint("SELECT 1")
    for i in range(500):  # 500 sessions that each run once and disconnect, a second apart
        ts = f"2026-11-22 05:{i // 60:02d}:{i % 60:02d}.000 UTC"
        patterns.add(Execution("SELECT 1", 0.1, ts, session=str(i)), fp)
    assert len(patterns.units) <= 21  # a sweep every 10 s closes units idle for 10 s: at most ~20 s stay open


def test_a_transaction_is_one_unit_however_long(tmp_path):
    log = LogWriter()
    log.run(910, "BEGIN", after_ms=50)
    log.run(910, "SELECT id FROM branches")
    for i in range(40):  # 21 s of lookups, half a second apart and one pause: past the 10 s cap, but one transaction
        log.run(910, "SELECT count(*) FROM accounts WHERE bid = $1", params=f"$1 = '{i}'",
                after_ms=1500 if i == 10 else 500)
    log.run(910, "COMMIT")
    for i in range(40):  # the same lookups without a transaction: the pause and the cap cut them
        log.run(911, "SELECT count(*) FROM accounts WHERE bid = $1", params=f"$1 = '{i}'",
                after_ms=1500 if i == 10 else 500)
    runs = {r.sessions: r for r in log.workload(tmp_path).repeats}
    assert (runs[("910",)].occurrences, runs[("910",)].statements) == (1, 40)
    assert runs[("910",)].parent_normalized == "SELECT id FROM branches"
    assert runs[("911",)].occurrences == 3 and runs[("911",)].statements == 40  # 10 | 21 (10 s) | 9


def test_a_shared_virtual_transaction_id_is_one_transaction():
    from advisor.workload.fingerprint import fingerprint
    from advisor.workload.model import Execution
    from advisor.workload.sessions import SessionPatterns

    def units(vxid) -> int:
        patterns = SessionPatterns()
        sql = "SELECT * FROM books WHERE author_id = $1"
        for i in range(30):  # 15 s of lookups, half a second apart
            ts = f"2026-11-22 05:00:{i // 2:02d}.{(i % 2) * 500:03d} UTC"
            patterns.add(Execution(sql, 1.0, ts, session="s1", vxid=vxid(i), parameters=f"$1 = '{i}'"),
                         fingerprint(sql))
        (run,) = patterns.repeat_patterns()
        return run.occurrences

    assert units(lambda i: "4/77") == 1  # BEGIN not logged (below log_min_duration_statement): the vxid tells
    assert units(lambda i: f"4/{i}") == 2  # autocommit, a new vxid each time: cut by the cap


def test_a_slow_statement_is_not_a_pause(tmp_path):
    log = LogWriter()
    for i in range(6):  # each takes 1.5 s: log lines 1.5 s apart, but no pause between the statements
        log.run(912, "SELECT * FROM reports WHERE id = $1", duration=1500.0, after_ms=1502, params=f"$1 = '{i}'")
    (run,) = log.workload(tmp_path).repeats
    assert (run.occurrences, run.statements) == (1, 6)


def test_a_growing_offset_is_a_paging_loop(tmp_path):
    log = LogWriter()
    for page in range(100):  # client-side binding: the offsets are literals in the text
        log.run(913, f"SELECT id, name FROM items ORDER BY id LIMIT 50 OFFSET {page * 50}")
    for author in range(8):  # the same offset for each parent: an N+1, not a loop
        log.run(913, "SELECT id FROM books WHERE author_id = $1 ORDER BY id LIMIT $2 OFFSET $3",
                params=f"$1 = '{author}', $2 = '5', $3 = '0'", after_ms=2000 if author == 0 else 1)
    runs = {r.kind: r for r in log.workload(tmp_path).repeats}
    loop = runs["pagination"]
    assert "FROM items" in loop.child_normalized and (loop.statements, loop.deepest_offset) == (100, 4950)
    # Pages of 50 (the step): 0 + 50 + … + 4,950 = 247,500 rows skipped of 247,500 + 100 × 50 read.
    assert loop.discarded_share == pytest.approx(247_500 / 252_500)
    assert "FROM books" in runs["n_plus_one"].child_normalized


def test_writes_invalidate_the_cached_reads_of_their_tables(tmp_path):
    log = LogWriter()
    for i in range(12):
        log.run(914, "SELECT * FROM products WHERE id = $1", params="$1 = '3'", after_ms=100)
        log.run(914, "SELECT * FROM colours WHERE id = $1", params="$1 = '1'")
        log.run(915, f"INSERT INTO audit (n) VALUES ({i})")  # another table: no effect on either read
        if i % 3 == 2:
            log.run(915, f"UPDATE products SET stock = stock - 1 WHERE id = {i}")  # another row, same table
    log.run(915, "TRUNCATE colours")
    log.run(914, "SELECT * FROM colours WHERE id = $1", params="$1 = '1'")
    cache = {c.normalized.split()[3]: c for c in log.workload(tmp_path).cache}
    hits = {(ttl, size): h for ttl, size, h in cache["products"].hits}
    assert cache["products"].lookups == 12 and hits[(300.0, 10_000)] == 8  # 4 misses: the first, and after 3 updates
    hits = {(ttl, size): h for ttl, size, h in cache["colours"].hits}
    # The first read of colours and the one after TRUNCATE miss.
    assert cache["colours"].lookups == 13 and hits[(300.0, 10_000)] == 11


def test_written_tables_are_read_with_sqlglot():
    from advisor.workload.tables import written_tables

    assert written_tables("insert into shop.orders (id) values ($1)") == ("orders",)
    assert written_tables("update t set a = $1 from u where u.id = t.id") == ("t",)
    assert written_tables("truncate a, b") == ("a", "b")
    assert written_tables("copy items from stdin") == ("items",)
    assert written_tables("copy items to stdout") == ()
    assert written_tables("with gone as (delete from q returning *) select * from gone") == ("q",)
    assert written_tables("select * from t") == ()


def test_a_transaction_left_idle_is_closed_by_the_sweep(tmp_path):
    log = LogWriter()
    log.run(916, "BEGIN", after_ms=50)
    for i in range(6):
        log.run(916, "SELECT * FROM books WHERE id = $1", params=f"$1 = '{i}'")
    log.run(916, "COMMIT", after_ms=12_000)  # 12 s idle: the sweep this line sets off closes the unit first
    (run,) = log.workload(tmp_path).repeats
    assert (run.occurrences, run.statements, run.sessions) == (1, 6, ("916",))


def test_a_data_modifying_with_is_a_write_not_a_cached_read(tmp_path):
    log = LogWriter()
    for _ in range(6):
        log.run(918, "SELECT * FROM jobs WHERE id = 1")
        log.run(918, "WITH done AS (DELETE FROM jobs WHERE id = 2 RETURNING id) SELECT count(*) FROM done")
    log.run(918, "SELECT * FROM jobs WHERE id = 1")
    log.run(918, "SELECT * FROM jobs WHERE id = 1")  # the only read with no write before it
    (cached,) = log.workload(tmp_path).cache  # the WITH is not a cache candidate, and it invalidates the read
    assert "FROM jobs WHERE id" in cached.normalized and cached.lookups == 8
    assert all(hits == 1 for _, _, hits in cached.hits)


def test_an_autocommit_run_cut_by_the_cap_keeps_its_parent(tmp_path):
    log = LogWriter()
    log.run(919, "SELECT id FROM branches", after_ms=50)
    for i in range(40):  # 20 s without a pause: the cap cuts it, but it is one N+1 with one parent
        log.run(919, "SELECT count(*) FROM accounts WHERE bid = $1", params=f"$1 = '{i}'", after_ms=500)
    (run,) = log.workload(tmp_path).repeats
    assert (run.occurrences, run.statements) == (2, 40)
    assert run.parent_normalized == "SELECT id FROM branches"
