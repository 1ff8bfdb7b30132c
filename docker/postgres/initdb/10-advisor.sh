#!/bin/bash
# Runs once, when the primary's data directory is first initialised
# (docker-entrypoint-initdb.d), as the postgres user against the temporary server.
set -euo pipefail

: "${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD}"
: "${ADVISOR_DB_PASSWORD:?set ADVISOR_DB_PASSWORD}"

# The extensions, in the application database and in template1 (so databases
# created later have them too).
for db in template1 "$POSTGRES_DB"; do
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$db" <<-'SQL'
	CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
	CREATE EXTENSION IF NOT EXISTS hypopg;
	SQL
done

# A replication role for the replica, and a least-privilege role for the advisor:
# pg_monitor to read pg_stat_statements of every role, pg_read_all_data for EXPLAIN ANALYZE of SELECTs.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v repl_pw="$REPLICATION_PASSWORD" -v adv_pw="$ADVISOR_DB_PASSWORD" <<-'SQL'
	SELECT format('CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD %L', :'repl_pw')
	WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator') \gexec
	SELECT format('CREATE ROLE advisor WITH LOGIN PASSWORD %L', :'adv_pw')
	WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'advisor') \gexec
	GRANT pg_monitor, pg_read_all_data TO advisor;
	SQL

# Replication connections are not covered by the image's "host all all all" line.
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
