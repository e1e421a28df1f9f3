"""Wide data: the vectorised correlation filter keeps the old loop's results; rank_features copes with many columns."""

import numpy as np
import pandas as pd
import pytest

from tmiv_assets.ml.features import selection
from tmiv_assets.ml.features.selection import FeatureSelector, rank_features


def reference_correlated(X: pd.DataFrame, threshold: float) -> tuple[pd.Series, list[str]]:
    """The filter as it was: drop a column iff |r| with some earlier kept column is above the threshold."""
    correlation = X.corr().abs().fillna(0.0)
    np.fill_diagonal(correlation.values, 0.0)
    dropped: list[str] = []
    for position, column in enumerate(X.columns):
        earlier_kept = [c for c in X.columns[:position] if c not in dropped]
        if earlier_kept and correlation.loc[column, earlier_kept].max() > threshold:
            dropped.append(column)
    return correlation.max(axis=1), dropped


def planted(seed: int, rows: int = 64) -> pd.DataFrame:
    """Noise, columns sharing latent factors (many pairs above any threshold), a chain a ~ b ~ c with a and c
    apart, constant columns (one of 0.1s, whose float mean is inexact) and +-1 columns whose |r| is exactly 0.75."""
    rng = np.random.default_rng(seed)
    columns = {f"noise{i}": rng.normal(size=rows) for i in range(20)}
    factors = rng.normal(size=(rows, 3))
    for i in range(30):
        columns[f"factor{i}"] = factors[:, i % 3] * rng.choice([-1, 1]) + rng.uniform(0.05, 1.0) * rng.normal(size=rows)
    u, v = rng.normal(size=rows), rng.normal(size=rows)
    v = 0.5 * u + np.sqrt(0.75) * v
    columns |= {"chain_a": u, "chain_b": u + v, "chain_c": v, "constant": np.full(rows, 0.1), "zero": np.zeros(rows)}
    # Zero-mean +-1 columns: every step of both computations is exact, so these pairs sit exactly on 0.75.
    tie = np.repeat([1.0, -1.0], rows // 2)
    flipped = tie.copy()
    flipped[[0, 1, 2, 3, rows // 2, rows // 2 + 1, rows // 2 + 2, rows // 2 + 3]] *= -1
    columns |= {"tie_a": tie, "tie_b": flipped, "tie_c": 7 - 3 * flipped}
    order = rng.permutation(len(columns))
    return pd.DataFrame(columns).iloc[:, order]


@pytest.mark.parametrize("block", [1024, 7])  # 7: many column blocks, so pairs straddle block boundaries
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.5, 0.75, 0.8, 0.95])
def test_vectorised_filter_matches_the_reference_loop(monkeypatch, block, seed, threshold):
    monkeypatch.setattr(selection, "CORRELATION_BLOCK", block)
    X = planted(seed)
    max_abs, dropped = FeatureSelector(correlation_threshold=threshold)._correlated(X)
    expected_max, expected_dropped = reference_correlated(X, threshold)
    assert dropped == expected_dropped
    pd.testing.assert_series_equal(max_abs, expected_max, check_exact=False, rtol=0, atol=1e-12, check_names=False)
    assert max_abs["constant"] == max_abs["zero"] == 0 and "constant" not in dropped
    if threshold == 0.75:  # a tie is not above the threshold; tie_b and tie_c (r = -1) lose the later one
        assert max_abs["tie_a"] == 0.75 and "tie_a" not in dropped and len({"tie_b", "tie_c"} & set(dropped)) == 1


def test_a_column_correlated_only_with_a_dropped_column_is_kept():
    X = planted(0)[["chain_a", "chain_b", "chain_c"]]
    max_abs, dropped = FeatureSelector(correlation_threshold=0.8)._correlated(X)
    assert max_abs.min() > 0.8 and X["chain_a"].corr(X["chain_c"]) < 0.8
    assert dropped == ["chain_b"] == reference_correlated(X, 0.8)[1]


def wide_frame(rows: int, columns: int) -> tuple[pd.DataFrame, list[str]]:
    """Ten informative columns, noise, near-duplicates (some negated) after their sources, constant columns."""
    rng = np.random.default_rng(0)
    informative, noise = rng.normal(size=(rows, 10)), rng.normal(size=(rows, columns - 60))
    sources = np.hstack([informative, noise[:, :30]])
    duplicates = rng.choice([-1, 1], 40) * sources + 0.05 * rng.normal(size=sources.shape)
    names = ([f"informative{i}" for i in range(10)] + [f"noise{i}" for i in range(columns - 60)]
             + [f"duplicate{i}" for i in range(40)] + [f"constant{i}" for i in range(10)])
    frame = pd.DataFrame(np.hstack([informative, noise, duplicates, np.ones((rows, 10))]), columns=names)
    frame["target"] = (informative @ rng.normal(size=10) > 0).astype(int)
    return frame, names[-50:-10]


def test_rank_features_on_a_wide_frame_drops_the_planted_duplicates():
    frame, duplicates = wide_frame(200, 2000)
    selector = rank_features(frame, "target", "binary")
    ranking = selector.ranking_.set_index("feature")
    filtered = ranking.index[~ranking["passed_filters"]]
    assert set(filtered) == set(duplicates) | {f"constant{i}" for i in range(10)}
    assert not set(selector.selected_features_) & set(filtered)
    assert sum(f"informative{i}" in selector.selected_features_ for i in range(10)) >= 8
