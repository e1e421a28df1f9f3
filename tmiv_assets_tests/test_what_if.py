"""What-if analysis: counterfactuals that really flip the prediction with the fewest changes to actionable columns
within the training ranges, or say none was found; partial dependence through scikit-learn's inspection module."""

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tmiv_assets.ml.explain.what_if import WhatIfSettings, analyse


def _loans(rows: int = 800) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"income": rng.normal(50, 12, rows).round(1), "debt": rng.normal(20, 8, rows).round(1),
                      "region": rng.choice(["north", "south", "west"], rows),
                      "age": rng.integers(20, 70, rows)})
    score = (X["income"] - 50) / 12 - (X["debt"] - 20) / 8 + (X["region"] == "north") * 1.0
    y = pd.Series(np.where(score + rng.normal(0, 0.7, rows) > 0, "approved", "declined"), name="decision")
    return X, y


def _model(X: pd.DataFrame, y: pd.Series, estimator) -> Pipeline:
    preprocess = ColumnTransformer([("numbers", StandardScaler(), ["income", "debt", "age"]),
                                    ("region", OneHotEncoder(handle_unknown="ignore"), ["region"])])
    return Pipeline([("preprocess", preprocess), ("estimator", estimator)]).fit(X, y)


@pytest.fixture(scope="module")
def loans():
    X, y = _loans()
    return X.iloc[:600], y.iloc[:600], X.iloc[600:], y.iloc[600:]


def test_counterfactuals_flip_rejected_and_misclassified_rows_within_the_training_ranges(loans):
    X_train, y_train, X_test, y_test = loans
    model = _model(X_train, y_train, LogisticRegression())
    report = analyse(model, X_test, y_test, X_train, "binary", "approved", ["income", "region"], ["age"],
                     WhatIfSettings(max_changes=2))
    table = report.counterfactuals
    assert set(table["reason"].str.split(":").str[0]) == {"misclassified", "rejected"} and table["found"].all()
    # Verified independently: the changed rows predict the goal's class, and only actionable columns changed.
    again = model.predict(report.changed_rows)
    assert (again == table.set_index("row").loc[report.changed_rows.index, "new_prediction"]).all()
    assert (again != table.set_index("row").loc[report.changed_rows.index, "prediction"]).all()
    rejected = table[table["reason"].str.startswith("rejected")]
    assert (rejected["new_prediction"] == "approved").all()
    original = X_test.loc[report.changed_rows.index]
    assert (report.changed_rows["age"] == original["age"]).all()  # frozen
    for column in ("income", "debt"):
        assert report.changed_rows[column].between(X_train[column].min(), X_train[column].max()).all()
    # Fewest changes: a row one income step from approval changes one column, not two.
    assert (table["changes"].str.count("->") <= 2).all() and (table["changes"].str.count("->") == 1).any()
    assert report.explained == "probability of declined"  # scikit-learn plots the second class
    income = report.curves[report.curves["feature"] == "income"]
    assert income["average"].is_monotonic_decreasing  # more income, less often declined
    assert len(report.figure.axes) >= 2


def test_a_row_that_cannot_be_flipped_says_none_found(loans):
    X_train, y_train, X_test, y_test = loans
    model = _model(X_train, y_train, LogisticRegression())
    frozen = ["income", "debt", "region"]  # only age may change, and the model barely uses it
    report = analyse(model, X_test, y_test, X_train, "binary", "approved", ["age"], frozen,
                     WhatIfSettings(max_changes=1))
    assert not report.counterfactuals["found"].any() and report.changed_rows.empty
    assert report.counterfactuals["changes"].str.startswith("none found within the training rows' ranges").all()


def test_regression_raises_low_predictions_to_the_median(loans):
    X_train, _, X_test, _ = loans
    target = X_train["income"] * 2 - X_train["debt"]
    model = _model(X_train, target, LinearRegression())
    report = analyse(model, X_test, target.iloc[:0].reindex(X_test.index), X_train, "regression", None,
                     ["income"], ["age", "region"], WhatIfSettings())
    median = float(np.median(model.predict(X_train)))
    assert len(report.counterfactuals) == 3 and report.counterfactuals["found"].all()
    assert (model.predict(report.changed_rows) >= median - 1e-9).all()
    assert report.explained == "prediction"


def test_what_if_settings_are_checked():
    assert WhatIfSettings.from_mapping({"immutable_columns": ["age"]}).immutable_columns == ("age",)
    with pytest.raises(ValueError, match="unknown what_if settings"):
        WhatIfSettings.from_mapping({"immutable": ["age"]})
    with pytest.raises(ValueError, match="must be a list of column names"):
        WhatIfSettings.from_mapping({"immutable_columns": "age"})
