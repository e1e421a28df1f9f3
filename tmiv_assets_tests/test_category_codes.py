"""LightGBM splitting the pooled columns' codes as categories, and CatBoost taking them as categorical features:
the models, their explanation and where the search tries them."""

import pickle

import numpy as np
import pandas as pd
from sklearn.base import clone

from tmiv_assets.ml.automl.catalog import (
    CatBoostCodesClassifier,
    CatBoostCodesRegressor,
    LGBMCodesClassifier,
    LGBMCodesRegressor,
)
from tmiv_assets.ml.automl.estimator import AutoML
from tmiv_assets.ml.explain.contributions import margin_contributions
from tmiv_assets.ml.features.preprocessing import TabularEncoder


def _shops(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Sales by shop: 80 shops whose effects (+-2) have nothing to do with how often each shop appears."""
    rng = np.random.default_rng(seed)
    effects = np.where(np.arange(80) % 2 == 0, 2.0, -2.0)
    shop = rng.choice(80, rows, p=np.linspace(2, 1, 80) / np.linspace(2, 1, 80).sum())
    X = pd.DataFrame({"shop": [f"shop{s:02d}" for s in shop], "size": rng.normal(size=rows)})
    return X, pd.Series(effects[shop] + 0.5 * X["size"] + rng.normal(scale=0.3, size=rows), name="sales")


def _encoded(seed: int = 0):
    X, y = _shops(6000, seed)
    encoder = TabularEncoder(target_type="continuous", encode_targets=False)
    return encoder, encoder.fit_transform(X[:4000], y[:4000]), y[:4000].to_numpy(), encoder.transform(X[4000:]), \
        y[4000:].to_numpy()


def test_codes_split_as_categories_group_shops_that_ranks_cannot():
    encoder, X, y, X_test, y_test = _encoded()
    scales = encoder.code_scales()
    assert [encoder.feature_names_out_[column] for column, _ in scales] == ["shop_code"]
    assert np.allclose(X[:, scales[0][0]] * scales[0][1], np.rint(X[:, scales[0][0]] * scales[0][1]))
    few_trees = {"n_estimators": 20, "num_leaves": 4, "random_state": 0, "verbose": -1}
    native = LGBMCodesRegressor(native_categories=True, category_codes=scales, **few_trees).fit(X, y)
    ranks = LGBMCodesRegressor(category_codes=scales, **few_trees).fit(X, y)
    rmse = {name: float(np.sqrt(np.mean((model.predict(X_test) - y_test) ** 2)))
            for name, model in (("native", native), ("ranks", ranks))}
    # one category split sends the 40 shops of +2 one way; splits of frequency ranks need one per alternation
    assert rmse["native"] < 0.6 * rmse["ranks"], rmse
    assert '"decision_type": "=="' in str(native.booster_.dump_model()).replace("'", '"')
    assert "==" not in str(ranks.booster_.dump_model())


def test_a_native_model_clones_pickles_and_explains_on_its_own_rows():
    encoder, X, y, X_test, _ = _encoded()
    model = LGBMCodesClassifier(native_categories=True, category_codes=encoder.code_scales(), n_estimators=30,
                                random_state=0, verbose=-1).fit(X, y > 0)
    assert clone(model).get_params()["category_codes"] == encoder.code_scales()
    assert "native_categories" not in model.booster_.params and "category_codes" not in model.booster_.params
    assert np.array_equal(pickle.loads(pickle.dumps(model)).predict_proba(X_test), model.predict_proba(X_test))
    assert np.array_equal(model.predict(X_test), model.predict_proba(X_test).argmax(axis=1).astype(bool))
    contributions = margin_contributions(model, X_test[:50])
    margin = model.predict(X_test[:50], raw_score=True)
    assert np.allclose(contributions.sum(axis=2)[:, 0], margin, atol=1e-6)


def test_the_search_tries_codes_as_categories_only_where_there_are_codes():
    X, y = _shops(1500)
    coded = AutoML(task="regression", include=["lightgbm"], max_trials=8, seed=0, n_jobs=1,
                   target_encoding="drop").fit(X, y)  # the codes alone tell the shops apart
    configs = [t.user_attrs["config"] for t in coded.studies_["lightgbm"].trials]
    assert any(c.get("native_categories") for c in configs)
    assert "native_categories" in coded.studies_["lightgbm"].trials[-1].params  # sampled, not only a start
    assert "'native_categories': True" in coded.leaderboard_.loc[0, "params"]  # the shops' effects want it
    (_, _, fold_models), = coded.best_pipeline_[-1].members
    assert all(m.category_codes == coded.preprocessor_.named_steps["encode"].code_scales() for m in fold_models)
    assert all('"decision_type": "=="' in str(m.booster_.dump_model()).replace("'", '"') for m in fold_models)

    plain = AutoML(task="regression", include=["lightgbm"], max_trials=8, seed=0, n_jobs=1).fit(
        X.assign(shop=X["shop"].str[:5]), y)  # one category: nothing pooled, nothing coded
    trials = plain.studies_["lightgbm"].trials
    assert not any("native_categories" in t.user_attrs["config"] or "native_categories" in t.params for t in trials)


def test_catboost_takes_the_codes_as_categorical_features_clones_pickles_and_explains():
    encoder, X, y, X_test, y_test = _encoded()
    scales = encoder.code_scales()
    few_trees = {"iterations": 60, "depth": 3, "random_seed": 0, "thread_count": 1, "verbose": False,
                 "allow_writing_files": False}
    native = CatBoostCodesRegressor(native_categories=True, category_codes=scales, **few_trees).fit(X, y)
    ranks = CatBoostCodesRegressor(category_codes=scales, **few_trees).fit(X, y)
    assert native.get_cat_feature_indices() == [scales[0][0]] and ranks.get_cat_feature_indices() == []
    rmse = {name: float(np.sqrt(np.mean((model.predict(X_test) - y_test) ** 2)))
            for name, model in (("native", native), ("ranks", ranks))}
    # the shops' target statistics tell +2 from -2 at once; ranks of frequency need a split per alternation
    assert rmse["native"] < 0.6 * rmse["ranks"], rmse
    assert clone(native).get_params()["category_codes"] == scales
    restored = pickle.loads(pickle.dumps(native))
    assert (restored.native_categories, restored.category_codes) == (True, scales)
    assert np.array_equal(restored.predict(X_test), native.predict(X_test))
    contributions = margin_contributions(native, X_test[:50])
    assert np.allclose(contributions.sum(axis=2)[:, 0], native.predict(X_test[:50]), atol=1e-6)

    classifier = CatBoostCodesClassifier(native_categories=True, category_codes=scales, **few_trees).fit(X, y > 0)
    probabilities = classifier.predict_proba(X_test)
    assert np.array_equal(classifier.predict(X_test), classifier.classes_[probabilities.argmax(axis=1)])
    assert np.mean(classifier.predict(X_test) == (y_test > 0)) > 0.9


def test_the_search_tries_catboost_on_codes_as_categories_only_where_there_are_codes():
    X, y = _shops(1000)
    coded = AutoML(task="regression", include=["catboost"], max_trials=2, n_folds=3, seed=0, n_jobs=1,
                   target_encoding="drop").fit(X, y)
    trials = coded.studies_["catboost"].trials
    assert [t.user_attrs["config"].get("native_categories", False) for t in trials[:2]] == [False, True]
    assert "native_categories" in trials[-1].params  # sampled too, not only a start
    plain = AutoML(task="regression", include=["catboost"], max_trials=2, n_folds=3, seed=0, n_jobs=1).fit(
        X.assign(shop=X["shop"].str[:5]), y)
    assert not any("native_categories" in t.user_attrs["config"] or "native_categories" in t.params
                   for t in plain.studies_["catboost"].trials)
