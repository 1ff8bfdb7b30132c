"""The what-if engine against a real server: HypoPG and the scratch real-index backend."""

from __future__ import annotations

import psycopg
import pytest

from advisor.db.connect import TAG
from advisor.indexes.model import AdvisedQuery, IndexCandidate
from advisor.indexes.whatif import CandidateRejected, QueryNotCosted, WhatIf, WhatIfUnavailable, hypopg_missing

COMPOSITE = IndexCandidate("public.results", ("wafer_id", "die_x", "die_y", "test_name"))
DIE_X = IndexCandidate("public.results", ("die_x",))
WAFER = IndexCandidate("public.results", ("wafer_id",))
OTHER = IndexCandidate("public.other", ("x",))
LOOKUP_SQL = "SELECT * FROM results WHERE wafer_id = 17 AND die_x = 3 AND die_y = 4 ORDER BY test_name"
LOOKUP = AdvisedQuery("lookup", LOOKUP_SQL, None, 100)
BOUND_SQL = "SELECT * FROM results WHERE wafer_id = $1 AND die_x = $2 AND die_y = $3 ORDER BY test_name"


def query(sql: str, parameters: str | None = None, fingerprint: str | None = None) -> AdvisedQuery:
    return AdvisedQuery(fingerprint or sql, sql, parameters, 1)


@pytest.fixture(scope="module")
def db(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE results AS
            SELECT i / 1000 AS wafer_id, (i / 40) % 25 AS die_x, i % 40 AS die_y,
                   'test_' || (i % 7) AS test_name, random() AS value
              FROM generate_series(0, 199999) AS i""")
        conn.execute("CREATE TABLE other (id int PRIMARY KEY, x int)")
        conn.execute("INSERT INTO other SELECT i, i % 100 FROM generate_series(1, 5000) AS i")
        conn.execute("CREATE VIEW results_view AS SELECT * FROM results")
        conn.execute("CREATE FUNCTION all_results() RETURNS SETOF results LANGUAGE sql STABLE "
                     "AS 'SELECT * FROM results'")
        # A view that depends on a function only (its columns are the function's, not a table's).
        conn.execute("CREATE FUNCTION wafer_values() RETURNS TABLE (wafer_id int, die_x int, value float) "
                     "LANGUAGE sql STABLE AS 'SELECT wafer_id, die_x, value FROM results'")
        conn.execute("CREATE VIEW hidden_results AS SELECT * FROM wafer_values()")
        conn.execute("ANALYZE results")
        conn.execute("ANALYZE other")
    return pg_dsn


@pytest.fixture(scope="module")
def hypopg(pg_cluster, db):
    if not pg_cluster.has_hypopg:
        pytest.skip("HypoPG is not installed on this server (postgresql-<major>-hypopg)")
    return db


def index_names(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}


def checksum(dsn: str) -> tuple:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*), sum(value::numeric) FROM results").fetchone()


# --- HypoPG -------------------------------------------------------------------------


def test_the_composite_index_beats_none_and_a_single_column(hypopg):
    with WhatIf(hypopg) as w:
        none = w.existing_cost(LOOKUP)
        composite = w.cost(LOOKUP, {COMPOSITE})
        die_x = w.cost(LOOKUP, {DIE_X})
        assert composite < none / 100
        assert composite < die_x < none
        assert w.used(LOOKUP, {COMPOSITE, DIE_X}) == {COMPOSITE}
        assert w.used(LOOKUP, {DIE_X, OTHER}) == {DIE_X}
        assert w.used(LOOKUP, set()) == frozenset()
        assert w.cost(LOOKUP, {COMPOSITE, DIE_X}) == composite


def test_sizes_are_positive_and_grow_with_width(hypopg):
    with WhatIf(hypopg) as w:
        narrow, wide = w.size(DIE_X), w.size(COMPOSITE)
        assert 0 < narrow < wide
        assert w.size(OTHER) < narrow  # 5 000 rows against 200 000


def test_the_cache_keys_on_the_indexes_of_the_tables_the_query_touches(hypopg):
    with WhatIf(hypopg) as w:
        first = w.cost(LOOKUP, {COMPOSITE})
        assert (w.whatif_calls, w.cache_hits) == (1, 0)
        assert w.cost(LOOKUP, {COMPOSITE}) == first
        assert (w.whatif_calls, w.cache_hits) == (1, 1)
        assert w.cost(LOOKUP, {COMPOSITE, OTHER}) == first  # another table: cannot change the plan
        assert (w.whatif_calls, w.cache_hits) == (1, 2)
        w.used(LOOKUP, {COMPOSITE, OTHER})  # used() shares the cache
        assert (w.whatif_calls, w.cache_hits) == (1, 3)
        w.cost(LOOKUP, {COMPOSITE, DIE_X})  # same table: a new plan
        assert w.whatif_calls == 2
        # Back to a configuration seen before: the diff drops DIE_X again and the answer is cached.
        assert w.cost(LOOKUP, {COMPOSITE}) == first and w.whatif_calls == 2


def test_views_are_followed_to_their_tables(hypopg):
    through_view = query("SELECT * FROM results_view WHERE wafer_id = 17 AND die_x = 3 AND die_y = 4")
    with WhatIf(hypopg) as w:
        assert w.cost(through_view, {COMPOSITE}) < w.existing_cost(through_view) / 100
        calls = w.whatif_calls
        w.cost(through_view, {COMPOSITE, OTHER})
        assert w.whatif_calls == calls


@pytest.mark.parametrize("sql", [
    "SELECT * FROM all_results() WHERE wafer_id = 17 AND die_x = 3",  # a function sqlglot cannot see into
    "SELECT * FROM hidden_results WHERE wafer_id = 17 AND die_x = 3",  # only the plan tells
])
def test_tables_we_cannot_foresee_key_the_cache_on_the_whole_configuration(hypopg, sql):
    q = query(sql)
    with WhatIf(hypopg) as w:
        with_index = w.cost(q, {COMPOSITE})  # the SQL function is inlined: the index is planned
        assert with_index < w.existing_cost(q) / 10
        calls = w.whatif_calls
        assert w.cost(q, {COMPOSITE, OTHER}) == with_index
        assert w.whatif_calls == calls + 1  # no shortcut taken where we could not be sure


def test_logged_parameters_are_bound_and_bare_ones_get_a_generic_plan(hypopg):
    bound = query(BOUND_SQL, "$1 = '17', $2 = '3', $3 = '4'")
    generic = query(BOUND_SQL)
    with WhatIf(hypopg) as w:
        for config in (set(), {COMPOSITE}, {DIE_X}):
            assert w.cost(bound, config) == w.cost(LOOKUP, config)
        assert w.used(generic, {COMPOSITE, DIE_X}) == {COMPOSITE}
        # The values matter: one wafer's rows, or nearly all of them.
        below = "SELECT * FROM results WHERE wafer_id < $1"
        assert w.cost(query(below, "$1 = '1'"), {WAFER}) < w.cost(query(below, "$1 = '190'"), {WAFER}) / 10
        with pytest.raises(QueryNotCosted, match="parameters"):
            w.cost(query(BOUND_SQL, "$1 = 17"), set())


def test_only_what_classify_accepts_is_explained_and_writes_are_not_executed(hypopg):
    before = checksum(hypopg)
    with WhatIf(hypopg) as w:
        for sql in ("DROP TABLE results", "SELECT pg_sleep(10)", "SELECT 1; DROP TABLE results",
                    "COPY results TO '/tmp/x'"):
            with pytest.raises(QueryNotCosted) as caught:
                w.cost(query(sql), {COMPOSITE})
            assert caught.value.fingerprint == sql
        assert w.whatif_calls == 0
        update = query("UPDATE results SET value = 0 WHERE wafer_id = 17 AND die_x = 3 AND die_y = 4")
        assert w.cost(update, {COMPOSITE}) < w.existing_cost(update) / 100
        with pytest.raises(QueryNotCosted, match="SQL error"):
            w.cost(query("SELECT * FROM no_such_table"), set())
    assert checksum(hypopg) == before


def test_rows_changed_is_the_planner_s_estimate_of_the_rows_written(hypopg):
    before = checksum(hypopg)
    with WhatIf(hypopg) as w:
        assert w.rows_changed(LOOKUP) == 0  # a read writes nothing
        one_wafer = w.rows_changed(query("UPDATE results SET value = 0 WHERE wafer_id = 17"))
        assert 500 < one_wafer < 2000  # 1 000 rows per wafer
        in_a_cte = query("WITH gone AS (DELETE FROM other WHERE x = 1 RETURNING id) SELECT count(*) FROM gone")
        assert 20 < w.rows_changed(in_a_cte) < 150  # 50 of 5 000 rows have x = 1
    assert checksum(hypopg) == before


def test_a_rejected_candidate_leaves_the_engine_usable(hypopg):
    with WhatIf(hypopg) as w:
        with pytest.raises(CandidateRejected, match="no_such_column"):
            w.cost(LOOKUP, {IndexCandidate("public.results", ("no_such_column",))})
        with pytest.raises(CandidateRejected, match="does not exist"):
            w.size(IndexCandidate("public.no_such_table", ("x",)))
        assert w.cost(LOOKUP, {COMPOSITE}) < w.existing_cost(LOOKUP) / 100


def test_our_connection_is_tagged_and_nothing_hypothetical_survives(hypopg):
    with WhatIf(hypopg) as w:
        w.cost(LOOKUP, {COMPOSITE, OTHER})  # only the index on the query's table is made
        w.size(DIE_X)
        with psycopg.connect(hypopg, autocommit=True) as other:
            rows = other.execute("SELECT query FROM pg_stat_activity WHERE application_name = 'advisor' "
                                 "AND datname = current_database()").fetchall()
            assert rows and all(q.startswith(TAG) for (q,) in rows)
            # Hypothetical indexes live in our backend only.
            assert other.execute("SELECT count(*) FROM hypopg_list_indexes").fetchone()[0] == 0
        count = "SELECT count(*) FROM hypopg_list_indexes"
        assert w.backend.run(count).fetchone()[0] == 2
        w.reset()  # what close() does before disconnecting
        assert w.backend.run(count).fetchone()[0] == 0
        assert w.cost(LOOKUP, {COMPOSITE}) < w.existing_cost(LOOKUP) / 100  # still cached: costs outlive reset()
        assert w.backend.run(count).fetchone()[0] == 0
        w.cost(LOOKUP, {WAFER})  # a new configuration: made on demand
        assert w.backend.run(count).fetchone()[0] == 1
    assert w.backend.session.conn.closed
    with psycopg.connect(hypopg) as conn:
        assert conn.execute(count).fetchone()[0] == 0
    assert index_names(hypopg) == {"other_pkey"}


def test_without_the_extension_we_say_how_to_get_it(pg_cluster, hypopg):
    name = "advisor_test_whatif_no_hypopg"
    dsn = pg_cluster.create_database(name)
    try:
        with pytest.raises(WhatIfUnavailable) as caught:
            WhatIf(dsn)
        assert name in caught.value.cause and "not created" in caught.value.cause
        assert f'CREATE EXTENSION hypopg; in database "{name}"' in caught.value.fix
        assert "--scratch" in caught.value.fix
        # The real backend needs no extension.
        with WhatIf(dsn, backend="real", scratch=True) as w:
            assert w.existing_cost(query("SELECT 1")) >= 0
    finally:
        if hasattr(pg_cluster, "drop_database"):
            pg_cluster.drop_database(name)
    missing = hypopg_missing(False, 150004, "shop")
    assert "not installed" in missing.cause
    assert "apt-get install postgresql-15-hypopg" in missing.fix and 'CREATE EXTENSION hypopg; in database "shop"' \
        in missing.fix


# --- the real-index backend ------------------------------------------------------------


def test_the_real_backend_and_verify_need_the_scratch_flag(db):
    with pytest.raises(WhatIfUnavailable, match="scratch"):
        WhatIf(db, backend="real")
    with pytest.raises(ValueError):
        WhatIf(db, backend="dream", scratch=True)


def test_the_real_backend_orders_costs_like_hypopg_and_leaves_no_index(db):
    before = index_names(db)
    with WhatIf(db, backend="real", scratch=True) as w:
        none = w.existing_cost(LOOKUP)
        composite = w.cost(LOOKUP, {COMPOSITE})
        die_x = w.cost(LOOKUP, {DIE_X})
        assert composite < none / 100 and composite < die_x < none
        assert w.used(LOOKUP, {COMPOSITE, DIE_X}) == {COMPOSITE}
        assert w.cost(LOOKUP, {COMPOSITE, DIE_X}) == composite
        assert w.existing_cost(LOOKUP) == none  # the built indexes are dropped for the empty configuration
        calls = w.whatif_calls
        assert w.cost(LOOKUP, {COMPOSITE, OTHER}) == composite and w.whatif_calls == calls
        assert 0 < w.size(DIE_X) < w.size(COMPOSITE)
        bound = query(BOUND_SQL, "$1 = '17', $2 = '3', $3 = '4'")
        assert w.cost(bound, {COMPOSITE}) == composite
        assert w.used(query(BOUND_SQL), {COMPOSITE, DIE_X}) == {COMPOSITE}  # generic plan
        with pytest.raises(CandidateRejected, match="no_such_column"):
            w.cost(LOOKUP, {IndexCandidate("public.results", ("no_such_column",))})
        with pytest.raises(QueryNotCosted):
            w.cost(query("SELECT * FROM no_such_table"), set())
        assert w.cost(LOOKUP, {DIE_X}) == die_x  # the transaction survived both failures
        assert index_names(db) == before  # not even visible to others while we work
    assert index_names(db) == before


def test_hypopg_and_real_indexes_agree_on_the_order(hypopg):
    configs = [set(), {DIE_X}, {WAFER}, {COMPOSITE}]
    with WhatIf(hypopg) as h, WhatIf(hypopg, backend="real", scratch=True) as r:
        hypothetical = [h.cost(LOOKUP, c) for c in configs]
        real = [r.cost(LOOKUP, c) for c in configs]
    assert sorted(range(4), key=hypothetical.__getitem__) == sorted(range(4), key=real.__getitem__)


def test_verify_measures_before_and_after_and_rolls_back(db):
    before_indexes, before_rows = index_names(db), checksum(db)
    update = query("UPDATE results SET value = 0 WHERE wafer_id = 17 AND die_x = 3 AND die_y = 4")
    refused = query("DROP TABLE results")
    bound = query(BOUND_SQL, "$1 = '17', $2 = '3', $3 = '4'", "bound")
    with WhatIf(db, backend="real", scratch=True) as w:
        with pytest.raises(CandidateRejected):
            w.verify([LOOKUP], [IndexCandidate("public.results", ("no_such_column",))])
        w.cost(LOOKUP, {DIE_X})  # an index built in the engine's own transaction does not leak into verify
        measured = w.verify([LOOKUP, bound, update, refused], [COMPOSITE])
    for fingerprint in ("lookup", "bound"):
        m = measured[fingerprint]
        assert 0 < m["after_ms"] < m["before_ms"], m
        assert m["cost_after"] < m["cost_before"] / 100
    assert measured[update.fingerprint]["before_ms"] is None  # a write is never executed
    assert measured[update.fingerprint]["cost_after"] < measured[update.fingerprint]["cost_before"]
    assert "error" in measured[refused.fingerprint]
    assert index_names(db) == before_indexes and checksum(db) == before_rows
    with WhatIf(db, backend="real", scratch=True) as w:
        assert w.existing_cost(LOOKUP) == measured["lookup"]["cost_before"]


def test_verify_refuses_without_scratch(hypopg):
    with WhatIf(hypopg) as w, pytest.raises(WhatIfUnavailable, match="scratch"):
        w.verify([LOOKUP], [COMPOSITE])


# --- derived answers (advisor.indexes.whatif.costs: "Derived answers") ---------------------------

DIE_Y = IndexCandidate("public.results", ("die_y",))
SINGLE_SCAN = [LOOKUP_SQL, "SELECT wafer_id FROM results WHERE die_x = 3 AND die_y < 5",
               "SELECT * FROM results WHERE die_y = 7 ORDER BY wafer_id LIMIT 10",
               "SELECT * FROM results r JOIN other o ON o.x = r.die_y WHERE r.wafer_id = 3 AND r.die_x < 9"]


@pytest.mark.parametrize("sql", SINGLE_SCAN)
def test_a_derived_answer_is_the_one_the_planner_gives(hypopg, sql):
    """Two indexes of a table the statement names once: the plan uses one, so the cost with both is
    the cheaper of the costs with either, derived without an EXPLAIN, and equal to what EXPLAIN says."""
    q = query(sql)
    singles = [COMPOSITE, DIE_X, WAFER, DIE_Y]
    with WhatIf(hypopg) as derived, WhatIf(hypopg) as explained:
        for a in singles:
            derived.cost(q, {a})
        calls = derived.whatif_calls
        for i, a in enumerate(singles):
            for b in singles[i + 1:]:
                assert derived.cost(q, {a, b}) == explained.cost(q, {a, b}), (a, b)
                assert derived.used(q, {a, b}) == explained.used(q, {a, b})
        assert derived.cost(q, set(singles)) == explained.cost(q, set(singles))
        assert derived.whatif_calls - calls == 7 - derived.derived  # six pairs and the four at once
        # Only pairs a bitmap scan cannot combine: at most one of the two has a key the conditions
        # compare (LOOKUP's plan with DIE_X and DIE_Y is a BitmapAnd of both, cheaper than either).
        low, high = DERIVABLE[sql]
        assert low <= derived.derived <= high


# Per query: (at least, at most) the answers derived: its pairs of COMPOSITE, DIE_X, WAFER, DIE_Y with
# at most one index whose keys its conditions compare, and then perhaps the four at once.
DERIVABLE = {SINGLE_SCAN[0]: (0, 0), SINGLE_SCAN[1]: (3, 4), SINGLE_SCAN[2]: (5, 6), SINGLE_SCAN[3]: (0, 0)}


def test_nothing_is_derived_for_a_table_named_twice_or_a_plan_that_combines_indexes(hypopg):
    self_join = query("SELECT * FROM results a JOIN results b ON b.wafer_id = a.die_x WHERE a.die_y = 3")
    either = query("SELECT * FROM results WHERE wafer_id = 3 OR die_x = 4")  # a BitmapOr of both
    with WhatIf(hypopg) as w:
        for q in (self_join, either):
            w.cost(q, {WAFER})
            w.cost(q, {DIE_X})
            calls = w.whatif_calls
            w.cost(q, {WAFER, DIE_X})
            assert w.whatif_calls == calls + 1 and w.derived == 0
        assert w.used(either, {WAFER, DIE_X}) == {WAFER, DIE_X}  # the plan that made derivation unsafe
