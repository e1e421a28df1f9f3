"""The model that is registered and served: raw dataset columns in, predictions out."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from tmiv_assets.ml.data.spec import CLASSIFICATION
from tmiv_assets.ml.features.builder import FeatureBuilder
from tmiv_assets.ml.metrics import resolve_positive_class

# Rows a served model encodes and predicts at a time. A million rows at once became one float64 matrix of half a
# gigabyte (64 encoded features), whose first touch and cache misses cost about a second more than the same rows
# in chunks, whose smaller blocks the allocator reuses; memory then stays flat whatever the batch size.
SERVING_CHUNK_ROWS = 131_072


class ServedPipeline(Pipeline):
    """A scikit-learn Pipeline that predicts large batches chunk by chunk; the same steps and outputs."""

    def predict(self, X, **params):
        return self._chunked(Pipeline.predict, X, **params)

    def predict_proba(self, X, **params):
        return self._chunked(Pipeline.predict_proba, X, **params)

    def _chunked(self, method, X, **params):
        if len(X) <= SERVING_CHUNK_ROWS or not isinstance(X, pd.DataFrame):
            return method(self, X, **params)
        return np.concatenate([method(self, X.iloc[start:start + SERVING_CHUNK_ROWS], **params)
                               for start in range(0, len(X), SERVING_CHUNK_ROWS)])


def serving_pipeline(builder: FeatureBuilder, model: Pipeline) -> Pipeline:
    """The fitted feature builder in front of the fitted model, so serving needs no feature-store lookup and
    applies exactly the transforms training saw."""
    return ServedPipeline([("features", builder), ("model", model)])


def predict_rows(model, frame: pd.DataFrame, task: str, positive_class=None, keep: list[str] = (),
                 probabilities: bool = True) -> pd.DataFrame:
    """The `keep` columns (e.g. ids) and the prediction; for a classifier also `score` (the positive class's
    probability, or the predicted class's for multiclass) and, with `probabilities`, one column per class."""
    inputs = frame[list(model.feature_names_in_)]
    result = frame[list(keep)].copy()
    if task in CLASSIFICATION:
        proba = model.predict_proba(inputs)
        # The AutoML's final models decide from their probabilities: one pass of the model, not two.
        estimator = final_estimator(model)
        result["prediction"] = estimator.decide(proba) if hasattr(estimator, "decide") else model.predict(inputs)
        if task == "binary":
            result["score"] = proba[:, list(model.classes_).index(resolve_positive_class(model.classes_,
                                                                                         positive_class))]
        else:  # the predicted class's probability (class weights may pick one less probable than the top)
            result["score"] = proba[np.arange(len(proba)),
                                    pd.Index(model.classes_).get_indexer(result["prediction"].to_numpy())]
        if probabilities:
            for label, column in zip(model.classes_, proba.T, strict=True):
                result[f"probability_{label}"] = column
    else:
        result["prediction"] = model.predict(inputs)
    return result


def final_estimator(model):
    """The estimator at the end of nested pipelines."""
    while isinstance(model, Pipeline):
        model = model.steps[-1][1]
    return model
