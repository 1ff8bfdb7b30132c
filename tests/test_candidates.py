"""Index candidates from queries, against a real catalog: the demo schema with data, plus users."""

from __future__ import annotations

import bz2
import gzip
import re
from dataclasses import replace

import psycopg
import pytest
import sqlglot

from advisor.db.catalog import Catalog, Column, Index, read_catalog
from advisor.demo import Scale, load_fixture
from advisor.indexes.candidates import candidates, selectivity, served_by_existing, workload_candidates
from advisor.indexes.model import AdvisedQuery, IndexCandidate
from advisor.indexes.usage import ConstantPredicate, query_columns, walk

TR, USERS, WAFERS, LOTS, AUDIT = ("public.test_results", "public.users", "public.wafers", "public.lots",
                                 "public.audit_log")

DIE = ("SELECT test_name, value, passed FROM test_results "
       "WHERE wafer_id = $1 AND die_x = $2 AND die_y = $3 ORDER BY test_name")


@pytest.fixture(scope="module")
def dsn(pg_dsn) -> str:
    load_fixture(pg_dsn, Scale(lots=20, dies=10))  # 20 lots, 500 wafers, 20,000 test results
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL, status text NOT NULL, profile jsonb);
            INSERT INTO users (email, status, profile)
            SELECT 'user' || g || '@example.com',
                   CASE WHEN g % 50 = 0 THEN 'pending' WHEN g % 5 = 1 THEN 'disabled' ELSE 'active' END,
                   jsonb_build_object('country', g % 30)
            FROM generate_series(1, 5000) g;
            INSERT INTO audit_log (lot_id, action, at)
            SELECT 1 + g % 20, 'touch', timestamptz '2026-01-01' + g * interval '1 minute'
            FROM generate_series(1, 3000) g;
            CREATE INDEX audit_log_lot_at ON audit_log (lot_id, at);
            ANALYZE;
        """)
    return pg_dsn


@pytest.fixture(scope="module")
def catalog(dsn) -> Catalog:
    with psycopg.connect(dsn) as conn:
        return read_catalog(conn)


def _columns(found: list[IndexCandidate]) -> set[tuple[str, ...]]:
    return {c.columns for c in found if not c.include and not c.where}


# --- composite order ------------------------------------------------------------------------


def test_composite_equality_by_selectivity_then_sort(catalog):
    use = query_columns(DIE, catalog)[TR]
    assert use.equality == ("wafer_id", "die_x", "die_y")  # order of appearance
    assert use.order == (("test_name", "ASC"),) and not use.has_limit
    assert set(use.read) == {"test_name", "value", "passed", "wafer_id", "die_x", "die_y"}

    table = catalog.tables[TR]
    # 500 wafers, 10 die_x, a single die_y: wafer_id is the most selective
    by_selectivity = sorted(["die_y", "die_x", "wafer_id"], key=lambda c: selectivity(c, table))
    assert by_selectivity == ["wafer_id", "die_x", "die_y"]
    assert selectivity("wafer_id", table) < selectivity("die_x", table) < selectivity("die_y", table)

    wide = candidates(DIE, catalog, max_width=4)
    assert IndexCandidate(TR, ("wafer_id", "die_x", "die_y", "test_name")) in wide
    assert IndexCandidate(TR, ("wafer_id", "die_x", "die_y", "test_name"), include=("value", "passed")) in wide
    narrow = candidates(DIE, catalog)  # max_width=3
    assert IndexCandidate(TR, ("wafer_id", "die_x", "die_y")) in narrow
    assert max(len(c.columns) for c in narrow) == 3
    # every prefix, and every equality column alone
    assert {("wafer_id",), ("wafer_id", "die_x"), ("die_x",), ("die_y",)} <= _columns(narrow)
    # the key order follows selectivity, not the order of the WHERE clause
    shuffled = DIE.replace("wafer_id = $1 AND die_x = $2 AND die_y = $3",
                           "die_y = $3 AND die_x = $2 AND wafer_id = $1")
    assert IndexCandidate(TR, ("wafer_id", "die_x", "die_y", "test_name")) in candidates(shuffled, catalog, max_width=4)
    assert len(set(wide)) == len(wide)  # deduplicated


def test_range_limit_and_order(catalog):
    sql = ("SELECT * FROM test_results WHERE wafer_id = 7 AND tested_at >= now() - interval '1 day' "
           "ORDER BY value DESC LIMIT 10")
    use = query_columns(sql, catalog)[TR]
    assert use.equality == ("wafer_id",) and use.range == ("tested_at",)
    assert use.order == (("value", "DESC"),) and use.has_limit
    found = _columns(candidates(sql, catalog))
    assert ("wafer_id", "tested_at") in found  # equality, then one range column
    assert ("wafer_id", "value") in found  # equality, then the sort under a LIMIT
    assert not any(c.include for c in candidates(sql, catalog))  # SELECT * reads too much for INCLUDE

    mixed = "SELECT id FROM test_results WHERE wafer_id = $1 ORDER BY die_x DESC, die_y LIMIT 5"
    assert ("wafer_id", "die_x", "die_y DESC") in _columns(candidates(mixed, catalog))
    # NULLS FIRST on an ascending sort is not the order of a default index
    assert query_columns("SELECT id FROM test_results ORDER BY die_x NULLS FIRST LIMIT 5", catalog)[TR].order == ()


def test_like_prefix_is_a_range_a_leading_wildcard_is_not(catalog):
    prefix = query_columns("SELECT id FROM users WHERE email LIKE 'abc%'", catalog)[USERS]
    assert prefix.range == ("email",)
    suffix = query_columns("SELECT id FROM users WHERE email LIKE '%abc'", catalog)[USERS]
    assert suffix.range == () and suffix.equality == ()
    assert ("email",) not in _columns(candidates("SELECT id FROM users WHERE email LIKE '%abc'", catalog))
    param = query_columns("SELECT id FROM users WHERE email LIKE $1", catalog)[USERS]
    assert param.range == ()


# --- qualification --------------------------------------------------------------------------


def test_aliases_and_joins(catalog):
    uses = query_columns("SELECT w.id FROM wafers w JOIN lots l ON l.id = w.lot_id WHERE l.status = 'active'",
                         catalog)
    assert set(uses) == {WAFERS, LOTS}
    assert uses[WAFERS].join == ("lot_id",) and uses[WAFERS].equality == ()
    assert uses[LOTS].equality == ("status",) and uses[LOTS].join == ("id",)
    assert uses[LOTS].constant_predicates == (ConstantPredicate("status", ("active",), "status = 'active'"),)
    assert set(uses[WAFERS].read) == {"id", "lot_id"}

    # unqualified columns go to the one table that has them; ambiguous ones are skipped
    uses = query_columns("SELECT id, wafer_no FROM wafers JOIN lots ON lots.id = lot_id "
                         "WHERE status = 'active' AND wafer_no > 3", catalog)
    assert uses[LOTS].equality == ("status",) and uses[WAFERS].range == ("wafer_no",)
    assert uses[WAFERS].join == ("lot_id",) and "id" not in uses[WAFERS].read

    # USING, schema-qualified names, case folding
    uses = query_columns("SELECT * FROM public.wafers JOIN audit_log USING (lot_id) "
                         "WHERE Wafers.Wafer_No = 1 AND \"Action\" = 'x'", catalog)
    assert uses[WAFERS].join == ("lot_id",) and uses[AUDIT].join == ("lot_id",)
    assert uses[WAFERS].equality == ("wafer_no",) and uses[AUDIT].equality == ()  # "Action" is no column


def test_ctes_subqueries_and_correlation(catalog):
    uses = query_columns("WITH recent AS (SELECT id, lot_id FROM wafers WHERE wafer_no = 3) "
                         "SELECT r.id FROM recent r WHERE r.lot_id = $1", catalog)
    assert set(uses) == {WAFERS}  # a CTE name is not a table
    assert uses[WAFERS].equality == ("wafer_no", "lot_id")  # the outer predicate reaches the table

    materialized = query_columns("WITH r AS MATERIALIZED (SELECT id, lot_id FROM wafers) "
                                 "SELECT id FROM r WHERE lot_id = $1", catalog)
    assert materialized[WAFERS].equality == ()  # not pushed into a materialized CTE

    uses = query_columns("SELECT t.value FROM (SELECT wafer_id, value FROM test_results WHERE passed) t "
                         "WHERE t.wafer_id = 5", catalog)
    assert uses[TR].equality == ("passed", "wafer_id")
    assert uses[TR].constant_predicates[0] == ConstantPredicate("passed", ("t",), "passed")

    uses = query_columns("SELECT l.lot_code FROM lots l WHERE EXISTS "
                         "(SELECT 1 FROM wafers w WHERE w.lot_id = l.id AND w.yield_pct < 85)", catalog)
    assert uses[WAFERS].join == ("lot_id",) and uses[WAFERS].range == ("yield_pct",)
    assert uses[LOTS].join == ("id",)

    # an unqualified column of the inner table wins over the outer one of the same name
    uses = query_columns("SELECT id FROM lots WHERE id IN (SELECT lot_id FROM wafers WHERE id = $1)", catalog)
    assert uses[WAFERS].equality == ("id",) and uses[WAFERS].join == ("lot_id",)
    assert uses[LOTS].join == ("id",) and uses[LOTS].equality == ()

    uses = query_columns("SELECT id FROM users WHERE status = 'pending' UNION ALL "
                         "SELECT id FROM users WHERE email = $1", catalog)
    assert uses[USERS].equality == ("status", "email")

    union_in_from = query_columns("SELECT * FROM (SELECT lot_id FROM wafers UNION SELECT lot_id FROM audit_log) u "
                                  "WHERE u.lot_id = 4", catalog)
    assert union_in_from[WAFERS].equality == ("lot_id",) and union_in_from[AUDIT].equality == ("lot_id",)


def test_data_changing_statements(catalog):
    uses = query_columns("WITH doomed AS (SELECT id FROM lots WHERE status = 'hold') "
                         "DELETE FROM wafers w USING doomed d WHERE w.lot_id = d.id", catalog)
    assert uses[WAFERS].written and uses[WAFERS].join == ("lot_id",)
    assert uses[LOTS].equality == ("status",) and not uses[LOTS].written

    uses = query_columns("UPDATE users SET status = 'active' WHERE email = $1", catalog)
    assert uses[USERS].written and uses[USERS].equality == ("email",) and uses[USERS].read == ("email",)
    assert not any(c.include for c in candidates("UPDATE users SET status = 'x' WHERE email = $1", catalog))

    uses = query_columns("INSERT INTO audit_log (lot_id, action) SELECT id, 'hold' FROM lots WHERE status = 'hold'",
                         catalog)
    assert uses[AUDIT].written and uses[AUDIT].read == ()
    assert uses[LOTS].equality == ("status",)

    uses = query_columns("UPDATE wafers SET yield_pct = 0 FROM lots WHERE lots.id = wafers.lot_id "
                         "AND lots.lot_code = $1", catalog)
    assert uses[WAFERS].join == ("lot_id",) and uses[LOTS].equality == ("lot_code",)


def test_group_in_any_null_and_or(catalog):
    sql = ("SELECT die_x, count(*) FROM test_results WHERE wafer_id = ANY($1) "
           "AND die_y IN (1, 2) AND tested_at IS NULL GROUP BY 1")
    use = query_columns(sql, catalog)[TR]
    assert use.equality == ("wafer_id", "die_y", "tested_at") and use.group == ("die_x",)
    grouped = "SELECT die_x, count(*) FROM test_results WHERE wafer_id = $1 GROUP BY die_x"
    assert ("wafer_id", "die_x") in _columns(candidates(grouped, catalog))  # feeds the aggregate sorted
    # not indexable: <>, NOT, IS NOT NULL, IS NOT DISTINCT FROM, a column against its own table
    use = query_columns("SELECT id FROM users WHERE status <> 'x' AND NOT (email = 'y') AND email IS NOT NULL "
                        "AND id IS NOT DISTINCT FROM 3 AND email = status", catalog)[USERS]
    assert use.equality == () and use.join == ()
    # each branch of an OR can use an index of its own (BitmapOr)
    assert query_columns("SELECT id FROM users WHERE email = $1 OR id = $2", catalog)[USERS].equality == ("email", "id")


# --- expression and partial indexes -------------------------------------------------------


def test_expression_candidate(catalog):
    sql = "SELECT id FROM users WHERE lower(email) = 'x'"
    assert query_columns(sql, catalog)[USERS].expressions == ("lower(email)",)
    assert IndexCandidate(USERS, ("lower(email)",)) in candidates(sql, catalog)
    assert query_columns("SELECT id FROM users WHERE lower(email) = lower(status)", catalog)[USERS].expressions == ()
    json = "SELECT id FROM users WHERE profile ->> 'country' = $1"
    assert IndexCandidate(USERS, ("(profile ->> 'country')",)) in candidates(json, catalog)


def test_partial_index_for_a_rare_constant(catalog):
    users = catalog.tables[USERS]
    assert selectivity("status", users, ["pending"]) == pytest.approx(0.02, abs=0.01)
    sql = "SELECT id, email FROM users WHERE status = 'pending' ORDER BY id LIMIT 20"
    found = candidates(sql, catalog)
    assert IndexCandidate(USERS, ("id",), where="status = 'pending'") in found  # not served by the primary key
    assert IndexCandidate(USERS, ("status",), where="status = 'pending'") in candidates(
        "SELECT email FROM users WHERE status = 'pending'", catalog)
    # a common value, or a parameter, gets none
    assert not any(c.where for c in candidates("SELECT id FROM users WHERE status = 'active'", catalog))
    assert not any(c.where for c in candidates("SELECT id FROM users WHERE status = $1", catalog))
    # a literal on a column of many values is a per-request value, not a partial index
    assert not any(c.where for c in candidates("SELECT id FROM users WHERE email = 'a@b.c'", catalog))
    # booleans: the rare failures
    failed = candidates("SELECT wafer_id FROM test_results WHERE NOT passed AND wafer_id = 3", catalog)
    assert IndexCandidate(TR, ("wafer_id",), where="NOT passed") in failed


def test_every_candidate_is_valid_ddl(catalog, dsn):
    queries = [DIE, "SELECT id FROM users WHERE lower(email) = 'x'",
               "SELECT id, email FROM users WHERE status = 'pending' ORDER BY id LIMIT 20",
               "SELECT id FROM test_results WHERE wafer_id = $1 ORDER BY die_x DESC, die_y LIMIT 5",
               "SELECT wafer_id FROM test_results WHERE NOT passed AND wafer_id = 3",
               "SELECT id FROM users WHERE profile ->> 'country' = '3' AND upper(email) LIKE 'AB%' AND trim(status) = $1",
               "SELECT id FROM users WHERE substr(email, 1, 3) = 'abc' AND left(email, 2) = 'ab'"]
    found = workload_candidates(queries, catalog, max_width=4).candidates
    assert sum(1 for c in found if "(" in c.columns[0]) >= 5 and any(c.where for c in found)
    with psycopg.connect(dsn) as conn:
        for candidate in found:
            conn.execute(f"CREATE INDEX {candidate.definition()}")
        conn.rollback()


def test_variants_of_one_key_get_names_of_their_own_that_the_server_takes(dsn):
    """A partial index and an INCLUDE variant on the same key were both idx_orders_created_at: the second
    CREATE INDEX of the printed SQL would fail. Each variant's name is its own, within 63 bytes."""
    base = IndexCandidate("public.users", ("status",))
    variants = [base, replace(base, include=("email",)), replace(base, include=("id",)),
                replace(base, where="status = 'pending'"), replace(base, method="hash"),
                IndexCandidate("public.users", ("status", "email", "id") * 6, include=("email",))]
    names = [v.name for v in variants]
    assert len(set(names)) == len(names) and names[0] == "idx_users_status"
    assert all(len(n) <= 63 for n in names) and names[3].startswith("idx_users_status_partial_")
    with psycopg.connect(dsn) as conn:
        for v in variants[:5]:
            conn.execute(v.ddl().replace(" CONCURRENTLY", ""))
        conn.rollback()


# --- existing indexes, thresholds ---------------------------------------------------------


def test_candidates_served_by_existing_indexes_are_moot(catalog):
    by_pk = "SELECT * FROM test_results WHERE id = $1"
    assert candidates(by_pk, catalog) == []
    audit = "SELECT action FROM audit_log WHERE lot_id = $1 ORDER BY at DESC LIMIT 10"
    result = workload_candidates([AdvisedQuery("q1", by_pk, None, 1.0), AdvisedQuery("q2", audit, None, 1.0)],
                                 catalog)
    moot = dict(result.moot)
    assert moot[IndexCandidate(TR, ("id",))] == "test_results_pkey"
    assert moot[IndexCandidate(AUDIT, ("lot_id", "at"))] == "audit_log_lot_at"
    assert moot[IndexCandidate(AUDIT, ("lot_id",))] == "audit_log_lot_at"
    # the covering variant is new: the existing index lacks "action"
    assert result.by_query["q2"] == (IndexCandidate(AUDIT, ("lot_id", "at"), include=("action",)),)
    assert result.by_query["q1"] == ()
    assert result.uses["q2"][AUDIT].order == (("at", "DESC"),)


def test_served_by_existing_rules(catalog):
    table = catalog.tables[USERS]
    base = next(i for i in table.indexes if i.primary)

    def with_index(**kw) -> Index:
        index = replace(base, name="x", primary=False, unique=False, backs_constraint=False, **kw)
        return index

    def served(candidate: IndexCandidate, index: Index) -> bool:
        return served_by_existing(candidate, replace(table, indexes=(index,))) is not None

    pending = IndexCandidate(USERS, ("email",), where="status = 'pending'")
    assert served(pending, with_index(columns=("email",), predicate="(status = 'pending'::text)"))
    assert not served(pending, with_index(columns=("email",), predicate="(status = 'active'::text)"))
    # a full index serves a partial one when it leads with the predicate's column: (status, email);
    # a full (email) walks the other statuses' entries too, which is what the partial index avoids
    assert served(pending, with_index(columns=("status", "email")))
    assert not served(pending, with_index(columns=("email",)))
    assert served(IndexCandidate(USERS, ("status",), where="status = 'pending'"), with_index(columns=("status",)))
    assert not served(IndexCandidate(USERS, ("email",)),
                      with_index(columns=("email",), predicate="(status = 'x'::text)"))
    assert served(IndexCandidate(USERS, ("id",), where="status = 'pending'"), with_index(columns=("status", "id")))
    assert not served(IndexCandidate(USERS, ("id",), where="status = 'pending'"), with_index(columns=("id",)))
    assert served(IndexCandidate(USERS, ("lower(email)",)), with_index(columns=("lower(email)",)))
    assert not served(IndexCandidate(USERS, ("email",)), with_index(columns=("email",), valid=False))
    assert not served(IndexCandidate(USERS, ("email",)), with_index(columns=("email",), method="hash"))
    assert not served(IndexCandidate(USERS, ("email",)),
                      with_index(columns=("email",), key_options=("text_pattern_ops",)))
    assert not served(IndexCandidate(USERS, ("status", "email")), with_index(columns=("email", "status")))
    # direction: all reversed is the same index scanned backwards, a mix is not
    two = with_index(columns=("status", "email"), key_options=("DESC", ""))
    assert served(IndexCandidate(USERS, ("status", "email DESC")), two)
    assert not served(IndexCandidate(USERS, ("status", "email")), two)
    assert served(IndexCandidate(USERS, ("status",)), two)
    assert not served(IndexCandidate(USERS, ("status",), include=("id",)), with_index(columns=("status",)))
    assert served(IndexCandidate(USERS, ("status",), include=("id",)), with_index(columns=("status", "id")))


def test_small_tables_get_no_candidates(catalog):
    sql = "SELECT * FROM lots WHERE status = 'active' AND product_id = $1"  # 20 rows
    assert candidates(sql, catalog) == []
    assert candidates(sql, catalog, min_rows=0)
    assert workload_candidates([sql], catalog).candidates == ()
    # what an existing index serves is reported whatever the size
    result = workload_candidates(["SELECT id, status FROM lots WHERE lot_code = $1"], catalog)
    assert result.candidates == () and (IndexCandidate(LOTS, ("lot_code",)), "lots_lot_code_key") in result.moot


def test_unparsable_and_multiple_statements(catalog):
    assert query_columns("SELEC nonsense FROM", catalog) == {}
    assert query_columns("SELECT 1; SELECT 2", catalog) == {}
    assert query_columns("SELECT id FROM no_such_table WHERE x = 1", catalog) == {}
    assert candidates("VACUUM users", catalog) == []


def test_a_table_the_catalog_does_not_know_may_hold_any_column(catalog):
    # PostgreSQL may find wafer_no in either table: no use is claimed for it (sqlglot's qualify would give it to wafers)
    uses = query_columns("SELECT w.id FROM wafers w, no_such_table n WHERE wafer_no = 3 AND w.lot_id = $1", catalog)
    assert uses[WAFERS].equality == ("lot_id",)


def test_walk_shows_each_predicate_with_its_columns_resolved(catalog):
    seen: list[tuple[str, tuple[str, str] | None]] = []

    def note(pred, column_of):
        column = pred.this if isinstance(pred.this, sqlglot.exp.Column) else None
        seen.append((pred.sql("postgres"), column_of(column) if column is not None else None))

    tree = sqlglot.parse_one("UPDATE wafers w SET yield_pct = 0 FROM lots l WHERE l.id = w.lot_id "
                             "AND (status = $1 OR id > 5)", read="postgres")
    found = walk(tree, catalog, on_predicate=note)
    assert [o.table.qualified for o in found] == [WAFERS, LOTS]
    assert seen == [("l.id = w.lot_id", (LOTS, "id")), ("status = $1", (LOTS, "status")),
                    ("id > 5", None)]  # id is in both tables: ambiguous


def test_workload_deduplicates_across_queries(catalog):
    queries = [AdvisedQuery("a", DIE, "$1 = '1', $2 = '2', $3 = '0'", 10.0),
               AdvisedQuery("b", DIE.replace("ORDER BY test_name", ""), None, 5.0),
               "SELECT email FROM users WHERE lower(email) = 'x'"]
    result = workload_candidates(queries, catalog)
    assert len(set(result.candidates)) == len(result.candidates)
    assert set(result.by_query["a"]) & set(result.by_query["b"])
    assert set(result.candidates) == {c for cands in result.by_query.values() for c in cands}
    assert len(result.by_query) == 3 and set(result.uses) == set(result.by_query)
    assert result.uses["a"][TR].equality == ("wafer_id", "die_x", "die_y")


@pytest.mark.corpus
def test_real_statements_never_raise(corpus_dir, catalog):
    """Statements from real servers' logs, against a catalog where every table and column exists."""
    base = catalog.tables[USERS]

    class EveryColumn(dict):
        def __contains__(self, name):
            return True

        def get(self, name, default=None):
            return Column(name, "integer", False, -0.5, 0.0, ("1",), (0.01,), 0.1)

    class EveryTable(Catalog):
        def table(self, name, schema=None):
            if schema is None and "." in name:
                schema, name = name.split(".", 1)
            table = replace(base, schema=schema or "public", name=name, columns=EveryColumn(), rows=1e6)
            self.tables[table.qualified] = table
            return table

    everything = EveryTable(catalog.server_version_num, catalog.settings, {}, ())
    statements: set[str] = set()
    for name, opener in (("rds.log.bz2", bz2.open), ("pg-syslog.2.gz", gzip.open)):
        with opener(corpus_dir / name, "rt", errors="replace") as f:
            statements |= {m.group(1) for m in re.finditer(r"(?:statement|execute [^:]*): (.*)", f.read())}
    ordered = sorted(statements)
    statements = set(ordered[::max(1, len(ordered) // 1500)])  # a spread-out sample, for time
    touched = 0
    for sql in statements:
        touched += bool(query_columns(sql, everything))
        candidates(sql, everything)
    assert touched > len(statements) / 2
