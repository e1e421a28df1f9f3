"""A/B tests between two model versions: stable arm assignment by id, and whether the difference is real.

Arms come from a hash of (salt, id), so a row keeps its arm across re-runs and processes. Accuracy-like
comparisons use the two-proportion z-test; error-like ones a seeded bootstrap interval of the difference
in mean absolute error. The sample size still needed is for the configured minimum detectable effect.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize, proportions_ztest

ARMS = ("champion", "challenger")


def assign_arms(ids: pd.Series, challenger_share: float, salt: str) -> np.ndarray:
    """'challenger' for about `challenger_share` of the ids, 'champion' for the rest; the same id always
    lands in the same arm for the same salt."""
    if not 0 < challenger_share < 1:
        raise ValueError(f"challenger_share {challenger_share} must be between 0 and 1 (exclusive)")
    buckets = np.array([int.from_bytes(hashlib.sha256(f"{salt}:{i}".encode()).digest()[:8], "big")
                        for i in ids.astype(str)], dtype=np.uint64)
    return np.where(buckets / 2.0**64 < challenger_share, ARMS[1], ARMS[0])


@dataclass(frozen=True)
class ArmComparison:
    rows: dict[str, int]
    metric: str
    values: dict[str, float]
    """The metric per arm."""
    p_value: float | None
    """Two-proportion z-test (accuracy); None for the bootstrap comparison."""
    interval: tuple[float, float]
    """95% interval of challenger minus champion (accuracy gain, or reduction in mean absolute error)."""
    significant: bool
    rows_needed_per_arm: int
    recommendation: str
    winner: str | None
    """The significantly better arm, or None."""


def compare_arms(arms: pd.Series, truth: pd.Series, predictions: pd.Series, classification: bool,
                 min_detectable_effect: float = 0.02, alpha: float = 0.05, power: float = 0.8,
                 seed: int = 0) -> ArmComparison:
    """Champion against challenger on labelled rows (all three series aligned)."""
    rows = {arm: int((arms == arm).sum()) for arm in ARMS}
    if min(rows.values()) < 2:
        raise ValueError(f"each arm needs labelled rows to compare, got {rows}")
    if classification:
        correct = (truth.astype(str).to_numpy() == predictions.astype(str).to_numpy())
        hits = [int(correct[arms == arm].sum()) for arm in ARMS]
        values = {arm: hits[i] / rows[arm] for i, arm in enumerate(ARMS)}
        _, p_value = proportions_ztest(hits[::-1], [rows["challenger"], rows["champion"]])
        gain = values["challenger"] - values["champion"]
        spread = 1.96 * np.sqrt(sum(v * (1 - v) / rows[a] for a, v in values.items()))
        interval, significant, metric = (gain - spread, gain + spread), bool(p_value < alpha), "accuracy"
        base = min(max(values["champion"], 1e-6), 1 - 1e-6)
        effect = abs(proportion_effectsize(min(base + min_detectable_effect, 1 - 1e-6), base))
    else:
        errors = np.abs(truth.to_numpy(dtype=float) - predictions.to_numpy(dtype=float))
        by_arm = {arm: errors[(arms == arm).to_numpy()] for arm in ARMS}
        values = {arm: float(e.mean()) for arm, e in by_arm.items()}
        rng = np.random.default_rng(seed)
        draws = [rng.choice(by_arm["champion"], rows["champion"]).mean()
                 - rng.choice(by_arm["challenger"], rows["challenger"]).mean() for _ in range(2000)]
        interval = (float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5)))
        p_value, significant, metric = None, bool(interval[0] > 0 or interval[1] < 0), "mae"
        gain = values["champion"] - values["challenger"]
        effect = min_detectable_effect / max(float(np.std(errors)), 1e-12)
    needed = int(np.ceil(NormalIndPower().solve_power(effect_size=effect, alpha=alpha, power=power)))
    if significant:
        recommendation = ("promote the challenger" if gain > 0 else "keep the champion") + \
            f": the difference is significant at {alpha:g}"
    else:
        more = max(0, needed - min(rows.values()))
        recommendation = (f"keep collecting: {more} more labelled rows per arm to detect a {min_detectable_effect:g} "
                          "difference" if more else "no detectable difference: keep the champion")
    winner = (ARMS[1] if gain > 0 else ARMS[0]) if significant else None
    return ArmComparison(rows, metric, values, None if p_value is None else float(p_value),
                         (float(interval[0]), float(interval[1])), significant, needed, recommendation, winner)
