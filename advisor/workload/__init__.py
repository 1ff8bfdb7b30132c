"""The workload: statements from logs and pg_stat_statements, fingerprinted and aggregated."""
