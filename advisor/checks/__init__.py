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
    c001_index_hygiene,
    l001_n_plus_one,
    l002_n_plus_one_writes,
    l003_cache_candidates,
    p001_full_scan,
    p002_index_filter,
    p003_misestimate,
    p004_spill,
    p005_nested_loop,
    p006_heap_fetches,
    p007_lossy_bitmap,
    p008_workers_not_launched,
    p009_large_offset,
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
    Check.of(l001_n_plus_one),
    Check.of(l002_n_plus_one_writes),
    Check.of(l003_cache_candidates),
    Check.of(p001_full_scan, "plans"),
    Check.of(p002_index_filter, "plans"),
    Check.of(p003_misestimate, "plans"),
    Check.of(p004_spill, "plans"),
    Check.of(p005_nested_loop, "plans"),
    Check.of(p006_heap_fetches, "plans"),
    Check.of(p007_lossy_bitmap, "plans"),
    Check.of(p008_workers_not_launched, "plans"),
    Check.of(p009_large_offset),  # reads plans where there are some, the query text otherwise
    Check.of(c001_index_hygiene, "catalog"),
)
