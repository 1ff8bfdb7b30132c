"""Helpers shared by test modules (pytest puts tests/ on sys.path, so `from helpers import advisor`)."""

from __future__ import annotations

import os
import subprocess
import sys

ADVISOR = (sys.executable, "-m", "advisor.cli")  # the installed entry point, in this interpreter


def advisor(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`advisor ARGS` as a user runs it, in a subprocess; stdout and stderr as text, ``env`` added to ours."""
    return subprocess.run([*ADVISOR, *args], input=stdin, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
