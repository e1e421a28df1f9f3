"""Candidate models: split, preprocess, fit with a fixed seed and score on the held-out test set."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn import metrics
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

PRIMARY_METRIC = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "rmse"}
LOWER_IS_BETTER = {"rmse", "mae", "log_loss"}


@dataclass(frozen=True)
class TrainTestSplit:
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


@dataclass(frozen=True)
class CandidateResult:
    """One fitted candidate and its held-out scores."""

    name: str
    pipeline: Pipeline | None
    """Preprocessing and estimator, fitted on the training split only; None for a searched family
    whose only score is cross-validated."""
    metrics: dict[str, float]
    fit_seconds: float
    params: dict[str, object]


def split_dataset(
    features: pd.DataFrame, target: str, task: str, test_size: float = 0.2, seed: int = 0,
    ids: pd.Series | None = None,
) -> TrainTestSplit:
    """Hold out `test_size` of the rows; stratified on the target for classification.

    With `ids` the split is stable: within each class the rows whose id hashes lowest form the test set,
    so when labelled rows are added a row stays where it was and a retrained model is compared with the
    champion on rows neither trained on.
    """
    X = features.drop(columns=[target])
    y = features[target]
    if ids is None:
        stratify = y if task in ("binary", "multiclass") else None
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=test_size, random_state=seed, stratify=stratify
        )
        return TrainTestSplit(X_train, X_test, y_train, y_test)
    rank = pd.Series(pd.util.hash_pandas_object(ids.astype(str), index=False).to_numpy(), index=features.index)
    groups = y if task in ("binary", "multiclass") else pd.Series(0, index=features.index)
    # Within each class (one group for regression) the lowest hashes are held out.
    quantile = rank.groupby(groups).rank(method="first", pct=True)
    test = quantile <= test_size
    return TrainTestSplit(X[~test], X[test], y[~test], y[test])


def build_preprocessor() -> ColumnTransformer:
    """Impute, scale numeric columns and one-hot encode categoricals; fitted on train only."""
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    # Rare categories are pooled so that a long tail (e.g. 100 airports) stays a few dozen columns.
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent"),
        OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=30, sparse_output=False),
    )
    return ColumnTransformer(
        [
            ("numeric", numeric, make_column_selector(dtype_include="number")),
            ("categorical", categorical, make_column_selector(dtype_exclude="number")),
        ],
        verbose_feature_names_out=False,
    )


def candidate_estimators(task: str, seed: int = 0, n_jobs: int = 2) -> dict[str, object]:
    """The baseline, a linear model and LightGBM; all seeded."""
    if task == "regression":
        return {
            "baseline_mean": DummyRegressor(strategy="mean"),
            "ridge": Ridge(alpha=1.0, random_state=seed),
            "lightgbm": LGBMRegressor(
                n_estimators=300, learning_rate=0.05, random_state=seed, n_jobs=n_jobs, verbose=-1
            ),
        }
    return {
        "baseline_prior": DummyClassifier(strategy="prior"),
        "logistic_regression": LogisticRegression(max_iter=2000, random_state=seed),
        "lightgbm": LGBMClassifier(
            n_estimators=300, learning_rate=0.05, random_state=seed, n_jobs=n_jobs, verbose=-1
        ),
    }


def fit_candidates(
    data: TrainTestSplit, task: str, positive_class=None, seed: int = 0
) -> list[CandidateResult]:
    """Fit every candidate on the training split and score it on the test split."""
    results = []
    for name, estimator in candidate_estimators(task, seed).items():
        pipeline = Pipeline([("preprocess", build_preprocessor()), ("estimator", estimator)])
        started = time.perf_counter()
        pipeline.fit(data.X_train, data.y_train)
        seconds = time.perf_counter() - started
        scores = score_model(pipeline, data.X_test, data.y_test, task, positive_class)
        params = {k: v for k, v in estimator.get_params().items() if np.isscalar(v) or v is None}
        results.append(CandidateResult(name, pipeline, scores, round(seconds, 3), params))
    return results


def resolve_positive_class(classes: np.ndarray, positive_class=None):
    """The spec's positive class, or the last class in sorted order as scikit-learn does."""
    if positive_class is None:
        return classes[-1]
    matches = [c for c in classes if str(c) == str(positive_class)]
    if not matches:
        raise ValueError(f"positive_class {positive_class!r} is not one of the labels {list(classes)}")
    return matches[0]


def score_model(model, X: pd.DataFrame, y: pd.Series, task: str, positive_class=None) -> dict[str, float]:
    """Held-out metrics for the task; every value is a plain float."""
    predicted = model.predict(X)
    if task == "regression":
        return {
            "r2": metrics.r2_score(y, predicted),
            "rmse": metrics.root_mean_squared_error(y, predicted),
            "mae": metrics.mean_absolute_error(y, predicted),
            "explained_variance": metrics.explained_variance_score(y, predicted),
        }
    proba = model.predict_proba(X)
    classes = model.classes_
    scores = {"accuracy": metrics.accuracy_score(y, predicted)}
    scores["f1_macro"] = metrics.f1_score(y, predicted, average="macro")
    scores["log_loss"] = metrics.log_loss(y, proba, labels=classes)
    if task == "binary":
        positive = resolve_positive_class(classes, positive_class)
        column = list(classes).index(positive)
        scores["roc_auc"] = metrics.roc_auc_score(y == positive, proba[:, column])
        scores["precision"] = metrics.precision_score(y, predicted, pos_label=positive, zero_division=0)
        scores["recall"] = metrics.recall_score(y, predicted, pos_label=positive)
        scores["f1"] = metrics.f1_score(y, predicted, pos_label=positive)
    else:
        scores["roc_auc"] = metrics.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
    return {k: float(v) for k, v in scores.items()}


def leaderboard(results: list[CandidateResult], task: str) -> pd.DataFrame:
    """Candidates ranked best first on the task's primary metric."""
    metric = PRIMARY_METRIC[task]
    rows = [{"model": r.name, **r.metrics, "fit_seconds": r.fit_seconds} for r in results]
    board = pd.DataFrame(rows).sort_values(metric, ascending=metric in LOWER_IS_BETTER, kind="stable")
    return board.reset_index(drop=True)


def is_better(metric: str, value: float, than: float) -> bool:
    return value < than if metric in LOWER_IS_BETTER else value > than


@dataclass(frozen=True)
class PromotionDecision:
    """Whether a newly trained model replaces the champion, and why."""

    promote: bool
    reason: str


def decide_promotion(metric: str, challenger: float, incumbent: float | None) -> PromotionDecision:
    """Promote unless the current champion scores strictly better on the same test rows."""
    if incumbent is None:
        return PromotionDecision(True, "no comparable champion")
    if is_better(metric, incumbent, challenger):
        return PromotionDecision(False, f"champion {metric}={incumbent:.4f} beats challenger {challenger:.4f} "
                                        "on the same test rows")
    return PromotionDecision(True, f"challenger {metric}={challenger:.4f} matches or beats champion "
                                   f"{incumbent:.4f} on the same test rows")
