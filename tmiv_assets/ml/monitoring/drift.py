"""Evidently's data-drift report of an incoming batch against the training data, for people to read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

_VALUE_DRIFT = re.compile(r"^ValueDrift\(")


EVIDENTLY_MAX_ROWS = 50_000  # Evidently renders the report from a seeded sample of larger frames


@dataclass(frozen=True)
class EvidentlyReport:
    """Evidently's per-column verdicts and the snapshot behind its HTML report."""

    per_column: pd.DataFrame
    """Columns: column, method, score, threshold, drifted."""
    drifted_share: float
    snapshot: Snapshot
    """`snapshot.get_html_str(as_iframe=False)` is the full HTML report."""


def evidently_report(reference: pd.DataFrame, current: pd.DataFrame, drift_share: float = 0.3,
                     seed: int = 0, sample: bool = True) -> EvidentlyReport:
    """Evidently's DataDriftPreset on the two frames (with `sample`, a seeded sample of each beyond
    EVIDENTLY_MAX_ROWS rows).

    Evidently picks the test per column from type and size (Wasserstein / Jensen-Shannon distances for
    large samples, K-S / chi-square p-values for small ones); the platform's verdict comes from
    `statistics.DriftStatistics`, this is the report a person reads.
    """
    if reference.empty:
        raise ValueError("reference data is empty; drift needs the rows the model was trained on")
    missing = [c for c in reference.columns if c not in current.columns]
    if missing:
        raise ValueError(f"batch lacks reference columns {missing}; it cannot be compared")
    # Imported here: Evidently takes about 2.5 s to import, which every process that loads the project (the UI's
    # code server, each CLI call, each step) would otherwise pay.
    from evidently import Report
    from evidently.presets import DataDriftPreset

    current = current[list(reference.columns)]
    if sample:
        reference, current = _sample(reference, seed), _sample(current, seed)
    snapshot = Report([DataDriftPreset(drift_share=drift_share)]).run(current_data=current,
                                                                    reference_data=reference)
    per_column = _per_column(snapshot)
    return EvidentlyReport(per_column, float(per_column["drifted"].mean()), snapshot)


def _sample(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    return frame.sample(n=EVIDENTLY_MAX_ROWS, random_state=seed) if len(frame) > EVIDENTLY_MAX_ROWS else frame


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
