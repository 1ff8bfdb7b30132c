"""The checks, in the order they run: an explicit registry, no import-time magic.

Each module holds one check: its docstring states the problem, the signal and
threshold (a Thresholds field), how its impact is estimated and the fix; it
exposes CODE, NAME and run(ctx). Severity is never a check's own: every check
takes it from its impact with ``Context.severity`` (one rule, Thresholds.severity).
``needs`` says what a check reads besides the workload: query plans, the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType

from advisor.checks import (
    adv001_full_scan,
    adv002_index_filter,
    adv003_row_misestimate,
    adv004_disk_spill,
    adv005_nested_loop_scan,
    adv006_index_only_heap_fetches,
    adv007_lossy_bitmap,
    adv008_parallel_workers_short,
    adv009_large_offset,
    adv101_n_plus_one,
    adv102_n_plus_one_writes,
    adv103_cache_candidate,
    adv104_temp_spill,
    adv105_lock_waits,
    adv106_deadlocks,
    adv107_failing_statements,
    adv108_connection_churn,
    adv201_index_hygiene,
)
from advisor.checks.context import Context
from advisor.findings import Finding


@dataclass(frozen=True, slots=True)
class Check:
    code: str
    name: str
    needs: frozenset[str]  # of "log", "plans", "catalog"
    run: Callable[[Context], Iterable[Finding]]
    doc: str

    @classmethod
    def of(cls, module: ModuleType, *needs: str) -> Check:
        return cls(module.CODE, module.NAME, frozenset(needs or ("log",)), module.run, (module.__doc__ or "").strip())


CHECKS: tuple[Check, ...] = (
    Check.of(adv101_n_plus_one),
    Check.of(adv102_n_plus_one_writes),
    Check.of(adv103_cache_candidate),
    Check.of(adv104_temp_spill),  # reads ADV004's plans where there are some, to stay quiet where it speaks
    Check.of(adv105_lock_waits),
    Check.of(adv106_deadlocks),
    Check.of(adv107_failing_statements),
    Check.of(adv108_connection_churn),
    Check.of(adv001_full_scan, "plans"),
    Check.of(adv002_index_filter, "plans"),
    Check.of(adv003_row_misestimate, "plans"),
    Check.of(adv004_disk_spill, "plans"),
    Check.of(adv005_nested_loop_scan, "plans"),
    Check.of(adv006_index_only_heap_fetches, "plans"),
    Check.of(adv007_lossy_bitmap, "plans"),
    Check.of(adv008_parallel_workers_short, "plans"),
    Check.of(adv009_large_offset),  # reads plans where there are some, the query text otherwise
    Check.of(adv201_index_hygiene, "catalog"),
)
