"""Resumable, crash-safe result store of a sweep: one JSON line per finished point.

The file is JSON Lines. Line 1 is the header ``{"format": FORMAT, "meta": {...}}``
naming the sweep (model, template, objective...); every other line is
``{"key": ..., "record": {...}}``. An append is one ``os.write`` of a whole line to a
descriptor opened with ``O_APPEND``, then ``fsync``, so a process killed at any moment
leaves at most one partial last line: loading drops it and truncates it away, and the
rerun recomputes that point. A key seen twice keeps its last record (a point that
finished just as its process was killed is rerun, with the same result).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from watos.errors import WatosError

FORMAT = "watos-explore-store/1"


def point_key(point: dict) -> str:
    """A stable key of a point: 16 hex digits of the SHA-256 of its sorted JSON."""
    return hashlib.sha256(json.dumps(point, sort_keys=True).encode()).hexdigest()[:16]


def _line(obj: dict) -> bytes:
    return (json.dumps(obj, sort_keys=True) + "\n").encode()


def _write_durably(path: Path, data: bytes, flags: int) -> None:
    """One ``os.write`` of ``data`` to ``path`` opened with ``flags``, then fsync."""
    fd = os.open(path, os.O_WRONLY | flags, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"{path}: short write ({written} of {len(data)} bytes)")
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ResultStore:
    """The finished points of one sweep, in a JSONL file that survives being killed."""

    def __init__(self, path: str | Path, *, meta: dict | None = None) -> None:
        """Open the store at ``path``; create it (and its folder) with ``meta`` in the
        header if absent. An existing store must carry the same ``meta``."""
        self.path = Path(path)
        self.meta = json.loads(json.dumps(meta or {}, sort_keys=True))
        if not self.path.exists():
            self._create()
        self._done = self._load()

    def _create(self) -> None:
        """Write the header to a temporary file and move it into place."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        header = _line({"format": FORMAT, "meta": self.meta})
        try:
            _write_durably(tmp, header, os.O_CREAT | os.O_EXCL)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)

    def _check_header(self, first: bytes) -> None:
        try:
            header = json.loads(first)
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise WatosError(f"{self.path}:1: not a watos explore store "
                             f"(no {FORMAT} header)")
        theirs = header.get("meta") or {}
        differing = sorted(k for k in theirs.keys() | self.meta.keys()
                           if theirs.get(k) != self.meta.get(k))
        if differing:
            field = differing[0]
            raise WatosError(
                f"{self.path}: the store belongs to another sweep (meta field "
                f"{field!r} is {theirs.get(field)!r} there, {self.meta.get(field)!r} "
                "here); use another output path")

    def _load(self) -> dict[str, dict]:
        """Parse the file; drop and truncate away a partial last line."""
        data = self.path.read_bytes()
        *lines, _ = data.split(b"\n")
        self._check_header(lines[0] if lines else b"")
        done: dict[str, dict] = {}
        size = len(lines[0]) + 1
        for number, line in enumerate(lines[1:], start=2):
            try:
                entry = json.loads(line)
            except ValueError:
                if number == len(lines):  # the last line: cut short by a kill
                    break
                entry = None
            if not (isinstance(entry, dict) and isinstance(entry.get("key"), str)
                    and isinstance(entry.get("record"), dict)):
                raise WatosError(f"{self.path}:{number}: malformed line (expected "
                                 'JSON {"key": ..., "record": {...}})')
            done[entry["key"]] = entry["record"]
            size += len(line) + 1
        if size < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(size)
                os.fsync(f.fileno())
        return done

    def done(self) -> dict[str, dict]:
        """Key -> record of every finished point (a copy)."""
        return dict(self._done)

    def append(self, key: str, record: dict) -> None:
        """Record that point ``key`` finished with ``record`` (durable on return)."""
        line = _line({"key": key, "record": record})
        _write_durably(self.path, line, os.O_APPEND)
        self._done[key] = json.loads(line)["record"]
