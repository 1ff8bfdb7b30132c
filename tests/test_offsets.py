"""Incremental log reading: only what was appended, rotation, truncation, compressed files, partial lines."""

from __future__ import annotations

import bz2
import gzip
import json
import os
from pathlib import Path

from advisor.workload.logs.formats import LogFormat, read_executions
from advisor.workload.logs.offsets import (
    line_boundary,
    load_state,
    new_state,
    plan_incremental,
    save_state,
    update_state,
)
from advisor.workload.logs.records import Tally
from advisor.workload.sources import collect, read_logs

PREFIX = "%m [%p] %q%u@%d "
FMT = LogFormat("stderr", PREFIX)


def line(n: int, sql: str | None = None, pid: int = 100) -> str:
    sql = sql or f"SELECT * FROM t{n} WHERE id = {n}"
    return f"2026-01-01 00:00:{n % 60:02d}.000 UTC [{pid}] alice@shop LOG:  duration: {n}.000 ms  statement: {sql}\n"


def append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def statements(path, start: int = 0, end: int | None = None) -> list[str]:
    return [e.sql for e in read_executions(str(path), FMT, Tally(str(path)), start, end)]


def run(paths, state, read=statements, formats=None) -> tuple[dict[str, list[str]], object]:
    """One incremental run: plan, parse each range, save the offsets. Returns statements by path and the plan."""
    plan = plan_incremental([str(p) for p in paths], state, formats)
    seen = {}
    for r in plan.reads:
        seen[os.path.basename(r.path)] = read(r.path, r.start, r.end)
        update_state(state, r.path, r.end)
    return seen, plan


def test_append_reads_only_the_new_part(tmp_path):
    log = tmp_path / "postgresql.log"
    log.write_text(line(1) + line(2))
    state = new_state()
    seen, plan = run([log], state)
    assert seen == {"postgresql.log": ["SELECT * FROM t1 WHERE id = 1", "SELECT * FROM t2 WHERE id = 2"]}
    assert plan.reads[0].reason == "new" and tuple(plan.reads[0]) == (str(log), 0)

    state_file = tmp_path / "state" / "offsets.json"
    save_state(str(state_file), state)
    assert not [p for p in state_file.parent.iterdir() if p.name != "offsets.json"]  # no temporary left behind
    state = load_state(str(state_file))
    assert state["files"][str(log)]["offset"] == log.stat().st_size

    seen, plan = run([log], state)
    assert seen == {} and plan.skipped == [(str(log), "nothing new")]

    append(log, line(3) + line(4, "SELECT 'multi\n\tline'"))
    seen, plan = run([log], state)
    assert seen == {"postgresql.log": ["SELECT * FROM t3 WHERE id = 3", "SELECT 'multi\nline'"]}
    assert plan.reads[0].reason == "appended"

    # the same through scan_logs, as the report does it
    append(log, line(5) + line(6))
    plan = plan_incremental([str(log)], state)
    (read,) = plan.reads
    scan = read_logs([read.path], jobs=1, ranges={read.path: (read.start, read.end)}, formats={read.path: FMT})
    (tally,) = scan.tallies
    assert scan.stats.statements == 2 and tally.lines == 2
    assert {q.normalized for q in scan.stats.queries_by_total_time()} == {"SELECT * FROM t5 WHERE id = $1",
                                                                           "SELECT * FROM t6 WHERE id = $1"}


def test_scan_logs_reads_only_the_range_and_keeps_file_line_numbers(tmp_path):
    """A range reads only its bytes; its bad lines keep their line numbers in the whole file."""
    log = tmp_path / "postgresql.log"
    before = line(1) + "garbage before\n" + line(2)
    after = line(5)  # past the end of the range
    log.write_text(before + line(3) + "garbage in\n" + line(4, "SELECT 'multi\n\tline'") + "more garbage\n" + after)
    path, start, end = str(log), len(before.encode()), log.stat().st_size - len(after.encode())
    whole = collect(read_logs([path], jobs=1, formats={path: FMT}))
    assert [s.line for s in whole.skipped] == [2, 5, 8]

    for jobs in (1, 4):  # a range is one part, however many workers (and however small the parts may be)
        scan = read_logs([path], jobs=jobs, min_part_bytes=1, ranges={path: (start, end)}, formats={path: FMT})
        w = collect(scan)
        assert w.statements == 2 and w.lines == 5 and w.skipped_count == 2
        assert {q.normalized for q in w.queries} == {"SELECT * FROM t3 WHERE id = $1", "SELECT $1"}
        assert [(s.file, s.line, s.text) for s in w.skipped] == [(path, 5, "garbage in"), (path, 8, "more garbage")]
        assert [s.line for s in w.skipped] == [s.line for s in whole.skipped if s.line > before.count("\n")]


def test_partial_last_line_waits_until_complete(tmp_path):
    log = tmp_path / "postgresql.log"
    full = line(1) + line(2)
    log.write_text(full + line(3)[:30])  # the server is still writing line 3
    state = new_state()
    seen, plan = run([log], state)
    assert seen["postgresql.log"] == ["SELECT * FROM t1 WHERE id = 1", "SELECT * FROM t2 WHERE id = 2"]
    assert plan.reads[0].end == len(full)
    assert state["files"][str(log)]["offset"] == len(full)

    seen, plan = run([log], state)
    assert seen == {} and plan.skipped == [(str(log), "only a line still being written")]

    append(log, line(3)[30:])
    seen, _ = run([log], state)
    assert seen == {"postgresql.log": ["SELECT * FROM t3 WHERE id = 3"]}


def test_update_state_lands_on_a_line_boundary(tmp_path):
    log = tmp_path / "postgresql.log"
    log.write_bytes(b"one\ntwo\nthr")
    assert [line_boundary(str(log), n) for n in (0, 3, 4, 6, 8, 11)] == [0, 0, 4, 4, 8, 8]
    state = new_state()
    update_state(state, str(log), 6)  # a caller's position mid-line
    assert state["files"][str(log)]["offset"] == 4
    update_state(state, str(log), 10_000)
    assert state["files"][str(log)]["offset"] == 8


def test_rotation_by_rename_finishes_the_old_file_and_reads_the_new_one(tmp_path):
    log = tmp_path / "postgresql.log"
    log.write_text(line(1))
    state = new_state()
    run([log], state)
    append(log, line(2))  # written after our run, before the rotation
    old = tmp_path / "postgresql.log.1"
    os.rename(log, old)
    log.write_text(line(3))

    seen, plan = run([log, old], state)
    assert seen == {"postgresql.log": ["SELECT * FROM t3 WHERE id = 3"],
                    "postgresql.log.1": ["SELECT * FROM t2 WHERE id = 2"]}
    reasons = {os.path.basename(r.path): r.reason for r in plan.reads}
    assert reasons == {"postgresql.log": "rotated", "postgresql.log.1": "renamed"}
    assert any("rotated" in n for n in plan.notes) and any("was " in n for n in plan.notes)

    # only the new file given: rotation still detected, read from 0
    state2 = new_state()
    log2 = tmp_path / "b.log"
    log2.write_text(line(1))
    run([log2], state2)
    os.rename(log2, tmp_path / "b.log.1")
    log2.write_text(line(7))
    seen, plan = run([log2], state2)
    assert seen == {"b.log": ["SELECT * FROM t7 WHERE id = 7"]} and plan.reads[0].reason == "rotated"


def test_file_replaced_under_the_same_inode_is_read_from_the_start(tmp_path):
    log = tmp_path / "postgresql.log"
    log.write_text(line(1) + line(2))
    state = new_state()
    run([log], state)
    with open(log, "r+") as f:  # same inode, same length or longer, other bytes: copytruncate and refill
        f.write(line(8) + line(9) + line(10))
    seen, plan = run([log], state)
    assert plan.reads[0].reason == "rotated" and plan.reads[0].start == 0
    assert len(seen["postgresql.log"]) == 3


def test_truncation_starts_over(tmp_path):
    log = tmp_path / "postgresql.log"
    log.write_text(line(1) + line(2) + line(3))
    state = new_state()
    run([log], state)
    head = state["files"][str(log)]
    with open(log, "w") as f:  # copytruncate: same inode, emptied
        f.write(line(1))  # the same first bytes, shorter than the offset
    assert os.stat(log).st_ino == head["ino"]
    seen, plan = run([log], state)
    assert plan.reads[0].reason == "truncated" and plan.reads[0].start == 0
    assert seen == {"postgresql.log": ["SELECT * FROM t1 WHERE id = 1"]}
    assert any("truncated" in n for n in plan.notes)


def test_compressed_unchanged_is_skipped_changed_is_read_whole(tmp_path):
    gz = tmp_path / "postgresql.log.1.gz"
    with gzip.open(gz, "wt") as f:
        f.write(line(1) + line(2))
    bz = tmp_path / "postgresql.log.2.bz2"
    with bz2.open(bz, "wt") as f:
        f.write(line(3))
    state = new_state()
    seen, plan = run([gz, bz], state)
    assert seen == {"postgresql.log.1.gz": ["SELECT * FROM t1 WHERE id = 1", "SELECT * FROM t2 WHERE id = 2"],
                    "postgresql.log.2.bz2": ["SELECT * FROM t3 WHERE id = 3"]}
    assert all(r.end is None and r.start == 0 for r in plan.reads)

    seen, plan = run([gz, bz], state)
    assert seen == {} and {p for p, _ in plan.skipped} == {str(gz), str(bz)}
    assert all("unchanged" in why for _, why in plan.skipped)

    with gzip.open(gz, "wt") as f:  # rewritten (the same inode), other content
        f.write(line(1) + line(2) + line(4))
    seen, plan = run([gz, bz], state)
    assert seen == {"postgresql.log.1.gz": ["SELECT * FROM t1 WHERE id = 1", "SELECT * FROM t2 WHERE id = 2",
                                            "SELECT * FROM t4 WHERE id = 4"]}
    assert plan.reads[0].reason in ("changed", "rotated")


def test_unit_of_work_is_not_cut_between_runs(tmp_path):
    """With the format known, a statement whose DETAIL parameters may still come is left for the next run."""
    log = tmp_path / "postgresql.log"
    detail = "2026-01-01 00:00:09.000 UTC [100] alice@shop DETAIL:  parameters: $1 = '42'\n"
    execute = "2026-01-01 00:00:09.000 UTC [100] alice@shop LOG:  duration: 1.000 ms  execute <unnamed>: SELECT * FROM u WHERE id = $1\n"
    log.write_text(line(1) + execute)
    state = new_state()
    formats = {str(log): FMT}

    def params(path, start, end):
        return [(e.sql, e.parameters) for e in read_executions(path, FMT, Tally(path), start, end)]

    seen, _plan = run([log], state, params, formats)
    assert seen == {"postgresql.log": [("SELECT * FROM t1 WHERE id = 1", None)]}
    append(log, detail + line(2))
    seen, _plan = run([log], state, params, formats)
    assert seen == {"postgresql.log": [("SELECT * FROM u WHERE id = $1", "$1 = '42'")]}


def test_state_file_is_json_and_a_missing_or_foreign_one_starts_fresh(tmp_path):
    assert load_state(str(tmp_path / "missing.json")) == new_state()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"version": 99}))
    assert load_state(str(other)) == new_state()
    log = tmp_path / "x.log"
    log.write_text(line(1))
    state = new_state()
    update_state(state, str(log), log.stat().st_size)
    path = tmp_path / "s.json"
    save_state(str(path), state)
    entry = json.loads(path.read_text())["files"][str(log)]
    assert set(entry) >= {"dev", "ino", "size", "head", "offset"}
