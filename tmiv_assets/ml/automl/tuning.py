"""Optuna pieces of the search: samplers and pruners by name, shared storage, trial tables and search plots."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in the daemon
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from optuna.storages.journal import JournalFileBackend  # noqa: E402

SAMPLERS = ("tpe", "gp", "nsga2", "random", "grid")
COSTS = {"latency": "latency_ms_per_1k_rows", "size": "model_bytes"}
"""Secondary objectives a search can trade the score against, and the trial attribute each is kept in."""


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


def create_study(name: str, directions: list[str], sampler: optuna.samplers.BaseSampler,
                 storage=None) -> optuna.Study:
    """A pruned study (one direction) or a multi-objective one; with storage, an existing study of that name
    is resumed so processes can share it."""
    return optuna.create_study(study_name=name, directions=directions, sampler=sampler, pruner=make_pruner(),
                               storage=make_storage(storage), load_if_exists=storage is not None)


def score_of(trial: optuna.trial.FrozenTrial) -> float | None:
    """The trial's score: its value, or the first of its values in a multi-objective study."""
    return trial.values[0] if trial.values else None


def trials_frame(study: optuna.Study, family: str) -> pd.DataFrame:
    """One row per trial: number, the search worker that ran it, state, value, seconds, folds trained, whether it
    was skipped before training, params, why it was pruned or stopped, and where it stopped growing at its time
    share (the last time-boxed fold)."""
    rows = [{"family": family, "number": t.number, "worker": t.user_attrs.get("worker", 0), "state": t.state.name,
             "value": score_of(t),
             "seconds": t.duration.total_seconds() if t.duration else None,
             "folds_trained": t.user_attrs.get("folds_trained"),
             # Pruned before any fold trained: skipped, not searched.
             "skipped": t.state.name == "PRUNED" and not t.user_attrs.get("folds_trained"),
             "pruned_reason": t.user_attrs.get("pruned_reason"), "time_boxed": t.user_attrs.get("time_boxed"),
             "params": repr(t.params),
             **{cost: t.user_attrs.get(cost) for cost in COSTS.values()}}
            for t in study.trials if t.state.is_finished()]
    return pd.DataFrame(rows, columns=["family", "number", "worker", "state", "value", "seconds", "folds_trained",
                                       "skipped", "pruned_reason", "time_boxed", "params", *COSTS.values()])


def study_plots(study: optuna.Study) -> dict[str, plt.Figure]:
    """Optimisation history and, with two or more finished trials that vary parameters, fANOVA importance.

    Both come from optuna.visualization.matplotlib, which draws offline.
    """
    from optuna.visualization import matplotlib as optuna_plots

    figures = {}
    # A multi-objective study plots its first objective, the score.
    target = {"target": score_of, "target_name": "score"} if len(study.directions) > 1 else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # a one-parameter importance plot has no legend entries
        figures["history"] = optuna_plots.plot_optimization_history(study, **target).figure
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        varied = {k for t in complete for k in t.params if len({str(u.params.get(k)) for u in complete}) > 1}
        if len(complete) >= 2 and varied:
            importance = optuna.importance.FanovaImportanceEvaluator(seed=0)
            figures["param_importance"] = optuna_plots.plot_param_importances(study, evaluator=importance,
                                                                              **target).figure
    return figures
