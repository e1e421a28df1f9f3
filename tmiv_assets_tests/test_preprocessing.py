"""The model preprocessor's encoders compute what scikit-learn's imputers, scalers and one-hot encoder do."""

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from tmiv_assets.ml.features.engineering import make_scaler
from tmiv_assets.ml.features.preprocessing import FrequentCategoriesOneHot, TabularEncoder


def categories(rng: np.random.Generator, rows: int, kinds: int) -> np.ndarray:
    """Distinct frequencies (no ties at the cut between kept and pooled categories), a few missing."""
    weights = np.arange(kinds, 0, -1) ** 2.0
    values = rng.choice([f"c{k:02d}" for k in range(kinds)], size=rows, p=weights / weights.sum()).astype(object)
    values[rng.random(rows) < 0.05] = np.nan
    return values


@pytest.mark.parametrize("kinds", [4, 28, 45])
def test_the_encoding_equals_scikit_learns_with_rare_and_unseen_categories(kinds):
    rng = np.random.default_rng(kinds)
    train = pd.DataFrame({"city": categories(rng, 5000, kinds), "colour": categories(rng, 5000, 3)})
    test = pd.DataFrame({"city": [*categories(rng, 500, kinds)[:-2], "atlantis", np.nan],
                         "colour": [*categories(rng, 500, 3)[:-2], "plaid", "c01"]})
    ours = FrequentCategoriesOneHot(max_categories=30).fit(train)
    reference = OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=30, sparse_output=False).fit(train)
    np.testing.assert_array_equal(ours.transform(test), reference.transform(test))
    names = [n.replace("infrequent_sklearn", "infrequent").replace("_nan", "_(missing)")
             for n in reference.get_feature_names_out(train.columns)]
    assert list(ours.get_feature_names_out()) == names
    pooled = kinds > 30
    assert names[-5].endswith("_infrequent") is pooled  # before colour's three categories and its missing one
    unseen = ours.transform(test.tail(2))
    assert unseen[0, : len(ours.categories_[0]) + pooled].sum() == float(pooled)  # pooled, or no column at all
    assert unseen[1].sum() == 2.0 and unseen[1, names.index("city_(missing)")] == 1.0  # a category of its own
    with_none = ours.transform(test.tail(1).astype(object).where(test.tail(1).notna(), None))
    np.testing.assert_array_equal(with_none, unseen[1:])  # None and NaN are both missing


@pytest.mark.parametrize("scaler", ["standard", "minmax", "robust", "none"])
def test_the_tabular_encoder_equals_a_column_transformer_of_imputers_scalers_and_one_hot(scaler):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.normal(40, 12, 3000), "fare": rng.exponential(30, 3000),
                          "class": categories(rng, 3000, 3), "port": categories(rng, 3000, 40),
                          "count": rng.integers(0, 5, 3000)})
    frame.loc[rng.random(3000) < 0.1, "age"] = np.nan
    train, test = frame.iloc[:2000], frame.iloc[2000:].assign(port=lambda f: f["port"].where(f.index % 7 > 0, "new"))
    reference = ColumnTransformer(
        [("numeric", make_pipeline(SimpleImputer(strategy="median"), make_scaler(scaler)),
          make_column_selector(dtype_include="number")),
         ("categorical", OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=30, sparse_output=False),
          make_column_selector(dtype_exclude="number"))], verbose_feature_names_out=False).fit(train)
    ours = TabularEncoder(scaler).fit(train)
    encoded = ours.transform(test)
    np.testing.assert_allclose(encoded, reference.transform(test), rtol=1e-12, atol=1e-12)
    assert encoded.flags["C_CONTIGUOUS"] and encoded.dtype == np.float64
    assert [n.replace("infrequent_sklearn", "infrequent").replace("_nan", "_(missing)")
            for n in reference.get_feature_names_out()] == list(ours.get_feature_names_out())


def test_a_missing_value_is_its_own_category_only_where_training_had_missing_values():
    train = pd.DataFrame({"rating": ["R", "R", "PG", np.nan, np.nan, np.nan], "port": ["S", "S", "C", "Q", "S", "C"]})
    encoder = FrequentCategoriesOneHot().fit(train)
    names = list(encoder.get_feature_names_out())
    assert names == ["rating_PG", "rating_R", "rating_(missing)", "port_C", "port_Q", "port_S"]
    served = encoder.transform(pd.DataFrame({"rating": [np.nan, "R"], "port": [np.nan, "Q"]}))
    # the unrated film stays apart from the R-rated one; a port never missing in training counts as its mode
    np.testing.assert_array_equal(served, [[0, 0, 1, 0, 0, 1], [0, 1, 0, 0, 1, 0]])


def test_the_served_model_predicts_a_large_batch_in_chunks_exactly_as_at_once(monkeypatch):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from tmiv_assets.ml.automl.ensembles import FoldBagClassifier
    from tmiv_assets.ml.deploy import serving
    from tmiv_assets.ml.features.builder import FeatureBuilder
    from tmiv_assets.ml.features.preprocessing import make_preprocessor

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"id": range(1000), "amount": rng.normal(size=1000), "city": rng.choice(list("abcd"), 1000),
                      "at": pd.date_range("2024-01-01", periods=1000, freq="h")})
    y = pd.Series(np.where(X["amount"] + (X["city"] == "a") > 0.3, "yes", "no"))
    builder = FeatureBuilder(time_column="at", drop_columns=("id",)).fit(X)
    preprocess = make_preprocessor().fit(builder.transform(X))
    encoded = preprocess.transform(builder.transform(X))
    bag = FoldBagClassifier([("linear", 1.0, [LogisticRegression().fit(encoded, y.eq("yes").astype(int))])],
                            classes=np.array(["no", "yes"]))
    served = serving.serving_pipeline(builder, Pipeline([("preprocess", preprocess), ("estimator", bag)]))
    whole = served.predict_proba(X)
    monkeypatch.setattr(serving, "SERVING_CHUNK_ROWS", 128)  # eight chunks, the last one short
    np.testing.assert_array_equal(served.predict_proba(X), whole)
    rows = serving.predict_rows(served, X, "binary", positive_class="yes", keep=["id"])
    # One pass of the bag gives the class too: the same class its predict returns.
    assert (rows["prediction"] == Pipeline.predict(served, X)).all() and rows["prediction"].nunique() == 2
    np.testing.assert_array_equal(rows["probability_yes"], whole[:, 1])


def cities(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    """60 cities, each on its own price level, two of them rarer than MIN_TARGET_ENCODED_ROWS; one number."""
    city = rng.choice([f"city{k:02d}" for k in range(58)], size=rows).astype(object)
    city[:60] = np.repeat(["hamlet", "village"], 30)  # 30 rows each: rarer than the encoder's minimum
    return pd.DataFrame({"city": city, "rooms": rng.integers(1, 6, rows).astype(float)})


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_pooled_categories_are_target_encoded_as_scikit_learns_target_encoder(task):
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.preprocessing import TargetEncoder

    from tmiv_assets.ml.features.preprocessing import MIN_TARGET_ENCODED_ROWS, TARGET_TYPE_OF

    rng = np.random.default_rng(1)
    X = cities(rng, 4000)
    level = X["city"].str[-2:].map(lambda s: int(s) if s.isdigit() else 0)
    y = level * 10.0 + X["rooms"] + rng.normal(size=4000)
    if task == "multiclass":
        y = pd.Series(np.array(["low", "mid", "high"])[np.digitize(y, [200.0, 400.0])])
    ours = TabularEncoder(target_type=TARGET_TYPE_OF[task], random_state=3)
    encoded = ours.fit_transform(X, y)
    suffixes = ["target"] if task == "regression" else ["target_high", "target_low", "target_mid"]
    target_names = [f"city_{s}" for s in suffixes]
    assert list(ours.get_feature_names_out()[-len(suffixes):]) == target_names

    # The reference: the same folds, the two rare cities as one value
    assert (X["city"].value_counts() < MIN_TARGET_ENCODED_ROWS).sum() == 2
    values = X[["city"]].where(~X["city"].isin(["hamlet", "village"]), "rare").to_numpy()
    folds = (KFold if task == "regression" else StratifiedKFold)(5, shuffle=True, random_state=3)
    reference = TargetEncoder(target_type=TARGET_TYPE_OF[task], cv=folds)
    expected = reference.fit_transform(values, y)
    scale = (y.mean(), y.std(ddof=0)) if task == "regression" else (0.0, 1.0)
    np.testing.assert_allclose(encoded[:, -len(suffixes):], (expected - scale[0]) / scale[1], rtol=1e-10)
    # Served rows use all training rows' statistics; an unseen city is encoded as the rare ones
    test = pd.DataFrame({"city": ["city07", "atlantis", "hamlet", np.nan], "rooms": [2.0, 3.0, 1.0, 2.0]})
    served = ours.transform(test)[:, -len(suffixes):]
    test_values = test[["city"]].fillna(X["city"].mode()[0]).replace({"atlantis": "rare", "hamlet": "rare"})
    np.testing.assert_allclose(served, (reference.transform(test_values.to_numpy()) - scale[0]) / scale[1],
                               rtol=1e-10)
    np.testing.assert_array_equal(served[1], served[2])
    # Cross-fitted training rows differ from what the full statistics give them: no row saw its own target
    assert not np.allclose(encoded[:, -len(suffixes):], ours.transform(X)[:, -len(suffixes):])


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_rare_categories_get_their_own_encoding_where_they_set_the_target(task):
    """200 entities of 12 rows each, each on its own level (as countries' GDP or a cow's diet), beside an id of
    as many categories that says nothing: the entities are encoded one by one, the id not at all."""
    from tmiv_assets.ml.features.preprocessing import TARGET_TYPE_OF

    rng = np.random.default_rng(4)
    X = pd.DataFrame({"entity": np.repeat([f"e{k:03d}" for k in range(200)], 12),
                      "id": rng.choice([f"n{k:03d}" for k in range(200)], 2400), "x": rng.normal(size=2400)})
    y = pd.Series(np.repeat(rng.normal(size=200), 12) * 3 + X["x"] + rng.normal(size=2400))
    if task != "regression":
        y = pd.Series(np.array(["low", "mid", "high"])[np.digitize(y, [-1.0, 1.0] if task == "multiclass" else [0.0])])
    encoder = TabularEncoder(target_type=TARGET_TYPE_OF[task]).fit(X, y)
    assert encoder.target_encoded_ == ["entity"]
    assert len(encoder.target_categories_[0]) == 200
    served = encoder.transform(pd.DataFrame({"entity": ["e000", "e001"], "id": ["n000", "n000"], "x": [0.0, 0.0]}))
    assert not np.allclose(served[0], served[1])  # two entities, two encodings


def test_without_a_target_type_or_a_target_nothing_is_target_encoded():
    X = cities(np.random.default_rng(2), 1000)
    y = pd.Series(np.arange(1000.0))
    assert "city_target" not in TabularEncoder().fit(X, y).get_feature_names_out()
    assert "city_target" not in TabularEncoder(target_type="continuous").fit(X).get_feature_names_out()
    small = X[X["city"].isin([f"city{k:02d}" for k in range(20)])]  # 20 cities: one-hot, nothing pooled
    pooled_none = TabularEncoder(target_type="continuous").fit(small, y[small.index])
    assert "city_target" not in pooled_none.get_feature_names_out()
    with pytest.raises(ValueError, match="target_type='count'"):
        TabularEncoder(target_type="count").fit(X, y)


def test_pooled_categories_get_a_code_a_tree_splits_on_where_the_target_encoding_says_nothing():
    """60 areas, each half inbound and half outbound (so no target encoding), where the direction is the count
    against the area's own level: a tree needs to tell the areas apart, which only the code lets it."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(5)
    areas = np.repeat([f"area{k:02d}" for k in range(60)], 40)
    outbound = np.tile([0, 1], 1200)
    level = pd.Series(rng.uniform(0, 20, 60), index=[f"area{k:02d}" for k in range(60)])
    X = pd.DataFrame({"area": areas, "count": level[areas].to_numpy() + np.where(outbound, 1.0, -1.0)
                      + rng.normal(0, 0.2, 2400)})
    X.loc[X.index[-30:], "area"] = "area59x"  # two rarer areas: frequencies differ
    X["row_id"] = [f"row{k:04d}" for k in range(len(X))]  # unique per row: nothing to code
    train, test, y_train, y_test = train_test_split(X, outbound, test_size=0.25, random_state=0, stratify=outbound)
    train = train.copy()
    train.iloc[0, train.columns.get_loc("area")] = "hamlet"  # one training row: nothing to learn, coded as unseen
    encoder = TabularEncoder(target_type="binary")
    encoded = encoder.fit_transform(train, y_train)
    names = list(encoder.get_feature_names_out())
    assert names[-1] == "area_code" and "area_target" not in names  # its encoding would explain nothing
    assert "row_id_code" not in names
    code = names.index("area_code")
    # Codes rank the areas by training frequency, ties in text order, in [0, 1]; rare and unseen ones last
    ranked = encoder.code_categories_[0]
    counts = train["area"].value_counts().drop("hamlet")
    assert list(ranked) == sorted(counts.index, key=lambda area: (-counts[area], area))
    assert list(ranked[-2:]) == ["area59x", "area59"]  # 30 and 10 rows, the others 40
    served = encoder.transform(pd.DataFrame({"area": [ranked[0], ranked[1], "atlantis", np.nan, "hamlet"],
                                             "count": [1.0] * 5, "row_id": ["row0000"] * 5}))
    mode = list(ranked).index(encoder.categories_encoder_.fill_values_[0])  # a missing area counts as the mode
    np.testing.assert_allclose(served[:, code], np.array([0, 1, len(ranked), mode, len(ranked)]) / len(ranked))
    assert encoded[:, code].min() == 0.0 and (encoded[:, code] == 1.0).sum() == train["area"].eq("hamlet").sum()

    def tree_auc(columns: list[int]) -> float:
        tree = DecisionTreeClassifier(min_samples_leaf=3, random_state=0).fit(encoded[:, columns], y_train)
        return roc_auc_score(y_test, tree.predict_proba(encoder.transform(test)[:, columns])[:, 1])

    count = names.index("count")
    assert tree_auc([count]) < 0.8
    assert tree_auc([count, code]) > 0.9


def test_without_target_encodings_the_pooled_columns_keep_their_code_only():
    X = cities(np.random.default_rng(2), 1000)
    y = pd.Series(np.arange(1000.0))
    encoded = TabularEncoder(target_type="continuous").fit(X, y)
    assert encoded.target_columns_ == ["city_target"]
    plain = TabularEncoder(target_type="continuous", encode_targets=False).fit(X, y)
    names = list(plain.get_feature_names_out())
    assert plain.target_columns_ == [] and "city_code" in names
    assert names == [name for name in encoded.get_feature_names_out() if name != "city_target"]


def test_without_a_target_type_no_category_is_coded():
    X = cities(np.random.default_rng(2), 1000)
    assert not any(name.endswith("_code") for name in TabularEncoder().fit(X).get_feature_names_out())
    assert "city_code" in TabularEncoder(target_type="continuous").fit(X).get_feature_names_out()


def test_infinities_are_imputed_as_missing_values_and_the_input_is_left_as_it_was():
    frame = pd.DataFrame({"ratio": [1.0, np.inf, 3.0, -np.inf, np.nan, 5.0], "size": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    before = frame.copy()
    encoded = TabularEncoder("none").fit(frame).transform(frame)
    np.testing.assert_array_equal(encoded[:, 0], [1.0, 3.0, 3.0, 3.0, 3.0, 5.0])  # median of 1, 3 and 5
    pd.testing.assert_frame_equal(frame, before)
