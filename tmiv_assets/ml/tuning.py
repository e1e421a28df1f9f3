"""Optuna tuners: samplers and pruners by name, shared storage, trial tables and search plots."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in the daemon
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from optuna.storages.journal import JournalFileBackend  # noqa: E402
from sklearn import metrics  # noqa: E402

SAMPLERS = ("tpe", "gp", "nsga2", "random", "grid")
METRICS = {"binary": ("roc_auc", "log_loss", "accuracy", "f1_macro"),
           "multiclass": ("f1_macro", "log_loss", "accuracy", "roc_auc"),
           "regression": ("rmse", "mae", "r2", "mape")}
LOWER = {"rmse", "mae", "log_loss", "mape"}


def make_sampler(name: str, seed: int = 0, population_size: int = 20, crossover_prob: float = 0.9,
                 mutation_prob: float | None = None, grid: dict | None = None) -> optuna.samplers.BaseSampler:
    """A sampler by name.

    'tpe' (tree-structured Parzen estimator), 'gp' (Gaussian-process Bayesian optimisation), 'nsga2'
    (genetic algorithm: `population_size`, `crossover_prob` and `mutation_prob` are its settings),
    'random', or 'grid' over `grid` ({param: [values]}).
    """
    if name == "tpe":
        # Few random start-up trials: budgets here are short and the first trial is a known-good default.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population_size, crossover_prob=crossover_prob,
                                             mutation_prob=mutation_prob, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        if not grid:
            raise ValueError("sampler 'grid' needs a non-empty grid {param: [values]}")
        return optuna.samplers.GridSampler(grid, seed=seed)
    raise ValueError(f"sampler {name!r} is not one of {SAMPLERS}")


def make_pruner(n_startup_trials: int = 3, n_warmup_steps: int = 1) -> optuna.pruners.BasePruner:
    """Median pruning: stop a trial whose running score is worse than the median of earlier trials."""
    return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps)


def make_storage(storage: str | Path | optuna.storages.BaseStorage | None):
    """Optuna storage shared across processes: an RDB URL ('sqlite:///studies.db', 'postgresql://...'),
    a journal file path (anything else, e.g. 'studies.log'), an existing storage object, or None (memory)."""
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage
    text = str(storage)
    if "://" in text:
        return optuna.storages.RDBStorage(text)
    Path(text).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(text))


def create_study(name: str, direction: str, sampler: optuna.samplers.BaseSampler, storage=None) -> optuna.Study:
    """A pruned study; with storage, an existing study of that name is resumed so processes can share it."""
    return optuna.create_study(study_name=name, direction=direction, sampler=sampler, pruner=make_pruner(),
                               storage=make_storage(storage), load_if_exists=storage is not None)


def direction_of(metric: str) -> str:
    return "minimize" if metric in LOWER else "maximize"


def is_improvement(metric: str, value: float, than: float | None) -> bool:
    return than is None or (value < than if metric in LOWER else value > than)


def oof_score(metric: str, task: str, y: pd.Series, predicted: np.ndarray, classes) -> float:
    """Score probabilities (classification, one column per class) or values (regression)."""
    if task == "regression":
        values = np.asarray(predicted).reshape(-1)
        return float({"rmse": metrics.root_mean_squared_error, "mae": metrics.mean_absolute_error,
                      "r2": metrics.r2_score, "mape": metrics.mean_absolute_percentage_error}[metric](y, values))
    proba = np.asarray(predicted)
    labels = np.asarray(classes)[proba.argmax(axis=1)]
    if metric == "roc_auc":
        if task == "binary":
            return float(metrics.roc_auc_score(y == classes[1], proba[:, 1]))
        return float(metrics.roc_auc_score(y, proba / proba.sum(axis=1, keepdims=True), multi_class="ovr",
                                           labels=classes))
    if metric == "log_loss":
        return float(metrics.log_loss(y, np.clip(proba, 1e-15, 1), labels=classes))
    if metric == "accuracy":
        return float(metrics.accuracy_score(y, labels))
    return float(metrics.f1_score(y, labels, average="macro"))


def trials_frame(study: optuna.Study, family: str) -> pd.DataFrame:
    """One row per trial: number, state, value, seconds, params and why it was pruned or stopped."""
    rows = [{"family": family, "number": t.number, "state": t.state.name, "value": t.value,
             "seconds": t.duration.total_seconds() if t.duration else None,
             "pruned_reason": t.user_attrs.get("pruned_reason"), "params": repr(t.params)}
            for t in study.trials if t.state.is_finished()]
    return pd.DataFrame(rows, columns=["family", "number", "state", "value", "seconds", "pruned_reason", "params"])


def study_plots(study: optuna.Study) -> dict[str, plt.Figure]:
    """Optimisation history and, with two or more finished trials that vary parameters, fANOVA importance.

    Both come from optuna.visualization.matplotlib, which draws offline.
    """
    from optuna.visualization import matplotlib as optuna_plots

    figures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        figures["history"] = optuna_plots.plot_optimization_history(study).figure
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        varied = {k for t in complete for k in t.params if len({str(u.params.get(k)) for u in complete}) > 1}
        if len(complete) >= 2 and varied:
            importance = optuna.importance.FanovaImportanceEvaluator(seed=0)
            figures["param_importance"] = optuna_plots.plot_param_importances(study, evaluator=importance).figure
    return figures


def save_study_plots(study: optuna.Study, directory: str | Path, prefix: str = "") -> list[Path]:
    """Write `study_plots` as PNG artefacts; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in study_plots(study).items():
        path = directory / f"{prefix}{name}.png"
        figure.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths


def tune(objective: Callable[[optuna.Trial], float], metric: str, sampler: str = "tpe", n_trials: int | None = None,
         timeout: float | None = None, seed: int = 0, storage=None, study_name: str = "tune",
         **sampler_options) -> optuna.Study:
    """Run a stand-alone study (used by the neural architecture search); returns the study."""
    study = create_study(study_name, direction_of(metric), make_sampler(sampler, seed, **sampler_options), storage)
    study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(ValueError,))
    return study
