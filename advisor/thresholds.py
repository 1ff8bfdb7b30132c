"""Every threshold the checks use, in one place, with its default and why. Overridable per run.

Severity is one rule for every check (``Thresholds.severity``): what a finding
costs (its ``impact_ms``) as a share of the workload's total time, and in
absolute time. A problem that is most of a tiny workload (``pgbench -i``'s 200
inserts in 49 ms) is not high; neither is a big number that is a sliver of a
month of log.
"""

from __future__ import annotations

from dataclasses import dataclass

from advisor.findings import Severity


@dataclass(frozen=True, slots=True)
class Thresholds:
    # --- severity, for every check ----------------------------------------------
    high_share: float = 0.20  # a finding costing a fifth of the workload's time …
    high_ms: float = 10_000.0  # … and 10 s in all is high: fixing it changes what users wait for
    medium_share: float = 0.05  # one twentieth of the time …
    medium_ms: float = 1_000.0  # … and a second in all is medium; anything less is low
    # --- plan checks -----------------------------------------------------------
    big_table_rows: int = 10_000  # a Seq Scan below this is cheap whatever it filters
    full_scan_removed_share: float = 0.90  # share of scanned rows a filter throws away
    full_scan_time_share: float = 0.20  # the scan must be a real share of the statement's time
    index_filter_removed_share: float = 0.80  # index scan rows fetched then filtered away
    index_filter_min_removed: int = 1_000  # fewer rows filtered away than this cost too little to index for
    misestimate_factor: float = 10.0  # actual vs estimated rows: an order of magnitude misleads plan choices
    misestimate_min_rows: int = 100  # ignore misestimates on tiny row counts
    stale_stats_modified_share: float = 0.20  # n_mod_since_analyze / rows: statistics suspected stale
    nested_loop_min_loops: int = 1_000  # inner side executed this often with a non-index path
    heap_fetches_share: float = 0.10  # of rows returned by an index-only scan
    large_offset: int = 1_000  # OFFSET at or above this is deep pagination
    heap_fetches_min: int = 1_000  # index-only scans with fewer heap fetches than this are not worth a VACUUM
    # --- log checks ------------------------------------------------------------
    n1_min_repeats: int = 5  # executions of one child fingerprint in one unit of work
    n1_max_gap_ms: float = 1_000.0  # a pause longer than this ends an autocommit unit of work (not a transaction)
    n1_max_unit_ms: float = 10_000.0  # an autocommit unit ends after this: a busy backend never pauses
    round_trip_ms: float = 0.2  # client round trip per statement, added to N+1 impact
    n1_writes_min_repeats: int = 10  # row-at-a-time writes: fewer are a normal small transaction
    paging_min_pages: int = 3  # the same read with a growing OFFSET this often in one unit is a paging loop
    cache_min_repeats: int = 5  # cache hits the replay must show before a cache is worth its invalidation
    cache_max_writes_per_s: float = 1.0  # a table changed more often (its counters) gets no cache advice
    # --- server event checks (the log's temp files, errors, sessions, lock waits) -------------
    temp_spill_min_bytes: int = 1_048_576  # a query's temp files in all; less is a blip the page cache absorbs
    temp_spill_memory_factor: float = 3.0  # a sort's tuples take about 3x their on-disk size in memory (ADV004's)
    failing_min_count: int = 3  # one query failing with one SQLSTATE: once or twice is a typo in psql, three is a pattern
    churn_min_sessions: int = 20  # an application's sessions in the log; fewer are a few scripts or workers starting
    churn_min_per_s: float = 1.0  # a new session a second or more: connecting is paid at a request rate, not at start-up
    churn_max_median_ms: float = 1_000.0  # a median session under a second is a request or two; a pool's last for hours
    connect_ms: float = 5.0  # assumed cost of opening a session (fork, authentication) on loopback: the log does not time it
    pool_headroom: float = 2.0  # arrivals come in bursts: a pool's max is twice the sessions in flight at the p95 time
    lock_wait_min_count: int = 1  # every logged lock wait already lasted deadlock_timeout (1 s by default)
    deadlock_min_count: int = 1  # a deadlock loses a transaction's work: one is worth its fix

    def severity(self, impact_ms: float | None, workload_ms: float | None) -> Severity:
        """The one severity rule: high from ``high_share`` of the workload's time and ``high_ms``,
        medium from ``medium_share`` and ``medium_ms``, else low. Without an impact in time (index
        hygiene) or a workload total, low: nothing shows it matters more."""
        if not impact_ms or not workload_ms:
            return Severity.low
        share = impact_ms / workload_ms
        if share >= self.high_share and impact_ms >= self.high_ms:
            return Severity.high
        if share >= self.medium_share and impact_ms >= self.medium_ms:
            return Severity.medium
        return Severity.low


DEFAULT = Thresholds()
