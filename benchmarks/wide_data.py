"""Wide-data benchmark: `rank_features` end to end on 300 rows x 10,000 columns, and the correlation filter next to
the pandas-corr + Python-loop filter it replaced (copied below as the reference).

The seeded frame has informative columns (they drive a binary target), near-duplicates of some informative and
noise columns (|r| about 0.999, placed after their sources, so the filter must drop them), constant columns and
plain noise. Both filters run on the same feature columns and must agree. The last printed line is one JSON object
with the headline figures; `load_average` is the 1/5/15-minute load just before timing, as other processes on the
machine slow everything down.

    .venv/bin/python benchmarks/wide_data.py
    .venv/bin/python benchmarks/wide_data.py --rows 200 --columns 2000
    .venv/bin/python benchmarks/wide_data.py --skip-reference    # the reference loop alone takes minutes
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd

from tmiv_assets.ml.features.selection import FeatureSelector, rank_features

THRESHOLD = 0.95  # FeatureSelector's default correlation_threshold, which rank_features uses


def wide_frame(rows: int, columns: int, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Feature frame plus a binary `target` column; also returns the names of the planted near-duplicates."""
    rng = np.random.default_rng(seed)
    n_informative, n_duplicates, n_constant = 20, columns // 50, columns // 200
    n_noise = columns - n_informative - n_duplicates - n_constant
    informative = rng.normal(size=(rows, n_informative))
    noise = rng.normal(size=(rows, n_noise))
    sources = np.hstack([informative, noise])[:, rng.choice(n_informative + n_noise, n_duplicates, replace=False)]
    signs = rng.choice([-1.0, 1.0], n_duplicates)  # negative copies too: the filter compares |r|
    duplicates = signs * sources + 0.05 * rng.normal(size=sources.shape)
    constant = np.repeat(rng.normal(size=(1, n_constant)), rows, axis=0)
    names = ([f"informative_{i}" for i in range(n_informative)] + [f"noise_{i}" for i in range(n_noise)]
             + [f"duplicate_{i}" for i in range(n_duplicates)] + [f"constant_{i}" for i in range(n_constant)])
    frame = pd.DataFrame(np.hstack([informative, noise, duplicates, constant]), columns=names)
    logit = informative @ rng.normal(size=n_informative)
    frame["target"] = (logit + rng.normal(scale=0.5 * logit.std(), size=rows) > 0).astype(int)
    return frame, names[n_informative + n_noise:n_informative + n_noise + n_duplicates]


def reference_correlated(X: pd.DataFrame, threshold: float) -> tuple[pd.Series, list[str]]:
    """The filter before vectorisation, verbatim: pandas corr, then a Python loop over earlier kept columns."""
    correlation = X.corr().abs().fillna(0.0)
    np.fill_diagonal(correlation.values, 0.0)
    dropped: list[str] = []
    for position, column in enumerate(X.columns):
        earlier_kept = [c for c in X.columns[:position] if c not in dropped]
        if earlier_kept and correlation.loc[column, earlier_kept].max() > threshold:
            dropped.append(column)
    return correlation.max(axis=1), dropped


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--columns", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-reference", action="store_true", help="do not time the old pandas + loop filter")
    args = parser.parse_args()

    frame, duplicates = wide_frame(args.rows, args.columns, args.seed)
    features = frame.drop(columns=["target"])
    load = [round(v, 2) for v in os.getloadavg()]
    selector, rank_seconds = timed(rank_features, frame, "target", "binary")
    (max_abs, dropped), filter_seconds = timed(FeatureSelector(correlation_threshold=THRESHOLD)._correlated, features)
    reference_seconds = agree = None
    if not args.skip_reference:
        (reference_max, reference_dropped), reference_seconds = timed(reference_correlated, features, THRESHOLD)
        agree = dropped == reference_dropped and bool(np.allclose(max_abs, reference_max, rtol=0, atol=1e-9))

    ranking = selector.ranking_.set_index("feature")
    informative = [c for c in features.columns if c.startswith("informative_")]
    rows = [("rank_features (end to end)", rank_seconds),
            ("correlation filter (vectorised)", filter_seconds),
            ("reference filter (pandas corr + loop)", reference_seconds)]
    print(f"{args.rows} rows x {args.columns} columns, load average {load} (1/5/15 min), {os.cpu_count()} cores")
    for label, seconds in rows:
        print(f"  {label:<40} {'skipped' if seconds is None else f'{seconds:8.2f} s'}")
    print(f"  near-duplicates dropped by rank_features: {int((~ranking.loc[duplicates, 'passed_filters']).sum())}"
          f"/{len(duplicates)}; informative selected: {int(ranking.loc[informative, 'selected'].sum())}"
          f"/{len(informative)}; selected in all: {len(selector.selected_features_)}")
    if agree is not None:
        print(f"  vectorised and reference filters agree (dropped columns, max |r|): {agree}")
    speedup = None if reference_seconds is None else round(reference_seconds / filter_seconds, 1)
    print(json.dumps({"shape": [args.rows, args.columns], "rank_features_seconds": round(rank_seconds, 2),
                      "correlation_filter_seconds": round(filter_seconds, 3),
                      "reference_loop_seconds": None if reference_seconds is None else round(reference_seconds, 2),
                      "speedup": speedup, "filters_agree": agree, "load_average": load}))


if __name__ == "__main__":
    main()
