"""Units of work, paging loops and cache advice on the log of a real psycopg 3 application.

The app runs against the harness server with statement logging on for its own
sessions (extended protocol: `execute <unnamed>` lines with parameters). The
stderr log (no virtual transaction id in its prefix), the csvlog and the
jsonlog (with one) must tell the same story:
- an N+1 inside one transaction that outlasts ``n1_max_unit_ms`` is one unit,
  one finding; the same loop in autocommit is cut by the cap;
- a loop over pages with a growing OFFSET is ADV009 with its keyset fix, not ADV101;
- a table read again and again but written in between gets no cache finding
  (writes in the log), nor does one the log shows no writes to but whose
  counters do (writes the log did not record); a read-mostly table still does;
- row-at-a-time inserts of a tiny load are reported, but not as high.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import psycopg
import pytest
from batched_proof import from_evidence, rows_by_key

from advisor.checks import adv009_large_offset, adv101_n_plus_one, adv102_n_plus_one_writes, adv103_cache_candidate
from advisor.checks.context import Context
from advisor.db.catalog import read_catalog
from advisor.findings import Severity
from advisor.thresholds import Thresholds
from advisor.workload.sources import collect, read_logs

CONFIG = Thresholds(n1_max_unit_ms=50)  # a 10 s transaction is impractical here: lower the cap instead
CHILDREN = 24
PAGES = (0, 40, 80, 120, 160, 200)
READS = 30
BUSY_UPDATES = 400
LOAD_ROWS = 200

SETUP = """
CREATE TABLE branches (bid int PRIMARY KEY);
INSERT INTO branches SELECT g FROM generate_series(1, 30) g;
CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL);
INSERT INTO accounts SELECT g, 1 + g % 20, 0 FROM generate_series(1, 4000) g;
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;
CREATE TABLE prices (id int PRIMARY KEY, price int NOT NULL) WITH (autovacuum_enabled = off);
INSERT INTO prices SELECT g, g FROM generate_series(1, 10) g;
CREATE TABLE quotes (id int PRIMARY KEY, bid int NOT NULL) WITH (autovacuum_enabled = off);
INSERT INTO quotes SELECT g, g FROM generate_series(1, 10) g;
CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL) WITH (autovacuum_enabled = off);
INSERT INTO settings VALUES ('theme', 'dark'), ('lang', 'en');
CREATE TABLE audit (id int, action text)
"""


def n_plus_one_in_a_transaction(conn: psycopg.Connection) -> None:
    """One request: the branches, then each branch's account count, slowly enough to outlast the cap."""
    with conn.transaction():
        bids = [b for (b,) in conn.execute("SELECT bid FROM branches ORDER BY bid LIMIT %s", [CHILDREN])]
        for bid in bids:
            conn.execute("SELECT count(*) FROM accounts WHERE bid = %s", [bid]).fetchone()
            time.sleep(0.005)


def distinct_per_branch(conn: psycopg.Connection) -> None:
    """An N+1 whose batched form cannot be proven (DISTINCT): the finding must say so, not guess."""
    with conn.transaction():
        for bid in range(1, 7):
            conn.execute("SELECT DISTINCT abalance FROM accounts WHERE bid = %s", [bid]).fetchall()


def the_same_loop_in_autocommit(conn: psycopg.Connection) -> None:
    for bid in range(1, CHILDREN + 1):
        conn.execute("SELECT sum(abalance) FROM accounts WHERE bid = %s", [bid]).fetchone()
        time.sleep(0.005)


def export_by_pages(conn: psycopg.Connection) -> None:
    """A paging loop: every page re-reads all the rows before it."""
    with conn.transaction():  # one consistent export
        for offset in PAGES:
            conn.execute("SELECT id, name FROM items ORDER BY id LIMIT %s OFFSET %s", [40, offset]).fetchall()


def quote_board(conn: psycopg.Connection) -> None:
    """Prices read again and again, and changed between reads; settings read and never changed;
    quotes read, changed by a writer the log does not show."""
    for i in range(READS):
        conn.execute("SELECT price FROM prices WHERE id = %s", [1]).fetchone()
        conn.execute("SELECT p.price FROM prices AS p WHERE p.id = %s", [1]).fetchone()  # an ORM's alias
        conn.execute("UPDATE prices SET price = price + 1 WHERE id = %s", [2 + i % 5])
        conn.execute("SELECT value FROM settings WHERE key = %s", ["theme"]).fetchone()
        conn.execute("SELECT bid FROM quotes WHERE id = %s", [1]).fetchone()
        conn.execute("SELECT q.bid FROM quotes q WHERE q.id = %s", [1]).fetchone()


def bulk_load(conn: psycopg.Connection) -> None:
    """As `pgbench -i -s 20` loads its tellers: 200 single-row INSERTs in one transaction."""
    with conn.transaction():
        for i in range(LOAD_ROWS):
            conn.execute("INSERT INTO audit (id, action) VALUES (%s, %s)", [i, "load"])


@pytest.fixture(scope="module")
def app(embedded_cluster, pg_dsn):
    name = f"shop-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_dsn, autocommit=True) as setup:  # not logged: not the app's workload
        for statement in SETUP.split(";"):
            setup.execute(statement)
        setup.execute("SELECT pg_stat_force_next_flush()")  # the loads' counts land before the reset, not after
        setup.execute("SELECT pg_stat_reset()")  # this database's counters start now: the write rates are ours
    logged = "-c log_min_duration_statement=0"
    with psycopg.connect(pg_dsn, autocommit=True, application_name=name, options=logged) as conn, \
            psycopg.connect(pg_dsn, autocommit=True) as writer:
        n_plus_one_in_a_transaction(conn)
        distinct_per_branch(conn)
        the_same_loop_in_autocommit(conn)
        export_by_pages(conn)
        with writer.transaction():  # a busy writer whose statements are under log_min_duration_statement
            for i in range(BUSY_UPDATES):
                writer.execute("UPDATE quotes SET bid = bid + 1 WHERE id = %s", [1 + i % 10])
        writer.execute("SELECT pg_stat_force_next_flush()")
        quote_board(conn)
        bulk_load(conn)
        conn.execute("SELECT pg_stat_force_next_flush()")
        marker = f"SELECT 'done {name}'"
        conn.execute(marker)
    deadline = time.monotonic() + 15
    while any(marker not in log.read_text(errors="replace")
              for log in (embedded_cluster.stderr_log, embedded_cluster.csv_log, embedded_cluster.json_log)):
        assert time.monotonic() < deadline, "the server log never showed the run"
        time.sleep(0.1)
    with psycopg.connect(pg_dsn) as conn:
        catalog = read_catalog(conn)
        calls = dict(conn.execute("SELECT query, calls FROM pg_stat_statements").fetchall())
    return name, catalog, calls, embedded_cluster


@pytest.fixture(scope="module", params=["stderr", "csv", "json"])
def findings(app, request):
    name, catalog, calls, cluster = app
    log = {"stderr": cluster.stderr_log, "csv": cluster.csv_log, "json": cluster.json_log}[request.param]
    workload = collect(read_logs([str(log)], jobs=1, config=CONFIG))
    ctx = Context(workload=workload, catalog=catalog, config=CONFIG)
    ours = {q.fingerprint for q in workload.queries if name in q.applications}
    load = tuple(q for q in workload.queries if q.fingerprint in ours and "INTO audit" in q.normalized)
    found = [f for check in (adv101_n_plus_one, adv102_n_plus_one_writes, adv103_cache_candidate, adv009_large_offset)
             for f in check.run(ctx) if f.fingerprint in ours]
    repeats = [r for r in workload.repeats if name in r.applications]
    # The load alone, as the log of a fresh `pgbench -i` holds it: all of the workload's time, and little of it.
    alone = Context(workload=replace(workload, queries=load), config=CONFIG)
    found += [f for f in adv102_n_plus_one_writes.run(alone) if f.fingerprint in ours]
    return found, repeats, calls, catalog


def _about(found, text):
    return [f for f in found if text.lower() in (f.normalized or "").lower()]


def test_an_n_plus_one_inside_one_transaction_is_one_finding(findings):
    found, _repeats, calls, _ = findings
    (finding,) = _about(found, "count(*) FROM accounts")
    assert finding.code == "ADV101"
    assert finding.evidence["occurrences"] == 1
    assert finding.evidence["statements"] == calls["SELECT count(*) FROM accounts WHERE bid = $1"] == CHILDREN
    assert "FROM branches" in finding.evidence["parent"]



def test_the_printed_aggregate_rewrite_counts_per_key(findings, pg_dsn):
    """It printed one count per branch, typed from the catalog; run, it matches the 24 counts one by one."""
    found, _, _, _ = findings
    (finding,) = _about(found, "count(*) FROM accounts")
    batched = from_evidence(finding.evidence["batched"])
    assert batched.kind == "aggregate" and batched.sql in finding.suggestion and "UNNEST($1::integer[])" in batched.sql
    with psycopg.connect(pg_dsn) as conn:
        expected, got = rows_by_key(conn, finding.normalized, batched, list(range(1, CHILDREN + 1)) + [99])
    assert expected[21] == [(0,)] and expected[1] == [(200,)]  # branches 21-24 and 99 have no accounts
    assert got == expected


def test_no_rewrite_is_printed_where_none_is_provable(findings):
    found, _, _, _ = findings
    (finding,) = _about(found, "DISTINCT abalance")
    assert finding.code == "ADV101" and finding.evidence["batched"] == {"none_known": "it uses DISTINCT"}
    assert finding.suggestion.startswith("No equivalent batched form of this query is known (it uses DISTINCT)")
    assert "ANY(" not in finding.suggestion and "selectinload" in finding.suggestion  # the ORM advice stays


def test_the_cap_still_cuts_an_autocommit_stream(findings):
    found, _, calls, _ = findings
    (finding,) = _about(found, "sum(abalance) FROM accounts")
    assert calls["SELECT sum(abalance) FROM accounts WHERE bid = $1"] == CHILDREN
    # 24 lookups 5 ms apart outlast the 50 ms cap: several units (a last slice under n1_min_repeats is no run).
    assert finding.evidence["occurrences"] >= 2
    assert CHILDREN - CONFIG.n1_min_repeats < finding.evidence["statements"] <= CHILDREN


def test_a_growing_offset_loop_is_pagination_not_n_plus_one(findings):
    found, repeats, calls, _ = findings
    (finding,) = _about(found, "FROM items")
    assert finding.code == "ADV009"
    assert finding.evidence["pages"] == calls["SELECT id, name FROM items ORDER BY id LIMIT $1 OFFSET $2"] == len(PAGES)
    assert finding.evidence["deepest_offset"] == PAGES[-1] and finding.evidence["paging_loops"] == 1
    assert "OFFSET" not in finding.suggestion.split(";")[0] and "> :last_id" in finding.suggestion
    assert not [r for r in repeats if "FROM items" in r.child_normalized and r.kind == "n_plus_one"]


def test_no_cache_advice_for_tables_written_between_reads(findings):
    found, _, calls, _catalog = findings
    # pg_stat_statements counts the aliased read with the plain one: it does not jumble aliases.
    assert calls["SELECT price FROM prices WHERE id = $1"] == 2 * READS
    assert not _about(found, "FROM prices")  # every read follows an UPDATE of prices in the log, aliased or not
    (settings,) = _about(found, "FROM settings")  # read as often, never written: still a cache candidate
    assert settings.code == "ADV103" and settings.evidence["lookups"] == READS
    assert settings.evidence["table_writes_per_s"] == {"public.settings": 0.0}


def test_no_cache_advice_for_tables_the_counters_show_busy(findings):
    found, _, _, catalog = findings
    quotes = catalog.table("quotes")
    assert quotes.n_tup_upd == BUSY_UPDATES  # the server's own count of the writes the log does not show
    assert catalog.write_rate(quotes) == pytest.approx(BUSY_UPDATES / max(catalog.stats_age_seconds, 1.0))
    assert catalog.write_rate(quotes) > CONFIG.cache_max_writes_per_s
    assert not _about(found, "FROM quotes")


def test_a_one_off_bulk_load_is_reported_but_not_high(findings):
    found, _, calls, _ = findings
    in_app, alone = _about(found, "INSERT INTO audit")  # among the app's work, then as its whole log
    for finding in (in_app, alone):
        assert finding.code == "ADV102"
        assert finding.evidence["statements"] == calls["INSERT INTO audit (id, action) VALUES ($1, $2)"] == LOAD_ROWS
        assert finding.evidence["most_per_occurrence"] == LOAD_ROWS
    assert alone.impact_ms == pytest.approx(alone.evidence["spent_ms"]) and alone.impact_ms < CONFIG.medium_ms
    assert alone.severity == in_app.severity == Severity.low  # all of a tiny workload, but milliseconds
