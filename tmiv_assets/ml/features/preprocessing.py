"""The model's preprocessor: the one factory every trained pipeline, baseline included, starts with."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.validation import check_is_fitted

from tmiv_assets.ml.features.engineering import calendar_features, make_scaler


class TabularTypes(TransformerMixin, BaseEstimator):
    """Datetime columns become calendar parts, booleans 0/1 floats; columns with no value are dropped.

    Runs in front of the encoders, which know only numbers and categories. Part names are
    '<column>_<part>' so explanations map them back to their input column.
    """

    def fit(self, X: pd.DataFrame, y=None) -> TabularTypes:
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.empty_columns_ = [c for c in X.columns if X[c].isna().all()]
        self.datetime_columns_ = [c for c in X.columns if pd.api.types.is_datetime64_any_dtype(X[c])]
        self.feature_names_out_ = np.asarray(self.transform(X.head(2)).columns, dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "datetime_columns_")
        frame = X.drop(columns=self.empty_columns_)
        for column in [c for c in self.datetime_columns_ if c not in self.empty_columns_]:
            frame = pd.concat([frame, calendar_features(frame.pop(column), column)], axis=1)
        for column in frame.columns:
            if pd.api.types.is_bool_dtype(frame[column]):
                frame[column] = frame[column].astype("float64")
        return frame

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return self.feature_names_out_


def make_preprocessor(scaler: str = "standard", max_categories: int = 30) -> Pipeline:
    """Types, then median imputation and scaling of numbers, and one-hot encoding of categories with rare
    ones pooled (a long tail such as 100 airports stays a few dozen columns); fitted on training rows only."""
    numeric = make_pipeline(SimpleImputer(strategy="median"), make_scaler(scaler))
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent"),
        OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=max_categories, sparse_output=False),
    )
    encode = ColumnTransformer(
        [("numeric", numeric, make_column_selector(dtype_include="number")),
         ("categorical", categorical, make_column_selector(dtype_exclude="number"))],
        verbose_feature_names_out=False,
    )
    return Pipeline([("types", TabularTypes()), ("encode", encode)])
