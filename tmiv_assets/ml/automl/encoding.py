"""Whether the pooled categories' target encodings pay, decided on a holdout of the training rows.

A pooled column's cross-fitted target encoding halved the error on GDP per capita by country (gapminder), yet
cost 0.02 macro F1 on storm statuses by storm name (dplyr storms: LightGBM 0.890 with it, 0.913 without) and
0.4 RMSE on restaurant inspection scores by business (causaldata: forests 3.84 with it, 3.43 without), where
the trees do better isolating the categories by their code. Which one holds depends on the data, so it is
measured: a short LightGBM and a small random forest, with and without the encodings, on the same holdout,
the encoder fitted on the holdout's training part as the final model's is on all rows. They are dropped only where
doing without them validates better on nearly every bootstrap resample of the holdout: a lead by a hair is noise
that the search, fitted on every row, can overturn.
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
DROP_CONFIDENCE = 0.95
"""Share of the holdout's bootstrap resamples on which the better model without the encodings must validate better
than the better one with them. Dropped whenever it validated better at all, the encodings went on sets where
the search with them then did better on test rows (one 80/20 split, 30 s; seeds 0 and 1): loan rates 1.23
against 2.58 RMSE and 1.33 against 1.33, A-level scores by school 2.33 against 2.35 and 2.32 against 2.35,
baseball runs 5.59 against 5.62 and 5.50 against 5.55 (Forbes 2000 market values split: 17.4 against 17.6,
9.0 against 8.1); their resamples favoured doing without on 57-88%. Storms by name and inspections by business,
where dropping them pays, on 97% and 100%."""
RESAMPLES = 200


def target_encodings_pay(X: pd.DataFrame, y: pd.Series, task: str, metric: str, classes: np.ndarray | None,
                         seed: int, n_jobs: int, deadline: float, scaler: str = "standard") -> bool | None:
    """False when the better of CHECK_MODELS validates better without the pooled columns' target encodings
    than the better of them with on at least DROP_CONFIDENCE of the holdout's bootstrap resamples; True when
    not or when the sample has none; None when the check does not finish before the monotonic `deadline` or the
    sample cannot be split stratified."""
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
    labels = None if classes is None else np.arange(len(classes))
    best: dict[str, tuple[float, np.ndarray] | None] = {"with": None, "without": None}
    try:
        for view, columns in (("with", slice(None)), ("without", plain)):
            for name, params in CHECK_MODELS:
                model = family_named(name).build(params, task, seed, n_jobs)
                fit_within(model, fitted[:, columns], codes[train], deadline=deadline)
                predicted = _predictions(model, held[:, columns], classes)
                score = oof_score(metric, task, codes[valid], predicted, labels)
                if best[view] is None or is_better(metric, score, best[view][0]):
                    best[view] = (score, predicted)
    except DeadlineReached:
        return None
    return _share_better(metric, task, codes[valid], best["without"][1], best["with"][1], labels,
                         seed) < DROP_CONFIDENCE


def _predictions(model, X: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    if classes is None:
        return model.predict(X)
    proba = np.zeros((len(X), len(classes)))
    proba[:, model.classes_] = model.predict_proba(X)  # a class the sample's training part lacks stays at 0
    return proba


def _share_better(metric: str, task: str, codes: np.ndarray, predicted: np.ndarray, than: np.ndarray,
                  labels: np.ndarray | None, seed: int) -> float:
    """Share of RESAMPLES bootstrap resamples of the rows (paired: both predictions on the same rows) on which
    `predicted` scores strictly better than `than`."""
    rng, better = np.random.default_rng(seed), 0
    for _ in range(RESAMPLES):
        rows = rng.integers(0, len(codes), len(codes))
        better += is_better(metric, oof_score(metric, task, codes[rows], predicted[rows], labels),
                            oof_score(metric, task, codes[rows], than[rows], labels))
    return better / RESAMPLES
