"""Serving: batch prediction throughput of a champion pipeline, and `mlflow models serve` latency.

Needs a champion for the dataset in TMIV_HOME (default .tmiv; `make demo` makes one for flights).
Batch: the champion's whole pipeline (raw columns -> feature builder -> preprocessing -> model) on
`--rows` rows resampled from the dataset, next to the bare final estimator's `predict` on the same rows
already encoded, in the same run, each the best of three calls; target: ours <= 1.5x the bare call.
Server: MLflow's scoring server on a free loopback port, `--requests` requests of 1 row and of 1,000 rows;
p50 and p99 latency.
The last printed line is one JSON object with the headline figures.

    .venv/bin/python benchmarks/serving.py --dataset flights --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from tmiv_assets.ml.data.ingest import read_dataset
from tmiv_assets.ml.data.spec import load_dataset_spec
from tmiv_assets.resources.model_registry import ModelRegistry

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def best_seconds(call, repeats: int = 3) -> float:
    """The fastest of `repeats` timed calls: the first call also pays one-off costs (lazy imports, the
    allocator growing the heap), which a serving process pays once, not per batch."""
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return min(timings)


def batch_throughput(model, rows: pd.DataFrame) -> dict:
    ours = best_seconds(lambda: model.predict(rows))
    *encoders, (_, estimator) = [*model.steps[:-1], *model.steps[-1][1].steps]
    encoded = rows
    for _, step in encoders:
        encoded = step.transform(encoded)
    bare = best_seconds(lambda: estimator.predict(encoded))
    return {"rows": len(rows), "ours_rows_per_s": len(rows) / ours, "bare_rows_per_s": len(rows) / bare,
            "ours_seconds": ours, "bare_seconds": bare, "ratio": ours / bare}


def server_latency(dataset: str, home: Path, rows: pd.DataFrame, requests: int) -> dict:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    server = subprocess.Popen(["mlflow", "models", "serve", "-m", f"models:/tmiv_{dataset}@champion",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], env=environment,
                              cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit("the scoring server exited; is there a champion?") from None
                time.sleep(0.5)
        figures = {}
        for size in (1, 1000):
            body = json.dumps({"dataframe_split": json.loads(rows.head(size).to_json(
                orient="split", index=False, date_format="iso"))}).encode()
            seconds = []
            for _ in range(requests):
                request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                                 {"Content-Type": "application/json"})
                started = time.perf_counter()
                urllib.request.urlopen(request, timeout=60).read()
                seconds.append(time.perf_counter() - started)
            figures[f"p50_ms_{size}_rows"] = 1000 * float(np.percentile(seconds, 50))
            figures[f"p99_ms_{size}_rows"] = 1000 * float(np.percentile(seconds, 99))
        return figures
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="flights")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    home = Path(os.environ.get("TMIV_HOME", PROJECT_ROOT / ".tmiv")).resolve()
    registry = ModelRegistry(home=str(home))
    champion = registry.champion(args.dataset)
    if champion is None:
        raise SystemExit(f"no champion for {args.dataset} in {home}; run `make demo` first")
    model = registry.load_version(args.dataset, champion.version)
    spec = load_dataset_spec(PROJECT_ROOT / "data" / "datasets" / f"{args.dataset}.yaml")
    frame = read_dataset(spec).drop(columns=[spec.target])
    rows = frame.sample(n=args.rows, replace=True, random_state=0).reset_index(drop=True)
    batch = batch_throughput(model, rows)
    print(pd.DataFrame([batch]).to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    latency = server_latency(args.dataset, home, frame, args.requests)
    print(pd.DataFrame([latency]).to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(json.dumps({"dataset": args.dataset, "champion_version": int(champion.version), **batch, **latency,
                      "target_ratio": 1.5, "load_average": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
