"""Connections to the target database with safe session settings, and DSN redaction.

``connect`` is the low-level opener: the advisor's own code reaches a target through
advisor.db.session.Session, which calls it (and adds autocommit, the tag, the
extended protocol and read-only explains).

Every message that may reach a user goes through ``redact_dsn`` or ``scrub_secrets``:
a password must never be printed, logged or stored in a report.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import unquote

from advisor.errors import AdvisorError

if TYPE_CHECKING:
    import psycopg

MASK = "***"
# Leads every statement the advisor sends: pg_stat_statements keeps the comment,
# so users can tell our queries from theirs and we leave ours out of the workload.
TAG = "/* advisor */ "

# URI userinfo: greedy up to the last '@' before the path, so a password with a
# stray '@' is masked whole (over-masking is safe, under-masking is not).
_URI = re.compile(r"^(?P<scheme>postgres(?:ql)?://)(?P<userinfo>[^/]*)@", re.IGNORECASE)
_URI_PARAM = re.compile(r"(?P<key>[?&](?:ssl)?password=)(?P<value>[^&#]*)", re.IGNORECASE)
# key=value form: a quoted value may hold spaces and \' escapes; an unterminated quote runs to the end.
_KV = re.compile(r"(?P<key>\b(?:ssl)?password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|\S*)", re.IGNORECASE)


def _is_uri(dsn: str) -> bool:
    return bool(re.match(r"postgres(?:ql)?://", dsn, re.IGNORECASE))


def redact_dsn(dsn: str) -> str:
    """The DSN with every password replaced by ``***``; the rest is kept for diagnosis."""
    if not _is_uri(dsn):
        return _KV.sub(lambda m: m["key"] + MASK, dsn)

    def userinfo(m: re.Match) -> str:
        user, sep, _ = m["userinfo"].partition(":")
        return f"{m['scheme']}{user}{sep and ':' + MASK}@"

    return _URI_PARAM.sub(lambda m: m["key"] + MASK, _URI.sub(userinfo, dsn, count=1))


def _secrets(dsn: str) -> set[str]:
    """Every spelling of a password in ``dsn`` (raw, unquoted, percent-decoded)."""
    found: set[str] = set()
    if _is_uri(dsn):
        if m := _URI.match(dsn):
            found.add(m["userinfo"].partition(":")[2])
        found.update(m["value"] for m in _URI_PARAM.finditer(dsn))
    else:
        for m in _KV.finditer(dsn):
            value = m["value"]
            found.update({value, value.strip("'"), re.sub(r"\\(.)", r"\1", value.strip("'"))})
    found |= {unquote(s) for s in found}
    return {s for s in found if s}


def scrub_secrets(text: str, dsn: str) -> str:
    """``text`` with every spelling of ``dsn``'s password masked."""
    for secret in sorted(_secrets(dsn), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class AdvisorConnectionError(AdvisorError):
    """A connection failure: one line of cause, one line of fix, never a password."""


# (pattern in libpq's message, cause prefix, fix); first match wins.
_KINDS = (
    (r"password authentication failed|no password supplied|authentication failed|"
     r"no pg_hba\.conf entry|role \".*\" does not exist",
     "authentication failed",
     "check the user name and password (or PGPASSFILE), and that pg_hba.conf allows this host"),
    (r"database \".*\" does not exist",
     "the database does not exist",
     "check the database name in the DSN (list them with psql -l)"),
    (r"could not connect|connection refused|could not translate host name|failed to resolve host|timeout expired|"
     r"no route to host|network is unreachable|connection to server .* failed",
     "could not connect",
     "check host/port, is the server running?"),
)


def _translate(err: psycopg.Error, dsn: str) -> AdvisorConnectionError:
    import psycopg

    detail = scrub_secrets(str(err), dsn)
    lines = [ln.strip() for ln in detail.splitlines() if ln.strip()]
    # libpq puts "connection to server at ... failed:" first and the reason last.
    first = " ".join(lines[:2]) if lines else type(err).__name__
    for pattern, cause, fix in _KINDS:
        if re.search(pattern, detail, re.IGNORECASE):
            return AdvisorConnectionError(f"{cause}: {first}", fix)
    if isinstance(err, psycopg.ProgrammingError):  # conninfo syntax: psycopg says which part
        return AdvisorConnectionError(f"invalid connection string: {first}",
                                      "use postgresql://user@host:port/dbname or key=value pairs")
    return AdvisorConnectionError(f"could not connect: {first}", "check the DSN and the server's log")


def _options(dsn: str, settings: dict[str, int]) -> str:
    # Keep any options the user passed in the DSN; ours come last so they win.
    import psycopg
    from psycopg import conninfo

    try:
        existing = conninfo.conninfo_to_dict(dsn).get("options") or ""
    except psycopg.ProgrammingError:
        existing = ""
    ours = " ".join(f"-c {name}={value}" for name, value in settings.items())
    return f"{existing} {ours}".strip()


def connect(
    dsn: str,
    *,
    statement_timeout_ms: int = 30_000,
    lock_timeout_ms: int = 1_000,
    idle_in_transaction_timeout_ms: int = 60_000,
    application_name: str = "advisor",
    connect_timeout_s: int = 10,
) -> psycopg.Connection:
    """A connection (autocommit off) whose session limits protect the target database.

    The limits travel in the startup packet (libpq ``options``), so they hold
    from the first statement and survive any ROLLBACK. PgBouncer rejects
    ``options`` unless it lists it in ``ignore_startup_parameters``.
    """
    import psycopg  # here, not at the top: reading logs needs the tag and the redaction, not a driver

    settings = {
        "statement_timeout": statement_timeout_ms,
        "lock_timeout": lock_timeout_ms,
        "idle_in_transaction_session_timeout": idle_in_transaction_timeout_ms,
    }
    try:
        return psycopg.connect(
            dsn, autocommit=False, application_name=application_name,
            options=_options(dsn, settings), connect_timeout=connect_timeout_s,
        )
    except psycopg.Error as err:
        raise _translate(err, dsn) from None
