"""TPC-DS for PostgreSQL: data from DuckDB's generator (offline, from PyPI), the 99 queries.

The second analytical workload of the index benchmark, beside TPC-H: 24 tables (7 fact tables,
17 dimensions), 99 queries. Everything but the schema and the queries is ``benchmarks/tpch.py``'s:
the ``duckdb-ext-tpcds`` wheel's extension loaded by path with auto-install off, ``CALL
dsdgen(sf=…)`` in an in-memory DuckDB, CSV slices streamed with ``COPY … FROM STDIN`` on
parallel connections, primary keys only, then ``VACUUM ANALYZE`` to all-visible (see tpch.py's
docstring for why that matters).

The schema is the generator's own (``CALL dsdgen(sf=0)`` makes the 24 empty tables; their
columns, in order, with DuckDB's types mapped to PostgreSQL's): DuckDB keeps no string widths,
so the spec's ``char(n)`` and ``varchar(n)`` are ``varchar`` here (no blank padding), and its
``BIGINT`` identifiers and counts are ``integer`` as in the spec. Primary keys as the spec's
(the fact tables' composite ones: item and ticket or order number), no foreign keys.

Usable alone: ``python benchmarks/tpcds.py --sf 1 --dsn postgresql://…/tpcds`` loads a
database; ``--queries --dsn …`` writes the PostgreSQL query texts (benchmarks/tpcds_queries.sql)
checked against that (loaded) database: see ``benchmarks/tpcds_translate.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tpch

DUCKDB_VERSION = tpch.DUCKDB_VERSION
TPCDS_EXT_VERSION = "1.4.4.20260205"
QUERIES_FILE = Path(__file__).resolve().parent / "tpcds_queries.sql"

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "call_center": ("cc_call_center_sk",),
    "catalog_page": ("cp_catalog_page_sk",),
    "catalog_returns": ("cr_item_sk", "cr_order_number"),
    "catalog_sales": ("cs_item_sk", "cs_order_number"),
    "customer": ("c_customer_sk",),
    "customer_address": ("ca_address_sk",),
    "customer_demographics": ("cd_demo_sk",),
    "date_dim": ("d_date_sk",),
    "household_demographics": ("hd_demo_sk",),
    "income_band": ("ib_income_band_sk",),
    "inventory": ("inv_date_sk", "inv_item_sk", "inv_warehouse_sk"),
    "item": ("i_item_sk",),
    "promotion": ("p_promo_sk",),
    "reason": ("r_reason_sk",),
    "ship_mode": ("sm_ship_mode_sk",),
    "store": ("s_store_sk",),
    "store_returns": ("sr_item_sk", "sr_ticket_number"),
    "store_sales": ("ss_item_sk", "ss_ticket_number"),
    "time_dim": ("t_time_sk",),
    "warehouse": ("w_warehouse_sk",),
    "web_page": ("wp_web_page_sk",),
    "web_returns": ("wr_item_sk", "wr_order_number"),
    "web_sales": ("ws_item_sk", "ws_order_number"),
    "web_site": ("web_site_sk",),
}
TABLES = list(PRIMARY_KEYS)

# Written in slices by the leading (never null) key column; tables under 400k rows stay whole.
SLICED = {t: PRIMARY_KEYS[t][0] for t in (
    "store_sales", "catalog_sales", "web_sales", "inventory", "store_returns", "catalog_returns",
    "web_returns", "customer", "customer_address", "customer_demographics")}


def _fk(*columns: str) -> list[tuple[str, ...]]:
    return [(c,) for c in columns]


# The spec's foreign keys, as the TPC-DS kit's tools/tpcds_ri.sql declares them, with its two
# columns no table has (cp_promo_id; cr_ship_date_sk, where cr_returned_date_sk is meant and
# declared too) left out and the spec's wp_customer_sk added. All single-column; the returns'
# (item, ticket or order number) references to their sale are their own primary keys.
FOREIGN_KEYS: dict[str, list[tuple[str, ...]]] = {
    "call_center": _fk("cc_closed_date_sk", "cc_open_date_sk"),
    "catalog_page": _fk("cp_start_date_sk", "cp_end_date_sk"),
    "catalog_returns": _fk(
        "cr_returned_date_sk", "cr_returned_time_sk", "cr_item_sk", "cr_refunded_customer_sk",
        "cr_refunded_cdemo_sk", "cr_refunded_hdemo_sk", "cr_refunded_addr_sk", "cr_returning_customer_sk",
        "cr_returning_cdemo_sk", "cr_returning_hdemo_sk", "cr_returning_addr_sk", "cr_call_center_sk",
        "cr_catalog_page_sk", "cr_ship_mode_sk", "cr_warehouse_sk", "cr_reason_sk"),
    "catalog_sales": _fk(
        "cs_sold_date_sk", "cs_sold_time_sk", "cs_ship_date_sk", "cs_bill_customer_sk", "cs_bill_cdemo_sk",
        "cs_bill_hdemo_sk", "cs_bill_addr_sk", "cs_ship_customer_sk", "cs_ship_cdemo_sk", "cs_ship_hdemo_sk",
        "cs_ship_addr_sk", "cs_call_center_sk", "cs_catalog_page_sk", "cs_ship_mode_sk", "cs_warehouse_sk",
        "cs_item_sk", "cs_promo_sk"),
    "customer": _fk("c_current_cdemo_sk", "c_current_hdemo_sk", "c_current_addr_sk",
                    "c_first_shipto_date_sk", "c_first_sales_date_sk"),
    "household_demographics": _fk("hd_income_band_sk"),
    "inventory": _fk("inv_date_sk", "inv_item_sk", "inv_warehouse_sk"),
    "promotion": _fk("p_start_date_sk", "p_end_date_sk", "p_item_sk"),
    "store": _fk("s_closed_date_sk"),
    "store_returns": _fk(
        "sr_returned_date_sk", "sr_return_time_sk", "sr_item_sk", "sr_customer_sk", "sr_cdemo_sk",
        "sr_hdemo_sk", "sr_addr_sk", "sr_store_sk", "sr_reason_sk"),
    "store_sales": _fk(
        "ss_sold_date_sk", "ss_sold_time_sk", "ss_item_sk", "ss_customer_sk", "ss_cdemo_sk", "ss_hdemo_sk",
        "ss_addr_sk", "ss_store_sk", "ss_promo_sk"),
    "web_page": _fk("wp_creation_date_sk", "wp_access_date_sk", "wp_customer_sk"),
    "web_returns": _fk(
        "wr_returned_date_sk", "wr_returned_time_sk", "wr_item_sk", "wr_refunded_customer_sk",
        "wr_refunded_cdemo_sk", "wr_refunded_hdemo_sk", "wr_refunded_addr_sk", "wr_returning_customer_sk",
        "wr_returning_cdemo_sk", "wr_returning_hdemo_sk", "wr_returning_addr_sk", "wr_web_page_sk",
        "wr_reason_sk"),
    "web_sales": _fk(
        "ws_sold_date_sk", "ws_sold_time_sk", "ws_ship_date_sk", "ws_item_sk", "ws_bill_customer_sk",
        "ws_bill_cdemo_sk", "ws_bill_hdemo_sk", "ws_bill_addr_sk", "ws_ship_customer_sk", "ws_ship_cdemo_sk",
        "ws_ship_hdemo_sk", "ws_ship_addr_sk", "ws_web_page_sk", "ws_web_site_sk", "ws_ship_mode_sk",
        "ws_warehouse_sk", "ws_promo_sk"),
    "web_site": _fk("web_open_date_sk", "web_close_date_sk"),
}


def duckdb_tpcds():
    """An in-memory DuckDB connection with the tpcds extension loaded from its wheel."""
    return tpch.duckdb_with("tpcds", TPCDS_EXT_VERSION)


def _pg_type(duckdb_type: str) -> str:
    if duckdb_type in ("BIGINT", "INTEGER"):
        return "integer"  # the spec's identifiers and counts; every value fits
    if duckdb_type.startswith("DECIMAL"):
        return "numeric" + duckdb_type[len("DECIMAL"):]
    return {"VARCHAR": "varchar", "DATE": "date"}[duckdb_type]


def schema() -> dict[str, str]:
    """Table -> PostgreSQL column definitions, read from the generator's own empty tables."""
    con = duckdb_tpcds()
    try:
        con.execute("CALL dsdgen(sf=0)")
        rows = con.execute("SELECT table_name, column_name, data_type, is_nullable "
                           "FROM information_schema.columns ORDER BY table_name, ordinal_position").fetchall()
    finally:
        con.close()
    columns: dict[str, list[str]] = {t: [] for t in TABLES}
    for table, column, kind, nullable in rows:
        columns[table].append(f"{column} {_pg_type(kind)}" + (" NOT NULL" if nullable == "NO" else ""))
    return {t: ", ".join(cols) for t, cols in columns.items()}


def dataset() -> tpch.Dataset:
    return tpch.Dataset("tpcds", TPCDS_EXT_VERSION, "CALL dsdgen(sf={sf})", schema(), PRIMARY_KEYS, SLICED)


def load(dsn: str, sf: float, workdir: Path, keep_csv: bool = False) -> dict[str, float]:
    """Generate TPC-DS at scale ``sf`` and (re)load its 24 tables at ``dsn``; seconds per phase."""
    return tpch.load(dsn, sf, workdir, keep_csv=keep_csv, dataset=dataset())


def table_sizes(dsn: str) -> dict[str, dict]:
    """Rows, bytes and all-visible share per table, as tpch.table_sizes."""
    return tpch.table_sizes(dsn, TABLES)


def read_queries() -> list[tuple[int, str]]:
    """The queries of tpcds_queries.sql as (query number, PostgreSQL text without the semicolon)."""
    return tpch.query_blocks(QUERIES_FILE.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sf", type=float, default=1.0)
    ap.add_argument("--dsn", help="the database to load (or, with --queries, to check the queries on)")
    ap.add_argument("--keep", type=Path, help="keep the CSV files in this directory and reuse them")
    ap.add_argument("--queries", action="store_true", help=f"(re)write {QUERIES_FILE.name} and exit")
    ap.add_argument("--run-timeout", type=float, help="with --queries: also run each query (seconds each), "
                    "and compare its row count with DuckDB's at --sf (the database's scale)")
    args = ap.parse_args()
    if not args.dsn:
        ap.error("--dsn is required")
    if args.queries:
        import tpcds_translate

        tpcds_translate.write_queries(args.dsn, run_timeout=args.run_timeout, sf=args.sf)
        return
    with tempfile.TemporaryDirectory(prefix="tpcds-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for phase, secs in load(args.dsn, args.sf, workdir, keep_csv=bool(args.keep)).items():
            tpch.log(f"{phase:>14}: {secs:6.1f} s")


if __name__ == "__main__":
    main()
