"""Slow query logs: stderr with any log_line_prefix, csvlog, jsonlog, auto_explain; compressed or not."""
