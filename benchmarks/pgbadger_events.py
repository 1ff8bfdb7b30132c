"""Server-event counts: `advisor parse` against pgBadger on pgBadger's own sample logs.

    .venv/bin/python benchmarks/pgbadger_events.py                  # every corpus log
    .venv/bin/python benchmarks/pgbadger_events.py logplex.gz cnpg.log.gz

For each log of ../shared/corpus/pgbadger/ (MANIFEST.tsv gives each file's
format and log_line_prefix), runs pgBadger (JSON output) and `advisor parse
--format json`, and prints one table per kind of event: the advisor's count,
pgBadger's, and "equal" or why they differ. Where the two tools count different
things (pgBadger files some LOG lines as errors, counts sessions by their
disconnection line only, …) the reason is a rule, in ``RULES``; where they
should count the same thing and differ, the row says "DIFFERS" and the exit
status is 1. tests/test_events_corpus.py freezes the numbers printed here.

Where pgBadger 12 keeps each count in its JSON (read from its source, parse_query):
temp files   tempfile_info.<db>.count / .size           ("temporary file: path …, size N")
lock waits   error_info "still waiting for" entries     (change_log_level files the LOG line as an ERROR)
             lock_info.<db>.<locktype>.count            (the "acquired … after N ms" lines)
deadlocks    error_info "deadlock detected" entries
errors       error_info, keyed by severity + normalized message; overall_stat.errors_number is
             WARNING, ERROR, FATAL, PANIC and the LOG lines change_log_level re-files as ERROR
sessions     session_info.<db>.count, .app.<name>.count ("disconnection: session time:" lines only)
             connection_info.<db>.count                 ("connection authorized" lines)
checkpoints  checkpoint_info.starting.<reason>          ("checkpoint starting: <reason>"); .write, .sync in s
autovacuum   autovacuum_info.<db>.count, .tables.<t>.tuples.removed; autoanalyze_info.<db>.count
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parse_bench import advisor_exe, ensure_pgbadger, pgbadger_version

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "pgbadger"

# pgBadger's -f and --prefix per file, from MANIFEST.tsv (None: pgBadger detects it). The PgBouncer
# logs are left out: the advisor reads no server events from them (tests/test_logs.py).
PGBADGER_ARGS: dict[str, tuple[str | None, str | None]] = {
    "anonymize.log": ("csv", None),
    "begin_end.log": ("stderr", "%t [%p]: db=%d,user=%u,app=%a,client=%h "),
    "cloudsql.log.gz": (None, None),
    "cnpg.log.gz": ("jsonlog", None),
    "csv_statement_without_duration.log": ("csv", None),
    "light.postgres.log.bz2": ("stderr", "%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h "),
    "logplex.gz": ("logplex", None),
    "multiline_param.log": ("stderr", "%m [%p] user=%u,db=%d "),
    "pg-syslog.1.bz2": ("syslog", "db=%d,user=%u,app=%a,client=%h "),
    "pg-syslog.2.gz": ("syslog", "db=%d,user=%u,app=%a,client=%h "),
    "pg-timezones.log": ("stderr", "%t:%h:%u@%d:[%p]:"),
    "pg_rawcsv.log": ("stderr", "%m [%p] %q%u@%d "),
    "pg_vacuums.json.gz": ("jsonlog", None),
    "pg_vacuums.log.gz": ("stderr", "%t [%p]: [%l-1] user=%u,db=%d,host=%h,app=%a"),
    "postgresql_param_range.log": ("stderr", "%t [%p]: [%l-1] [%x] usr=%u,db=%d,appli=%a "),
    "queryid.log.gz": ("stderr", "%m [%p] [queryid=%Q] %u@%d "),
    "rds.log.bz2": ("rds", None),
    "stmt_type.log": ("stderr", "%m [%p] "),
    "tempfile_only.log.gz": ("stderr", "%t [%p]: [%l-1] user=%u,db=%d "),
    "weeknumber.log": ("csv", None),
}

# The LOG messages pgBadger re-files as errors (change_log_level in its source): not ERRORs to the server.
RELEVELED = re.compile(
    r'parameter "[^"]+" changed to|database system was|recovery has paused|ending cancel to blocking autovacuum'
    r"|skipping analyze of|using stale statistics|replication command:|still waiting for"
    r"|server process.*was terminated by signal|could not (receive|send) data (from|to) client")

KINDS = ("temp_files", "temp_bytes", "lock_waits", "deadlocks", "errors", "sessions", "checkpoints",
         "checkpoints_timed", "checkpoint_write_ms", "checkpoint_sync_ms", "autovacuums", "autoanalyzes",
         "removed_tuples")

# Where the two tools count by different rules: (file, kind) -> why, read from the log ("*": every kind).
RULES: dict[tuple[str, str], str] = {
    ("cnpg.log.gz", "*"): "rule: pgBadger 12.0 cannot read CloudNativePG's envelope ({\"logger\":\"postgres\","
                          "\"record\":{…}}: -f jsonlog finds no record, no -f cannot detect it); later versions can",
    ("cloudsql.log.gz", "sessions"): "rule: pgBadger counts 'disconnection' lines (397); the advisor an application's "
                                     "sessions by its connection or disconnection lines, whichever are more (398 "
                                     "'connection authorized'; 3 sessions are still open at the log's end, 2 began "
                                     "before it)",
    ("cloudsql.log.gz", "removed_tuples"): "advisor gap: Cloud SQL writes each line of an autovacuum message as "
                                           "an entry of its own ('\\ttuples: 60 removed, …' without a prefix); "
                                           "pgBadger joins them to the vacuum, the advisor does not yet",
    ("pg_vacuums.json.gz", "removed_tuples"): "rule: pgBadger reads 'tuples: N removed' only from a continuation line "
                                              "of stderr/syslog; in jsonlog the whole message is one field. Its stderr "
                                              "twin pg_vacuums.log.gz gives pgBadger the advisor's 3,558,928",
}


def pgbadger_counts(doc: dict) -> dict[str, float]:
    """The counts of KINDS in one pgBadger JSON report (every per-database section summed)."""
    def per_db(section: str, key: str) -> float:
        return sum(float(v.get(key) or 0) for v in doc.get(section, {}).values() if isinstance(v, dict))

    errors = [(text, int(info.get("count", 0))) for db in doc.get("error_info", {}).values()
              for text, info in db.items()]
    starting = doc.get("checkpoint_info", {}).get("starting", {})
    return {
        "temp_files": per_db("tempfile_info", "count"), "temp_bytes": per_db("tempfile_info", "size"),
        "lock_waits": sum(n for text, n in errors if "still waiting for" in text),
        "deadlocks": sum(n for text, n in errors if "deadlock detected" in text),
        "errors": sum(n for text, n in errors if re.match(r"(ERROR|FATAL|PANIC):", text) and not RELEVELED.search(text)),
        "sessions": per_db("session_info", "count"),
        "checkpoints": sum(starting.values()), "checkpoints_timed": starting.get("time", 0),
        "checkpoint_write_ms": round(float(doc.get("checkpoint_info", {}).get("write", 0)) * 1000, 3),
        "checkpoint_sync_ms": round(float(doc.get("checkpoint_info", {}).get("sync", 0)) * 1000, 3),
        "autovacuums": per_db("autovacuum_info", "count"), "autoanalyzes": per_db("autoanalyze_info", "count"),
        "removed_tuples": sum(int(t.get("tuples", {}).get("removed", 0)) for db in doc.get("autovacuum_info", {}).values()
                              if isinstance(db, dict) for t in db.get("tables", {}).values()),
    }


def pgbadger_extras(doc: dict) -> dict[str, float]:
    """What pgBadger counts beside KINDS, printed to explain a difference."""
    def per_db(section: str) -> float:
        return sum(float(v.get("count") or 0) for v in doc.get(section, {}).values() if isinstance(v, dict))

    acquired = sum(int(t.get("count", 0)) for db in doc.get("lock_info", {}).values() for t in db.values()
                   if isinstance(t, dict))
    return {"errors_number": doc.get("overall_stat", {}).get("errors_number", 0),
            "connections": per_db("connection_info"), "lock_acquired": acquired}


def advisor_counts(events: dict) -> dict[str, float]:
    """The counts of KINDS in `advisor parse --format json`'s events object."""
    tables = events["autovacuum"]["by_table"].values()
    cp = events["checkpoints"]
    return {
        "temp_files": events["temp_files"]["count"], "temp_bytes": events["temp_files"]["bytes"],
        "lock_waits": events["lock_waits"]["count"], "deadlocks": events["deadlocks"]["count"],
        "errors": events["errors"]["count"], "sessions": events["sessions"]["count"],
        "checkpoints": cp["count"], "checkpoints_timed": cp["timed"],
        "checkpoint_write_ms": cp["write_ms"], "checkpoint_sync_ms": cp["sync_ms"],
        "autovacuums": sum(t["vacuums"] for t in tables), "autoanalyzes": sum(t["analyzes"] for t in tables),
        "removed_tuples": sum(t["removed_tuples"] for t in tables),
    }


def run_pgbadger(exe: str, log: Path, workdir: Path) -> dict:
    fmt, prefix = PGBADGER_ARGS[log.name]
    out = workdir / f"{log.name}.pgbadger.json"
    cmd = [exe, "-q", "-o", str(out), "--pid-dir", str(workdir), "--tempdir", str(workdir)]
    cmd += ["-f", fmt] if fmt else []
    cmd += ["--prefix", prefix] if prefix else []
    subprocess.run([*cmd, str(log)], check=True, capture_output=True)
    return json.loads(out.read_bytes())


def run_advisor(exe: str, log: Path, workdir: Path) -> dict:
    out = workdir / f"{log.name}.advisor.json"
    subprocess.run([exe, "parse", str(log), "--format", "json", "--output", str(out)], check=True, capture_output=True)
    return json.loads(out.read_bytes())["events"]


def verdict(name: str, kind: str, ours: float, theirs: float) -> str:
    why = RULES.get((name, kind)) or RULES.get((name, "*"))
    return why if why and ours != theirs else "equal" if ours == theirs else "DIFFERS"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", help="corpus file names (default: all of PGBADGER_ARGS)")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--advisor", help="the advisor executable (default: .venv/bin/advisor)")
    ap.add_argument("--all", action="store_true", help="print the kinds both count as zero too")
    args = ap.parse_args(argv)
    pgbadger, advisor = ensure_pgbadger(), advisor_exe(args.advisor)
    if not args.corpus.is_dir() or pgbadger is None or advisor is None:
        print(f"needs the corpus ({args.corpus}), pgBadger and the advisor", file=sys.stderr)
        return 2
    print(f"pgBadger {pgbadger_version(pgbadger)}")
    rows: dict[str, list[tuple[str, float, float, str]]] = {kind: [] for kind in KINDS}
    extras = []
    with tempfile.TemporaryDirectory(prefix="pgbadger-events-") as tmp:
        for name in args.files or sorted(PGBADGER_ARGS):
            doc = run_pgbadger(pgbadger, args.corpus / name, Path(tmp))
            ours, theirs = advisor_counts(run_advisor(advisor, args.corpus / name, Path(tmp))), pgbadger_counts(doc)
            extras.append((name, pgbadger_extras(doc)))
            for kind in KINDS:
                if args.all or ours[kind] or theirs[kind]:
                    rows[kind].append((name, ours[kind], theirs[kind], verdict(name, kind, ours[kind], theirs[kind])))
    for kind, found in rows.items():
        if found:
            print(f"\n## {kind}\n" + _table(["file", "advisor", "pgBadger", "verdict"], found))
    print("\n## pgBadger's other counts (errors_number: WARNING/ERROR/FATAL/PANIC + re-filed LOG lines; "
          "connections: 'connection authorized' lines; lock_acquired: 'acquired … after' lines)")
    print(_table(["file", "errors_number", "connections", "lock_acquired"],
                 [(n, e["errors_number"], e["connections"], e["lock_acquired"]) for n, e in extras
                  if args.all or any(e.values())]))
    return 1 if any(r[3] == "DIFFERS" for found in rows.values() for r in found) else 0


def _num(value) -> str:
    return f"{value:,.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else f"{value:,}"


def _table(headers: list[str], rows) -> str:
    cells = [headers, *[[r[0], *(_num(v) if isinstance(v, int | float) else str(v) for v in r[1:])] for r in rows]]
    widths = [max(len(c[i]) for c in cells if i < len(c)) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells]
    return "\n".join([lines[0], "-+-".join("-" * w for w in widths), *lines[1:]])


if __name__ == "__main__":
    sys.exit(main())
