"""Whether the pooled categories' target encodings pay, decided on a holdout of the training rows.

A pooled column's cross-fitted target encoding halved the error on GDP per capita by country (gapminder), yet
cost 0.02 macro F1 on storm statuses by storm name (dplyr storms: LightGBM 0.890 with it, 0.913 without) and
0.4 RMSE on restaurant inspection scores by business (causaldata: forests 3.84 with it, 3.43 without), where
the trees do better isolating the categories by their code. Which one holds depends on the data, so it is
measured: a short LightGBM and a small random forest, with and without the encodings, on the same holdout,
the encoder fitted on the holdout's training part as the final model's is on all rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tmiv_assets.ml.automl.catalog import family_named
from tmiv_assets.ml.automl.fitting import DeadlineReached, fit_within
from tmiv_assets.ml.data.spec import CLASSIFICATION
from tmiv_assets.ml.data.splits import cv_folds
from tmiv_assets.ml.features.preprocessing import TARGET_TYPE_OF, make_preprocessor
from tmiv_assets.ml.metrics import is_better, oof_score

CHECK_ROWS = 10_000
"""Rows the check samples at most, a holdout of 2,000 among them: on 6,000 the storms' gain was lost in noise."""
CHECK_MODELS = (("lightgbm", {"n_estimators": 50, "learning_rate": 0.2}),
                ("random_forest", {"n_estimators": 40, "max_features": 0.5}))
"""Boosting and a forest: the encodings helped one and hurt the other on the inspection scores. Half of
LightGBM's default rounds at twice their rate: 9 classes' trees on 8,000 rows took 1.2 s a fit at 100."""


def target_encodings_pay(X: pd.DataFrame, y: pd.Series, task: str, metric: str, classes: np.ndarray | None,
                         seed: int, n_jobs: int, deadline: float, scaler: str = "standard") -> bool | None:
    """False when the better of CHECK_MODELS validates better without the pooled columns' target encodings
    than the better of them with; True when not (ties keep them) or when the sample has none; None when the
    check does not finish before the monotonic `deadline` or the sample cannot be split stratified."""
    if len(y) > CHECK_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(len(y), CHECK_ROWS, replace=False))
        X, y = X.iloc[rows].reset_index(drop=True), y.iloc[rows].reset_index(drop=True)
    if task in CLASSIFICATION and y.value_counts().min() < 2:
        return None
    train, valid = cv_folds(y, task, 1, seed)[0]
    encoder = make_preprocessor(scaler, target_type=TARGET_TYPE_OF[task], random_state=seed)
    fitted = np.asarray(encoder.fit_transform(X.iloc[train], y.iloc[train]), dtype=np.float64)
    held = np.asarray(encoder.transform(X.iloc[valid]), dtype=np.float64)
    targets = set(encoder.named_steps["encode"].target_columns_)
    if not targets:
        return True
    plain = [i for i, name in enumerate(encoder.get_feature_names_out()) if name not in targets]
    codes = y.to_numpy() if classes is None else np.searchsorted(classes, y.to_numpy())
    best: dict[str, float | None] = {"with": None, "without": None}
    try:
        for view, columns in (("with", slice(None)), ("without", plain)):
            for name, params in CHECK_MODELS:
                model = family_named(name).build(params, task, seed, n_jobs)
                fit_within(model, fitted[:, columns], codes[train], deadline=deadline)
                score = _score(model, held[:, columns], codes[valid], task, metric, classes)
                if is_better(metric, score, best[view]):
                    best[view] = score
    except DeadlineReached:
        return None
    return not is_better(metric, best["without"], best["with"])


def _score(model, X: np.ndarray, codes: np.ndarray, task: str, metric: str, classes: np.ndarray | None) -> float:
    if classes is None:
        return oof_score(metric, task, codes, model.predict(X), None)
    proba = np.zeros((len(X), len(classes)))
    proba[:, model.classes_] = model.predict_proba(X)  # a class the sample's training part lacks stays at 0
    return oof_score(metric, task, codes, proba, np.arange(len(classes)))
