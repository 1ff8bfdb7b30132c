"""What the advisor's role may not read, and the GRANT that lets it: said in the output, never silent.

A role without ``pg_read_all_stats`` sees other roles' statements in
pg_stat_statements as ``<insufficient privilege>`` (advisor.workload.stat_statements
counts them); pg_stats shows only the columns a role may SELECT, and EXPLAIN
ANALYZE runs the query, so a table the role cannot read gives no statistics,
no representative values and no plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from advisor.db.connect import TAG
from advisor.db.rows import one_row
from advisor.workload.model import Workload

__all__ = ["Privileges", "privilege_notes", "read_privileges"]

_QUERY = TAG + """
SELECT current_user::text,
       coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)
         OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
       ARRAY(SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p', 'm')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
               AND NOT has_table_privilege(c.oid, 'SELECT')
             ORDER BY 1)"""

TABLES_LISTED = 5  # unreadable tables named in the note; the rest are counted


@dataclass(frozen=True, slots=True)
class Privileges:
    role: str
    reads_all_stats: bool  # superuser or member of pg_read_all_stats
    unreadable_tables: tuple[str, ...] = ()  # "schema.table", quoted as SQL needs


def read_privileges(conn: psycopg.Connection) -> Privileges:
    role, reads_all, tables = one_row(conn.execute(_QUERY))
    return Privileges(role, bool(reads_all), tuple(tables or ()))


def _quoted_role(role: str) -> str:
    return role if role.isidentifier() and role == role.lower() else '"' + role.replace('"', '""') + '"'


def privilege_notes(privileges: Privileges, workload: Workload) -> list[str]:
    """Notes for what this role cannot see that the workload or the plans need, each with its GRANT."""
    role = _quoted_role(privileges.role)
    notes: list[str] = []
    from_server = any(s.startswith("pg_stat_statements") for s in workload.sources)
    if from_server and not privileges.reads_all_stats and not workload.queries:
        notes.append(f"no queries to examine: pg_stat_statements shows role {privileges.role} only its own "
                     f"statements and hides every other role's; run GRANT pg_read_all_stats TO {role}; "
                     "(or connect as a role that has it)")
    if tables := privileges.unreadable_tables:
        named = ", ".join(tables[:TABLES_LISTED]) + (f" and {len(tables) - TABLES_LISTED} more"
                                                     if len(tables) > TABLES_LISTED else "")
        notes.append(f"role {privileges.role} cannot SELECT {len(tables)} tables ({named}): their statistics "
                     "(pg_stats) are hidden and queries on them cannot be explained; run "
                     f"GRANT SELECT ON <table> TO {role}; (or GRANT pg_read_all_data TO {role}; on PostgreSQL 14+)")
    return notes
