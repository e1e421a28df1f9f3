"""The model's preprocessor: the one factory every trained pipeline, baseline included, starts with."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline
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


class FrequentCategoriesOneHot(TransformerMixin, BaseEstimator):
    """One-hot encoding of categorical columns: a missing value counts as the column's most frequent
    category, the `max_categories - 1` most frequent categories keep a column each and the rest (and, at
    transform time, unseen ones) share one `<column>_infrequent` column.

    The same encoding as SimpleImputer(most_frequent) + OneHotEncoder(max_categories,
    handle_unknown='infrequent_if_exist'), written with pandas' hashed category codes: about 10x faster on
    large batches, where scikit-learn's object-array searches dominated the served model's predict time.
    """

    def __init__(self, max_categories: int = 30):
        self.max_categories = max_categories

    def fit(self, X, y=None) -> FrequentCategoriesOneHot:
        X = _frame(X)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.categories_, self.fill_values_, self.infrequent_ = [], [], []
        for column in X.columns:
            counts = X[column].astype(object).value_counts(dropna=True)
            if counts.empty:
                raise ValueError(f"column {column!r} has no values to learn categories from")
            pooled = len(counts) > self.max_categories
            kept = counts.index[: self.max_categories - 1] if pooled else counts.index
            self.categories_.append(np.asarray(sorted(kept, key=str), dtype=object))
            self.fill_values_.append(counts.index[0])
            self.infrequent_.append(pooled)
        self.feature_names_out_ = np.asarray(
            [f"{column}_{category}" for column, categories, pooled in
             zip(X.columns, self.categories_, self.infrequent_, strict=True)
             for category in [*categories, *(["infrequent"] if pooled else [])]], dtype=object)
        return self

    def transform(self, X) -> np.ndarray:
        out = np.zeros((len(X), len(self.feature_names_out_)), dtype=np.float64)
        self.encode_into(X, out)
        return out

    def encode_into(self, X, out: np.ndarray) -> None:
        """Write the encoding of X into `out`, a zeroed (rows x features out) block."""
        check_is_fitted(self, "categories_")
        X = _frame(X)
        rows, offset = np.arange(len(X)), 0
        for column, categories, fill, pooled in zip(X.columns, self.categories_, self.fill_values_, self.infrequent_,
                                                    strict=True):
            values = X[column].astype(object)
            codes = pd.Categorical(values.where(values.notna(), fill), categories=categories).codes.astype(np.int64)
            unseen = codes < 0  # pooled with the infrequent ones, or all zeros when there is no such column
            if pooled:
                codes[unseen] = len(categories)
            known = ~unseen | pooled
            out[rows[known], offset + codes[known]] = 1.0
            offset += len(categories) + pooled

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return self.feature_names_out_


def _frame(X) -> pd.DataFrame:
    return X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)


class TabularEncoder(TransformerMixin, BaseEstimator):
    """Numbers median-imputed and scaled, then categories one-hot encoded (FrequentCategoriesOneHot), written
    straight into one row-major float64 matrix.

    It computes what a ColumnTransformer of SimpleImputer + scaler and the category encoder does, without
    stacking column blocks of different memory layouts, which took about 1 s per million rows of the served
    model's predict (benchmarks/serving.py).
    """

    def __init__(self, scaler: str = "standard", max_categories: int = 30):
        self.scaler = scaler
        self.max_categories = max_categories

    def fit(self, X: pd.DataFrame, y=None) -> TabularEncoder:
        X = _frame(X)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.numeric_ = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])]
        self.categorical_ = [c for c in X.columns if c not in set(self.numeric_)]
        numbers = self._numbers(X)
        self.medians_ = np.zeros(len(self.numeric_))
        if self.numeric_:
            observed = ~np.isnan(numbers).all(axis=0)
            self.medians_[observed] = np.nanmedian(numbers[:, observed], axis=0)
        self.scaler_ = make_scaler(self.scaler)
        if self.scaler_ != "passthrough" and self.numeric_:
            self.scaler_.fit(self._filled(numbers))
        self.categories_encoder_ = (FrequentCategoriesOneHot(self.max_categories).fit(X[self.categorical_])
                                    if self.categorical_ else None)
        categories = [] if self.categories_encoder_ is None else list(self.categories_encoder_.feature_names_out_)
        self.feature_names_out_ = np.asarray([*self.numeric_, *categories], dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "feature_names_out_")
        X = _frame(X)
        out = np.zeros((len(X), len(self.feature_names_out_)), dtype=np.float64)
        if self.numeric_:
            numbers = self._filled(self._numbers(X))
            out[:, : len(self.numeric_)] = numbers if self.scaler_ == "passthrough" else self.scaler_.transform(numbers)
        if self.categories_encoder_ is not None:
            self.categories_encoder_.encode_into(X[self.categorical_], out[:, len(self.numeric_):])
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return self.feature_names_out_

    def _numbers(self, X: pd.DataFrame) -> np.ndarray:
        return X[self.numeric_].to_numpy(dtype=np.float64, na_value=np.nan)

    def _filled(self, numbers: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(numbers), self.medians_, numbers)


def make_preprocessor(scaler: str = "standard", max_categories: int = 30) -> Pipeline:
    """Types, then median imputation and scaling of numbers, and one-hot encoding of categories with rare
    ones pooled (a long tail such as 100 airports stays a few dozen columns); fitted on training rows only."""
    return Pipeline([("types", TabularTypes()), ("encode", TabularEncoder(scaler, max_categories))])
