"""The model that is registered and served: raw dataset columns in, predictions out."""

from __future__ import annotations

import pandas as pd
from sklearn.pipeline import Pipeline

from tmiv_assets.ml.data.spec import CLASSIFICATION
from tmiv_assets.ml.features.builder import FeatureBuilder
from tmiv_assets.ml.metrics import resolve_positive_class


def serving_pipeline(builder: FeatureBuilder, model: Pipeline) -> Pipeline:
    """The fitted feature builder in front of the fitted model, so serving needs no feature-store lookup and
    applies exactly the transforms training saw."""
    return Pipeline([("features", builder), ("model", model)])


def predict_rows(model, frame: pd.DataFrame, task: str, positive_class=None, keep: list[str] = (),
                 probabilities: bool = True) -> pd.DataFrame:
    """The `keep` columns (e.g. ids) and the prediction; for a classifier also `score` (the positive class's
    probability, or the predicted class's for multiclass) and, with `probabilities`, one column per class."""
    inputs = frame[list(model.feature_names_in_)]
    result = frame[list(keep)].copy()
    result["prediction"] = model.predict(inputs)
    if task in CLASSIFICATION:
        proba = model.predict_proba(inputs)
        if task == "binary":
            result["score"] = proba[:, list(model.classes_).index(resolve_positive_class(model.classes_,
                                                                                         positive_class))]
        else:
            result["score"] = proba.max(axis=1)
        if probabilities:
            for label, column in zip(model.classes_, proba.T, strict=True):
                result[f"probability_{label}"] = column
    return result
