"""The target database's catalog in five queries: settings, tables, columns, indexes, foreign keys.

One query per kind of object, never one per table, so a schema of thousands of
tables costs the same round trips as one of three. The queries run in one
read-only REPEATABLE READ transaction (when the caller has none open), so the
tables, indexes and counters agree with each other. Only user tables, partitioned
tables and materialized views are read; system schemas and temporary schemas are not.
Statistics columns (pg_stats, pg_stat_user_*) are what this role may see: pg_stats
shows only columns the role can SELECT.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from advisor.db.connect import TAG
from advisor.db.rows import one_row

if TYPE_CHECKING:
    import psycopg

__all__ = ["Catalog", "Column", "ForeignKey", "Index", "SETTINGS", "Table", "read_catalog"]

# The settings the checks and the index advisor read (cost model, memory, plan caching).
SETTINGS = ("work_mem", "maintenance_work_mem", "random_page_cost", "seq_page_cost", "effective_cache_size", "track_io_timing",
            "max_connections", "shared_buffers", "default_statistics_target", "plan_cache_mode",
            "hash_mem_multiplier", "max_parallel_workers", "max_worker_processes", "cpu_operator_cost",
            "cpu_index_tuple_cost")


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # format_type: "character varying(40)", "timestamp with time zone"
    not_null: bool
    # pg_stats as PostgreSQL gives it: n_distinct < 0 is minus a fraction of the rows.
    # All None/empty until the table has been ANALYZEd.
    n_distinct: float | None = None
    null_frac: float | None = None
    most_common_vals: tuple[str, ...] = ()  # as text, whatever the column type
    most_common_freqs: tuple[float, ...] = ()
    correlation: float | None = None


@dataclass(frozen=True, slots=True)
class Index:
    schema: str
    table: str
    name: str
    columns: tuple[str, ...]  # key columns in order: column names, expressions as their text
    include: tuple[str, ...]
    predicate: str | None
    unique: bool
    primary: bool
    valid: bool
    backs_constraint: bool  # primary key, unique or exclusion constraint of its table
    method: str  # btree, hash, gin, gist, brin…
    size_bytes: int
    idx_scan: int
    definition: str  # pg_get_indexdef
    # Per key column, what else shapes the order and the operators: non-default
    # operator class, collation, DESC, NULLS FIRST/LAST ("" when all default).
    # Two indexes are interchangeable only where these agree too.
    key_options: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True, slots=True)
class ForeignKey:
    name: str
    table: str  # "schema.name"
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Table:
    schema: str
    name: str
    rows: float  # reltuples, or n_live_tup where the table was never analyzed or vacuumed
    total_bytes: int  # with indexes and TOAST
    table_bytes: int  # heap and TOAST, without indexes
    seq_scan: int
    seq_tup_read: int
    idx_scan: int
    n_tup_ins: int
    n_tup_upd: int
    n_tup_hot_upd: int
    n_tup_del: int
    n_live_tup: int
    n_dead_tup: int
    n_mod_since_analyze: int
    last_analyze: str | None  # ISO 8601
    last_autoanalyze: str | None
    columns: dict[str, Column]
    indexes: tuple[Index, ...]
    pages: int = 0  # relpages
    all_visible_pages: int = 0  # relallvisible: index-only scans skip the heap on these pages
    seconds_since_analyze: float | None = None  # since the later of last_analyze and last_autoanalyze

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def all_visible(self) -> float:
        """The share of pages the visibility map marks all-visible (1.0 for an empty table)."""
        return min(1.0, self.all_visible_pages / self.pages) if self.pages > 0 else 1.0


@dataclass(frozen=True, slots=True)
class Catalog:
    server_version_num: int
    settings: dict[str, str]  # as SHOW prints them: "4MB", "1.1", "on"
    tables: dict[str, Table]  # by "schema.name"
    foreign_keys: tuple[ForeignKey, ...]
    search_path: tuple[str, ...] = ("public",)  # the session's schemas, pg_catalog left out
    # Seconds the pg_stat_* counters of this database have been counting: since its stats_reset, else
    # since the server started (counters kept over a clean restart make rates from it err high).
    stats_age_seconds: float | None = None

    def write_rate(self, table: Table) -> float | None:
        """Rows a second the table's counters say it changes (inserted, updated, deleted): since its last
        ANALYZE where it had one (the recent rate, not a bulk load long past), else over the counters'
        whole span; None when neither span is known."""
        if table.seconds_since_analyze is not None:
            return table.n_mod_since_analyze / max(table.seconds_since_analyze, 1.0)
        if self.stats_age_seconds is not None:
            return (table.n_tup_ins + table.n_tup_upd + table.n_tup_del) / max(self.stats_age_seconds, 1.0)
        return None

    def table(self, name: str, schema: str | None = None) -> Table | None:
        """A table by name: "schema.name", or an unqualified name looked up along the search_path.

        Names are matched as stored, then lower-cased (an unquoted name as PostgreSQL folds it).
        """
        if schema is None and "." in name:
            schema, name = name.split(".", 1)
        schemas = (schema,) if schema is not None else self.search_path
        for candidate in (name, name.lower()):
            for s in schemas:
                if found := self.tables.get(f"{s}.{candidate}"):
                    return found
        return None


# --- queries ----------------------------------------------------------------------------

# Relations the catalog covers: tables, partitioned tables, materialized views, outside system schemas.
_USER_RELATIONS = """
    c.relkind IN ('r', 'p', 'm')
    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'"""

_SESSION = """
SELECT current_setting('server_version_num')::int, current_schemas(false),
       (SELECT json_object_agg(name, current_setting(name)) FROM pg_settings WHERE name = ANY(%s)),
       extract(epoch FROM now() - coalesce((SELECT stats_reset FROM pg_stat_database
                                            WHERE datname = current_database()), pg_postmaster_start_time()))::float8"""

_TABLES = f"""
SELECT c.oid, n.nspname, c.relname,
       CASE WHEN c.reltuples < 0 THEN coalesce(s.n_live_tup, 0) ELSE c.reltuples END,
       pg_total_relation_size(c.oid), pg_table_size(c.oid),
       coalesce(s.seq_scan, 0), coalesce(s.seq_tup_read, 0), coalesce(s.idx_scan, 0),
       coalesce(s.n_tup_ins, 0), coalesce(s.n_tup_upd, 0), coalesce(s.n_tup_hot_upd, 0),
       coalesce(s.n_tup_del, 0), coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
       coalesce(s.n_mod_since_analyze, 0), s.last_analyze, s.last_autoanalyze, c.relpages, c.relallvisible,
       extract(epoch FROM now() - greatest(s.last_analyze, s.last_autoanalyze))::float8
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE {_USER_RELATIONS}
ORDER BY 1"""

# anyarray cannot be read by a client: its text form re-read as text[] works for every element type.
_COLUMNS = f"""
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       st.n_distinct, st.null_frac, st.most_common_vals::text::text[], st.most_common_freqs, st.correlation
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL (
    -- a partitioned or inheritance parent may have both; its own rows (inherited = false) first
    SELECT * FROM pg_stats s
    WHERE s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = a.attname
    ORDER BY s.inherited LIMIT 1
) st ON true
WHERE {_USER_RELATIONS} AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum"""

# Key and INCLUDE columns come from indkey (0 is an expression, named by pg_get_indexdef);
# indclass, indcollation and indoption cover the key columns only.
_INDEXES = f"""
SELECT i.indrelid, n.nspname, c.relname, ic.relname, i.indnkeyatts,
       ARRAY(SELECT coalesce(a.attname::text, pg_get_indexdef(i.indexrelid, k.n::int, true))
             FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n)
             LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum AND k.attnum > 0
             ORDER BY k.n),
       ARRAY(SELECT concat_ws(' ',
                 CASE WHEN k.coll <> 0 AND k.coll IS DISTINCT FROM a.attcollation
                      THEN 'COLLATE ' || quote_ident(co.collname) END,
                 CASE WHEN NOT oc.opcdefault THEN oc.opcname::text END,
                 CASE WHEN k.opt & 1 = 1 THEN 'DESC' END,
                 CASE WHEN k.opt & 2 = 2 AND k.opt & 1 = 0 THEN 'NULLS FIRST'
                      WHEN k.opt & 2 = 0 AND k.opt & 1 = 1 THEN 'NULLS LAST' END)
             FROM unnest(i.indkey::int2[], i.indclass::oid[], i.indcollation::oid[], i.indoption::int2[])
                  WITH ORDINALITY k(attnum, opclass, coll, opt, n)
             LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum AND k.attnum > 0
             LEFT JOIN pg_opclass oc ON oc.oid = k.opclass
             LEFT JOIN pg_collation co ON co.oid = k.coll
             WHERE k.n <= i.indnkeyatts
             ORDER BY k.n),
       pg_get_expr(i.indpred, i.indrelid, true), i.indisunique, i.indisprimary, i.indisvalid,
       EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid
               AND k.contype IN ('p', 'u', 'x')),
       am.amname, pg_relation_size(i.indexrelid), coalesce(s.idx_scan, 0), pg_get_indexdef(i.indexrelid)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = i.indexrelid
WHERE {_USER_RELATIONS}
ORDER BY i.indrelid, ic.relname"""

_FOREIGN_KEYS = f"""
SELECT k.conname, n.nspname || '.' || c.relname, rn.nspname || '.' || r.relname,
       ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(attnum, n)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum ORDER BY u.n),
       ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u(attnum, n)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.attnum ORDER BY u.n)
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class r ON r.oid = k.confrelid
JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE k.contype = 'f' AND {_USER_RELATIONS}
ORDER BY 2, 1"""


def read_catalog(conn: psycopg.Connection) -> Catalog:
    """The catalog of the connection's database, in five read-only queries."""
    with _read_only_snapshot(conn):
        version, search_path, settings, stats_age = one_row(conn.execute(TAG + _SESSION, [list(SETTINGS)]))
        columns = _columns(conn.execute(TAG + _COLUMNS).fetchall())
        indexes = _indexes(conn.execute(TAG + _INDEXES).fetchall())
        tables = [_table(row, columns.get(row[0], {}), indexes.get(row[0], ())) for row in
                  conn.execute(TAG + _TABLES).fetchall()]
        foreign_keys = tuple(ForeignKey(name, table, tuple(cols), ref, tuple(ref_cols))
                             for name, table, ref, cols, ref_cols in conn.execute(TAG + _FOREIGN_KEYS))
    return Catalog(int(version), dict(settings or {}), {t.qualified: t for t in tables}, foreign_keys,
                   tuple(search_path), stats_age)


@contextmanager
def _read_only_snapshot(conn: psycopg.Connection) -> Iterator[None]:
    """One read-only snapshot for all the queries; inside the caller's transaction if one is open."""
    from psycopg import pq  # here: the index model imports this module, and reading logs needs no driver

    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        yield
        return
    autocommit = conn.autocommit
    conn.autocommit = True  # so that our BEGIN, tagged, is the one that counts
    conn.execute(TAG + "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ")
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute(TAG + "ROLLBACK")
            conn.autocommit = autocommit


def _columns(rows) -> dict[int, dict[str, Column]]:
    by_table: dict[int, dict[str, Column]] = {}
    for oid, name, type_, not_null, n_distinct, null_frac, mcv, mcf, correlation in rows:
        by_table.setdefault(oid, {})[name] = Column(
            name, type_, not_null, n_distinct, null_frac, tuple(mcv or ()), tuple(mcf or ()), correlation)
    return by_table


def _indexes(rows) -> dict[int, tuple[Index, ...]]:
    by_table: dict[int, list[Index]] = {}
    for (oid, schema, table, name, nkey, columns, options, predicate, unique, primary, valid, backs, method,
         size, scans, definition) in rows:
        by_table.setdefault(oid, []).append(Index(
            schema, table, name, tuple(columns[:nkey]), tuple(columns[nkey:]), predicate, unique, primary,
            valid, backs, method, size, scans, definition, tuple(options)))
    return {oid: tuple(found) for oid, found in by_table.items()}


def _table(row, columns: dict[str, Column], indexes: tuple[Index, ...]) -> Table:
    (_, schema, name, rows, total, table_bytes, seq_scan, seq_tup_read, idx_scan, ins, upd, hot, dele,
     live, dead, mod, last_analyze, last_autoanalyze, pages, all_visible_pages, since_analyze) = row
    return Table(schema, name, float(rows), total, table_bytes, seq_scan, seq_tup_read, idx_scan, ins, upd,
                 hot, dele, live, dead, mod, _iso(last_analyze), _iso(last_autoanalyze), columns, indexes,
                 max(pages, 0), max(all_visible_pages, 0), since_analyze)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
