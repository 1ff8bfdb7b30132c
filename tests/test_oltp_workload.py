"""The index benchmark's OLTP workload (benchmarks/oltp_workload.py) at a tiny scale: the shop runs for real,
its log read by the advisor's log reader gives one entry per statement with the calls the server counted,
and every entry's literal SQL plans as it stands."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import oltp_workload

from advisor.workload.fingerprint import fingerprint


@pytest.fixture(scope="module")
def loaded(pg_dsn, tmp_path_factory):
    """The shop loaded, and its tables' sizes then: before the app's writes dirty any page."""
    workdir = tmp_path_factory.mktemp("oltp")
    oltp_workload.load(pg_dsn, workdir, scale=0.01)
    return workdir, oltp_workload.data_size(pg_dsn)


@pytest.fixture(scope="module")
def recorded(pg_dsn, loaded):
    workdir, _ = loaded
    entries = oltp_workload.record(pg_dsn, workdir, seconds=3, threads=2)
    return entries, oltp_workload.last_recording(workdir)


def test_load_keeps_only_keys_and_unique_constraints(pg_dsn, loaded):
    _, sizes = loaded  # as the load left them (the app's writes, recorded later, dirty pages)
    with psycopg.connect(pg_dsn) as conn:
        indexes = conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = ANY(%s::regclass[]) "
                               "ORDER BY 1", (list(oltp_workload.TABLES),)).fetchall()
    assert [i for (i,) in indexes] == ["customers_email_key", "customers_pkey", "order_items_pkey", "orders_pkey",
                                       "products_pkey", "products_sku_key"]
    assert sizes["order_items"]["rows"] > 25_000
    assert all(table["all_visible"] == 1.0 for table in sizes.values()), sizes


def test_log_calls_equal_pg_stat_statements(recorded):
    entries, recording = recorded
    calls = recording["calls"]
    assert calls["equal"], [r for r in calls["entries"] if r["log"] != r["pg_stat_statements"]]
    assert calls["log_total"] == sum(w for _, _, w in entries) > 1000
    assert recording["seconds"] >= 3


def test_one_entry_per_statement_of_the_app_in_label_order(recorded):
    entries, _ = recorded
    labels = [label for label, _, _ in entries]
    assert labels == sorted(labels) and len(set(labels)) == len(labels)
    assert set(labels) <= set(oltp_workload.SQL)  # no statement the app did not send
    assert {"recent_orders", "customer_by_phone", "category_page", "order_insert", "order_pay"} <= set(labels)
    fingerprints = {fingerprint(sql).id for _, sql, _ in entries}
    assert len(fingerprints) == len(entries)


def test_reads_outnumber_writes(recorded):
    entries, _ = recorded
    reads = sum(w for _, sql, w in entries if sql.startswith("SELECT"))
    writes = sum(w for _, sql, w in entries if not sql.startswith("SELECT"))
    assert writes > 0 and reads > 4 * writes


def test_every_entry_plans_with_its_literals(pg_dsn, recorded):
    entries, _ = recorded
    with psycopg.connect(pg_dsn) as conn:
        for label, sql, _ in entries:
            assert "$" not in sql, label
            conn.execute(f"EXPLAIN {sql}")  # raises if a bound literal does not fit where its $n stood
        conn.rollback()


def test_bind_literals_leaves_strings_alone_and_quotes_values():
    sql = "SELECT '$1' || $1 FROM t WHERE a = $2 AND b = $10 AND c = 'it''s $2'"
    params = "$1 = 'x''y', $2 = NULL, $3 = '3', $4 = '4', $5 = '5', $6 = '6', $7 = '7', $8 = '8', $9 = '9', $10 = '10'"
    assert oltp_workload.bind_literals(sql, params) == (
        "SELECT '$1' || 'x''y' FROM t WHERE a = NULL AND b = '10' AND c = 'it''s $2'")
