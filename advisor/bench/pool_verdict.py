"""`advisor bench pool`'s verdict from the arms it measured: the best pooled mode against a new connection per
request, where throughput stopped rising (a pool size), the connection headroom left, and with a PgBouncer
what it served, what psycopg's prepared statements did through it and the client settings that go with it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from advisor.bench.pgbouncer import PREPARED_SINCE
from advisor.bench.pool_arms import Bouncer
from advisor.bench.pool_model import PGBOUNCER_MODES, POOLED_MODES, Arm, PoolBenchConfig
from advisor.bench.pool_server import Server
from advisor.words import plural

SATURATION_GAIN = 0.10  # less than this gain from one concurrency level to the next: saturated


def pool_verdict(arms: Sequence[Arm], server: Server, cfg: PoolBenchConfig, bouncer: Bouncer | None) -> dict:
    """The verdict of the document; its ``pgbouncer`` part with a PgBouncer (local, or --pgbouncer-dsn)."""
    verdict = _verdict(arms, server, cfg)
    if bouncer is not None or cfg.pgbouncer_dsn:
        verdict["pgbouncer"] = _pgbouncer_verdict(arms, cfg, bouncer)
        verdict["summary"] += verdict["pgbouncer"]["summary"]
    return verdict


def _verdict(arms: Sequence[Arm], server: Server, cfg: PoolBenchConfig) -> dict:
    by = {(a.mode, a.transport, a.concurrency): a for a in arms}
    transports = list(dict.fromkeys(a.transport for a in arms if a.mode not in PGBOUNCER_MODES))
    levels = sorted(set(cfg.concurrency))
    speedups, saturation, summary = [], [], []

    def pooled_at(transport: str, c: int) -> list[Arm]:
        return [a for a in arms if a.mode in POOLED_MODES and a.concurrency == c and a.requests > 0
                and (a.transport == transport or a.mode in PGBOUNCER_MODES)]

    for transport in transports:
        for c in levels:
            base = by.get(("new_connection", transport, c))
            pooled = pooled_at(transport, c)
            if base is None or not pooled:
                continue
            best = max(pooled, key=lambda a: a.ops_per_s)
            ratio = round(best.ops_per_s / base.ops_per_s, 2) if base.ops_per_s > 0 else None
            speedups.append({"transport": transport, "concurrency": c, "best_mode": best.mode,
                             "best_ops_per_s": best.ops_per_s, "new_connection_ops_per_s": base.ops_per_s,
                             "speedup": ratio})
            if ratio is not None:
                summary.append(f"{transport}, concurrency {c}: {best.mode} served {ratio:g}x the requests per second "
                               f"of a new connection per request ({best.ops_per_s:,.0f} vs {base.ops_per_s:,.0f} ops/s).")
            else:
                summary.append(f"{transport}, concurrency {c}: new_connection completed no request; "
                               f"{best.mode} served {best.ops_per_s:,.0f} ops/s.")

    for transport in transports:  # PgBouncer's server pool has a size of its own: not in this series
        top = [a for a in pooled_at(transport, levels[-1]) if a.mode not in PGBOUNCER_MODES]
        if not top:
            continue
        best = max(top, key=lambda a: a.ops_per_s)
        mode, arm_transport = best.mode, best.transport  # pgbouncer keeps its own endpoint's label
        series = [(c, by[(mode, arm_transport, c)].ops_per_s) for c in levels if (mode, arm_transport, c) in by]
        size = None
        for (c0, ops0), (_, ops1) in itertools.pairwise(series):
            if ops1 < ops0 * (1 + SATURATION_GAIN):
                size = c0
                break
        saturation.append({"transport": transport, "mode": mode, "series": [list(p) for p in series], "pool_size": size})
        if len(series) < 2:
            summary.append(f"{transport}: one concurrency level measured, so where throughput stops rising is unknown.")
        elif size is None:
            summary.append(f"{transport}: {mode} throughput still rose by 10 % or more up to concurrency {series[-1][0]}, "
                           "the highest measured; larger pools were not measured.")
        else:
            nxt = next(ops for c, ops in series if c > size)
            cur = dict(series)[size]
            summary.append(f"{transport}: {mode} throughput stopped rising at pool size {size} "
                           f"({cur:,.0f} ops/s; the next level gave {nxt:,.0f}, less than 10 % more).")

    usable = server.max_connections - server.reserved
    peaks = [a.peak_server_backends for a in arms if a.concurrency == levels[-1] and a.peak_server_backends is not None]
    headroom = None
    if peaks:
        peak = max(peaks)
        headroom = {"concurrency": levels[-1], "peak_server_backends": peak, "max_connections": server.max_connections,
                    "usable": usable, "headroom": usable - peak}
        summary.append(f"At concurrency {levels[-1]} the server peaked at {peak} client backends (all databases, the "
                       f"monitor not counted) of {usable} usable (max_connections {server.max_connections} - "
                       f"{server.reserved} reserved): {usable - peak} left.")
    return {"speedups": speedups, "saturation": saturation, "headroom": headroom, "summary": summary}


def _first_failure(arm: Arm) -> str | None:
    """The first error an arm met, from its note."""
    for part in (arm.note or "").split("; "):
        if part.startswith("first failure: "):
            return part.removeprefix("first failure: ")
    return None


def _pgbouncer_verdict(arms: Sequence[Arm], cfg: PoolBenchConfig, bouncer: Bouncer | None) -> dict:
    """What PgBouncer bought at the highest concurrency (backends used, throughput, connect time), what psycopg's
    prepared statements did through transaction pooling, and the client settings that go with PgBouncer."""
    top = max(cfg.concurrency)
    by = {(a.mode, a.transport, a.concurrency): a for a in arms}
    direct = [a.transport for a in arms if a.mode == "new_connection"]
    base = by.get(("new_connection", "tcp" if "tcp" in direct else direct[0], top)) if direct else None
    size = bouncer.pool_size if bouncer else None
    served, summary = [], []
    for transport in dict.fromkeys(a.transport for a in arms if a.mode in PGBOUNCER_MODES):
        pool_mode = transport.removeprefix("pgbouncer-") if bouncer else None
        ran = [by[k] for k in (("pgbouncer", transport, top), ("pgbouncer_pool", transport, top))
               if k in by and by[k].requests > 0]
        if not ran:
            continue
        best = max(ran, key=lambda a: a.ops_per_s)
        opened = by.get(("pgbouncer", transport, top))
        served.append({
            "transport": transport, "pool_mode": pool_mode, "pool_size": size, "concurrency": top,
            "best_mode": best.mode, "ops_per_s": best.ops_per_s, "peak_backends": best.peak_backends,
            "connect_p50_ms": opened.connect_p50_ms if opened else None,
            "new_connection_ops_per_s": base.ops_per_s if base else None,
            "new_connection_peak_backends": base.peak_backends if base else None,
            "new_connection_connect_p50_ms": base.connect_p50_ms if base else None,
        })
        who = f"PgBouncer, {pool_mode} pooling, pool size {size}" if bouncer else "your PgBouncer"
        backends = "?" if best.peak_backends is None else best.peak_backends
        line = (f"{who}: {plural(top, 'client')} served by {backends} backends at {best.ops_per_s:,.0f} ops/s "
                f"({best.mode})")
        if base is not None and base.elapsed_s > 0:
            line += (f"; a new connection per request straight to the server: {base.ops_per_s:,.0f} ops/s, "
                     f"{base.connections_opened / base.elapsed_s:,.0f} backends started a second, "
                     f"{'?' if base.peak_backends is None else base.peak_backends} at once")
        summary.append(line + ".")
        if opened and base and opened.connect_p50_ms and base.connect_p50_ms:
            summary.append(f"{who}: a new connection to PgBouncer opened in {opened.connect_p50_ms:.2f} ms (median), "
                           f"one straight to the server in {base.connect_p50_ms:.2f} ms.")
    prepared = _prepared_verdict(arms, bouncer)
    summary += prepared.pop("summary") if prepared else []
    advice = _pgbouncer_advice(arms, bouncer)
    return {"served": served, "prepared_statements": prepared, "advice": advice, "summary": summary + advice}


def _prepared_verdict(arms: Sequence[Arm], bouncer: Bouncer | None) -> dict | None:
    """psycopg's default prepare_threshold through (transaction) pooling against prepare_threshold=None."""
    transport = "pgbouncer-transaction" if bouncer else None
    tried = [a for a in arms if a.mode == "pgbouncer_pool_prepared" and (transport is None or a.transport == transport)]
    if not tried:
        return None
    fixed = [a for a in arms if a.mode == "pgbouncer_pool" and a.transport in {a.transport for a in tried}]
    version = ".".join(map(str, bouncer.version)) if bouncer else None
    supported = bouncer.version >= PREPARED_SINCE if bouncer else None
    failed = sum(a.errors for a in tried)
    sent = sum(a.requests + a.errors + a.timeouts for a in tried)
    first = next((f for a in tried if (f := _first_failure(a))), None)
    out: dict[str, Any] = {
        "pool_mode": "transaction" if bouncer else None, "pgbouncer_version": version,
        "max_prepared_statements": 200 if supported else None,
        "default_prepare_threshold": {"requests": sent, "errors": failed, "first_error": first},
        "prepare_threshold_none": {"requests": sum(a.requests + a.errors + a.timeouts for a in fixed),
                                   "errors": sum(a.errors for a in fixed),
                                   "ops_per_s": max((a.ops_per_s for a in fixed), default=None)},
    }
    where = f"PgBouncer {version} in transaction mode" if bouncer else "your PgBouncer"
    fix = out["prepare_threshold_none"]
    measured = (f" (measured: {fix['errors']} errors in {fix['requests']:,} requests, {fix['ops_per_s']:,.0f} ops/s)"
                if fixed and fix["ops_per_s"] is not None else "")
    upgrade = "or PgBouncer 1.21+ with max_prepared_statements set (e.g. 100)"
    if failed:
        out["summary"] = [
            f"prepared statements: psycopg 3 with its default prepare_threshold (it prepares a query after 5 runs) "
            f"failed {failed:,} of {sent:,} requests through {where} (first: {first}): PgBouncer before 1.21 does not "
            f"follow protocol-level prepared statements across the server connections it lends. Fix: connect with "
            f"prepare_threshold=None{measured}, {upgrade}."]
    elif supported:
        out["summary"] = [f"prepared statements: {where} with max_prepared_statements = 200 kept psycopg's prepared "
                          f"statements: no error in {sent:,} requests with the default prepare_threshold."]
    else:
        out["summary"] = [
            f"prepared statements: psycopg's default prepare_threshold raised no error through {where} in {sent:,} "
            "requests (each client kept to one server connection at this concurrency); it fails once clients share "
            f"server connections in transaction mode before PgBouncer 1.21: use prepare_threshold=None, {upgrade}."]
    return out


def _pgbouncer_advice(arms: Sequence[Arm], bouncer: Bouncer | None) -> list[str]:
    """Client settings for an application behind PgBouncer, where the arms make them matter."""
    advice = ["behind PgBouncer let PgBouncer pool: SQLAlchemy create_engine(..., poolclass=NullPool) opens a "
              "connection to PgBouncer per request (the pgbouncer arm measures just that); a small client pool "
              "(pgbouncer_pool) also saves the connect round trip to PgBouncer."]
    if any(a.mode in PGBOUNCER_MODES and a.transport != "pgbouncer-session" for a in arms):
        advice.append(
            "in transaction mode: no client-side reset (no DISCARD ALL or RESET ALL in a psycopg_pool reset= "
            "callback or a SQLAlchemy checkin event): it runs on a server connection PgBouncer lends to others, costs "
            "a round trip per checkout and, from 1.21, drops the statements PgBouncer prepared; session state (SET, "
            "temporary tables, advisory locks, LISTEN) does not outlive a transaction.")
    return advice
