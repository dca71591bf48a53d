"""Crash-safe JSON persistence.

A sandbox keeps its whole state in one JSON file so a restart (or a crash test that
kills the server) keeps the data. Writing in place could leave a truncated file behind,
so :func:`atomic_write_json` writes a temporary file in the same directory, fsyncs it and
renames it over the target: readers see either the old or the new file, never half.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = None) -> None:
    """Serialise ``data`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(data, indent=indent, separators=None if indent else (",", ":"), sort_keys=False)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    # Make the rename itself durable where the platform allows it.
    with contextlib.suppress(OSError):
        dir_fd = os.open(str(target.parent), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """Load JSON from ``path``; ``None`` when the file does not exist."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
