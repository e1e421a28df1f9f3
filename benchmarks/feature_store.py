"""Feature-store write and read of 1,000,000 rows x 50 columns next to plain DuckDB Parquet I/O.

Usage: python benchmarks/feature_store.py [--rows N] [--repeats R]

Every measurement runs in its own subprocess, so each peak memory figure is that of one operation: the
peak resident set size (Linux VmHWM, reset just before the operation) minus the resident size before
the frame was built, i.e. the frame plus whatever the operation needed on top. Times are medians of
`--repeats` runs. The last printed line is one JSON object with the headline figures.
Targets: our write and read within 1.5x of plain DuckDB, peak memory under 3x the frame's size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_COLUMNS = 50
TIME_TARGET = 1.5
MEMORY_TARGET = 3.0


def build_frame(rows: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    # Mostly floats, some integer codes and one text column, like an engineered feature set.
    columns = {f"f{i:02d}": rng.normal(size=rows) for i in range(42)}
    columns |= {f"i{i}": rng.integers(0, 1000, size=rows) for i in range(7)}
    columns["segment"] = rng.choice(np.array(["north", "south", "east", "west"], dtype=object), size=rows)
    return pd.DataFrame(columns)


def resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status; this benchmark needs Linux")


def reset_peak() -> None:
    # Writing 5 to clear_refs resets VmHWM, the peak resident set size (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")


def child(mode: str, workdir: Path, rows: int, run: int) -> dict:
    import duckdb

    from tmiv_assets.resources.feature_store import FeatureStore

    baseline = resident_kib("VmRSS")
    store = FeatureStore(home=str(workdir / "home"))
    reference_file = workdir / "reference.parquet"
    frame = build_frame(rows) if mode.endswith("write") else None
    frame_bytes = int(build_frame(1000).memory_usage(deep=True).sum() * rows / 1000)
    reset_peak()
    started = time.perf_counter()
    if mode == "reference_write":
        with duckdb.connect() as connection:
            connection.register("frame", frame)
            connection.execute(f"COPY frame TO '{reference_file}' (FORMAT parquet)")
    elif mode == "ours_write":
        store.save("benchmark", f"run_{run}", frame, {"rows": rows})
    elif mode == "reference_read":
        with duckdb.connect() as connection:
            frame = connection.execute("SELECT * FROM read_parquet(?)", [str(reference_file)]).df()
    elif mode == "ours_read":
        frame = store.load("benchmark", "run_0")
    else:
        raise ValueError(f"unknown mode {mode!r}")
    seconds = time.perf_counter() - started
    assert frame.shape == (rows, N_COLUMNS), frame.shape
    return {"seconds": seconds, "peak_bytes": (resident_kib("VmHWM") - baseline) * 1024, "frame_bytes": frame_bytes}


def measure(mode: str, workdir: Path, rows: int, repeats: int) -> dict:
    runs = []
    for run in range(repeats):
        output = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--workdir", str(workdir), "--rows", str(rows),
             "--run", str(run)],
            check=True, capture_output=True, text=True,
        ).stdout
        runs.append(json.loads(output.strip().splitlines()[-1]))
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_bytes": max(r["peak_bytes"] for r in runs),
        "frame_bytes": runs[0]["frame_bytes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--run", type=int, default=0)
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(child(arguments.child, arguments.workdir, arguments.rows, arguments.run)))
        return

    with tempfile.TemporaryDirectory(prefix="tmiv_bench_") as directory:
        workdir = Path(directory)
        results = {}
        # Writes first: the read measurements read the files the write measurements left behind.
        for mode in ("reference_write", "ours_write", "reference_read", "ours_read"):
            results[mode] = measure(mode, workdir, arguments.rows, arguments.repeats)
    frame_mib = results["ours_write"]["frame_bytes"] / 2**20
    print(f"frame: {arguments.rows:,} rows x {N_COLUMNS} columns, {frame_mib:,.0f} MiB in memory")
    for mode, result in results.items():
        print(f"{mode:16s} {result['seconds']:7.3f} s   peak {result['peak_bytes'] / 2**20:8,.0f} MiB "
              f"({result['peak_bytes'] / result['frame_bytes']:.2f}x frame)")
    summary = {"rows": arguments.rows, "columns": N_COLUMNS, "frame_mib": round(frame_mib, 1)}
    for operation in ("write", "read"):
        ours, reference = results[f"ours_{operation}"], results[f"reference_{operation}"]
        summary |= {
            f"{operation}_seconds": round(ours["seconds"], 3),
            f"reference_{operation}_seconds": round(reference["seconds"], 3),
            f"{operation}_ratio": round(ours["seconds"] / reference["seconds"], 3),
            f"{operation}_peak_mib": round(ours["peak_bytes"] / 2**20, 1),
            f"reference_{operation}_peak_mib": round(reference["peak_bytes"] / 2**20, 1),
            f"{operation}_memory_ratio": round(ours["peak_bytes"] / ours["frame_bytes"], 3),
        }
    summary["meets_targets"] = all(
        [summary["write_ratio"] <= TIME_TARGET, summary["read_ratio"] <= TIME_TARGET,
         summary["write_memory_ratio"] <= MEMORY_TARGET, summary["read_memory_ratio"] <= MEMORY_TARGET]
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
