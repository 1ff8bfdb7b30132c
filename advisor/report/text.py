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
