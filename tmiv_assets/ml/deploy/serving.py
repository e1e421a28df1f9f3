"""The model that is registered and served: raw dataset columns in, predictions out."""

from __future__ import annotations

from sklearn.pipeline import Pipeline

from tmiv_assets.ml.features.builder import FeatureBuilder


def serving_pipeline(builder: FeatureBuilder, model: Pipeline) -> Pipeline:
    """The fitted feature builder in front of the fitted model, so serving needs no feature-store lookup and
    applies exactly the transforms training saw."""
    return Pipeline([("features", builder), ("model", model)])
