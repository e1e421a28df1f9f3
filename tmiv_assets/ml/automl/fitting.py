"""Fitting one model before a deadline, so a trial that would overrun the budget is stopped, not awaited.

Boosting libraries stop through their callbacks (at the deadline, and early on the validation fold when
the configuration asks for many rounds); forests and histogram boosting grow in chunks with warm starts;
scikit-learn gradient boosting through its `monitor`; the PyTorch MLP checks the clock every epoch. The
rest cannot be interrupted and are only started when their expected cost fits (see `search`).
"""

from __future__ import annotations

import math
import time

import numpy as np
from lightgbm import early_stopping
from lightgbm.callback import EarlyStopException
from xgboost.callback import TrainingCallback

EARLY_STOPPING_ROUNDS = 50
EARLY_STOPPING_FROM = 500
"""Configurations with at least this many rounds stop early on the validation fold; fewer (the library
defaults) train exactly as configured."""
CHUNK = 50
"""Trees (or boosting iterations) added per warm start between two looks at the clock."""


class DeadlineReached(Exception):
    """A fit was stopped at the deadline; its partial model is not used."""


def fit_within(estimator, X, y, X_valid=None, y_valid=None, deadline: float | None = None):
    """Fit `estimator` on X, y before the monotonic `deadline`; raise DeadlineReached when it cannot."""
    module = type(estimator).__module__.split(".")[0]
    if module == "lightgbm":
        _fit_lightgbm(estimator, X, y, X_valid, y_valid, deadline)
    elif module == "catboost":
        _fit_catboost(estimator, X, y, X_valid, y_valid, deadline)
    elif module == "xgboost" or type(estimator).__name__.startswith("XGB"):
        _fit_xgboost(estimator, X, y, X_valid, y_valid, deadline)
    elif type(estimator).__module__.startswith("sklearn.ensemble") and "warm_start" in estimator.get_params():
        _fit_in_chunks(estimator, X, y, deadline)
    elif "deadline" in estimator.get_params():
        estimator.set_params(deadline=deadline).fit(X, y)
        if estimator.stopped_reason_.startswith("deadline"):
            raise DeadlineReached(estimator.stopped_reason_)
    else:
        estimator.fit(X, y)
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineReached(f"{type(estimator).__name__} finished after the deadline")
    return estimator


def best_rounds(estimator) -> int | None:
    """Rounds kept by early stopping (LightGBM / XGBoost), or None when it did not stop early."""
    for attribute in ("best_iteration_", "best_iteration"):
        try:
            value = getattr(estimator, attribute)
        except (AttributeError, ValueError):  # XGBoost raises when there was no early stopping
            continue
        if value is not None and value > 0:
            return int(value)
    return None


def refit_rounds(rounds: list[int | None], train_share: float) -> int | None:
    """Rounds for a refit on all rows: the folds' early-stopping mean, grown in proportion to the rows the
    refit has beyond a fold's training share."""
    kept = [r for r in rounds if r]
    if not kept:
        return None
    return math.ceil(float(np.mean(kept)) / max(train_share, 0.1))


def rounds_parameter(params: dict) -> str:
    """CatBoost calls the number of rounds `iterations` and refuses `n_estimators` beside it."""
    return "iterations" if "iterations" in params else "n_estimators"


def _wants_early_stopping(estimator, X_valid) -> bool:
    params = estimator.get_params()
    return X_valid is not None and (params.get(rounds_parameter(params)) or 0) >= EARLY_STOPPING_FROM


def _fit_lightgbm(estimator, X, y, X_valid, y_valid, deadline) -> None:
    callbacks = []
    if deadline is not None:
        def stop_at_deadline(env) -> None:
            if time.monotonic() > deadline:
                raise EarlyStopException(env.iteration, env.evaluation_result_list or [])
        callbacks.append(stop_at_deadline)
    if _wants_early_stopping(estimator, X_valid):
        callbacks.append(early_stopping(EARLY_STOPPING_ROUNDS, verbose=False))
        estimator.fit(X, y, eval_X=(X_valid,), eval_y=(y_valid,), callbacks=callbacks)
    else:
        estimator.fit(X, y, callbacks=callbacks)
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineReached(f"LightGBM stopped at the deadline after {estimator.booster_.current_iteration()} "
                              "rounds")


class _CatBoostDeadline:
    def __init__(self, deadline: float):
        self.deadline = deadline

    def after_iteration(self, info) -> bool:
        return time.monotonic() <= self.deadline  # False stops training


def _fit_catboost(estimator, X, y, X_valid, y_valid, deadline) -> None:
    callbacks = [_CatBoostDeadline(deadline)] if deadline is not None else None
    if _wants_early_stopping(estimator, X_valid):
        estimator.fit(X, y, eval_set=(X_valid, y_valid), early_stopping_rounds=EARLY_STOPPING_ROUNDS,
                      callbacks=callbacks)
    else:
        estimator.fit(X, y, callbacks=callbacks)
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineReached(f"CatBoost stopped at the deadline after {estimator.tree_count_} trees")


class _XGBoostDeadline(TrainingCallback):
    def __init__(self, deadline: float):
        self.deadline = deadline

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        return time.monotonic() > self.deadline


def _fit_xgboost(estimator, X, y, X_valid, y_valid, deadline) -> None:
    callbacks = [_XGBoostDeadline(deadline)] if deadline is not None else None
    stopping = EARLY_STOPPING_ROUNDS if _wants_early_stopping(estimator, X_valid) else None
    estimator.set_params(callbacks=callbacks, early_stopping_rounds=stopping)
    if stopping:
        estimator.fit(X, y, eval_set=[(X_valid, y_valid)], verbose=False)
    else:
        estimator.fit(X, y)
    estimator.set_params(callbacks=None, early_stopping_rounds=None)  # picklable, and refits run plain


def _fit_in_chunks(estimator, X, y, deadline) -> None:
    """Forests add trees, histogram boosting adds iterations, CHUNK at a time, looking at the clock between."""
    size = "n_estimators" if "n_estimators" in estimator.get_params() else "max_iter"
    target = estimator.get_params()[size]
    if deadline is None:
        estimator.fit(X, y)
        return
    estimator.set_params(warm_start=True)
    grown = 0
    while grown < target:
        grown = min(target, grown + CHUNK)
        estimator.set_params(**{size: grown}).fit(X, y)
        if getattr(estimator, "n_iter_", grown) < grown:  # histogram boosting stopped early by itself
            break
        if grown < target and time.monotonic() > deadline:
            raise DeadlineReached(f"{type(estimator).__name__} stopped at the deadline after {grown} of {target}")
    estimator.set_params(warm_start=False)
