"""Plan arithmetic on real plans: loops multiply rows, exclusive times and buffers add up to the root.

Live tests run each query of PLANS on this module's database; the same plans,
recorded from a real server into tests/plans/*.json (ADVISOR_RECORD_PLANS=1
rewrites them), are checked offline too, so the parser is tested even without
a server and against plans of other shapes and versions added there by hand.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import psycopg
import pytest

from advisor.plans import Plan, PlanNode, parse_plan

PLANS_DIR = Path(__file__).parent / "plans"
RECORD = os.environ.get("ADVISOR_RECORD_PLANS") == "1"

SCHEMA = """
CREATE TABLE lots (id int PRIMARY KEY, fab text NOT NULL);
INSERT INTO lots SELECT g, 'fab' || (g % 5) FROM generate_series(1, 2000) g;
CREATE TABLE results (id int PRIMARY KEY, lot_id int NOT NULL, status text NOT NULL, value float8 NOT NULL);
INSERT INTO results SELECT g, 1 + g % 2000, CASE WHEN g % 1000 = 0 THEN 'fail' ELSE 'pass' END, random()
  FROM generate_series(1, 200000) g;
CREATE INDEX results_lot ON results (lot_id);
VACUUM ANALYZE lots, results;
"""
SERIAL = ("SET max_parallel_workers_per_gather = 0",)
# name: (query, session settings that make the planner choose the shape under test)
PLANS: dict[str, tuple[str, tuple[str, ...]]] = {
    "nested_loop": (
        "SELECT l.fab, count(*) FROM lots l JOIN results r ON r.lot_id = l.id WHERE l.id <= 200 GROUP BY l.fab",
        SERIAL + ("SET enable_hashjoin = off", "SET enable_mergejoin = off")),
    "parallel": (
        "SELECT r.status, count(*), avg(r.value) FROM results r JOIN lots l ON l.id = r.lot_id "
        "WHERE r.value < 0.9 GROUP BY r.status",
        ("SET max_parallel_workers_per_gather = 2", "SET parallel_setup_cost = 0", "SET parallel_tuple_cost = 0",
         "SET min_parallel_table_scan_size = 0")),
    "initplan": (  # the InitPlan hangs on the top node but runs inside the scan whose filter reads $0
        "SELECT l.fab, count(*) FROM lots l JOIN results r ON r.lot_id = l.id "
        "WHERE r.value > (SELECT avg(value) FROM results WHERE lot_id = 7) GROUP BY l.fab", SERIAL),
    "subplan": (
        "SELECT l.id, (SELECT max(r.value) FROM results r WHERE r.lot_id = l.id) FROM lots l WHERE l.id < 300",
        SERIAL),
    "cte": (  # two scans of one CTE; the InitPlan of the subquery runs inside the second scan
        "WITH c AS MATERIALIZED (SELECT lot_id, count(*) AS n FROM results WHERE status = 'fail' GROUP BY lot_id) "
        "SELECT * FROM c JOIN c c2 USING (lot_id) WHERE c.n > (SELECT avg(value) FROM results WHERE lot_id < 10)",
        SERIAL),
}


def explain(schema_conn: psycopg.Connection, sql: str, settings: tuple[str, ...] = (), analyze: bool = True) -> dict:
    """EXPLAIN's JSON document, with the settings local to a rolled-back transaction."""
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    with schema_conn.transaction(force_rollback=True):
        for statement in settings:
            schema_conn.execute(statement)
        return schema_conn.execute(f"EXPLAIN ({options}) {sql}").fetchone()[0][0]


@pytest.fixture(scope="module")
def plans(schema_conn) -> dict[str, tuple[dict, Plan]]:
    captured = {}
    for name, (sql, settings) in PLANS.items():
        doc = explain(schema_conn, sql, settings)
        captured[name] = (doc, parse_plan(doc))
        if RECORD:
            PLANS_DIR.mkdir(exist_ok=True)
            (PLANS_DIR / f"{name}.json").write_text(json.dumps([doc], indent=1) + "\n")
    return captured


# --- invariants, shared by live and recorded plans --------------------------------


def assert_consistent(plan: Plan) -> None:
    """Exclusive times and buffers add up to the root's; rows are per loop × loops."""
    nodes = list(plan.nodes())
    assert [n.id for n in nodes] == list(range(len(nodes)))
    for node in nodes:
        assert node.rows_total == pytest.approx(node.actual_rows * node.actual_loops)
        if node.rows_removed_by_filter is not None:
            assert node.rows_removed_total == pytest.approx(node.rows_removed_by_filter * node.actual_loops)
        assert 0 <= node.exclusive_ms <= node.inclusive_ms + 1e-9
        assert all(v >= 0 for v in node.exclusive_buffers.values())
    # Clamping at 0 can only add, and rarely does: a few µs of timing noise per node at most.
    assert sum(n.exclusive_ms for n in nodes) == pytest.approx(plan.root.inclusive_ms, rel=0.02, abs=0.05)
    for key, root_value in plan.root.buffers.items():
        assert sum(n.exclusive_buffers.get(key, 0) for n in nodes) == root_value, key
    # Per-loop times print rounded to the µs; lifting a node to its children's time may add that much.
    assert plan.root.inclusive_ms <= plan.execution_ms + sum(0.0005 * n.loops for n in nodes)


def _inner(node: PlanNode) -> PlanNode:
    return next(c for c in node.children if c.parent_relationship == "Inner")


def _only(plan: Plan, predicate) -> PlanNode:
    found = [n for n in plan.nodes() if predicate(n)]
    assert len(found) == 1, [n.label() for n in found]
    return found[0]


# --- live --------------------------------------------------------------------------


@pytest.mark.parametrize("name", PLANS)
def test_live_plan_is_consistent(plans, name):
    doc, plan = plans[name]
    assert plan.analyzed and plan.execution_ms == doc["Execution Time"]
    assert_consistent(plan)


def test_nested_loop_multiplies_by_loops(plans):
    _, plan = plans["nested_loop"]
    join = _only(plan, lambda n: n.node_type == "Nested Loop")
    outer, inner = join.children[0], _inner(join)
    assert inner.loops == outer.rows_total == 200
    assert inner.rows_total == join.rows_total == 20_000  # 100 results per lot, over 200 loops
    assert inner.actual_rows == 100
    assert inner.inclusive_ms == pytest.approx(inner.actual_total_ms * inner.loops)


def test_parallel_nodes_are_averaged_over_processes(plans):
    _, plan = plans["parallel"]
    gather = _only(plan, lambda n: n.node_type in ("Gather", "Gather Merge"))
    below = list(plan.subtree(gather))[1:]
    assert below and all(n.in_parallel for n in below)
    assert not gather.in_parallel
    scan = _only(plan, lambda n: n.relation == "results")
    assert scan.parallel_aware and scan.display_type == "Parallel Seq Scan"
    # The leader takes part: processes = launched workers + 1, measured from the loops.
    assert scan.participants == gather.workers_launched + 1 == scan.loops
    assert scan.inclusive_ms == pytest.approx(scan.actual_total_ms)  # loops / processes = 1
    # Every row once over all processes; EXPLAIN rounds per-loop averages, so ± one row per loop each.
    assert scan.rows_total + scan.rows_removed_total == pytest.approx(200_000, abs=2 * scan.loops)


def test_initplan_is_charged_where_it_runs(plans):
    _, plan = plans["initplan"]
    init = _only(plan, lambda n: n.parent_relationship == "InitPlan")
    scan = _only(plan, lambda n: n.relation == "results" and n.filter and "$0" in n.filter)
    kids = sum(c.inclusive_ms for c in scan.children)
    assert scan.exclusive_ms == pytest.approx(max(0.0, scan.inclusive_ms - kids - init.inclusive_ms), abs=1e-6)
    assert scan.exclusive_buffers["shared_hit"] == scan.buffers["shared_hit"] - init.buffers["shared_hit"]


def test_subplan_runs_per_outer_row(plans):
    _, plan = plans["subplan"]
    sub = _only(plan, lambda n: n.parent_relationship == "SubPlan")
    assert sub.subplan_name.startswith("SubPlan") and sub.loops == 299
    top = plan.root
    assert top.exclusive_ms == pytest.approx(
        max(0.0, top.inclusive_ms - sum(c.inclusive_ms for c in top.children)), abs=1e-6)


def test_cte_time_is_owned_once(plans):
    _, plan = plans["cte"]
    cte = _only(plan, lambda n: (n.subplan_name or "").startswith("CTE "))
    scans = [n for n in plan.nodes() if n.node_type == "CTE Scan"]
    assert len(scans) == 2
    # The CTE's work is inside the scans that read it: taken out of them once, not out of the root.
    taken = sum(s.inclusive_ms - s.exclusive_ms - sum(c.inclusive_ms for c in s.children) for s in scans)
    init = _only(plan, lambda n: (n.subplan_name or "").startswith("InitPlan"))
    assert taken == pytest.approx(cte.inclusive_ms + init.inclusive_ms, rel=0.05, abs=0.05)
    root_kids = [c for c in plan.root.children if c.parent_relationship != "InitPlan"]
    assert plan.root.exclusive_ms == pytest.approx(
        max(0.0, plan.root.inclusive_ms - sum(c.inclusive_ms for c in root_kids)), abs=1e-6)


def test_plain_explain_has_estimates_only(schema_conn):
    plan = parse_plan(explain(schema_conn, PLANS["nested_loop"][0], PLANS["nested_loop"][1], analyze=False))
    assert not plan.analyzed and plan.execution_ms is None
    for node in plan.nodes():
        assert node.actual_rows is None and node.rows_total is None and node.inclusive_ms is None
        assert node.exclusive_cost is not None and node.exclusive_cost <= node.total_cost
    assert 0 < plan.time_share(plan.root, inclusive=True) <= 1


# --- recorded ----------------------------------------------------------------------


RECORDED = sorted(PLANS_DIR.rglob("*.json"))  # with the checks' plans (tests/plans/checks)


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_recorded_plan_is_consistent(path):
    plan = parse_plan(json.loads(path.read_text()))
    if plan.analyzed and plan.root.inclusive_ms is not None:
        assert_consistent(plan)
    assert len(list(plan.nodes())) >= 1


def test_parse_is_tolerant():
    plan = parse_plan({"Plan": {"Node Type": "Result", "Plans": [{"Node Type": "Seq Scan", "Relation Name": "t"}]}})
    assert not plan.analyzed and [n.label() for n in plan.nodes()] == ["Result", "Seq Scan on t"]
    assert plan.root.inclusive_ms is None and plan.root.exclusive_cost is None
    assert plan.time_share(plan.root) == 0.0
    assert hash(plan) == hash(parse_plan([{"Plan": {"Node Type": "Result", "Plans": [
        {"Node Type": "Seq Scan", "Relation Name": "t"}]}}]))  # frozen values: usable as keys
    with pytest.raises(ValueError):
        parse_plan({"Query": "x"})


def test_recorded_plans_cover_the_shapes():
    if not RECORDED:
        pytest.skip("no recorded plans (run with ADVISOR_RECORD_PLANS=1)")
    assert {p.stem for p in RECORDED} >= set(PLANS)
    assert math.isfinite(sum(n.total_cost for p in RECORDED for n in parse_plan(json.loads(p.read_text())).nodes()))
