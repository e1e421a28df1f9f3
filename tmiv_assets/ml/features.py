"""Row-wise feature engineering: stateless, so serving applies exactly what training saw."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from tmiv_assets.ml.spec import DatasetSpec


class FeatureBuilder(TransformerMixin, BaseEstimator):
    """Turn raw columns into model features.

    Drops identifiers and excluded columns, expands the time column into calendar parts
    (hour and day of week also as sin/cos so 23:00 sits next to 00:00) and casts booleans to 0/1.
    Learns only the column names, so it can be prepended to an already fitted model pipeline.
    """

    def __init__(self, time_column: str | None = None, drop_columns: tuple[str, ...] = ()):
        self.time_column = time_column
        self.drop_columns = drop_columns

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> FeatureBuilder:
        drop = tuple(c for c in (spec.id_column, *spec.exclude_columns) if c)
        return cls(time_column=spec.time_column, drop_columns=drop)

    def fit(self, X: pd.DataFrame, y=None) -> FeatureBuilder:
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.feature_names_out_ = np.asarray(self.transform(X.head(1)).columns, dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        features = X.drop(columns=[c for c in self.drop_columns if c in X.columns])
        if self.time_column and self.time_column in features.columns:
            features = self._calendar(features)
        for column in features.select_dtypes(include="bool").columns:
            features[column] = features[column].astype("int64")
        return features

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return self.feature_names_out_

    def _calendar(self, features: pd.DataFrame) -> pd.DataFrame:
        stamp = pd.to_datetime(features.pop(self.time_column))
        hour = stamp.dt.hour + stamp.dt.minute / 60
        weekday = stamp.dt.dayofweek
        prefix = self.time_column
        calendar = pd.DataFrame(
            {
                f"{prefix}_month": stamp.dt.month,
                f"{prefix}_day_of_week": weekday,
                f"{prefix}_is_weekend": (weekday >= 5).astype("int64"),
                f"{prefix}_hour": hour,
                f"{prefix}_hour_sin": np.sin(2 * np.pi * hour / 24),
                f"{prefix}_hour_cos": np.cos(2 * np.pi * hour / 24),
                f"{prefix}_dow_sin": np.sin(2 * np.pi * weekday / 7),
                f"{prefix}_dow_cos": np.cos(2 * np.pi * weekday / 7),
            },
            index=features.index,
        )
        return pd.concat([features, calendar], axis=1)
