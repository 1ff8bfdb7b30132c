"""ADV104 temp_spill: a query wrote temporary files, as the server's log says (``log_temp_files``).

Problem: a sort, hash or materialisation that needs more than ``work_mem``
writes temporary files and reads them back: the query slows by a large factor
and competes for I/O. The log shows it for every run, with no EXPLAIN, and
with the real parameters.
Signal: temp files tied to the query in the log (``Workload.events``), at
least ``temp_spill_min_bytes`` in all. The log's aggregate keeps each query's
files and bytes, not which runs wrote them: a run writes one file per spilling
node, so the runs that spilled are at most min(files, calls); the share of the
query's runs is said as that bound.
Memory that would suffice: the bytes a spilling run writes (bytes ÷ min(files,
calls): at least its largest file, as a run's files add up to it) ×
``temp_spill_memory_factor`` (tuples take more room in memory than on disk),
above the ``work_mem`` the catalog shows when there is one, rounded up to a
power of two MB. It errs high for a run that spilled in several nodes.
Impact: the server time of the runs that spilled, at most (mean time ×
spilling runs): what the query costs where it spills, an upper bound of what
the fix saves. Severity: from that impact (``Thresholds.severity``).
ADV004 (the plan shows the spill) and ADV104 (the log shows it) see one
problem twice when both fire on a query: ADV104 then stays quiet, as the plan
names the node, its memory need and its share of the time exactly, where the
log gives only files and bytes.
Fix: ``SET LOCAL work_mem = '…'`` in the transaction that runs the query, or
``ALTER ROLE … SET work_mem`` for the role that runs only such queries (not
globally: every sort and hash of every connection may take that much); for a
sort of one table's columns, an index in the ORDER BY's order removes the sort
when the query reads a small part of the table. Maintenance commands (CREATE
INDEX, a primary key or unique constraint added, REINDEX, CLUSTER, VACUUM) sort
in ``maintenance_work_mem``, not ``work_mem``: for them the fix sets that, for the
session (CREATE INDEX CONCURRENTLY cannot run inside a transaction block).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import sqlglot
from sqlglot import exp

from advisor.checks import _plan, adv004_disk_spill
from advisor.checks.context import Context
from advisor.findings import Finding
from advisor.words import plural
from advisor.workload.events import Statement, TempFiles
from advisor.workload.model import Query
from advisor.workload.tables import tables_of

CODE = "ADV104"
NAME = "temp_spill"
# Commands that sort in maintenance_work_mem (the normalized text is upper- or lower-case as logged).
_MAINTENANCE = re.compile(
    r"\s*(?:create\s+(?:unique\s+)?index|reindex|cluster|vacuum"
    r"|alter\s+table\s.*\badd\s+(?:constraint\s+\S+\s+)?(?:primary\s+key|unique))\b", re.I | re.S)


def run(ctx: Context) -> Iterable[Finding]:
    events = ctx.workload.events
    if events is None or not events.temp_by_query:
        return
    in_plans = {f.fingerprint for f in adv004_disk_spill.run(ctx)}  # the plan's finding says it better
    for statement, temp in events.temp_by_query.items():
        if temp.bytes >= ctx.config.temp_spill_min_bytes and statement.fingerprint not in in_plans:
            yield _finding(ctx, statement, temp, ctx.query(statement.fingerprint))


def _finding(ctx: Context, statement: Statement, temp: TempFiles, query: Query | None) -> Finding:
    calls = query.calls if query is not None and query.calls else None
    runs = min(temp.count, calls) if calls else temp.count
    per_run = temp.bytes / max(runs, 1)
    needed_kb = per_run / 1024 * ctx.config.temp_spill_memory_factor
    setting = "maintenance_work_mem" if _MAINTENANCE.match(statement.normalized) else "work_mem"
    current = _setting_kb(_plan.server_settings(ctx, setting).get(setting))
    if current:  # it spilled with this much: as much or less changes nothing
        needed_kb = max(needed_kb, current + 1)
    work_mem = _plan.work_mem_for_kb(needed_kb)
    impact = round(query.mean_ms * runs, 3) if query is not None and query.mean_ms is not None else None
    evidence = {
        "temp_files": temp.count, "temp_bytes": temp.bytes, "calls": calls,
        "spilled_runs_at_most": runs, "share_of_runs_at_most": round(runs / calls, 4) if calls else None,
        "bytes_per_spilling_run": math.ceil(per_run), "suggested_work_mem": work_mem,
        "current_work_mem_kb": current, "source": "log (log_temp_files)",
    }
    if setting != "work_mem":
        evidence = {k.replace("work_mem", setting): v for k, v in evidence.items()}
    share = f", up to {runs / calls:.0%} of its {plural(calls, 'run')}" if calls else ""
    return Finding(
        code=CODE, check=NAME, severity=ctx.severity(impact),
        title=(f"Wrote {plural(temp.count, 'temporary file')} ({_size(temp.bytes)}){share}; "
               f"{setting} = '{work_mem}' would keep it in memory"),
        suggestion=_suggestion(statement, query, work_mem, setting),
        fingerprint=statement.fingerprint, normalized=statement.normalized,
        tables=tables_of(statement.normalized), evidence=evidence, impact_ms=impact,
        application=", ".join(query.applications) or None if query is not None else None)


def _suggestion(statement: Statement, query: Query | None, work_mem: str, setting: str) -> str:
    sql = (query.sample if query is not None and query.sample else statement.normalized).strip().rstrip(";")
    if len(sql) > adv004_disk_spill.MAX_SQL_IN_SUGGESTION:
        sql = "-- the query"
    if setting != "work_mem":  # a maintenance command: for the session, then back
        return (f"SET {setting} = '{work_mem}';\n{sql};\nRESET {setting};\n"
                f"-- {setting} is what index builds, VACUUM and CLUSTER sort in; one such command runs at a time "
                "per session, so it can be set higher than work_mem.")
    role = ", ".join(query.users) if query is not None and query.users else "the_role"
    text = (f"BEGIN;\nSET LOCAL work_mem = '{work_mem}';\n{sql};\nCOMMIT;\n"
            f"-- or, for a role that runs only such queries: ALTER ROLE {_plan.quote_ident(role)} "
            f"SET work_mem = '{work_mem}';\n"
            "-- not globally: every sort and hash of every connection may take that much at once.")
    if index := _sort_index(statement.normalized):
        text += f"\n-- or remove the sort, when the query reads a small part of the table (a LIMIT, a filter):\n{index}"
    return text


def _sort_index(sql: str) -> str | None:
    """An index in the ORDER BY's order for a one-table query sorting by plain columns, else None."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return None
    if not isinstance(tree, exp.Select) or not (order := tree.args.get("order")):
        return None
    tables = [t for t in tree.find_all(exp.Table) if t.name]
    if len(tables) != 1 or tree.find(exp.Join):
        return None
    columns = []
    for key in order.expressions:
        if not isinstance(key.this, exp.Column):
            return None
        columns.append(key.this.name + (" DESC" if key.args.get("desc") else ""))
    table = tables[0]
    name = f"{table.db}.{table.name}" if table.db else table.name
    return f"CREATE INDEX CONCURRENTLY ON {_plan.qualified(name)} ({', '.join(columns)});"


def _setting_kb(value: str | None) -> float | None:
    """'4MB' → 4096.0 (SHOW's units), as ADV004 reads the plan's setting."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(kB|MB|GB|TB)?\s*", value or "")
    if not match:
        return None
    return float(match[1]) * {"kB": 1, "MB": 1024, "GB": 1024**2, "TB": 1024**3}[match[2] or "kB"]


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TB"
