"""The model's preprocessor: the one factory every trained pipeline, baseline included, starts with."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import TargetEncoder
from sklearn.utils.validation import check_is_fitted

from tmiv_assets.ml.data.quality import infer_column_type
from tmiv_assets.ml.features.engineering import calendar_features, make_scaler, target_encoder_folds

MIN_TARGET_ENCODED_ROWS = 50
"""Rarer categories share one target encoding: on a handful of rows each (4,000 tail numbers) their own
encodings are noise that tree models split on."""
FINE_TARGET_ENCODED_ROWS = (20, 5)
"""Lower minimums tried for a column whose categories name entities that set the target (countries, cows):
there each of a dozen rows says what the others will."""
FINE_ENCODING_GAIN = 0.05
"""Share of the target's variance a lower minimum's cross-fitted encoding must explain beyond the one at
MIN_TARGET_ENCODED_ROWS. GDP by country gains 0.57 and a cow's diet 1.0; tail numbers of flights 0.003 and
loan applicants' job titles 0.002, where the rarer categories' encodings cost accuracy."""
MIN_CODED_ROWS = 2
"""Rarer categories share the last code with unseen ones: a tree cannot learn what a category seen once means,
and ranking ids that are unique per row (airport codes) by their text only adds noise. A category seen twice
has a leaf's worth: forests on 1,618 restaurants' codes gained 0.08 RMSE (of 3.4) over a minimum of 5."""
RARE_CATEGORY = "\x00rare"  # a value no text column holds
MISSING_CATEGORY = "\x00missing"
"""A missing value of a column that had missing values in training, a category of its own (`<column>_(missing)`):
where a value is missing often says something (91% of films have no MPAA rating, 61% of Ames houses no masonry
veneer), and counted as the most frequent category it would blur that category with them."""
TARGET_TYPES = ("binary", "multiclass", "continuous")
"""What TabularEncoder's target encoding takes; a task's is TARGET_TYPE_OF[task]."""
TARGET_TYPE_OF = {"binary": "binary", "multiclass": "multiclass", "regression": "continuous"}


class TabularTypes(TransformerMixin, BaseEstimator):
    """Datetime columns become calendar parts, booleans 0/1 floats; columns with no value are dropped.

    Text columns whose every value is a date (ISO strings as CSV readers leave them) count as datetime
    columns: as text each date would be its own category, with nothing to say about the next one. Values
    that do not parse at transform time give missing parts.

    Runs in front of the encoders, which know only numbers and categories. Part names are
    '<column>_<part>' so explanations map them back to their input column.
    """

    def fit(self, X: pd.DataFrame, y=None) -> TabularTypes:
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.empty_columns_ = [c for c in X.columns if X[c].isna().all()]
        self.datetime_columns_ = [c for c in X.columns if c not in self.empty_columns_ and _holds_dates(X[c])]
        self.feature_names_out_ = np.asarray(self.transform(X.head(2)).columns, dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "datetime_columns_")
        frame = X.drop(columns=self.empty_columns_)
        for column in self.datetime_columns_:
            stamps = pd.to_datetime(frame.pop(column), errors="coerce", format="mixed")
            frame = pd.concat([frame, calendar_features(stamps, column)], axis=1)
        for column in frame.columns:
            if pd.api.types.is_bool_dtype(frame[column]):
                frame[column] = frame[column].astype("float64")
        return frame

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return self.feature_names_out_


class FrequentCategoriesOneHot(TransformerMixin, BaseEstimator):
    """One-hot encoding of categorical columns: a missing value is a category of its own (MISSING_CATEGORY)
    where the column had missing values in training, and otherwise, at transform time, counts as its most
    frequent category; the `max_categories - 1` most frequent categories keep a column each and the rest (and,
    at transform time, unseen ones) share one `<column>_infrequent` column.

    The same encoding as scikit-learn's OneHotEncoder(max_categories, handle_unknown='infrequent_if_exist'),
    which takes missing values as a category too, written with pandas' hashed category codes: about 10x faster
    on large batches, where scikit-learn's object-array searches dominated the served model's predict time.
    """

    def __init__(self, max_categories: int = 30):
        self.max_categories = max_categories

    def fit(self, X, y=None) -> FrequentCategoriesOneHot:
        X = _frame(X)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.categories_, self.fill_values_, self.infrequent_ = [], [], []
        for column in X.columns:
            values = X[column].astype(object)
            if values.notna().sum() == 0:
                raise ValueError(f"column {column!r} has no values to learn categories from")
            counts = values.where(values.notna(), MISSING_CATEGORY).value_counts()
            pooled = len(counts) > self.max_categories
            kept = counts.index[: self.max_categories - 1] if pooled else counts.index
            # in scikit-learn's order: sorted, the missing category last
            self.categories_.append(np.asarray(sorted(kept, key=lambda c: (c == MISSING_CATEGORY, str(c))),
                                               dtype=object))
            self.fill_values_.append(MISSING_CATEGORY if MISSING_CATEGORY in counts.index else counts.index[0])
            self.infrequent_.append(pooled)
        self.feature_names_out_ = np.asarray(
            [f"{column}_{'(missing)' if category == MISSING_CATEGORY else category}"
             for column, categories, pooled in zip(X.columns, self.categories_, self.infrequent_, strict=True)
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


def _holds_dates(values: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(values):
        return True
    if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
        return False
    distinct = pd.Series(pd.unique(values.dropna()), dtype=object)  # a date column repeats its days
    return infer_column_type(distinct) == "datetime"


def _pool_rare(values: pd.Series, kept: pd.Index) -> np.ndarray:
    """A column's text with the categories outside `kept` as one value, RARE_CATEGORY."""
    return values.where(values.isin(kept), RARE_CATEGORY).to_numpy()


def _by_frequency(values: pd.Series) -> pd.Index:
    """A column's categories with MIN_CODED_ROWS rows, most frequent first, ties in text order (the same ranks on
    every run)."""
    counts = values.value_counts()
    counts = counts[counts >= MIN_CODED_ROWS]
    return pd.Index(sorted(counts.index, key=lambda value: (-counts[value], value)))


def _frame(X) -> pd.DataFrame:
    return X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)


class TabularEncoder(TransformerMixin, BaseEstimator):
    """Numbers median-imputed (infinities too) and scaled, then categories one-hot encoded
    (FrequentCategoriesOneHot), written straight into one row-major float64 matrix.

    With a `target_type` ('binary', 'multiclass' or 'continuous') and a target to fit on, a column whose rare
    categories were pooled also gets scikit-learn's TargetEncoder columns (`<column>_target`, one per class
    for multiclass targets), so the pooled categories keep what they say about the target: 46 cities are
    not one value. Each pooled column also gets a code (`<column>_code`): its categories ranked by training
    frequency and scaled to [0, 1], those rarer than MIN_CODED_ROWS and unseen ones last, so a tree can still
    tell one category from another where the target encoding carries nothing (273 US areas, each half inbound
    and half outbound, whose counts mean different things in each). `fit_transform` encodes the training rows
    cross-fitted (no row sees its own target); `transform` uses the statistics of all training rows.
    Continuous targets' encodings are standardized. With `encode_targets=False` the pooled columns keep their
    code and get no target encoding (where it costs the models accuracy, see `automl.encoding`).

    It computes what a ColumnTransformer of SimpleImputer + scaler and the category encoder does, without
    stacking column blocks of different memory layouts, which took about 1 s per million rows of the served
    model's predict (benchmarks/serving.py).
    """

    def __init__(self, scaler: str = "standard", max_categories: int = 30, target_type: str | None = None,
                 random_state: int = 0, encode_targets: bool = True):
        self.scaler = scaler
        self.max_categories = max_categories
        self.target_type = target_type
        self.random_state = random_state
        self.encode_targets = encode_targets

    def fit(self, X: pd.DataFrame, y=None) -> TabularEncoder:
        self._fit(_frame(X), y, cross_fitted=False)
        return self

    def fit_transform(self, X: pd.DataFrame, y=None, **fit_params) -> np.ndarray:
        X = _frame(X)
        targets, text = self._fit(X, y, cross_fitted=True)
        out = self._encode(X, text)
        if targets is not None:
            out[:, -targets.shape[1]:] = targets
        return out

    def _fit(self, X: pd.DataFrame, y, cross_fitted: bool) -> tuple[np.ndarray | None, pd.DataFrame]:
        """Learns the encoding; returns the training rows' cross-fitted target encodings when asked, and their
        text_columns_ as text."""
        if self.target_type is not None and self.target_type not in TARGET_TYPES:
            raise ValueError(f"target_type={self.target_type!r}; use one of {TARGET_TYPES} or None")
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
        pooled = [] if self.categories_encoder_ is None else [
            column for column, infrequent in zip(self.categorical_, self.categories_encoder_.infrequent_, strict=True)
            if infrequent]
        self.text_columns_ = pooled if self.target_type is not None else []  # coded or target-encoded
        text = self._text_values(X, self.text_columns_)
        ranked = {column: _by_frequency(text[column]) for column in text.columns}
        self.coded_ = [column for column in text.columns if len(ranked[column]) > 1]  # more than one, or no code
        self.code_categories_ = [ranked[column] for column in self.coded_]
        codes = [f"{column}_code" for column in self.coded_]
        self.target_encoded_, self.target_categories_ = [], []
        for column in [] if y is None or not self.encode_targets else text.columns:  # with a category common enough
            if (supported := self._supported_categories(text[column], y)).size:
                self.target_encoded_.append(column)
                self.target_categories_.append(supported)
        self.target_encoder_, targets, encoded = None, None, []
        if self.target_encoded_:
            self.target_encoder_ = self._target_encoder()
            values = self._rare_pooled(text[self.target_encoded_])
            if cross_fitted:
                targets = self.target_encoder_.fit_transform(values, y)
            else:
                self.target_encoder_.fit(values, y)
            y_values = np.asarray(y, dtype=np.float64) if self.target_type == "continuous" else None
            self.target_center_, self.target_scale_ = ((0.0, 1.0) if y_values is None else
                                                       (float(y_values.mean()), float(y_values.std()) or 1.0))
            suffixes = ([f"target_{c}" for c in self.target_encoder_.classes_] if self.target_type == "multiclass"
                        else ["target"])
            encoded = [f"{column}_{suffix}" for column in self.target_encoded_ for suffix in suffixes]
            if targets is not None:
                targets = (targets - self.target_center_) / self.target_scale_
        self.target_columns_ = encoded
        self.feature_names_out_ = np.asarray([*self.numeric_, *categories, *codes, *encoded], dtype=object)
        return targets, text

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "feature_names_out_")
        X = _frame(X)
        text = self._text_values(X, self.text_columns_)
        out = self._encode(X, text)
        if self.target_encoder_ is not None:
            targets = self.target_encoder_.transform(self._rare_pooled(text[self.target_encoded_]))
            out[:, -targets.shape[1]:] = (targets - self.target_center_) / self.target_scale_
        return out

    def _encode(self, X: pd.DataFrame, text: pd.DataFrame) -> np.ndarray:
        """Numbers, one-hot categories and the pooled columns' codes (from their `text`, text_columns_); the target
        encodings' columns, last, are left at zero."""
        out = np.zeros((len(X), len(self.feature_names_out_)), dtype=np.float64)
        if self.numeric_:
            numbers = self._filled(self._numbers(X))
            out[:, : len(self.numeric_)] = numbers if self.scaler_ == "passthrough" else self.scaler_.transform(numbers)
        if self.categories_encoder_ is not None:
            end = self._codes_start()
            self.categories_encoder_.encode_into(X[self.categorical_], out[:, len(self.numeric_):end])
            for offset, (column, ranked) in enumerate(zip(self.coded_, self.code_categories_, strict=True)):
                codes = pd.Categorical(text[column], categories=ranked).codes.astype(np.float64)
                out[:, end + offset] = np.where(codes < 0, len(ranked), codes) / len(ranked)
        return out

    def _text_values(self, X: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        """Categories as text, a missing value as in the one-hot part (MISSING_CATEGORY where the column had
        missing values in training, else its most frequent category); text, because TargetEncoder cannot order
        mixed value types."""
        if not columns:
            return pd.DataFrame(index=X.index)
        fills = dict(zip(self.categorical_, self.categories_encoder_.fill_values_, strict=True))
        return pd.DataFrame({c: X[c].astype(object).where(X[c].notna(), fills[c]).astype(str) for c in columns})

    def _supported_categories(self, values: pd.Series, y) -> pd.Index:
        """The categories with their own target encoding: those with MIN_TARGET_ENCODED_ROWS training rows, or
        with one of FINE_TARGET_ENCODED_ROWS when its cross-fitted encoding explains FINE_ENCODING_GAIN more of
        the target's variance (the best such minimum)."""
        counts = values.value_counts()
        supported = counts.index[counts >= MIN_TARGET_ENCODED_ROWS]
        if counts.iloc[-1] >= MIN_TARGET_ENCODED_ROWS:
            return supported  # every category has its own encoding already
        best = self._explained(values, supported, y) + FINE_ENCODING_GAIN
        for rows in FINE_TARGET_ENCODED_ROWS:
            if (explained := self._explained(values, kept := counts.index[counts >= rows], y)) >= best:
                supported, best = kept, explained
        return supported

    def _explained(self, values: pd.Series, kept: pd.Index, y) -> float:
        """Share of the target's variance (per class for class targets, averaged) that the cross-fitted encoding
        of `values`, with the categories outside `kept` as one, explains linearly."""
        if kept.empty:
            return 0.0
        encoder = self._target_encoder()
        encoded = encoder.fit_transform(_pool_rare(values, kept)[:, None], y)
        y = np.asarray(y)
        targets = ([y.astype(np.float64)] if self.target_type == "continuous" else
                   [y == encoder.classes_[1]] if self.target_type == "binary" else
                   [y == label for label in encoder.classes_])
        with np.errstate(invalid="ignore", divide="ignore"):  # a constant encoding explains nothing
            shares = [np.corrcoef(encoded[:, k], target)[0, 1] ** 2 for k, target in enumerate(targets)]
        return float(np.mean(np.nan_to_num(shares)))

    def _rare_pooled(self, values: pd.DataFrame) -> np.ndarray:
        """The target-encoded columns' text with categories that have no encoding of their own (rarer in training
        than the minimum chosen for the column, and unseen ones) as one value: TargetEncoder's input."""
        return np.column_stack([_pool_rare(values[column], kept)
                                for column, kept in zip(self.target_encoded_, self.target_categories_, strict=True)])

    def _target_encoder(self) -> TargetEncoder:
        """scikit-learn's TargetEncoder cross-fitted on its default folds, seeded (stratified for class targets)."""
        folds = target_encoder_folds(self.target_type != "continuous", self.random_state)
        return TargetEncoder(target_type=self.target_type, cv=folds)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return self.feature_names_out_

    def code_scales(self) -> tuple[tuple[int, int], ...]:
        """(output column, scale) of each pooled column's code: the code times its scale is the category's integer
        rank (the rare and unseen ones' the last), the form LightGBM's own category splits take."""
        check_is_fitted(self, "feature_names_out_")
        start = self._codes_start()
        return tuple((start + k, len(ranked)) for k, ranked in enumerate(self.code_categories_))

    def _codes_start(self) -> int:
        """The output column of the first pooled column's code: after the numbers and the one-hot categories."""
        return len(self.numeric_) + (0 if self.categories_encoder_ is None else
                                     len(self.categories_encoder_.feature_names_out_))

    def _numbers(self, X: pd.DataFrame) -> np.ndarray:
        # Infinities (a ratio over a zero) count as missing: a scaler or a linear model cannot take them, and
        # clipping them to the largest finite value would invent a magnitude.
        numbers = X[self.numeric_].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)  # never a view of X
        numbers[np.isinf(numbers)] = np.nan
        return numbers

    def _filled(self, numbers: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(numbers), self.medians_, numbers)


def make_preprocessor(scaler: str = "standard", max_categories: int = 30, target_type: str | None = None,
                      random_state: int = 0, encode_targets: bool = True) -> Pipeline:
    """Types, then median imputation and scaling of numbers, and one-hot encoding of categories with rare
    ones pooled (a long tail such as 100 airports stays a few dozen columns); with a `target_type`, pooled
    columns are coded and, unless `encode_targets` is False, target-encoded too (TabularEncoder). Fitted on
    training rows only."""
    return Pipeline([("types", TabularTypes()),
                     ("encode", TabularEncoder(scaler, max_categories, target_type, random_state, encode_targets))])
