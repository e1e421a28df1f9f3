"""Automatic features, categorical encodings and scaling as sklearn transformers.

The transformers learn on `fit`; they sit in the model's pipeline (scalers, encoders) or in the
FeatureBuilder that is stored in front of it, so serving replays exactly the steps training saw.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import (
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    RobustScaler,
    StandardScaler,
    TargetEncoder,
)
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}
SCALER_KINDS = (*SCALERS, "none")
RATIO_EPSILON = 1e-12


def make_scaler(kind: str = "standard"):
    """StandardScaler, MinMaxScaler, RobustScaler or 'passthrough' for kind='none'."""
    if kind == "none":
        return "passthrough"
    if kind not in SCALERS:
        raise ValueError(f"scaling {kind!r} is not one of {list(SCALER_KINDS)}")
    return SCALERS[kind]()


def _frame(X) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame with named columns, got {type(X).__name__}")
    return X


CALENDAR_PARTS = ("year", "month", "day", "day_of_week", "hour", "is_weekend", "month_sin", "month_cos", "dow_sin",
                  "dow_cos", "hour_sin", "hour_cos")


def calendar_features(stamp: pd.Series, prefix: str) -> pd.DataFrame:
    """Calendar parts of one datetime column, named '<prefix>_<part>': year, month, day, day_of_week, hour,
    is_weekend, and sin/cos of month, day of week and hour (so December sits next to January and 23:00
    next to 00:00). Missing times give missing parts."""
    stamp = pd.to_datetime(stamp)
    hour = stamp.dt.hour + stamp.dt.minute / 60
    month, weekday = stamp.dt.month, stamp.dt.dayofweek
    parts = {
        "year": stamp.dt.year, "month": month, "day": stamp.dt.day, "day_of_week": weekday, "hour": hour,
        "is_weekend": (weekday >= 5).where(weekday.notna()),
        "month_sin": np.sin(2 * np.pi * (month - 1) / 12), "month_cos": np.cos(2 * np.pi * (month - 1) / 12),
        "dow_sin": np.sin(2 * np.pi * weekday / 7), "dow_cos": np.cos(2 * np.pi * weekday / 7),
        "hour_sin": np.sin(2 * np.pi * hour / 24), "hour_cos": np.cos(2 * np.pi * hour / 24),
    }
    return pd.DataFrame({f"{prefix}_{name}": parts[name].astype("float64") for name in CALENDAR_PARTS},
                        index=stamp.index)


class AutoFeatures(TransformerMixin, BaseEstimator):
    """Polynomial terms, pairwise products and safe ratios, and row-wise aggregates of numeric columns.

    Polynomials and pairs use numeric columns with more than two distinct values (squaring a 0/1 flag
    adds nothing); row aggregates (mean, std, min, max) use every numeric column. Given `y`, the
    `max_interactions` pairs whose product correlates most with the target
    are kept; without it, the first pairs in column order. Ratios divide by the second column and are
    missing where it is (near) zero. Polynomial terms need inputs without missing values; products,
    ratios and aggregates are missing where an input is, for the model's imputer to fill.
    """

    def __init__(self, polynomial_degree: int | None = None, interactions: bool = True, ratios: bool = True,
                 max_interactions: int = 20, row_aggregates: bool = True):
        self.polynomial_degree = polynomial_degree
        self.interactions = interactions
        self.ratios = ratios
        self.max_interactions = max_interactions
        self.row_aggregates = row_aggregates

    def fit(self, X, y=None) -> AutoFeatures:
        X = _frame(X)
        if self.polynomial_degree not in (None, 2, 3):
            raise ValueError(f"polynomial_degree must be None, 2 or 3, got {self.polynomial_degree}")
        if self.max_interactions < 0:
            raise ValueError(f"max_interactions must be >= 0, got {self.max_interactions}")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.numeric_columns_ = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])
                                 and not pd.api.types.is_bool_dtype(X[c]) and X[c].nunique() > 2]
        numeric = X[self.numeric_columns_].astype(float)
        self.polynomial_ = None
        if self.polynomial_degree and self.numeric_columns_:
            self.polynomial_ = PolynomialFeatures(self.polynomial_degree, include_bias=False).fit(numeric)
        pairs = list(combinations(self.numeric_columns_, 2)) if (self.interactions or self.ratios) else []
        self.interaction_pairs_ = self._rank_pairs(numeric, pairs, y)[: self.max_interactions]
        self.aggregate_columns_ = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])
                                   and not pd.api.types.is_bool_dtype(X[c])]
        self.feature_names_out_ = np.asarray(self._generate(X.head(2)).columns, dtype=object)
        return self

    def transform(self, X) -> pd.DataFrame:
        check_is_fitted(self, "feature_names_out_")
        return self._generate(_frame(X))

    def _generate(self, X: pd.DataFrame) -> pd.DataFrame:
        numeric = X[self.numeric_columns_].astype(float)
        new: dict[str, np.ndarray] = {}
        if self.polynomial_ is not None:
            terms = self.polynomial_.transform(numeric)
            for name, values in zip(self.polynomial_.get_feature_names_out(), terms.T, strict=True):
                if " " in name or "^" in name:  # the degree-1 terms are the inputs themselves
                    new["poly_" + name.replace(" ", "_x_").replace("^", "_pow")] = values
        for left, right in self.interaction_pairs_:
            a, b = numeric[left].to_numpy(), numeric[right].to_numpy()
            if self.interactions and self.polynomial_ is None:
                new[f"{left}_x_{right}"] = a * b
            if self.ratios:
                with np.errstate(divide="ignore", invalid="ignore"):
                    new[f"{left}_per_{right}"] = np.where(np.abs(b) > RATIO_EPSILON, a / b, np.nan)
        if self.row_aggregates and len(self.aggregate_columns_) > 1:
            values = X[self.aggregate_columns_].to_numpy(dtype=float)
            for name, function in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
                new[f"row_{name}"] = function(values, axis=1)
        return pd.concat([X, pd.DataFrame(new, index=X.index)], axis=1)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_

    @staticmethod
    def _rank_pairs(numeric: pd.DataFrame, pairs: list[tuple[str, str]], y) -> list[tuple[str, str]]:
        if y is None or not pairs:
            return pairs
        target = pd.Series(np.asarray(y)).factorize()[0] if not pd.api.types.is_numeric_dtype(
            pd.Series(np.asarray(y))) else np.asarray(y, dtype=float)
        target = (target - target.mean()) / (target.std() or 1.0)
        scores = []
        for left, right in pairs:
            product = numeric[left].to_numpy() * numeric[right].to_numpy()
            spread = product.std()
            scores.append(0.0 if spread == 0 else abs(np.mean((product - product.mean()) / spread * target)))
        order = np.argsort(-np.asarray(scores), kind="stable")
        return [pairs[i] for i in order]


class CategoricalEncoder(TransformerMixin, BaseEstimator):
    """One-hot for columns with at most `max_onehot_categories` values; target (cross-fitted) or
    ordinal encoding for the rest. Numeric columns pass through unchanged.

    `fit_transform` uses sklearn's TargetEncoder cross-fitting, so training rows are encoded with
    statistics from other folds; put this in the model Pipeline so each CV fold fits its own.
    """

    def __init__(self, max_onehot_categories: int = 10, high_cardinality: str = "target", random_state: int = 0):
        self.max_onehot_categories = max_onehot_categories
        self.high_cardinality = high_cardinality
        self.random_state = random_state

    def fit(self, X, y=None) -> CategoricalEncoder:
        self._build(_frame(X), y).fit(X, y)
        return self

    def fit_transform(self, X, y=None, **fit_params) -> pd.DataFrame:
        return self._build(_frame(X), y).fit_transform(X, y)

    def transform(self, X) -> pd.DataFrame:
        check_is_fitted(self, "encoder_")
        return self.encoder_.transform(_frame(X))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "encoder_")
        return self.encoder_.get_feature_names_out()

    def _build(self, X: pd.DataFrame, y) -> ColumnTransformer:
        if self.high_cardinality not in ("target", "ordinal"):
            raise ValueError(f"high_cardinality={self.high_cardinality!r}; use 'target' or 'ordinal'")
        categorical = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])
                       or pd.api.types.is_bool_dtype(X[c])]
        self.onehot_columns_ = [c for c in categorical if X[c].nunique() <= self.max_onehot_categories]
        self.high_cardinality_columns_ = [c for c in categorical if c not in self.onehot_columns_]
        if self.high_cardinality == "target" and self.high_cardinality_columns_ and y is None:
            raise ValueError(f"target encoding of {self.high_cardinality_columns_} needs y; pass y to fit "
                             "or use high_cardinality='ordinal'")
        stratified = y is not None and type_of_target(y) not in ("continuous", "continuous-multioutput")
        high = (TargetEncoder(cv=target_encoder_folds(stratified, self.random_state))
                if self.high_cardinality == "target" else
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1))
        self.encoder_ = ColumnTransformer(
            [("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False), self.onehot_columns_),
             ("high_cardinality", high, self.high_cardinality_columns_)],
            remainder="passthrough", verbose_feature_names_out=False,
        ).set_output(transform="pandas")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self.encoder_



def target_encoder_folds(stratified: bool, random_state: int) -> KFold | StratifiedKFold:
    """TargetEncoder's own default cross-fitting folds (5, shuffled, stratified for class targets), seeded."""
    return (StratifiedKFold if stratified else KFold)(5, shuffle=True, random_state=random_state)
