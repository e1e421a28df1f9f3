"""Optuna samplers by name, and scoring of out-of-fold predictions."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
from sklearn import metrics

SAMPLERS = ("tpe", "gp", "nsga2", "random")


def make_sampler(name: str, seed: int = 0, population_size: int = 20, crossover_prob: float = 0.9,
                 mutation_prob: float | None = None) -> optuna.samplers.BaseSampler:
    """TPE, Gaussian-process (Bayesian), NSGA-II (genetic: population, crossover, mutation) or random search."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population_size, crossover_prob=crossover_prob,
                                             mutation_prob=mutation_prob, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler {name!r} is not one of {SAMPLERS}")


def oof_score(metric: str, task: str, y: pd.Series, predicted: np.ndarray, classes) -> float:
    """Score probabilities (classification, one column per class) or values (regression)."""
    if task == "regression":
        values = np.asarray(predicted).reshape(-1)
        return {"rmse": lambda: metrics.root_mean_squared_error(y, values),
                "mae": lambda: metrics.mean_absolute_error(y, values),
                "r2": lambda: metrics.r2_score(y, values)}[metric]()
    proba = np.asarray(predicted)
    labels = np.asarray(classes)[proba.argmax(axis=1)]
    if metric == "roc_auc":
        if task == "binary":
            return metrics.roc_auc_score(y == classes[1], proba[:, 1])
        return metrics.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
    if metric == "log_loss":
        return metrics.log_loss(y, np.clip(proba, 1e-15, 1), labels=classes)
    if metric == "accuracy":
        return metrics.accuracy_score(y, labels)
    return metrics.f1_score(y, labels, average="macro")
