"""Model families the AutoML searches: each estimator, its Optuna search space and start configurations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
from catboost import CatBoostClassifier, CatBoostRegressor
from lightgbm import LGBMClassifier, LGBMModel, LGBMRegressor
from sklearn.calibration import CalibratedClassifierCV
from sklearn.dummy import DummyClassifier, DummyRegressor
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

from tmiv_assets.ml.automl.neural import TorchMLPClassifier, TorchMLPRegressor
from tmiv_assets.ml.data.spec import CLASSIFICATION

ALL_TASKS = (*CLASSIFICATION, "regression")


class XGBLabelClassifier(XGBClassifier):
    """XGBClassifier that accepts any class labels, as the scikit-learn classifiers do (XGBoost wants 0..K-1)."""

    def fit(self, X, y, **kwargs):
        labels, codes = np.unique(np.asarray(y), return_inverse=True)
        if kwargs.get("eval_set"):  # validation labels take the same codes
            kwargs["eval_set"] = [(Xv, np.searchsorted(labels, np.asarray(yv))) for Xv, yv in kwargs["eval_set"]]
        self.__dict__.pop("labels_", None)
        super().fit(X, codes, **kwargs)
        self.labels_ = labels
        return self

    def predict(self, X, **kwargs) -> np.ndarray:
        return self.labels_[np.asarray(super().predict(X, **kwargs), dtype=int)]

    @property
    def classes_(self) -> np.ndarray:
        # XGBoost checks classes_ against the codes during fit; callers see the labels afterwards.
        return self.__dict__["labels_"] if "labels_" in self.__dict__ else np.arange(self.n_classes_)


def _code_ranks(X, category_codes: tuple) -> np.ndarray:
    """A copy of the rows (the search's folds are shared by every family) with each pooled column's code as the
    category's integer rank: the code times its scale (TabularEncoder.code_scales)."""
    X = np.array(X, dtype=np.float64)
    for column, scale in category_codes:
        X[:, column] = np.rint(X[:, column] * scale)
    return X


class _CategoryCodes:
    """LightGBM that, with `native_categories`, splits the pooled columns' codes as categories: it then groups a
    column's categories by their gradient statistics, many against many, where a code taken as a number splits
    ranks of frequency. `category_codes` are the codes' (column, scale) (TabularEncoder.code_scales); the codes,
    in [0, 1] for the families that need scaled inputs, become integer ranks only here. LightGBM's defaults on
    the encoded rows: restaurant inspections by business (1,454 coded) test RMSE 4.09 against 4.55, GDP by
    country 3,073 against 3,684; flights' 2,897 tail numbers lost 0.013 ROC-AUC, so the search decides."""

    def __init__(self, *, native_categories: bool = False, category_codes: tuple = (), **kwargs):
        self.native_categories = native_categories
        self.category_codes = category_codes
        super().__init__(**kwargs)

    def booster_rows(self, X) -> np.ndarray:
        """The rows as the booster takes them (the codes as integer ranks), for callers of `booster_` itself."""
        if not (self.native_categories and self.category_codes):
            return X
        return _code_ranks(X, self.category_codes)

    def fit(self, X, y, *args, eval_X=None, **kwargs):
        if self.native_categories and self.category_codes:
            kwargs["categorical_feature"] = [column for column, _ in self.category_codes]
            eval_X = None if eval_X is None else tuple(self.booster_rows(rows) for rows in eval_X)
        return super().fit(self.booster_rows(X), y, *args, eval_X=eval_X, **kwargs)

    def _process_params(self, stage: str) -> dict:
        # LightGBM passes every constructor parameter on to the booster; these two are not the booster's.
        params = super()._process_params(stage)
        params.pop("native_categories", None)
        params.pop("category_codes", None)
        return params


class LGBMCodesClassifier(_CategoryCodes, LGBMClassifier):
    """LGBMClassifier with the pooled columns' codes as categories where asked (its predict goes through
    predict_proba)."""

    def predict_proba(self, X, *args, **kwargs):
        return super().predict_proba(self.booster_rows(X), *args, **kwargs)


class LGBMCodesRegressor(_CategoryCodes, LGBMRegressor):
    """LGBMRegressor with the pooled columns' codes as categories where asked."""

    def predict(self, X, *args, **kwargs):
        return super().predict(self.booster_rows(X), *args, **kwargs)


class _CatBoostCodes:
    """CatBoost that, with `native_categories`, takes the pooled columns' codes as categorical features: its
    ordered target statistics, computed on earlier rows only, replace the encoder's codes (a rank of frequency)
    and one-hot blocks. Drag-race contestants' episodes (180 queens) 5-fold RMSE 2.595 -> 2.534 and cars'
    mileage by model 1.256 -> 1.239, but GDP by country 3,365 -> 4,028 and Texas home sales by city 63.6 -> 68.2:
    a start configuration, and the search decides. The codes become integer ranks only here; they travel
    with the model when it is pickled (CatBoost pickles its own parameters alone)."""

    def __init__(self, *, native_categories: bool = False, category_codes: tuple = (), **kwargs):
        super().__init__(**kwargs)
        self.native_categories, self.category_codes = native_categories, category_codes

    def booster_rows(self, X):
        """The rows as CatBoost takes them: the codes as integer ranks in a frame, where asked."""
        if not (self.native_categories and self.category_codes):
            return X
        rows = pd.DataFrame(_code_ranks(X, self.category_codes))
        codes = [column for column, _ in self.category_codes]
        rows[codes] = rows[codes].astype(np.int64)  # CatBoost refuses float categorical values
        return rows

    def fit(self, X, y, *args, eval_set=None, **kwargs):
        if self.native_categories and self.category_codes:
            kwargs["cat_features"] = [column for column, _ in self.category_codes]
            if eval_set is not None:
                eval_set = (self.booster_rows(eval_set[0]), eval_set[1])
        return super().fit(self.booster_rows(X), y, *args, eval_set=eval_set, **kwargs)

    def predict(self, X, *args, **kwargs):
        return super().predict(self.booster_rows(X), *args, **kwargs)

    def get_params(self, deep: bool = True) -> dict:  # CatBoost's own are its parameters alone; clone needs these
        return {**super().get_params(), "native_categories": self.native_categories,
                "category_codes": self.category_codes}

    def __getstate__(self):
        return {**super().__getstate__(), "_codes": (self.native_categories, self.category_codes)}

    def __setstate__(self, state):
        state = dict(state)
        self.native_categories, self.category_codes = state.pop("_codes", (False, ()))
        super().__setstate__(state)


class CatBoostCodesClassifier(_CatBoostCodes, CatBoostClassifier):
    """CatBoostClassifier with the pooled columns' codes as categorical features where asked."""

    def predict_proba(self, X, *args, **kwargs):
        return super().predict_proba(self.booster_rows(X), *args, **kwargs)


class CatBoostCodesRegressor(_CatBoostCodes, CatBoostRegressor):
    """CatBoostRegressor with the pooled columns' codes as categorical features where asked."""


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
    """Share of the tuning budget relative to the other families."""
    max_rows: int | None = None
    """Skipped above this many training rows (kernel and neighbour methods scale badly)."""
    early_rows: int = 0
    """Up to this many training rows its first trial is nearly free, so the first pass runs it right after
    LightGBM's defaults instead of in catalog order (an SVM's fit cannot be stopped and grows with rows²)."""
    starts: tuple[dict, ...] = ({},)
    """Configurations tried before sampling: the library defaults first, then known-good alternatives."""
    grid: dict | Callable[[str], dict] | None = None
    """Small grid for sampler='grid' (or task -> grid); None: only the start configurations are tried."""
    category_space: Callable[[optuna.Trial], dict] | None = None
    """Samples how the pooled columns' codes are split, added to `space` only where the data has such columns."""

    def grid_for(self, task: str) -> dict | None:
        return self.grid(task) if callable(self.grid) else self.grid

    @property
    def tunable(self) -> bool:
        return self.space is not _no_space

    def __reduce__(self):
        # Pickled by name (its builders are closures): search workers' results cross process boundaries.
        return family_named, (self.name,)


def needs_category_codes(params: dict) -> bool:
    """Whether a configuration splits the pooled columns' codes as categories (LightGBM's), which data without
    such columns makes the same as without."""
    return bool(params.get("native_categories"))


def family_named(name: str) -> ModelFamily:
    return next(family for family in CATALOG if family.name == name)


def _with_seed(cls, params: dict, seed: int, n_jobs: int) -> dict:
    accepted = cls().get_params()
    extra = {k: v for k, v in {"random_state": seed, "n_jobs": n_jobs}.items() if k in accepted}
    if issubclass(cls, LGBMModel):
        extra["verbose"] = -1  # LightGBM otherwise prints a line per tree that finds no split
        # LightGBM times row- against column-wise histograms and picks the faster, so under CPU load the
        # same data and seed could train a different model; fixing the layout keeps runs reproducible.
        extra |= {"force_col_wise": True, "deterministic": True}
    return {**extra, **params}


def _by_task(classifier, regressor, **fixed):
    def build(params: dict, task: str, seed: int, n_jobs: int):
        cls = classifier if task in CLASSIFICATION else regressor
        return cls(**_with_seed(cls, {**fixed, **params}, seed, n_jobs))
    return build


# Boosting searches a learning rate and shapes with many rounds and early stopping on the validation fold,
# so a trial costs what its learning rate needs, not a sampled number of trees.
BOOSTING_ROUNDS = 2000


def _lightgbm_space(trial: optuna.Trial, task: str) -> dict:
    return {
        "n_estimators": BOOSTING_ROUNDS,
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 128, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 2, 100, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "subsample_freq": 1,
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        "max_bin": trial.suggest_int("max_bin", 63, 1023, log=True),
    }


def _lightgbm_category_space(trial: optuna.Trial) -> dict:
    if not trial.suggest_categorical("native_categories", [False, True]):
        return {"native_categories": False}
    # How far a small category's statistics shrink to the mean, and the rows a group of categories needs.
    return {"native_categories": True, "cat_smooth": trial.suggest_float("cat_smooth", 1.0, 100.0, log=True),
            "min_data_per_group": trial.suggest_int("min_data_per_group", 5, 200, log=True)}


def _xgboost_space(trial: optuna.Trial, task: str) -> dict:
    return {
        "n_estimators": BOOSTING_ROUNDS,
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 10),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def _catboost_space(trial: optuna.Trial, task: str) -> dict:
    return {
        "iterations": BOOSTING_ROUNDS,
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "depth": trial.suggest_int("depth", 4, 8),
        "l2_leaf_reg": trial.suggest_float("l2_leaf_reg", 1.0, 10.0, log=True),
    }


def _catboost_category_space(trial: optuna.Trial) -> dict:
    return {"native_categories": trial.suggest_categorical("native_categories", [False, True])}


def _catboost_build(params: dict, task: str, seed: int, n_jobs: int):
    cls = CatBoostCodesClassifier if task in CLASSIFICATION else CatBoostCodesRegressor
    # allow_writing_files=False: CatBoost otherwise writes a catboost_info/ folder into the working directory.
    return cls(**{"random_seed": seed, "thread_count": n_jobs, "verbose": False, "allow_writing_files": False,
                  **params})


def _forest_space(trial: optuna.Trial, task: str) -> dict:
    return {"n_estimators": trial.suggest_int("n_estimators", 100, 400, log=True),
            "max_features": trial.suggest_float("max_features", 0.1, 1.0),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True)}


def _hist_gb_space(trial: optuna.Trial, task: str) -> dict:
    return {"learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 4, 128, log=True),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 2, 100, log=True),
            "l2_regularization": trial.suggest_float("l2_regularization", 1e-4, 10.0, log=True),
            "max_iter": trial.suggest_int("max_iter", 50, 500, log=True)}


def _linear_space(trial: optuna.Trial, task: str) -> dict:
    if task in CLASSIFICATION:
        return {"C": trial.suggest_float("C", 1e-3, 100.0, log=True)}
    return _alpha_space(trial, task)


def _alpha_space(trial: optuna.Trial, task: str) -> dict:
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


def _mlp_space(trial: optuna.Trial, task: str) -> dict:
    return {"hidden_layers": trial.suggest_int("hidden_layers", 1, 3),
            "width": trial.suggest_categorical("width", [32, 64, 128, 256]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True)}


def _no_space(trial: optuna.Trial, task: str) -> dict:
    return {}


def _linear_build(params: dict, task: str, seed: int, n_jobs: int):
    if task in CLASSIFICATION:
        return LogisticRegression(**{"max_iter": 3000, "random_state": seed, **params})
    return Ridge(**{"random_state": seed, **params})


def _svm_build(params: dict, task: str, seed: int, n_jobs: int):
    if task in CLASSIFICATION:
        # Platt scaling on 3 folds: SVC(probability=True) is deprecated and runs 5 internal folds.
        return CalibratedClassifierCV(SVC(**{"random_state": seed, **params}), method="sigmoid", cv=3, ensemble=False)
    return SVR(**params)


def _mlp_build(params: dict, task: str, seed: int, n_jobs: int):
    cls = TorchMLPClassifier if task in CLASSIFICATION else TorchMLPRegressor
    return cls(**{"seed": seed, "max_epochs": 60, "patience": 8, **params})


# Start portfolios: each family's library defaults or a proven configuration first, then strong
# alternatives that use early stopping; they run before any sampled configuration.
_LGBM_STARTS = (
    {},  # LightGBM's defaults: the search is never worse than them on the validation rows
    {"n_estimators": BOOSTING_ROUNDS, "learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 20,
     "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8},
    # The same with the pooled columns' codes as categories; only where the data has any (`needs_category_codes`).
    # Third, as on large data LightGBM gets few trials: lecture ratings by 2,972 students and 1,128 lecturers
    # (lme4's InstEval, 59,000 rows, 30 s) reached it as third and scored 1.205 RMSE, 1.230 without it (FLAML 1.211).
    {"n_estimators": BOOSTING_ROUNDS, "learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 20,
     "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8, "native_categories": True},
    # Finer histograms: 255 bins merge the values of an id or a long-tailed number (2,410 schools, house prices,
    # loan amounts); 1,023 gained 0.3-3.7% on such sets and lost up to 1.5% on others, so one start of each.
    {"n_estimators": BOOSTING_ROUNDS, "learning_rate": 0.03, "num_leaves": 15, "min_child_samples": 10,
     "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.7, "reg_lambda": 1.0, "max_bin": 1023},
    {"n_estimators": BOOSTING_ROUNDS, "learning_rate": 0.05, "num_leaves": 63, "min_child_samples": 5,
     "colsample_bytree": 0.5, "reg_lambda": 3.0},
)
_XGB_STARTS = (
    {"n_estimators": BOOSTING_ROUNDS, "learning_rate": 0.05, "max_depth": 6, "subsample": 0.8,
     "colsample_bytree": 0.8},
    # XGBoost's library defaults (depth 6, learning rate 0.3, no row or column sampling) with early stopping: a
    # target that is an exact function of a column (experience squared) needs a leaf per value and no sampling.
    # On 11 such held-out tables at 30 s: card 0.316 -> 0.128 RMSE, recid 0.0013 -> 0.00096, expendshares
    # 0.818 -> 0.706, worse on hprice3 0.060 -> 0.082; on 14 other tables within one fit's run-to-run spread but
    # for travel modes (macro F1 0.958-0.964 -> 0.952).
    {"n_estimators": BOOSTING_ROUNDS},
    {"n_estimators": BOOSTING_ROUNDS, "learning_rate": 0.1, "max_depth": 3, "min_child_weight": 2.0},
)
CATALOG: tuple[ModelFamily, ...] = (
    # Order is the order of the first pass: LightGBM's defaults first, then cheap, strong families.
    ModelFamily(name="lightgbm", tasks=ALL_TASKS, build=_by_task(LGBMCodesClassifier, LGBMCodesRegressor),
                space=_lightgbm_space, category_space=_lightgbm_category_space, budget_weight=3.0,
                starts=_LGBM_STARTS,
                grid={"num_leaves": [7, 31], "learning_rate": [0.03, 0.1]}),
    ModelFamily(name="linear", tasks=ALL_TASKS, build=_linear_build, space=_linear_space, budget_weight=0.3,
                grid=lambda task: {"C" if task in CLASSIFICATION else "alpha": [0.01, 0.1, 1.0, 10.0]}),
    ModelFamily(name="xgboost", tasks=ALL_TASKS, build=_by_task(XGBLabelClassifier, XGBRegressor),
                space=_xgboost_space, budget_weight=2.0, starts=_XGB_STARTS,
                grid={"max_depth": [3, 6], "learning_rate": [0.03, 0.1]}),
    ModelFamily(name="catboost", tasks=ALL_TASKS, build=_catboost_build, space=_catboost_space, budget_weight=1.5,
                category_space=_catboost_category_space,
                starts=({"iterations": BOOSTING_ROUNDS, "learning_rate": 0.08, "depth": 6},
                        {"iterations": BOOSTING_ROUNDS, "learning_rate": 0.08, "depth": 6, "native_categories": True}),
                grid={"depth": [4, 6], "learning_rate": [0.05, 0.1]}),
    ModelFamily(name="hist_gradient_boosting", tasks=ALL_TASKS,
                build=_by_task(HistGradientBoostingClassifier, HistGradientBoostingRegressor),
                space=_hist_gb_space, budget_weight=1.5,
                grid={"learning_rate": [0.03, 0.1], "max_leaf_nodes": [15, 31]}),
    ModelFamily(name="random_forest", tasks=ALL_TASKS,
                build=_by_task(RandomForestClassifier, RandomForestRegressor, n_estimators=200),
                space=_forest_space, budget_weight=1.0, grid={"max_features": [0.3, 0.6, 1.0]}),
    ModelFamily(name="extra_trees", tasks=ALL_TASKS,
                build=_by_task(ExtraTreesClassifier, ExtraTreesRegressor, n_estimators=200),
                space=_forest_space, budget_weight=1.0, grid={"max_features": [0.3, 0.6, 1.0]}),
    ModelFamily(name="naive_bayes", tasks=CLASSIFICATION, build=lambda p, t, s, n: GaussianNB(), space=_no_space,
                budget_weight=0.1),
    ModelFamily(name="knn", tasks=ALL_TASKS,
                build=lambda p, t, s, n: (KNeighborsClassifier if t in CLASSIFICATION else KNeighborsRegressor)(**p),
                space=_knn_space, budget_weight=0.3, max_rows=20_000, grid={"n_neighbors": [5, 15, 30]}),
    ModelFamily(name="lasso", tasks=("regression",), build=_by_task(Lasso, Lasso, max_iter=5000), space=_alpha_space,
                budget_weight=0.3, grid={"alpha": [0.01, 0.1, 1.0]}),
    ModelFamily(name="elastic_net", tasks=("regression",), build=_by_task(ElasticNet, ElasticNet, max_iter=5000),
                space=_elastic_space, budget_weight=0.3, grid={"alpha": [0.01, 0.1, 1.0], "l1_ratio": [0.2, 0.8]}),
    ModelFamily(name="svm", tasks=ALL_TASKS, build=_svm_build, space=_svm_space, budget_weight=0.7, max_rows=5_000,
                early_rows=2_000,
                grid={"C": [0.1, 1, 10], "gamma": [0.01, 0.1]}),
    ModelFamily(name="decision_tree", tasks=ALL_TASKS, build=_by_task(DecisionTreeClassifier, DecisionTreeRegressor),
                space=_tree_space, budget_weight=0.2, grid={"max_depth": [3, 6, 12]}),
    ModelFamily(name="gradient_boosting", tasks=ALL_TASKS,
                build=_by_task(GradientBoostingClassifier, GradientBoostingRegressor),
                space=_gradient_boosting_space, budget_weight=0.7, max_rows=50_000, grid={"max_depth": [2, 3, 5]}),
    ModelFamily(name="adaboost", tasks=ALL_TASKS, build=_by_task(AdaBoostClassifier, AdaBoostRegressor),
                space=_boosting_space, budget_weight=0.3, grid={"learning_rate": [0.1, 1.0]}),
    ModelFamily(name="mlp", tasks=ALL_TASKS, build=_mlp_build, space=_mlp_space, budget_weight=0.7, max_rows=100_000,
                grid={"hidden_layers": [1, 2]}),
)


def baseline_estimator(task: str):
    """The no-skill model every search must beat: class priors, or the mean for regression."""
    return DummyClassifier(strategy="prior") if task in CLASSIFICATION else DummyRegressor(strategy="mean")


PRESETS = {
    # families (None: every family that fits the task), CV folds, families tuned after the first pass,
    # ensemble selection rounds
    "fast": {"families": ("lightgbm", "linear", "hist_gradient_boosting"), "folds": 3, "tuned": 1,
             "ensemble_rounds": 0},
    "balanced": {"families": ("linear", "lightgbm", "hist_gradient_boosting", "random_forest", "extra_trees",
                              "xgboost", "catboost", "naive_bayes", "knn", "lasso", "elastic_net", "svm"),
                 "folds": 5, "tuned": 4, "ensemble_rounds": 25},
    "best_quality": {"families": None, "folds": 5, "tuned": 6, "ensemble_rounds": 50},
}


def families_for(task: str, preset: str, include=None, exclude=None, n_rows: int = 0) -> list[ModelFamily]:
    """The families to search, in catalog order (strong, fast families first) except that those nearly free
    on this many rows (`early_rows`) come right after the first."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of {sorted(PRESETS)}")
    known = {f.name for f in CATALOG}
    unknown = sorted((set(include or ()) | set(exclude or ())) - known)
    if unknown:
        raise ValueError(f"unknown model families {unknown}; choose from {sorted(known)}")
    names = set(include) if include else set(PRESETS[preset]["families"] or known)
    chosen = [f for f in CATALOG if f.name in names and f.name not in set(exclude or ())
              and task in f.tasks and (f.max_rows is None or n_rows <= f.max_rows)]
    if not chosen:
        raise ValueError(f"no model family left for task {task!r} after include={include} exclude={exclude}")
    return chosen[:1] + sorted(chosen[1:], key=lambda f: n_rows > f.early_rows)  # stable: catalog order otherwise
