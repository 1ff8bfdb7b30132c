"""Keep the benchmarks out of the server's log.

A benchmark sends thousands of statements a second; at ``log_min_duration_statement
= 0`` each one writes several lines (parse, bind, execute with its parameters), which
grew a user's 13.5 MB log to 205 MB. So every benchmark session turns statement
logging off in its startup packet (libpq ``options``, so even its first statement is
not logged) for the settings this role may set:

    log_min_duration_statement = -1, log_statement = none, log_duration = off,
    auto_explain.log_min_duration = -1

They are superuser settings; on PostgreSQL 15+ a role may have been granted SET on
them (``GRANT SET ON PARAMETER … TO role``). For those it may not set, ``Logging``
says what the server will still log, so the benchmark can warn before it starts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql as pg_sql

from advisor.bench.load import add_options, bench_session, conninfo_params
from advisor.errors import AdvisorError

__all__ = ["QUIET", "Logging", "quiet_dsn", "quiet_session", "read_logging"]

# name -> the value that logs nothing
QUIET = {"log_min_duration_statement": "-1", "log_statement": "none", "log_duration": "off",
         "auto_explain.log_min_duration": "-1"}

DURATIONS = ("log_min_duration_statement", "auto_explain.log_min_duration")  # ms; -1 off, 0 every statement

# pg_settings gives integers in their base unit (ms) where current_setting() adds units;
# auto_explain's row is there only when the module is loaded into this session.
_SETTINGS = "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)"
_ROLE = "SELECT current_user, current_setting('is_superuser') = 'on', current_setting('server_version_num')::int"
_MAY_SET = "SELECT p, has_parameter_privilege(p, 'SET') FROM unnest(%s::text[]) AS p"  # PostgreSQL 15+


def _logs_every_statement(name: str, value: str) -> bool:
    return {"log_statement": value == "all", "log_duration": value == "on"}.get(name, value == "0")


@dataclass(frozen=True, slots=True)
class Logging:
    """What statement logging this role's sessions get on this database, and what the role may turn off."""

    role: str
    settings: dict[str, str]  # the QUIET names in effect for this role and database, as pg_settings has them
    settable: frozenset[str]  # those the role may SET

    @property
    def quieted(self) -> dict[str, str]:
        """The settings a benchmark session turns off: logging now, and the role may."""
        return {n: QUIET[n] for n, v in self.settings.items() if v != QUIET[n] and n in self.settable}

    @property
    def left_on(self) -> dict[str, str]:
        """The settings that still log once ours are applied (the role may not turn them off); ``log_statement``
        = ddl or mod logs no SELECT, so not the pool benchmark's requests."""
        return {n: v for n, v in self.settings.items() if v != QUIET[n] and n not in self.settable
                and not (n == "log_statement" and v in ("ddl", "mod"))}  # our requests are SELECTs

    @property
    def logs_all(self) -> bool:
        """True when the server will log every statement a benchmark session sends."""
        return any(_logs_every_statement(n, v) for n, v in self.left_on.items())

    @property
    def threshold_ms(self) -> int | None:
        """The lowest duration above which a statement is still logged (or its plan), when not every one is."""
        values = [int(v) for n, v in self.left_on.items() if n in DURATIONS and int(v) > 0]
        return min(values) if values else None

    def describe(self) -> str:
        """The settings still logging, as ``name = value`` (ms where it is a duration)."""
        def shown(name: str, value: str) -> str:
            return f"{name} = {value} ms" if name in DURATIONS else f"{name} = {value}"
        return ", ".join(shown(n, v) for n, v in self.left_on.items())

    def grant(self) -> str:
        """The statement that lets the role turn off what still logs (PostgreSQL 15+)."""
        role = pg_sql.Identifier(self.role).as_string(None)
        return f"GRANT SET ON PARAMETER {', '.join(self.left_on)} TO {role}"


def read_logging(conn: psycopg.Connection) -> Logging:
    """The logging settings of ``conn``'s session (database and role settings included) and its rights."""
    row = conn.execute(_ROLE).fetchone()
    assert row is not None  # a SELECT without FROM: one row
    role, superuser, version = row
    settings: dict[str, str] = dict(conn.execute(_SETTINGS, (list(QUIET),)).fetchall())
    if superuser:
        settable = frozenset(settings)
    elif version >= 150000 and settings:
        settable = frozenset(n for n, ok in conn.execute(_MAY_SET, (list(settings),)).fetchall() if ok)
    else:  # before 15 only a superuser may set them
        settable = frozenset()
    return Logging(role, settings, settable)


def quiet_dsn(dsn: str, logging: Logging) -> str:
    """``dsn`` with the startup options that turn off what ``logging`` lets this role turn off."""
    if not logging.quieted:
        return dsn
    options = " ".join(f"-c {name}={value}" for name, value in logging.quieted.items())
    return pg_conninfo.make_conninfo("", **add_options(conninfo_params(dsn), options))


def quiet_session(dsn: str, notes: list[str]) -> tuple[psycopg.Connection, str, Logging]:
    """A setup session, the DSN every benchmark session is to use (logging off where the role may), and what the
    server will still log. Only the few statements that read the settings may reach the log."""
    with bench_session(dsn) as first:
        logging = read_logging(first)
    quiet = quiet_dsn(dsn, logging)
    if quiet == dsn:
        return bench_session(dsn), dsn, logging
    try:
        return bench_session(quiet), quiet, logging
    except AdvisorError as err:  # the privilege check said yes, the server said no (a setting we cannot see through)
        if "permission denied to set parameter" not in str(err):
            raise
        notes.append("the server refused to turn statement logging off for this role's sessions "
                     f"({str(err).rsplit('FATAL:', 1)[-1].strip()}): it stays on")
        return bench_session(dsn), dsn, replace(logging, settable=frozenset())
