"""Group fairness of a model's predictions per sensitive column, on fairlearn's metrics.

Classification (the positive class as "selected"): demographic parity difference and ratio, the four-fifths rule's
disparate impact (the lowest group selection rate over the highest, which is fairlearn's demographic parity
ratio), equalized odds difference (the larger of the true- and false-positive-rate gaps), equal opportunity
difference (the true-positive-rate gap), and per group: rows, selection rate, true- and false-positive rate,
accuracy. Regression: per group rows, mean prediction, mean actual and mean absolute error; the disparate-impact
analogue is the lowest group mean prediction over the highest (for a non-negative target), and the error gap is
the largest MAE difference.

Numeric sensitive columns with more than MAX_GROUPS distinct values (an age, say) are cut into quartiles, labelled by
their ranges; missing values form their own group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, mean_absolute_error

from tmiv_assets.ml.monitoring.settings import SpecSettings

MAX_GROUPS = 8
BUCKETS = 4


@dataclass(frozen=True)
class FairnessSettings(SpecSettings):
    """Bounds the fairness check holds a model to; every field can be set in the dataset spec's `fairness`."""

    KIND = "fairness"

    min_disparate_impact: float = 0.8
    """The four-fifths rule: the least-selected group's rate at least 0.8 of the most-selected's."""
    max_equalized_odds_difference: float = 0.2

    def __post_init__(self):
        for name, low in (("min_disparate_impact", 0.0), ("max_equalized_odds_difference", -1e-12)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= 1:
                raise ValueError(f"fairness {name} must be a number in ({max(low, 0)}, 1], got {value!r}")


@dataclass(frozen=True)
class ColumnFairness:
    column: str
    grouping: str
    """How groups were formed: 'values' or 'quartiles'."""
    groups: pd.DataFrame
    """One row per group with its metrics."""
    summary: dict[str, float]
    violations: list[str]


def sensitive_groups(values: pd.Series) -> tuple[pd.Series, str]:
    """The group of each row: the value itself, or its quartile for a numeric column with many values."""
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > MAX_GROUPS:
        buckets = pd.qcut(values, BUCKETS, duplicates="drop")
        labels = buckets.astype(str).where(values.notna(), "missing")
        return labels.rename(values.name), "quartiles"
    return values.astype(str).where(values.notna(), "missing").rename(values.name), "values"


def assess(y_true: pd.Series, y_pred: np.ndarray, sensitive: pd.DataFrame, task: str, positive_class=None,
           settings: FairnessSettings | None = None) -> list[ColumnFairness]:
    """Fairness figures per column of `sensitive` (aligned with y_true and y_pred)."""
    settings = settings or FairnessSettings()
    y_true, y_pred = pd.Series(np.asarray(y_true)), pd.Series(np.asarray(y_pred))
    results = []
    for column in sensitive.columns:
        groups, grouping = sensitive_groups(sensitive[column].reset_index(drop=True))
        if task == "regression":
            results.append(_regression(column, grouping, y_true, y_pred, groups, settings))
        else:
            results.append(_classification(column, grouping, y_true, y_pred, groups, positive_class, settings))
    return results


def _classification(column: str, grouping: str, y_true: pd.Series, y_pred: pd.Series, groups: pd.Series,
                    positive_class, settings: FairnessSettings) -> ColumnFairness:
    positive = positive_class if positive_class is not None else sorted(y_true.unique())[-1]
    truth = (y_true.astype(str) == str(positive)).astype(int)
    predicted = (y_pred.astype(str) == str(positive)).astype(int)
    frame = MetricFrame(metrics={"rows": count, "selection_rate": selection_rate,
                                 "true_positive_rate": true_positive_rate, "false_positive_rate": false_positive_rate,
                                 "accuracy": accuracy_score},
                        y_true=truth, y_pred=predicted, sensitive_features=groups)
    summary = {
        "demographic_parity_difference": demographic_parity_difference(truth, predicted, sensitive_features=groups),
        "demographic_parity_ratio": demographic_parity_ratio(truth, predicted, sensitive_features=groups),
        "equalized_odds_difference": equalized_odds_difference(truth, predicted, sensitive_features=groups),
        "equal_opportunity_difference": equal_opportunity_difference(truth, predicted, sensitive_features=groups),
    }
    summary = {key: round(float(value), 4) for key, value in summary.items()}
    summary["disparate_impact"] = summary["demographic_parity_ratio"]
    violations = []
    if summary["disparate_impact"] < settings.min_disparate_impact:
        violations.append(f"{column}: disparate impact {summary['disparate_impact']:.3f} < "
                          f"{settings.min_disparate_impact} (four-fifths rule)")
    if summary["equalized_odds_difference"] > settings.max_equalized_odds_difference:
        violations.append(f"{column}: equalized odds difference {summary['equalized_odds_difference']:.3f} > "
                          f"{settings.max_equalized_odds_difference}")
    return ColumnFairness(column, grouping, _table(frame), summary, violations)


def _regression(column: str, grouping: str, y_true: pd.Series, y_pred: pd.Series, groups: pd.Series,
                settings: FairnessSettings) -> ColumnFairness:
    frame = MetricFrame(metrics={"rows": count, "mean_prediction": lambda t, p: float(np.mean(p)),
                                 "mean_actual": lambda t, p: float(np.mean(t)),
                                 "mean_absolute_error": mean_absolute_error},
                        y_true=y_true, y_pred=y_pred, sensitive_features=groups)
    by_group = frame.by_group
    means = by_group["mean_prediction"]
    ratio = float(means.min() / means.max()) if (means > 0).all() else float("nan")
    summary = {"mean_prediction_ratio": round(ratio, 4),
               "mean_absolute_error_difference": round(float(by_group["mean_absolute_error"].max()
                                                             - by_group["mean_absolute_error"].min()), 4)}
    violations = []
    if ratio == ratio and ratio < settings.min_disparate_impact:
        violations.append(f"{column}: lowest group mean prediction is {ratio:.3f} of the highest "
                          f"(< {settings.min_disparate_impact})")
    return ColumnFairness(column, grouping, _table(frame), summary, violations)


def _table(frame: MetricFrame) -> pd.DataFrame:
    table = frame.by_group.reset_index()
    table = table.rename(columns={table.columns[0]: "group"})  # the index is named after the sensitive column
    table["rows"] = table["rows"].astype(int)
    return table.round(4)
