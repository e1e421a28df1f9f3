"""The AutoML search loop: one Optuna study per model family, cross-validated on pre-encoded folds."""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
import optuna
import pandas as pd

from tmiv_assets.ml.automl.catalog import ModelFamily, needs_category_codes
from tmiv_assets.ml.automl.fitting import (
    DeadlineReached,
    best_rounds,
    can_grow_on,
    fit_within,
    grows_from,
    growth_start_seconds,
    is_forest,
    refit_rounds,
    rounds_parameter,
    time_boxed,
    training_share,
)
from tmiv_assets.ml.automl.tuning import COSTS, create_study, make_sampler, score_of
from tmiv_assets.ml.metrics import LOWER_IS_BETTER, direction_of, is_better, oof_score

logger = logging.getLogger(__name__)
FAILURES = (ValueError, ArithmeticError, np.linalg.LinAlgError)  # recorded as FAIL trials; the search goes on
FIRST_PASS_SHARE = 0.4
FLOOR_SHARE = 0.6  # LightGBM's defaults, the result's floor, may take this share of the search before they stop short
FIRST_PASS_STARTS = 0.6  # of the search time: on data validated by a holdout no family starts later
FIRST_PASS_FAIR_SHARES = 2.0  # a family's first trial may take up to twice its even share of the time left
# A forest's first trial ranks it after at most this many times the first family's trial (LightGBM's defaults)
# or this share of the search, whichever is longer: a forest's score settles after a few dozen trees, and the
# trees a slow one lacks grow later if it is tuned. Without, two forests that ranked last took 11 of 27 s on
# 25,000 rows of 7 columns and the leaders' last start configurations never ran. Not in a search capped by
# max_trials (the reproducible mode), where no first trial is time-boxed.
FOREST_RANKING_COST = 3.0
FOREST_RANKING_SHARE = 0.05
CHEAP_TRIAL_SHARE = 0.005  # a family whose trial costs under this share of the time left is tuned anyway
CHEAP_TUNING_SHARE = 0.03
CHEAP_TUNING_TRIALS = 12
BOXED_FOLD_MINIMUM = 0.5  # a time-boxed fold starts when half of its predecessors' mean time is left
BOXED_TUNING_GROWTH = 2.0  # a time-boxed family is tuned when its share is at least this many first trials
BOXED_FOLD_GROWTH = 0.85  # of a fold's even share of the family's time left: the rest is for its last round
# (a CatBoost round on 10,000 rows takes tens of milliseconds) and the fold's prediction
# A tuned family stops when this many trials per sampled parameter have not beaten its best (a linear model's
# one regularisation strength ran 318 trials on 1,100 rows at 30 s, 12% of the search, for no ensemble weight);
# its time goes to the families still improving.
PLATEAU_TRIALS_PER_PARAMETER = 20
REFITS_RESERVED = "refitting the leading families on all rows"  # what the time after tuning is kept for, by default
SEED_STRIDE = 7919  # sampler seed offset per search worker, so workers sharing a study propose different trials


@dataclass(frozen=True)
class SearchContext:
    """Everything a trial needs; the folds are encoded once and shared by every trial."""

    task: str
    metric: str
    y: pd.Series
    classes: np.ndarray | None
    folds: list
    X: np.ndarray
    """The training rows, encoded once; folds are slices of it."""
    seed: int
    n_jobs: int
    sampler: str
    sampler_options: dict
    storage: object
    study_prefix: str
    max_trials: int | None
    progress: Callable[[dict], None] | None
    pinned: dict
    """Family name -> parameters fixed by the user; they override sampled and start values."""
    scored: np.ndarray
    """Positions covered by a validation fold (time-series CV never validates its first block)."""
    secondary: str | None = None
    """'latency' or 'size': trials are scored on both and the studies are multi-objective."""
    worker: int = 0
    """Which of several processes sharing the studies this is: seeds its sampler; worker 0 enqueues the starts."""
    workers: int = 1
    """How many processes share the studies: `max_trials` then caps the tuning trials of all of them together."""
    category_codes: tuple = ()
    """(column, scale) of the pooled columns' codes in X (TabularEncoder.code_scales), for LightGBM's category
    splits."""

    def params_for(self, family: ModelFamily, params: dict) -> dict:
        params = {**params, **self.pinned.get(family.name, {})}
        return params | {"category_codes": self.category_codes} if "native_categories" in params else params


@dataclass(frozen=True)
class FamilyResult:
    """The best trial of one family."""

    family: ModelFamily
    params: dict
    cv_mean: float
    cv_std: float
    fit_seconds: float
    """Seconds of the best trial's whole cross-validation."""
    fold_seconds: float
    """Mean seconds of one fold's fit, the estimate of a refit's cost."""
    oof: np.ndarray
    """Out-of-fold probabilities (one column per class) or values of the `scored` rows."""
    fold_models: list
    """The best trial's model per fold (trained on class codes), for a final model that needs no refit."""
    refit_params: dict
    """The best parameters with the rounds early stopping kept, for a refit on all rows."""

    @property
    def time_boxed(self) -> bool:
        """Whether a fold model stopped growing at its time share (see `fitting.time_boxed`)."""
        return any(hasattr(model, "time_boxed_") for model in self.fold_models)


class _Tracker:
    """Global trial count, best score and ETA across families, sent to the progress callback."""

    def __init__(self, context: SearchContext, started: float, deadline: float):
        self.context, self.started, self.deadline = context, started, deadline
        self.count, self.best, self.seconds = 0, None, []

    def callback(self, search: _FamilySearch):
        def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            self.count += 1
            if trial.duration:
                self.seconds.append(trial.duration.total_seconds())
            score = score_of(trial)
            if score is not None and is_better(self.context.metric, score, self.best):
                self.best = score
            now = time.monotonic()
            left = max(0.0, self.deadline - now)
            event = {"event": "trial", "family": search.family.name, "number": trial.number, "trial": self.count,
                     "n_trials": self.count + int(left / max(np.mean(self.seconds or [1.0]), 1e-3)),
                     "state": trial.state.name, "value": score,
                     "best": search.best["value"] if search.best else None, "best_overall": self.best,
                     "elapsed_s": now - self.started, "eta_s": left,
                     "pruned_reason": trial.user_attrs.get("pruned_reason")}
            logger.debug("trial %s", event)
            if self.context.progress is not None:
                self.context.progress(event)
        return report


class _FamilySearch:
    def __init__(self, context: SearchContext, family: ModelFamily, tracker: _Tracker):
        self.context, self.family, self.tracker = context, family, tracker
        self.grid = family.grid_for(context.task) if context.sampler == "grid" else None
        self.tunable = family.tunable and (context.sampler != "grid" or bool(self.grid))
        self.forest = is_forest(family.build({}, context.task, context.seed, 1))
        self.starts = [start for start in family.starts if context.category_codes or not needs_category_codes(start)]
        sampler = make_sampler(context.sampler if self.tunable else "random",
                               context.seed + SEED_STRIDE * context.worker, grid=self.grid, **context.sampler_options)
        directions = [direction_of(context.metric)] + (["minimize"] if context.secondary else [])
        self.study = create_study(f"{context.study_prefix}-{family.name}", directions, sampler, context.storage)
        if not self.grid and context.worker == 0 and not any("start" in t.user_attrs for t in self.study.trials):
            for index in range(len(self.starts)):
                self.study.enqueue_trial({}, user_attrs={"start": index})
        self.best: dict | None = None
        self.cache: dict[str, float] = {}
        self.limit = 0.0
        self.fold_seconds = 0.0  # of the last finished trial: whether the next one fits before the limit
        self.why = "not reached: the search budget was spent before its first trial"
        self.stale = 0  # finished trials since the best one
        self.plateau: int | None = None  # trials without a better one after which the family stopped

    def run(self, n_trials: int | None, limit: float, study_total: int | None = None) -> None:
        """Trials until `n_trials`, the study (every worker's trials) holds `study_total`, or the monotonic time
        `limit`; folds are pruned when they would overrun it."""
        if not self.tunable:
            started = sum("start" in t.user_attrs and t.state.is_finished() for t in self.study.trials)
            n_trials = min(n_trials or len(self.starts), len(self.starts) - started)
        if n_trials == 0 or time.monotonic() >= limit:
            return
        self.limit = limit
        if study_total is not None and len(self.study.trials) >= study_total:
            return
        # Workers stop together at the shared total, so one that drew cheap trials keeps going for the others.
        shared = [] if study_total is None else [optuna.study.MaxTrialsCallback(study_total, states=None)]
        # A search capped by max_trials (the reproducible mode) runs the trials asked for; a multi-objective one
        # gains from cheaper trials that score no better.
        c = self.context
        plateau = [self._stop_on_plateau] if c.max_trials is None and n_trials is None and not c.secondary else []
        self.study.optimize(self._objective, n_trials=n_trials, timeout=max(0.0, limit - time.monotonic()),
                            callbacks=[self.tracker.callback(self), *shared, *plateau],
                            catch=(*FAILURES, DeadlineReached))

    def _stop_on_plateau(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.stale = 0 if self.best is not None and self.best["number"] == trial.number else self.stale + 1
        patience = PLATEAU_TRIALS_PER_PARAMETER * max(1, len(trial.params))
        if self.stale >= patience:
            self.plateau = patience
            study.stop()

    def result(self) -> FamilyResult | None:
        if self.best is None:
            return None
        b = self.best
        refit = dict(b["params"])
        if (rounds := refit_rounds(b["rounds"], training_share(self.context.folds))) is not None:
            refit[rounds_parameter(refit)] = rounds
        return FamilyResult(self.family, b["params"], b["value"], b["std"], b["seconds"], b["fold_seconds"], b["oof"],
                            b["models"], refit)

    def _params(self, trial: optuna.Trial) -> dict:
        if "start" in trial.user_attrs:
            return dict(self.starts[trial.user_attrs["start"]])
        if self.grid:
            return {**self.starts[0], **{k: trial.suggest_categorical(k, v) for k, v in self.grid.items()}}
        params = self.family.space(trial, self.context.task)
        if self.context.category_codes and self.family.category_space is not None:
            params |= self.family.category_space(trial)
        return params

    def _objective(self, trial: optuna.Trial) -> float | tuple[float, float]:
        params = self._params(trial)
        trial.set_user_attr("config", params)  # start configurations are not Optuna parameters
        trial.set_user_attr("worker", self.context.worker)
        key = repr(sorted(params.items()))
        if key in self.cache:  # samplers on small spaces repeat themselves; refitting would waste the budget
            trial.set_user_attr("duplicate", True)
            return self.cache[key]
        value = self._evaluate(trial, params, trial.number)
        self.cache[key] = value
        return value

    def can_grow(self) -> bool:
        """Whether the best trial stopped growing at its time share and its fold models can go on growing."""
        return (self.best is not None and self.best["time_boxed"] and not self.context.secondary
                and all(can_grow_on(model) for model in self.best["models"]))

    def grow(self, limit: float) -> None:
        """The best trial's fold models go on growing (boosting's rounds, a forest's trees) until the monotonic
        time `limit`, so what they grew is not trained again; recorded in the study as a trial of its own
        (`grown_from`)."""
        self.limit = limit
        b = self.best
        record = optuna.trial.FixedTrial({})  # collects the user attributes a trial of the study would
        record.set_user_attr("config", b["params"])
        record.set_user_attr("grown_from", b["number"])
        number, start, value = len(self.study.trials), datetime.now(), None
        try:
            value = self._evaluate(record, b["params"], number, grown_from=b)
        except optuna.TrialPruned:  # its pruned_reason says why
            pass
        state = optuna.trial.TrialState.PRUNED if value is None else optuna.trial.TrialState.COMPLETE
        self.study.add_trial(optuna.trial.FrozenTrial(
            number, state, value, start, datetime.now(), {}, {}, record.user_attrs, {}, {}, number))
        self.tracker.callback(self)(self.study, self.study.trials[-1])

    def _evaluate(self, trial, params: dict, number: int, grown_from: dict | None = None) -> float | tuple:
        """The trial's out-of-fold score; the family's best when it beats it. `grown_from`: a best trial whose
        fold models the folds' boosting goes on from."""
        full, fold_seconds, models, rounds = self._cross_validate(trial, params, grown_from)
        c = self.context
        oof = full[c.scored]
        value = oof_score(c.metric, c.task, _codes(c)[c.scored], oof, _labels(c))
        if c.secondary:  # multi-objective: the score and the cost the user trades it against
            value = (value, trial.user_attrs[COSTS[c.secondary]])
        score = value[0] if c.secondary else value
        if self.best is None or is_better(c.metric, score, self.best["value"]):
            per_fold = [oof_score(c.metric, c.task, _codes(c)[v], full[v], _labels(c)) for _, v in c.folds]
            earlier = grown_from or {"seconds": 0.0, "fold_seconds": 0.0}  # a refit trains the rounds of both
            self.best = {"value": score, "number": number, "params": params, "oof": oof,
                         "std": float(np.std(per_fold)),
                         "seconds": float(sum(fold_seconds)) + earlier["seconds"],
                         "fold_seconds": float(np.mean(fold_seconds)) + earlier["fold_seconds"],
                         "models": models, "rounds": rounds, "time_boxed": "time_boxed" in trial.user_attrs,
                         "row_predict_seconds": 1e-6 * trial.user_attrs[COSTS["latency"]]}
        return value

    def _cross_validate(self, trial: optuna.Trial, params: dict, grown_from: dict | None = None,
                        ) -> tuple[np.ndarray, list[float], list, list]:
        """Out-of-fold predictions, fold models and their early-stopping rounds; pruned on the running fold
        score (median rule), skipped when a fold is expected to overrun the limit, stopped when one does;
        a family's first trial and its start configurations, time-boxed, stop growing at each fold's share of
        its time and are kept, as are the folds of a trial `grown_from` another's fold models."""
        c = self.context
        y = _codes(c)
        oof = np.full((len(y), len(c.classes) if c.classes is not None else 1), np.nan)
        seconds, seen, models, rounds, predict_seconds = [], [], [], [], 0.0
        # A family's first trial is time-boxed fold by fold when its model only needs more rounds than the
        # time allows, so the family is not dropped; so are its other start configurations, the portfolio's
        # bigger models that large data needs. Sampled trials compete with converged models, and one that
        # cannot finish is stopped (truncated ones would mislead the sampler). A search capped by max_trials
        # (the reproducible mode) never depends on the clock this way.
        may_time_box = (self.best is None or "start" in trial.user_attrs or grown_from is not None
                        ) and c.max_trials is None
        # Until the family has a model, its rounds are a ceiling too: LightGBM's 100 default rounds on 38,400 x
        # 400 took 14 s on the one core a busy machine left, more than their share of 30 s, and the family
        # that is the result's floor ended with nothing; the rounds it had grown beat every other family.
        any_size = may_time_box and (self.best is None or grown_from is not None)
        for step, (train, valid) in enumerate(c.folds):
            trial.set_user_attr("folds_trained", step)
            previous = grown_from["models"][step] if grown_from else None
            # a fold whose model grew whole in the trial it goes on from keeps that model
            kept = previous is not None and not hasattr(previous, "time_boxed_")
            model = previous if kept else self.family.build(c.params_for(self.family, params), c.task, c.seed,
                                                             c.n_jobs)
            if previous is not None and not kept:
                grows_from(model, previous)
            X_valid = c.X[valid]
            now = time.monotonic()
            boxed = may_time_box and time_boxed(model, X_valid, any_size)
            if previous is not None:
                expected = 0.0 if kept else growth_start_seconds(previous, grown_from["row_predict_seconds"],
                                                                 len(train))
            else:
                expected = (np.mean(seconds) if seconds else self.fold_seconds) * (
                    BOXED_FOLD_MINIMUM if boxed else 1.0)
            if self.tracker.best is not None and expected and now + expected > self.limit:
                reason = f"fold {step + 1}/{len(c.folds)}: the fold would overrun the time budget"
                trial.set_user_attr("pruned_reason", reason)
                if step == 0 and grown_from is None:  # the family's next trial would not fit either: end its search
                    self.study.stop()
                raise optuna.TrialPruned(reason)
            started = now
            grow_until = now + BOXED_FOLD_GROWTH * (self.limit - now) / (len(c.folds) - step) if boxed else None
            try:
                if not kept:
                    fit_within(model, c.X[train], y[train], X_valid, y[valid], deadline=self.limit,
                               grow_until=grow_until, any_size=any_size, init_model=previous)
            except DeadlineReached as stopped:
                trial.set_user_attr("pruned_reason", f"fold {step + 1}/{len(c.folds)}: {stopped}")
                raise optuna.TrialPruned(str(stopped)) from stopped
            if hasattr(model, "time_boxed_"):
                trial.set_user_attr("time_boxed", f"fold {step + 1}/{len(c.folds)}: {model.time_boxed_}")
            predicting = time.perf_counter()
            oof[valid] = _outputs(model, X_valid, c)
            predict_seconds += time.perf_counter() - predicting
            models.append(model)
            rounds.append(best_rounds(model))
            seconds.append(time.monotonic() - started)
            self.fold_seconds = float(np.mean(seconds))
            if hasattr(model, "stopped_reason_"):
                trial.set_user_attr("early_stopping", model.stopped_reason_)
            seen.extend(valid)
            # Optuna prunes single-objective studies only. A family's first trial here is its only score in this
            # search's ranking: other workers' trials in a shared study (or an earlier run's) must not prune it.
            if step == len(c.folds) - 1 or c.secondary or self.best is None:
                continue
            running = oof_score(c.metric, c.task, y[seen], oof[seen], _labels(c))
            trial.report(running, step)
            if trial.should_prune():
                reason = f"fold {step + 1}/{len(c.folds)}: running {c.metric} {running:.4f} worse than the median"
                trial.set_user_attr("pruned_reason", reason)
                raise optuna.TrialPruned(reason)
        trial.set_user_attr("folds_trained", len(c.folds))
        trial.set_user_attr(COSTS["latency"], 1e6 * predict_seconds / max(len(seen), 1))
        if c.secondary == "size":
            trial.set_user_attr(COSTS["size"], len(pickle.dumps(models[0])))
        return (oof if c.classes is not None else oof[:, 0]), seconds, models, rounds


def rescored(results: list[FamilyResult], context: SearchContext, folds: list, deadline: float,
             ) -> tuple[list[FamilyResult], dict[str, float]]:
    """Each family's best configuration cross-validated again on `folds`, a second split of the same rows, best
    first while its expected time fits before the monotonic `deadline` (the results come back in that order); and
    each rescored family's score there.
    The search picked that configuration, and boosting its rounds, for their score on the first split, so its
    predictions there flatter it (the best of its trials), and ensemble weights fitted to them favour the luckiest.
    Nothing was chosen on the second split: a rescored family's out-of-fold predictions are those, its fold
    models both splits'. Families whose first trial was time-boxed keep theirs (their models would not grow
    alike in the time)."""
    y, out, scores = _codes(context), [], {}
    sign = -1 if context.metric in LOWER_IS_BETTER else 1
    for result in sorted(results, key=lambda r: -sign * r.cv_mean):
        if (result.time_boxed or not result.fold_models
                or time.monotonic() + result.fold_seconds * len(folds) > deadline):
            out.append(result)
            continue
        full = np.full((len(y), len(context.classes) if context.classes is not None else 1), np.nan)
        models = []
        try:
            for train, valid in folds:
                model = result.family.build(context.params_for(result.family, result.params), context.task,
                                            context.seed, context.n_jobs)
                fit_within(model, context.X[train], y[train], context.X[valid], y[valid], deadline=deadline)
                full[valid] = _outputs(model, context.X[valid], context)
                models.append(model)
        except DeadlineReached:
            out.append(result)
            continue
        oof = (full if context.classes is not None else full[:, 0])[context.scored]
        scores[result.family.name] = oof_score(context.metric, context.task, y[context.scored], oof, _labels(context))
        out.append(replace(result, oof=oof, fold_models=[*result.fold_models, *models]))
    return out, scores


def _outputs(model, X: np.ndarray, context: SearchContext) -> np.ndarray:
    """A fold model's class probabilities, or its predictions as one column."""
    return model.predict_proba(X) if context.classes is not None else model.predict(X)[:, None]


def _codes(context: SearchContext) -> np.ndarray:
    """Class labels as 0..K-1 (XGBoost accepts nothing else); regression targets as floats."""
    if context.classes is None:
        return context.y.to_numpy(dtype=np.float64)
    return np.searchsorted(context.classes, context.y.to_numpy())


def _labels(context: SearchContext):
    return None if context.classes is None else np.arange(len(context.classes))


def search_families(context: SearchContext, families: list[ModelFamily], tuned: int, started: float,
                    deadline: float, large: bool = False,
                    refit_start: Callable[[list[FamilyResult]], float] | None = None, *,
                    reserved_for: str = REFITS_RESERVED,
                    ) -> tuple[list[FamilyResult], dict[str, optuna.Study], dict[str, str]]:
    """First pass: each family's first start configuration, LightGBM's defaults first. Second pass: the
    `tuned` best families share the remaining time in proportion to their budget weights, their other
    start configurations before sampled ones. `refit_start` maps the results, best first, to the latest
    time their refits on all rows (or what `reserved_for` says the time is kept for) may start: tuning ends by
    then. Returns the results, the studies and, per family, why it got no more time."""
    tracker = _Tracker(context, started, deadline)
    searches = [_FamilySearch(context, family, tracker) for family in families]
    # On data so large for the budget that a holdout validates it, a family's first trial grows to its time
    # share and bigger models of the best family beat a survey of every family (200,000 flights at 30 s:
    # XGBoost, CatBoost, histogram boosting and forests took 17 s, none tuned): past this point no family
    # starts, and the rest of the time is tuning. With folds, the later families still earn weight (diamonds'
    # extra trees).
    starts_until = time.monotonic() + (FIRST_PASS_STARTS if large else 1.0) * max(0.0, deadline - time.monotonic())
    for position, search in enumerate(searches):
        if time.monotonic() >= (deadline if position == 0 else starts_until):
            logger.info("first pass's share of the search spent before %s", search.family.name)
            search.why = "not reached: the first pass's share of the search time was spent before its first trial"
            continue
        # One family's first trial may take a share of what is left, so a family too slow for this data
        # (or on a busy machine) is stopped and the families after it still get their turn. The first family
        # may take FLOOR_SHARE: unless excluded it is LightGBM's defaults, the floor the result must not fall
        # below (ten classes' trees on 1,500 rows need more than a fair share of 30 s on two cores).
        share = FLOOR_SHARE if position == 0 else min(FIRST_PASS_SHARE,
                                                           FIRST_PASS_FAIR_SHARES / (len(searches) - position))
        limit = time.monotonic() + (deadline - time.monotonic()) * share
        if position and searches[0].best is not None and search.forest and context.max_trials is None:
            limit = min(limit, time.monotonic() + max(FOREST_RANKING_COST * searches[0].best["seconds"],
                                                      FOREST_RANKING_SHARE * (deadline - started)))
        search.run(1, min(deadline, limit))
        search.why = "first configuration only: ranked below the families chosen for tuning"
    sign = -1 if context.metric in LOWER_IS_BETTER else 1

    def best_first() -> list[_FamilySearch]:
        return sorted((s for s in searches if s.best), key=lambda s: -sign * s.best["value"])

    ranked = best_first()
    for search in searches:
        if search.best is None and any(t.state.is_finished() for t in search.study.trials):
            search.why = "no trial finished: every one failed or was stopped at the time limit"

    def tuning_deadline() -> float:  # the leaders, and so their refits' cost, change as the tuning goes
        if refit_start is None:
            return deadline
        return min(deadline, refit_start([s.result() for s in best_first()]))

    candidates = [s for s in ranked if s.tunable or len(s.starts) > 1]
    chosen = candidates[:tuned]
    # Cost-frugal: a family outside the top whose whole trial is nearly free (linear models, naive Bayes on
    # small data) gets a few trials anyway; its tuned version often earns an ensemble weight. The choice
    # depends on measured seconds, so a search capped by max_trials (the reproducible mode) skips it.
    cheap = [] if context.max_trials else [s for s in ranked if s.tunable and s not in chosen]
    for search in cheap:
        remaining = tuning_deadline() - time.monotonic()
        if search.best["seconds"] < CHEAP_TRIAL_SHARE * remaining:
            search.run(CHEAP_TUNING_TRIALS, time.monotonic() + CHEAP_TUNING_SHARE * remaining)
            search.why = (f"cheap: {len(search.study.trials)} trials at {search.best['seconds']:.2f}s each, "
                          "not tuned further")
    # A family whose first trial was time-boxed needs more than that time to converge: it is tuned only when
    # its share at least doubles it (growth as in FLAML's cost-frugal search); otherwise its fold models go
    # on growing (`grow`: boosting's rounds, a forest's trees), and a family whose models cannot passes its
    # slot and its share to the next family in the ranking. The tuned families are settled before any runs,
    # so the time goes to those that use it.
    planned, passed = candidates[:tuned], []

    def outgrown(search: _FamilySearch, share: float) -> bool:
        return search.best["time_boxed"] and share < BOXED_TUNING_GROWTH * search.best["seconds"]

    while True:
        remaining = max(0.0, tuning_deadline() - time.monotonic())
        weights = sum(s.family.budget_weight for s in planned)
        shares = {s.family.name: remaining * s.family.budget_weight / weights for s in planned}
        short = [s for s in planned if outgrown(s, shares[s.family.name]) and not s.can_grow()]
        if not short:
            break
        for search in short:
            search.why = (f"first trial time-boxed at {search.best['seconds']:.1f}s; a "
                          f"{shares[search.family.name]:.1f}s share could not double it: not tuned")
        passed += short
        planned = [s for s in candidates if s not in passed][:tuned]
    for position, search in enumerate(planned):
        remaining = max(0.0, tuning_deadline() - time.monotonic())
        if not remaining:
            search.why = f"not tuned: the rest of the budget is kept for {reserved_for}"
            continue
        share = remaining * search.family.budget_weight / sum(s.family.budget_weight for s in planned[position:])
        # Split over workers, the cap counts all of their tuning trials (the first pass ran one per worker);
        # a lone search adds max_trials to whatever its study already holds.
        total = None if context.max_trials is None or context.workers == 1 else context.workers + context.max_trials
        before, limit = len(search.study.trials), time.monotonic() + share
        if outgrown(search, share) and search.can_grow():
            search.why = (f"first trial time-boxed at {search.best['seconds']:.1f}s; its fold models went on growing "
                          f"for a {share:.1f}s share")
            search.grow(limit)
            if not search.best["time_boxed"]:  # its rounds all fit: the time left goes to tuning
                search.run(context.max_trials, limit, total)
                search.why += ", then tuned"
            continue
        search.run(context.max_trials, limit, total)
        capped = context.max_trials is not None and (len(search.study.trials) >= total if total else
                                                      len(search.study.trials) - before >= context.max_trials)
        search.why = (f"tuned: max_trials={context.max_trials} reached" if capped else
                      f"tuned: its {share:.1f}s share of the budget was spent")
    # Time handed back by families that stopped on a plateau goes to those still improving, best first.
    if any(s.plateau is not None for s in planned):
        for search in best_first():
            if search in planned and search.plateau is None and tuning_deadline() > time.monotonic():
                search.run(None, tuning_deadline())
    for search in planned:
        if search.plateau is not None:
            search.why = (f"tuned: stopped after {search.plateau} trials without a better one; "
                          "the rest of its time went to the families still improving")
    results = [search.result() for search in ranked]
    return results, {s.family.name: s.study for s in searches}, {s.family.name: s.why for s in searches}
