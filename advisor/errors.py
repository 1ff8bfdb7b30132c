"""Errors a user can act on: one line of cause, one line of fix."""

from __future__ import annotations


class AdvisorError(Exception):
    """An expected failure: the CLI prints ``cause`` and ``fix`` and exits 2, no traceback.

    ``str()`` is the two lines, so a log or a test failure shows both.
    """

    def __init__(self, cause: str, fix: str = "") -> None:
        super().__init__(f"{cause}\n{fix}" if fix else cause)
        self.cause = cause
        self.fix = fix
