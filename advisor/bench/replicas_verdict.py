"""`advisor bench replicas`' verdict: arms compared only on what they did, measured on the servers (an arm whose
reads mostly did not reach a replica is no replica result), and where each arm's reads went, in words."""

from __future__ import annotations

from advisor.bench.replicas_model import ReplicaArm

REPLICA_ARM_SHARE = 0.5  # an arm is a replica routing result when replicas answered at least this share of its reads
_FALLBACK_WORDS = {
    "no_healthy_replica": "no replica was healthy",
    "replica_error": "a replica connection failed",
    "read_your_writes_window": "the session had just written (read-your-writes window)",
    "read_your_writes_lsn_timeout": "the replica had not replayed the session's write in time",
}


def percent(share: float) -> str:
    """A share as a percentage that says 0 or 100 only when it is (0.2 %, not 0 %)."""
    return f"{share:.1%}" if 0 < share < 0.01 or 0.99 < share < 1 else f"{share:.0%}"


def _placement(arm: ReplicaArm) -> str:
    """Where an arm's reads went, measured: '87 % on replicas (…)', with the reasons when they fell back."""
    share = arm.replica_share
    answered = arm.answered_by_replicas + arm.answered_by_primary
    if share is None:
        return "no read completed"
    text = f"reads {percent(share)} on replicas ({arm.answered_by_replicas:,} of {answered:,})"
    if share >= REPLICA_ARM_SHARE or arm.policy == "primary":
        return text
    why = [f"{_FALLBACK_WORDS.get(r, r)} ({n:,})" for r, n in sorted(arm.fallback_reasons.items(), key=lambda x: -x[1])]
    why += [f"{dsn}: {reason}" for dsn, reason in arm.replica_problems.items()]
    fell = "all fell back" if share == 0 else "the rest fell back"
    return f"{text}, {fell} to the primary" + (f" because {'; '.join(why)}" if why else "")


def replica_verdict(arms: list[ReplicaArm], drill: dict | None) -> dict:
    """Compares arms only on what they did: an arm whose reads mostly did not reach a replica is no replica result."""
    summary = []
    by = {a.name: a for a in arms}
    base = by.get("primary_only")
    routed = [a for a in arms if a.name != "primary_only"]
    real = [a for a in routed if (a.replica_share or 0) >= REPLICA_ARM_SHARE and a.ops_per_s > 0]
    if real:
        best = max(real, key=lambda a: a.ops_per_s)
        versus = f", {best.ops_per_s / base.ops_per_s:.2f}x primary_only" if base and base.ops_per_s > 0 else ""
        summary.append(f"Of the arms whose reads reached the replicas ({len(real)} of {len(routed)}), {best.name} "
                       f"served the most requests ({best.ops_per_s:,.0f}/s{versus}; {_placement(best)}) on this host.")
    elif routed:
        summary.append(f"No arm's reads reached the replicas (at least {REPLICA_ARM_SHARE:.0%} of them): this run "
                       "measured the primary, not replica routing.")
    for a in routed:  # where every arm's reads went, measured on the servers
        extra = f", {a.fallbacks:,} fallbacks, p95 {a.p95_ms} ms" if a.read_your_writes else ""
        judged = "" if a in real else "; not compared as replica routing"
        summary.append(f"{a.name}: {_placement(a)}{extra}{judged}.")
    if arms:
        stale = [f"{a.name} {a.stale_reads}" for a in arms if a.stale_reads]
        summary.append("stale read-backs: " + (", ".join(stale) if stale else "none in any arm") + ".")
    if drill:
        if drill["ejected_after_s"] is not None:
            summary.append(f"drill: the stopped replica was ejected {drill['ejected_after_s']:.2f} s after its "
                           f"shutdown; {drill['failed_reads']} read(s) failed, {drill['failed_reads_after_ejection']} "
                           "after the ejection.")
        else:
            summary.append("drill: the stopped replica was not ejected within 20 s.")
        if drill["readmitted_after_s"] is not None:
            summary.append(f"drill: re-admitted {drill['readmitted_after_s']:.2f} s after the restart began.")
    return {"summary": summary, "compared": [a.name for a in real],
            "placement": {a.name: _placement(a) for a in arms}}

