"""EXPLAIN the workload's statements under the safety rules of DESIGN.md.

Layers, each enough on its own for the worst cases, together for the rest:

1. ``classify``: sqlglot must read exactly one statement; only queries are
   explained with ANALYZE, data-changing statements get plain EXPLAIN, anything
   else (DDL, utility, COPY, CALL, DO, SET, …) and any call of a denylisted
   function is refused with the reason.
2. The server sees one statement only: every text goes through the extended
   protocol (advisor.db.session), which rejects several commands in one string, so
   a statement that sqlglot and PostgreSQL split differently cannot smuggle a second one in.
3. Every statement runs in ``BEGIN READ ONLY`` … ``ROLLBACK`` on the session's
   connection, with statement, lock and idle-in-transaction timeouts, and a
   run-wide time budget caps the statement timeout too.

What stays possible: a user-defined function or view that signals backends or
sleeps (not writes: the transaction is read-only) runs under EXPLAIN ANALYZE.
Give the advisor a role that cannot do harm. The least-privileged role that
works is a plain login role with ``pg_monitor`` (or just ``pg_read_all_stats``,
for pg_stat_statements and others' statistics) and SELECT on the tables the
workload reads, since EXPLAIN ANALYZE executes the query. Plain EXPLAIN of
INSERT/UPDATE/DELETE checks that command's privilege: without it those come
back as "permission denied", the safe outcome. A superuser works but is more
than needed (it may signal any backend, run COPY … PROGRAM); the report says so.

Parameters. A logged sample with ``$n`` and its logged values is explained with
the values bound through the protocol as untyped text: the server infers each
type as it did for the application, quoting cannot go wrong, and the plan is the
custom plan for those values. A sample with ``$n`` and no values (as
pg_stat_statements gives them) is explained, when the catalog is given, with
representative values drawn from pg_stats (advisor.db.representative): a few
bindings, each planned as a custom plan (``plan_cache_mode = force_custom_plan``),
and the one whose time best matches the measured mean is kept (for writes, which
get no ANALYZE, the costliest), with a label saying where its values came from.
Without a catalog, or when a ``$n`` has no column with statistics, it gets the
generic plan, plain EXPLAIN only, and the reason: on PostgreSQL 16+
``EXPLAIN (GENERIC_PLAN)``, before that a PREPARE run under
``plan_cache_mode = force_generic_plan`` and explained with NULLs, which that
mode ignores. A statement with literals only runs as it is.

Whenever the explained time is far below the measured mean (``FAR_BELOW``), or
only a generic plan could be had for a query with a measured mean, the outcome
carries a ``warning``: the plan shown may not be the one that ran slow.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import psycopg
import sqlglot
from sqlglot import exp

from advisor.db.catalog import Catalog
from advisor.db.representative import Binding, bindings, parameter_text, parameter_uses, stats_lookup
from advisor.db.session import Session, session_for
from advisor.progress import Progress
from advisor.thresholds import DEFAULT
from advisor.workload.parameters import parse_parameters

__all__ = [
    "DENIED_FUNCTIONS", "Analysis", "Classification", "ExplainOutcome", "ExplainReport", "ExplainRequest",
    "NotExplained", "analyse", "classify", "explain_all",
]


# Functions whose call refuses the whole statement: EXPLAIN ANALYZE would run them,
# and a read-only transaction does not stop them. "*" stands for any characters.
DENIED_FUNCTIONS: tuple[str, ...] = (
    # other sessions and the server itself
    "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile*", "pg_promote",
    # WAL, backups and replication state
    "pg_switch_wal", "pg_create_*", "pg_drop_replication_slot", "pg_replication_slot_advance",
    "pg_copy_*_replication_slot", "pg_logical_slot_*", "pg_replication_origin_*", "pg_wal_replay_*",
    "pg_backup_start", "pg_backup_stop", "pg_start_backup", "pg_stop_backup", "pg_logical_emit_message",
    # locks held past the statement, and session settings
    "pg_advisory_*", "pg_try_advisory_*", "set_config",
    # messages to listeners
    "pg_notify",
    # other connections (dblink opens one that is not read-only)
    "dblink*",
    # the server's files, and large objects (lo_export writes a server file)
    "pg_read_file", "pg_read_binary_file", "pg_ls_*", "pg_stat_file", "lo_*", "loread", "lowrite",
    # adminpack
    "pg_file_*", "pg_logdir_ls",
    # waiting: it would burn the time budget
    "pg_sleep*",
    # statistics the user relies on
    "pg_stat_reset*", "pg_stat_statements_reset",
    # sequences and transaction ids: they advance even in a transaction that rolls back
    "nextval", "setval", "txid_current", "pg_current_xact_id",
    # SQL in a string runs unchecked by us; the *_to_xml of a schema or database reads everything
    "query_to_xml*", "cursor_to_xml*", "schema_to_xml*", "database_to_xml*", "ts_stat",
)
_DENIED = re.compile("|".join(re.escape(n).replace(r"\*", ".*") for n in DENIED_FUNCTIONS))

_READ_ROOTS = (exp.Select, exp.SetOperation, exp.Values)
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge)  # not exp.Copy: a DML to sqlglot, refused here


@dataclass(frozen=True, slots=True)
class Classification:
    kind: Literal["read", "write", "refused"]
    reason: str | None = None  # why it is plain-explained or refused; None for a read


@dataclass(frozen=True, slots=True)
class Analysis:
    classification: Classification
    has_parameters: bool  # $n placeholders in the statement itself (not in strings)


def classify(sql: str) -> Classification:
    """read (EXPLAIN ANALYZE), write (plain EXPLAIN) or refused, with the reason."""
    return analyse(sql).classification


def analyse(sql: str) -> Analysis:
    """classify() and whether the statement has ``$n`` parameters: what an explain needs to know first."""
    try:
        # A comment after the last ';' comes back as a Semicolon node: not a statement.
        trees = [t for t in sqlglot.parse(sql, read="postgres")
                 if t is not None and not isinstance(t, exp.Semicolon)]
    except Exception as err:  # ParseError, TokenError, RecursionError on deep nesting
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return _refused(f"sqlglot could not parse it: {first}")
    if len(trees) != 1:
        return _refused("empty statement" if not trees else f"several statements ({len(trees)}): only one is ever run")
    root = trees[0]
    while isinstance(root, exp.Subquery):  # (SELECT …)
        root = root.this
    has_parameters = any(p.name.isdigit() for p in root.find_all(exp.Parameter))
    return Analysis(_classify_tree(root, sql), has_parameters)


def _refused(reason: str) -> Analysis:
    return Analysis(Classification("refused", reason), False)


def _classify_tree(root: exp.Expr, sql: str) -> Classification:
    if root.find(exp.Command):
        return Classification("refused", f"{_first_word(sql)}: a statement sqlglot cannot read is never run")
    if denied := _denied_call(root):
        return Classification("refused", f"calls {denied}(), which the advisor never runs")
    if isinstance(root, _READ_ROOTS):
        if root.args.get("into"):
            return Classification("refused", "SELECT INTO creates a table")
        if root.find(*_WRITES):
            return Classification("write", "a data-modifying WITH: EXPLAIN without ANALYZE")
        if root.find(exp.Lock):
            return Classification("write", "FOR UPDATE/SHARE locks rows: EXPLAIN without ANALYZE")
        return Classification("read")
    if isinstance(root, _WRITES):
        return Classification("write", f"{root.key.upper()} changes data: EXPLAIN without ANALYZE")
    return Classification("refused", f"{_first_word(sql)}: only queries and data changes are explained")


def _denied_call(root: exp.Expr) -> str | None:
    for node in root.find_all(exp.Func):
        anonymous = isinstance(node, (exp.Anonymous, exp.AnonymousAggFunc))
        # PG folds unquoted names; a quoted "PG_SLEEP" is another function, refused all the same.
        name = (node.name if anonymous else node.sql_name()).lower()
        if _DENIED.fullmatch(name):
            return name
    return None


def _first_word(sql: str) -> str:
    """The statement's keyword (COPY, TRUNCATE, WITH …), comments skipped, for reasons."""
    try:
        tokens = sqlglot.tokenize(sql, read="postgres")
    except Exception:  # the parse succeeded, so this is unlikely; the reason stays readable
        return "this statement"
    return tokens[0].text.upper() if tokens else "this statement"


# --- parameters --------------------------------------------------------------------------

# --- requests and results ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExplainRequest:
    fingerprint: str
    sql: str
    parameters: str | None = None  # the logged "$1 = '…', …" text
    mean_ms: float | None = None  # the measured mean, which representative values should match
    rows_per_call: float | None = None  # what a LIMIT $n without a value is given


Mode = Literal["analyze", "plain", "generic"]  # Session.explain's modes


@dataclass(frozen=True, slots=True)
class ExplainOutcome:
    fingerprint: str
    mode: Mode | None  # None: refused before any work
    plan: dict | None  # PostgreSQL's JSON document: "Plan", "Planning Time", "Execution Time"…
    refused: str | None = None
    error: str | None = None  # timeout, cancel, lost connection or SQL error, in words
    elapsed_ms: float = 0.0
    note: str | None = None  # why the mode is "plain" or "generic" rather than "analyze"; which values were used
    values: str | None = None  # representative values bound ("$1 = '…'", literal: show only when asked)
    values_label: str | None = None  # where they came from, without the values
    warning: str | None = None  # the plan may not explain the measured mean (see the module docstring)


@dataclass(frozen=True, slots=True)
class NotExplained:
    request: ExplainRequest
    reason: str  # "time budget exhausted", "connection lost: …"

    @property
    def fingerprint(self) -> str:
        return self.request.fingerprint


@dataclass(frozen=True, slots=True)
class ExplainReport:
    outcomes: tuple[ExplainOutcome, ...]  # in request order
    not_explained: tuple[NotExplained, ...]
    superuser: bool  # more privilege than needed: worth a warning
    server_version_num: int


# --- running ----------------------------------------------------------------------------

BUDGET_EXHAUSTED = "time budget exhausted"
GENERIC_NOTE = "$n without logged values: the generic plan, without ANALYZE"
# An explained time under 1/FAR_BELOW of the measured mean did not reproduce what ran:
# a factor of 5 is beyond run-to-run noise (caches, concurrency) yet well inside the
# 100x errors of a generic plan for a skewed value.
FAR_BELOW = 5.0
MIN_MEAN_MS = 1.0  # below this, explained and measured times differ by caching and noise alone


def explain_all(
    target: str | Session,
    requests: Sequence[ExplainRequest],
    *,
    time_budget_s: float = 60,
    statement_timeout_ms: int = 5_000,
    progress: Progress | None = None,
    catalog: Catalog | None = None,
    large_offset: int = DEFAULT.large_offset,
) -> ExplainReport:
    """Explain every request in order, within the budget; per-query problems become outcomes.

    ``catalog``: resolves the columns ``$n`` parameters meet, for representative values
    (without it such statements get the generic plan). ``large_offset``: an ``OFFSET $n``
    is tried with it, so deep pagination shows in the plan.

    ``target``: a DSN, or the command's open Session (``statement_timeout_ms`` then holds
    for each explain inside its transaction). Refusals cost nothing and are reported even
    after the budget runs out or the connection is gone. Raises AdvisorConnectionError
    only if the first connection fails.
    """
    deadline = time.monotonic() + time_budget_s
    outcomes: list[ExplainOutcome] = []
    skipped: list[NotExplained] = []
    stop_reason: str | None = None
    with session_for(target, statement_timeout_ms=statement_timeout_ms) as session:
        server = session.server_version_num, session.superuser  # connects: the one error that is raised
        for done, request in enumerate(requests, 1):
            analysis = analyse(request.sql)
            remaining_ms = (deadline - time.monotonic()) * 1000
            if analysis.classification.kind == "refused":
                outcomes.append(ExplainOutcome(request.fingerprint, None, None,
                                               refused=analysis.classification.reason))
            elif stop_reason or remaining_ms <= 0:
                skipped.append(NotExplained(request, stop_reason or BUDGET_EXHAUSTED))
            else:
                outcome = _explain(session, statement_timeout_ms, request, analysis, remaining_ms, catalog,
                                   large_offset)
                outcomes.append(outcome)
                if session.lost:
                    stop_reason = session.recover(outcome.error or "connection lost")
            if progress:
                progress(done, len(requests))
    return ExplainReport(tuple(outcomes), tuple(skipped), server[1], server[0])


def _explain(session: Session, cap_ms: int, request: ExplainRequest, analysis: Analysis, remaining_ms: float,
             catalog: Catalog | None = None, large_offset: int = DEFAULT.large_offset) -> ExplainOutcome:
    """One request; ``cap_ms``: the statement timeout of an explain, lowered by the budget's ``remaining_ms``."""
    note = analysis.classification.reason  # None for a read
    kind_mode: Mode = "analyze" if analysis.classification.kind == "read" else "plain"
    mode: Mode
    if request.parameters is None and analysis.has_parameters:
        found, why = _representative_bindings(session, cap_ms, request, catalog, large_offset)
        if found:
            outcome = _explain_representative(session, cap_ms, request, found, kind_mode, remaining_ms, note)
            if outcome.plan is not None or session.lost or outcome.error == BUDGET_EXHAUSTED:
                return outcome
            why = f"no representative values could be planned: {outcome.error}"
        mode, note = "generic", f"{GENERIC_NOTE} ({why})"
    else:
        mode, why = kind_mode, None
    timeout_ms = min(cap_ms, max(1, int(remaining_ms)))
    started = time.monotonic()
    plan = error = None
    try:
        values = parse_parameters(request.parameters) if request.parameters is not None else None
        plan = session.explain(request.sql, mode, values, timeout_ms)
    except ValueError as err:
        error = f"could not read the logged parameters: {err}"
    except psycopg.Error as err:
        error = session.describe(err, timeout_ms)
    elapsed_ms = (time.monotonic() - started) * 1000
    return ExplainOutcome(request.fingerprint, mode, plan, error=error, elapsed_ms=round(elapsed_ms, 3), note=note,
                          warning=_warning(plan, mode, request.mean_ms, why))


def _representative_bindings(session: Session, cap_ms: int, request: ExplainRequest, catalog: Catalog | None,
                             large_offset: int) -> tuple[list[Binding], str | None]:
    """Bindings for a statement's ``$n`` from pg_stats (and None), or ([], why there are none)."""
    if catalog is None:
        return [], "no catalog to find the columns they meet"
    uses, why = parameter_uses(request.sql, catalog)
    if why:
        return [], why
    count = max(uses)
    try:
        lookup = stats_lookup(lambda text, params: session.run(text, params).fetchall())
        return bindings(uses, count, lookup, rows_per_call=request.rows_per_call, large_offset=large_offset)
    except psycopg.Error as err:
        return [], f"pg_stats could not be read: {session.describe(err, cap_ms)}"


def _explain_representative(session: Session, cap_ms: int, request: ExplainRequest, found: list[Binding], mode: Mode,
                            remaining_ms: float, reason: str | None) -> ExplainOutcome:
    """Each binding as a custom plan; keep the one that best matches the measured mean."""
    started = time.monotonic()
    deadline = started + remaining_ms / 1000
    tried: list[tuple[Binding, dict]] = []
    error = None
    for binding in found:
        timeout_ms = min(cap_ms, int((deadline - time.monotonic()) * 1000))
        if timeout_ms <= 0:
            break
        try:
            tried.append((binding, session.explain(request.sql, mode, binding.values, timeout_ms, custom=True)))
        except psycopg.Error as err:
            error = session.describe(err, timeout_ms)
            if session.lost:
                break
    elapsed_ms = round((time.monotonic() - started) * 1000, 3)
    if not tried:
        return ExplainOutcome(request.fingerprint, mode, None, error=error or BUDGET_EXHAUSTED, elapsed_ms=elapsed_ms)
    binding, plan = min(tried, key=lambda t: _distance(t[1], mode, request.mean_ms))
    note = f"$n without logged values: representative values from pg_stats ({binding.label})"
    if mode == "analyze" and request.mean_ms:
        note += (f"; explained in {_fmt_ms(plan['Execution Time'])}, the closest of {len(tried)} "
                 f"to the measured mean of {_fmt_ms(request.mean_ms)}")
    elif mode == "plain":
        note += f"; the costliest of {len(tried)} custom plans ({reason})"
    if error:
        note += f"; another binding failed: {error}"
    return ExplainOutcome(request.fingerprint, mode, plan, elapsed_ms=elapsed_ms, note=note,
                          values=parameter_text(binding.values), values_label=binding.label,
                          warning=_warning(plan, mode, request.mean_ms))


def _distance(plan: dict, mode: str, mean_ms: float | None) -> float:
    """How far a plan is from what ran: log-ratio to the mean; without one, the slowest (costliest) wins."""
    if mode == "analyze" and "Execution Time" in plan:
        actual = max(float(plan["Execution Time"]), 1e-3)
        return abs(math.log(actual / mean_ms)) if mean_ms else -actual
    return -float(plan["Plan"]["Total Cost"])


def _warning(plan: dict | None, mode: str, mean_ms: float | None, why_generic: str | None = None) -> str | None:
    """Why the plan may not explain the measured mean, or None when it may."""
    if plan is None or not mean_ms or mean_ms < MIN_MEAN_MS:
        return None
    if mode == "generic":
        return (f"measured mean {_fmt_ms(mean_ms)}, but only the generic plan, without ANALYZE, could be had "
                f"({why_generic}): it is priced for an average value and may not be the plan that ran")
    actual = plan.get("Execution Time")
    if mode == "analyze" and actual is not None and actual * FAR_BELOW < mean_ms:
        return (f"explained in {_fmt_ms(actual)}, under 1/{FAR_BELOW:g} of the measured mean of {_fmt_ms(mean_ms)}: "
                "this plan does not explain the time (other parameter values, a generic plan, locks or cold caches)")
    return None


def _fmt_ms(ms: float) -> str:
    return f"{ms:,.1f} ms" if ms >= 1 else f"{ms:.3f} ms"
