"""SHAP explanations: exact and additive in the model's output space for every model family and for the weighted
bag of fold models the AutoML search ends with; the plots show the explained class."""

import numpy as np
import pandas as pd
import pytest
import shap
import xgboost
from catboost import CatBoostClassifier
from lightgbm import LGBMClassifier
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine, make_classification, make_regression
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBRegressor

from tmiv_assets.ml.automl.catalog import XGBLabelClassifier
from tmiv_assets.ml.automl.ensembles import FoldBagClassifier, FoldBagRegressor
from tmiv_assets.ml.explain.contributions import (
    ensemble_contributions,
    margin_contributions,
    method_of,
    permutation_contributions,
)
from tmiv_assets.ml.explain.importance import input_importance
from tmiv_assets.ml.explain.shap_values import explain_pipeline, reason_codes
from tmiv_assets.ml.explain.tree_shap import fast_margin_contributions


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
    # Every model by its exact method: none fell back to permutation because its values did not add up.
    assert sorted(set(report.methods.values())) == ["linear", "native", "permutation", "tree"]
    assert [m for k, m in report.methods.items() if "KNeighbors" in k] == ["permutation"] * 2
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
    assert report.methods["0:Ridge"] == "linear" and report.methods["1:XGBRegressor"] == "native"
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
    # Larger sets are scored on one seeded sample of max_rows rows: the baseline and every shuffle on the same rows.
    capped = input_importance(model, X, y, "binary", "roc_auc", positive_class="yes", repeats=3, max_rows=100)
    sample = X.sample(100, random_state=0)
    pd.testing.assert_frame_equal(capped, input_importance(model, sample, y.loc[sample.index], "binary", "roc_auc",
                                                           positive_class="yes", repeats=3))
    assert not capped.equals(table)


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


@pytest.mark.parametrize("make", [
    lambda: XGBLabelClassifier(n_estimators=40, max_depth=4, random_state=0),
    lambda: LGBMClassifier(n_estimators=40, verbose=-1, random_state=0),
    lambda: CatBoostClassifier(iterations=40, depth=4, random_seed=0, verbose=False, allow_writing_files=False),
    lambda: XGBRegressor(n_estimators=40, max_depth=4, random_state=0),
], ids=["xgboost", "lightgbm", "catboost", "xgboost-regression"])
@pytest.mark.parametrize("classes", [2, 3])
def test_tree_contributions_equal_shap_and_sum_to_the_margin(make, classes):
    data = load_wine() if classes == 3 else load_breast_cancer()
    X, y = data.data.astype(np.float32).astype(float), data.target
    X[::7, 3] = np.nan  # missing values take each split's default direction
    model = make().fit(X, y)
    contributions = margin_contributions(model, X)  # (rows, outputs, features + 1)
    if not hasattr(model, "get_all_params"):  # our table-driven TreeSHAP for XGBoost and LightGBM, not CatBoost
        assert fast_margin_contributions(model, X) is not None
    reference = np.asarray(shap.TreeExplainer(model).shap_values(X))
    reference = reference[:, None, :] if reference.ndim == 2 else reference.transpose(0, 2, 1)
    np.testing.assert_allclose(contributions[:, :, :-1], reference, atol=1e-4)
    if hasattr(model, "get_booster"):
        margin = model.get_booster().predict(xgboost.DMatrix(X), output_margin=True)
    elif hasattr(model, "booster_"):
        margin = model.predict(X, raw_score=True)
    else:
        margin = model.predict(X, prediction_type="RawFormulaVal")
    margin = np.asarray(margin).reshape(len(X), -1)
    np.testing.assert_allclose(contributions.sum(axis=2), margin, atol=1e-4)


def test_a_multiclass_bag_with_catboost_is_explained_exactly_in_probability():
    data = load_wine(as_frame=True)
    X, y = data.data, data.target
    encoded = StandardScaler().fit_transform(X)
    bag = FoldBagClassifier([
        ("catboost", 0.4, [CatBoostClassifier(iterations=30, random_seed=0, verbose=False,
                                              allow_writing_files=False).fit(encoded, y)]),
        ("lightgbm", 0.3, [LGBMClassifier(n_estimators=20, verbose=-1, random_state=0).fit(encoded, y)]),
        ("linear", 0.3, [LogisticRegression(max_iter=1000).fit(encoded, y)]),
    ], classes=np.array([0, 1, 2]))
    report = explain_pipeline(_pipeline(bag, X), X, sample_size=80)
    assert report.additivity_error < 1e-6 and set(report.methods.values()) == {"native", "linear"}
    assert len(report.values) == 3 * 80  # one block per class


def test_reason_codes_add_up_to_each_scored_rows_probability_on_the_input_columns():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"income": rng.normal(50, 10, 600), "city": rng.choice(["north", "south", "east"], 600),
                      "age": rng.integers(18, 80, 600).astype(float)})
    y = np.where(X["income"] / 10 + (X["city"] == "north") * 2 + rng.normal(size=600) > 6, "yes", "no")
    preprocess = ColumnTransformer([("numbers", StandardScaler(), ["income", "age"]),
                                    ("city", OneHotEncoder(), ["city"])], verbose_feature_names_out=False)
    encoded = preprocess.fit_transform(X)
    bag = FoldBagClassifier([("xgboost", 0.7, [XGBLabelClassifier(n_estimators=30, random_state=0).fit(encoded, y)]),
                             ("linear", 0.3, [LogisticRegression().fit(encoded, y)])], classes=np.array(["no", "yes"]))
    model = Pipeline([("model", Pipeline([("preprocess", preprocess), ("estimator", bag)]))])
    reasons = reason_codes(model, X.iloc[:200], X.iloc[200:], positive_class="yes", top=2)
    score = model.predict_proba(X.iloc[:200])[:, 1]
    total = reasons["reason_base"] + reasons["reason_1_contribution"] + reasons["reason_2_contribution"] + reasons[
        "reason_rest"]
    np.testing.assert_allclose(total, score, atol=1e-5)
    assert set(reasons["reason_1"]) <= {"income", "city", "age"}  # one-hot parts summed back to their column
    leading = reasons["reason_1"].value_counts(normalize=True)
    assert leading.get("income", 0) > 0.3 and leading.get("city", 0) > 0.3 and leading.get("age", 0) < 0.1  # noise
    assert (reasons["reason_1_contribution"].abs() >= reasons["reason_2_contribution"].abs()).all()


def test_rows_the_model_does_not_know_and_models_it_cannot_explain_are_named(cancer):
    X, y, encoded = cancer
    model = _pipeline(LogisticRegression().fit(encoded, y), X)
    with pytest.raises(ValueError, match=r"unknown \['colour'\], missing \['mean radius'\]"):
        explain_pipeline(model, X.drop(columns=["mean radius"]).assign(colour="red"))
    with pytest.raises(ValueError, match="cannot explain a LogisticRegression: the explainers need the AutoML's"):
        reason_codes(LogisticRegression().fit(encoded, y), X, X)


def test_permutation_sampling_is_exact_in_sum_and_converges_to_the_exact_shapley_values(monkeypatch):
    rng = np.random.default_rng(3)
    rows, background = rng.normal(size=(40, 4)), rng.normal(size=(30, 4))

    def model(x):  # an interaction, a threshold and a second output: no additive shortcut applies
        first = x[:, 0] * x[:, 1] + np.maximum(x[:, 2], 0) - 0.5 * x[:, 3]
        return np.column_stack([first, np.tanh(x[:, 0] + x[:, 3])])

    values, base = permutation_contributions(model, rows, background, passes=1, seed=0)
    assert values.shape == (40, 4, 2) and np.abs(values.sum(axis=1) + base - model(rows)).max() < 1e-12
    exact = shap.explainers.Exact(model, shap.maskers.Independent(background, max_samples=30))(rows).values
    sampled, _ = permutation_contributions(model, rows, background, passes=300, seed=0)
    assert np.abs(sampled - exact).max() < 0.05 * np.abs(exact).max()
    assert np.array_equal(sampled, permutation_contributions(model, rows, background, passes=300, seed=0)[0])
    monkeypatch.setattr("tmiv_assets.ml.explain.contributions.PERMUTATION_CHUNK", 1)  # a row per model call
    assert np.allclose(sampled, permutation_contributions(model, rows, background, passes=300, seed=0)[0])
    linear, _ = permutation_contributions(lambda x: (x @ [1.0, -2.0, 0.5, 3.0])[:, None], rows, background, 1)
    assert np.allclose(linear[:, :, 0], (rows - background.mean(axis=0)) * [1.0, -2.0, 0.5, 3.0])


def test_a_forest_too_deep_for_exact_tree_shap_on_these_rows_gets_saabas_values_that_add_up_and_agree():
    X, y = make_classification(6000, 10, n_informative=5, flip_y=0.2, random_state=0)
    forest = RandomForestClassifier(n_estimators=60, random_state=0).fit(X, y)  # unpruned: ~25 levels deep
    rows, background = X[:2000], X[-100:]
    assert method_of(forest, len(rows)) == "tree_saabas" and method_of(forest, 20) == "tree"
    saabas = ensemble_contributions(forest, rows, background)
    exact = ensemble_contributions(forest, rows[:20], background)
    assert saabas.methods == {"0:RandomForestClassifier": "tree_saabas"}
    assert exact.methods == {"0:RandomForestClassifier": "tree"}
    assert saabas.additivity_error < 1e-9  # additive like the exact values: the reason codes still sum to the output
    # one feature order instead of all of them: close to the exact values, the same leading feature on most rows
    close = np.corrcoef(saabas.values[:20, :, 1].ravel(), exact.values[:, :, 1].ravel())[0, 1]
    leading = np.mean(np.abs(saabas.values[:20, :, 1]).argmax(axis=1) == np.abs(exact.values[:, :, 1]).argmax(axis=1))
    assert close > 0.9 and leading >= 0.7, (close, leading)


@pytest.mark.parametrize("classes", [2, 3, None], ids=["binary", "multiclass", "regression"])
def test_histogram_gradient_boosting_is_explained_exactly_through_its_margin(classes):
    if classes is None:
        X, y = make_regression(600, 6, n_informative=3, random_state=0)
        model = HistGradientBoostingRegressor(max_iter=40, random_state=0).fit(X, y)
    else:
        X, y = make_classification(600, 6, n_informative=4, n_classes=classes, random_state=0)
        model = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(X, y)
    explained = ensemble_contributions(model, X[:200], X[200:300])
    # shap's TreeSHAP of the margin, carried into probability: exact, not the permutation fallback.
    assert explained.methods == {f"0:{type(model).__name__}": "tree_margin"}
    assert explained.additivity_error < 1e-9 * max(1.0, np.abs(y).max())
    if classes is None:  # the margin is the prediction: shap's own values
        np.testing.assert_allclose(explained.values[:, :, 0], shap.TreeExplainer(model)(X[:200]).values, atol=1e-9)
