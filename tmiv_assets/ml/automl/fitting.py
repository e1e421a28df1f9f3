"""Fitting one model before a deadline, so a trial that would overrun the budget is stopped, not awaited.

Boosting libraries stop through their callbacks (at the deadline, and early on the validation fold when
the configuration asks for many rounds); forests and histogram boosting grow in chunks with warm starts;
scikit-learn gradient boosting through its `monitor`; the PyTorch MLP checks the clock every epoch; linear
models with an iterative solver (logistic regression's L-BFGS, the lasso's coordinate descent) run a chunk of
iterations at a time, warm-started from their last coefficients. The rest cannot be interrupted and are only
started when their expected cost fits (see `search`).

Two clocks: at the hard `deadline` a fit is abandoned (DeadlineReached); at the soft `grow_until` a model
whose size is only a ceiling (boosting that stops early on its validation fold, forests, histogram
boosting) stops growing and is kept as it is, so a fit on data that needs more rounds than the time allows
still yields the best model that time could buy instead of nothing (as AutoGluon's time-limited fits do).
A model kept short of its rounds or trees can later go on from where it stopped (`init_model`, see
`grows_from`).
"""

from __future__ import annotations

import copy
import math
import time
import warnings

import catboost
import numpy as np
import xgboost
from lightgbm import LGBMModel, early_stopping
from lightgbm.callback import EarlyStopException
from sklearn.exceptions import ConvergenceWarning
from xgboost.callback import TrainingCallback

EARLY_STOPPING_ROUNDS = 50
EARLY_STOPPING_FROM = 500
"""Configurations with at least this many rounds stop early on the validation fold; fewer (the library
defaults) train exactly as configured."""
CHUNK = 50
"""Trees (or boosting iterations) added per warm start between two looks at the clock."""
FIRST_CHUNK = 2
"""The first warm start's size: the clock is read early, so later chunks can be sized to the time left (ten
fully grown trees on 320,000 rows took 24.6 s, past the whole search's deadline)."""
CHUNK_TIME_SHARE = 0.5
"""Of the time left before the model must stop growing: what one chunk after the first may be sized to take."""
SOLVER_CHUNK = 100
"""Solver iterations between two looks at the clock; a fit that converges inside the first chunk is exactly
the fit without chunks (an ill-conditioned one took 38 s of a 30 s budget before)."""


class DeadlineReached(Exception):
    """A fit was stopped at the deadline; its partial model is not used."""


def fit_within(estimator, X, y, X_valid=None, y_valid=None, deadline: float | None = None,
               grow_until: float | None = None, any_size: bool = False, init_model=None):
    """Fit `estimator` on X, y before the monotonic `deadline`; raise DeadlineReached when it cannot. A model
    that can stop growing (see `time_boxed`; with `any_size` also boosting configured below
    EARLY_STOPPING_FROM rounds) stops at `grow_until` and is kept; `time_boxed_` then says so. The fit goes on
    from `init_model`, a fitted model of the same configuration (see `grows_from`), which stays as it is."""
    stopped_growing = False
    if grow_until is not None and not time_boxed(estimator, X_valid, any_size):
        grow_until = None
    stop = grow_until if grow_until is not None else deadline  # grow_until never lies past the deadline
    if _is_boosting(estimator):
        fit = (_fit_lightgbm if isinstance(estimator, LGBMModel) else
               _fit_catboost if isinstance(estimator, catboost.CatBoost) else _fit_xgboost)
        configured = _configured_rounds(estimator)
        planned = math.inf if configured is None else configured + (
            0 if init_model is None else model_size(init_model))
        fit(estimator, X, y, X_valid, y_valid, stop, init_model)
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineReached(f"{type(estimator).__name__} stopped at the deadline after "
                                  f"{model_size(estimator)} rounds")
        # short of its rounds when the clock passed: one whose last round ended past it is whole
        stopped_growing = grow_until is not None and time.monotonic() > grow_until and model_size(estimator) < planned
    elif _grows_in_chunks(estimator):
        if init_model is not None:
            _take_over(estimator, init_model)
        stopped_growing = _fit_in_chunks(estimator, X, y, deadline, grow_until)
    elif deadline is not None and _iterates(estimator):
        _fit_in_iterations(estimator, X, y, deadline)
    elif "deadline" in estimator.get_params():
        estimator.set_params(deadline=deadline).fit(X, y)
        if estimator.stopped_reason_.startswith("deadline"):
            raise DeadlineReached(estimator.stopped_reason_)
    else:
        estimator.fit(X, y)
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineReached(f"{type(estimator).__name__} finished after the deadline")
    if stopped_growing:
        estimator.time_boxed_ = f"stopped growing at its time share after {model_size(estimator)} rounds"
    return estimator


def time_boxed(estimator, X_valid=None, any_size: bool = False) -> bool:
    """Whether the model's size is a ceiling it may stop short of: boosting that stops early on its validation
    fold, forests and histogram boosting. Boosting configured below EARLY_STOPPING_FROM rounds (the library
    defaults) trains exactly as configured unless `any_size` says its rounds too are only a ceiling."""
    if _is_boosting(estimator):
        return any_size or _wants_early_stopping(estimator, X_valid)
    return _grows_in_chunks(estimator)


def can_grow_on(estimator) -> bool:
    """Whether a fitted model can go on from its rounds or trees (see `grows_from`), at a cost known from its
    first round or chunk (a fit with a deadline measures it)."""
    return (_is_boosting(estimator) or _grows_in_chunks(estimator)) and hasattr(estimator, "first_round_seconds_")


def grows_from(estimator, previous) -> None:
    """Sets the unfitted `estimator`, of `previous`'s configuration, to add the rounds `previous` stopped
    short of when it goes on from it (`fit_within(..., init_model=previous)`); a configuration that stops early
    on its validation fold may add all of its rounds again, early stopping ends it. Forests and histogram
    boosting keep their configured size: their warm start adds what `previous` lacks."""
    if not _is_boosting(estimator):
        return
    if (configured := _configured_rounds(estimator)) is not None and configured < EARLY_STOPPING_FROM:
        estimator.set_params(**{rounds_parameter(estimator.get_params()): max(1, configured - model_size(previous))})


def growth_start_seconds(previous, row_predict_seconds: float, rows: int) -> float:
    """Expected seconds before going on from `previous` on `rows` training rows adds to it: its first round or
    chunk again (the data's binning included) and, for boosting, the model so far predicting the rows, whose
    scores the next round starts from; a forest's new trees need no prediction."""
    rescoring = 0.0 if is_forest(previous) else row_predict_seconds * rows
    return previous.first_round_seconds_ + rescoring


def model_size(estimator) -> int:
    """Boosting rounds or trees the fitted model holds."""
    for attribute in ("tree_count_", "n_estimators_", "n_iter_"):
        if isinstance(value := getattr(estimator, attribute, None), int | np.integer):
            return int(value)
    if hasattr(estimator, "booster_"):
        return int(estimator.booster_.current_iteration())
    if hasattr(estimator, "get_booster"):
        return int(estimator.get_booster().num_boosted_rounds())
    return len(getattr(estimator, "estimators_", ()))


def best_rounds(estimator) -> int | None:
    """Rounds kept by early stopping (LightGBM / XGBoost / CatBoost), the trees of a forest that stopped growing
    at its time share, or None when it did not stop early."""
    if hasattr(estimator, "time_boxed_") and _grows_in_chunks(estimator) and "n_estimators" in estimator.get_params():
        return model_size(estimator)
    for attribute in ("best_iteration_", "best_iteration"):
        try:
            value = getattr(estimator, attribute)
        except (AttributeError, ValueError):  # XGBoost raises when there was no early stopping
            continue
        if value is not None and value > 0:
            return int(value)
    return None


def training_share(folds: list) -> float:
    """A fold's mean share of the rows: a refit on all of them has 1/share times the rows (and the rounds)."""
    rows = max(len(train) + len(valid) for train, valid in folds)  # every kind of fold's last one spans them all
    return float(np.mean([len(train) for train, _ in folds])) / rows


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


def _is_boosting(estimator) -> bool:
    """LightGBM, CatBoost or XGBoost (also the catalog's subclasses of them)."""
    return isinstance(estimator, LGBMModel | catboost.CatBoost | xgboost.XGBModel)


def _grows_in_chunks(estimator) -> bool:
    return type(estimator).__module__.startswith("sklearn.ensemble") and "warm_start" in estimator.get_params()


def is_forest(estimator) -> bool:
    """A random forest or extra trees: trees grown independently, so a few dozen already score nearly as all do."""
    return _grows_in_chunks(estimator) and "n_estimators" in estimator.get_params() and not hasattr(
        estimator, "learning_rate")


def _take_over(estimator, fitted) -> None:
    """Gives the unfitted `estimator`, of `fitted`'s configuration, a copy of `fitted`'s trees or iterations,
    which its warm start then adds to; `fitted` stays as it is (it is the trial it went on from)."""
    params = estimator.get_params(deep=False)
    # whether this fit stops short is its own to say (fit_within sets time_boxed_, never clears it)
    state = {k: v for k, v in fitted.__dict__.items() if k != "time_boxed_"}
    estimator.__dict__.update(copy.deepcopy(state))
    estimator.set_params(**params)


def _iterates(estimator) -> bool:
    """A scikit-learn linear model whose solver can resume from its coefficients (Ridge solves in one step)."""
    return (type(estimator).__module__.startswith("sklearn.linear_model")
            and {"warm_start", "max_iter"} <= set(estimator.get_params()))


def _fit_in_iterations(estimator, X, y, deadline: float) -> None:
    """SOLVER_CHUNK iterations at a time up to the configured `max_iter`, looking at the clock between; a
    chunk that would end past the deadline is not started."""
    total = estimator.get_params()["max_iter"]
    started, done = time.monotonic(), 0
    try:
        while True:
            step = min(SOLVER_CHUNK, total - done)
            with warnings.catch_warnings():  # a chunk that ends unconverged is resumed, not a failure
                warnings.simplefilter("ignore", ConvergenceWarning)
                estimator.set_params(max_iter=step, warm_start=done > 0).fit(X, y)
            done += step
            if int(np.max(estimator.n_iter_)) < step or done >= total:
                return
            now = time.monotonic()
            if now + (now - started) / done * step > deadline:
                raise DeadlineReached(f"{type(estimator).__name__} stopped at the deadline after {done} of "
                                      f"{total} iterations")
    finally:
        estimator.set_params(max_iter=total, warm_start=False)  # refits and later fits start from scratch


def _configured_rounds(estimator) -> int | None:
    """The rounds the estimator is configured to grow; None where the library's default applies unset."""
    params = estimator.get_params()
    return params.get(rounds_parameter(params))


def _wants_early_stopping(estimator, X_valid) -> bool:
    return X_valid is not None and (_configured_rounds(estimator) or 0) >= EARLY_STOPPING_FROM


def _fit_lightgbm(estimator, X, y, X_valid, y_valid, deadline, init_model=None) -> None:
    callbacks = []
    init = {} if init_model is None else {"init_model": init_model.booster_}
    if deadline is not None:
        first_round = _FirstRound(estimator)

        def stop_at_deadline(env) -> None:
            first_round()
            if time.monotonic() > deadline:
                raise EarlyStopException(env.iteration, env.evaluation_result_list or [])
        callbacks.append(stop_at_deadline)
    if _wants_early_stopping(estimator, X_valid):
        callbacks.append(early_stopping(EARLY_STOPPING_ROUNDS, verbose=False))
        estimator.fit(X, y, eval_X=(X_valid,), eval_y=(y_valid,), callbacks=callbacks, **init)
    else:
        estimator.fit(X, y, callbacks=callbacks, **init)


class _FirstRound:
    """Called after every boosting round or chunk: sets the estimator's `first_round_seconds_`, the seconds from
    the start of its fit to the end of its first round (the data's binning included), which going on from it
    costs again."""

    def __init__(self, estimator):
        self.estimator, self.started = estimator, time.monotonic()
        estimator.__dict__.pop("first_round_seconds_", None)

    def __call__(self) -> None:
        if "first_round_seconds_" not in self.estimator.__dict__:
            self.estimator.first_round_seconds_ = time.monotonic() - self.started


class _CatBoostDeadline:
    def __init__(self, estimator, deadline: float):
        self.first_round, self.deadline = _FirstRound(estimator), deadline

    def after_iteration(self, info) -> bool:
        self.first_round()
        return time.monotonic() <= self.deadline  # False stops training


def _fit_catboost(estimator, X, y, X_valid, y_valid, deadline, init_model=None) -> None:
    callbacks = [_CatBoostDeadline(estimator, deadline)] if deadline is not None else None
    if _wants_early_stopping(estimator, X_valid):
        estimator.fit(X, y, eval_set=(X_valid, y_valid), early_stopping_rounds=EARLY_STOPPING_ROUNDS,
                      callbacks=callbacks, init_model=init_model)
    else:
        estimator.fit(X, y, callbacks=callbacks, init_model=init_model)


class _XGBoostDeadline(TrainingCallback):
    def __init__(self, estimator, deadline: float):
        super().__init__()
        self.first_round, self.deadline = _FirstRound(estimator), deadline

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        self.first_round()
        return time.monotonic() > self.deadline


def _fit_xgboost(estimator, X, y, X_valid, y_valid, deadline, init_model=None) -> None:
    callbacks = [_XGBoostDeadline(estimator, deadline)] if deadline is not None else None
    stopping = EARLY_STOPPING_ROUNDS if _wants_early_stopping(estimator, X_valid) else None
    estimator.set_params(callbacks=callbacks, early_stopping_rounds=stopping)
    init = {} if init_model is None else {"xgb_model": init_model.get_booster()}
    if stopping:
        estimator.fit(X, y, eval_set=[(X_valid, y_valid)], verbose=False, **init)
    else:
        estimator.fit(X, y, **init)
    estimator.set_params(callbacks=None, early_stopping_rounds=None)  # picklable, and refits run plain


def _fit_in_chunks(estimator, X, y, deadline, grow_until=None) -> bool:
    """Forests add trees, histogram boosting adds iterations, a chunk at a time, looking at the clock between,
    to what the estimator already holds (see `_take_over`). Chunks after the first are sized to half the time
    left at the pace measured so far (up to CHUNK): past `grow_until` the model is kept as grown (returns True);
    a chunk that would end past the deadline is not started. The first chunk's seconds are
    `first_round_seconds_`."""
    size = "n_estimators" if "n_estimators" in estimator.get_params() else "max_iter"
    target = estimator.get_params()[size]
    if deadline is None and grow_until is None:
        estimator.fit(X, y)
        return False
    estimator.set_params(warm_start=True)
    try:
        held = model_size(estimator)
        grown, started, step, first_round = held, time.monotonic(), FIRST_CHUNK, _FirstRound(estimator)
        while True:
            grown = min(target, grown + step)
            estimator.set_params(**{size: grown}).fit(X, y)
            first_round()
            now = time.monotonic()
            if grown == target or getattr(estimator, "n_iter_", grown) < grown:  # grown, or stopped by itself
                return False
            pace = (now - started) / (grown - held)
            if grow_until is not None and now + pace > grow_until:
                return True
            if deadline is not None and now + pace > deadline:
                raise DeadlineReached(f"{type(estimator).__name__} stopped at the deadline after {grown} of {target}")
            # half the time left at a time: the pace is re-measured before the end, so a machine that slows down
            # mid-fit (other work starting) does not push the last chunk past the deadline and lose the model
            left = min(t for t in (grow_until, deadline) if t is not None) - now
            step = max(1, min(CHUNK, int(CHUNK_TIME_SHARE * left / pace)))
    finally:
        estimator.set_params(warm_start=False)  # refits and later fits start from scratch
