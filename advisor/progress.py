"""How a long command says what it is doing: one line per step ("reading the catalog"), and how far it is.

The CLI shows the lines on stderr; a test or a library caller passes its own
callable, or none. It lives at the package root, beside ``words.py``, because
scan, indexes, report and bench all take one, and none of them should import
another layer for a type (``errors.py`` is the error contract, not a grab bag).
"""

from __future__ import annotations

from collections.abc import Callable

Step = Callable[[str], None]
Progress = Callable[[int, int], None]  # (units done, units in all): bytes of logs read, statements explained
