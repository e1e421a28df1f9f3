"""Auto features, encoders and the feature pipeline: fitted on train only, replayed at serving."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

from tmiv_assets.ml.features.builder import FeatureBuilder
from tmiv_assets.ml.features.engineering import AutoFeatures, CategoricalEncoder, calendar_features, make_scaler
from tmiv_assets.ml.features.preprocessing import make_preprocessor


def numeric_frame(n: int = 60) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.normal(size=n),
                      "flag": rng.integers(0, 2, n)})
    y = pd.Series(X["a"] * X["c"] + 0.01 * rng.normal(size=n), name="y")
    return X, y


@pytest.mark.parametrize(("degree", "expected"), [(2, 6), (3, 16)])
def test_polynomial_terms_of_degree_two_and_three(degree, expected):
    X, _ = numeric_frame()
    auto = AutoFeatures(polynomial_degree=degree, interactions=False, ratios=False, row_aggregates=False).fit(X)
    out = auto.transform(X)
    generated = [c for c in out.columns if c.startswith("poly_")]
    # 3 inputs: degree 2 adds 3 squares + 3 products; degree 3 adds 10 cubic terms on top.
    assert len(generated) == expected and "flag" in out and "poly_a_pow2" in out
    np.testing.assert_allclose(out["poly_a_x_b"], X["a"] * X["b"])


def test_interactions_are_capped_and_ranked_by_the_target():
    X, y = numeric_frame()
    auto = AutoFeatures(max_interactions=1, row_aggregates=False).fit(X, y)
    assert auto.interaction_pairs_ == [("a", "c")]
    out = auto.transform(X)
    assert [c for c in out.columns if c not in X.columns] == ["a_x_c", "a_per_c"]
    assert list(auto.get_feature_names_out()) == list(out.columns)


def test_ratio_is_missing_where_the_denominator_is_zero():
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [2.0, 0.0, -1.0, 1e-15]})
    out = AutoFeatures(interactions=False, row_aggregates=False).fit(X).transform(X)
    assert out["a_per_b"].tolist()[0] == 0.5 and out["a_per_b"].isna().tolist() == [False, True, False, True]
    assert np.isfinite(out["a_per_b"].dropna()).all()


def test_row_aggregates():
    X = pd.DataFrame({"a": [1.0, 4.0, 0.0], "b": [3.0, 0.0, 9.0], "c": [2.0, 2.0, 3.0]})
    out = AutoFeatures(interactions=False, ratios=False).fit(X).transform(X)
    assert out["row_mean"].tolist() == [2.0, 2.0, 4.0] and out["row_max"].tolist() == [3.0, 4.0, 9.0]


def test_auto_features_validate_in_fit():
    with pytest.raises(ValueError, match="polynomial_degree must be None, 2 or 3"):
        AutoFeatures(polynomial_degree=5).fit(numeric_frame()[0])


def test_datetime_parts_and_cycles():
    stamps = pd.Series(pd.to_datetime(["2013-12-31 23:00", "2014-01-04 01:30", None]))
    out = calendar_features(stamps, "t")
    assert out["t_year"].tolist()[:2] == [2013, 2014] and out["t_is_weekend"].tolist()[:2] == [0, 1]
    assert out.iloc[2].isna().all()  # a missing time gives missing parts, for the imputer
    out = out.iloc[:2]
    assert out["t_day_of_week"].tolist() == [1, 5] and out["t_hour"].tolist() == [23.0, 1.5]
    # December and January are neighbours on the month circle.
    distance = np.hypot(*(out[["t_month_sin", "t_month_cos"]].diff().iloc[1]))
    assert distance < 0.6
    assert np.allclose(out["t_hour_sin"] ** 2 + out["t_hour_cos"] ** 2, 1)


def test_date_strings_become_calendar_parts_a_model_can_extrapolate():
    days = pd.date_range("2000-01-01", periods=200, freq="MS")
    X = pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "month_name": days.strftime("%B")})
    y = pd.Series(days.year + days.month / 12, name="y")
    model = Pipeline([("preprocess", make_preprocessor()), ("estimator", Ridge())]).fit(X, y)
    names = list(model[:-1].get_feature_names_out())
    assert "date_year" in names and not any(n.startswith("date_20") for n in names)
    assert any(n.startswith("month_name_") for n in names)  # month names are words, not dates
    # Text categories would all be unseen here, and predict one constant.
    later = pd.DataFrame({"date": ["2020-06-01", "2030-06-01", "not a date"], "month_name": ["June"] * 3})
    predicted = model.predict(later)
    assert 2019 < predicted[0] < 2021 < predicted[1] and np.isfinite(predicted[2])


def categorical_frame(n: int = 300):
    rng = np.random.default_rng(1)
    city = rng.choice([f"city_{i}" for i in range(40)], n)
    colour = rng.choice(["red", "green", "blue"], n)
    y = pd.Series((pd.Series(city).str[-1].astype(int) % 2 == 0).astype(int), name="y")
    return pd.DataFrame({"city": city, "colour": colour, "x": rng.normal(size=n)}), y


@pytest.mark.parametrize(("high", "city_columns"), [("target", ["city"]), ("ordinal", ["city"])])
def test_low_cardinality_one_hot_high_cardinality_target_or_ordinal(high, city_columns):
    X, y = categorical_frame()
    encoder = CategoricalEncoder(max_onehot_categories=5, high_cardinality=high)
    out = encoder.fit_transform(X, y)
    assert encoder.onehot_columns_ == ["colour"] and encoder.high_cardinality_columns_ == ["city"]
    assert {"colour_red", "colour_green", "colour_blue", "x", *city_columns} == set(out.columns)
    unseen = encoder.transform(X.head(1).assign(city="atlantis", colour="purple"))
    assert unseen[["colour_red", "colour_green", "colour_blue"]].to_numpy().sum() == 0


def test_target_encoding_is_cross_fitted_on_training_rows():
    X, y = categorical_frame()
    encoder = CategoricalEncoder(max_onehot_categories=5)
    cross_fitted = encoder.fit_transform(X, y)["city"]
    refitted = encoder.transform(X)["city"]
    # fit_transform encodes each row with statistics from the other folds, so it differs from transform.
    assert not np.allclose(cross_fitted, refitted)
    with pytest.raises(ValueError, match="target encoding of \\['city'\\] needs y"):
        CategoricalEncoder(max_onehot_categories=5).fit(X)


@pytest.mark.parametrize(("kind", "cls"),
                         [("standard", StandardScaler), ("minmax", MinMaxScaler), ("robust", RobustScaler)])
def test_scalers(kind, cls):
    assert isinstance(make_scaler(kind), cls)
    with pytest.raises(ValueError, match="scaling 'log'"):
        make_scaler("log")


def test_builder_and_preprocessor_are_fitted_on_train_only_and_replay_at_serving():
    X, y = categorical_frame()
    X = X.assign(when=pd.date_range("2020-01-01", periods=len(X), freq="h"), x2=X["x"] * 2 + 1,
                 x3=np.arange(len(X), dtype=float))
    X.loc[::7, "x"] = np.nan
    train, test = X.iloc[:200], X.iloc[200:]
    builder = FeatureBuilder(time_column="when", auto_features=True, max_interactions=3).fit(train)
    built = builder.transform(train)
    assert {"when_hour_sin", "x_x_x2", "x_per_x2", "row_mean"} <= set(built.columns)
    assert built["x_x_x2"].isna().sum() == train["x"].isna().sum()  # missing inputs stay missing
    model = Pipeline([("features", builder), ("preprocess", make_preprocessor(scaler="minmax")),
                      ("model", LogisticRegression(max_iter=1000))]).fit(train, y.iloc[:200])
    encoded = model[:-1].transform(train)
    # MinMax learned on train: the training rows span [0, 1], unseen rows may not.
    assert np.nanmin(encoded) >= -1e-9 and np.nanmax(encoded) <= 1 + 1e-9
    assert np.isfinite(model[:-1].transform(test)).all()
    assert model.score(test, y.iloc[200:]) > 0.7
