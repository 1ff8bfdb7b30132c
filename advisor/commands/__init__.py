"""One module per command that gathers: each reads its sources, runs the analysis on one session and
returns a result the CLI hands to ``report.render``. Commands orchestrate; they never format."""
