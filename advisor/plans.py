"""The plan tree of ``EXPLAIN (… FORMAT JSON)`` and its arithmetic, computed once for every check.

EXPLAIN reports, per node, *per-loop averages* of rows and time and buffer
counts that *include the node's children*. Checks want totals and each node's
own share, so ``parse_plan`` derives them here (as PEV2 does) and checks only
read fields:

- ``rows_total = Actual Rows × Actual Loops``; rows removed by a filter,
  a join filter or an index recheck likewise (EXPLAIN prints them per loop).
  Heap Fetches and Exact/Lossy Heap Blocks are already totals and kept as is.
- ``inclusive_ms = Actual Total Time × loops / divisor``. Outside a parallel
  section the divisor is 1. Below a Gather / Gather Merge, loops count
  processes × executions, and processes run side by side, so the divisor is
  ``min(loops, participants)``: the average time of one participating process,
  i.e. the node's contribution to wall-clock time. ``participants`` is the
  Gather child's loops per Gather loop (the leader included when it took
  part), else Workers Launched + 1.
- ``exclusive_ms`` and ``exclusive_buffers``: inclusive minus what the node's
  children account for, clamped at 0. Who accounts for a child is decided by
  where the child's work actually ran:

  * plan children (Outer, Inner, Member, Subquery) and SubPlans: their parent;
  * an InitPlan runs lazily in the first node that reads its output parameter
    (``$n`` in PG ≤ 15, ``(InitPlan n)`` in PG 16+), which may sit below the
    node it is attached to; it is charged to the deepest node of the attached
    subtree that references the parameter and whose time covers it (to the
    Gather above that node when there is one: Gather evaluates parameters
    before starting workers), else to the node it is attached to;
  * a CTE (``InitPlan`` named ``CTE x``) runs inside the CTE Scans that read
    it, never in the node it is attached to; its time and buffers are charged
    to those scans, largest first, so no node owns it twice. A CTE nobody
    read to the end (a data-modifying CTE finished after the main plan) keeps
    the remainder outside the tree, as the server's own timing does.

  EXPLAIN rounds per-loop times to the microsecond, so a node run thousands
  of times can print less time than its child; such a node's inclusive time
  is raised to what its children account for (children first). With these
  rules the exclusive times of a plan add up to the root's inclusive time.
  (PG ≤ 15 also rounds per-loop rows to integers: 0.4 rows × 3,000 loops
  prints 0; ``rows_total`` cannot undo that.)
- Plain EXPLAIN has no actuals: the actual fields stay ``None`` and
  ``exclusive_cost`` (total cost minus plan children's) is the only weight.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# EXPLAIN's buffer counters, as (JSON key, our short name).
BUFFER_KEYS: tuple[tuple[str, str], ...] = (
    ("Shared Hit Blocks", "shared_hit"),
    ("Shared Read Blocks", "shared_read"),
    ("Shared Dirtied Blocks", "shared_dirtied"),
    ("Shared Written Blocks", "shared_written"),
    ("Local Hit Blocks", "local_hit"),
    ("Local Read Blocks", "local_read"),
    ("Local Dirtied Blocks", "local_dirtied"),
    ("Local Written Blocks", "local_written"),
    ("Temp Read Blocks", "temp_read"),
    ("Temp Written Blocks", "temp_written"),
)
GATHER_TYPES = frozenset({"Gather", "Gather Merge"})
SCAN_TYPES = frozenset({"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Tid Scan",
                        "Tid Range Scan", "Sample Scan"})


def _num(raw: Mapping[str, Any], key: str) -> float | None:
    value = raw.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(raw: Mapping[str, Any], key: str) -> int | None:
    value = _num(raw, key)
    return None if value is None else int(value)


def _str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) else None


def _keys(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = raw.get(key)
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _buffers(raw: Mapping[str, Any]) -> dict[str, int]:
    return {short: int(raw[key]) for key, short in BUFFER_KEYS if isinstance(raw.get(key), (int, float))}


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One entry of a node's "Workers" array (VERBOSE, or sort/hash details of parallel workers)."""

    worker_number: int | None
    actual_rows: float | None = None  # per loop, like the node's
    actual_loops: int | None = None
    actual_total_ms: float | None = None
    sort_method: str | None = None
    sort_space_type: str | None = None
    sort_space_kb: int | None = None
    hashagg_batches: int | None = None
    peak_memory_kb: int | None = None
    disk_usage_kb: int | None = None
    buffers: Mapping[str, int] = field(default_factory=dict, hash=False)

    @staticmethod
    def parse(raw: Mapping[str, Any]) -> WorkerStats:
        return WorkerStats(
            worker_number=_int(raw, "Worker Number"), actual_rows=_num(raw, "Actual Rows"),
            actual_loops=_int(raw, "Actual Loops"), actual_total_ms=_num(raw, "Actual Total Time"),
            sort_method=_str(raw, "Sort Method"), sort_space_type=_str(raw, "Sort Space Type"),
            sort_space_kb=_int(raw, "Sort Space Used"), hashagg_batches=_int(raw, "HashAgg Batches"),
            peak_memory_kb=_int(raw, "Peak Memory Usage"), disk_usage_kb=_int(raw, "Disk Usage"),
            buffers=_buffers(raw))


@dataclass(frozen=True, slots=True)
class PlanNode:
    """One plan node: EXPLAIN's fields (per loop, as printed) and the derived totals (see module doc)."""

    id: int  # pre-order position, 0 for the root
    parent_id: int | None
    depth: int
    node_type: str  # JSON's "Node Type": "Seq Scan" even when parallel_aware
    parallel_aware: bool = False
    relation: str | None = None
    schema: str | None = None
    alias: str | None = None
    index_name: str | None = None
    cte_name: str | None = None
    strategy: str | None = None  # Aggregate: Plain, Sorted, Hashed, Mixed
    partial_mode: str | None = None
    parent_relationship: str | None = None  # Outer, Inner, Member, Subquery, InitPlan, SubPlan
    subplan_name: str | None = None  # "InitPlan 1 (returns $0)", "SubPlan 2", "CTE x"
    join_type: str | None = None
    startup_cost: float | None = None
    total_cost: float | None = None
    plan_rows: float | None = None  # estimated rows per loop
    plan_width: int | None = None
    actual_rows: float | None = None  # per loop
    actual_loops: int | None = None
    actual_startup_ms: float | None = None  # per loop
    actual_total_ms: float | None = None  # per loop
    filter: str | None = None
    index_cond: str | None = None
    recheck_cond: str | None = None
    join_filter: str | None = None
    hash_cond: str | None = None
    merge_cond: str | None = None
    rows_removed_by_filter: float | None = None  # per loop
    rows_removed_by_index_recheck: float | None = None  # per loop
    rows_removed_by_join_filter: float | None = None  # per loop
    sort_key: tuple[str, ...] = ()
    group_key: tuple[str, ...] = ()
    sort_method: str | None = None
    sort_space_type: str | None = None
    sort_space_kb: int | None = None
    hash_buckets: int | None = None
    hash_batches: int | None = None
    original_hash_batches: int | None = None
    hashagg_batches: int | None = None
    planned_partitions: int | None = None
    peak_memory_kb: int | None = None
    disk_usage_kb: int | None = None
    cache_key: str | None = None  # Memoize
    cache_hits: int | None = None
    cache_misses: int | None = None
    cache_evictions: int | None = None
    cache_overflows: int | None = None
    heap_fetches: int | None = None  # total over all loops, as EXPLAIN prints it
    exact_heap_blocks: int | None = None  # total
    lossy_heap_blocks: int | None = None  # total
    workers_planned: int | None = None
    workers_launched: int | None = None
    # Mappings stay out of the hash (hash=False) so that nodes and plans remain hashable values.
    buffers: Mapping[str, int] = field(default_factory=dict, hash=False)  # inclusive of children, totals
    workers: tuple[WorkerStats, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, hash=False)  # own JSON keys, minus "Plans"
    children: tuple[PlanNode, ...] = ()
    # --- derived (module doc) ---
    in_parallel: bool = False  # below a Gather / Gather Merge
    participants: int = 1  # processes sharing the node's work
    rows_total: float | None = None
    rows_removed_total: float | None = None  # by Filter
    rows_removed_recheck_total: float | None = None
    rows_removed_join_total: float | None = None
    inclusive_ms: float | None = None
    exclusive_ms: float | None = None
    exclusive_buffers: Mapping[str, int] = field(default_factory=dict, hash=False)
    exclusive_cost: float | None = None

    # --- conveniences for checks ---
    @property
    def executed(self) -> bool:
        return bool(self.actual_loops)

    @property
    def loops(self) -> int:
        return self.actual_loops or 0

    @property
    def plan_rows_total(self) -> float | None:
        """Estimated rows over all loops, comparable to ``rows_total``."""
        if self.plan_rows is None:
            return None
        return self.plan_rows * max(self.loops, 1)

    @property
    def rows_fetched(self) -> float | None:
        """Rows the node read before its Filter: returned + removed (for scans: rows scanned)."""
        if self.rows_total is None:
            return None
        return self.rows_total + (self.rows_removed_total or 0.0)

    @property
    def display_type(self) -> str:
        """The type as the text format prints it ("Parallel Seq Scan", "HashAggregate")."""
        if self.node_type == "Aggregate" and self.strategy in ("Hashed", "Sorted", "Mixed"):
            return {"Hashed": "HashAggregate", "Sorted": "GroupAggregate", "Mixed": "MixedAggregate"}[self.strategy]
        return f"Parallel {self.node_type}" if self.parallel_aware else self.node_type

    @property
    def qualified_relation(self) -> str | None:
        if not self.relation:
            return None
        return f"{self.schema}.{self.relation}" if self.schema and self.schema != "public" else self.relation

    def label(self) -> str:
        """'Index Scan using i on t x', as in EXPLAIN's text form."""
        text = self.display_type
        if self.index_name and self.node_type != "Bitmap Index Scan":
            text += f" using {self.index_name}"
        elif self.index_name:
            text += f" on {self.index_name}"
        if self.relation:
            text += f" on {self.qualified_relation}"
            if self.alias and self.alias != self.relation:
                text += f" {self.alias}"
        elif self.cte_name:
            text += f" on {self.cte_name}" + (f" {self.alias}" if self.alias and self.alias != self.cte_name else "")
        return text

    def condition_texts(self) -> tuple[str, ...]:
        return tuple(t for t in (self.index_cond, self.recheck_cond, self.filter, self.join_filter,
                                 self.hash_cond, self.merge_cond) if t)


@dataclass(frozen=True, slots=True)
class Plan:
    """One EXPLAIN result: the node tree, the server's timings, and lookups over the tree."""

    root: PlanNode
    planning_ms: float | None = None
    execution_ms: float | None = None
    analyzed: bool = False
    triggers: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
    settings: Mapping[str, str] = field(default_factory=dict, hash=False)  # EXPLAIN (SETTINGS): changed settings
    _by_id: tuple[PlanNode, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", tuple(self._preorder(self.root)))

    @staticmethod
    def _preorder(node: PlanNode) -> Iterator[PlanNode]:
        yield node
        for child in node.children:
            yield from Plan._preorder(child)

    def nodes(self) -> Iterator[PlanNode]:
        """Every node, pre-order (a node before its children, children in EXPLAIN's order)."""
        return iter(self._by_id)

    def node(self, node_id: int) -> PlanNode:
        return self._by_id[node_id]

    def parent(self, node: PlanNode) -> PlanNode | None:
        return None if node.parent_id is None else self._by_id[node.parent_id]

    def ancestors(self, node: PlanNode) -> Iterator[PlanNode]:
        """Parent, grandparent, … up to the root."""
        above = self.parent(node)
        while above is not None:
            yield above
            above = self.parent(above)

    def subtree(self, node: PlanNode) -> Iterator[PlanNode]:
        """The node and everything below it (InitPlans and SubPlans included), pre-order."""
        return self._preorder(node)

    @property
    def total_ms(self) -> float | None:
        """The tree's time: the root's inclusive time, else the server's Execution Time."""
        return self.root.inclusive_ms if self.root.inclusive_ms is not None else self.execution_ms

    def time_share(self, node: PlanNode, *, inclusive: bool = False) -> float:
        """The node's share (0..1) of the plan: by time when analyzed, else by estimated cost."""
        if self.analyzed and self.total_ms:
            value = node.inclusive_ms if inclusive else node.exclusive_ms
            return min(1.0, (value or 0.0) / self.total_ms)
        if self.root.total_cost:
            value = node.total_cost if inclusive else node.exclusive_cost
            return min(1.0, (value or 0.0) / self.root.total_cost)
        return 0.0

    def relations(self) -> tuple[str, ...]:
        """Tables the plan reads, in order of first appearance."""
        return tuple(dict.fromkeys(name for n in self.nodes() if (name := n.qualified_relation)))


# --- parsing -------------------------------------------------------------------


@dataclass(slots=True)
class _Raw:
    """A node while the arithmetic is being done: its JSON, tree links and derived numbers."""

    id: int
    parent: int | None
    depth: int
    raw: Mapping[str, Any]
    children: list[int] = field(default_factory=list)
    participants: int = 1
    in_parallel: bool = False
    inclusive: dict[str, float] = field(default_factory=dict)  # "ms" and buffer counters
    charged: dict[str, float] = field(default_factory=dict)  # what children's work accounts for
    payer: int | None = None  # the node whose time holds this one's (its parent, or see _charge_children)


def _flatten(doc_plan: Mapping[str, Any]) -> list[_Raw]:
    nodes: list[_Raw] = []
    stack: list[tuple[Mapping[str, Any], int | None, int]] = [(doc_plan, None, 0)]
    while stack:
        raw, parent, depth = stack.pop()
        node = _Raw(len(nodes), parent, depth, raw)
        nodes.append(node)
        if parent is not None:
            nodes[parent].children.append(node.id)
        kids = [k for k in raw.get("Plans") or () if isinstance(k, Mapping)]
        stack.extend((kid, node.id, depth + 1) for kid in reversed(kids))
    return nodes


def _set_parallelism(nodes: list[_Raw]) -> None:
    """Mark the parallel section under each Gather and how many processes share it (pre-order pass)."""
    for node in nodes:
        if node.parent is None:
            continue
        parent = nodes[node.parent]
        if _str(parent.raw, "Node Type") in GATHER_TYPES:
            node.in_parallel, node.participants = True, _participants(parent, node)
        else:
            node.in_parallel, node.participants = parent.in_parallel, parent.participants


def _participants(gather: _Raw, child: _Raw) -> int:
    loops, child_loops = _int(gather.raw, "Actual Loops"), _int(child.raw, "Actual Loops")
    if loops and child_loops:
        return max(1, round(child_loops / loops))
    return (_int(gather.raw, "Workers Launched") or 0) + 1


def _set_inclusive(nodes: list[_Raw]) -> None:
    for node in nodes:
        loops = _int(node.raw, "Actual Loops") or 0
        per_loop = _num(node.raw, "Actual Total Time")
        metrics: dict[str, float] = {k: float(v) for k, v in _buffers(node.raw).items()}
        if per_loop is not None:
            divisor = min(loops, node.participants) if node.in_parallel else 1
            metrics["ms"] = per_loop * loops / divisor if loops else 0.0
        node.inclusive = metrics


def _charge(payer: _Raw, amounts: Mapping[str, float], child: _Raw | None = None) -> None:
    if child is not None:
        child.payer = payer.id
    for key, value in amounts.items():
        payer.charged[key] = payer.charged.get(key, 0.0) + value


def _subtree(nodes: list[_Raw], top: int) -> Iterator[_Raw]:
    stack = [top]
    while stack:
        node = nodes[stack.pop()]
        yield node
        stack.extend(reversed(node.children))


_RETURNS = re.compile(r"returns\s+(.*?)\)?$")


def _param_patterns(subplan_name: str) -> list[re.Pattern]:
    """How other nodes refer to an InitPlan's output: $n (PG ≤ 15) or (InitPlan n) (PG 16+)."""
    patterns = []
    if m := _RETURNS.search(subplan_name):
        patterns += [re.compile(re.escape(p.strip()) + r"(?!\d)") for p in m.group(1).split(",") if p.strip()]
    if m := re.match(r"InitPlan (\d+)", subplan_name):
        patterns.append(re.compile(rf"\(InitPlan {m.group(1)}\)"))
    return patterns


def _references(node: _Raw, patterns: list[re.Pattern]) -> bool:
    texts = [str(v) for k, v in node.raw.items() if k not in ("Plans", "Subplan Name")]
    return any(p.search(t) for p in patterns for t in texts)


def _initplan_payer(nodes: list[_Raw], initplan: _Raw, attached: _Raw) -> _Raw:
    """The node whose execution ran the InitPlan (module doc); ``attached``: the node EXPLAIN lists it under."""
    own = {n.id for n in _subtree(nodes, initplan.id)}
    patterns = _param_patterns(_str(initplan.raw, "Subplan Name") or "")
    candidates = [n for n in _subtree(nodes, attached.id) if n.id not in own and _references(n, patterns)]
    need = initplan.inclusive.get("ms")
    covering = [n for n in candidates if need is None or n.inclusive.get("ms", 0.0) >= need * 0.95]
    if not covering:
        return attached
    payer = max(covering, key=lambda n: n.depth)
    gathers = [n for n in _path(nodes, attached.id, payer.id) if _str(n.raw, "Node Type") in GATHER_TYPES]
    return gathers[0] if gathers else payer


def _path(nodes: list[_Raw], top: int, bottom: int) -> list[_Raw]:
    """Nodes from ``top`` (exclusive) down to ``bottom`` (inclusive)."""
    path = []
    node = nodes[bottom]
    while node.id != top and node.parent is not None:
        path.append(node)
        node = nodes[node.parent]
    return list(reversed(path))


def _charge_cte(nodes: list[_Raw], cte: _Raw, attached: _Raw, name: str) -> None:
    """Split a CTE's work among the CTE Scans that read it, the largest reader first."""
    own = {n.id for n in _subtree(nodes, cte.id)}
    scans = [n for n in _subtree(nodes, attached.id)
             if n.id not in own and _str(n.raw, "Node Type") == "CTE Scan" and _str(n.raw, "CTE Name") == name]
    for key, total in cte.inclusive.items():
        remaining = total
        for scan in sorted(scans, key=lambda s: s.inclusive.get(key, 0.0), reverse=True):
            take = min(remaining, scan.inclusive.get(key, 0.0) - scan.charged.get(key, 0.0))
            if take > 0:
                _charge(scan, {key: take})
                remaining -= take
    if scans:  # rounding corrections of the CTE's time go to its largest reader
        cte.payer = max(scans, key=lambda s: s.inclusive.get("ms", 0.0)).id


def _charge_children(nodes: list[_Raw]) -> None:
    # CTEs last: a CTE Scan's own capacity is what remains after its other children.
    ctes = []
    for node in nodes:
        if node.parent is None:
            continue
        attached = nodes[node.parent]
        name = _str(node.raw, "Subplan Name") or ""
        if _str(node.raw, "Parent Relationship") == "InitPlan" and name.startswith("CTE "):
            ctes.append((node, attached, name[4:]))
        elif _str(node.raw, "Parent Relationship") == "InitPlan":
            _charge(_initplan_payer(nodes, node, attached), node.inclusive, node)
        else:
            _charge(attached, node.inclusive, node)
    for cte, attached, name in ctes:
        _charge_cte(nodes, cte, attached, name)


def _lift_rounded_times(nodes: list[_Raw]) -> None:
    """Raise a node's time to what its children account for, children first.

    EXPLAIN rounds per-loop times to the microsecond: a node run 3,000 times
    at 0.4 µs prints 0.000 ms, and its child, at 1 µs, prints more than it.
    """
    for node in reversed(nodes):  # reverse pre-order: descendants before ancestors
        ms = node.inclusive.get("ms")
        short = node.charged.get("ms", 0.0) - (ms or 0.0)
        if ms is None or short <= 0:
            continue
        node.inclusive["ms"] = ms + short
        if node.payer is not None:
            nodes[node.payer].charged["ms"] = nodes[node.payer].charged.get("ms", 0.0) + short


def _exclusive_cost(node: _Raw, nodes: list[_Raw]) -> float | None:
    total = _num(node.raw, "Total Cost")
    if total is None:
        return None
    kids = sum(_num(nodes[k].raw, "Total Cost") or 0.0 for k in node.children
               if _str(nodes[k].raw, "Parent Relationship") not in ("InitPlan", "SubPlan"))
    return max(0.0, total - kids)


def _times(value: float | None, loops: int | None) -> float | None:
    return None if value is None or loops is None else value * loops


def _freeze(node: _Raw, nodes: list[_Raw], analyzed: bool) -> PlanNode:
    raw = node.raw
    loops = _int(raw, "Actual Loops") if analyzed else None
    incl_ms = node.inclusive.get("ms")
    exclusive_buffers = {k: int(max(0.0, v - node.charged.get(k, 0.0)))
                         for k, v in node.inclusive.items() if k != "ms"}
    return PlanNode(
        id=node.id, parent_id=node.parent, depth=node.depth,
        node_type=_str(raw, "Node Type") or "?", parallel_aware=bool(raw.get("Parallel Aware")),
        relation=_str(raw, "Relation Name"), schema=_str(raw, "Schema"), alias=_str(raw, "Alias"),
        index_name=_str(raw, "Index Name"), cte_name=_str(raw, "CTE Name"),
        strategy=_str(raw, "Strategy"), partial_mode=_str(raw, "Partial Mode"),
        parent_relationship=_str(raw, "Parent Relationship"), subplan_name=_str(raw, "Subplan Name"),
        join_type=_str(raw, "Join Type"),
        startup_cost=_num(raw, "Startup Cost"), total_cost=_num(raw, "Total Cost"),
        plan_rows=_num(raw, "Plan Rows"), plan_width=_int(raw, "Plan Width"),
        actual_rows=_num(raw, "Actual Rows"), actual_loops=loops,
        actual_startup_ms=_num(raw, "Actual Startup Time"), actual_total_ms=_num(raw, "Actual Total Time"),
        filter=_str(raw, "Filter"), index_cond=_str(raw, "Index Cond"), recheck_cond=_str(raw, "Recheck Cond"),
        join_filter=_str(raw, "Join Filter"), hash_cond=_str(raw, "Hash Cond"), merge_cond=_str(raw, "Merge Cond"),
        rows_removed_by_filter=_num(raw, "Rows Removed by Filter"),
        rows_removed_by_index_recheck=_num(raw, "Rows Removed by Index Recheck"),
        rows_removed_by_join_filter=_num(raw, "Rows Removed by Join Filter"),
        sort_key=_keys(raw, "Sort Key"), group_key=_keys(raw, "Group Key"),
        sort_method=_str(raw, "Sort Method"), sort_space_type=_str(raw, "Sort Space Type"),
        sort_space_kb=_int(raw, "Sort Space Used"),
        hash_buckets=_int(raw, "Hash Buckets"), hash_batches=_int(raw, "Hash Batches"),
        original_hash_batches=_int(raw, "Original Hash Batches"), hashagg_batches=_int(raw, "HashAgg Batches"),
        planned_partitions=_int(raw, "Planned Partitions"),
        peak_memory_kb=_int(raw, "Peak Memory Usage"), disk_usage_kb=_int(raw, "Disk Usage"),
        cache_key=_str(raw, "Cache Key"), cache_hits=_int(raw, "Cache Hits"), cache_misses=_int(raw, "Cache Misses"),
        cache_evictions=_int(raw, "Cache Evictions"), cache_overflows=_int(raw, "Cache Overflows"),
        heap_fetches=_int(raw, "Heap Fetches"), exact_heap_blocks=_int(raw, "Exact Heap Blocks"),
        lossy_heap_blocks=_int(raw, "Lossy Heap Blocks"),
        workers_planned=_int(raw, "Workers Planned"), workers_launched=_int(raw, "Workers Launched"),
        buffers=_buffers(raw),
        workers=tuple(WorkerStats.parse(w) for w in raw.get("Workers") or () if isinstance(w, Mapping)),
        raw={k: v for k, v in raw.items() if k != "Plans"},
        children=tuple(_freeze(nodes[k], nodes, analyzed) for k in node.children),
        in_parallel=node.in_parallel, participants=node.participants,
        rows_total=_times(_num(raw, "Actual Rows"), loops),
        rows_removed_total=_times(_num(raw, "Rows Removed by Filter"), loops),
        rows_removed_recheck_total=_times(_num(raw, "Rows Removed by Index Recheck"), loops),
        rows_removed_join_total=_times(_num(raw, "Rows Removed by Join Filter"), loops),
        inclusive_ms=incl_ms,
        exclusive_ms=None if incl_ms is None else max(0.0, incl_ms - node.charged.get("ms", 0.0)),
        exclusive_buffers=exclusive_buffers,
        exclusive_cost=_exclusive_cost(node, nodes),
    )


def parse_plan(doc: Mapping[str, Any] | list) -> Plan:
    """A Plan from one EXPLAIN JSON document (``result[0]``; the whole one-element list is accepted too)."""
    if isinstance(doc, list):
        doc = doc[0]
    if not isinstance(doc, Mapping) or not isinstance(doc.get("Plan"), Mapping):
        raise ValueError("not an EXPLAIN (FORMAT JSON) document: no 'Plan' object")
    nodes = _flatten(doc["Plan"])
    analyzed = "Actual Loops" in doc["Plan"] or "Execution Time" in doc
    _set_parallelism(nodes)
    _set_inclusive(nodes)
    _charge_children(nodes)
    _lift_rounded_times(nodes)
    triggers = tuple(t for t in doc.get("Triggers") or () if isinstance(t, Mapping))
    return Plan(root=_freeze(nodes[0], nodes, analyzed), planning_ms=_num(doc, "Planning Time"),
                execution_ms=_num(doc, "Execution Time"), analyzed=analyzed, triggers=triggers,
                settings={str(k): str(v) for k, v in (doc.get("Settings") or {}).items()})
