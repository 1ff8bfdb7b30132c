"""`advisor report`: the nightly job. Read the workload (logs incrementally), scan, advise,
optionally benchmark, compare with the run history, and write report.json, report.html and
summary.md into one folder (the document: ``advisor/report/nightly.py``).

A night that cannot reach the database still writes its report, with the cause; a history
store or a benchmark that fails is noted, never a lost night.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from advisor.db.connect import AdvisorConnectionError, redact_dsn
from advisor.db.session import Session
from advisor.errors import AdvisorError
from advisor.findings import ScanResult, Severity
from advisor.history import History, database_label
from advisor.indexes.selection import Advice
from advisor.progress import Progress, Step
from advisor.report.nightly import (
    TREND_QUERIES,
    TREND_RUNS,
    empty_history,
    history_document,
    report_document,
    write_report,
)
from advisor.thresholds import DEFAULT
from advisor.words import plural
from advisor.workload.logs import offsets
from advisor.workload.logs.formats import sniff
from advisor.workload.logs.reader import expand, is_remote
from advisor.workload.model import Workload
from advisor.workload.sources import LogFiles, Reading, Source, StatStatements, load_workload

REGRESSION_PCT = 20.0  # the default of --fail-on-regression, also the threshold a report shows


@dataclass(frozen=True, slots=True)
class ReportOptions:
    dsn: str
    out: Path
    logs: tuple[str, ...] = ()
    pg_stat_statements: bool = False
    bench: bool = False
    history: str | None = None  # default: <out>/history.sqlite
    state: str | None = None  # default: <out>/.log-state.json
    fail_on: Severity | None = None
    fail_on_regression: float | None = None
    keep_runs: int = 30
    log_format: str = "auto"
    log_line_prefix: str | None = None
    time_budget_s: float = 60.0
    max_queries: int = 20
    engine: str = "local"  # where the logs are parsed (LogFiles.engine)
    dask_scheduler: str | None = None

    @property
    def threshold_pct(self) -> float:
        return self.fail_on_regression if self.fail_on_regression is not None else REGRESSION_PCT


@dataclass(slots=True)
class _Run:
    """What the night could not do, as it goes."""

    unanalysed: list[dict] = field(default_factory=list)
    unreachable: str | None = None
    logs_unread: bool = False

    def skip(self, what: str, reason: str) -> None:
        self.unanalysed.append({"what": what, "reason": reason})

    def failed(self, source: Source, error: AdvisorError) -> None:
        """A source that could not be read: the database unreachable ends the night's analysis, anything else is noted."""
        if isinstance(error, AdvisorConnectionError):
            self.unreachable = error.cause
        elif isinstance(source, StatStatements):
            self.skip("pg_stat_statements", error.cause)
        else:  # the logs: read again next night, so their offsets stay
            self.logs_unread = True
            self.skip("logs", error.cause)


@dataclass(slots=True)
class _Results:
    workload: Workload
    scanned: ScanResult | None = None
    indexes: Advice | None = None
    indexes_reason: str | None = None
    bench: dict | None = None


def run_report(opts: ReportOptions, step: Step = lambda _: None, progress: Progress | None = None) -> tuple[dict, int]:
    """Do the whole job; returns the report document and the exit code (0, 1 or 2). Always writes the files."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    label = database_label(opts.dsn)
    run = _Run()
    state_path = opts.state or str(out / ".log-state.json")
    logs, state, reads = _log_source(opts, state_path, run)
    results = _analyse(opts, logs, run, step, progress)
    if opts.bench and run.unreachable is None:
        results.bench = _bench(opts.dsn, run, step)
    _note_unanalysed(run, results)
    history = _history(opts, label, results, started, run)
    doc = report_document(started=started, database=label, workload=results.workload, scanned=results.scanned,
                          indexes=results.indexes, indexes_reason=results.indexes_reason, bench=results.bench,
                          history=history, unanalysed=run.unanalysed, log_reads=reads)  # fmt: skip
    code, reasons = _exit(opts, run, results, history)
    doc["exit"] = {"code": code, "reasons": reasons}
    write_report(out, doc)
    if run.unreachable is None and not run.logs_unread and state is not None:
        for r in reads:
            offsets.update_state(state, r["path"], r["end"])
        offsets.save_state(state_path, state)
    return doc, code


def _analyse(opts: ReportOptions, logs: LogFiles | None, run: _Run, step: Step, progress: Progress | None) -> _Results:
    """The workload, the scan and the index advice, on one connection for the night's reads (opened on first use)."""
    with Session(opts.dsn) as session:
        sources: list[Source] = [logs] if logs else []
        if opts.pg_stat_statements or not opts.logs:
            sources.append(StatStatements(session))
        results = _Results(load_workload(sources, Reading(progress=progress), step=step, failed=run.failed))
        if run.unreachable is None:
            from advisor.commands.scan import scan as run_scan

            try:
                results.scanned = run_scan(results.workload, session, config=DEFAULT, time_budget_s=opts.time_budget_s,
                                           max_queries=opts.max_queries, step=step)  # fmt: skip
            except AdvisorConnectionError as e:
                run.unreachable = e.cause
        if run.unreachable is None:
            results.indexes, results.indexes_reason = _advise(session, results.workload, step)
        else:
            results.indexes_reason = "database unreachable"
    return results


def _log_source(opts: ReportOptions, state_path: str, run: _Run) -> tuple[LogFiles | None, dict | None, list[dict]]:
    """The logs as a source that reads only what was appended since the last run, the offsets state, and the reads planned."""
    if not opts.logs:
        return None, None, []
    try:
        files = [p for p in expand(list(opts.logs)) if p != "-"]
    except OSError as e:
        raise AdvisorError(str(e), "check the paths given to --log") from e
    if any(is_remote(p) for p in files):  # offsets.py knows a file by its inode and reads its head
        raise AdvisorError("the nightly report reads only what was appended to local log files since its last run, "
                           "not URLs", "mount the logs where the report and the Dask workers read them, or read URLs "
                           "with advisor scan --log URL (the whole file each time)")
    state = offsets.load_state(state_path)
    formats = {os.path.abspath(p): sniff(p, opts.log_format, opts.log_line_prefix) for p in files}
    plan = offsets.plan_incremental(files, state, formats)
    for path, why in plan.skipped:
        run.skip(f"log {path}", why)
    reads = [{"path": read.path, "start": read.start, "end": read.end, "reason": read.reason} for read in plan.reads]
    # formats: parse in the format the plan's unit boundaries were found with, not a second sniff.
    # jobs=1: ranges are never split, so each is parsed here, in order.
    source = LogFiles(tuple(read.path for read in plan.reads), jobs=1, ranges={r.path: (r.start, r.end) for r in plan.reads},
                      formats=formats, notes=tuple(plan.notes), engine=opts.engine, scheduler=opts.dask_scheduler,
                      label="reading the logs (only what was appended since the last run)")  # fmt: skip
    return source, state, reads


def _advise(session: Session, workload: Workload, step: Step) -> tuple[Advice | None, str | None]:
    from advisor.commands.suggest import suggest
    from advisor.indexes.advice import advised_queries

    if not advised_queries(workload):
        return None, "the workload has no query to advise on"
    try:
        return suggest(session, workload, source_notes=False, step=lambda text: step(f"index advice: {text}")), None
    except AdvisorError as e:  # HypoPG missing, connection lost: a note, not a failed night
        return None, f"{e.cause}" + (f" ({e.fix})" if e.fix else "")


def _bench(dsn: str, run: _Run, step: Step) -> dict | None:
    from advisor.bench.pool import PoolBenchConfig, run_pool_bench
    from advisor.report.bench import pool_bench_document

    config = PoolBenchConfig(dsn=dsn, concurrency=(1, 4), duration_s=2.0, warmup_s=0.5,
                             modes=("new_connection", "psycopg_pool"), transports=("tcp",))
    try:
        return pool_bench_document(run_pool_bench(config, step=step))
    except AdvisorError as e:
        run.skip("pool benchmark", e.cause)
        return None


def _note_unanalysed(run: _Run, results: _Results) -> None:
    if run.unreachable is not None:
        run.unanalysed.insert(0, {"what": "database", "reason": f"database unreachable: {run.unreachable}"})
    if results.indexes is None and results.indexes_reason:
        run.skip("index recommendations", results.indexes_reason)
    if results.scanned is not None:
        for n in results.scanned.not_explained:
            run.skip(f"query {n.fingerprint}: {n.normalized[:200]}", f"not explained: {n.reason}")
        for check, why in results.scanned.skipped_checks:
            run.skip(f"check {check}", why)


def _history(opts: ReportOptions, label: str, results: _Results, started: str, run: _Run) -> dict:
    """Record the night, compare with the last one, and read each top query's trend; a store that fails
    is noted and the night's report still written."""
    if results.scanned is None:
        return empty_history(opts.threshold_pct)
    try:
        with History(opts.history or str(Path(opts.out) / "history.sqlite")) as store:
            store.record(label, results.workload, results.scanned.findings, started)
            change = store.compare(label, threshold_pct=opts.threshold_pct)
            trends = [(q, store.trend(label, q.fingerprint, limit=TREND_RUNS)) for q in results.workload.queries[:TREND_QUERIES]]
            store.prune(label, opts.keep_runs)
    except Exception as e:  # a history store that fails must not lose the night's report
        run.skip("history", f"{type(e).__name__}: {redact_dsn(str(e))[:300]}")
        return empty_history(opts.threshold_pct)
    return history_document(change, trends, opts.threshold_pct)


def _exit(opts: ReportOptions, run: _Run, results: _Results, history: dict) -> tuple[int, list[str]]:
    """2 when the database was unreachable; 1 for findings at --fail-on or regressions with --fail-on-regression."""
    if run.unreachable is not None:
        return 2, [f"database unreachable: {run.unreachable}"]
    code, reasons = 0, []
    if opts.fail_on is not None and results.scanned is not None:
        hits = [f for f in results.scanned.findings if f.severity >= opts.fail_on]
        if hits:
            code = 1
            reasons.append(f"{plural(len(hits), 'finding')} at or above {opts.fail_on.name}")
    if opts.fail_on_regression is not None and history["regressions"]:
        code = 1
        reasons.append(f"{plural(len(history['regressions']), 'regression')} over {opts.fail_on_regression:g} %")
    return code, reasons
