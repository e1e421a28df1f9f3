"""Model families the AutoML searches: how to build each estimator and its Optuna search space."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.ensemble import (
    AdaBoostClassifier,
    AdaBoostRegressor,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import ElasticNet, Lasso, LogisticRegression, Ridge
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.svm import SVC, SVR
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from xgboost import XGBClassifier, XGBRegressor

CLASSIFICATION = ("binary", "multiclass")
ALL_TASKS = (*CLASSIFICATION, "regression")


@dataclass(frozen=True)
class ModelFamily:
    """One searchable model family."""

    name: str
    tasks: tuple[str, ...]
    build: Callable[[dict, str, int, int], object]
    """(params, task, seed, n_jobs) -> unfitted estimator."""
    space: Callable[[optuna.Trial, str], dict]
    """Samples a parameter dict from a trial for a task; an empty dict means the defaults."""
    budget_weight: float = 1.0
    """Share of the search budget relative to the other families."""
    max_rows: int | None = None
    """Skipped above this many training rows (kernel and neighbour methods scale badly)."""
    defaults: dict = field(default_factory=dict)
    """First trial of every search: a strong, known-good configuration."""


def _by_task(classifier, regressor):
    return lambda params, task, seed, n_jobs: (classifier if task in CLASSIFICATION else regressor)(
        **_with_seed(classifier if task in CLASSIFICATION else regressor, params, seed, n_jobs))


def _with_seed(cls, params: dict, seed: int, n_jobs: int) -> dict:
    accepted = cls().get_params()
    extra = {k: v for k, v in {"random_state": seed, "n_jobs": n_jobs}.items() if k in accepted}
    if cls.__module__.startswith("lightgbm"):
        extra["verbose"] = -1  # LightGBM otherwise prints a line per tree that finds no split
    return {**extra, **params}


def _lightgbm_space(trial: optuna.Trial, task: str) -> dict:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 50, 800, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 128, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 2, 100, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "subsample_freq": 1,
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def _xgboost_space(trial: optuna.Trial, task: str) -> dict:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 50, 800, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 10),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def _forest_space(trial: optuna.Trial, task: str) -> dict:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 100, 500, log=True),
        "max_features": trial.suggest_float("max_features", 0.1, 1.0),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True),
    }


def _hist_gb_space(trial: optuna.Trial, task: str) -> dict:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 4, 128, log=True),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 2, 100, log=True),
        "l2_regularization": trial.suggest_float("l2_regularization", 1e-4, 10.0, log=True),
        "max_iter": trial.suggest_int("max_iter", 50, 500, log=True),
    }


def _linear_space(trial: optuna.Trial, task: str) -> dict:
    if task in CLASSIFICATION:
        return {"C": trial.suggest_float("C", 1e-3, 100.0, log=True)}
    return _ridge_space(trial, task)


def _ridge_space(trial: optuna.Trial, task: str) -> dict:
    return {"alpha": trial.suggest_float("alpha", 1e-3, 100.0, log=True)}


def _elastic_space(trial: optuna.Trial, task: str) -> dict:
    return {"alpha": trial.suggest_float("alpha", 1e-4, 10.0, log=True),
            "l1_ratio": trial.suggest_float("l1_ratio", 0.05, 0.95)}


def _svm_space(trial: optuna.Trial, task: str) -> dict:
    return {"C": trial.suggest_float("C", 1e-2, 100.0, log=True),
            "gamma": trial.suggest_float("gamma", 1e-4, 1.0, log=True)}


def _knn_space(trial: optuna.Trial, task: str) -> dict:
    return {"n_neighbors": trial.suggest_int("n_neighbors", 3, 50, log=True),
            "weights": trial.suggest_categorical("weights", ["uniform", "distance"])}


def _tree_space(trial: optuna.Trial, task: str) -> dict:
    return {"max_depth": trial.suggest_int("max_depth", 2, 20),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 50, log=True)}


def _boosting_space(trial: optuna.Trial, task: str) -> dict:
    return {"n_estimators": trial.suggest_int("n_estimators", 50, 300, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.5, log=True)}


def _gradient_boosting_space(trial: optuna.Trial, task: str) -> dict:
    return {**_boosting_space(trial, task), "max_depth": trial.suggest_int("max_depth", 2, 6)}


def _no_space(trial: optuna.Trial, task: str) -> dict:
    return {}


def _linear_build(params: dict, task: str, seed: int, n_jobs: int):
    if task in CLASSIFICATION:
        return LogisticRegression(max_iter=3000, random_state=seed, **params)
    return Ridge(random_state=seed, **params)


def _svm_build(params: dict, task: str, seed: int, n_jobs: int):
    if task in CLASSIFICATION:
        return SVC(probability=True, random_state=seed, **params)
    return SVR(**params)


def _knn_build(params: dict, task: str, seed: int, n_jobs: int):
    return (KNeighborsClassifier if task in CLASSIFICATION else KNeighborsRegressor)(n_jobs=n_jobs, **params)


def _fixed(cls, **fixed):
    return lambda params, task, seed, n_jobs: cls(**_with_seed(cls, {**fixed, **params}, seed, n_jobs))


CATALOG: tuple[ModelFamily, ...] = (
    ModelFamily("lightgbm", ALL_TASKS, _by_task(LGBMClassifier, LGBMRegressor), _lightgbm_space, 3.0,
                defaults={"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 31}),
    ModelFamily("hist_gradient_boosting", ALL_TASKS, _by_task(HistGradientBoostingClassifier, HistGradientBoostingRegressor),
                _hist_gb_space, 1.5),
    ModelFamily("xgboost", ALL_TASKS, _by_task(XGBClassifier, XGBRegressor), _xgboost_space, 2.0,
                defaults={"n_estimators": 200, "learning_rate": 0.05, "max_depth": 6}),
    ModelFamily("linear", ALL_TASKS, _linear_build, _linear_space, 0.5),
    ModelFamily("random_forest", ALL_TASKS, _by_task(RandomForestClassifier, RandomForestRegressor), _forest_space, 1.5,
                defaults={"n_estimators": 200, "max_features": 0.5, "min_samples_leaf": 1}),
    ModelFamily("extra_trees", ALL_TASKS, _by_task(ExtraTreesClassifier, ExtraTreesRegressor), _forest_space, 1.0,
                defaults={"n_estimators": 200, "max_features": 0.7, "min_samples_leaf": 1}),
    ModelFamily("svm", ALL_TASKS, _svm_build, _svm_space, 0.7, max_rows=5_000),
    ModelFamily("knn", ALL_TASKS, _knn_build, _knn_space, 0.3, max_rows=20_000),
    ModelFamily("gradient_boosting", ALL_TASKS, _by_task(GradientBoostingClassifier, GradientBoostingRegressor),
                _gradient_boosting_space, 0.7, max_rows=50_000),
    ModelFamily("adaboost", ALL_TASKS, _by_task(AdaBoostClassifier, AdaBoostRegressor), _boosting_space, 0.3),
    ModelFamily("decision_tree", ALL_TASKS, _by_task(DecisionTreeClassifier, DecisionTreeRegressor), _tree_space, 0.2),
    ModelFamily("naive_bayes", CLASSIFICATION, lambda p, t, s, n: GaussianNB(), _no_space, 0.1),
    ModelFamily("lasso", ("regression",), _fixed(Lasso, max_iter=5000), _ridge_space, 0.3),
    ModelFamily("elastic_net", ("regression",), _fixed(ElasticNet, max_iter=5000), _elastic_space, 0.3),
)

PRESETS = {
    # families searched (None: all that fit the task), CV folds, ensemble selection rounds
    "fast": {"families": ("lightgbm", "linear", "hist_gradient_boosting"), "folds": 3, "ensemble_rounds": 0},
    "balanced": {"families": ("lightgbm", "hist_gradient_boosting", "xgboost", "linear", "random_forest",
                              "extra_trees", "svm", "knn", "naive_bayes", "lasso", "elastic_net"),
                 "folds": 5, "ensemble_rounds": 25},
    "best_quality": {"families": None, "folds": 5, "ensemble_rounds": 50},
}


def families_for(task: str, preset: str, include=None, exclude=None, n_rows: int = 0) -> list[ModelFamily]:
    """The families to search, in catalog order (strong, fast families first)."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of {sorted(PRESETS)}")
    known = {f.name for f in CATALOG}
    unknown = sorted(set(include or ()) | set(exclude or ()) - known)
    if unknown:
        raise ValueError(f"unknown model families {unknown}; choose from {sorted(known)}")
    names = set(include) if include else set(PRESETS[preset]["families"] or known)
    chosen = [f for f in CATALOG if f.name in names and f.name not in set(exclude or ())
              and task in f.tasks and (f.max_rows is None or n_rows <= f.max_rows)]
    if not chosen:
        raise ValueError(f"no model family left for task {task!r} after include={include} exclude={exclude}")
    return chosen
