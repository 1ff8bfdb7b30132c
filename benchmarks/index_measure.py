"""Real speed-ups for index_bench.py --measure: each arm's indexes built for real, the queries timed.

For every arm (no secondary index, the reference sets, each advisor run) the arm's indexes are
created with plain ``CREATE INDEX`` (build seconds and ``pg_relation_size`` recorded), the arm's
tables vacuumed so the visibility map is complete and index-only scans run as they are priced,
every query run ``runs`` times under ``statement_timeout`` (the median wall time kept; a timeout
counts as the timeout and is marked), then the indexes dropped before the next arm. The tables are
not ANALYZEd between arms: a new sample would move the plans for reasons other than the indexes
(the loader's ANALYZE is the one every arm shares; plain indexes add no statistics).

Warm-up: no unmeasured run. The data and each arm's indexes fit in the OS cache (the load and
the builds leave them there), every arm is measured the same way, and the median of three
drops a first run that was colder. A query whose first run times out is not run again in that
arm: its median is the timeout.

How well planner cost predicted runtime: Spearman's rank correlation, per query across the arms,
and over all (query, arm) pairs. ``spearman`` is the exact formula with average ranks for ties
(scipy is not a dependency of the project; tests/test_index_measure.py checks it).
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from advisor.db.rows import one_row

INDEX_PREFIX = "bench_measure_"


# --- rank correlation --------------------------------------------------------------------------


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties given the average of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rho (Pearson's r of the ranks); None when either side is constant or too short."""
    if len(xs) != len(ys) or len(xs) < 2:
        return None
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / (sxx * syy) ** 0.5 if sxx and syy else None


# --- one arm ----------------------------------------------------------------------------------


@dataclass
class Arm:
    name: str
    definitions: list[str]  # "CREATE INDEX ON t (…)" texts, as costed with HypoPG
    costs: list[float]  # the planner's (HypoPG) cost per query, from the costed part of the run


def named(definition: str, i: int) -> tuple[str, str, str]:
    """(index name, table, DDL naming it) for a ``CREATE INDEX ON table …`` text."""
    m = re.match(r"CREATE INDEX\s+ON\s+(\S+)", definition, flags=re.I)
    if not m:
        raise ValueError(f"not a CREATE INDEX ON … text: {definition}")
    name = f"{INDEX_PREFIX}{i}"
    return name, m.group(1), f"CREATE INDEX {name} ON " + definition[m.end(0) - len(m.group(1)):]


def drop_leftovers(conn: psycopg.Connection) -> None:
    """Indexes an interrupted run left behind (the database is the benchmark's own)."""
    for (name,) in conn.execute("SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_class c "
                                "ON c.oid = i.indexrelid WHERE c.relname LIKE %s", (INDEX_PREFIX + "%",)).fetchall():
        conn.execute(f"DROP INDEX IF EXISTS {name}")


def build(conn: psycopg.Connection, definitions: list[str]) -> dict:
    """Create the indexes for real, then VACUUM their tables; names, seconds and bytes of each."""
    built: list[dict[str, Any]] = []
    failed, tables = [], set()
    for i, definition in enumerate(definitions):
        name, table, ddl = named(definition, i)
        t0 = time.perf_counter()
        try:
            conn.execute(ddl)
        except psycopg.Error as e:
            failed.append({"index": definition, "error": str(e).strip().splitlines()[0]})
            continue
        seconds = time.perf_counter() - t0
        size = one_row(conn.execute("SELECT pg_relation_size(%s::regclass)", (name,)))[0]
        built.append({"name": name, "definition": definition, "seconds": round(seconds, 3), "bytes": int(size)})
        tables.add(table)
    t0 = time.perf_counter()
    if tables:
        conn.execute(f"VACUUM {', '.join(sorted(tables))}")
    return {"indexes": built, "failed": failed, "build_seconds": round(sum(b["seconds"] for b in built), 3),
            "vacuum_seconds": round(time.perf_counter() - t0, 3), "bytes": sum(b["bytes"] for b in built)}


def drop(conn: psycopg.Connection, built: dict) -> None:
    for b in built["indexes"]:
        conn.execute(f"DROP INDEX IF EXISTS {b['name']}")


def run_once(conn: psycopg.Connection, sql: str) -> tuple[float, str | None]:
    """Wall seconds of one execution with every row fetched, and what stopped it ("timeout", an error).

    Each statement runs in a transaction rolled back after it: a workload's writes (the OLTP shop's
    INSERT, UPDATE, DELETE) are timed with their index upkeep and leave the data as every arm finds it.
    BEGIN and ROLLBACK are outside the timed span."""
    stopped = None
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        t0 = time.perf_counter()
        try:
            cur.execute(sql)
            if cur.description is not None:
                cur.fetchall()
        except psycopg.errors.QueryCanceled:
            stopped = "timeout"
        except psycopg.Error as e:
            stopped = str(e).strip().splitlines()[0]
        seconds = time.perf_counter() - t0
    return seconds, stopped


def time_queries(conn: psycopg.Connection, sqls: list[str], runs: int, timeout_s: float, log) -> list[dict]:
    """Median wall seconds per query over ``runs`` (the timeout itself when one ran out)."""
    conn.execute(f"SET statement_timeout = '{int(timeout_s * 1000)}ms'")
    out = []
    for i, sql in enumerate(sqls):
        times, stopped = [], None
        for _ in range(runs):
            seconds, stopped = run_once(conn, sql)
            times.append(timeout_s if stopped == "timeout" else seconds)
            if stopped is not None:
                break  # it would stop again: a timeout's median is the timeout
        timed_out = stopped == "timeout"
        out.append({"seconds": round(timeout_s if timed_out else statistics.median(times), 4),
                    "runs": [round(t, 4) for t in times], "timeout": timed_out,
                    "error": None if timed_out else stopped})
        log(f"      query {i + 1}/{len(sqls)}: {out[-1]['seconds']:.2f} s" + (f" ({stopped})" if stopped else ""))
    conn.execute("RESET statement_timeout")
    return out


def real_costs(conn: psycopg.Connection, sqls: list[str]) -> list[float]:
    """The planner's cost with the real indexes: does HypoPG's estimate hold once they exist?"""
    out = []
    for sql in sqls:
        plan = one_row(conn.execute("EXPLAIN (FORMAT JSON) " + sql))[0]
        out.append(float(plan[0]["Plan"]["Total Cost"]))
    return out


def measure_arm(dsn: str, arm: Arm, sqls: list[str], runs: int, timeout_s: float, log) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")  # as the loader builds the primary keys
        drop_leftovers(conn)
        built = build(conn, arm.definitions)
        log(f"    {arm.name}: {len(built['indexes'])} indexes built in {built['build_seconds']:.1f} s, "
            f"{built['bytes'] / 1e6:.0f} MB")
        try:
            costs = real_costs(conn, sqls)
            load_before = os.getloadavg()[0]
            timed = time_queries(conn, sqls, runs, timeout_s, log)
            load = (load_before + os.getloadavg()[0]) / 2  # the machine is shared: how busy it was meanwhile
        finally:
            drop(conn, built)
    return {"arm": arm.name, **built, "real_costs": costs, "queries": timed, "load_average": round(load, 2)}


# --- all arms -----------------------------------------------------------------------------------


def measure(dsn: str, arms: list[Arm], sqls: list[str], runs: int, timeout_s: float, log) -> dict:
    """Every arm measured in turn; an arm whose index set equals an earlier one's reuses its timings."""
    results: list[dict] = []
    seen: dict[frozenset[str], dict] = {}
    for arm in arms:
        key = frozenset(d.lower() for d in arm.definitions)
        if key in seen:
            results.append({**seen[key], "arm": arm.name, "same_as": seen[key]["arm"]})
            log(f"    {arm.name}: the same indexes as {seen[key]['arm']}, not measured again")
            continue
        log(f"  measuring {arm.name} ({len(arm.definitions)} indexes)")
        seen[key] = measure_arm(dsn, arm, sqls, runs, timeout_s, log)
        results.append(seen[key])
    return {"runs": runs, "timeout_seconds": timeout_s, "arms": results, **correlations(arms, results)}


def correlations(arms: list[Arm], results: list[dict]) -> dict:
    """Spearman's rho between planner cost and runtime: per query across the arms; over all (query, arm)
    pairs, which mostly ranks the queries by size; and over the pairs' ratios to the first arm (no
    index), which asks whether the predicted speed-ups rank as the measured ones."""
    n = len(arms[0].costs) if arms else 0
    seconds = [[r["queries"][q]["seconds"] for q in range(n)] for r in results]
    per_query = [spearman([a.costs[q] for a in arms], [s[q] for s in seconds]) for q in range(n)]
    pairs = [(a.costs[q], s[q]) for a, s in zip(arms, seconds) for q in range(n)]
    real = [(c, s[q]) for r, s in zip(results, seconds) for q, c in enumerate(r["real_costs"])]
    ratios = [(a.costs[q] / arms[0].costs[q], s[q] / seconds[0][q]) for a, s in zip(arms[1:], seconds[1:])
              for q in range(n) if arms[0].costs[q] and seconds[0][q]]
    return {"spearman_per_query": per_query, "spearman_all": spearman(*_columns(pairs)),
            "spearman_all_real_costs": spearman(*_columns(real)), "spearman_ratios": spearman(*_columns(ratios))}


def _columns(pairs: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [x for x, _ in pairs], [y for _, y in pairs]
