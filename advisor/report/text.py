"""Rich renderings for the terminal."""

from __future__ import annotations

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text

from advisor.findings import ScanResult
from advisor.report.jsondoc import scan_notes
from advisor.report.words import round_floats, workload_notes
from advisor.words import plural
from advisor.workload.events import LogEvents
from advisor.workload.fingerprint import mask_conditions
from advisor.workload.model import Workload

# Below this many columns a table leaves the query too little room (80-column terminals, pipes):
# the rows are stacked instead, the query on a line of its own, wrapped, never cut to `SELEC…`.
WIDE_TABLE_MIN_COLUMNS = 120


class ByWidth:
    """A wide rendering where the console has room for it, else a narrow one (decided at print time)."""

    def __init__(self, wide, narrow, min_width: int = WIDE_TABLE_MIN_COLUMNS) -> None:
        self.wide, self.narrow, self.min_width = wide, narrow, min_width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.wide if options.max_width >= self.min_width else self.narrow


def workload_summary(workload: Workload, *, top: int = 20) -> Group:
    head = Text.assemble(
        ("Workload: ", "bold"),
        f"{plural(workload.statements, 'statement')} in {plural(len(workload.queries), 'distinct query', 'distinct queries')}, "
        f"{plural(workload.lines, 'log line')}, {plural(workload.plans, 'auto_explain plan')}, "
        f"{plural(workload.other_events, 'other event')}, ",
        (f"{plural(workload.skipped_count, 'line')} skipped", "yellow" if workload.skipped_count else ""),
    )
    notes = [Text(f"note: {n}", "yellow") for n in workload_notes(workload)]
    events = events_summary(workload.events) if workload.events else []
    if not workload.queries:
        return Group(head, *notes, *events, *_skipped(workload))
    return Group(head, *notes, queries_table(workload, top=top), *events, *_skipped(workload))


def events_summary(e: LogEvents) -> list[Text]:
    """The logs' server events in a few lines, each kind with the query that had the most (details: the JSON)."""
    lines = [Text("Server events:", "bold")]

    def line(kind: str, numbers: str, top: dict | None = None, rank=None) -> None:
        text = Text.assemble(f"  {kind}: ", numbers)
        if top:
            q = min(top, key=lambda k: (rank(top[k]), k.fingerprint) if rank else k.fingerprint)
            text.append(f"; most: {_shorten(q.normalized, 70)}", "dim")
        lines.append(text)

    if e.temp_files.count:
        line("temp files", f"{e.temp_files.count:,} ({_bytes(e.temp_files.bytes)})", e.temp_by_query, lambda t: -t.bytes)
    if e.lock_waits:
        longest = max((w.max_wait_ms for w in e.waits_by_query.values()), default=0.0)
        line("lock waits", f"{e.lock_waits:,} (longest {longest:,.1f} ms)", e.waits_by_query, lambda w: -w.count)
    if e.deadlocks:
        line("deadlocks", f"{e.deadlocks:,}", e.deadlocks_by_query, lambda d: -d.count)
    if e.errors:
        states = sorted(e.errors_by_sqlstate.items(), key=lambda kv: (-kv[1], kv[0]))
        line("errors", f"{e.errors:,} (" + ", ".join(f"{state} × {n:,}" for state, n in states[:5]) + ")")
    if applications := e.applications():
        span = e.span_seconds()
        apps = sorted(applications.items(), key=lambda kv: (-kv[1].count, kv[0]))
        line("sessions", f"{sum(s.count for s in applications.values()):,} (" + "; ".join(
            f"{app} {s.count:,}" + (f" at {s.count / span:,.2f}/s" if span else "")
            + f", median {_ms(s.times.quantile(0.5))} ms" for app, s in apps[:3]) + ")")
    c = e.checkpoints
    if c.count or c.write_ms:
        line("checkpoints", f"{c.count:,} ({c.timed:,} timed, {c.requested:,} requested; "
                            f"write {c.write_ms / 1000:,.1f} s, sync {c.sync_ms / 1000:,.1f} s)")
    if e.autovacuum:
        v = e.autovacuum.values()
        line("autovacuum", f"{sum(t.vacuums for t in v):,} vacuums, {sum(t.analyzes for t in v):,} analyzes "
                           f"on {plural(len(e.autovacuum), 'table')}, {sum(t.removed_tuples for t in v):,} tuples removed")
    return lines


def queries_table(workload: Workload, *, top: int) -> ByWidth:
    title = f"Top {min(top, len(workload.queries))} queries"
    queries = workload.queries[:top]
    table = Table(title=title, title_justify="left", expand=True)
    for name in ("#", "calls", "total ms", "mean", "p50", "p95", "p99"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("query", overflow="fold", ratio=1, min_width=30)  # wrapped; the full text is in the JSON
    for rank, q in enumerate(queries, 1):
        table.add_row(
            str(rank), f"{q.calls:,}", f"{q.total_ms:,.1f}", _ms(q.mean_ms),
            _ms(q.p50_ms), _ms(q.p95_ms), _ms(q.p99_ms), _query_text(q),
        )  # fmt: skip
    stacked = Table.grid(padding=(0, 1))
    stacked.title, stacked.title_justify, stacked.title_style = title, "left", "italic"
    stacked.add_column(justify="right", no_wrap=True)
    stacked.add_column(ratio=1)
    for rank, q in enumerate(queries, 1):
        numbers = (f"{plural(q.calls, 'call')} · total {q.total_ms:,.1f} · mean {_ms(q.mean_ms)} · "
                   f"p50 {_ms(q.p50_ms)} · p95 {_ms(q.p95_ms)} · p99 {_ms(q.p99_ms)} ms")
        stacked.add_row(Text(f"{rank}.", "bold"), Group(Text(numbers, "dim"), _query_text(q)))
    return ByWidth(table, stacked)


def _query_text(q) -> Text:
    return Text(_shorten(q.normalized), style="" if q.parsed else "dim", overflow="fold")


def _skipped(workload: Workload) -> list[Text]:
    if not workload.skipped:
        return []
    lines = [Text(f"Skipped lines (first {min(5, len(workload.skipped))} of {workload.skipped_count:,}):", "yellow")]
    lines += [Text(f"  {s.file}:{s.line}: {s.reason}") for s in workload.skipped[:5]]
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _shorten(sql: str, limit: int = 160) -> str:
    sql = " ".join(sql.split())
    return sql if len(sql) <= limit else sql[: limit - 1] + "…"


SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "info": "dim"}


def scan_summary(result: ScanResult, *, top: int = 20, show_values: bool = False) -> Group:
    w = result.workload
    head = Text.assemble(
        ("Scan: ", "bold"),
        f"{plural(len(w.queries), 'query', 'queries')}, {plural(w.statements, 'logged statement')}; ",
        f"{result.explained} explained, {len(result.not_explained)} not; " if result.server_version_num else "no database: ",
        plural(len(result.findings), "finding"),
    )
    parts: list = [head]
    # What hides part of the workload (rows the role may not read, an empty log) comes first, not last.
    parts += [Text(f"note: {n}", "yellow") for n in scan_notes(result)]
    if result.superuser:
        parts.append(Text("warning: connected as a superuser; pg_monitor plus SELECT on the tables is enough (see README)", "yellow"))
    if result.findings:
        parts.append(findings_table(result.findings[:top]))
    for rank, f in enumerate(result.findings[:top], 1):
        parts.append(_finding_detail(rank, f, show_values))
    if result.not_explained:
        parts.append(Text("Not explained:", "bold"))
        parts += [Text(f"  {n.fingerprint}  {_shorten(n.normalized, 70)}: {n.reason}") for n in result.not_explained]
    if result.skipped_checks:
        parts.append(Text("Checks skipped:", "bold"))
        parts += [Text(f"  {check}: {why}", "dim") for check, why in result.skipped_checks]
    return Group(*parts)


def findings_table(findings) -> ByWidth:
    title = "Findings, by estimated impact"
    table = Table(title=title, title_justify="left", expand=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("code", no_wrap=True)
    table.add_column("impact ms", justify="right", no_wrap=True)
    table.add_column("finding", ratio=1, overflow="fold", min_width=30)
    stacked = Table.grid(padding=(0, 1))
    stacked.title, stacked.title_justify, stacked.title_style = title, "left", "italic"
    stacked.add_column(justify="right", no_wrap=True)
    stacked.add_column(ratio=1)
    for rank, f in enumerate(findings, 1):
        severity, impact = Text(str(f.severity), SEVERITY_STYLE[str(f.severity)]), _impact(f.impact_ms)
        table.add_row(str(rank), severity, f.code, impact, Text(f.title))
        stacked.add_row(Text(f"{rank}.", "bold"), Text.assemble(severity, f" {f.code}, {impact} ms: {f.title}"))
    return ByWidth(table, stacked, min_width=80)


def _impact(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:,.1f}"


_PLAN_KEYS = ("plan", "excerpt")


def _finding_detail(rank: int, f, show_values: bool = False) -> Group:
    """The finding's title, then its query, evidence, plan and fix, each labelled, wrapped under its label."""
    rows = Table.grid(padding=(0, 1))
    rows.add_column(justify="right", no_wrap=True, min_width=12)  # 3 of indent + the longest label, "evidence:"
    rows.add_column(ratio=1, overflow="fold")
    if f.normalized:
        rows.add_row("query:", Text(_shorten(f.normalized, 300)))
    if f.application:
        rows.add_row("from:", Text(f.application))  # Text: an application named [unknown] is not markup
    numbers = {k: round_floats(v) for k, v in f.evidence.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if numbers:
        rows.add_row("evidence:", Text(", ".join(f"{k} {v:,}" for k, v in numbers.items()), "dim"))
    for key, value in f.evidence.items():
        if key.endswith(_PLAN_KEYS) and value:
            for line in [value] if isinstance(value, str) else value:
                rows.add_row("plan:", Text(line if show_values else mask_conditions(line), "dim"))
    rows.add_row("fix:", Text(f.suggestion, "green"))
    return Group(Text(f"\n{rank}. {f.code} {f.title}", "bold"), rows)


def advice_summary(advice) -> Group:
    before, after = advice.workload_cost_before, advice.workload_cost_after
    share = (1 - after / before) if before else 0.0
    head = Text.assemble(
        ("Index advice: ", "bold"),
        f"{plural(len(advice.recommendations), 'index')} {'lowers' if len(advice.recommendations) == 1 else 'lower'} the workload's planner cost from {before:,.0f} to {after:,.0f} "
        f"({share:.0%} less); {plural(advice.whatif_calls, 'what-if call')} in {advice.seconds:.1f} s; validation: {advice.validation}",
    )
    if (effort := advice.search) is not None:
        head.append(f"\nsearch: {effort.cost_requests:,} cost requests, {effort.cache_hits:,} answered from the cache and "
                    f"{effort.derived:,} derived from other answers; {effort.whatif_seconds:.1f} s waiting on the server "
                    f"(all sessions), {effort.client_seconds:.1f} s of the advisor's own CPU; "
                    f"{effort.never_costed:,} of {plural(effort.candidates, 'candidate')} never costed "
                    "(the most they could save stayed under --min-improvement)"
                    + ("; stopped at --search-seconds" if effort.stopped_early else ""))
    table = Table(expand=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("index", ratio=1, overflow="fold")
    table.add_column("est. size", justify="right", no_wrap=True)
    table.add_column("queries", justify="right", no_wrap=True)
    table.add_column("their cost before → after", justify="right", no_wrap=True)
    for rank, r in enumerate(advice.recommendations, 1):
        b = sum(q.weight * q.cost_before for q in r.queries)
        a = sum(q.weight * q.cost_after for q in r.queries)
        writes = f" (+{r.write_cost:,.0f} writes)" if r.write_cost else ""
        table.add_row(str(rank), Text(r.candidate.label()), _bytes(r.estimated_size_bytes), str(len(r.queries)), f"{b:,.0f} → {a:,.0f}{writes}")
    parts: list = [head, table]
    parts += [Text(r.candidate.ddl(), "green") for r in advice.recommendations]
    parts += [Text(f"note: {n}", "yellow") for n in advice.notes]
    if advice.moot:
        parts.append(Text(f"{plural(len(advice.moot), 'candidate')} already served by existing indexes, e.g. {advice.moot[0][0].definition()} by {advice.moot[0][1]}", "dim"))
    if advice.existing_index_findings:
        parts.append(Text("Existing indexes:", "bold"))
        parts += [Text(f"  {i.kind}: {i.reason}\n    {i.suggestion}") for i in advice.existing_index_findings]
    return Group(*parts)


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)
