"""The `advisor` command: parses arguments, calls the pipeline, prints. Nothing else lives here."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from advisor import __version__
from advisor.errors import AdvisorError
from advisor.findings import Severity
from advisor.indexes.model import MIN_IMPROVEMENT
from advisor.report.render import View, render, write
from advisor.thresholds import DEFAULT
from advisor.workload.model import Workload
from advisor.workload.sources import LogFiles, Reading, Source, SqlFile, load_workload

if TYPE_CHECKING:  # the database's modules load with the commands that open one: parse of logs needs no driver
    from advisor.db.session import Session

app = typer.Typer(
    name="advisor",
    help="PostgreSQL query optimization advisor: reads the workload, examines plans, proposes indexes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, log_path=False)  # log lines without the source path (`cli.py:145`)

TICK_S = 5.0  # with --progress and stderr not a terminal: a plain status line this often
MB = 1 << 20


class LogFormatChoice(str, Enum):
    auto = "auto"
    stderr = "stderr"
    csvlog = "csvlog"
    jsonlog = "jsonlog"
    syslog = "syslog"
    logplex = "logplex"


class Engine(str, Enum):
    local = "local"
    dask = "dask"


class SortKey(str, Enum):
    total = "total"
    mean = "mean"
    calls = "calls"
    p95 = "p95"


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


# Options several commands take, declared once.
LogFormatOption = Annotated[LogFormatChoice, typer.Option("--log-format", help="Log format; auto detects it per file.")]
LogLinePrefixOption = Annotated[str | None, typer.Option(
    "--log-line-prefix", help="The server's log_line_prefix for stderr logs, e.g. '%m [%p] %q%u@%d '. Detected among common ones when omitted.")]
EngineOption = Annotated[Engine, typer.Option(
    "--engine", help="Where the logs are parsed: local (this machine's processes) or dask (Dask tasks, one per part of a file, "
    "merged in order to the same result: a local cluster of --jobs worker processes, or the cluster at --dask-scheduler; "
    "pip install 'advisor\\[dask]'). Logs may be s3://, gs:// or https:// URLs with 'advisor\\[s3]', 'advisor\\[gcs]' or "
    "'advisor\\[remote]'.")]  # \\[: typer reads help as Rich markup, where [dask] would be a style and vanish
DaskSchedulerOption = Annotated[str | None, typer.Option(
    "--dask-scheduler", envvar="ADVISOR_DASK_SCHEDULER", help="Parse on the running Dask cluster of this scheduler (tcp://host:8786; "
    "implies --engine dask). Its workers open the logs themselves: give paths they can read, such as object storage URLs.")]
ProgressOption = Annotated[bool | None, typer.Option(
    "--progress/--no-progress", help="Progress on stderr: the step, MB of logs read, time elapsed (default: only when stderr is a terminal).")]


def _version(value: bool) -> None:
    if value:
        print(f"advisor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = None,
) -> None:
    pass


@app.command()
def parse(
    logs: Annotated[list[str] | None, typer.Argument(help="Log files or globs; '-' reads stdin. .gz, .bz2, .xz are read transparently.")] = None,
    dsn: Annotated[str | None, typer.Option("--dsn", envvar="ADVISOR_DSN", help="Also read pg_stat_statements from this database; its counters give calls and totals.")] = None,
    log_format: LogFormatOption = LogFormatChoice.auto,
    log_line_prefix: LogLinePrefixOption = None,
    top: Annotated[int | None, typer.Option("--top", min=1, help="Show this many queries (text default 20; JSON default all).")] = None,
    sort: Annotated[SortKey, typer.Option("--sort", help="Order queries by total time, mean time, calls or p95.")] = SortKey.total,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Parallel workers (default: the number of cores).")] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="text (a table) or json (versioned, see README).")] = OutputFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    show_values: Annotated[bool, typer.Option("--show-values", help="Show literal values in samples (masked by default).")] = False,
    progress: ProgressOption = None,
    engine: EngineOption = Engine.local,
    dask_scheduler: DaskSchedulerOption = None,
) -> None:
    """Read slow query logs (and pg_stat_statements) and print the workload: queries by fingerprint with counts, time and percentiles."""
    if not logs and not dsn:
        raise AdvisorError("nothing to read", "give log files, or --dsn to read pg_stat_statements")
    sources = _sources(logs, dsn, log_format, log_line_prefix, jobs, engine, dask_scheduler)
    workload = _sorted(_load(sources, Reading(sessions=False), progress), sort)
    write(render(workload, output_format.value, View(top, show_values)), output)


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option("--out", help="Folder for the results (default: a new advisor-demo-<time> folder here).")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the demo database running and print its DSN.")] = False,
    scale: Annotated[float, typer.Option("--scale", min=0.01, max=20.0, help="Size of the fixture data: 1.0 is 1M test results.")] = 1.0,
) -> None:
    """Run the advisor end to end on a throwaway PostgreSQL with a bundled fixture and workload."""
    from advisor import demo as demo_run

    size = demo_run.Scale(lots=max(10, round(400 * scale)))
    folder = out or Path(f"advisor-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    folder.mkdir(parents=True, exist_ok=True)
    with _steps("starting") as step:
        result = demo_run.run(size, step=step)
    try:
        from advisor.commands.report import ReportOptions, run_report
        from advisor.report.nightly import summary_markdown

        with _steps("reporting") as step:
            options = ReportOptions(dsn=result.dsn, out=folder, logs=(str(result.cluster.stderr_log),),
                                    pg_stat_statements=True, bench=True)  # fmt: skip
            doc, _ = run_report(options, step=step)
        print(summary_markdown(doc))
        print(f"replayed {result.statements_sent} statements; the server log is {result.cluster.stderr_log}")
        print(f"report: {(folder / 'report.html').resolve()}  (and report.json, summary.md)")
        if keep:
            print(f"the demo database keeps running: {result.dsn}  (stop it with Ctrl-C)")
            _wait_forever()
    finally:
        result.cluster.stop()


class _Activity:
    """What long work is doing, on stderr. On a terminal a live line (the step, MB of logs read,
    the time elapsed, redrawn every second even while one big log is parsed) and a log line per
    step; elsewhere nothing, unless --progress asks for a plain status line every TICK_S seconds.
    Call it with a step's text; ``progress(done, total)`` takes bytes of logs read."""

    def __init__(self, label: str, wanted: bool | None = None) -> None:
        self.text, self.read, self.started = label, "", time.monotonic()
        self.live = err.is_terminal and wanted is not False
        self.ticking = bool(wanted) and not err.is_terminal
        self.bar: Progress | None = None
        self.stop = threading.Event()

    def __enter__(self) -> _Activity:
        if self.live:
            self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                console=err, transient=True)  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task(self.text)
        if self.ticking:
            threading.Thread(target=self._tick, daemon=True).start()
        return self

    def __call__(self, text: str) -> None:
        self.text, self.read = text, ""
        self._redraw()
        if self.live or self.ticking:
            err.log(text, highlight=False)

    def progress(self, done: int, total: int) -> None:
        self.read = f": {done / MB:,.1f} of {total / MB:,.1f} MB"
        self._redraw()

    def _redraw(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=self.text + self.read)

    def _tick(self) -> None:
        while not self.stop.wait(TICK_S):
            err.print(f"{self.text}{self.read}, {time.monotonic() - self.started:,.0f} s", highlight=False, soft_wrap=True)

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.bar is not None:
            self.bar.stop()


def _steps(label: str, wanted: bool | None = None) -> _Activity:
    return _Activity(label, wanted)


@contextmanager
def _first_ctrl_c_stops(what: str):
    """The first Ctrl-C sets the event it yields (a search stops at its next step and keeps what it has, with a
    note); a second one interrupts as Ctrl-C always does."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # only the main thread may take signals
        yield stop
        return

    def first(signum, frame) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)
        err.print(f"stopping {what} at its next step, with what it has so far (Ctrl-C again to abort)", highlight=False)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_forever() -> None:
    # The server dies with this process (a parent-death signal), so --keep must stay alive.
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _sources(logs: list[str] | None, stat_statements: str | Session | None, log_format: LogFormatChoice,
             prefix: str | None, jobs: int | None = None, engine: Engine = Engine.local,
             dask_scheduler: str | None = None) -> list[Source]:
    """The logs, then pg_stat_statements when a DSN or the command's session is given."""
    given: list[Source] = [LogFiles(tuple(logs), log_format.value, prefix, jobs, engine=_engine(engine, dask_scheduler),
                                    scheduler=dask_scheduler)] if logs else []
    if not stat_statements:
        return given
    from advisor.workload.sources.stat_statements import StatStatements

    return [*given, StatStatements(stat_statements)]


def _engine(engine: Engine, dask_scheduler: str | None) -> str:
    return Engine.dask.value if dask_scheduler else engine.value


def _load(sources: list[Source], reading: Reading | None = None, progress: bool | None = None) -> Workload:
    with _steps("reading the workload", progress) as activity:
        return load_workload(sources, replace(reading or Reading(), progress=activity.progress), step=activity)


class FailOn(str, Enum):
    never = "never"
    info = "info"
    low = "low"
    medium = "medium"
    high = "high"


class ScanFormat(str, Enum):
    text = "text"
    json = "json"
    markdown = "markdown"


class ExplainChoice(str, Enum):
    missing = "missing"
    always = "always"
    never = "never"


@app.command()
def scan(
    dsn: Annotated[str | None, typer.Option("--dsn", envvar="ADVISOR_DSN", help="The database to examine (read-only: see README, Safety). Without it only the log-based checks run, and the plan checks on the plans auto_explain logged.")] = None,
    log: Annotated[list[str] | None, typer.Option("--log", help="A slow query log (file, glob or '-'); repeat for several.")] = None,
    pg_stat_statements: Annotated[bool, typer.Option("--pg-stat-statements", help="Take the workload from pg_stat_statements too (the default when no --log is given).")] = False,
    log_format: LogFormatOption = LogFormatChoice.auto,
    log_line_prefix: LogLinePrefixOption = None,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1)] = None,
    time_budget: Annotated[float, typer.Option("--time-budget", min=1.0, help="Seconds for explaining queries, in all.")] = 60.0,
    max_queries: Annotated[int, typer.Option("--max-queries", min=1, help="Explain at most this many queries (top by total time and p95).")] = 20,
    explain: Annotated[ExplainChoice, typer.Option("--explain", help="Which queries to EXPLAIN against --dsn. The plans auto_explain wrote to the log (JSON or text) are checked in any case, also without --dsn. missing: only the queries the log has no EXPLAIN ANALYZE plan for, so a logged query is not run again; always: every chosen query, as if the log had no plans; never: logged plans only, no EXPLAIN at all.")] = ExplainChoice.missing,
    n1_min_repeats: Annotated[int, typer.Option("--n1-min-repeats", min=2, help="Executions of one query in a unit of work that make an N+1.")] = DEFAULT.n1_min_repeats,
    round_trip_ms: Annotated[float | None, typer.Option("--round-trip-ms", help="Client round trip per statement for N+1 impact (measured against --dsn when omitted).")] = None,
    output_format: Annotated[ScanFormat, typer.Option("--format")] = ScanFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Findings shown in text and markdown.")] = 20,
    fail_on: Annotated[FailOn, typer.Option("--fail-on", help="Exit 1 when a finding at or above this severity exists.")] = FailOn.never,
    show_values: Annotated[bool, typer.Option("--show-values", help="Show literal values (masked by default).")] = False,
    progress: ProgressOption = None,
    engine: EngineOption = Engine.local,
    dask_scheduler: DaskSchedulerOption = None,
) -> None:
    """Examine a database and its workload: plan problems, N+1 patterns, index hygiene, ranked by impact."""
    from advisor.commands.scan import scan as run_scan
    from advisor.db.session import Session

    if not log and not dsn:
        raise AdvisorError("nothing to scan", "give --dsn (the database) and/or --log (its slow query log)")
    config = replace(DEFAULT, n1_min_repeats=n1_min_repeats, round_trip_ms=round_trip_ms or DEFAULT.round_trip_ms)
    with Session(dsn) if dsn else nullcontext() as session:  # the command's one connection, opened on first use
        sources = _sources(log, session if (pg_stat_statements or not log) else None, log_format, log_line_prefix, jobs,
                           engine, dask_scheduler)
        workload = _load(sources, Reading(config), progress)
        with _steps("scanning", progress) as step:
            result = run_scan(workload, session, config=config, time_budget_s=time_budget,
                              max_queries=max_queries, step=step,
                              measure_round_trip=round_trip_ms is None, explain=explain.value)  # fmt: skip
    write(render(result, output_format.value, View(top, show_values)), output)
    if fail_on is not FailOn.never and any(f.severity >= Severity[fail_on.value] for f in result.findings):
        raise typer.Exit(1)


class AdviceFormat(str, Enum):
    text = "text"
    json = "json"
    sql = "sql"


class Weight(str, Enum):
    calls = "calls"
    time = "time"


@app.command("suggest-indexes")
def suggest_indexes(
    dsn: Annotated[str, typer.Option("--dsn", envvar="ADVISOR_DSN", help="The database the indexes are for: queries are costed by EXPLAIN with hypothetical indexes; reads with $n and no values are first explained with representative values (EXPLAIN ANALYZE, read-only, rolled back).")],
    log: Annotated[list[str] | None, typer.Option("--log", help="Take the workload from this slow query log; repeat for several.")] = None,
    pg_stat_statements: Annotated[bool, typer.Option("--pg-stat-statements", help="Take the workload from pg_stat_statements.")] = False,
    sql_file: Annotated[Path | None, typer.Option("--sql", help="Take the workload from a file of statements, each ending with ';' at the end of a line.")] = None,
    log_format: LogFormatOption = LogFormatChoice.auto,
    log_line_prefix: LogLinePrefixOption = None,
    max_indexes: Annotated[int | None, typer.Option("--max-indexes", min=1, help="At most this many new indexes.")] = None,
    budget_mb: Annotated[float | None, typer.Option("--budget-mb", min=0.0, help="At most this much new index, in MB as PostgreSQL prints sizes (1 MB = 1024² bytes), by the size each index would build to, modelled from the table's statistics (B-tree deduplication included).")] = None,
    min_improvement: Annotated[float, typer.Option("--min-improvement", min=0.0, help="A pick must lower the workload's cost by at least this % of what it is before that pick.")] = MIN_IMPROVEMENT,
    max_width: Annotated[int, typer.Option("--max-width", min=1, max=8, help="Columns per index at most.")] = 3,
    weight: Annotated[Weight, typer.Option("--weight", help="Weigh each query by its calls or its total time.")] = Weight.calls,
    max_queries: Annotated[int, typer.Option("--max-queries", min=1, help="The top queries by total time that are costed.")] = 200,
    scratch: Annotated[bool, typer.Option("--scratch", help="This database is a scratch copy: without HypoPG, real indexes are built in a transaction that is rolled back.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="With --scratch: build the picks for real (rolled back) and measure the queries before and after.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=16, help="Sessions that cost index configurations in parallel (HypoPG); the advice is the same for any number.")] = 2,
    search_seconds: Annotated[float | None, typer.Option("--search-seconds", min=0.0, help="Stop the search after this long and keep its best picks so far, with a note (a workload of a hundred analytical queries can take many minutes; the default is no limit). A first Ctrl-C does the same at any time; a second one aborts.")] = None,
    output_format: Annotated[AdviceFormat, typer.Option("--format")] = AdviceFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """Propose the indexes that lower the whole workload's cost most, proven with the planner's own costs."""
    from advisor.commands.suggest import suggest
    from advisor.db.session import Session

    if verify and not scratch:
        raise AdvisorError("--verify builds real indexes", "mark the database as a scratch copy with --scratch")
    with Session(dsn) as session:  # the command's one connection (beside the --jobs sessions), opened on first use
        if sql_file is not None:
            sources: list[Source] = [SqlFile(sql_file)]
        else:
            sources = _sources(log, session if (pg_stat_statements or not log) else None, log_format, log_line_prefix)
        workload = _load(sources)
        with _steps("advising") as step, _first_ctrl_c_stops("the search") as interrupted:
            advice = suggest(
                session, workload, by_time=weight is Weight.time and sql_file is None, max_queries=max_queries,
                max_indexes=max_indexes, budget_bytes=None if budget_mb is None else int(budget_mb * 1024 * 1024),
                min_improvement=min_improvement, max_width=max_width, scratch=scratch, verify=verify, sessions=jobs,
                search_seconds=search_seconds, interrupted=interrupted, step=step,
            )  # fmt: skip
    write(render(advice, output_format.value), output)


@app.command()
def report(
    dsn: Annotated[str, typer.Option("--dsn", envvar="ADVISOR_DSN", help="The database to report on (read-only, as scan).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for report.html, report.json and summary.md.")],
    log: Annotated[list[str] | None, typer.Option("--log", help="A slow query log; only what was appended since the last run is read. Repeat for several.")] = None,
    pg_stat_statements: Annotated[bool, typer.Option("--pg-stat-statements", help="Take the workload from pg_stat_statements too (the default when no --log is given).")] = False,
    bench: Annotated[bool, typer.Option("--bench", help="Also run a short connection pool benchmark (2 s per arm, 1 and 4 clients).")] = False,
    history: Annotated[str | None, typer.Option("--history", help="Run history: a SQLite path or a postgresql:// DSN (default OUT/history.sqlite).")] = None,
    state: Annotated[Path | None, typer.Option("--state", help="Where the log offsets are kept (default OUT/.log-state.json).")] = None,
    fail_on: Annotated[FailOn, typer.Option("--fail-on", help="Exit 1 when a finding at or above this severity exists.")] = FailOn.never,
    fail_on_regression: Annotated[float | None, typer.Option("--fail-on-regression", min=0.0, help="Exit 1 when a query regressed: its p95 or total time rose by more than this % since the last run, with enough calls on both sides, above an absolute floor and beyond its usual run-to-run spread (README, advisor report; also the regression threshold; default 20).")] = None,
    keep_runs: Annotated[int, typer.Option("--keep-runs", min=1, help="Runs kept in the history per database.")] = 30,
    log_format: LogFormatOption = LogFormatChoice.auto,
    log_line_prefix: LogLinePrefixOption = None,
    time_budget: Annotated[float, typer.Option("--time-budget", min=1.0, help="Seconds for explaining queries, in all.")] = 60.0,
    progress: ProgressOption = None,
    engine: EngineOption = Engine.local,
    dask_scheduler: DaskSchedulerOption = None,
) -> None:
    """The nightly job: ingest, scan, suggest indexes, compare with history; writes report.html, report.json, summary.md."""
    from advisor.commands.report import ReportOptions, run_report
    from advisor.report.nightly import report_line

    options = ReportOptions(
        dsn=dsn, out=out, logs=tuple(log or ()), pg_stat_statements=pg_stat_statements, bench=bench, history=history,
        state=str(state) if state else None, fail_on=None if fail_on is FailOn.never else Severity[fail_on.value],
        fail_on_regression=fail_on_regression, keep_runs=keep_runs, log_format=log_format.value,
        log_line_prefix=log_line_prefix, time_budget_s=time_budget, engine=_engine(engine, dask_scheduler),
        dask_scheduler=dask_scheduler,
    )  # fmt: skip
    with _steps("reporting", progress) as activity:
        doc, code = run_report(options, step=activity, progress=activity.progress)
    print(report_line(doc, out / "report.html"))
    for note in doc["summary"]["warnings"]:
        err.print(f"[yellow]warning:[/yellow] {note}", highlight=False, soft_wrap=True)
    for reason in doc["exit"]["reasons"]:
        err.print(f"[red]{reason}[/red]" if code == 2 else reason, highlight=False, soft_wrap=True)
    if code:
        raise typer.Exit(code)


bench_app = typer.Typer(help="Measure the server: connection pooling (pool), read-replica routing (replicas).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values:
        raise AdvisorError(f"{option} takes a comma-separated list of numbers, not {text!r}", f"for example {option} 1,4,16")
    return values


@bench_app.command("pool")
def bench_pool(
    dsn: Annotated[str, typer.Option("--dsn", envvar="ADVISOR_DSN", help="The server to measure; loopback or a Unix socket gives the cleanest figures.")],
    query: Annotated[str | None, typer.Option("--query", help="One read-only SELECT to run (default: a point lookup on a 10,000-row table in a temporary schema).")] = None,
    concurrency: Annotated[str, typer.Option("--concurrency", help="Client threads (and pool sizes), comma-separated.")] = "1,4,16",
    duration: Annotated[float | None, typer.Option("--duration", help="Seconds measured per arm (default 5; with --requests only a cap).")] = None,
    requests: Annotated[int | None, typer.Option("--requests", help="Requests per arm in total instead of a duration.")] = None,
    warmup: Annotated[float, typer.Option("--warmup", help="Seconds of warm-up per arm, not measured.")] = 1.0,
    pgbouncer_dsn: Annotated[str | None, typer.Option("--pgbouncer-dsn", help="Also measure your PgBouncer: a new connection per request and a client pool through it.")] = None,
    local_pgbouncer: Annotated[bool, typer.Option("--local-pgbouncer", help="Also measure a throwaway PgBouncer started in front of the DSN (loopback, stopped after), in transaction and session modes.")] = False,
    pgbouncer_pool_size: Annotated[int | None, typer.Option("--pgbouncer-pool-size", help="Server connections of the local PgBouncer (default: 2 per core when the server is local, else 20).")] = None,
    pgbouncer_modes: Annotated[str, typer.Option("--pgbouncer-modes", help="Pooling modes of the local PgBouncer, comma-separated.")] = "transaction,session",
    modes: Annotated[str | None, typer.Option("--modes", help="Only these modes, comma-separated (default all).")] = None,
    transports: Annotated[str, typer.Option("--transports", help="tcp (the DSN as given) and/or unix (the server's socket, when local).")] = "tcp,unix",
    output_format: Annotated[OutputFormat, typer.Option("--format", help="text (a table and a verdict) or json (versioned, see advisor/bench/pool.py).")] = OutputFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Measure what connection pooling buys: new connection per request vs psycopg_pool, SQLAlchemy pools, PgBouncer."""
    from advisor.bench.pool import MODES, PoolBenchConfig, run_pool_bench

    config = PoolBenchConfig(
        dsn=dsn, query=query, concurrency=_int_list(concurrency, "--concurrency"), duration_s=duration,
        requests=requests, warmup_s=warmup, pgbouncer_dsn=pgbouncer_dsn, local_pgbouncer=local_pgbouncer,
        pgbouncer_pool_size=pgbouncer_pool_size,
        pgbouncer_pool_modes=tuple(m.strip() for m in pgbouncer_modes.split(",") if m.strip()),
        modes=tuple(m.strip() for m in modes.split(",") if m.strip()) if modes else MODES,
        transports=tuple(t.strip() for t in transports.split(",") if t.strip()),
    )  # fmt: skip
    with _steps("benchmarking") as step:  # a warning is printed even where steps are not (a pipe)
        result = run_pool_bench(config, step=step, warn=lambda text: err.print(
            f"[yellow]warning:[/yellow] {text}", highlight=False, soft_wrap=True))
    write(render(result, output_format.value), output)


@bench_app.command("replicas")
def bench_replicas(
    primary: Annotated[str | None, typer.Option("--primary", help="The primary's DSN (writes, and reads in primary_only).")] = None,
    replica: Annotated[list[str] | None, typer.Option("--replica", help="A streaming replica's DSN; repeat for several.")] = None,
    local_replicas: Annotated[int, typer.Option("--local-replicas", min=0, max=8, help="Start a throwaway primary with N streaming replicas (stopped after), and run the failure drill.")] = 0,
    read_ratio: Annotated[float, typer.Option("--read-ratio", min=0.0, max=1.0, help="Share of requests that are reads; the rest are writes with a read-back.")] = 0.9,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=256, help="Client threads.")] = 4,
    duration: Annotated[float, typer.Option("--duration", help="Seconds measured per arm.")] = 5.0,
    max_lag_ms: Annotated[float, typer.Option("--max-lag-ms", min=0.0, help="The lag-aware arms eject a replica further behind than this.")] = 1000.0,
    max_lag_bytes: Annotated[int, typer.Option("--max-lag-bytes", min=0, help="... or further behind than this many bytes of WAL.")] = 16 << 20,
    drill: Annotated[bool, typer.Option("--drill", help="Stop a replica mid-run and start it again (only servers started by --local-replicas).")] = False,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="text or json (versioned, see advisor/bench/replicas.py).")] = OutputFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Measure read-replica routing: primary only, round robin, least busy, lag-aware, read-your-writes; stale reads, lag, a failure drill."""
    from advisor.bench.replicas import ReplicaBenchConfig, run_replica_bench

    config = ReplicaBenchConfig(
        primary_dsn=primary, replica_dsns=tuple(replica or ()), local_replicas=local_replicas, read_ratio=read_ratio,
        concurrency=concurrency, duration_s=duration, max_lag_ms=max_lag_ms, max_lag_bytes=max_lag_bytes, drill=drill,
    )  # fmt: skip
    with _steps("benchmarking") as step:  # a warning is printed even where steps are not (a pipe)
        result = run_replica_bench(config, step=step, warn=lambda text: err.print(
            f"[yellow]warning:[/yellow] {text}", highlight=False, soft_wrap=True))
    write(render(result, output_format.value), output)






def _sorted(workload, sort: SortKey):
    keys = {
        SortKey.total: lambda q: q.total_ms,
        SortKey.mean: lambda q: q.mean_ms or 0.0,
        SortKey.calls: lambda q: q.calls,
        SortKey.p95: lambda q: q.p95_ms or 0.0,
    }
    return replace(workload, queries=tuple(sorted(workload.queries, key=keys[sort], reverse=True)))




def main() -> None:
    # sqlglot warns on stderr about syntax it hands to its fallback; we have our own.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    debug = "--debug" in sys.argv or os.environ.get("ADVISOR_DEBUG")
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        app()
    except AdvisorError as e:
        if debug:
            raise
        # escaped: a cause or fix may hold brackets that are not markup (pip install 'advisor[dask]')
        err.print(f"[red]error:[/red] {escape(e.cause)}", highlight=False, soft_wrap=True)
        if e.fix:
            err.print(f"[bold]fix:[/bold] {escape(e.fix)}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
