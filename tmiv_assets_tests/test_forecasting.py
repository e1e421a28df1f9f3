"""The forecasting engine: candidate models, rolling-origin backtest, median combination, conformal calibration and
the automatic choice per series, on the repository's series and on synthetic ones built to break each part."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prophet.make_holidays import make_holidays_df

from tmiv_assets.ml.data.spec import SpecError, load_series_spec
from tmiv_assets.ml.forecasting.auto import DEFAULT_MODELS, AutoForecaster, prefer_default
from tmiv_assets.ml.forecasting.backtest import COMBINATION, backtest, calibrate, fold_origins
from tmiv_assets.ml.forecasting.diagnostics import diagnose
from tmiv_assets.ml.forecasting.models import (
    CANDIDATES,
    COLUMNS,
    MODELS,
    ModelSkipped,
    family,
    fit_predict,
    season_length_for,
)
from tmiv_assets_tests.conftest import read_series

SERIES_DIR = Path(__file__).resolve().parents[1] / "data" / "series"
SEASONAL = ("seasonal_naive", "auto_arima", "auto_arima_log", "auto_ets", "auto_theta")


def _series(name: str) -> tuple[pd.Series, object]:
    spec = load_series_spec(SERIES_DIR / f"{name}.yaml")
    return read_series(spec), spec


@pytest.fixture(scope="module")
def fitted() -> dict[str, tuple[pd.Series, AutoForecaster]]:
    """Both repository series, each fitted once with its spec's settings."""
    out = {}
    for name in ("air_passengers", "uk_driver_deaths"):
        y, spec = _series(name)
        out[name] = (y, AutoForecaster.from_spec(spec).fit(y))
    return out


@pytest.mark.parametrize("name", ["air_passengers", "uk_driver_deaths"])
def test_repository_series_choose_autoarima_unless_clearly_beaten_in_the_backtest(fitted, name):
    y, forecaster = fitted[name]
    board = forecaster.leaderboard_
    networks = load_series_spec(SERIES_DIR / f"{name}.yaml").network.get("architectures", [])
    assert sorted(board["model"]) == sorted([*MODELS, *networks, COMBINATION])
    assert board["status"].map(lambda s: s == "ok" or s.startswith("skipped: ")).all()
    ok = board[board["status"] == "ok"]
    assert len(ok) >= 6  # every candidate runs on these long monthly series
    best = ok.loc[ok["mase"].idxmin(), "model"]
    scores = forecaster.fold_scores_
    folds = scores.pivot_table(index="fold", columns="model", values="mase")
    arimas = ok[ok["model"].isin(DEFAULT_MODELS)]
    default = arimas.loc[arimas["mase"].idxmin(), "model"]  # the spec's log_transform leaves auto_arima alone
    assert default == "auto_arima" and board.set_index("model").loc["auto_arima_log", "status"].startswith("skipped")
    clear = ((ok["mase"].min() <= 0.8 * ok.set_index("model").loc[default, "mase"]
              and (folds[best] < folds[default]).all())
             or (folds[default] > folds["seasonal_naive"]).all())
    assert forecaster.chosen_ == (best if clear else default) == board["model"].iloc[0]
    assert forecaster.choice_.startswith(forecaster.chosen_)
    chosen = board.set_index("model").loc[forecaster.chosen_]
    if name == "air_passengers":
        assert chosen["mase"] < board.set_index("model").loc["seasonal_naive", "mase"]
    # Fold scores are the long table behind the leaderboard's means.
    assert set(scores["model"]) == set(ok["model"])
    assert scores.groupby("model")["fold"].nunique().eq(3).all()

    forecast = forecaster.predict()
    assert list(forecast.columns) == COLUMNS and len(forecast) == forecaster.horizon
    expected_index = pd.date_range(y.index[-1], periods=forecaster.horizon + 1, freq=y.index.freq)[1:]
    assert forecast.index.equals(expected_index)
    assert (forecast["yhat_lower"] <= forecast["yhat"]).all() and (forecast["yhat"] <= forecast["yhat_upper"]).all()
    width = (forecast["yhat_upper"] - forecast["yhat_lower"]).to_numpy()
    third = len(width) // 3
    assert width[-third:].mean() > width[:third].mean()
    # predict() is the refitted forecast with its half-widths scaled by the calibration factor.
    raw, factor = forecaster.forecast_, forecaster.calibration_factor_
    assert factor > 0 and 0 <= forecaster.calibration_.coverage_before <= 1
    np.testing.assert_allclose(forecast["yhat_upper"] - forecast["yhat"], factor * (raw["yhat_upper"] - raw["yhat"]))


def test_combination_is_the_median_of_the_three_best_singles(fitted):
    _, forecaster = fitted["air_passengers"]
    board, members = forecaster.leaderboard_, forecaster.combination_members_
    singles = board[(board["status"] == "ok") & (board["model"] != COMBINATION)].sort_values("mase", kind="stable")
    assert members == tuple(singles["model"][~singles["model"].map(family).duplicated()][:3])
    forecasts = forecaster.fold_forecasts_
    members = forecasts[forecasts["model"].isin(members)].pivot_table(
        index=["fold", "step"], columns="model", values="yhat")
    combined = forecasts[forecasts["model"] == COMBINATION].set_index(["fold", "step"])["yhat"]
    np.testing.assert_allclose(combined.loc[members.index].to_numpy(), np.median(members.to_numpy(), axis=1))


def test_chosen_combination_refits_its_members_on_the_whole_series():
    rng = np.random.default_rng(3)
    t = np.arange(72)
    y = pd.Series(100 + 0.3 * t + 10 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 4, 72),
                  index=pd.date_range("2000-01-01", periods=72, freq="MS"))
    forecaster = AutoForecaster(season_length=12, horizon=12,
                                models=["seasonal_naive", "drift", "auto_ets", "auto_theta", COMBINATION]).fit(y)
    assert forecaster.chosen_ == COMBINATION  # on this seed the median beats each of its members
    assert forecaster.members_ == ("seasonal_naive", "auto_ets", "auto_theta")
    refits = np.stack([fit_predict(model, y, 12, 12).to_numpy() for model in forecaster.members_])
    np.testing.assert_allclose(forecaster.forecast_.to_numpy(), np.median(refits, axis=0))
    assert forecaster.forecast_.index.equals(pd.date_range("2006-01-01", periods=12, freq="MS"))


def _preferred(*folds_by_model: tuple[str, tuple[float, ...]]) -> tuple[str, str]:
    """prefer_default's first model and reason for these (model, fold MASEs) pairs."""
    scores = pd.DataFrame([{"model": model, "fold": fold, "mase": mase} for model, values in folds_by_model
                           for fold, mase in enumerate(values)])
    means = scores.groupby("model", sort=False)["mase"].mean()
    board = pd.DataFrame({"model": means.index, "mase": means.to_numpy(), "status": "ok"}).sort_values("mase")
    chosen, reason = prefer_default(board, scores)
    return chosen["model"].iloc[0], reason


def test_another_model_replaces_autoarima_only_with_a_fifth_lower_mase_in_every_fold():
    def choice(best_folds, arima_folds=(1.0, 1.0, 1.0), models=("theta", "auto_arima")):
        return _preferred(*zip(models, (best_folds, arima_folds), strict=True))

    assert choice((0.7, 0.75, 0.78))[0] == "theta"  # 26% lower, and in every fold
    assert choice((0.5, 0.6, 1.1)) == ("auto_arima", "auto_arima: the best, theta (mean MASE 0.733), is 27% lower, "
                                                     "not in every fold; another model needs 20% lower and every fold")
    assert choice((0.85, 0.9, 0.9))[0] == "auto_arima"  # lower in every fold, but only by 12%
    assert choice((0.85, 0.9, 0.9), models=("theta", "auto_ets"))[0] == "theta"  # no AutoARIMA: the lowest MASE
    # AutoARIMA worse than the seasonal naive forecast in every fold is clearly beaten too.
    assert choice((0.85, 0.9, 0.9), models=("seasonal_naive", "auto_arima"))[0] == "seasonal_naive"
    assert choice((0.85, 0.9, 1.1), models=("seasonal_naive", "auto_arima"))[0] == "auto_arima"


def test_autoarima_on_log_values_is_the_default_where_its_backtest_is_lower():
    on_log, on_y = ("auto_arima_log", (0.8, 0.8, 0.8)), ("auto_arima", (1.0, 1.0, 1.0))
    assert _preferred(on_y, on_log) == ("auto_arima_log", "auto_arima_log: the lowest mean backtest MASE")
    # Another model is measured against the better scale: 20% below AutoARIMA on y is not enough.
    chosen, reason = _preferred(on_y, on_log, ("theta", (0.7, 0.75, 0.78)))
    assert chosen == "auto_arima_log" and "only 7% lower" in reason
    assert _preferred(on_y, ("auto_arima_log", (1.1, 1.1, 1.1)), ("theta", (0.7, 0.75, 0.78)))[0] == "theta"


def test_autoarima_log_variant_models_log_values_where_it_can():
    y, spec = _series("air_passengers")
    variant = fit_predict("auto_arima_log", y, 12, 12)
    pd.testing.assert_frame_equal(variant, fit_predict("auto_arima", y, 12, 12, log_transform=True))
    assert not np.allclose(variant["yhat"], fit_predict("auto_arima", y, 12, 12)["yhat"])
    with pytest.raises(ModelSkipped, match="already puts every model on the log scale"):
        fit_predict("auto_arima_log", y, 12, 12, log_transform=True)
    with pytest.raises(ModelSkipped, match="1 zero or negative"):
        fit_predict("auto_arima_log", y.where(y.index != y.index[5], 0.0), 12, 12)
    with pytest.raises(ModelSkipped, match="season_length above 1"):
        fit_predict("auto_arima_log", y, 12, 1)
    # The combination takes the better of the two scales only, so its three members are three models.
    result = backtest(y, 12, 12, ["auto_arima", "auto_arima_log", "auto_ets", "seasonal_naive", COMBINATION])
    ranked = result.scores.groupby("model")["mase"].mean().drop(COMBINATION).sort_values()
    better = ranked[["auto_arima", "auto_arima_log"]].idxmin()
    assert result.members == tuple(model for model in ranked.index if model in {better, "auto_ets", "seasonal_naive"})


def test_backtest_never_sees_the_future():
    y, spec = _series("air_passengers")
    singles = [model for model in MODELS if not CANDIDATES[model].log]  # the spec's log_transform covers them
    clean = backtest(y, spec.horizon, spec.season_length, singles, log_transform=True)
    origins = fold_origins(len(y), spec.horizon, 3, spec.season_length)
    poisoned = y.copy()
    poisoned.iloc[origins[0]:] *= 1000  # everything from the first origin on is garbage
    dirty = backtest(poisoned, spec.horizon, spec.season_length, singles, log_transform=True)
    assert set(clean.status.values()) == {"ok"} and set(dirty.status.values()) == {"ok"}

    def fold(result, number):
        frame = result.forecasts[result.forecasts["fold"] == number]
        return frame.set_index(["model", "step"])[COLUMNS].sort_index()

    pd.testing.assert_frame_equal(fold(clean, 0), fold(dirty, 0))
    # The poison does reach the later folds' training data, so the check above is not vacuous.
    assert not np.allclose(fold(clean, 1).to_numpy(), fold(dirty, 1).to_numpy())


@pytest.mark.parametrize("noise, direction", [("trend", "too narrow"), ("white", "too wide")])
def test_conformal_calibration_moves_coverage_towards_nominal(noise, direction):
    rng = np.random.default_rng(0)
    index = pd.date_range("2000-01-01", periods=96, freq="MS")
    # Naive on a steady trend misses by more than its random-walk intervals allow; on white noise it is too
    # cautious (a random walk's spread grows with the horizon, the noise's does not).
    values = 50 + 2 * np.arange(96) + rng.normal(0, 1, 96) if noise == "trend" else 50 + rng.normal(0, 1, 96)
    forecaster = AutoForecaster(season_length=1, horizon=12, models=["naive"]).fit(pd.Series(values, index=index))
    calibration = forecaster.calibration_
    assert calibration.points == 36
    assert abs(calibration.coverage_after - 0.95) < abs(calibration.coverage_before - 0.95)
    if direction == "too narrow":
        assert calibration.coverage_before < 0.8 and calibration.factor > 1
    else:
        assert calibration.coverage_before == 1.0 and calibration.factor < 1


def test_calibration_keeps_intervals_that_already_cover_the_nominal_share():
    """57 of 60 backtest points inside (95%): a conformal factor would widen the intervals to cover all of them."""
    actual = np.where(np.arange(60) % 20 == 7, 2.0, 0.5)  # one miss per fold
    forecasts = pd.DataFrame({"fold": np.repeat([0, 1, 2], 20), "actual": actual, "yhat": 0.0, "yhat_lower": -1.0,
                              "yhat_upper": 1.0})
    calibration = calibrate(forecasts, 95)
    assert calibration.coverage_before == 0.95
    assert calibration.factor == 1.0 and calibration.coverage_after == 0.95
    assert calibrate(forecasts.assign(yhat_upper=0.25), 95).factor > 1  # too narrow: widened


def test_short_series_skips_seasonal_models_with_the_reason():
    y, _ = _series("air_passengers")
    short = y.iloc[:18]
    events = []
    forecaster = AutoForecaster(season_length=None, horizon=6).evaluate(short, progress=events.append).refit(short)
    assert forecaster.season_length_ == 12  # from 'MS'
    status = forecaster.leaderboard_.set_index("model")["status"]
    # one progress event per fitted model, in order, a skipped one with its reason and no score
    assert [e["number"] for e in events] == list(range(1, len(events) + 1)) and events[-1]["of"] == len(events)
    assert {e["model"]: e["status"] for e in events} == {m: status[m] for m in status.index if m in
                                                         {e["model"] for e in events}}
    assert all((e["mase"] is None) == e["status"].startswith("skipped") for e in events)
    for model in SEASONAL:
        assert status[model].startswith("skipped") and "two full seasons" in status[model], status[model]
    assert (status[["naive", "drift", "prophet"]] == "ok").all()
    assert forecaster.chosen_ not in SEASONAL
    assert len(forecaster.predict()) == 6
    with pytest.raises(ValueError, match="no model can forecast") as error:
        AutoForecaster(season_length=12, horizon=6, models=["seasonal_naive", "auto_ets"]).fit(short)
    assert "seasonal_naive" in str(error.value) and "auto_ets" in str(error.value)


def test_degenerate_series_raise_clear_errors():
    index = pd.date_range("2020-01-01", periods=36, freq="MS")
    with pytest.raises(ValueError, match="constant"):
        AutoForecaster(horizon=6).fit(pd.Series(5.0, index=index))
    with pytest.raises(ValueError, match="needs at least"):
        AutoForecaster(horizon=6).fit(pd.Series([1.0, 2.0, 3.0], index=index[:3]))
    with pytest.raises(ValueError, match="strictly positive"):
        AutoForecaster(horizon=6, log_transform=True).fit(pd.Series(np.arange(36.0), index=index))


def test_fits_are_reproducible(fitted):
    y, first = fitted["air_passengers"]
    second = AutoForecaster(season_length=first.season_length, horizon=first.horizon,
                            log_transform=first.log_transform).fit(y)
    without_time = [board.drop(columns="seconds") for board in (first.leaderboard_, second.leaderboard_)]
    pd.testing.assert_frame_equal(*without_time)
    pd.testing.assert_frame_equal(first.fold_forecasts_, second.fold_forecasts_)
    pd.testing.assert_frame_equal(first.predict(), second.predict())
    assert first.calibration_ == second.calibration_


@pytest.mark.parametrize("freq, expected", [("YS", 1), ("A", 1), ("QS", 4), ("MS", 12), ("M", 12), ("W", 52),
                                            ("D", 7), ("B", 5), ("h", 24), ("H", 24), ("2h", 12)])
def test_season_length_for_frequency(freq, expected):
    assert season_length_for(freq) == expected


def test_season_length_for_unknown_frequency():
    with pytest.raises(ValueError, match="set season_length"):
        season_length_for("min")
    with pytest.raises(ValueError, match="not a pandas frequency"):
        season_length_for("fortnightly")


def test_long_seasons_go_to_stl_models_and_skip_seasonal_arima_and_ets():
    """Weekly data (season 52): AutoARIMA's seasonal search would take minutes and AutoETS would drop the season
    without saying so; both skip with the reason and the STL models carry the season."""
    weeks = pd.date_range("2015-01-04", periods=4 * 52, freq="W-SUN")
    phase = 2 * np.pi * np.arange(len(weeks)) / 52
    y = pd.Series(100 + 10 * np.sin(phase) + np.random.default_rng(0).normal(0, 1, len(weeks)), index=weeks)
    board = AutoForecaster(horizon=13, folds=2).evaluate(y).leaderboard_.set_index("model")
    for model in ("auto_arima", "auto_arima_log", "auto_ets"):
        assert board.loc[model, "status"].startswith("skipped: ") and "mstl_ets" in board.loc[model, "status"]
    assert (board.loc[["mstl_ets", "mstl_arima", "auto_theta"], "status"] == "ok").all()
    assert board.loc["mstl_ets", "mase"] < board.loc["naive", "mase"]  # it does model the season


def test_a_stored_backtest_refits_to_the_same_forecast(fitted):
    """The forecast step refits from the backtest step's stored leaderboard and folds, not a second backtest."""
    y, forecaster = fitted["uk_driver_deaths"]
    restored = AutoForecaster(season_length=forecaster.season_length_, horizon=forecaster.horizon,
                              log_transform=forecaster.log_transform).restore(
        forecaster.leaderboard_, forecaster.fold_forecasts_, forecaster.combination_members_,
        forecaster.season_length_).refit(y)
    assert restored.chosen_ == forecaster.chosen_
    pd.testing.assert_frame_equal(restored.predict(), forecaster.predict())
    with pytest.raises(ValueError, match="before refit"):
        AutoForecaster().refit(y)


def test_diagnostics_tell_white_noise_from_a_trending_seasonal_series(fitted):
    y, _ = fitted["air_passengers"]
    trending = diagnose(y, 12)
    assert not trending.stationary and trending.differences >= 1 and trending.seasonal_strength > 0.6
    assert list(trending.components.columns) == ["observed", "trend", "seasonal", "remainder"]
    months = pd.date_range("2000-01-01", periods=120, freq="MS")
    noise = pd.Series(np.random.default_rng(1).normal(size=120), index=months)
    calm = diagnose(noise, 12)
    assert calm.stationary and calm.differences == 0 and calm.trend_strength < 0.3
    with pytest.raises(ValueError, match="non-constant"):
        diagnose(pd.Series(3.0, index=noise.index), 12)


def test_prophet_country_holidays_from_the_spec_forecast_a_holiday_effect(tmp_path):
    """Daily visits that jump on US holidays: Prophet with the spec's country holidays forecasts the jump on
    Christmas, Prophet without them does not."""
    days = pd.date_range("2018-01-01", "2020-12-10", freq="D")
    holidays = pd.DatetimeIndex(sorted(make_holidays_df(year_list=[2018, 2019, 2020], country="US")["ds"]))
    rng = np.random.default_rng(0)
    visits = 100 + 10 * (days.dayofweek >= 5) + 60 * days.isin(holidays) + rng.normal(0, 3, len(days))
    pd.DataFrame({"day": days, "visits": visits}).to_csv(tmp_path / "visits.csv", index=False)
    body = "file: visits.csv\ntime_column: day\nvalue_column: visits\nfreq: D\nhorizon: 21\n"
    (tmp_path / "visits.yaml").write_text(body + "prophet: {country_holidays: US, changepoint_prior_scale: 0.01}\n")
    spec = load_series_spec(tmp_path / "visits.yaml")
    assert spec.prophet == {"country_holidays": "US", "changepoint_prior_scale": 0.01}
    y = read_series(spec)
    with_holidays = AutoForecaster.from_spec(spec, models=["prophet"]).fit(y).predict()["yhat"]
    without = AutoForecaster.from_spec(spec, models=["prophet"], prophet=None).fit(y).predict()["yhat"]
    christmas, ordinary = pd.Timestamp("2020-12-25"), pd.Timestamp("2020-12-22")  # both weekdays
    assert with_holidays[christmas] - with_holidays[ordinary] > 40
    assert abs(without[christmas] - without[ordinary]) < 10

    for setting, message in [("{country_holidays: Atlantis}", "not a country code"),
                             ("{seasonality_mode: exponential}", "additive or multiplicative"),
                             ("{changepoint_prior_scale: 0}", "positive number"),
                             ("{holidays: US}", r"unknown prophet settings \['holidays'\]")]:
        (tmp_path / "visits.yaml").write_text(body + f"prophet: {setting}\n")
        with pytest.raises(SpecError, match=message):
            load_series_spec(tmp_path / "visits.yaml")
    (tmp_path / "visits.yaml").write_text(body.replace("freq: D", "freq: MS") + "prophet: {country_holidays: US}\n")
    with pytest.raises(SpecError, match="needs daily or finer data"):
        load_series_spec(tmp_path / "visits.yaml")


def test_a_spec_without_freq_infers_it_from_the_timestamps(tmp_path):
    body = "file: visits.csv\ntime_column: week\nvalue_column: visits\nhorizon: 8\nfolds: 5\n"
    (tmp_path / "visits.yaml").write_text(body)
    weeks = pd.date_range("2015-01-04", periods=150, freq="W-SUN")
    frame = pd.DataFrame({"week": weeks.strftime("%Y-%m-%d"), "visits": np.arange(150.0) % 13})
    frame.to_csv(tmp_path / "visits.csv", index=False)
    spec = load_series_spec(tmp_path / "visits.yaml")
    assert spec.freq is None and spec.folds == 5
    y = read_series(spec)
    assert y.index.freqstr == "W-SUN" and season_length_for(y.index.freqstr) == 52
    assert AutoForecaster.from_spec(spec).folds == 5
    frame.drop(index=40).to_csv(tmp_path / "visits.csv", index=False)
    with pytest.raises(ValueError, match=r"visits\.csv: time column 'week' has no single step to infer the frequency "
                                         r"from \(steps 7 days 00:00:00 x147, 14 days 00:00:00 x1; .*set freq in"):
        read_series(spec)
