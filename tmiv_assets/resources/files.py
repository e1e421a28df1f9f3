"""Files under the state directory: atomic writes, path confinement and Parquet frames.

A reader never sees half a file and a failed write leaves the old one intact: everything is written to
a temporary name beside the target and renamed into place.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from tmiv_assets.ml.data.ingest import case_collision

LOCK_WAIT_SECONDS = 300.0


@contextmanager
def temporary_beside(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside `target` (same file system, so a rename is atomic).

    The caller renames it into place; whatever is left at the temporary path is removed on exit. The name
    carries the writer's pid, so temporaries of a killed writer are removed by the next write beside them.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temporaries(target)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    os.chmod(temporary, 0o644)  # mkstemp makes files private; state files are read like any other output
    temporary_path = Path(temporary)
    try:
        yield temporary_path
    finally:
        temporary_path.unlink(missing_ok=True)


def remove_orphaned_temporaries(target: Path) -> list[Path]:
    """Delete temporaries beside `target` whose writing process no longer exists (killed mid-write)."""
    removed = []
    for temporary in target.parent.glob(f".{target.name}.*.tmp"):
        pid = temporary.name[len(target.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    return removed


def process_alive(pid: int, started_before: float | None = None) -> bool:
    """Whether process `pid` exists on this host; with `started_before` (epoch seconds), only if it is not a
    newer process that reuses the pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    if started_before is None or not Path("/proc/stat").exists():
        return True
    try:  # field 22 of /proc/<pid>/stat: start time in clock ticks after boot (fields after the command name)
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except FileNotFoundError:  # it exited meanwhile
        return False
    booted = float(next(line.split()[1] for line in Path("/proc/stat").read_text().splitlines()
                        if line.startswith("btime")))
    return booted + ticks / os.sysconf("SC_CLK_TCK") <= started_before + 1.0


@contextmanager
def process_lock(path: Path, what: str, timeout: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold an exclusive OS lock on `path` for the block. The kernel releases it when the holder exits or is
    killed, so a dead writer never blocks the next one (unlike a slot in a pool that only its run gives back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise TimeoutError(f"{what}: {path} has been locked by process {holder} for over {timeout:.0f}s; "
                                       "if that process is hung, stop it and rerun") from None
                time.sleep(0.05)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block succeeds."""
    with temporary_beside(target) as temporary:
        yield temporary
        os.replace(temporary, target)


def confined(root: Path, *parts: str) -> Path:
    """Join `parts` under `root`, refusing anything that would escape it."""
    path = root.joinpath(*parts).resolve()
    if path != root.resolve() and root.resolve() not in path.parents:
        raise ValueError(f"path {path} escapes the state directory {root}")
    return path


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells and column names cannot run as spreadsheet formulas: a leading = + - @ (or
    tab / carriage return) gets a quote in front, as OWASP advises for CSV files people open in Excel."""

    def escape(value: object) -> object:
        return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value

    safe = frame.rename(columns=escape)
    for column in safe.columns[[not pd.api.types.is_numeric_dtype(t) for t in safe.dtypes]]:
        safe[column] = safe[column].map(escape)
    return safe


def frame_schema(frame: pd.DataFrame) -> list[dict[str, str]]:
    return [{"name": str(c), "type": str(t)} for c, t in frame.dtypes.items()]


def check_storable(frame: pd.DataFrame, what: str) -> None:
    """Refuse frames that Parquet via DuckDB would silently change: odd names, mixed-type objects."""
    names = list(frame.columns)
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"{what}: column names must be strings, got {names[:10]}; rename the columns")
    if collision := case_collision(names):
        raise ValueError(f"{what}: columns {collision[0]!r} and {collision[1]!r} collide "
                         "(duplicate or differing only by case); rename one")
    for column in frame.select_dtypes(include="object").columns:
        kind = pd.api.types.infer_dtype(frame[column], skipna=True)
        if kind not in ("string", "empty"):
            raise ValueError(f"{what}: column {column!r} holds mixed or non-text Python objects ({kind}); "
                             "cast it with astype(str) or to a numeric type before storing")


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of the column names, dtypes and values; independent of how the frame is laid out."""
    digest = hashlib.sha256()
    digest.update(json.dumps(frame_schema(frame)).encode())
    for column in frame.columns:
        values = frame[column]
        if isinstance(values.dtype, np.dtype) and values.dtype.kind in "biufcmM":
            # hashlib releases the GIL on large buffers, so this overlaps the Parquet write.
            digest.update(np.ascontiguousarray(values.to_numpy()).view(np.uint8).data)
        else:
            digest.update(pd.util.hash_pandas_object(values, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def write_parquet_hashed(frame: pd.DataFrame, target: Path) -> str:
    """Write `frame` to `target` with DuckDB while hashing it in a second thread; return the hash."""
    result: dict[str, object] = {}

    def hash_frame() -> None:
        try:
            result["hash"] = content_hash(frame)
        except BaseException as error:  # re-raised in the caller's thread below
            result["error"] = error

    hasher = threading.Thread(target=hash_frame, name="feature-store-hash")
    hasher.start()
    try:
        with duckdb.connect() as connection:
            connection.register("frame_to_store", frame)
            connection.execute(f"COPY frame_to_store TO '{_sql_path(target)}' (FORMAT parquet)")
    finally:
        hasher.join()
    if "error" in result:
        raise result["error"]
    return str(result["hash"])


def read_parquet_frame(path: Path, schema: list[dict[str, str]] | None = None) -> pd.DataFrame:
    """Read a stored Parquet file with DuckDB and give columns back the pandas dtypes they were saved with."""
    with duckdb.connect() as connection:
        table = connection.sql(f"SELECT * FROM read_parquet('{_sql_path(path)}')").to_arrow_table()
    # self_destruct frees each Arrow column once converted, so the peak stays near one copy of the data.
    frame = table.to_pandas(split_blocks=True, self_destruct=True)
    del table
    for column in schema or ():
        name, dtype = column["name"], column["type"]
        if name not in frame.columns:
            continue
        if str(frame[name].dtype) != dtype:
            frame[name] = frame[name].astype(dtype)
        elif dtype == "object" and frame[name].hasnans:
            # DuckDB returns missing text as None; pandas frames written from CSV hold NaN.
            frame[name] = frame[name].where(frame[name].notna(), np.nan)
    return frame


def _sql_path(path: Path) -> str:
    # COPY ... TO takes no bind parameter; the path is ours (confined, validated names), quotes doubled anyway.
    return str(path).replace("'", "''")
