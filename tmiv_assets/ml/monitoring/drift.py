"""Data drift of an incoming batch against the training data, computed by Evidently."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
from evidently import Report
from evidently.core.report import Snapshot
from evidently.presets import DataDriftPreset

_VALUE_DRIFT = re.compile(r"^ValueDrift\(")


@dataclass(frozen=True)
class DriftReport:
    """Per-column drift scores and the overall verdict for one batch."""

    per_column: pd.DataFrame
    """Columns: column, method, score, threshold, drifted."""
    drifted_share: float
    """Share of compared columns that drifted."""
    drift_share_threshold: float
    drift_detected: bool
    """True when drifted_share reaches drift_share_threshold."""
    snapshot: Snapshot
    """The Evidently snapshot; `snapshot.get_html_str(as_iframe=False)` is the full HTML report."""


class DriftDetector:
    """Compare batches with a reference frame column by column.

    Evidently picks the test per column from type and size (Wasserstein / Jensen-Shannon distances
    for large samples, K-S / chi-square p-values for small ones). A batch drifts when at least
    `drift_share` of its columns do.
    """

    def __init__(self, drift_share: float = 0.3):
        self.drift_share = drift_share

    def fit(self, reference: pd.DataFrame) -> DriftDetector:
        if reference.empty:
            raise ValueError("reference data is empty; drift needs the rows the model was trained on")
        self.reference_ = reference
        self.columns_ = list(reference.columns)
        return self

    def detect(self, current: pd.DataFrame) -> DriftReport:
        missing = [c for c in self.columns_ if c not in current.columns]
        if missing:
            raise ValueError(f"batch lacks reference columns {missing}; it cannot be compared")
        report = Report([DataDriftPreset(drift_share=self.drift_share)])
        snapshot = report.run(current_data=current[self.columns_], reference_data=self.reference_)
        per_column = _per_column(snapshot)
        share = float(per_column["drifted"].mean())
        return DriftReport(per_column, share, self.drift_share, share >= self.drift_share, snapshot)


def _per_column(snapshot: Snapshot) -> pd.DataFrame:
    rows = []
    for metric in snapshot.dict()["metrics"]:
        if not _VALUE_DRIFT.match(metric["metric_name"]):
            continue
        config, score = metric["config"], float(metric["value"])
        method, threshold = config["method"], float(config["threshold"])
        # p-value tests drift when the p-value is small; distances drift when they are large.
        drifted = score < threshold if "p_value" in method else score >= threshold
        rows.append({"column": config["column"], "method": method, "score": score,
                     "threshold": threshold, "drifted": bool(drifted)})
    return pd.DataFrame(rows, columns=["column", "method", "score", "threshold", "drifted"])
