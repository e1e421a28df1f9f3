"""Cleaning that is safe before the train/test split: no statistic learned from the rows.

Imputation and scaling learn from data, so they live in the model pipeline and are fitted on the
training split only (see `tmiv_assets.ml.training.build_preprocessor`).
"""

from __future__ import annotations

import pandas as pd

from tmiv_assets.ml.ingest import DataValidationError
from tmiv_assets.ml.spec import DatasetSpec


class DatasetCleaner:
    """Fix types, drop unlabeled and duplicate rows and useless columns; `report_` says what changed."""

    def __init__(self, drop_constant_columns: bool = True):
        self.drop_constant_columns = drop_constant_columns

    def fit_transform(self, frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
        actions: list[dict] = []
        cleaned = frame.copy()
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

        self.report_ = pd.DataFrame(actions, columns=["action", "column", "rows", "reason"])
        return cleaned.reset_index(drop=True)

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
