"""The catalog read from a real server, and index hygiene over it: exactly the planted problems."""

from __future__ import annotations

import time

import psycopg
import pytest

from advisor.db.catalog import SETTINGS, Catalog, ForeignKey, Index, Table, read_catalog
from advisor.db.connect import connect
from advisor.indexes.existing import index_issues, quote_ident

SCHEMA = """
CREATE SCHEMA shop;
CREATE TABLE shop.customers (id int PRIMARY KEY, email text NOT NULL, code text UNIQUE, name text);
CREATE UNIQUE INDEX customers_email ON shop.customers (email);
CREATE TABLE shop.orders (
    id bigserial PRIMARY KEY,
    customer_id int REFERENCES shop.customers (id),
    status text NOT NULL,
    total numeric,
    priority int,
    created timestamptz NOT NULL DEFAULT '2024-01-01',
    shipped_at timestamptz,
    note text
);
CREATE TABLE shop.order_items (
    id int PRIMARY KEY, order_id bigint NOT NULL REFERENCES shop.orders (id), product text);
CREATE INDEX order_items_order ON shop.order_items (order_id, product);
CREATE INDEX orders_status_created ON shop.orders (status, created DESC) INCLUDE (total);
CREATE INDEX orders_status ON shop.orders (status);
CREATE INDEX orders_total_a ON shop.orders (total);
CREATE INDEX orders_lower_note ON shop.orders (lower(note) text_pattern_ops);
CREATE INDEX orders_priority_open ON shop.orders (priority) WHERE status = 'open';
CREATE INDEX orders_shipped_at ON shop.orders (shipped_at);
INSERT INTO shop.customers
    SELECT g, 'c' || g || '@example.com', 'code' || g, 'name ' || (g % 7) FROM generate_series(1, 200) g;
INSERT INTO shop.orders (customer_id, status, total, priority, note)
    SELECT 1 + g % 200, (ARRAY['open', 'paid', 'shipped'])[1 + g % 3], g % 500, g % 5, 'note ' || g
    FROM generate_series(1, 6000) g;
INSERT INTO shop.order_items SELECT g, 1 + g % 6000, 'p' || (g % 10) FROM generate_series(1, 2000) g;
ANALYZE;
"""

# Each query uses one index (sequential scans off): those indexes must not come out "unused".
USES = {
    "orders_status_created": "SELECT * FROM shop.orders WHERE status = 'paid' ORDER BY created DESC LIMIT 5",
    "orders_total_a": "SELECT * FROM shop.orders WHERE total = 42",
    "orders_lower_note": "SELECT * FROM shop.orders WHERE lower(note) LIKE 'note 12%'",
    "orders_priority_open": "SELECT * FROM shop.orders WHERE status = 'open' AND priority = 3",
}


def _scans(conn, names) -> dict[str, int]:
    rows = conn.execute("SELECT indexrelname, idx_scan FROM pg_stat_user_indexes WHERE indexrelname = ANY(%s)",
                        [list(names)]).fetchall()
    return dict(rows)


@pytest.fixture(scope="module")
def catalog(pg_dsn) -> Catalog:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        for name, query in USES.items():
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query))
            assert name in plan, plan  # the planner chose the index the test relies on
            conn.execute(query).fetchall()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        # After the scans above, so the planner could not pick it; then failing twins.
        conn.execute("CREATE INDEX orders_total_b ON shop.orders (total)")
        with pytest.raises(psycopg.errors.UniqueViolation):  # leaves an invalid index behind
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY orders_customer_broken ON shop.orders (customer_id)")
        deadline = time.monotonic() + 10  # statistics reach the shared counters when a backend goes idle
        while min(_scans(conn, USES).values(), default=0) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            conn.execute("SELECT pg_stat_clear_snapshot()")
    with connect(pg_dsn) as conn:
        result = read_catalog(conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE and not conn.autocommit
    return result


def test_tables_columns_and_statistics(catalog):
    assert set(catalog.tables) == {"shop.customers", "shop.orders", "shop.order_items"}  # no system tables
    orders = catalog.tables["shop.orders"]
    assert (orders.schema, orders.name, orders.qualified) == ("shop", "orders", "shop.orders")
    assert orders.rows == 6000 and orders.n_live_tup == 6000 and orders.n_tup_ins == 6000
    assert orders.total_bytes > orders.table_bytes > 0
    assert orders.last_analyze and orders.last_analyze[:4].isdigit() and orders.idx_scan >= len(USES)
    assert list(orders.columns) == ["id", "customer_id", "status", "total", "priority", "created", "shipped_at", "note"]
    status = orders.columns["status"]
    assert (status.type, status.not_null, status.n_distinct, status.null_frac) == ("text", True, 3.0, 0.0)
    assert set(status.most_common_vals) == {"open", "paid", "shipped"}
    assert sum(status.most_common_freqs) == pytest.approx(1.0, abs=0.01)
    assert orders.columns["id"].type == "bigint" and orders.columns["id"].correlation == pytest.approx(1.0)
    assert orders.columns["id"].n_distinct == -1.0  # unique: minus the fraction of rows, as PG reports it
    assert orders.columns["shipped_at"].null_frac == 1.0 and orders.columns["shipped_at"].most_common_vals == ()
    assert orders.columns["created"].type == "timestamp with time zone"
    assert orders.columns["created"].most_common_vals == ("2024-01-01 00:00:00+00",)  # anyarray, as text


def test_indexes_read_right(catalog):
    orders = {i.name: i for i in catalog.tables["shop.orders"].indexes}
    composite = orders["orders_status_created"]
    assert composite.columns == ("status", "created") and composite.include == ("total",)
    assert composite.key_options == ("", "DESC") and composite.method == "btree"
    assert composite.size_bytes > 0 and composite.idx_scan > 0 and composite.valid
    assert composite.definition.startswith("CREATE INDEX orders_status_created ON shop.orders USING btree")
    expression = orders["orders_lower_note"]
    assert expression.columns == ("lower(note)",) and "text_pattern_ops" in expression.key_options[0]
    assert orders["orders_priority_open"].predicate == "status = 'open'::text"
    assert not orders["orders_customer_broken"].valid and orders["orders_customer_broken"].unique
    pkey = orders["orders_pkey"]
    assert pkey.primary and pkey.unique and pkey.backs_constraint
    customers = {i.name: i for i in catalog.tables["shop.customers"].indexes}
    assert customers["customers_code_key"].backs_constraint and not customers["customers_code_key"].primary
    assert customers["customers_email"].unique and not customers["customers_email"].backs_constraint


def test_foreign_keys_settings_and_lookup(catalog):
    assert set(catalog.foreign_keys) == {
        ForeignKey("orders_customer_id_fkey", "shop.orders", ("customer_id",), "shop.customers", ("id",)),
        ForeignKey("order_items_order_id_fkey", "shop.order_items", ("order_id",), "shop.orders", ("id",)),
    }
    assert set(catalog.settings) == set(SETTINGS) and catalog.settings["work_mem"].endswith("B")
    assert catalog.server_version_num >= 120000
    assert catalog.search_path == ("public",)
    assert catalog.table("orders") is None  # shop is not on the search_path
    assert catalog.table("orders", schema="shop") is catalog.tables["shop.orders"]
    assert catalog.table("shop.ORDERS") is catalog.tables["shop.orders"]  # unquoted names fold


def test_index_issues_find_exactly_the_planted_problems(catalog):
    issues = index_issues(catalog)
    found = {(i.kind, (i.index or i.foreign_key).name) for i in issues}
    assert found == {
        ("invalid", "orders_customer_broken"),
        ("duplicate", "orders_total_b"),
        ("redundant", "orders_status"),
        ("unused", "orders_shipped_at"),
        ("unindexed_foreign_key", "orders_customer_id_fkey"),  # the invalid index does not cover it
    }
    by = {(i.index or i.foreign_key).name: i for i in issues}
    assert by["orders_total_b"].covered_by.name == "orders_total_a"
    assert by["orders_status"].covered_by.name == "orders_status_created"
    assert by["orders_shipped_at"].suggestion == "DROP INDEX CONCURRENTLY shop.orders_shipped_at;"
    assert by["orders_customer_id_fkey"].suggestion == "CREATE INDEX CONCURRENTLY ON shop.orders (customer_id);"
    assert all(i.table == "shop.orders" and i.reason for i in issues)


# --- index_issues over hand-made catalogs: the rules one by one ------------------------------------------


def _index(name, columns, *, include=(), predicate=None, method="btree", options=None, unique=False,
           scans=5, valid=True) -> Index:
    return Index("public", "t", name, tuple(columns), tuple(include), predicate, unique, False, valid, False,
                 method, 8192, scans, f"CREATE INDEX {name} …", tuple(options or ("",) * len(columns)))


def _catalog(*indexes: Index, fks: tuple[ForeignKey, ...] = ()) -> Catalog:
    table = Table("public", "t", 10.0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, None, None, {}, indexes)
    return Catalog(150000, {}, {"public.t": table}, fks)


def _kinds(catalog: Catalog) -> set[tuple[str, str]]:
    return {(i.kind, (i.index or i.foreign_key).name) for i in index_issues(catalog)}


def test_operator_class_collation_and_order_make_different_indexes():
    assert _kinds(_catalog(_index("a", ["x"]), _index("b", ["x"], options=["text_pattern_ops"]))) == set()
    assert _kinds(_catalog(_index("a", ["x"]), _index("b", ["x"], options=['COLLATE "C"']))) == set()
    assert _kinds(_catalog(_index("a", ["x", "y"]), _index("b", ["x", "y"], options=["", "DESC"]))) == set()
    assert _kinds(_catalog(_index("a", ["x"]), _index("b", ["x", "y"], options=["DESC", ""]))) == set()
    assert _kinds(_catalog(_index("a", ["x"]), _index("b", ["x"], method="hash"))) == set()
    assert _kinds(_catalog(_index("a", ["x"]), _index("b", ["x"], predicate="y > 0"))) == set()


def test_include_columns_decide_redundancy():
    assert _kinds(_catalog(_index("a", ["x"], include=["z"]), _index("b", ["x", "y"]))) == set()
    assert _kinds(_catalog(_index("a", ["x"], include=["z"]), _index("b", ["x", "y"], include=["z"]))) == {
        ("redundant", "a")}
    assert _kinds(_catalog(_index("a", ["x"], include=["y"]), _index("b", ["x", "y"]))) == {("redundant", "a")}
    assert _kinds(_catalog(_index("a", ["x"], include=["y"]), _index("b", ["x"], include=["y", "z"]))) == {
        ("redundant", "a")}
    assert _kinds(_catalog(_index("a", ["x"], include=["y", "z"]), _index("b", ["x"], include=["z", "y"]))) == {
        ("duplicate", "b")}  # INCLUDE order does not matter


def test_which_twin_stays_and_what_is_never_dropped():
    assert _kinds(_catalog(_index("a", ["x"], scans=0), _index("b", ["x"], scans=9))) == {("duplicate", "a")}
    unique = _index("u", ["x"], unique=True, scans=0)
    assert _kinds(_catalog(unique, _index("b", ["x"]))) == {("duplicate", "b")}
    assert _kinds(_catalog(_index("u", ["x"], unique=True, scans=0), _index("b", ["x", "y"]))) == set()
    assert _kinds(_catalog(_index("a", ["x"]), _index("bad", ["x", "y"], valid=False))) == {("invalid", "bad")}
    assert _kinds(_catalog(_index("gin_a", ["x"], method="gin"), _index("gin_b", ["x", "y"], method="gin"))) == set()


def test_foreign_key_coverage():
    fk = ForeignKey("t_fk", "public.t", ("a", "b"), "public.p", ("a", "b"))
    assert _kinds(_catalog(_index("i", ["b", "a", "c"], scans=0), fks=(fk,))) == set()  # covers it: kept
    assert _kinds(_catalog(_index("i", ["a"]), fks=(fk,))) == {("unindexed_foreign_key", "t_fk")}
    assert _kinds(_catalog(_index("i", ["c", "a", "b"]), fks=(fk,))) == {("unindexed_foreign_key", "t_fk")}
    partial = _index("i", ["a", "b"], predicate="a IS NOT NULL")
    assert _kinds(_catalog(partial, fks=(fk,))) == {("unindexed_foreign_key", "t_fk")}


@pytest.mark.parametrize("name, quoted", [
    ("orders", "orders"), ("order", '"order"'), ("user", '"user"'), ("Orders", '"Orders"'),
    ("with space", '"with space"'), ('quo"te', '"quo""te"'), ("_x$1", '"_x$1"'), ("_x1", "_x1"),
    ("ünï", '"ünï"'), ("1x", '"1x"'),
    ("name", "name"), ("between", '"between"'),
])  # fmt: skip
def test_quote_ident_as_postgres_does(name, quoted, pg_dsn):
    assert quote_ident(name) == quoted
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT quote_ident(%s)", [name]).fetchone()[0] == quoted


def test_write_rates_follow_the_counters(pg_dsn, catalog):
    """Rows changed a second: since the last ANALYZE where there was one (a bulk load before it does
    not count), else over the counters' whole span."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA rates")
        for name in ("analyzed", "never"):
            conn.execute(f"CREATE TABLE rates.{name} (id int PRIMARY KEY, n int) WITH (autovacuum_enabled = off)")
            conn.execute(f"INSERT INTO rates.{name} SELECT g, 0 FROM generate_series(1, 5000) g")
        conn.execute("SELECT pg_stat_force_next_flush()")  # the loads are counted before the ANALYZE
        conn.execute("ANALYZE rates.analyzed")
        analyzed = time.monotonic()
        for i in range(300):
            conn.execute("UPDATE rates.analyzed SET n = n + 1 WHERE id = %s", [i + 1])
        conn.execute("SELECT pg_stat_force_next_flush()")
    with connect(pg_dsn) as conn:
        fresh = read_catalog(conn)
        (server_age,) = conn.execute(
            "SELECT extract(epoch FROM now() - coalesce(stats_reset, pg_postmaster_start_time()))::float8 "
            "FROM pg_stat_database WHERE datname = current_database()").fetchone()
    elapsed = time.monotonic() - analyzed
    recent, never = fresh.table("rates.analyzed"), fresh.table("rates.never")
    assert (recent.n_tup_ins, recent.n_tup_upd, recent.n_mod_since_analyze) == (5000, 300, 300)  # the server's
    assert 0 < fresh.stats_age_seconds <= server_age
    assert recent.seconds_since_analyze <= elapsed + 1
    assert fresh.write_rate(recent) == pytest.approx(300 / max(recent.seconds_since_analyze, 1.0))
    assert fresh.write_rate(recent) >= 300 / max(elapsed + 1, 1.0)  # the updates, not the 5,000 rows loaded
    assert never.seconds_since_analyze is None and never.n_tup_ins == 5000
    assert fresh.write_rate(never) == pytest.approx(5000 / max(fresh.stats_age_seconds, 1.0))
