"""ADV004 disk_spill: a sort, hash or hash aggregate ran out of work_mem and spilled to disk.

Problem: when a Sort, a Hash (for a hash join) or a hashed Aggregate needs
more memory than ``work_mem`` allows (× ``hash_mem_multiplier`` for hashes),
it writes temporary files and reads them back: the node slows down by a large
factor and competes for I/O.

Signal (any of, in the node or one of its parallel workers): a Sort whose Sort
Method is "external …" or Sort Space Type is Disk; a Hash with Hash Batches
> 1 (or more than Original Hash Batches); an Aggregate with Strategy Hashed or
Mixed and HashAgg Batches > 1 or Disk Usage > 0. Needs EXPLAIN ANALYZE; no
threshold: any spill is reported.

Memory that would have sufficed: a sort needs about 3× its on-disk size in
memory (tuples carry headers and pointers there; measured 2.1× on narrow
rows); a hash join the peak memory of one batch × the number of batches; a
hash aggregate its groups × (row width + 128 bytes of hash entry and
transition state), at least its peak memory. The largest need among a
query's spills (and more than the work_mem it ran with: EXPLAIN's SETTINGS,
else the catalog's), rounded up to a power of two MB, is the suggestion. Hash
nodes may use work_mem × hash_mem_multiplier (2.0 by default since PG 15),
so for them the suggestion errs high.

Impact: the query's total workload time × the spilled nodes' exclusive share
of the plan (a hash join's own time counts with its Hash: it re-reads the
batches). Severity: from that impact (``Thresholds.severity``, the same rule for every check).

Fix: ``SET LOCAL work_mem = '…'`` in the transaction running this query (not
globally: every sort and hash of every connection may take that much).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from advisor.checks import _plan
from advisor.checks.context import Context, ExplainedQuery
from advisor.findings import Finding
from advisor.plans import Plan, PlanNode

CODE = "ADV004"
NAME = "disk_spill"
SORT_MEMORY_FACTOR = 3.0  # in-memory size of a sort over its on-disk size
HASHAGG_ENTRY_BYTES = 128  # per group, beyond the row's width: hash entry, tuple header, transition state
MAX_SQL_IN_SUGGESTION = 2_000


@dataclass(frozen=True, slots=True)
class Spill:
    node: PlanNode
    what: str  # one line for the evidence
    needed_kb: float
    share: float


def run(ctx: Context) -> Iterable[Finding]:
    for eq, plan in _plan.explained(ctx):
        spills = list(_spills(plan))
        if spills:
            yield _finding(ctx, eq, plan, spills)


def _spills(plan: Plan) -> Iterator[Spill]:
    for node in plan.nodes():
        if not node.executed:
            continue
        if node.node_type == "Sort":
            spill = _sort_spill(plan, node)
        elif node.node_type == "Hash":
            spill = _hash_spill(plan, node)
        elif node.node_type == "Aggregate" and node.strategy in ("Hashed", "Mixed"):
            spill = _hashagg_spill(plan, node)
        else:
            spill = None
        if spill:
            yield spill


def _sort_spill(plan: Plan, node: PlanNode) -> Spill | None:
    entries = [(node.sort_method, node.sort_space_type, node.sort_space_kb)]
    entries += [(w.sort_method, w.sort_space_type, w.sort_space_kb) for w in node.workers]
    disk = [kb or 0 for method, kind, kb in entries if kind == "Disk" or "external" in (method or "")]
    if not disk:
        return None
    kb = max(disk)
    method = node.sort_method or next((w.sort_method for w in node.workers if w.sort_method), "external")
    keys = ", ".join(node.sort_key) or "?"
    return Spill(node, f"Sort on {keys}: {method}, {_mb(kb)} on disk", kb * SORT_MEMORY_FACTOR,
                 plan.time_share(node))


def _hash_spill(plan: Plan, node: PlanNode) -> Spill | None:
    batches = node.hash_batches or 1
    if batches <= 1 and batches <= (node.original_hash_batches or 1):
        return None
    grew = f" (planned {node.original_hash_batches})" if (node.original_hash_batches or batches) < batches else ""
    join = plan.parent(node)
    share = plan.time_share(node) + (plan.time_share(join) if join is not None else 0.0)
    return Spill(node, f"Hash: {batches} batches{grew}, peak {_mb(node.peak_memory_kb or 0)} per batch",
                 (node.peak_memory_kb or 0) * batches, share)


def _hashagg_spill(plan: Plan, node: PlanNode) -> Spill | None:
    batches = max([node.hashagg_batches or 0] + [w.hashagg_batches or 0 for w in node.workers])
    disk = max([node.disk_usage_kb or 0] + [w.disk_usage_kb or 0 for w in node.workers])
    if batches <= 1 and disk <= 0:
        return None
    peak = max([node.peak_memory_kb or 0] + [w.peak_memory_kb or 0 for w in node.workers])
    groups = (node.rows_total or 0) + (node.rows_removed_total or 0)  # HAVING removes groups after hashing
    if node.in_parallel:
        groups /= max(node.participants, 1)  # each process hashes its own share
    needed = max(peak, groups * ((node.plan_width or 0) + HASHAGG_ENTRY_BYTES) / 1024)
    keys = ", ".join(node.group_key) or "?"
    return Spill(node, f"HashAggregate on {keys}: {batches} batches, {_mb(disk)} on disk, peak {_mb(peak)}",
                 needed, plan.time_share(node))


def _mb(kb: float) -> str:
    return f"{kb / 1024:,.1f} MB" if kb >= 1024 else f"{kb:,.0f} kB"


def _setting_kb(value: str | None) -> float | None:
    """'4MB' → 4096.0 (SHOW's units: kB, MB, GB, TB)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(kB|MB|GB|TB)?\s*", value or "")
    if not match:
        return None
    return float(match[1]) * {"kB": 1, "MB": 1024, "GB": 1024**2, "TB": 1024**3}[match[2] or "kB"]


def _current_work_mem(ctx: Context, plan: Plan) -> float | None:
    """The work_mem the plan ran with: EXPLAIN (SETTINGS) shows it when changed, else the server's."""
    return _setting_kb(plan.settings.get("work_mem") or _plan.server_settings(ctx, "work_mem").get("work_mem"))


def _finding(ctx: Context, eq: ExplainedQuery, plan: Plan, spills: list[Spill]) -> Finding:
    needed = max(s.needed_kb for s in spills)
    current = _current_work_mem(ctx, plan)
    if current:  # it spilled with this much: suggesting as much or less would change nothing
        needed = max(needed, current + 1)
    work_mem = _plan.work_mem_for_kb(needed)
    share = min(1.0, sum(s.share for s in spills))
    temp = sum(s.node.exclusive_buffers.get("temp_written", 0) for s in spills)
    evidence = {
        "spills": [s.what for s in spills], "needed_kb": round(needed), "suggested_work_mem": work_mem,
        "current_work_mem_kb": current,
        "temp_blocks_written": temp or None, "plan": [_plan.excerpt(s.node) for s in spills],
        **_plan.server_settings(ctx, "hash_mem_multiplier"),
    }
    kinds = sorted({s.node.display_type for s in spills})
    return _plan.make_finding(
        ctx, CODE, NAME, eq,
        title=f"{' and '.join(kinds)} spilled to disk; work_mem = '{work_mem}' would keep it in memory",
        suggestion=_suggestion(eq, work_mem, spills), evidence=evidence, share=share)


def _suggestion(eq: ExplainedQuery, work_mem: str, spills: list[Spill]) -> str:
    sql = (eq.query.sample or eq.query.normalized).strip().rstrip(";")
    if len(sql) > MAX_SQL_IN_SUGGESTION:
        sql = "-- the query"
    return (f"BEGIN;\nSET LOCAL work_mem = '{work_mem}';\n{sql};\nCOMMIT;\n"
            f"-- {'; '.join(s.what for s in spills)}.\n"
            "-- SET LOCAL scopes it to this transaction: a global work_mem applies to every sort and hash "
            "of every connection at once.")
