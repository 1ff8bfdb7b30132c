"""Read-your-writes: where each session last wrote, so its reads go where that write is visible."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any

MAX_SESSIONS = 100_000  # read-your-writes marks kept (least recently written dropped first)
INFO_KEY = "advisor_write"  # where a SQLAlchemy Session (anything with an ``info`` dict) keeps its own mark


@dataclass(slots=True)
class WriteMark:
    lsn: int | None  # the primary's commit position ("lsn" mode)
    at: float  # time.monotonic()


def _info(session: Any) -> dict | None:
    info = getattr(session, "info", None)
    return info if isinstance(info, dict) else None


class SessionMarks:
    """The last write of each session key, the least recently written dropped beyond ``MAX_SESSIONS``; a session
    with an ``info`` dict (a SQLAlchemy Session) carries its mark itself, so it ends with the session."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._marks: collections.OrderedDict[Any, WriteMark] = collections.OrderedDict()

    def get(self, session: Any) -> WriteMark | None:
        info = _info(session)
        if info is not None and INFO_KEY in info:
            return info[INFO_KEY]
        with self._lock:
            return self._marks.get(session)

    def put(self, session: Any, mark: WriteMark) -> None:
        info = _info(session)
        if info is not None:
            info[INFO_KEY] = mark
            return
        with self._lock:
            self._marks[session] = mark
            self._marks.move_to_end(session)
            while len(self._marks) > MAX_SESSIONS:
                self._marks.popitem(last=False)
