"""Row-wise feature engineering in front of the model, so serving applies exactly what training saw."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from tmiv_assets.ml.data.spec import DatasetSpec
from tmiv_assets.ml.features.engineering import CALENDAR_PARTS, AutoFeatures, calendar_features


class FeatureBuilder(TransformerMixin, BaseEstimator):
    """Turn raw dataset columns into model features.

    Drops identifiers and excluded columns, expands the time column into calendar parts and casts
    booleans to 0/1. With `auto_features`, adds pairwise products and safe ratios of the first
    `max_interactions` numeric pairs and row aggregates (AutoFeatures, no target involved, so the
    feature set carries no label information). It is stored as the first step of the served model.
    """

    def __init__(self, time_column: str | None = None, drop_columns: tuple[str, ...] = (),
                 auto_features: bool = False, max_interactions: int = 10):
        self.time_column = time_column
        self.drop_columns = drop_columns
        self.auto_features = auto_features
        self.max_interactions = max_interactions

    @classmethod
    def from_spec(cls, spec: DatasetSpec, **options) -> FeatureBuilder:
        drop = tuple(c for c in (spec.id_column, *spec.exclude_columns) if c)
        return cls(time_column=spec.time_column, drop_columns=drop, **options)

    def fit(self, X: pd.DataFrame, y=None) -> FeatureBuilder:
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.auto_ = None
        if self.auto_features:
            self.auto_ = AutoFeatures(interactions=True, ratios=True, max_interactions=self.max_interactions,
                                      row_aggregates=True).fit(self._base(X))
        self.feature_names_out_ = np.asarray(self.transform(X.head(1)).columns, dtype=object)
        return self

    def source_of(self, feature: str) -> str:
        """The raw column a built feature comes from: itself, or the time column for its calendar parts; a feature
        combining several columns (a product, ratio or row aggregate) is its own source."""
        calendar = {f"{self.time_column}_{part}" for part in CALENDAR_PARTS} if self.time_column else set()
        return self.time_column if feature in calendar and feature not in self.feature_names_in_ else feature

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "feature_names_in_")
        features = self._base(X)
        if self.auto_ is not None:
            features = self.auto_.transform(features)
        return features

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return self.feature_names_out_

    def _base(self, X: pd.DataFrame) -> pd.DataFrame:
        features = X.drop(columns=[c for c in self.drop_columns if c in X.columns])
        if self.time_column and self.time_column in features.columns:
            features = pd.concat([features, calendar_features(features.pop(self.time_column), self.time_column)],
                                 axis=1)
        for column in features.select_dtypes(include="bool").columns:
            features[column] = features[column].astype("int64")
        return features
