"""The index search's moves, against a real server with HypoPG: widening an index into a covering
one, merging two covering needs into one index, and packing indexes on static tables."""

from __future__ import annotations

import math
import os
import signal
import threading
import time

import psycopg
import pytest

from advisor.db.catalog import read_catalog
from advisor.demo import vacuum_until_all_visible
from advisor.indexes.candidates import selectivity, static_table
from advisor.indexes.maintenance import entry_rate
from advisor.indexes.model import AdvisedQuery, IndexCandidate
from advisor.indexes.selection import advise
from advisor.indexes.whatif import WhatIf
from advisor.workload.fingerprint import fingerprint

MB = 1024 * 1024

# 400,000 line items of 20,000 parts: a part's average quantity is read by a correlated lookup
# (as TPC-H Q17 does), its suppliers more rarely. Only an index on (part_id, quantity) makes the
# frequent lookup index-only; a plain (part_id) is the best first pick per byte, so a search
# that can only add indexes or extend them by filter columns stops there under a tight budget.
SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, part_id int NOT NULL, supplier_id int NOT NULL,
                    quantity numeric(15,2) NOT NULL, price numeric(15,2) NOT NULL, shipped date NOT NULL,
                    note text NOT NULL);
INSERT INTO items SELECT g, g % 20000, g % 1000, (g * 7) % 50 + 1, (g * 13) % 100000 / 100.0,
                         date '2020-01-01' + (g * 31) % 2000, repeat('x', 60)
FROM generate_series(1, 400000) g;
CREATE TABLE modes (id int PRIMARY KEY, mode char(10) NOT NULL, weight int NOT NULL);
INSERT INTO modes SELECT g, CASE WHEN g % 10 < 3 THEN 'AIR' WHEN g % 10 < 6 THEN 'RAIL' ELSE 'TRUCK' END, g % 7
FROM generate_series(1, 20000) g;
CREATE TABLE events (id bigint PRIMARY KEY, account_id int NOT NULL, status text NOT NULL, body text NOT NULL);
INSERT INTO events SELECT g, g % 5000, CASE WHEN g % 1000 = 0 THEN 'failed' ELSE 'done' END, repeat('e', 80)
FROM generate_series(1, 200000) g;
VACUUM ANALYZE
"""

AVG_QUANTITY = "SELECT avg(quantity) FROM items WHERE part_id = 1234"
BY_SUPPLIER = "SELECT id, note FROM items WHERE part_id = 77 AND supplier_id = 77"
SHIPPED_PRICE = "SELECT shipped, price FROM items WHERE supplier_id = 12"
SHIPPED_QUANTITY = "SELECT shipped, quantity FROM items WHERE supplier_id = 40"


def queries(*weighted: tuple[str, float]) -> list[AdvisedQuery]:
    out = []
    for sql, weight in weighted:
        fp = fingerprint(sql)
        out.append(AdvisedQuery(fp.id, sql, None, weight, fp.normalized))
    return out


def sizes(dsn: str, *candidates: IndexCandidate) -> list[int]:
    """The advisor's size estimates, as its budget counts them."""
    with WhatIf(dsn) as whatif:
        return [whatif.size(c) for c in candidates]


def packed(*columns: str, include: tuple[str, ...] = ()) -> IndexCandidate:
    return IndexCandidate("public.items", columns, include, fillfactor=100)


@pytest.fixture(scope="module")
def dsn(schema_conn, pg_dsn, pg_cluster):
    if not pg_cluster.has_hypopg:
        pytest.fail("HypoPG is not installed on the test server: run scripts/setup.sh")
    assert vacuum_until_all_visible(schema_conn, "items"), "VACUUM did not mark every page of items all-visible"
    # The load's counters reach pg_stat_user_tables when the session flushes them, possibly after
    # ANALYZE reset n_mod_since_analyze: flush them first, then ANALYZE, so the tables look static.
    schema_conn.execute("SELECT pg_stat_force_next_flush()")
    schema_conn.execute("SELECT 1")
    schema_conn.execute("ANALYZE")
    return pg_dsn


def covers(candidate, column: str) -> bool:
    return column in candidate.columns or column in candidate.include


def test_a_chosen_index_is_widened_into_the_covering_one(dsn):
    plain, covering = sizes(dsn, packed("part_id"), packed("part_id", "quantity"))
    budget = covering + plain // 2  # room for one of them, not for both
    advice = advise(dsn, queries((AVG_QUANTITY, 100), (BY_SUPPLIER, 1)), budget_bytes=budget)
    picked = [r.candidate for r in advice.recommendations]
    assert len(picked) == 1 and picked[0].columns[0] == "part_id" and covers(picked[0], "quantity"), picked
    assert sum(r.estimated_size_bytes for r in advice.recommendations) <= budget
    assert advice.workload_cost_after < advice.workload_cost_before


def test_two_covering_needs_merge_into_one_index(dsn):
    one, merged = sizes(dsn, packed("supplier_id", include=("shipped", "price")),
                        packed("supplier_id", include=("shipped", "price", "quantity")))
    budget = merged + one // 3  # the merged index fits; two covering indexes do not
    advice = advise(dsn, queries((SHIPPED_PRICE, 10), (SHIPPED_QUANTITY, 10)), budget_bytes=budget)
    picked = [r.candidate for r in advice.recommendations]
    assert len(picked) == 1, picked
    assert picked[0].columns[0] == "supplier_id"
    assert all(covers(picked[0], c) for c in ("shipped", "price", "quantity")), picked
    assert {q.fingerprint for q in advice.recommendations[0].queries} == {q.fingerprint for q in queries(
        (SHIPPED_PRICE, 1), (SHIPPED_QUANTITY, 1))}


def test_indexes_on_a_static_table_are_packed_full(dsn):
    advice = advise(dsn, queries((AVG_QUANTITY, 1)))
    assert advice.recommendations
    assert all(r.candidate.fillfactor == 100 and "WITH (fillfactor = 100)" in r.candidate.ddl()
               for r in advice.recommendations)


def test_a_table_the_workload_writes_is_not_packed(dsn):
    write = "UPDATE items SET price = price + 1 WHERE id = 5"
    advice = advise(dsn, queries((AVG_QUANTITY, 1), (write, 1)))
    assert advice.recommendations
    assert all(r.candidate.fillfactor is None and "fillfactor" not in r.candidate.ddl()
               for r in advice.recommendations)


# A rare lookup by account, and a stream of inserts and HOT status updates on the same table.
BY_ACCOUNT = "SELECT id, status FROM events WHERE account_id = 42"
INSERT_EVENT = "INSERT INTO events (id, account_id, status, body) VALUES (300001, 7, 'new', 'x')"
SET_STATUS = "UPDATE events SET status = 'done' WHERE id = 12345"
BY_STATUS = "SELECT id FROM events WHERE status = 'failed' AND account_id = 1000"


def test_writes_make_an_index_pay_for_its_upkeep(dsn):
    read_only = advise(dsn, queries((BY_ACCOUNT, 1)))
    assert [r.candidate.columns[0] for r in read_only.recommendations] == ["account_id"]
    saving = read_only.workload_cost_before - read_only.workload_cost_after
    assert read_only.recommendations[0].write_cost == 0

    light = advise(dsn, queries((BY_ACCOUNT, 1), (INSERT_EVENT, 10)))
    assert [r.candidate.columns[0] for r in light.recommendations] == ["account_id"]
    upkeep = light.recommendations[0].write_cost
    assert upkeep > 0  # ten single-row inserts: ten entries, priced in the planner's units
    assert light.workload_cost_after == pytest.approx(light.workload_cost_before - saving + upkeep, rel=0.01)

    # As many inserts as the lookup saves cost units, and more: the index no longer pays.
    heavy = advise(dsn, queries((BY_ACCOUNT, 1), (INSERT_EVENT, 10 * saving / upkeep * 2)))
    assert heavy.recommendations == ()


def test_an_index_on_an_updated_column_ends_hot_updates_and_says_so(dsn):
    def reads_status(c) -> bool:  # as a key, an INCLUDE column or in a partial index's predicate
        return "status" in (*c.columns, *c.include) or "status" in (c.where or "")

    advice = advise(dsn, queries((BY_STATUS, 50), (SET_STATUS, 20)))
    by_status = [r for r in advice.recommendations if reads_status(r.candidate)]
    assert by_status, advice.recommendations
    index = by_status[0].candidate
    # A HOT update writes no index entry; one that sets an indexed column writes one to every index
    # of the table: the primary key's and the new one's, twenty times.
    assert all(r.write_cost == 0 for r in advice.recommendations if not reads_status(r.candidate))
    assert by_status[0].write_cost > 0
    assert any(index.name in n and "HOT" in n for n in advice.notes), advice.notes


def test_a_table_with_updates_is_not_static(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert static_table(read_catalog(conn).tables["public.modes"])
        conn.execute("UPDATE modes SET weight = weight + 1 WHERE id <= 10")
        conn.execute("SELECT pg_stat_force_next_flush()")
    with psycopg.connect(dsn, autocommit=True) as conn:  # a new session reads the flushed counters
        assert not static_table(read_catalog(conn).tables["public.modes"])


def test_char_n_values_match_their_padded_statistics(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        table = read_catalog(conn).tables["public.modes"]
    # pg_stats prints char(10) values padded ('AIR       '); the literal in a query is 'AIR'
    assert selectivity("mode", table, ("AIR",)) == pytest.approx(0.3, abs=0.03)
    assert selectivity("mode", table, ("AIR", "RAIL")) == pytest.approx(0.6, abs=0.03)


WORKLOAD = ((AVG_QUANTITY, 100), (BY_SUPPLIER, 5), (SHIPPED_PRICE, 10), (SHIPPED_QUANTITY, 10), (BY_ACCOUNT, 3),
            (BY_STATUS, 7), (INSERT_EVENT, 2))


def test_parallel_sessions_give_the_same_advice(dsn):
    one = advise(dsn, queries(*WORKLOAD), sessions=1)
    three = advise(dsn, queries(*WORKLOAD), sessions=3)
    assert [r.candidate for r in three.recommendations] == [r.candidate for r in one.recommendations]
    assert three.workload_cost_after == one.workload_cost_after
    assert [(q.cost_before, q.cost_after) for q in three.per_query] == [(q.cost_before, q.cost_after) for q in one.per_query]


def test_prefetched_costs_are_the_ones_cost_would_compute(dsn):
    qs = queries(*WORKLOAD)
    with psycopg.connect(dsn) as conn:
        catalog = read_catalog(conn)
    from advisor.indexes.candidates import workload_candidates

    configs = [frozenset([c]) for c in workload_candidates(qs, catalog).candidates[:6]]
    with WhatIf(dsn, sessions=3) as parallel, WhatIf(dsn) as serial:
        parallel.prefetch((q, config) for config in configs for q in qs)
        calls = parallel.whatif_calls
        assert calls >= len(qs)  # the helpers' EXPLAINs are counted
        assert [parallel.cost(q, config) for config in configs for q in qs] == \
               [serial.cost(q, config) for config in configs for q in qs]
        assert parallel.whatif_calls == calls  # every answer came from the cache


def test_a_table_vacuum_has_not_caught_up_with_gets_a_note(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS readings")
        conn.execute("CREATE TABLE readings (id bigint PRIMARY KEY, sensor int NOT NULL, value numeric(10,2) NOT NULL, "
                     "raw text NOT NULL) WITH (autovacuum_enabled = off)")
        conn.execute("INSERT INTO readings SELECT g, g % 2000, g % 997, repeat('r', 40) FROM generate_series(1, 150000) g")
        conn.execute("ANALYZE readings")  # statistics, but no VACUUM: no page is all-visible
    lookups = queries(("SELECT avg(value) FROM readings WHERE sensor = 17", 10), (AVG_QUANTITY, 10))
    advice = advise(dsn, lookups)
    tables = {r.candidate.table for r in advice.recommendations}
    assert tables == {"public.readings", "public.items"}, tables
    notes = [n for n in advice.notes if "all-visible" in n]
    assert len(notes) == 1 and notes[0].startswith("public.readings: only 0% ") and "VACUUM public.readings" in notes[0], advice.notes

    with psycopg.connect(dsn, autocommit=True) as conn:
        assert vacuum_until_all_visible(conn, "readings")
    assert not [n for n in advise(dsn, lookups).notes if "all-visible" in n]


# A ledger that keeps taking rows and re-keyed (non-HOT) updates after its last ANALYZE, none of
# them in the workload: as in a log of slow statements, only a read of it is there.
BY_ACCOUNT_LEDGER = "SELECT id, amount FROM ledger WHERE account = 42"


@pytest.fixture(scope="module")
def busy_ledger(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger (id bigint PRIMARY KEY, account int NOT NULL, amount numeric(12,2) NOT NULL)")
        conn.execute("INSERT INTO ledger SELECT g, g % 5000, g % 1000 FROM generate_series(1, 100000) g")
        conn.execute("SELECT pg_stat_force_next_flush()")  # the load's counters first, so ANALYZE resets them
        conn.execute("SELECT 1")
        conn.execute("VACUUM ANALYZE ledger")
        conn.execute("INSERT INTO ledger SELECT g, g % 5000, 1 FROM generate_series(100001, 120000) g")
        conn.execute("UPDATE ledger SET id = id + 1000000 WHERE id <= 5000")  # sets a key column: not HOT
        conn.execute("SELECT pg_stat_force_next_flush()")
    with psycopg.connect(dsn, autocommit=True) as conn:
        return read_catalog(conn).tables["public.ledger"]


def test_a_table_s_counters_stand_in_for_writes_the_workload_lacks(dsn, busy_ledger):
    table = busy_ledger
    assert table.n_mod_since_analyze == 25_000
    # 25,000 rows changed since ANALYZE, all of them inserts or non-HOT updates; over at least a minute
    rate = entry_rate(table)
    assert rate == pytest.approx(25_000 / max(table.seconds_since_analyze, 60.0))

    unscaled = advise(dsn, queries((BY_ACCOUNT_LEDGER, 100)))
    assert [r.candidate.columns[0] for r in unscaled.recommendations] == ["account"]
    assert unscaled.recommendations[0].write_cost == 0
    assert any("public.ledger's counters" in n and "not counted" in n for n in unscaled.notes), unscaled.notes

    span = 0.5  # seconds of workload: a few hundred rows written meanwhile
    counted = advise(dsn, queries((BY_ACCOUNT_LEDGER, 100)), workload_seconds=span)
    rec, = counted.recommendations
    with psycopg.connect(dsn) as conn:
        page, entry, operator = (float(conn.execute(f"SHOW {name}").fetchone()[0])
                                 for name in ("seq_page_cost", "cpu_index_tuple_cost", "cpu_operator_cost"))
    price = page + entry + operator * math.log2(table.rows)  # per index entry written
    assert rec.write_cost == pytest.approx(rate * span * price, rel=1e-6)
    assert any(rec.candidate.name in n and "charged in its write cost" in n for n in counted.notes), counted.notes

    # An hour of those writes costs the index more than the lookups it serves save.
    assert advise(dsn, queries((BY_ACCOUNT_LEDGER, 100)), workload_seconds=3600).recommendations == ()


def test_each_pick_is_a_progress_line_a_person_can_follow(dsn):
    """A search over a large workload takes minutes: each pick says what it took and where the cost stands."""
    lines: list[str] = []
    advice = advise(dsn, queries(*WORKLOAD), step=lines.append)
    picks = [line for line in lines if " picked, the latest " in line]
    assert advice.recommendations and len(picks) >= 1, lines
    assert any(r.candidate.label() in line for r in advice.recommendations for line in picks), picks
    shown = [float(line.split("workload cost ")[1].split("%")[0]) for line in picks]
    assert shown == sorted(shown, reverse=True)  # each pick lowers the cost
    # Pruning and exchanges after the last pick only lower it further.
    assert 100 * advice.workload_cost_after / advice.workload_cost_before <= shown[-1] * 1.005  # three digits shown


def test_a_time_limit_keeps_the_best_picks_so_far_and_says_so(dsn):
    """--search-seconds: a person at a terminal can bound the search; the advice says it stopped."""
    full = advise(dsn, queries(*WORKLOAD))
    assert full.search is not None and not full.search.stopped_early and full.recommendations
    cut = advise(dsn, queries(*WORKLOAD), search_seconds=0.0)
    assert cut.search is not None and cut.search.stopped_early
    assert not cut.recommendations and cut.workload_cost_after == cut.workload_cost_before
    assert any("--search-seconds" in note for note in cut.notes)


def test_ctrl_c_keeps_the_best_picks_so_far_and_says_so(dsn):
    """suggest-indexes' first Ctrl-C sets the event: the search stops at its next step, as a time limit does."""
    interrupted = threading.Event()
    interrupted.set()
    cut = advise(dsn, queries(*WORKLOAD), interrupted=interrupted)
    assert cut.search is not None and cut.search.stopped_early and not cut.recommendations
    assert any("interrupted (Ctrl-C)" in note and "best picks so far" in note for note in cut.notes), cut.notes


def test_the_first_ctrl_c_stops_the_search_and_a_second_one_aborts():
    """Real signals to this process: the first sets the event and is swallowed, the second interrupts."""
    from advisor.cli import _first_ctrl_c_stops

    with _first_ctrl_c_stops("the search") as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs in the main thread at its next bytecode
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
