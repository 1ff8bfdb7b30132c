"""Words and numbers as a person reads them, the same in text, markdown, JSON and HTML."""

from __future__ import annotations

from advisor.words import plural
from advisor.workload.model import Workload


def round_floats(value):
    """Numbers of evidence as people read them: 96.953, not 96.95300000000002; three decimals,
    or three significant digits below 1 (a share of 0.000412 stays visible); a whole number of rows
    (plans give rows as floats, averaged over loops) reads 190,050, not 190,050.0. Nested lists and dicts too."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1:
            return int(value)
        return round(value, 3) if abs(value) >= 1 or value == 0 else float(f"{value:.3g}")
    if isinstance(value, dict):
        return {k: round_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [round_floats(v) for v in value]
    return value


def empty_log_note(workload: Workload) -> str | None:
    """Why logs gave no statement, with what they did hold; None when they gave some (or none were read)."""
    if workload.statements or not any(not s.startswith("pg_stat_statements") for s in workload.sources):
        return None
    errors = workload.events.errors if workload.events is not None else 0
    found = (f"{plural(workload.lines, 'log line')}, {plural(workload.other_events, 'other event')}"
             + (f" ({plural(errors, 'error')})" if errors else "") + f", {plural(workload.skipped_count, 'line')} skipped")
    if workload.lines == 0:
        cause = "the log is empty: is this the file the server writes to (SHOW log_directory; SHOW log_filename)?"
    elif workload.advisor_statements:
        cause = (f"every statement it held was the advisor's own ({workload.advisor_statements:,}, left out): "
                 "the application ran nothing the server logged in this window"
                 + (" that did not fail (failed statements are errors, not executions)" if errors else ""))
    elif workload.skipped_count >= workload.lines:
        cause = "no line was understood: pass --log-format, or --log-line-prefix with the server's log_line_prefix"
    else:
        cause = ("the server logged no statement: set log_min_duration_statement = 0 (it is -1, off, by default; "
                 "a high value logs only slower statements) or log_statement = 'all' with log_duration = on")
    return f"no statements found ({found}); likely cause: {cause}"


def workload_notes(workload: Workload) -> list[str]:
    """The workload's own notes, and why it is empty when it is."""
    empty = empty_log_note(workload)
    return list(workload.notes) + ([empty] if empty else [])


# Notes that say part of the workload is missing from the numbers: what the role may not read
# (pg_stat_statements rows, tables; each such note gives its GRANT) and an empty log. Every report
# shows them first and loud, not in a list at the end.
_MISSING_MARKERS = ("GRANT ", "no statements found")


def warnings(notes: list[str]) -> list[str]:
    """The notes a reader must see before trusting any number, each once."""
    return list(dict.fromkeys(n for n in notes if any(marker in n for marker in _MISSING_MARKERS)))


METRIC_NAMES = {"p95_ms": "p95", "total_ms": "total time"}


def regression_text(g: dict) -> str:
    """'p95 +77 % (10.0 → 17.7 ms)': each metric that regressed, with its own change and values (report.json form)."""
    return "; ".join(f"{METRIC_NAMES[m]} +{c['change_pct']:,.0f} % ({_ms(c['before'])} → {_ms(c['after'])} ms)"
                     for m, c in g["changes"].items())


def _ms(value: float) -> str:
    """48.3, 1,234.5; three significant digits below 10 ms (0.034, 4.25), where a tenth is too coarse."""
    return f"{value:,.1f}" if value >= 10 else f"{value:.3g}"
