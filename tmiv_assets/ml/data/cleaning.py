"""Cleaning before the train/test split.

`DatasetCleaner` works on the whole dataset: types, unlabelled and duplicate rows, useless columns,
and the configured missing-value and outlier strategies, each reported. The statistic-free strategies
(drop, forward/backward fill, constant) are the right choice there; mean/median imputation learned on
the training split only happens inside the model pipeline (`features.preprocessing`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tmiv_assets.ml.data.ingest import DataValidationError
from tmiv_assets.ml.data.quality import apply_schema, infer_schema
from tmiv_assets.ml.data.spec import CLEANING_OPTIONS, DatasetSpec

DEFAULT_THRESHOLD = {"iqr": 1.5, "zscore": 3.0}


@dataclass(frozen=True)
class CleaningSummary:
    """Shape of the dataset before and after cleaning."""

    rows_before: int
    rows_after: int
    columns_before: int
    columns_after: int


def outlier_bounds(values: np.ndarray, method: str, threshold: float | None) -> tuple[float, float]:
    """(lower, upper) for one numeric column; IQR fences at `threshold` x IQR or mean +/- `threshold` std."""
    threshold = DEFAULT_THRESHOLD[method] if threshold is None else threshold
    values = values[~np.isnan(values)]
    if values.size == 0:
        return -np.inf, np.inf
    if method == "iqr":
        q1, q3 = np.percentile(values, [25, 75])
        return q1 - threshold * (q3 - q1), q3 + threshold * (q3 - q1)
    mean, std = values.mean(), values.std()
    return mean - threshold * std, mean + threshold * std


class DatasetCleaner:
    """Fix types, drop unlabeled and duplicate rows and useless columns; `report_` says what changed.

    Parameters
    ----------
    missing : 'none', 'drop', 'ffill', 'bfill', 'constant', 'mean', 'median' or 'mode'
        What to do with missing feature values; fills follow time order when the spec has a time column.
    fill_value : value used by missing='constant'.
    outliers : 'none', 'iqr' or 'zscore'.
    outlier_action : 'clip' to the bounds or 'drop' the rows.
    outlier_threshold : IQR multiple (default 1.5) or z-score (default 3.0).
    """

    def __init__(self, drop_constant_columns: bool = True, missing: str = "none", fill_value=0,
                 outliers: str = "none", outlier_action: str = "clip", outlier_threshold: float | None = None):
        self.drop_constant_columns = drop_constant_columns
        self.missing = missing
        self.fill_value = fill_value
        self.outliers = outliers
        self.outlier_action = outlier_action
        self.outlier_threshold = outlier_threshold

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> DatasetCleaner:
        """A cleaner configured by the spec's `cleaning:` mapping."""
        return cls(**spec.cleaning)

    def fit_transform(self, frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
        self._validate_params(spec)
        actions: list[dict] = []
        cleaned = frame.copy()
        if spec.dtypes:
            cleaned = apply_schema(cleaned, spec, infer_schema(cleaned, spec))
            actions += [_action("cast", c, len(cleaned), f"declared {k} in the spec") for c, k in spec.dtypes.items()]
        if spec.time_column:
            cleaned[spec.time_column] = self._parse_time(cleaned[spec.time_column], spec)
        for column in cleaned.select_dtypes(include=["object", "string"]).columns:
            cleaned[column] = cleaned[column].str.strip()

        unlabeled = cleaned[spec.target].isna()
        if unlabeled.any():
            cleaned = cleaned[~unlabeled]
            actions.append(_action("drop_rows", spec.target, int(unlabeled.sum()), "target is missing"))
        duplicated = cleaned.duplicated()
        if duplicated.any():
            cleaned = cleaned[~duplicated]
            actions.append(_action("drop_rows", "*", int(duplicated.sum()), "exact duplicate row"))

        protected = {spec.target, *spec.key_columns}
        for column in [c for c in cleaned.columns if c not in protected]:
            distinct = cleaned[column].nunique(dropna=True)
            if distinct == 0:
                actions.append(_action("drop_column", column, len(cleaned), "all values missing"))
                cleaned = cleaned.drop(columns=column)
            elif distinct == 1 and self.drop_constant_columns:
                actions.append(_action("drop_column", column, len(cleaned), "constant value"))
                cleaned = cleaned.drop(columns=column)

        features = [c for c in cleaned.columns if c not in protected]
        cleaned = self._handle_missing(cleaned, features, spec, actions)
        cleaned = self._handle_outliers(cleaned, features, actions)
        self.report_ = pd.DataFrame(actions, columns=["action", "column", "rows", "reason"])
        self.summary_ = CleaningSummary(len(frame), len(cleaned), frame.shape[1], cleaned.shape[1])
        return cleaned.reset_index(drop=True)

    def _validate_params(self, spec: DatasetSpec) -> None:
        for option, allowed in CLEANING_OPTIONS.items():
            if getattr(self, option) not in allowed:
                raise ValueError(f"cleaning option {option}={getattr(self, option)!r} is not one of {allowed}; "
                                 f"fix 'cleaning' in {spec.spec_path}")
        if self.outlier_threshold is not None and self.outlier_threshold <= 0:
            raise ValueError(f"outlier_threshold must be positive, got {self.outlier_threshold}")

    def _handle_missing(self, frame: pd.DataFrame, features: list[str], spec: DatasetSpec,
                        actions: list[dict]) -> pd.DataFrame:
        missing = frame[features].isna().sum()
        missing = missing[missing > 0]
        if self.missing == "none" or missing.empty:
            return frame
        if self.missing == "drop":
            rows = frame[features].isna().any(axis=1)
            actions.append(_action("drop_rows", ", ".join(missing.index), int(rows.sum()), "missing feature value"))
            return frame[~rows]
        if self.missing in ("ffill", "bfill"):
            order = frame[spec.time_column].argsort(kind="stable") if spec.time_column else np.arange(len(frame))
            ordered = frame.iloc[order]
            filled = ordered[features].ffill() if self.missing == "ffill" else ordered[features].bfill()
            frame = frame.copy()
            frame.loc[ordered.index, features] = filled
            for column, count in missing.items():
                left = int(frame[column].isna().sum())
                actions.append(_action(f"fill_{self.missing}", column, int(count) - left,
                                       f"{self.missing} in {'time' if spec.time_column else 'row'} order"))
            return frame
        frame = frame.copy()
        for column, count in missing.items():
            value = self._fill_value(frame[column])
            if value is None:
                continue  # mean/median of a text column: left to the pipeline's imputer
            frame[column] = frame[column].fillna(value)
            actions.append(_action(f"fill_{self.missing}", column, int(count), f"{self.missing} = {value!r}"))
        return frame

    def _fill_value(self, values: pd.Series):
        if self.missing == "constant":
            return self.fill_value
        if self.missing == "mode":
            return values.mode(dropna=True).iloc[0]
        if not pd.api.types.is_numeric_dtype(values):
            return None
        return float(values.mean() if self.missing == "mean" else values.median())

    def _handle_outliers(self, frame: pd.DataFrame, features: list[str], actions: list[dict]) -> pd.DataFrame:
        if self.outliers == "none":
            return frame
        numeric = [c for c in features if pd.api.types.is_numeric_dtype(frame[c])
                   and not pd.api.types.is_bool_dtype(frame[c]) and frame[c].nunique() > 2]
        outside_any = pd.Series(False, index=frame.index)
        frame = frame.copy()
        for column in numeric:
            lower, upper = outlier_bounds(frame[column].to_numpy(dtype=float), self.outliers, self.outlier_threshold)
            outside = (frame[column] < lower) | (frame[column] > upper)
            if not outside.any():
                continue
            reason = f"{self.outliers} bounds [{lower:.4g}, {upper:.4g}]"
            if self.outlier_action == "clip":
                frame[column] = frame[column].clip(lower, upper)
                actions.append(_action("clip_outliers", column, int(outside.sum()), reason))
            else:
                outside_any |= outside
                actions.append(_action("drop_outliers", column, int(outside.sum()), reason))
        return frame[~outside_any]

    @staticmethod
    def _parse_time(values: pd.Series, spec: DatasetSpec) -> pd.Series:
        parsed = pd.to_datetime(values, errors="coerce")
        bad = parsed.isna() & values.notna()
        if bad.any():
            examples = values[bad].astype(str).head(3).tolist()
            raise DataValidationError(
                f"{spec.path}: time column '{spec.time_column}' has {int(bad.sum())} unparseable values "
                f"(e.g. {examples}); use ISO dates like 2013-01-31 10:00",
                spec.path,
                spec.time_column,
            )
        return parsed


def _action(action: str, column: str, rows: int, reason: str) -> dict:
    return {"action": action, "column": column, "rows": rows, "reason": reason}
