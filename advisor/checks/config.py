"""Every threshold the checks use, in one place, with its default and why. Overridable per run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Thresholds:
    # --- plan checks -----------------------------------------------------------
    big_table_rows: int = 10_000  # a Seq Scan below this is cheap whatever it filters
    full_scan_removed_share: float = 0.90  # share of scanned rows a filter throws away
    full_scan_time_share: float = 0.20  # the scan must be a real share of the statement's time
    index_filter_removed_share: float = 0.80  # index scan rows fetched then filtered away
    index_filter_min_removed: int = 1_000
    misestimate_factors: tuple[float, float, float] = (10.0, 100.0, 1000.0)  # low, medium, high
    misestimate_min_rows: int = 100  # ignore misestimates on tiny row counts
    stale_stats_modified_share: float = 0.20  # n_mod_since_analyze / rows: statistics suspected stale
    nested_loop_min_loops: int = 1_000  # inner side executed this often with a non-index path
    heap_fetches_share: float = 0.10  # of rows returned by an index-only scan
    large_offset: int = 1_000  # OFFSET at or above this is deep pagination
    plan_share_high: float = 0.50  # a problem node owning this share of its plan's time is high severity
    plan_share_medium: float = 0.20  # … this share medium; below it, low
    heap_fetches_min: int = 1_000  # index-only scans with fewer heap fetches than this are not worth a VACUUM
    # --- log checks ------------------------------------------------------------
    n1_min_repeats: int = 5  # executions of one child fingerprint in one unit of work
    n1_max_gap_ms: float = 1_000.0  # a pause longer than this ends a unit of work
    n1_max_unit_ms: float = 10_000.0  # and no unit outlasts this: a busy autocommit backend never pauses
    round_trip_ms: float = 0.2  # client round trip per statement, added to N+1 impact
    n1_writes_min_repeats: int = 10
    cache_window_ms: float = 60_000.0  # identical statement+parameters repeated within this window
    cache_min_repeats: int = 5


DEFAULT = Thresholds()
