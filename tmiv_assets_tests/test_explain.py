"""SHAP explanations: exact and additive in the model's output space for every model family and for the weighted
bag of fold models the AutoML search ends with; the plots show the explained class."""

import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMClassifier
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBRegressor

from tmiv_assets.ml.automl.catalog import XGBLabelClassifier
from tmiv_assets.ml.automl.ensembles import FoldBagClassifier, FoldBagRegressor
from tmiv_assets.ml.explain.importance import input_importance
from tmiv_assets.ml.explain.shap_values import explain_pipeline


def _pipeline(estimator, X: pd.DataFrame) -> Pipeline:
    preprocess = ColumnTransformer([("scaled", StandardScaler(), list(X.columns))], verbose_feature_names_out=False)
    preprocess.fit(X)
    return Pipeline([("model", Pipeline([("preprocess", preprocess), ("estimator", estimator)]))])


@pytest.fixture(scope="module")
def cancer() -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    data = load_breast_cancer(as_frame=True)
    X, y = data.data.iloc[:300, :8], data.target.iloc[:300]
    return X, y, StandardScaler().fit_transform(X)


def test_a_bag_of_every_classifier_family_is_explained_exactly(cancer):
    X, y, encoded = cancer
    halves = [np.arange(0, 300, 2), np.arange(1, 300, 2)]

    def folds(make):
        return [make().fit(encoded[rows], y.to_numpy()[rows]) for rows in halves]

    bag = FoldBagClassifier([
        ("lightgbm", 0.3, folds(lambda: LGBMClassifier(n_estimators=30, verbose=-1, random_state=0))),
        ("xgboost", 0.3, folds(lambda: XGBLabelClassifier(n_estimators=30, random_state=0))),
        ("random_forest", 0.2, folds(lambda: RandomForestClassifier(n_estimators=20, random_state=0))),
        ("linear", 0.1, folds(lambda: LogisticRegression())),
        ("knn", 0.1, folds(lambda: KNeighborsClassifier())),
    ], classes=np.array([0, 1]))
    report = explain_pipeline(_pipeline(bag, X), X, positive_class=1, sample_size=40)
    assert report.additivity_error < 1e-6  # values + base value = the bag's probability, every row and class
    assert len(report.methods) == 10 and {"tree", "permutation"} <= {m.split(" ")[0] for m in report.methods.values()}
    assert report.explained == "probability of 1" and report.n_rows == 40
    values = report.values
    assert set(values["explained"]) == {"probability of 0", "probability of 1"}
    first, second = (values[values["explained"] == f"probability of {c}"].reset_index(drop=True) for c in (0, 1))
    np.testing.assert_allclose(first[list(X.columns)], -second[list(X.columns)], atol=1e-9)  # probabilities sum to 1
    assert set(report.importance["feature"]) == set(X.columns)
    assert report.importance["share"].sum() == pytest.approx(1.0)
    # The beeswarm shows one class's SHAP values per feature, not the interaction grid of a 3-D array.
    axis = report.figures["beeswarm"].axes[0]
    assert "SHAP value" in axis.get_xlabel() and "interaction" not in axis.get_xlabel().lower()
    assert {"beeswarm", "bar", "waterfall", "dependence"} == set(report.figures)


def test_the_positive_class_of_the_spec_is_the_one_explained(cancer):
    X, y, encoded = cancer
    model = LGBMClassifier(n_estimators=20, verbose=-1, random_state=0).fit(encoded, y)
    report = explain_pipeline(_pipeline(model, X), X, positive_class=0, sample_size=30)
    assert report.explained == "probability of 0" and report.additivity_error < 1e-6


def test_regression_bags_and_linear_models_are_exact():
    data = load_diabetes(as_frame=True)
    X, y = data.data, data.target
    encoded = StandardScaler().fit_transform(X)
    bag = FoldBagRegressor([
        ("linear", 0.4, [Ridge().fit(encoded, y)]),
        ("xgboost", 0.4, [XGBRegressor(n_estimators=40, random_state=0).fit(encoded, y)]),
        ("random_forest", 0.2, [RandomForestRegressor(n_estimators=20, random_state=0).fit(encoded, y)]),
    ])
    report = explain_pipeline(_pipeline(bag, X), X, sample_size=50)
    assert report.additivity_error < 1e-6 * y.abs().max() and report.explained == "prediction"
    assert report.methods["0:Ridge"] == "linear" and report.methods["1:XGBRegressor"] == "tree"
    assert report.importance["feature"].iloc[0] in {"bmi", "s5"}  # the known strongest predictors


def test_permutation_importance_ranks_the_informative_input_column_first():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"signal": rng.normal(size=400), "noise": rng.normal(size=400)})
    y = pd.Series(np.where(X["signal"] + 0.1 * rng.normal(size=400) > 0, "yes", "no"))
    model = Pipeline([("estimator", LogisticRegression())]).fit(X, y)
    table = input_importance(model, X, y, "binary", "roc_auc", positive_class="yes", repeats=3)
    assert table["feature"].tolist() == ["signal", "noise"]
    assert table.loc[0, "importance_mean"] > 0.3 and abs(table.loc[1, "importance_mean"]) < 0.02
    regression = Pipeline([("estimator", Ridge())]).fit(X, X["signal"] * 3)
    rmse = input_importance(regression, X, X["signal"] * 3, "regression", "rmse", repeats=3)
    assert rmse.loc[0, "feature"] == "signal" and rmse.loc[0, "importance_mean"] > 1  # RMSE grows: a positive drop


def test_lime_explains_rows_with_categorical_and_missing_inputs_reproducibly():
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    from tmiv_assets.ml.explain.lime_explanations import explain_rows

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"color": rng.choice(["red", "green", "blue"], 300), "size": rng.normal(size=300),
                      "noise": rng.normal(size=300)})
    X.loc[:10, "size"] = np.nan
    y = pd.Series(np.where((X["color"] == "red") | (X["size"].fillna(0) > 1), "yes", "no"))
    encode = ColumnTransformer([("color", OneHotEncoder(handle_unknown="ignore"), ["color"]),
                                ("numbers", SimpleImputer(), ["size", "noise"])])
    model = Pipeline([("encode", encode), ("estimator", LogisticRegression())]).fit(X, y)
    [first, second] = explain_rows(model, X, X.iloc[[0, 5]], classifier=True, positive_class="yes", features=2,
                                   repeats=3, samples=500)
    assert len(first.weights) == 2 and first.explained == "probability of yes"
    assert 0 <= first.stability <= 1 and first.prediction in {"yes", "no"}
    assert set(first.weights["feature"]) <= {"color", "size", "noise"}
    for condition, feature in zip(first.weights["condition"], first.weights["feature"], strict=True):
        assert condition.startswith("color=") if feature == "color" else feature in condition  # categories by name
    again = explain_rows(model, X, X.iloc[[0]], classifier=True, positive_class="yes", features=2, samples=500)[0]
    pd.testing.assert_frame_equal(first.weights, again.weights)  # seeded
    assert "color" in set(first.weights["feature"]) | set(second.weights["feature"])  # the rule's main input
