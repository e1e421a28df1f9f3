"""AutoML: Optuna search over the model catalog within a time budget, then an ensemble of the best families."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import optuna
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from tmiv_assets.ml.automl.catalog import PRESETS, families_for, family_named
from tmiv_assets.ml.automl.decision import WeightedDecision, macro_f1_weights
from tmiv_assets.ml.automl.encoding import DROP_CONFIDENCE, target_encodings_pay
from tmiv_assets.ml.automl.ensembles import (
    FoldBagClassifier,
    FoldBagRegressor,
    caruana_selection,
    make_bagging,
    make_blending,
    make_stacking,
    make_voting,
)
from tmiv_assets.ml.automl.fitting import DeadlineReached, fit_within, training_share
from tmiv_assets.ml.automl.search import (
    FAILURES,
    FIRST_PASS_SHARE,
    REFITS_RESERVED,
    FamilyResult,
    SearchContext,
    rescored,
    search_families,
)
from tmiv_assets.ml.automl.tuning import COSTS, SAMPLERS, make_storage, trials_frame
from tmiv_assets.ml.data.splits import cv_folds
from tmiv_assets.ml.features.engineering import SCALER_KINDS
from tmiv_assets.ml.features.preprocessing import TARGET_TYPE_OF, make_preprocessor
from tmiv_assets.ml.metrics import LOWER_IS_BETTER, METRICS, PRIMARY_METRIC, check_metric, oof_score

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are reported through `progress` instead
SEARCH_SHARE = 0.8  # of the budget for the search when the final models are refitted on all rows
SEARCH_SHARE_NO_REFIT = 0.9  # when the final model is the search's fold models; the rest assembles it
REFIT_DEADLINE_SHARE = 1.05  # a refit still running then is stopped and the fold models are used
REFIT_RESERVED_LEADERS = 2  # tuning ends in time for this many leading families' refits on all rows
# ... when their fold models saw at most this share of the rows (2 or 3 folds): after a 20% holdout the refit
# gains less than the last tuning seconds do (60,000 flights at 30 s, one run each: ROC AUC 0.9242 with the
# reserve, 0.9251 without).
REFIT_RESERVED_MAX_SHARE = 0.7
HOLDOUT_ROWS = 100_000
# Training cells (rows x encoded features) per second of budget from which validation gets cheaper: 3 folds
# (a trial costs 2 fits on all rows' worth of data instead of 5-fold's 4), 2 folds (1), a 20% holdout (0.8).
# Each tier halves a trial's cost as the pressure doubles, so the search keeps its trials; a boosting model
# that needs many rounds then converges inside its share instead of being time-boxed on every fold.
FOLD_TIERS = ((6e4, 1), (3e4, 2), (1.5e4, 3))
THREAD_MIN_CELLS = 200_000
BAG_MIN_FOLDS = 5
# Bagged fold models (small data, 5 folds): tuning ends in time to cross-validate this many leading families'
# best configurations again on a second split of the rows, whose predictions no choice was made on; the
# ensemble weights are fitted to those (`search.rescored`).
RESCORED_LEADERS = 3
MIN_RESCORED = 2  # families, the leader among them; fewer and the ensemble is weighted on the search's split
ENCODING_CHECK_SHARE = 0.1  # of the budget: the check of the pooled columns' target encodings stops by then
TARGET_ENCODINGS = ("auto", "keep", "drop")
FLOOR_PROBE_ROUNDS = 10  # of LightGBM's default 100: a multiclass fold of its defaults is timed on these
ENSEMBLES = ("caruana", "voting", "stacking", "blending", "bagging", "best")
MIN_ROWS = 10


class AutoML(BaseEstimator):
    """Search the model catalog with Optuna, then ensemble the families' best models.

    Parameters
    ----------
    task : 'binary', 'multiclass', 'regression' or None to infer from y.
    metric : optimisation metric (default per task: roc_auc, f1_macro, rmse); see metrics.METRICS.
    time_budget_s : wall-clock budget for the whole fit, refit and ensemble included.
    seed, n_jobs : seed of folds, samplers and models; threads per model.
    preset : 'fast' (3 families, 3 folds, best single model), 'balanced', 'best_quality' (every family,
        the MLP included, deeper ensemble selection).
    sampler : 'tpe' (median pruning over CV folds), 'gp' (Bayesian), 'nsga2' (genetic), 'random', 'grid'.
    sampler_options : e.g. {'population_size': 10, 'crossover_prob': 0.9, 'mutation_prob': 0.1} for nsga2.
    ensemble : 'caruana' (greedy selection over out-of-fold predictions, the default), 'voting' (soft,
        equal weights over the top three), 'stacking', 'blending', 'bagging' (bootstrap aggregation of the
        best family) or 'best' (the best single family).
    scaler : scaling of numeric columns in the preprocessor: 'standard', 'minmax', 'robust' or 'none'.
    n_folds : cross-validation folds (None: the preset's); fit(..., times=...) makes them time-ordered.
    pinned_params : {family: {param: value}} fixed by the user over sampled and start values, e.g.
        {'mlp': {'max_epochs': 30, 'patience': 5}, 'lightgbm': {'n_estimators': 300}}.
    log_dir : TensorBoard event logs of the refitted networks go to <log_dir>/<family>; None writes none.
    secondary_objective : None, 'latency' (milliseconds to predict 1,000 rows) or 'size' (bytes of a pickled
        model): every study becomes multi-objective (NSGA-II with sampler='nsga2'), `pareto_front_` holds the
        trials no other trial beats on both, and the final model is the one configuration picked from it.
    pareto_tolerance : with a secondary objective, pick the cheapest front trial whose CV score is within
        this fraction of the best one (0: the best-scoring trial).
    include, exclude : family names to restrict the search to / leave out.
    max_trials : cap on tuning trials per family (all search workers together); with a budget that is not
        reached the fit is exactly reproducible (a time-bounded search depends on machine speed).
    progress : called with a dict per finished trial: event 'trial', family, number, trial (n of
        n_trials, an estimate), state, value, best (family), best_overall, elapsed_s, eta_s, pruned_reason.
    storage : Optuna RDB URL, journal file path or storage object; lets processes share the studies.
    target_encoding : whether pooled categorical columns are also target-encoded: 'auto' (a lone fit decides on
        a holdout, `target_encoding_for`; search workers and max_trials searches keep them), 'keep' or 'drop'.
        `target_encoding_` says what was done and why.
    """

    def __init__(self, task=None, metric=None, time_budget_s: float = 60, seed: int = 0, n_jobs: int = -1,
                 preset: str = "balanced", sampler: str = "tpe", sampler_options: dict | None = None,
                 ensemble: str = "caruana", include=None, exclude=None, max_trials: int | None = None,
                 progress: Callable[[dict], None] | None = None, storage=None, study_prefix: str = "automl",
                 scaler: str = "standard", n_folds: int | None = None, pinned_params: dict | None = None,
                 log_dir: str | None = None, secondary_objective: str | None = None, pareto_tolerance: float = 0.0,
                 target_encoding: str = "auto"):
        self.task = task
        self.metric = metric
        self.time_budget_s = time_budget_s
        self.seed = seed
        self.n_jobs = n_jobs
        self.preset = preset
        self.sampler = sampler
        self.sampler_options = sampler_options
        self.ensemble = ensemble
        self.include = include
        self.exclude = exclude
        self.max_trials = max_trials
        self.progress = progress
        self.storage = storage
        self.study_prefix = study_prefix
        self.scaler = scaler
        self.n_folds = n_folds
        self.pinned_params = pinned_params
        self.log_dir = log_dir
        self.secondary_objective = secondary_objective
        self.pareto_tolerance = pareto_tolerance
        self.target_encoding = target_encoding

    def fit(self, X: pd.DataFrame, y: pd.Series, times: pd.Series | None = None) -> AutoML:
        """Search, then assemble the final model, all within `time_budget_s`; with `times` (event time per
        row) the validation folds are time-ordered."""
        started = time.monotonic()
        prepared = self._prepare(X, y, times, started, lone=True)
        outcome = self._search(prepared, worker=0, workers=1, started=started)
        return self._assemble(prepared, [outcome], started)

    def search_worker(self, X: pd.DataFrame, y: pd.Series, times: pd.Series | None = None, worker: int = 0,
                      workers: int = 1) -> SearchOutcome:
        """One of `workers` processes searching the same Optuna studies in `storage` (Optuna's distributed
        optimisation: each sampler sees every worker's finished trials). Worker 0 enqueues the start
        configurations, any worker may take them; samplers are seeded per worker, folds and models alike.
        `max_trials` caps the workers' tuning trials together (a worker that drew cheap trials runs more);
        the search part of the budget applies to each worker; `fit_from` assembles their outcomes."""
        if workers > 1 and self.storage is None:
            raise ValueError("search workers share their studies through `storage` (an Optuna RDB URL or journal "
                             "file); set it when workers > 1")
        if not 0 <= worker < workers:
            raise ValueError(f"worker {worker} is not one of 0..{workers - 1}")
        started = time.monotonic()
        return self._search(self._prepare(X, y, times, started), worker=worker, workers=workers, started=started)

    def fit_from(self, X: pd.DataFrame, y: pd.Series, outcomes: list[SearchOutcome],
                 times: pd.Series | None = None) -> AutoML:
        """The final model from search workers' outcomes (same data, seed and settings): per family the best
        trial any worker found, the ensemble and refit within the budget's assembly share, the trials table
        read back from the shared studies."""
        if not outcomes:
            raise ValueError("no search outcomes to assemble")
        now = time.monotonic()
        prepared = self._prepare(X, y, times, now)
        share = SEARCH_SHARE if prepared.refit else SEARCH_SHARE_NO_REFIT
        self._assemble(prepared, outcomes, now - self.time_budget_s * share)  # the searches spent that share
        self.fit_seconds_ = max(o.seconds for o in outcomes) + time.monotonic() - now
        return self

    def _refits(self, times) -> bool:
        """Whether the final model is refitted on all rows (else the search's fold models are bagged)."""
        n_folds = len(self.folds_)
        # Fold models train on (K-1)/K of the rows: with fewer than 5 folds (large data) a refit on all rows
        # is worth its share of the budget.
        return (n_folds < BAG_MIN_FOLDS or times is not None or self.ensemble not in ("caruana", "best")
                or self.secondary_objective is not None)

    def _prepare(self, X: pd.DataFrame, y: pd.Series, times, started: float, lone: bool = False) -> Prepared:
        """Encodes the rows and chooses the folds; `lone` for a fit that is not one of several processes, which
        must agree on the folds without reading the clock."""
        X, y = self._validate(X, y)
        self.classes_ = np.unique(y) if self.task_ != "regression" else None
        times = None if times is None else pd.Series(times).reset_index(drop=True)
        # One preprocessor for every fold and the final model: imputation medians and category lists seen
        # across the training rows are not label information, and encoding once saves every trial's time.
        # Pooled categories' target encodings are, so they are cross-fitted (no row's encoding holds its own
        # target); time-ordered rows get none, as shuffled folds would carry later targets into earlier rows.
        target_type = None if times is not None else TARGET_TYPE_OF[self.task_]
        self.preprocessor_ = make_preprocessor(self.scaler, target_type=target_type, random_state=self.seed)
        encoded = np.asarray(self.preprocessor_.fit_transform(X, y), dtype=np.float64)
        self.threads_ = fit_threads(self.n_jobs, encoded.size)
        self.target_encoding_ = "none: time-ordered rows" if times is not None else "none: no pooled column to encode"
        if self.preprocessor_.named_steps["encode"].target_columns_:
            encoded = self._target_encoding_chosen(X, y, encoded, lone)
        self.timings_ = {"encode": time.monotonic() - started}
        n_folds = self._n_folds(encoded.shape)
        if lone and self.max_trials is None and not self.n_folds and times is None and n_folds > 1 and (
                self.classes_ is not None and len(self.classes_) > 2):
            n_folds = self._folds_for_the_floor(encoded, y, n_folds)
        self.folds_ = cv_folds(y, self.task_, n_folds, self.seed, times)
        self.cv_strategy_ = ("time-ordered " if times is not None else "") + (
            "holdout" if len(self.folds_) == 1 else f"{len(self.folds_)}-fold")
        scored = np.sort(np.concatenate([valid for _, valid in self.folds_]))
        context = SearchContext(self.task_, self.metric_, y, self.classes_, self.folds_, encoded, self.seed,
                                self.threads_, self.sampler, self.sampler_options or {}, self.storage,
                                f"{self.study_prefix}-{self.task_}", self.max_trials, self.progress,
                                self.pinned_params or {}, scored, self.secondary_objective,
                                category_codes=self.preprocessor_.named_steps["encode"].code_scales())
        return Prepared(encoded, y, context, self._refits(times), scored)

    def target_encoding_for(self, X: pd.DataFrame, y: pd.Series, times: pd.Series | None = None) -> str:
        """'keep' or 'drop': what a lone fit's holdout check decides for these training rows ('keep' where it
        cannot finish, and unchecked where a lone fit would not check). Search workers must encode alike:
        decided once, it is given to each as `target_encoding`."""
        X, y = self._validate(X, y)
        if self.target_encoding != "auto":
            return self.target_encoding
        if times is not None or self.max_trials is not None:
            return "keep"
        classes = np.unique(y) if self.task_ != "regression" else None
        return self._holdout_verdict(X, y, classes).split(":")[0]

    def _holdout_verdict(self, X: pd.DataFrame, y: pd.Series, classes: np.ndarray | None) -> str:
        """Whether the pooled columns' target encodings pay on a holdout of the training rows
        (`encoding.target_encodings_pay`, within ENCODING_CHECK_SHARE of the budget), and why. Its models take
        the cores the machine leaves idle whatever the data's size: a lone fit and `target_encoding_for` must
        decide alike (storms' 9 classes on one thread did not finish in 3 s, on two in 2.2 s)."""
        pays = target_encodings_pay(X, y, self.task_, self.metric_, classes, self.seed, idle_threads(self.n_jobs),
                                    time.monotonic() + ENCODING_CHECK_SHARE * self.time_budget_s, self.scaler)
        verdict = {None: "keep: the holdout check did not finish in its share of the budget",
                   True: "keep: the holdout did not validate surely better without them",
                   False: (f"drop: the holdout validated better without them on {DROP_CONFIDENCE:.0%}+ of its "
                           "bootstrap resamples")}[pays]
        logger.info("target encodings of pooled categories: %s", verdict)
        return verdict

    def _target_encoding_chosen(self, X: pd.DataFrame, y: pd.Series, encoded: np.ndarray, lone: bool) -> np.ndarray:
        """The rows encoded again without the pooled columns' target encodings where `target_encoding` says so
        or, left to 'auto' in a lone fit, where the holdout check does; a search capped by max_trials does not
        read the clock, and search workers get the decision from `target_encoding_for`."""
        if self.target_encoding != "auto":
            self.target_encoding_ = f"{self.target_encoding}: target_encoding={self.target_encoding!r}"
        elif not lone or self.max_trials is not None:
            self.target_encoding_ = "keep: not checked (search workers, or capped by max_trials)"
        else:
            self.target_encoding_ = self._holdout_verdict(X, y, self.classes_)
        if self.target_encoding_.startswith("drop"):
            self.preprocessor_ = make_preprocessor(self.scaler, target_type=TARGET_TYPE_OF[self.task_],
                                                   random_state=self.seed, encode_targets=False)
            encoded = np.asarray(self.preprocessor_.fit_transform(X, y), dtype=np.float64)
        return encoded

    def _search(self, prepared: Prepared, worker: int, workers: int, started: float) -> SearchOutcome:
        context = replace(prepared.context, worker=worker, workers=workers)
        families = families_for(self.task_, self.preset, self.include, self.exclude, len(prepared.y))
        deadline = started + self.time_budget_s * (SEARCH_SHARE if prepared.refit else SEARCH_SHARE_NO_REFIT)
        # so large for the budget that a holdout validates: as the folds were chosen, or by size where the user set them
        large = self._folds_for_size(prepared.encoded.shape) == 1 if self.n_folds else len(self.folds_) == 1
        # Fold models of 2 or 3 folds saw half or two thirds of the rows: refitting the leaders on all of them is
        # worth more than the last tuning seconds (8,000 loans at 30 s: CatBoost refitted 1.60 RMSE, its fold
        # models 1.69-1.72), so tuning ends when their refits would no longer fit. A single worker's search only,
        # and not one capped by max_trials (the reproducible mode does not depend on the clock).
        clocked = prepared.refit and workers == 1 and self.max_trials is None
        refit_start, reserved_for = None, REFITS_RESERVED
        if self._rescores(prepared, workers):
            refit_start = self._rescore_start(started)
            reserved_for = "cross-validating the leading families again on a second split"
        elif clocked and training_share(self.folds_) <= REFIT_RESERVED_MAX_SHARE:
            refit_start = self._refit_start(started)
        elif (clocked and len(self.folds_) == 1 and self.ensemble in ("caruana", "best")
              and not self.secondary_objective):  # after a holdout the fold model stands in when no refit fits
            deadline, refit_start = started + self.time_budget_s * SEARCH_SHARE_NO_REFIT, self._refit_or_search(started)
        # OpenMP and BLAS inside models without a thread parameter (histogram boosting, linear algebra) would
        # otherwise take every core: two search workers' histogram boosting then spun for 37 s on 442 rows.
        with threadpool_limits(context.n_jobs):
            results, studies, reasons = search_families(context, families, PRESETS[self.preset]["tuned"], started,
                                                        deadline, large, refit_start, reserved_for=reserved_for)
        seconds = time.monotonic() - started - sum(self.timings_.values())
        return SearchOutcome(worker, results, reasons, seconds, studies if self.storage is None else None)

    def _assemble(self, prepared: Prepared, outcomes: list[SearchOutcome], started: float) -> AutoML:
        encoded, y, context, refit, scored = prepared
        results, reasons = merge_outcomes(outcomes, self.metric_)
        self.timings_["search"] = max(o.seconds for o in outcomes)
        if not results:
            raise ValueError(f"time budget of {self.time_budget_s}s was too small to fit any model on {len(y):,} "
                             f"rows with {self.cv_strategy_} validation; raise time_budget_s")
        self.studies_ = outcomes[0].studies if len(outcomes) == 1 and outcomes[0].studies is not None else {
            name: optuna.load_study(study_name=f"{context.study_prefix}-{name}", storage=make_storage(self.storage))
            for name in reasons}
        frames = [trials_frame(study, name) for name, study in self.studies_.items()]
        # a frame's all-empty columns (no pruned trials: no pruned_reason) must not decide a dtype; all columns stay
        columns = list(dict.fromkeys(c for f in frames for c in f.columns))
        self.trials_ = pd.concat([f.dropna(axis=1, how="all") for f in frames if len(f)] or frames[:1],
                                 ignore_index=True).reindex(columns=columns)
        if self.secondary_objective:
            results = self._pareto_pick(results)
        with threadpool_limits(context.n_jobs):
            mark = time.monotonic()
            results, self.fresh_fold_scores_ = self._rescored(prepared, len(outcomes), results, started)
            self.timings_["rescore"] = time.monotonic() - mark
            mark = time.monotonic()
            candidates = [r for r in results if not self.fresh_fold_scores_ or r.family.name in self.fresh_fold_scores_]
            self.weights_, self.ensemble_score_ = self._ensemble_weights(candidates, y.iloc[scored])
            refits = self._plan_refit(results, y.iloc[scored], started) if refit else set()
            self.timings_["ensemble"] = time.monotonic() - mark
            mark = time.monotonic()
            final = self._final(results, encoded, y, context, refits, started)
        self.timings_["final_model"] = time.monotonic() - mark
        mark = time.monotonic()
        final = self._decision(final, results, y.iloc[scored], started)
        self.timings_["ensemble"] += time.monotonic() - mark
        self.best_pipeline_ = Pipeline([("preprocess", self.preprocessor_), ("estimator", final)])
        self.leaderboard_ = self._leaderboard(results, reasons)
        self.search_workers_ = len(outcomes)
        self.fit_seconds_ = time.monotonic() - started
        logger.info("AutoML fit %d families, %d trials in %.1fs; final %s (%s)", len(results), len(self.trials_),
                    self.fit_seconds_, self.weights_, self.final_kind_)
        return self

    def _n_folds(self, shape: tuple[int, int]) -> int:
        return self.n_folds or self._folds_for_size(shape)

    def _folds_for_size(self, shape: tuple[int, int]) -> int:
        """The preset's folds on small data; 3 folds, 2 folds, then a single holdout, as rows x features per
        second of budget grow (FOLD_TIERS), so the search gets trials in instead of spending the budget on folds."""
        if shape[0] >= HOLDOUT_ROWS:
            return 1
        pressure = shape[0] * shape[1] / self.time_budget_s
        preset_folds = PRESETS[self.preset]["folds"]
        return min([preset_folds] + [folds for floor, folds in FOLD_TIERS if pressure >= floor])

    def _folds_for_the_floor(self, encoded: np.ndarray, y: pd.Series, n_folds: int) -> int:
        """Fewer folds where LightGBM's defaults, the first trial and the floor of the result, would not finish
        their cross-validation within the first pass's share of the search (FIRST_PASS_SHARE; the floor may run
        on to FLOOR_SHARE before it stops short, a margin for a machine that turns busy). Rows x features do not
        count that multiclass boosting grows a tree per class each round: 26 classes on 16,000 rows x 30 at 30 s
        took 7 s a fold and never finished on 3 folds (macro F1 0.674; a holdout 0.708-0.742), while Ecdat Car's 6
        classes are best on 5 (0.246; 3 folds 0.209). Timed on FLOOR_PROBE_ROUNDS of its rounds, on the first
        fold's rows; a fit that fails says nothing of the cost, and the search's first trial records the failure.
        A lone fit only, not capped by max_trials: the clock decides."""
        if not any(f.name == "lightgbm" for f in families_for(self.task_, self.preset, self.include, self.exclude)):
            return n_folds
        floor = family_named("lightgbm")
        rounds = floor.build({}, self.task_, self.seed, self.threads_).get_params()["n_estimators"]
        train = cv_folds(y, self.task_, n_folds, self.seed)[0][0]
        probe = floor.build({"n_estimators": FLOOR_PROBE_ROUNDS}, self.task_, self.seed, self.threads_)
        timed = time.monotonic()
        try:
            probe.fit(encoded[train], y.iloc[train])
        except FAILURES as failed:
            logger.warning("timing LightGBM's defaults failed (%s): folds sized by rows x features", failed)
            return n_folds
        # K folds train K-1 times on all rows' worth of data; the timed fold trained on (n_folds-1)/n_folds of them
        all_rows_seconds = (time.monotonic() - timed) * rounds / FLOOR_PROBE_ROUNDS * n_folds / (n_folds - 1)
        limit = FIRST_PASS_SHARE * SEARCH_SHARE * self.time_budget_s
        fits = [k for k in (n_folds, 3, 2) if k <= n_folds and (k - 1) * all_rows_seconds <= limit]
        if not fits:
            logger.info("LightGBM's defaults would take %.1fs on all rows: validating on a holdout", all_rows_seconds)
        return max(fits, default=1)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "best_pipeline_")
        return self.best_pipeline_.predict(X)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "best_pipeline_")
        if self.task_ == "regression":
            raise AttributeError("predict_proba is only available for classification")
        return self.best_pipeline_.predict_proba(X)

    def leaderboard(self) -> pd.DataFrame:
        """One row per searched family: CV mean/std, fit seconds, trials, pruned, ensemble weight, params."""
        check_is_fitted(self, "leaderboard_")
        return self.leaderboard_.copy()

    def _validate(self, X: pd.DataFrame, y) -> tuple[pd.DataFrame, pd.Series]:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"X must be a DataFrame, got {type(X).__name__}")
        y = pd.Series(y)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if y.isna().any():
            raise ValueError(f"target has {int(y.isna().sum())} missing values; drop those rows first")
        for name, value, allowed in (("preset", self.preset, PRESETS), ("sampler", self.sampler, SAMPLERS),
                                     ("ensemble", self.ensemble, ENSEMBLES), ("scaler", self.scaler, SCALER_KINDS),
                                     ("secondary_objective", self.secondary_objective, (None, *COSTS)),
                                     ("target_encoding", self.target_encoding, TARGET_ENCODINGS)):
            if value not in allowed:
                raise ValueError(f"{name} {value!r} is not one of {sorted(allowed)}")
        if not self.time_budget_s or self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be positive, got {self.time_budget_s}")
        if X.shape[1] == 0 or X.isna().all().all():
            raise ValueError("every feature is entirely missing (or there are none); there is nothing to learn from")
        self.task_ = self.task or infer_task(y)
        if self.task_ not in METRICS:
            raise ValueError(f"task {self.task_!r} is not one of {sorted(METRICS)}")
        self.metric_ = check_metric(self.metric or PRIMARY_METRIC[self.task_], self.task_)
        if self.task_ != "regression" and y.nunique() < 2:
            raise ValueError(f"target has a single class ({y.iloc[0]!r}); classification needs two or more")
        if len(y) < MIN_ROWS:
            raise ValueError(f"{len(y)} rows are fewer than the {MIN_ROWS} needed for cross-validation")
        if self.task_ != "regression" and y.value_counts().min() < 2:
            counts = y.value_counts()
            raise ValueError(f"class {counts.idxmin()} has {counts.min()} row; every class needs two or more "
                             "rows for stratified cross-validation")
        return X.reset_index(drop=True), y.reset_index(drop=True)

    def _ensemble_weights(self, results: list[FamilyResult], y: pd.Series):
        ranked = sorted(results, key=lambda r: r.cv_mean, reverse=self.metric_ not in LOWER_IS_BETTER)
        rounds = PRESETS[self.preset]["ensemble_rounds"]
        if self.ensemble in ("best", "bagging") or len(results) == 1 or (self.ensemble == "caruana" and rounds == 0):
            return {ranked[0].family.name: 1.0}, ranked[0].cv_mean
        if self.ensemble != "caruana":
            top = ranked[:3]
            return {r.family.name: 1 / len(top) for r in top}, self._blend_score(top, [1 / len(top)] * len(top), y)
        selection = caruana_selection({r.family.name: r.oof for r in ranked},
                                      lambda p: oof_score(self.metric_, self.task_, y, p, self.classes_),
                                      greater_is_better=self.metric_ not in LOWER_IS_BETTER, rounds=rounds)
        members = [r for r in results if r.family.name in selection.weights]
        return selection.weights, self._blend_score(members, [selection.weights[r.family.name] for r in members], y)

    def _plan_refit(self, results: list[FamilyResult], y: pd.Series, started: float) -> set[str]:
        """Which selected members to refit on all rows: those whose estimated refit fits what is left of the
        budget, heaviest first. With the fold models ready (Caruana or the best family) the others keep their
        fold models at their weights; without them the heaviest is refitted whatever its cost and the members
        that do not fit are dropped, weights and score to match."""
        members = [r for r in results if r.family.name in self.weights_]
        folds_ready = self.ensemble in ("caruana", "best") and all(r.fold_models for r in members)
        affordable = self._affordable(self.weights_, results, started, heaviest_always=not folds_ready)
        if folds_ready or affordable.keys() == self.weights_.keys():
            return set(affordable)
        logger.info("dropping %s from the ensemble: their refit would overrun the budget",
                    sorted(self.weights_.keys() - affordable.keys()))
        kept = [r for r in members if r.family.name in affordable]
        self.weights_ = {name: weight / sum(affordable.values()) for name, weight in affordable.items()}
        self.ensemble_score_ = self._blend_score(kept, [self.weights_[r.family.name] for r in kept], y)
        return set(affordable)

    def _refit_cost(self, fold_seconds: float) -> float:
        """Estimated seconds of a refit on all rows from a fold's: all rows instead of a fold's share of them,
        and boosting's rounds grown to match (refit_rounds). Less than 1/share² because a fold's seconds also
        hold the validation metric every round, early stopping's overshoot and the prediction: measured refit /
        fold 1.05-1.22 after a holdout, 1.37-2.53 after 2 folds, against 1.40 and 2.83 here. Stacking's inner
        folds on top."""
        return fold_seconds * (3.0 if self.ensemble == "stacking" else 1.0) / training_share(self.folds_) ** 1.5

    def _rescores(self, prepared: Prepared, workers: int) -> bool:
        """Whether the leading families are cross-validated again on a second split before the ensemble: bagged
        fold models of a lone, clocked, single-objective search (the reproducible mode and search workers keep
        their first split's predictions)."""
        return (not prepared.refit and workers == 1 and self.max_trials is None and not self.secondary_objective
                and self.ensemble == "caruana")

    def _rescored(self, prepared: Prepared, workers: int, results: list[FamilyResult], started: float,
                  ) -> tuple[list[FamilyResult], dict[str, float]]:
        """The results with the families cross-validated again on a second split (`search.rescored`) and their
        scores there, where at least two were, the leader among them; the ensemble is then weighted among those
        alone, as a family scored on the split its configuration was picked on would be favoured. Otherwise the
        results as they were and no scores."""
        if not self._rescores(prepared, workers):
            return results, {}
        fresh_folds = cv_folds(prepared.y, self.task_, len(self.folds_), self.seed + 1)
        fresh, scores = rescored(results, prepared.context, fresh_folds,
                                 started + self.time_budget_s * SEARCH_SHARE_NO_REFIT)
        if len(scores) < MIN_RESCORED or fresh[0].family.name not in scores:  # best first: the leader
            logger.info("ensemble weighted on the search's split: %d families rescored (%s)", len(scores), scores)
            return results, {}
        return fresh, scores

    def _rescore_start(self, started: float) -> Callable[[list[FamilyResult]], float]:
        """The latest time tuning may run for the leading families' second cross-validation to end within the
        search's share of the budget (families whose first trial was time-boxed are not rescored)."""
        end = started + self.time_budget_s * SEARCH_SHARE_NO_REFIT
        return lambda leaders: end - sum(r.fold_seconds * len(self.folds_) for r in leaders[:RESCORED_LEADERS]
                                         if not r.time_boxed)

    def _refit_start(self, started: float) -> Callable[[list[FamilyResult]], float]:
        """The latest time the refits of the leading families (results best first) may start to end within
        the budget."""
        end = started + self.time_budget_s
        return lambda leaders: end - sum(self._refit_cost(r.fold_seconds) for r in leaders[:REFIT_RESERVED_LEADERS])

    def _refit_or_search(self, started: float) -> Callable[[list[FamilyResult]], float]:
        """After a holdout, tuning ends at the refit share's mark while the leader's refit would fit in what
        is left after it; when it would not, no refit runs and tuning goes on to the end of the search
        (48,000 x 400 at 30 s: LightGBM's refit needed 15 s and the refit share's 6 s stayed idle)."""
        refit_mark, end = started + self.time_budget_s * SEARCH_SHARE, started + self.time_budget_s
        return lambda leaders: (refit_mark if leaders and refit_mark + self._refit_cost(leaders[0].fold_seconds) <= end
                                else end)

    def _affordable(self, weights: dict[str, float], results: list[FamilyResult], started: float,
                    heaviest_always: bool) -> dict[str, float]:
        """Members in order of weight while their estimated refit times together fit in what is left of the
        budget; the heaviest always when `heaviest_always`."""
        cost = {r.family.name: self._refit_cost(r.fold_seconds) for r in results}
        left = started + self.time_budget_s - time.monotonic()
        kept: dict[str, float] = {}
        for name, weight in sorted(weights.items(), key=lambda item: -item[1]):
            if (kept or not heaviest_always) and sum(cost[k] for k in kept) + cost[name] > left:
                continue
            kept[name] = weight
        return kept

    def _blend_score(self, members: list[FamilyResult], weights: list[float], y: pd.Series) -> float:
        return oof_score(self.metric_, self.task_, y, _blend(members, weights), self.classes_)

    def _decision(self, final, results: list[FamilyResult], y: pd.Series, started: float):
        """The final classifier, wrapped in class weights where the metric is macro F1 and weights fitted on the
        ensemble's out-of-fold probabilities pay (`decision_` says which and why, `decision_weights_` the
        weights). Only the search's own ensembles, whose probabilities those are. A search capped by max_trials
        (the reproducible mode) fits them whatever the clock says."""
        self.decision_weights_ = None
        if self.classes_ is None:
            self.decision_ = None
            return final
        if self.metric_ != "f1_macro":
            self.decision_ = f"most probable class: the metric is {self.metric_}"
            return final
        if self.ensemble not in ("caruana", "best", "voting"):
            self.decision_ = f"most probable class: {self.ensemble}'s probabilities are not the search's"
            return final
        members = [r for r in results if r.family.name in self.weights_]
        weights, self.decision_ = macro_f1_weights(
            np.searchsorted(self.classes_, y.to_numpy()), _blend(members, [self.weights_[r.family.name]
                                                                          for r in members]),
            self.seed, None if self.max_trials else started + self.time_budget_s)
        if weights is None:
            return final
        self.decision_weights_ = dict(zip(self.classes_.tolist(), weights.tolist(), strict=True))
        return WeightedDecision(final, weights)

    def _pareto_pick(self, results: list[FamilyResult]) -> list[FamilyResult]:
        """The trials no other beats on both score and cost, and the one configuration the tolerance picks;
        returned as the only result, with its parameters, so it alone is refitted as the final model."""
        cost, trials = COSTS[self.secondary_objective], self.trials_
        done = trials[(trials["state"] == "COMPLETE") & trials[cost].notna()].reset_index(drop=True)
        sign = 1.0 if self.metric_ in LOWER_IS_BETTER else -1.0  # minimise sign * score
        loss, price = sign * done["value"].to_numpy(float), done[cost].to_numpy(float)
        dominated = [bool(np.any((loss <= loss[i]) & (price <= price[i]) & ((loss < loss[i]) | (price < price[i]))))
                     for i in range(len(done))]
        front = done[~np.asarray(dominated, dtype=bool)].sort_values(cost, kind="stable")
        best = front["value"].min() if sign > 0 else front["value"].max()
        allowed = (front["value"] - best).abs() <= self.pareto_tolerance * abs(best)
        pick = front[allowed].iloc[0]
        self.pareto_front_ = front.assign(picked=front["number"].eq(pick["number"]) & front["family"].eq(
            pick["family"]))[["family", "number", "value", cost, "picked", "params"]].reset_index(drop=True)
        family = next(r for r in results if r.family.name == pick["family"])
        params = self.studies_[pick["family"]].trials[int(pick["number"])].user_attrs["config"]
        same_trial = params == family.params  # only then are the family's fold models the pick's
        return [replace(family, params=params, refit_params=params, cv_mean=float(pick["value"]),
                        fold_models=family.fold_models if same_trial else [])]

    def _final(self, results: list[FamilyResult], X: np.ndarray, y: pd.Series, context: SearchContext,
               refits: set[str], started: float):
        """Each member refitted on all rows where planned and while the budget lasts, heaviest first, otherwise
        its fold models, which are ready as soon as the search ends. Voting, stacking, blending and bagging
        are fitted as one library estimator."""
        members = sorted((r for r in results if r.family.name in self.weights_),
                         key=lambda r: -self.weights_[r.family.name])
        if refits and (self.ensemble == "bagging" or (self.ensemble in ("voting", "stacking", "blending")
                                                      and len(members) > 1)):
            self.final_kind_ = "refitted on all training rows"
            return self._fit_library_ensemble(members, X, y, context)
        target = y.to_numpy() if self.classes_ is None else np.searchsorted(self.classes_, y.to_numpy())
        deadline = started + self.time_budget_s * REFIT_DEADLINE_SHARE
        bag, refitted, stopped = [], [], False
        for r in members:
            models = r.fold_models
            if r.family.name in refits and not (stopped and models):
                try:
                    models = [fit_within(self._member(r, context), X, target, deadline=deadline)]
                    refitted.append(r.family.name)
                except DeadlineReached as reached:
                    if not models:
                        raise ValueError(f"the refit of {r.family.name} overran the time budget ({reached}); "
                                         "raise time_budget_s") from reached
                    logger.warning("refit stopped at the budget (%s); the fold models stand in", reached)
                    stopped = True
            bag.append((r.family.name, self.weights_[r.family.name], models))
        self.final_kind_ = _final_kind(refitted, [r.family.name for r in members if r.family.name not in refitted])
        return self._bag(bag)

    def _bag(self, members: list[tuple[str, float, list]]):
        if self.task_ == "regression":
            return FoldBagRegressor(members)
        return FoldBagClassifier(members, classes=self.classes_)

    def _fit_library_ensemble(self, members: list[FamilyResult], X: np.ndarray, y: pd.Series,
                              context: SearchContext):
        estimators = [(r.family.name, self._member(r, context)) for r in members]
        if self.ensemble == "bagging":
            return make_bagging(estimators[0][1], self.task_, seed=self.seed).fit(X, y)
        if self.ensemble == "stacking":
            return make_stacking(estimators, self.task_, cv=max(len(self.folds_), 2), seed=self.seed).fit(X, y)
        if self.ensemble == "blending":
            return make_blending(estimators, self.task_, seed=self.seed).fit(X, y)
        weights = [self.weights_[r.family.name] for r in members]
        return make_voting(estimators, self.task_, weights=weights).fit(X, y)

    def _member(self, result: FamilyResult, context: SearchContext):
        estimator = result.family.build(context.params_for(result.family, result.refit_params), self.task_,
                                        self.seed, self.threads_)
        if self.log_dir and "log_dir" in estimator.get_params():
            estimator.set_params(log_dir=str(Path(self.log_dir) / result.family.name))
        return estimator

    def _leaderboard(self, results: list[FamilyResult], reasons: dict[str, str]) -> pd.DataFrame:
        """One row per family in the search: its best CV score, its trials (trained, skipped before
        training, pruned), seconds spent, ensemble weight and why it got no more time."""
        best = {r.family.name: r for r in results}
        rows = []
        for name in self.studies_:
            trials, result = self.trials_[self.trials_["family"] == name], best.get(name)
            trained = trials["folds_trained"].fillna(0) > 0
            rows.append({"model": name, f"cv_{self.metric_}_mean": result.cv_mean if result else np.nan,
                         f"cv_{self.metric_}_std": result.cv_std if result else np.nan,
                         "fit_seconds": round(result.fit_seconds, 3) if result else np.nan,
                         "trials": int(trained.sum()), "skipped": int(trials["skipped"].sum()),
                         "pruned": int(((trials["state"] == "PRUNED") & trained).sum()),
                         "search_seconds": round(float(trials["seconds"].fillna(0).sum()), 2),
                         "ensemble_weight": round(self.weights_.get(name, 0.0), 3),
                         "why_stopped": reasons[name], "params": repr(result.params) if result else ""})
        board = pd.DataFrame(rows).sort_values(f"cv_{self.metric_}_mean", ascending=self.metric_ in LOWER_IS_BETTER,
                                               kind="stable", na_position="last")
        return board.reset_index(drop=True)


class Prepared(NamedTuple):
    """The training rows encoded once, their folds and search context, and whether the final model is refitted."""

    encoded: np.ndarray
    y: pd.Series
    context: SearchContext
    refit: bool
    scored: np.ndarray


@dataclass(frozen=True)
class SearchOutcome:
    """One search worker's part: each family's best trial it ran (out-of-fold predictions and fold models
    included), why each family got no more time, and its seconds; the in-memory studies when there is no
    shared storage to read them from."""

    worker: int
    results: list[FamilyResult]
    reasons: dict[str, str]
    seconds: float
    studies: dict[str, optuna.Study] | None = None


def _blend(members: list[FamilyResult], weights: list[float]) -> np.ndarray:
    """The members' out-of-fold predictions averaged with `weights`."""
    return sum(w * r.oof for w, r in zip(weights, members, strict=True)) / sum(weights)


def _final_kind(refitted: list[str], fold_models: list[str]) -> str:
    if not fold_models:
        return "refitted on all training rows"
    if not refitted:
        return "fold models of the search"
    return f"{', '.join(refitted)} refitted on all training rows; {', '.join(fold_models)}: fold models of the search"


def merge_outcomes(outcomes: list[SearchOutcome], metric: str) -> tuple[list[FamilyResult], dict[str, str]]:
    """Per family the best result any worker found (ties to the lower worker), best family first; the workers'
    reasons for stopping, each said once."""
    greater = metric not in LOWER_IS_BETTER
    best: dict[str, FamilyResult] = {}
    reasons: dict[str, list[str]] = {}
    for outcome in sorted(outcomes, key=lambda o: o.worker):
        for result in outcome.results:
            held = best.get(result.family.name)
            if held is None or (result.cv_mean > held.cv_mean if greater else result.cv_mean < held.cv_mean):
                best[result.family.name] = result
        for name, why in outcome.reasons.items():
            if why not in reasons.setdefault(name, []):
                reasons[name].append(why)
    ranked = sorted(best.values(), key=lambda r: r.cv_mean, reverse=greater)
    return ranked, {name: " | ".join(whys) for name, whys in reasons.items()}


def fit_threads(n_jobs: int | None, cells: int) -> int:
    """Threads per model fit: `idle_threads`, and one for small data, where threads gain little."""
    return 1 if cells < THREAD_MIN_CELLS else idle_threads(n_jobs)


def idle_threads(n_jobs: int | None) -> int:
    """What the caller allows, no more than the cores other processes leave idle (threads fighting for a busy
    core make boosting several times slower)."""
    wanted = (os.cpu_count() or 1) if n_jobs in (None, -1) else max(1, int(n_jobs))
    return int(max(1, min(wanted, round((os.cpu_count() or 1) - busy_cores()))))


def busy_cores(interval: float = 0.2) -> float:
    """Cores kept busy by other processes over `interval` seconds (this one sleeps meanwhile), from
    /proc/stat; 0 where it is unavailable."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        total_before, idle_before = sample()
        time.sleep(interval)
        total_after, idle_after = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    total = total_after - total_before
    return 0.0 if total <= 0 else (os.cpu_count() or 1) * (1 - (idle_after - idle_before) / total)


def infer_task(y: pd.Series) -> str:
    """regression for non-integer numbers or many distinct integers; binary / multiclass otherwise."""
    distinct = y.nunique(dropna=True)
    if pd.api.types.is_float_dtype(y) and not np.allclose(y.dropna(), np.round(y.dropna())):
        return "regression"
    if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y) and distinct > 20:
        return "regression"
    return "binary" if distinct == 2 else "multiclass"
