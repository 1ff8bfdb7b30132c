"""ADV008 parallel_workers_short: a parallel plan ran with fewer workers than planned.

Problem: the planner chose a parallel plan for N workers, but when it ran the
server had fewer background workers free (``max_parallel_workers`` or
``max_worker_processes`` reached, often by other parallel queries), so the
leader did the work of the missing ones and the query ran slower than planned.

Signal: a Gather or Gather Merge with Workers Launched < Workers Planned (no
threshold). Needs EXPLAIN ANALYZE.

Impact: the query's total workload time × the Gather's inclusive share ×
(1 − (launched + 1) / (planned + 1)): the time the missing processes would
have taken off, assuming the work splits evenly among leader and workers.
Severity: from that impact (``Thresholds.severity``, the same rule for every check).

Fix: raise ``max_parallel_workers`` (reloadable) and, if needed,
``max_worker_processes`` (restart), keeping them within the CPU count; or
accept it when many parallel queries run at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from advisor.checks import _plan
from advisor.checks.context import Context
from advisor.findings import Finding

CODE = "ADV008"
NAME = "parallel_workers_short"


def run(ctx: Context) -> Iterable[Finding]:
    for eq, plan in _plan.explained(ctx):
        for node in plan.nodes():
            planned, launched = node.workers_planned, node.workers_launched
            if node.node_type not in ("Gather", "Gather Merge") or planned is None or launched is None:
                continue
            if launched >= planned or not node.executed:
                continue
            share = plan.time_share(node, inclusive=True) * (1 - (launched + 1) / (planned + 1))
            yield _plan.make_finding(
                ctx, CODE, NAME, eq,
                title=f"{node.display_type} launched {launched} of {planned} planned parallel workers",
                suggestion=("SHOW max_parallel_workers; SHOW max_worker_processes;\n"
                            "ALTER SYSTEM SET max_parallel_workers = 8;  -- e.g.: up to the CPU count\n"
                            "SELECT pg_reload_conf();\n"
                            "-- max_worker_processes bounds it and needs a restart. "
                            "Workers also run short when many parallel queries overlap."),
                evidence={"workers_planned": planned, "workers_launched": launched,
                          "gather_ms": node.inclusive_ms, "plan": _plan.excerpt(node),
                          **_plan.server_settings(ctx, "max_parallel_workers", "max_worker_processes")},
                share=share)
