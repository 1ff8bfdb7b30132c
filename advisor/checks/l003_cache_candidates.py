"""ADV103 Cache candidates: the same read with the same parameters, again and again.

Problem: identical statements return identical rows; the application could
keep them for a while instead of asking again.
Signal: replaying the logged reads in order through LRU caches with a TTL
(workload/sessions.py), the largest cache serves at least
``cache_min_repeats`` of them. Invalidation by writes is not modelled, so the
hit rates are upper bounds.
Impact: the server time of the reads the largest cache would have served,
plus a round trip each.
Fix: an application-side cache with the TTL the replay shows to be enough.
"""

from __future__ import annotations

from collections.abc import Iterable

from advisor.checks.context import Context
from advisor.checks.rewrite import tables_of
from advisor.findings import Finding, Severity

CODE = "ADV103"
NAME = "cache_candidate"


def run(ctx: Context) -> Iterable[Finding]:
    for c in ctx.workload.cache:
        best_ttl, best_size, best_hits = max(c.hits, key=lambda h: (h[2], -h[0]))
        if best_hits < ctx.config.cache_min_repeats:
            continue
        rates = {f"ttl {ttl:g}s, {size:,} entries": f"{hits / c.lookups:.0%}" for ttl, size, hits in c.hits}
        yield Finding(
            code=CODE,
            check=NAME,
            severity=Severity.low if best_hits < 1_000 else Severity.medium,
            title=f"Repeated identical reads: {best_hits:,} of {c.lookups:,} would have been cache hits",
            suggestion=(
                f"Cache the result in the application (for example with a {best_ttl:g} s TTL, "
                f"{best_size:,} entries), invalidated when the tables it reads change."
            ),
            fingerprint=c.fingerprint,
            normalized=c.normalized,
            tables=tables_of(c.normalized),
            evidence={"lookups": c.lookups, "hit_rates": rates, "served_ms": round(c.served_ms, 3)},
            impact_ms=c.served_ms + c.hits[-1][2] * ctx.config.round_trip_ms,
        )
