"""ADV103 Cache candidates: the same read with the same parameters, again and again.

Problem: identical statements return identical rows; the application could
keep them for a while instead of asking again.
Signal: replaying the logged reads in order through LRU caches with a TTL
(workload/sessions.py), the largest cache serves at least
``cache_min_repeats`` of them. A write in the log to a table the read
depends on invalidates its cached entries, so a table written between
reads earns no hits. Writes the log did not record are not seen: with a
catalog, a read of any table whose counters show more than
``cache_max_writes_per_s`` rows changed a second (Catalog.write_rate) gets no
finding, as its cache would hold stale rows or be invalidated constantly.
Impact: the server time of the reads the largest cache would have served,
plus a round trip each. Severity: from that impact (``Thresholds.severity``).
Fix: an application-side cache with the TTL the replay shows to be enough,
invalidated when the tables it reads change.
"""

from __future__ import annotations

from collections.abc import Iterable

from advisor.checks.context import Context
from advisor.findings import Finding
from advisor.workload.tables import tables_of

CODE = "ADV103"
NAME = "cache_candidate"


def run(ctx: Context) -> Iterable[Finding]:
    for c in ctx.workload.cache:
        best_ttl, best_size, best_hits = max(c.hits, key=lambda h: (h[2], -h[0]))
        if best_hits < ctx.config.cache_min_repeats:
            continue
        tables = tables_of(c.normalized)
        written = _write_rates(ctx, tables)
        if any(rate > ctx.config.cache_max_writes_per_s for rate in written.values()):
            continue
        rates = {f"ttl {ttl:g}s, {size:,} entries": f"{hits / c.lookups:.0%}" for ttl, size, hits in c.hits}
        impact = round(c.served_ms + c.hits[-1][2] * ctx.config.round_trip_ms, 3)
        evidence = {"lookups": c.lookups, "hit_rates": rates, "served_ms": round(c.served_ms, 3)}
        if written:
            evidence["table_writes_per_s"] = {t: round(r, 3) for t, r in written.items()}
        yield Finding(
            code=CODE,
            check=NAME,
            severity=ctx.severity(impact),
            title=f"Repeated identical reads: {best_hits:,} of {c.lookups:,} would have been cache hits",
            suggestion=(
                f"Cache the result in the application (for example with a {best_ttl:g} s TTL, "
                f"{best_size:,} entries), invalidated when the tables it reads change."
            ),
            fingerprint=c.fingerprint,
            normalized=c.normalized,
            tables=tables,
            evidence=evidence,
            impact_ms=impact,
        )


def _write_rates(ctx: Context, tables: tuple[str, ...]) -> dict[str, float]:
    """Rows changed a second, by the catalog's counters, of the tables it knows."""
    catalog = ctx.catalog
    if catalog is None:
        return {}
    found = {}
    for name in tables:
        table = catalog.table(name.replace('"', ""))
        if table is not None and (rate := catalog.write_rate(table)) is not None:
            found[table.qualified] = rate
    return found
