"""`advisor scan`: workload → catalog → plans → checks → ranked findings.

With a DSN the catalog is read once, the round trip is measured, and the
queries that matter most are explained under the safety rules of
db/explain.py. Without one, only the checks that need no database run, and
the result says which were skipped and why.

A query explained with representative values (``$n`` without logged values)
has its findings say which values (``parameter_values``; the literals in
``parameters_sql``, masked unless asked) and the explained time against the
measured mean. A plan that does not explain the measured mean is listed under
``not_explained`` with why. What this role may not read (hidden
pg_stat_statements rows, tables it cannot SELECT) is in ``notes``, with the GRANT.

Plans already in the log (auto_explain, JSON or text: plan_text.py) are
checked as the advisor's own EXPLAINs are, with or without a database; their
findings say so (``plan_source``, ``plan_logged_at``). ``explain`` decides
what is still explained against the database: ``missing`` (the default) only
the queries the log has no analysed plan for, so a query is not run again;
``always`` every chosen query, as without logged plans; ``never`` nothing.

When the log shows an application connecting per request (ADV108 would fire),
the cost of a new connection to the database is measured (``Context.connect_ms``:
the median of a few, opened and closed at once as the advisor's own), so the
time lost to connecting is measured rather than assumed; otherwise no extra
connection is opened.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Collection
from dataclasses import replace
from typing import Literal
from urllib.parse import unquote

from advisor.checks import CHECKS, Check
from advisor.checks.adv108_connection_churn import churning
from advisor.checks.context import Context, ExplainedQuery
from advisor.db.catalog import Catalog, read_catalog
from advisor.db.explain import ExplainOutcome, ExplainRequest, explain_all
from advisor.db.privileges import privilege_notes, read_privileges
from advisor.db.session import Session, session_for
from advisor.findings import Finding, NotExplained, ScanResult
from advisor.plan_text import PlanTextError, logged_plan
from advisor.plans import parse_plan
from advisor.progress import Step
from advisor.thresholds import DEFAULT, Thresholds
from advisor.workload.model import PLANNED, Query, Workload


def scan(
    workload: Workload,
    dsn: str | Session | None = None,
    *,
    config: Thresholds = DEFAULT,
    time_budget_s: float = 60.0,
    max_queries: int = 20,
    step: Step = lambda _: None,
    measure_round_trip: bool = True,
    explain: Explain = "missing",
) -> ScanResult:
    """``dsn``: a DSN, or the command's open Session: the catalog, the round trip and the
    explains share its one connection. ``explain``: see the module doc."""
    logged, unread = logged_plans(workload)
    if dsn is None:
        ctx = Context(workload=workload, explained=tuple(logged.values()), config=config)
        findings, skipped = run_checks(ctx, available={"log", "plans"} if logged else {"log"})
        notes = (*_logged_note(logged), *unread)
        return ScanResult(workload, _with_log_evidence(findings, logged), skipped_checks=skipped, notes=notes)
    with session_for(dsn) as session:
        return _scan_database(workload, session, config, time_budget_s, max_queries, step, measure_round_trip,
                              explain, (logged, unread))


def _scan_database(workload: Workload, session: Session, config: Thresholds, time_budget_s: float,
                   max_queries: int, step: Step, measure_round_trip: bool, explain: Explain,
                   from_log: tuple[dict[str, ExplainedQuery], tuple[str, ...]]) -> ScanResult:
    step("reading the catalog and measuring the round trip")
    catalog, measured, notes = _catalog_and_round_trip(session, workload)
    rtt = measured if measure_round_trip else None
    config = replace(config, round_trip_ms=measured) if measure_round_trip else config
    logged, unread = from_log
    chosen = choose_queries(workload.queries, max_queries)
    to_explain, unexplained = _to_explain(chosen, logged, explain)
    step(f"explaining {len(to_explain)} queries (budget {time_budget_s:g} s)")
    requests = [explain_request(q) for q in to_explain]
    report = explain_all(session, requests, time_budget_s=time_budget_s, catalog=catalog, large_offset=config.large_offset)
    explained, missing = _pair(to_explain, report)
    # A plan the advisor just took is the one checked; a logged plan stands for every other query.
    fresh = {e.query.fingerprint for e in explained}
    used = {fp: eq for fp, eq in logged.items() if fp not in fresh}
    connect_ms = session.connect_ms() if churning(workload, config) else None  # no extra connection otherwise
    ctx = Context(workload=workload, catalog=catalog, explained=(*explained, *used.values()), config=config,
                  connect_ms=connect_ms)
    step("running the checks")
    findings, skipped = run_checks(ctx, available={"log", "catalog", "plans"})
    findings = _with_parameter_evidence(findings, report.outcomes, {q.fingerprint: q.mean_ms for q in chosen})
    return ScanResult(
        workload,
        _with_log_evidence(findings, used),
        explained=len(explained),
        not_explained=(*missing, *unexplained),
        skipped_checks=skipped,
        server_version_num=catalog.server_version_num,
        superuser=report.superuser,
        round_trip_ms=rtt,
        # the workload's own notes (hidden rows, …) are added where they are shown
        notes=(*notes, *(f"query {o.fingerprint} explained with representative values: {o.values_label}"
                         for o in report.outcomes if o.values_label), *_logged_note(used), *unread),
    )


# What scan explains against the database; plans logged by auto_explain are read in any case.
Explain = Literal["missing", "always", "never"]


def logged_plans(workload: Workload) -> tuple[dict[str, ExplainedQuery], tuple[str, ...]]:
    """The plans auto_explain logged, by fingerprint, and a note for each one that could not be read."""
    plans: dict[str, ExplainedQuery] = {}
    unread: list[str] = []
    for q in workload.queries:
        if q.plan is None:
            continue
        try:
            plan = logged_plan(q.plan)
        except PlanTextError as e:
            unread.append(f"query {q.fingerprint}: its logged plan could not be read ({e})")
            continue
        plans[q.fingerprint] = ExplainedQuery(q, plan, plan.analyzed, logged_at=q.plan_at or "?")
    return plans, tuple(unread)


def _to_explain(chosen: list[Query], logged: dict[str, ExplainedQuery],
                explain: Explain) -> tuple[list[Query], list[NotExplained]]:
    """The chosen queries to explain, and those left without a plan by ``--explain never``."""
    if explain == "always":
        return chosen, []
    analysed = {fp for fp, eq in logged.items() if eq.analyzed}
    if explain == "missing":
        return [q for q in chosen if q.fingerprint not in analysed], []
    return [], [NotExplained(q.fingerprint, q.normalized, "no plan in the log, and --explain never")
                for q in chosen if q.fingerprint not in logged]


def _logged_note(logged: dict[str, ExplainedQuery]) -> tuple[str, ...]:
    if not logged:
        return ()
    n = len(logged)
    return (f"{n} {'query' if n == 1 else 'queries'} checked on the plan auto_explain logged for "
            f"{'its' if n == 1 else 'their'} slowest execution, not explained again",)


def _with_log_evidence(findings: tuple[Finding, ...], logged: dict[str, ExplainedQuery]) -> tuple[Finding, ...]:
    """Findings read from a logged plan say so, and when that execution was logged."""
    return tuple(replace(f, evidence={**f.evidence, "plan_source": "log (auto_explain)",
                                      "plan_logged_at": logged[f.fingerprint].logged_at})
                 if f.fingerprint in logged and f.code.startswith("ADV0") else f for f in findings)


def explain_request(q: Query) -> ExplainRequest:
    """What explain.py needs of a query: its sample, and the measured mean and rows a plan should match."""
    rows_per_call = q.rows / q.calls if q.rows is not None and q.calls else None
    return ExplainRequest(q.fingerprint, q.sample, q.sample_parameters, q.mean_ms, rows_per_call)


def _with_parameter_evidence(findings: tuple[Finding, ...], outcomes: tuple[ExplainOutcome, ...],
                             means: dict[str, float | None]) -> tuple[Finding, ...]:
    """Findings on a query explained with representative values say which, and how its time compares."""
    extra: dict[str, dict] = {}
    for o in outcomes:
        evidence: dict[str, object] = {}
        if o.values_label:
            evidence.update(parameter_values=o.values_label, parameters_sql=o.values)
        if o.values_label or o.warning:
            evidence.update(explained_ms=(o.plan or {}).get("Execution Time"), measured_mean_ms=means.get(o.fingerprint))
        if o.warning:
            evidence["not_explained"] = o.warning
        if evidence:
            extra[o.fingerprint] = evidence
    return tuple(replace(f, evidence={**f.evidence, **extra[f.fingerprint]}) if f.fingerprint in extra else f
                 for f in findings)


def run_checks(ctx: Context, available: set[str]) -> tuple[tuple[Finding, ...], tuple[tuple[str, str], ...]]:
    findings: list[Finding] = []
    skipped: list[tuple[str, str]] = []
    for check in CHECKS:
        missing = check.needs - available
        if missing:
            skipped.append((f"{check.code} {check.name}", _why(missing)))
            continue
        findings.extend(check.run(ctx))
    origins = {q.fingerprint: origin(q) for q in ctx.workload.queries}
    findings = [replace(f, application=(f.fingerprint and origins.get(f.fingerprint)) or f.application) for f in findings]
    findings.sort(key=Finding.sort_key)
    return tuple(findings), tuple(skipped)


_COMMENT = re.compile(r"/\*(.*?)\*/", re.S)
_TAG = re.compile(r"(\w+)='([^']*)'")


def origin(q: Query) -> str | None:
    """Where a query comes from: its application_name(s) and sqlcommenter tags (route='…', controller='…')."""
    tags = [f"{k}={unquote(v)}" for c in _COMMENT.findall(q.sample) for k, v in _TAG.findall(c) if k != "traceparent"]
    parts = [*q.applications, *dict.fromkeys(tags)]
    return ", ".join(parts) or None


def _why(missing: Collection[str]) -> str:
    return "needs a database (--dsn): " + " and ".join(sorted({"catalog": "the catalog", "plans": "query plans"}[m] for m in missing))


def choose_queries(queries: tuple[Query, ...], limit: int) -> list[Query]:
    """The top queries by total time, then by p95, each once, up to ``limit``.

    Transaction control, SET and other utility statements have no plan: they
    are not candidates (anything else sqlglot cannot read still is, and its
    refusal is reported).
    """
    by_total = [q for q in queries if q.sample and (q.statement_type in PLANNED or q.statement_type == "unknown")]
    by_p95 = sorted(by_total, key=lambda q: -(q.p95_ms or 0.0))
    chosen: dict[str, Query] = {}
    for a, b in zip(by_total, by_p95):
        for q in (a, b):
            if len(chosen) < limit:
                chosen.setdefault(q.fingerprint, q)
    return list(chosen.values())


def _catalog_and_round_trip(session: Session, workload: Workload,
                            samples: int = 15) -> tuple[Catalog, float, list[str]]:
    """The catalog, the median round trip, and what this role cannot read (with the GRANT)."""
    catalog = read_catalog(session.conn)
    notes = privilege_notes(read_privileges(session.conn), workload)
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        session.read("SELECT 1").fetchone()
        times.append((time.perf_counter() - start) * 1000)
    return catalog, round(statistics.median(times), 4), notes


def _pair(chosen: list[Query], report) -> tuple[list[ExplainedQuery], list[NotExplained]]:
    by_fp = {q.fingerprint: q for q in chosen}
    explained: list[ExplainedQuery] = []
    missing: list[NotExplained] = []
    for outcome in report.outcomes:
        q = by_fp[outcome.fingerprint]
        if outcome.plan is not None:
            explained.append(ExplainedQuery(q, parse_plan(outcome.plan), outcome.mode == "analyze", outcome.note))
            if outcome.warning:  # a plan, but not one that explains the time measured: say so
                missing.append(NotExplained(q.fingerprint, q.normalized, outcome.warning))
        else:
            missing.append(NotExplained(q.fingerprint, q.normalized, outcome.refused or outcome.error or "no plan"))
    for request in report.not_explained:
        q = by_fp[request.fingerprint]
        missing.append(NotExplained(q.fingerprint, q.normalized, request.reason))
    return explained, missing


__all__ = ["Check", "Explain", "NotExplained", "ScanResult", "choose_queries", "explain_request", "logged_plans",
           "run_checks", "scan"]
