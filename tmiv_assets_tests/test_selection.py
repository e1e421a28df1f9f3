"""Feature selection: filters, rankers, votes, the ranking table and use inside a Pipeline."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tmiv_assets.ml.features.selection import FeatureSelector


def informative(task: str, n: int = 150) -> tuple[pd.DataFrame, pd.Series]:
    """Two informative features, one near-copy of the first, one constant and three noise columns."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"signal": rng.normal(size=n), "signal2": rng.normal(size=n)})
    X["copy"] = X["signal"] + 1e-3 * rng.normal(size=n)
    X["constant"] = 1.0
    for i in range(3):
        X[f"noise{i}"] = rng.normal(size=n)
    score = 2 * X["signal"] - 1.5 * X["signal2"]
    y = (score > 0).astype(int) if task == "binary" else score + 0.1 * rng.normal(size=n)
    return X, pd.Series(y, name="y")


@pytest.mark.parametrize("task", ["binary", "regression"])
@pytest.mark.parametrize("method", ["mutual_info", "rfe", "l1", "tree"])
def test_each_ranker_finds_the_signal(task, method):
    X, y = informative(task)
    selector = FeatureSelector(task=task, methods=("variance", "correlation", method), n_features=2).fit(X, y)
    assert selector.selected_features_ == ["signal", "signal2"]
    ranking = selector.ranking_.set_index("feature")
    assert not ranking.loc["constant", "passed_filters"] and not ranking.loc["copy", "passed_filters"]
    assert ranking.loc["copy", "max_abs_correlation"] > 0.99 and ranking.loc["constant", "variance"] == 0
    assert method in ranking.columns


def test_votes_combine_rankers():
    X, y = informative("binary")
    selector = FeatureSelector(methods=("mutual_info", "l1", "tree"), n_features=3, min_votes=3).fit(X, y)
    ranking = selector.ranking_.set_index("feature")
    assert set(selector.selected_features_) >= {"signal", "signal2"}
    assert (ranking.loc[selector.selected_features_, "votes"] == 3).all()
    assert list(selector.ranking_.columns[:2]) == ["feature", "passed_filters"]
    assert selector.ranking_["selected"].iloc[: len(selector.selected_features_)].all()


def test_filters_alone_keep_everything_that_passes():
    X, y = informative("binary")
    selector = FeatureSelector(methods=("variance",)).fit(X, y)
    assert selector.selected_features_ == [c for c in X.columns if c != "constant"]
    assert list(selector.transform(X).columns) == selector.selected_features_


def test_selector_is_reproducible_and_works_in_a_pipeline():
    X, y = informative("binary")
    first = FeatureSelector(methods=("mutual_info", "tree"), random_state=3).fit(X, y).ranking_
    second = FeatureSelector(methods=("mutual_info", "tree"), random_state=3).fit(X, y).ranking_
    pd.testing.assert_frame_equal(first, second)
    model = Pipeline([("select", FeatureSelector(n_features=2)), ("model", LogisticRegression())]).fit(X, y)
    assert list(model.named_steps["select"].get_feature_names_out()) == ["signal", "signal2"]
    assert model.score(X, y) > 0.9


@pytest.mark.parametrize(
    ("X", "options", "message"),
    [
        (pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}), {}, r"encode \['b'\] first"),
        (pd.DataFrame({"a": [1.0, np.inf]}), {}, "infinite values"),
        (pd.DataFrame({"a": [1.0, 2.0]}), {"methods": ("magic",)}, "unknown selection methods"),
        (pd.DataFrame({"a": [1.0, 2.0]}), {"task": "clustering"}, "task 'clustering'"),
    ],
)
def test_bad_input_is_rejected_in_fit(X, options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        FeatureSelector(**options).fit(X, pd.Series([0, 1]))
