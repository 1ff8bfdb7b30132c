"""Index-advisor benchmark: `advise()` on the 22 TPC-H queries, judged by the planner's costs.

    .venv/bin/python benchmarks/index_bench.py [--sf 0.1] [--budgets 250,500,680,1000]
        [--max-indexes 5,10] [--scale-budgets] [--keep] [--dsn DSN] [--workdir bench-out]

Builds TPC-H at scale factor --sf with DuckDB's generator (benchmarks/tpch.py; the pinned
duckdb + duckdb-ext-tpch wheels are pip-installed into this interpreter if missing) in a
throwaway PostgreSQL (advisor.db.embedded) or the database at --dsn, primary keys only.
Then, all costs being the root "Total Cost" of EXPLAIN (FORMAT JSON) with HypoPG
hypothetical indexes in one session:

- baseline: each query with no secondary index;
- two reference index sets: one single-column index per predicate column, and one index
  per foreign key (TPC-H's spec FKs);
- the advisor: `advisor.indexes.selection.advise()` for each budget (and each index-count
  limit), once on the 22 queries and once on the 21 without Q20 (whose cost is 99.7 % of
  the total, so advice for all 22 is advice for Q20; the targets are judged on the
  second); its recommended indexes are re-created here as hypothetical indexes and the
  22 queries costed again, so every arm is measured the same way in the same run.

The same figures for the `advisor demo` fixture workload follow. Results go to stdout
and <workdir>/index_bench-sf<SF>.json. Targets are printed, not asserted; the exit status
is 1 only when the data or the queries fail. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tpch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MB = 1_000_000  # budgets and sizes in MB of 10^6 bytes, as the CLI's --budget-mb
NO_Q20 = 20

# The targets at SF 1 (printed, not asserted): relative cost without Q20 within a budget, and runtime.
TARGETS = ({"budget_mb": 1000, "rel_no_q20": 0.42}, {"budget_mb": 680, "rel_no_q20": 0.46})
TARGET_SECONDS = 10.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Timer:
    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Phase:
            def __enter__(self):
                log(f"[{name}] …")
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.phases[name] = round(time.perf_counter() - self.t0, 3)
                if exc[0] is None:
                    log(f"[{name}] {timer.phases[name]:.1f} s")

        return _Phase()


# --- one workload: queries with weights ------------------------------------------------------


@dataclass
class Workload:
    name: str
    labels: list[str]  # "Q1".."Q22", or a short text per demo statement
    sqls: list[str]
    weights: list[float]
    excluded: str | None = None  # the label left out of the second relative cost ("Q20")
    fk_columns: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (table, columns)

    def total(self, costs: list[float], skip: str | None = None) -> float:
        return sum(w * c for lab, w, c in zip(self.labels, self.weights, costs) if lab != skip)


def tpch_workload() -> Workload:
    queries = tpch.read_queries()
    fks = [(t, cols) for t, sets in tpch.FOREIGN_KEYS.items() for cols in sets]
    return Workload("tpch", [f"Q{n}" for n, _ in queries], [q for _, q in queries], [1.0] * len(queries),
                    excluded=f"Q{NO_Q20}", fk_columns=fks)


# --- planner costs with hypothetical indexes ---------------------------------------------------------


def explain_cost(conn: psycopg.Connection, sql: str) -> float:
    plan = conn.execute("EXPLAIN (FORMAT JSON) " + sql).fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return float(plan[0]["Plan"]["Total Cost"])


def cost_all(conn: psycopg.Connection, wl: Workload) -> list[float]:
    return [explain_cost(conn, q) for q in wl.sqls]


def hypo_cost(dsn: str, wl: Workload, definitions: list[str]) -> dict:
    """Create ``CREATE INDEX ON …`` texts as HypoPG indexes in one session, cost every query, reset."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT hypopg_reset()")
        sizes, failed = [], []
        for d in definitions:
            try:
                oid = conn.execute("SELECT indexrelid FROM hypopg_create_index(%s)", (d,)).fetchone()[0]
                sizes.append(int(conn.execute("SELECT hypopg_relation_size(%s)", (oid,)).fetchone()[0]))
            except psycopg.Error as e:
                failed.append({"index": d, "error": str(e).strip().splitlines()[0]})
                sizes.append(0)
        t0 = time.perf_counter()
        costs = cost_all(conn, wl)
        seconds = time.perf_counter() - t0
        conn.execute("SELECT hypopg_reset()")
    return {"indexes": definitions, "hypopg_sizes": sizes, "hypopg_size_bytes": sum(sizes), "costs": costs,
            "failed": failed, "explain_seconds": round(seconds, 3)}


def summarize(wl: Workload, base: list[float], costs: list[float]) -> dict:
    out = {"rel_all": wl.total(costs) / wl.total(base)}
    if wl.excluded:
        out["rel_no_" + wl.excluded.lower()] = wl.total(costs, wl.excluded) / wl.total(base, wl.excluded)
    return out


# --- the reference sets ----------------------------------------------------------------------------


def existing_leading(conn: psycopg.Connection) -> set[tuple[str, str]]:
    """(table, column) pairs that already lead an index (primary keys here)."""
    rows = conn.execute(
        "SELECT c.relname, a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'").fetchall()
    return {(t, c) for t, c in rows}


def column_tables(conn: psycopg.Connection) -> dict[str, set[str]]:
    rows = conn.execute("SELECT table_name, column_name FROM information_schema.columns "
                        "WHERE table_schema = 'public'").fetchall()
    out: dict[str, set[str]] = {}
    for t, c in rows:
        out.setdefault(c, set()).add(t)
    return out


def predicate_columns(sqls: list[str], col_tables: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every (table, column) that appears in a WHERE or JOIN … ON clause of the queries."""
    import sqlglot
    from sqlglot import exp

    found: dict[tuple[str, str], None] = {}
    for sql in sqls:
        tree = sqlglot.parse_one(sql, read="postgres")
        tables = {t.alias_or_name: t.name for t in tree.find_all(exp.Table)}
        for clause in [*tree.find_all(exp.Where), *(j.args["on"] for j in tree.find_all(exp.Join) if j.args.get("on"))]:
            for col in clause.find_all(exp.Column):
                if col.table and col.table in tables:
                    candidates = {tables[col.table]}
                else:
                    candidates = col_tables.get(col.name, set()) & set(tables.values())
                for t in sorted(candidates)[:1]:
                    found[(t, col.name)] = None
    return list(found)


def reference_sets(dsn: str, wl: Workload) -> dict[str, list[str]]:
    with psycopg.connect(dsn) as conn:
        leading = existing_leading(conn)
        col_tables = column_tables(conn)
        declared = conn.execute(
            "SELECT c.conrelid::regclass::text, array_agg(a.attname ORDER BY k.ord) FROM pg_constraint c "
            "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
            "WHERE c.contype = 'f' GROUP BY c.oid, c.conrelid").fetchall()
    preds = [(t, c) for t, c in predicate_columns(wl.sqls, col_tables) if (t, c) not in leading]
    fks = wl.fk_columns or [(t, tuple(cols)) for t, cols in declared]
    fks = [(t, cols) for t, cols in fks if not (len(cols) == 1 and (t, cols[0]) in leading)]
    return {
        "pred-cols": [f"CREATE INDEX ON {t} ({c})" for t, c in preds],
        "fk-cols": [f"CREATE INDEX ON {t} ({', '.join(cols)})" for t, cols in fks],
    }


REFERENCE_TITLES = {"pred-cols": "pred-cols: 1 index per predicate col", "fk-cols": "fk-cols: 1 index per foreign key"}


# --- the advisor arm -------------------------------------------------------------------------------


def load_advise():
    try:
        from advisor.indexes.model import AdvisedQuery
        from advisor.indexes.selection import advise
    except Exception as e:
        return None, None, f"{type(e).__name__}: {e}"
    return advise, AdvisedQuery, None


def candidate_definition(rec) -> str:
    """``CREATE INDEX ON …`` for HypoPG from a recommendation (no CONCURRENTLY, no name)."""
    cand = rec.candidate
    if hasattr(cand, "definition"):
        return "CREATE INDEX " + cand.definition()
    return re.sub(r"^CREATE INDEX (CONCURRENTLY )?(IF NOT EXISTS )?(\S+ )?(?=ON )", "CREATE INDEX ", cand.ddl().rstrip(";"))


def run_advisor(dsn: str, wl: Workload, base: list[float], budget_mb: float | None, max_indexes: int | None,
                max_width: int, verbose: bool, without: str | None = None) -> dict:
    """One advice run on the workload (less the query labelled ``without``), costed on all of it."""
    advise, AdvisedQuery, err = load_advise()
    run: dict = {"budget_mb": budget_mb, "max_indexes": max_indexes, "max_width": max_width, "without": without}
    if advise is None:
        return {**run, "error": f"advisor not importable: {err}"}
    from advisor.workload.fingerprint import fingerprint

    queries = []
    for label, sql, w in zip(wl.labels, wl.sqls, wl.weights):
        if label == without:
            continue
        fp = fingerprint(sql)
        queries.append(AdvisedQuery(fp.id, sql, None, w, fp.normalized))
    step = (lambda s: log(f"    advisor: {s}")) if verbose else (lambda _: None)
    t0 = time.perf_counter()
    try:
        advice = advise(dsn, queries, max_indexes=max_indexes,
                        budget_bytes=int(budget_mb * MB) if budget_mb is not None else None,
                        max_width=max_width, step=step)
    except Exception as e:
        return {**run, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                "wall_seconds": round(time.perf_counter() - t0, 3)}
    wall = time.perf_counter() - t0
    recs = list(advice.recommendations)
    definitions = [candidate_definition(r) for r in recs]
    measured = hypo_cost(dsn, wl, definitions)
    run.update(
        indexes=len(recs),
        recommendations=[{"ddl": r.candidate.ddl(), "estimated_size_bytes": r.estimated_size_bytes,
                          "helps": len(getattr(r, "queries", ()) or ())} for r in recs],
        estimated_size_bytes=sum(r.estimated_size_bytes for r in recs),
        hypopg_size_bytes=measured["hypopg_size_bytes"],
        costs=measured["costs"], failed=measured["failed"],
        advisor_cost_before=advice.workload_cost_before, advisor_cost_after=advice.workload_cost_after,
        whatif_calls=advice.whatif_calls, seconds=round(advice.seconds, 3), wall_seconds=round(wall, 3),
        **summarize(wl, base, measured["costs"]),
    )
    return run


# --- the demo workload -----------------------------------------------------------------------------


class _Recorder:
    """Stands in for the connection the demo's page functions use: records each statement with its literals."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.client = psycopg.ClientCursor(conn)
        self.statements: list[str] = []

    def execute(self, query, params=None):
        self.statements.append(self.client.mogrify(query, params) if params else query)
        return self.conn.execute(query, params)


def demo_workload(dsn: str) -> Workload:
    """Load the demo fixture and replay its pages once through a recorder: its statements, weighted by calls."""
    from advisor import demo
    from advisor.workload.fingerprint import fingerprint

    scale = demo.Scale()
    demo.load_fixture(dsn, scale)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")
        rec = _Recorder(conn)
        rng = random.Random(7)  # as demo.replay()
        for request in range(scale.requests):
            demo.PAGES[request % len(demo.PAGES)](rec, rng, scale)
        conn.execute("ANALYZE")
    first: dict[str, str] = {}
    calls: Counter = Counter()
    for sql in rec.statements:
        fp = fingerprint(sql).id
        first.setdefault(fp, sql)
        calls[fp] += 1
    sqls = list(first.values())
    labels = [re.sub(r"\s+", " ", s)[:48] for s in sqls]
    return Workload("demo", labels, sqls, [float(calls[fp]) for fp in first])


# --- running one workload --------------------------------------------------------------------------


def bench_workload(dsn: str, wl: Workload, runs: list[tuple[float | None, int | None]], args, timer: Timer) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
        conn.execute("SELECT hypopg_reset()")
        with timer(f"{wl.name}: baseline costs"):
            base = cost_all(conn, wl)
    result: dict = {"queries": wl.labels, "weights": wl.weights, "baseline": base,
                    "baseline_total": wl.total(base), "references": {}, "advisor": []}
    if wl.excluded:
        result["baseline_total_no_" + wl.excluded.lower()] = wl.total(base, wl.excluded)
    with timer(f"{wl.name}: reference sets"):
        for name, definitions in reference_sets(dsn, wl).items():
            m = hypo_cost(dsn, wl, definitions)
            result["references"][name] = {**m, "count": len(definitions), **summarize(wl, base, m["costs"])}
    if not args.no_advisor and load_advise()[0] is not None:
        # With the excluded query (Q20: 99.7 % of TPC-H's cost) in the workload, any cost-minimising
        # advisor spends its budget on it; the "without" figure is the advice for the workload without it.
        for without in (None, wl.excluded) if wl.excluded else (None,):
            for budget_mb, max_indexes in runs:
                label = f"budget {budget_mb:g} MB" if budget_mb is not None else f"max {max_indexes} indexes"
                label += f", workload without {without}" if without else ""
                with timer(f"{wl.name}: advisor, {label}"):
                    result["advisor"].append(run_advisor(dsn, wl, base, budget_mb, max_indexes, args.max_width,
                                                         args.verbose, without))
    return result


# --- printing ----------------------------------------------------------------------------------------


def _fmt(v, spec: str, missing: str = "-") -> str:
    return missing if v is None else format(v, spec)


def print_summary(title: str, wl: Workload, res: dict) -> None:
    nq = f"rel no {wl.excluded}" if wl.excluded else ""
    key = f"rel_no_{wl.excluded.lower()}" if wl.excluded else None
    print(f"\n## {title}")
    print(f"baseline (primary keys only): total cost {res['baseline_total']:,.0f}"
          + (f", without {wl.excluded} {res[f'baseline_total_no_{wl.excluded.lower()}']:,.0f}" if wl.excluded else ""))
    header = f"{'arm':<37} {'budget MB':>9} {'#idx':>5} {'est MB':>8} {'hypo MB':>8} {'rel all':>8} {nq:>10} {'what-if':>8} {'secs':>7}"
    print(header)
    print("-" * len(header))
    for name, r in res["references"].items():
        print(f"{REFERENCE_TITLES.get(name, name):<37} {'-':>9} {r['count']:>5} {'-':>8} {r['hypopg_size_bytes'] / MB:>8.1f} {r['rel_all']:>8.3f} "
              f"{_fmt(r.get(key), '.3f', '') if key else '':>10} {'-':>8} {'-':>7}")
    for r in res["advisor"]:
        arm = "advisor" + (f", without {r['without']}" if r.get("without") else (", all queries" if wl.excluded else ""))
        arm += f" (max {r['max_indexes']} idx)" if r.get("max_indexes") is not None else ""
        budget = _fmt(r.get("budget_mb"), ".0f")
        if "error" in r:
            print(f"{arm:<37} {budget:>9}  ERROR {r['error'][:120]}")
            continue
        print(f"{arm:<37} {budget:>9} {r['indexes']:>5} {r['estimated_size_bytes'] / MB:>8.1f} {r['hypopg_size_bytes'] / MB:>8.1f} "
              f"{r['rel_all']:>8.3f} {_fmt(r.get(key), '.3f', '') if key else '':>10} {r['whatif_calls']:>8} {r['seconds']:>7.2f}")


def print_per_query(wl: Workload, res: dict) -> None:
    """Each query's cost relative to its baseline, per arm: where the indexes help and where they do not."""
    arms = [(name[:11], r["costs"]) for name, r in res["references"].items()]
    for r in res["advisor"]:
        if "costs" in r:
            label = f"adv {r['budget_mb']:g}MB" if r.get("budget_mb") is not None else f"adv {r['max_indexes']}idx"
            if r.get("without"):
                label = label.replace("adv ", "") + "-" + r["without"]
            arms.append((label, r["costs"]))
    width = max(len(lab) for lab in wl.labels) if wl.name == "tpch" else 48
    print(f"\n{wl.name}: cost per query relative to the baseline (1.000 = no help)")
    print(f"{'query':<{width}} {'weight':>6} {'baseline':>12} " + " ".join(f"{a:>11}" for a, _ in arms))
    for i, lab in enumerate(wl.labels):
        cells = " ".join(f"{c[i] / res['baseline'][i]:>11.3f}" for _, c in arms)
        print(f"{lab:<{width}} {wl.weights[i]:>6g} {res['baseline'][i]:>12,.0f} {cells}")


def print_recommendations(res: dict) -> None:
    for r in res["advisor"]:
        if not r.get("recommendations"):
            continue
        label = f"budget {r['budget_mb']:g} MB" if r.get("budget_mb") is not None else f"max {r['max_indexes']} indexes"
        label += f", workload without {r['without']}" if r.get("without") else ""
        own = r["advisor_cost_after"] / r["advisor_cost_before"] if r.get("advisor_cost_before") else float("nan")
        print(f"\nrecommended at {label} (the advisor's own workload cost: {r['advisor_cost_before']:,.0f} → "
              f"{r['advisor_cost_after']:,.0f}, {own:.3f}):")
        for rec in r["recommendations"]:
            print(f"  {rec['estimated_size_bytes'] / MB:8.1f} MB  {rec['ddl']}")
        for f in r.get("failed", []):
            print(f"  (HypoPG refused {f['index']}: {f['error']})")


def verdicts(res: dict, sf: float, scaled: bool) -> list[dict]:
    out = []
    by_budget = {r["budget_nominal_mb"]: r for r in res["advisor"]
                 if "rel_no_q20" in r and r.get("max_indexes") is None and r.get("without") == "Q20"}
    for t in TARGETS:
        r = by_budget.get(t["budget_mb"])
        v = {**t, "seconds": TARGET_SECONDS, "applies": sf == 1 or scaled}
        if r is not None:
            v.update(measured=round(r["rel_no_q20"], 4), seconds_measured=r["seconds"],
                     met=r["rel_no_q20"] <= t["rel_no_q20"] and r["seconds"] <= TARGET_SECONDS)
        out.append(v)
    return out


def print_verdicts(vs: list[dict], sf: float, scaled: bool) -> None:
    print("\ntargets (at SF 1): relative cost without Q20 ≤ 0.42 within 1000 MB, ≤ 0.46 within 680 MB, each in < 10 s"
          "\n  (measured on the advice for the 21 queries without Q20)")
    if sf != 1:
        note = (f"budgets scaled by SF {sf:g}: indicative only" if scaled
                else f"this run is SF {sf:g} with absolute budgets: not comparable (use --scale-budgets, or --sf 1)")
        print(f"  ({note})")
    for v in vs:
        if "measured" not in v:
            print(f"  {v['budget_mb']} MB: not measured")
            continue
        mark = "met" if v["met"] else "MISSED"
        print(f"  {v['budget_mb']} MB: {v['measured']:.3f} (target {v['rel_no_q20']}) in {v['seconds_measured']:.1f} s → {mark}")


# --- main ------------------------------------------------------------------------------------------------


def advisor_source() -> dict:
    """Which advisor code produced the figures: the commit, uncommitted changes, a hash of advisor/indexes."""
    import hashlib
    import subprocess

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    digest = hashlib.sha256()
    for f in sorted((REPO / "advisor" / "indexes").glob("*.py")):
        digest.update(f.name.encode() + f.read_bytes())
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted": [line[3:] for line in git("status", "--porcelain", "--", "advisor").splitlines()],
            "advisor_indexes_sha256": digest.hexdigest()[:16]}


def parse_list(text: str, kind=float) -> list:
    return [kind(x) for x in text.split(",") if x.strip()] if text else []


def load_tpch(dsn: str, sf: float, args, timer: Timer) -> dict:
    marker = f"tpch sf={sf:g}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT obj_description(to_regclass('lineitem'), 'pg_class') "
                           "WHERE to_regclass('lineitem') IS NOT NULL").fetchone()
    if row and row[0] == marker and not args.reload:
        log(f"reusing the TPC-H data already in the database ({marker}); --reload to load again")
        return {}
    cache = Path(args.workdir) / f"tpch-sf{sf:g}" if args.keep else None
    with tempfile.TemporaryDirectory(prefix="tpch-") as tmp:
        workdir = cache or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        log(f"loading TPC-H SF {sf:g} (drops and recreates the eight TPC-H tables)")
        timings = tpch.load(dsn, sf, workdir, keep_csv=args.keep)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"COMMENT ON TABLE lineitem IS '{marker}'")
    for phase, secs in timings.items():
        timer.phases[f"tpch: {phase}"] = round(secs, 3)
        log(f"[tpch: {phase}] {secs:.1f} s")
    return timings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sf", type=float, default=0.1, help="TPC-H scale factor (0.1 default; 1 ≈ 1 GB)")
    ap.add_argument("--budgets", default="250,500,680,1000", help="index size budgets in MB (10^6 bytes), comma-separated")
    ap.add_argument("--scale-budgets", action="store_true", help="multiply the budgets by --sf (SF 0.1: 25,50,68,100 MB)")
    ap.add_argument("--max-indexes", default="", help="index-count limits, comma-separated: one advisor run each, no size budget")
    ap.add_argument("--max-width", type=int, default=3, help="advise(max_width=…)")
    ap.add_argument("--dsn", help="use this database instead of a throwaway cluster (TPC-H tables are dropped and reloaded)")
    ap.add_argument("--keep", action="store_true", help="keep the generated CSV files in the workdir and reuse them next time")
    ap.add_argument("--reload", action="store_true", help="with --dsn: load again even if the data is there")
    ap.add_argument("--workdir", default=str(REPO / "bench-out"), help="results (and --keep data) go here")
    ap.add_argument("--no-demo", action="store_true", help="skip the demo fixture workload")
    ap.add_argument("--no-advisor", action="store_true", help="data, baseline and reference sets only")
    ap.add_argument("--verbose", action="store_true", help="show the advisor's progress steps")
    args = ap.parse_args()

    sf = args.sf
    factor = sf if args.scale_budgets else 1.0
    budgets = parse_list(args.budgets)
    runs: list[tuple[float | None, int | None]] = [(b * factor, None) for b in budgets]
    runs += [(None, k) for k in parse_list(args.max_indexes, int)]
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    timer = Timer()
    started = time.perf_counter()
    _, _, advise_err = load_advise()
    if advise_err and not args.no_advisor:
        log(f"the advisor arm cannot run ({advise_err}): data, baseline and reference sets only")

    cluster = None
    try:
        if args.dsn:
            dsn = args.dsn
        else:
            from advisor.db.embedded import EmbeddedCluster

            with timer("start cluster"):
                cluster = EmbeddedCluster().start()
                if not cluster.has_hypopg:
                    raise SystemExit("HypoPG is not installed for this PostgreSQL: apt-get install postgresql-15-hypopg")
                dsn = cluster.create_database("tpch")
        load_tpch(dsn, sf, args, timer)
        with psycopg.connect(dsn, autocommit=True) as conn:
            server = conn.execute("SHOW server_version").fetchone()[0]
            conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
            hypopg = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'hypopg'").fetchone()[0]
        sizes = tpch.table_sizes(dsn)

        wl = tpch_workload()
        res = bench_workload(dsn, wl, runs, args, timer)
        for r in res["advisor"]:
            r["budget_nominal_mb"] = r["budget_mb"] / factor if r.get("budget_mb") is not None else None
        total_mb = sum(s["table_bytes"] + s["index_bytes"] for s in sizes.values()) / MB
        visible = min(s["all_visible"] for s in sizes.values())
        title = (f"TPC-H SF {sf:g} ({total_mb:,.0f} MB of tables and primary keys, "
                 f"{visible:.0%} of pages all-visible or more), 22 queries")
        src = advisor_source()
        print(f"advisor code: commit {src['commit'] or '?'}"
              + (f" + {len(src['uncommitted'])} uncommitted file(s)" if src["uncommitted"] else "")
              + f", advisor/indexes sha256 {src['advisor_indexes_sha256']}")
        print_summary(title, wl, res)
        if advise_err and not args.no_advisor:
            print(f"advisor: not run ({advise_err})")
        print_per_query(wl, res)
        print_recommendations(res)
        vs = verdicts(res, sf, args.scale_budgets)
        print_verdicts(vs, sf, args.scale_budgets)

        demo_res = None
        if not args.no_demo:
            demo_dsn = cluster.create_database("advisor_demo") if cluster else None
            if demo_dsn is None:
                log("--dsn given: the demo workload needs a database of its own; skipped (run without --dsn)")
            else:
                with timer("demo: load fixture and record workload"):
                    dwl = demo_workload(demo_dsn)
                # Budgets are not scaled for the demo: --scale-budgets is about TPC-H's scale factor.
                demo_runs = [(b, None) for b in budgets] + [r for r in runs if r[0] is None]
                demo_res = bench_workload(demo_dsn, dwl, demo_runs, args, timer)
                print_summary(f"demo fixture workload: {len(dwl.sqls)} statements, {sum(dwl.weights):g} executions "
                              f"(relative costs weighted by executions)", dwl, demo_res)
                print_per_query(dwl, demo_res)
                print_recommendations(demo_res)
                demo_res["statements"] = dwl.sqls
    finally:
        if cluster is not None:
            cluster.stop()

    print("\nphases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timer.phases.items()))
    out = Path(args.workdir) / f"index_bench-sf{sf:g}.json"
    doc = {
        "benchmark": "index_bench", "version": 1, "sf": sf, "scaled_budgets": args.scale_budgets,
        "budgets_mb": budgets, "runs": [list(r) for r in runs], "max_width": args.max_width,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": __import__("os").cpu_count()},
        "versions": {"postgresql": server, "hypopg": hypopg, "duckdb": tpch.DUCKDB_VERSION, "duckdb_ext_tpch": tpch.TPCH_EXT_VERSION},
        "advisor_source": src, "tables": sizes, "phases_seconds": timer.phases, "total_seconds": round(time.perf_counter() - started, 1),
        "tpch": res, "targets": vs, "demo": demo_res,
        "advisor_unavailable": None if args.no_advisor else advise_err,
    }
    out.write_text(json.dumps(doc, indent=1, default=str))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
