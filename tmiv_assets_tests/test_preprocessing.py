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


@pytest.mark.parametrize("kinds", [4, 30, 45])
def test_the_encoding_equals_scikit_learns_with_rare_and_unseen_categories(kinds):
    rng = np.random.default_rng(kinds)
    train = pd.DataFrame({"city": categories(rng, 5000, kinds), "colour": categories(rng, 5000, 3)})
    test = pd.DataFrame({"city": [*categories(rng, 500, kinds)[:-2], "atlantis", np.nan],
                         "colour": [*categories(rng, 500, 3)[:-2], "plaid", "c01"]})
    ours = FrequentCategoriesOneHot(max_categories=30).fit(train)
    reference = make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(
        handle_unknown="infrequent_if_exist", max_categories=30, sparse_output=False)).fit(train)
    np.testing.assert_array_equal(ours.transform(test), reference.transform(test))
    names = [n.replace("infrequent_sklearn", "infrequent") for n in reference.get_feature_names_out(train.columns)]
    assert list(ours.get_feature_names_out()) == names
    pooled = kinds > 30
    assert names[-4].endswith("_infrequent") is pooled
    unseen = ours.transform(test.tail(2))
    assert unseen[0, : len(ours.categories_[0]) + pooled].sum() == float(pooled)  # pooled, or no column at all
    assert unseen[1].sum() == 2.0  # a missing city counts as its most frequent one
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
         ("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(
             handle_unknown="infrequent_if_exist", max_categories=30, sparse_output=False)),
          make_column_selector(dtype_exclude="number"))], verbose_feature_names_out=False).fit(train)
    ours = TabularEncoder(scaler).fit(train)
    encoded = ours.transform(test)
    np.testing.assert_allclose(encoded, reference.transform(test), rtol=1e-12, atol=1e-12)
    assert encoded.flags["C_CONTIGUOUS"] and encoded.dtype == np.float64
    assert [n.replace("infrequent_sklearn", "infrequent") for n in reference.get_feature_names_out()] == list(
        ours.get_feature_names_out())


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
