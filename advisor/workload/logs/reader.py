"""Bytes to numbered text lines: files, globs, stdin, gzip/bz2/xz, lenient decoding, byte ranges.

A path with a scheme (``s3://``, ``gs://``, ``https://``, …) is read through fsspec, imported only then,
so local logs need nothing beyond the standard library; ``expand``, ``size_of`` and ``open_raw`` are the
one seam, and everything above them (sniffing, splitting, parsing) reads both alike.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import lzma
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TypeVar, cast

BLOCK = 1 << 20
_MAGIC = ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))
T = TypeVar("T")
REMOTE_FIX = "pip install 'advisor[remote]' (http, https), 'advisor[s3]' (s3://) or 'advisor[gcs]' (gs://)"


class LogInputError(OSError):
    """A log that cannot be opened at all (missing, unreadable)."""


def is_remote(path: str) -> bool:
    """A URL that fsspec reads (``s3://bucket/key``, ``https://host/x.log``), not a local path."""
    return "://" in path


def _remote(path: str, use: Callable[[Any, str], T]) -> T:
    """``use(filesystem, path within it)`` on fsspec's filesystem for the URL. Whatever that raises (no
    credentials, access denied, a network error: each filesystem has exceptions of its own) becomes a
    LogInputError naming the URL, as a local file's OSError does."""
    try:
        from fsspec.core import url_to_fs

        fs, inner = url_to_fs(path)
    except (ImportError, ValueError) as e:  # fsspec, or the protocol's own package (s3fs, gcsfs), is missing
        raise LogInputError(f"cannot read {path}: {e}; {REMOTE_FIX}") from e
    try:
        return use(fs, inner)
    except Exception as e:
        raise LogInputError(f"cannot read {path}: {type(e).__name__}: {e}") from e


def _expand_remote(path: str) -> list[str]:
    def matches(fs, inner: str) -> list[str]:
        return [path] if fs.exists(inner) else sorted(fs.unstrip_protocol(m) for m in fs.glob(inner))

    return _remote(path, matches)


def size_of(path: str) -> int:
    """The file's size in bytes, local or remote."""
    return _remote(path, lambda fs, inner: fs.size(inner)) if is_remote(path) else os.path.getsize(path)


class _RemoteFile:
    """A remote file whose reads fail as its opening does: a LogInputError naming the URL (a network error
    mid-file, an HTTP server that answers no byte-range request), not the filesystem's own exception."""

    def __init__(self, file: Any, url: str) -> None:
        self._file, self._url = file, url

    def read(self, size: int = -1) -> bytes:
        try:
            return self._file.read(size)
        except Exception as e:
            raise LogInputError(f"cannot read {self._url}: {type(e).__name__}: {e}") from e

    def __getattr__(self, name: str) -> Any:  # seek, tell, close, …: the file's own
        return getattr(self._file, name)

    def __enter__(self) -> _RemoteFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def open_raw(path: str) -> BinaryIO:
    """The file's bytes as stored (compressed or not), seekable, local or remote."""
    if is_remote(path):
        return cast(BinaryIO, _RemoteFile(_remote(path, lambda fs, inner: fs.open(inner, "rb")), path))
    try:
        return open(path, "rb")
    except OSError as e:
        raise LogInputError(f"cannot read {path}: {e.strerror or e}") from e


def expand(paths: list[str]) -> list[str]:
    """Globs expanded (in sorted order), '-' kept for stdin, missing files reported."""
    files: list[str] = []
    for path in paths:
        if is_remote(path):
            matches = _expand_remote(path)
            if not matches:
                raise LogInputError(f"no such log file: {path}")
            files.extend(matches)
            continue
        if path == "-" or os.path.exists(path):
            files.append(path)
            continue
        matches = sorted(glob.glob(path))
        if not matches:
            raise LogInputError(f"no such log file: {path}")
        files.extend(matches)
    return files


def open_log(path: str) -> BinaryIO:
    """A binary stream of the log, decompressed by its magic bytes, not its name."""
    if path == "-":
        raw: BinaryIO = sys.stdin.buffer
        head = raw.peek(6)[:6] if hasattr(raw, "peek") else b""
    else:
        raw = open_raw(path)
        head = raw.read(6)
        raw.seek(0)
    for magic, opener in _MAGIC:
        if head.startswith(magic):
            return opener(raw)  # type: ignore[return-value]
    return raw


def is_compressed(path: str) -> bool:
    if path == "-":
        return True  # not seekable either: treat alike
    with open_raw(path) as f:
        head = f.read(6)
    return any(head.startswith(magic) for magic, _ in _MAGIC)


def iter_lines(stream: BinaryIO, start: int = 0, end: int | None = None) -> Iterator[str]:
    """Decoded lines of ``stream`` from byte ``start`` up to ``end``.

    Decoding whole blocks is several times faster than line by line; a block is
    cut at its last newline so no character is split. A byte that is not UTF-8
    (a latin-1 literal in a UTF-8 log) becomes U+FFFD instead of failing.
    """
    if start:
        stream.seek(start)
    remaining = None if end is None else end - start
    pending = b""
    while remaining is None or remaining > 0:
        block = stream.read(BLOCK if remaining is None else min(BLOCK, remaining))
        if not block:
            break
        if remaining is not None:
            remaining -= len(block)
        block = pending + block
        cut = block.rfind(b"\n") + 1
        pending = block[cut:]
        if cut:
            yield from _split(block[:cut])
    if pending:
        yield from _split(pending + b"\n")  # a last line without its newline (truncated log)


def _split(block: bytes) -> list[str]:
    text = block.decode("utf-8", "replace")
    lines = text.split("\n")
    lines.pop()  # the block ends with a newline
    if "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return lines


def split_points(path: str, parts: int, is_unit_start, min_chunk: int = 32 << 20) -> list[tuple[int, int]]:
    """Byte ranges of ``path`` that each begin at a line that starts a unit of work.

    Every range begins where ``is_unit_start`` accepts a line, so an execution
    and the lines that belong to it (continuations, DETAIL parameters) land in
    the same range.
    """
    size = size_of(path)
    parts = max(1, min(parts, size // min_chunk))
    starts = [0]
    with open_raw(path) as f:
        for k in range(1, parts):
            offset = _next_unit_start(f, size * k // parts, is_unit_start)
            if offset is not None and offset > starts[-1]:
                starts.append(offset)
    ends = starts[1:] + [size]
    return list(zip(starts, ends))


def _next_unit_start(f: BinaryIO, offset: int, is_unit_start) -> int | None:
    f.seek(offset)
    f.readline()  # finish the line we landed in
    while True:
        pos = f.tell()
        raw = f.readline()
        if not raw:
            return None
        if is_unit_start(raw.decode("utf-8", "replace").rstrip("\r\n")):
            return pos
