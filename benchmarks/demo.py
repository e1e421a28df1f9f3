"""The main job's wall time: `python -m tmiv_assets.demo` end to end on a fresh state directory, as `make demo` runs
it from an installed venv (imports included), against the same demo with each job's own executor, as the UI and
daemon run them (training, explaining and forecasting steps each in a process of their own), measured in the same
run one after the other.
Target: under 150 s on 2 cores, orchestration (a run's time outside its asset steps) under 15% of the runs' time.
The last printed line is one JSON object with the headline figures.

    .venv/bin/python benchmarks/demo.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"Wall time: ([\d.]+)s\. (\d+) runs took ([\d.]+)s together .*?, ([\d.]+)s of it inside asset "
                     r"steps: orchestration ([\d.]+)%")
STAGE = re.compile(r"^\| ([a-z_ ]+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \|$", re.MULTILINE)


def run_demo(home: Path, *flags: str) -> dict:
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DAGSTER_"))} | {
        "TMIV_HOME": str(home), "DAGSTER_HOME": str(dagster_home), "TMIV_DATA_DIR": str(PROJECT_ROOT / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow/mlflow.db"}
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "tmiv_assets.demo", *flags], cwd=PROJECT_ROOT, env=environment,
                               capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"the demo {flags} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    wall, runs, run_s, step_s, orchestration = SUMMARY.search(completed.stdout).groups()
    return {"wall_s": round(seconds, 1), "demo_wall_s": float(wall), "runs": int(runs), "runs_s": float(run_s),
            "in_steps_s": float(step_s), "orchestration_pct": float(orchestration),
            "stages_s": {name: float(s) for name, _, _, s in STAGE.findall(completed.stdout)}}


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        ours = run_demo(Path(scratch) / "ours")
        print("steps in process:", json.dumps(ours), flush=True)
        reference = run_demo(Path(scratch) / "reference", "--steps-in-subprocesses")
        print("steps in subprocesses:", json.dumps(reference), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(json.dumps({"demo_wall_s": ours["wall_s"], "reference_wall_s": reference["wall_s"],
                      "ratio": round(ours["wall_s"] / reference["wall_s"], 3), "target_s": 150,
                      "orchestration_pct": ours["orchestration_pct"],
                      "reference_orchestration_pct": reference["orchestration_pct"]}))


if __name__ == "__main__":
    main()
