"""Group fairness figures checked by hand on small examples, numeric sensitive columns bucketed, settings checked."""

import numpy as np
import pandas as pd
import pytest

from tmiv_assets.ml.explain.fairness import FairnessSettings, assess, sensitive_groups


def test_classification_figures_match_a_hand_count():
    # group a: 4 rows, predicted positive 3 -> selection 0.75; true positives 2 of 2 -> TPR 1.0; FPR 1 of 2 = 0.5
    # group b: 4 rows, predicted positive 1 -> selection 0.25; TPR 1 of 2 = 0.5; FPR 0 of 2 = 0.0
    groups = pd.DataFrame({"group": ["a"] * 4 + ["b"] * 4})
    truth = pd.Series(["yes", "yes", "no", "no", "yes", "yes", "no", "no"])
    predicted = np.array(["yes", "yes", "yes", "no", "yes", "no", "no", "no"])
    [result] = assess(truth, predicted, groups, "binary", positive_class="yes")
    assert result.summary["demographic_parity_difference"] == pytest.approx(0.5)
    assert result.summary["disparate_impact"] == pytest.approx(0.25 / 0.75, abs=1e-4)
    assert result.summary["equal_opportunity_difference"] == pytest.approx(0.5)  # TPR 1.0 vs 0.5
    assert result.summary["equalized_odds_difference"] == pytest.approx(0.5)  # max(TPR gap 0.5, FPR gap 0.5)
    table = result.groups.set_index("group")
    assert table.loc["a", "selection_rate"] == 0.75 and table.loc["b", "true_positive_rate"] == 0.5
    assert table["rows"].tolist() == [4, 4]
    assert len(result.violations) == 2 and "four-fifths" in result.violations[0]
    [loose] = assess(truth, predicted, groups, "binary", "yes", FairnessSettings(0.3, 0.6))
    assert loose.violations == []


def test_regression_compares_group_means_and_errors():
    groups = pd.DataFrame({"gender": ["f", "f", "m", "m"]})
    [result] = assess(pd.Series([10.0, 12.0, 20.0, 22.0]), np.array([11.0, 11.0, 20.0, 24.0]), groups, "regression")
    table = result.groups.set_index("group")
    assert table.loc["f", "mean_prediction"] == 11.0 and table.loc["m", "mean_absolute_error"] == 1.0
    assert result.summary["mean_prediction_ratio"] == pytest.approx(0.5)
    assert result.summary["mean_absolute_error_difference"] == 0.0
    assert result.violations == ["gender: lowest group mean prediction is 0.500 of the highest (< 0.8)"]


def test_numeric_columns_with_many_values_are_cut_into_quartiles():
    ages = pd.Series(np.r_[np.arange(20, 60, dtype=float), [np.nan]], name="age")
    groups, grouping = sensitive_groups(ages)
    assert grouping == "quartiles" and groups.nunique() == 5  # four quartiles and the missing ones
    assert (groups == "missing").sum() == 1
    classes, grouping = sensitive_groups(pd.Series([1, 2, 3, 1], name="passengerClass"))
    assert grouping == "values" and sorted(classes.unique()) == ["1", "2", "3"]


def test_settings_name_bad_values():
    with pytest.raises(ValueError, match="unknown fairness settings"):
        FairnessSettings.from_mapping({"min_parity": 0.8})
    with pytest.raises(ValueError, match="min_disparate_impact must be a number"):
        FairnessSettings.from_mapping({"min_disparate_impact": 1.5})
