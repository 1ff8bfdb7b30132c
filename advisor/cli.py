"""The `advisor` command: parses arguments, calls the pipeline, prints. Nothing else lives here."""

from __future__ import annotations

import json
import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from advisor import __version__
from advisor.errors import AdvisorError
from advisor.report.jsondoc import workload_document
from advisor.report.text import workload_summary
from advisor.workload.ingest import build_workload, scan_logs
from advisor.workload.logs.prefix import PrefixError
from advisor.workload.logs.reader import LogInputError

app = typer.Typer(
    name="advisor",
    help="PostgreSQL query optimization advisor: reads the workload, examines plans, proposes indexes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

PROGRESS_MIN_BYTES = 16 << 20  # smaller inputs finish before a bar is worth drawing


class LogFormatChoice(str, Enum):
    auto = "auto"
    stderr = "stderr"
    csvlog = "csvlog"
    jsonlog = "jsonlog"
    syslog = "syslog"
    logplex = "logplex"


class SortKey(str, Enum):
    total = "total"
    mean = "mean"
    calls = "calls"
    p95 = "p95"


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


def _version(value: bool) -> None:
    if value:
        print(f"advisor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = None,
) -> None:
    pass


@app.command()
def parse(
    logs: Annotated[Optional[list[str]], typer.Argument(help="Log files or globs; '-' reads stdin. .gz, .bz2, .xz are read transparently.")] = None,
    dsn: Annotated[Optional[str], typer.Option("--dsn", envvar="ADVISOR_DSN", help="Also read pg_stat_statements from this database; its counters give calls and totals.")] = None,
    log_format: Annotated[LogFormatChoice, typer.Option("--log-format", help="Log format; auto detects it per file.")] = LogFormatChoice.auto,
    log_line_prefix: Annotated[Optional[str], typer.Option("--log-line-prefix", help="The server's log_line_prefix for stderr logs, e.g. '%m [%p] %q%u@%d '. Detected among common ones when omitted.")] = None,
    top: Annotated[Optional[int], typer.Option("--top", min=1, help="Show this many queries (text default 20; JSON default all).")] = None,
    sort: Annotated[SortKey, typer.Option("--sort", help="Order queries by total time, mean time, calls or p95.")] = SortKey.total,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Parallel workers (default: the number of cores).")] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="text (a table) or json (versioned, see README).")] = OutputFormat.text,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    show_values: Annotated[bool, typer.Option("--show-values", help="Show literal values in samples (masked by default).")] = False,
) -> None:
    """Read slow query logs (and pg_stat_statements) and print the workload: queries by fingerprint with counts, time and percentiles."""
    if not logs and not dsn:
        raise AdvisorError("nothing to read", "give log files, or --dsn to read pg_stat_statements")
    try:
        with _progress() as progress:
            scan = scan_logs(logs or [], log_format.value, log_line_prefix, jobs, progress)
    except (LogInputError, PrefixError) as e:
        raise AdvisorError(str(e), "check the path and the options (advisor parse --help)") from e
    if dsn:
        scan.add_pg_stat_statements(dsn)
    workload = _sorted(build_workload(scan), sort)
    if output_format is OutputFormat.json:
        document = workload_document(workload, top=top, show_values=show_values)
        _emit(json.dumps(document, indent=2, ensure_ascii=False) + "\n", output)
    else:
        console = Console(file=open(output, "w") if output else None, width=200 if output else None)
        console.print(workload_summary(workload, top=top or 20))


@app.command()
def demo(
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for the results (default: a new advisor-demo-<time> folder here).")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the demo database running and print its DSN.")] = False,
    scale: Annotated[float, typer.Option("--scale", min=0.01, max=20.0, help="Size of the fixture data: 1.0 is 1M test results.")] = 1.0,
) -> None:
    """Run the advisor end to end on a throwaway PostgreSQL with a bundled fixture and workload."""
    from advisor import demo as demo_run

    size = demo_run.Scale(lots=max(10, round(400 * scale)))
    folder = out or Path(f"advisor-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    folder.mkdir(parents=True, exist_ok=True)
    with err.status("starting") as status:
        result = demo_run.run(size, step=lambda text: (status.update(text), err.log(text)))
    try:
        workload = build_workload(result.scan)
        document = workload_document(workload)
        (folder / "workload.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        Console().print(workload_summary(workload, top=10))
        print(f"\nreplayed {result.statements_sent} statements; the server log is {result.cluster.stderr_log}")
        print(f"workload (JSON): {folder / 'workload.json'}")
        if keep:
            print(f"the demo database keeps running: {result.dsn}  (stop it with Ctrl-C)")
            _wait_forever()
    finally:
        result.cluster.stop()


def _wait_forever() -> None:
    # The server dies with this process (a parent-death signal), so --keep must stay alive.
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _sorted(workload, sort: SortKey):
    from dataclasses import replace

    keys = {
        SortKey.total: lambda q: q.total_ms,
        SortKey.mean: lambda q: q.mean_ms or 0.0,
        SortKey.calls: lambda q: q.calls,
        SortKey.p95: lambda q: q.p95_ms or 0.0,
    }
    return replace(workload, queries=tuple(sorted(workload.queries, key=keys[sort], reverse=True)))


class _progress:
    """A progress bar on stderr for large inputs; a no-op callback otherwise."""

    def __enter__(self):
        self.bar: Progress | None = None
        self.task = None
        return self.update

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            if total < PROGRESS_MIN_BYTES:
                return
            self.bar = Progress(
                "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=True,
            )  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task("parsing logs", total=total)
        self.bar.update(self.task, completed=done)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


def main() -> None:
    debug = "--debug" in sys.argv or os.environ.get("ADVISOR_DEBUG")
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        app()
    except AdvisorError as e:
        if debug:
            raise
        err.print(f"[red]error:[/red] {e.cause}", highlight=False, soft_wrap=True)
        if e.fix:
            err.print(f"[bold]fix:[/bold] {e.fix}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
