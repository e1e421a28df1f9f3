"""Atomic file writes: a reader never sees half a file, a failed write leaves the old one intact."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        os.replace(temporary_path, target)
    finally:
        temporary_path.unlink(missing_ok=True)


def write_text_atomic(target: Path, text: str) -> Path:
    with atomic_path(target) as temporary:
        temporary.write_text(text)
    return target


def confined(root: Path, *parts: str) -> Path:
    """Join `parts` under `root`, refusing anything that would escape it."""
    path = root.joinpath(*parts).resolve()
    if path != root.resolve() and root.resolve() not in path.parents:
        raise ValueError(f"path {path} escapes the state directory {root}")
    return path
