"""Rich renderings for the terminal."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from advisor.workload.model import Workload


def workload_summary(workload: Workload, *, top: int = 20) -> Group:
    head = Text.assemble(
        ("Workload: ", "bold"),
        f"{workload.statements:,} statements in {len(workload.queries):,} distinct queries, "
        f"{workload.lines:,} log lines, {workload.plans:,} auto_explain plans, "
        f"{workload.other_events:,} other events, ",
        (f"{workload.skipped_count:,} lines skipped", "yellow" if workload.skipped_count else ""),
    )
    return Group(head, queries_table(workload, top=top), *_skipped(workload), *(Text(n, "yellow") for n in workload.notes))


def queries_table(workload: Workload, *, top: int) -> Table:
    table = Table(title=f"Top {min(top, len(workload.queries))} queries", title_justify="left", expand=True)
    for name, justify in (("#", "right"), ("calls", "right"), ("total ms", "right"), ("mean", "right"),
                          ("p50", "right"), ("p95", "right"), ("p99", "right"), ("query", "left")):  # fmt: skip
        if name == "query":  # one line per query, taking the room left; the full text is in the JSON
            table.add_column(name, overflow="ellipsis", no_wrap=True, ratio=1, min_width=20)
        else:
            table.add_column(name, justify=justify, no_wrap=True)
    for rank, q in enumerate(workload.queries[:top], 1):
        table.add_row(
            str(rank), f"{q.calls:,}", f"{q.total_ms:,.1f}", _ms(q.mean_ms),
            _ms(q.p50_ms), _ms(q.p95_ms), _ms(q.p99_ms),
            Text(_shorten(q.normalized), style="" if q.parsed else "dim"),
        )  # fmt: skip
    return table


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


def scan_summary(result, *, top: int = 20) -> Group:
    w = result.workload
    head = Text.assemble(
        ("Scan: ", "bold"),
        f"{len(w.queries):,} queries, {w.statements:,} logged statements; ",
        f"{result.explained} explained, {len(result.not_explained)} not; " if result.server_version_num else "no database: ",
        f"{len(result.findings)} findings",
    )
    parts: list = [head]
    if result.superuser:
        parts.append(Text("warning: connected as a superuser; pg_monitor plus SELECT on the tables is enough (see README)", "yellow"))
    parts.append(findings_table(result.findings[:top]))
    for rank, f in enumerate(result.findings[:top], 1):
        parts.append(_finding_detail(rank, f))
    if result.not_explained:
        parts.append(Text("Not explained:", "bold"))
        parts += [Text(f"  {n.fingerprint}  {_shorten(n.normalized, 70)}: {n.reason}") for n in result.not_explained]
    if result.skipped_checks:
        parts.append(Text("Checks skipped:", "bold"))
        parts += [Text(f"  {check}: {why}", "dim") for check, why in result.skipped_checks]
    return Group(*parts)


def findings_table(findings) -> Table:
    table = Table(title="Findings, by estimated impact", title_justify="left", expand=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("code", no_wrap=True)
    table.add_column("impact ms", justify="right", no_wrap=True)
    table.add_column("finding", ratio=1, overflow="ellipsis", no_wrap=True, min_width=20)
    for rank, f in enumerate(findings, 1):
        table.add_row(
            str(rank), Text(str(f.severity), SEVERITY_STYLE[str(f.severity)]), f.code,
            "-" if f.impact_ms is None else f"{f.impact_ms:,.1f}", f.title,
        )  # fmt: skip
    return table


def _finding_detail(rank: int, f) -> Text:
    text = Text()
    text.append(f"\n{rank}. {f.code} {f.title}\n", style="bold")
    if f.normalized:
        text.append(f"   query: {_shorten(f.normalized, 300)}\n")
    if f.application:
        text.append(f"   from: {f.application}\n")
    numbers = {k: v for k, v in f.evidence.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if numbers:
        text.append("   evidence: " + ", ".join(f"{k} {v:,}" for k, v in numbers.items()) + "\n", style="dim")
    text.append("   fix: " + f.suggestion.replace("\n", "\n        ") + "\n", style="green")
    return text


def advice_summary(advice) -> Group:
    before, after = advice.workload_cost_before, advice.workload_cost_after
    share = (1 - after / before) if before else 0.0
    head = Text.assemble(
        ("Index advice: ", "bold"),
        f"{len(advice.recommendations)} indexes lower the workload's planner cost from {before:,.0f} to {after:,.0f} "
        f"({share:.0%} less); {advice.whatif_calls:,} what-if calls in {advice.seconds:.1f} s; validation: {advice.validation}",
    )
    table = Table(expand=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("index", ratio=1, overflow="fold")
    table.add_column("est. size", justify="right", no_wrap=True)
    table.add_column("queries", justify="right", no_wrap=True)
    table.add_column("their cost before → after", justify="right", no_wrap=True)
    for rank, r in enumerate(advice.recommendations, 1):
        b = sum(q.weight * q.cost_before for q in r.queries)
        a = sum(q.weight * q.cost_after for q in r.queries)
        c = r.candidate
        index = f"{c.table} ({', '.join(c.columns)})" + (f" INCLUDE ({', '.join(c.include)})" if c.include else "") + (f" WHERE {c.where}" if c.where else "")
        writes = f" (+{r.write_cost:,.0f} writes)" if r.write_cost else ""
        table.add_row(str(rank), index, _bytes(r.estimated_size_bytes), str(len(r.queries)), f"{b:,.0f} → {a:,.0f}{writes}")
    parts: list = [head, table]
    parts += [Text(r.candidate.ddl(), "green") for r in advice.recommendations]
    parts += [Text(f"note: {n}", "yellow") for n in advice.notes]
    if advice.moot:
        parts.append(Text(f"{len(advice.moot)} candidates already served by existing indexes, e.g. {advice.moot[0][0].definition()} by {advice.moot[0][1]}", "dim"))
    if advice.existing_index_findings:
        parts.append(Text("Existing indexes:", "bold"))
        parts += [Text(f"  {i.kind}: {i.reason}\n    {i.suggestion}") for i in advice.existing_index_findings]
    return Group(*parts)


def _bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)
