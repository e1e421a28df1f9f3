"""Regressors (columns known ahead of time) in forecasting: read with their future rows from the series file, used
by the ARIMA models, Prophet and the sequence networks, never seen beyond a backtest fold's horizon, and every bad
regressor a clear error. The series is built so a model that ignores the regressor cannot forecast it."""

import re

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from tmiv_assets.defs.jobs import FORECAST_ASSETS
from tmiv_assets.ml.data.ingest import DataValidationError, read_series_frame
from tmiv_assets.ml.data.spec import SpecError, load_series_spec
from tmiv_assets.ml.forecasting.auto import AutoForecaster
from tmiv_assets.ml.forecasting.backtest import backtest, fold_origins
from tmiv_assets.ml.forecasting.models import COLUMNS, fit_predict
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets_tests.conftest import PROJECT_ROOT, read_series, resources_for

HORIZON = 12
LIFT = 40.0  # the promotion's effect on sales


def _promoted(months: int = 120, ahead: int = HORIZON, seed: int = 0) -> tuple[pd.Series, pd.DataFrame]:
    """Monthly sales with a season and a promotion in irregular months (known a year ahead), and the promotion
    flag over the history and `ahead` months after it; the last year's promotions differ from the year before."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2010-01-01", periods=months + ahead, freq="MS")
    promotion = (rng.random(len(index)) < 0.3).astype(float)
    season = 10 * np.sin(2 * np.pi * np.arange(len(index)) / 12)
    sales = 200 + season + LIFT * promotion + rng.normal(0, 2, len(index))
    return pd.Series(sales[:months], index=index[:months]), pd.DataFrame({"promotion": promotion}, index=index)


def _holdout_mae(model: str, months: int, use_promotion: bool) -> float:
    y, promotion = _promoted(months=months + HORIZON, ahead=0)
    forecast = fit_predict(model, y.iloc[:-HORIZON], HORIZON, 12, regressors=promotion if use_promotion else None)
    return float(np.mean(np.abs(forecast["yhat"].to_numpy() - y.to_numpy()[-HORIZON:])))


# A network needs more windows than 120 months give to learn the effect (holdout MAE 11 there, 2 at 240 months).
@pytest.mark.parametrize(("model", "months"), [("auto_arima", 120), ("prophet", 120), ("gru", 240)])
def test_models_that_take_regressors_forecast_their_effect(model, months):
    """Noise is 2; the promotion moves sales by 40 in a third of the months, unpredictably from the past."""
    with_promotion, without = _holdout_mae(model, months, True), _holdout_mae(model, months, False)
    assert with_promotion < 4 and with_promotion < without / 2, (with_promotion, without)


def test_prophet_takes_a_regressor_whatever_its_name():
    """Prophet reserves the names of its own components; a column called `trend` or `holidays` is a regressor."""
    y, promotion = _promoted()
    expected = fit_predict("prophet", y, HORIZON, 12, regressors=promotion)
    for reserved in ("trend", "holidays"):
        renamed = fit_predict("prophet", y, HORIZON, 12, regressors=promotion.rename(columns={"promotion": reserved}))
        pd.testing.assert_frame_equal(renamed, expected)


def test_models_without_regressor_support_ignore_them():
    y, promotion = _promoted()
    plain = fit_predict("auto_ets", y, HORIZON, 12)
    pd.testing.assert_frame_equal(plain, fit_predict("auto_ets", y, HORIZON, 12, regressors=promotion))


def test_auto_forecaster_uses_regressors_and_forecasts_promoted_months_higher():
    y, promotion = _promoted()
    auto = AutoForecaster(season_length=12, horizon=HORIZON,
                          models=["seasonal_naive", "auto_ets", "auto_arima", "prophet"]).fit(y, promotion)
    assert auto.regressors_ == ("promotion",)
    assert auto.chosen_ in ("auto_arima", "prophet"), auto.leaderboard_
    board = auto.leaderboard_.set_index("model")
    assert board["regressors"].to_dict() == {"seasonal_naive": "", "auto_ets": "", "auto_arima": "promotion",
                                             "prophet": "promotion"}
    assert board.loc[auto.chosen_, "mase"] < 0.6 * board.loc["auto_ets", "mase"]
    forecast = auto.predict()
    promoted = promotion["promotion"].reindex(forecast.index).to_numpy(bool)
    assert promoted.any() and (~promoted).any()
    gap = forecast["yhat"][promoted].mean() - forecast["yhat"][~promoted].mean()
    assert abs(gap - LIFT) < 10, gap


def test_backtest_sees_regressors_only_up_to_each_folds_horizon():
    y, promotion = _promoted()
    models = ["auto_arima", "prophet"]
    clean = backtest(y, HORIZON, 12, models, regressors=promotion)
    first = fold_origins(len(y), HORIZON, 3, 12)[0]
    poisoned_y, poisoned_x = y.copy(), promotion.copy()
    poisoned_y.iloc[first:] *= 1000
    poisoned_x.iloc[first + HORIZON:] = 1 - poisoned_x.iloc[first + HORIZON:]  # flip every later promotion
    dirty = backtest(poisoned_y, HORIZON, 12, models, regressors=poisoned_x)

    def fold(result, number):
        frame = result.forecasts[result.forecasts["fold"] == number]
        return frame.set_index(["model", "step"])[COLUMNS].sort_index()

    pd.testing.assert_frame_equal(fold(clean, 0), fold(dirty, 0))
    assert not np.allclose(fold(clean, 1).to_numpy(), fold(dirty, 1).to_numpy())


def test_a_regressor_constant_over_the_history_is_left_out():
    y, promotion = _promoted()
    regressors = promotion.assign(campaign=np.r_[np.zeros(len(y)), np.ones(HORIZON)])  # starts after the history
    auto = AutoForecaster(season_length=12, horizon=HORIZON, models=["auto_arima"]).fit(y, regressors)
    assert auto.regressors_ == ("promotion",)


def test_regressors_must_cover_the_history_and_the_horizon():
    y, promotion = _promoted(ahead=5)
    auto = AutoForecaster(season_length=12, horizon=HORIZON, models=["auto_arima"]).evaluate(y, regressors=promotion)
    with pytest.raises(ValueError, match=r"no rows for 7 timestamps .* the 12 steps ahead"):
        auto.refit(y, promotion)
    holes = promotion.copy()
    holes.iloc[3] = np.nan
    with pytest.raises(ValueError, match=r"regressors \['promotion'\] have missing or infinite values"):
        AutoForecaster(season_length=12, horizon=HORIZON, models=["auto_arima"]).evaluate(y, regressors=holes)


def _write(tmp_path, frame: pd.DataFrame, extra: str = "regressors: [promotion]\n") -> object:
    frame.to_csv(tmp_path / "sales.csv", index=False)
    (tmp_path / "sales.yaml").write_text("file: sales.csv\ntime_column: month\nvalue_column: sales\nfreq: MS\n"
                                         f"horizon: {HORIZON}\n" + extra)
    return load_series_spec(tmp_path / "sales.yaml")


def _file(ahead: int = HORIZON) -> pd.DataFrame:
    y, promotion = _promoted(ahead=ahead)
    return pd.DataFrame({"month": promotion.index.strftime("%Y-%m-%d"), "sales": y.reindex(promotion.index).to_numpy(),
                         "promotion": promotion["promotion"].to_numpy()})


def test_series_file_with_future_regressor_rows(tmp_path):
    spec = _write(tmp_path, _file())
    assert spec.regressors == ("promotion",)
    frame = read_series_frame(spec)
    assert list(frame.columns) == ["y", "promotion"] and len(frame) == 120 + HORIZON
    assert frame["y"].iloc[-HORIZON:].isna().all() and frame["y"].iloc[:-HORIZON].notna().all()
    assert frame.index.freqstr == "MS"
    observed = read_series(spec)
    assert len(observed) == 120 and observed.index.freqstr == "MS" and observed.index[-1] == pd.Timestamp("2019-12-01")


@pytest.mark.parametrize(("breakage", "error", "message"), [
    (lambda f: f.iloc[:-5], DataValidationError,
     r"sales\.csv: regressors \['promotion'\] are given for 7 rows after the last observation \(2019-12-01\); "
     r"forecasting 12 steps needs 12: add the future rows"),
    (lambda f: f.assign(promotion=f["promotion"].mask(f.index == 125)), DataValidationError,
     r"regressor column 'promotion' has 1 missing values; .* future rows included \(first at 2020-06-01\)"),
    (lambda f: f.assign(promotion=f["promotion"].astype(object).mask(f.index == 3, "yes")), DataValidationError,
     r"column 'promotion' has 1 non-numeric values \(e\.g\. \['yes'\]\)"),
    (lambda f: f.assign(sales=f["sales"].mask(f.index == 50)), DataValidationError,
     r"value column 'sales' has 1 missing or non-numeric values; fill them before forecasting \(first at 2014-03-01\)"),
    (lambda f: f.drop(index=126), DataValidationError, r"time column 'month' has 1 gaps at frequency 'MS'"),
    (lambda f: f.drop(columns="promotion"), DataValidationError, r"column 'promotion' not found"),
])
def test_bad_regressor_rows_fail_naming_the_column_and_fix(tmp_path, breakage, error, message):
    spec = _write(tmp_path, breakage(_file()))
    with pytest.raises(error, match=message):
        read_series_frame(spec)


@pytest.mark.parametrize(("regressors", "message"), [
    ("[sales]", r"other than the time and value columns.*remove \['sales'\]"),
    ("[promotion, promotion]", "the repeated names"),
    ("{promotion: 1}", "must be a list of column names"),
])
def test_bad_regressor_specs_fail_at_load(tmp_path, regressors, message):
    with pytest.raises(SpecError, match=message):
        _write(tmp_path, _file(), f"regressors: {regressors}\n")


def test_forecast_assets_carry_regressors_from_the_file_to_the_forecast(tmp_path):
    data_dir, home = tmp_path / "data", tmp_path / "tmiv"
    (data_dir / "series").mkdir(parents=True)
    _write(data_dir / "series", _file())
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("series", ["sales"])
        result = dg.materialize(FORECAST_ASSETS, resources=resources_for(home, data_dir), partition_key="sales",
                                instance=instance)
    assert result.success
    metadata = {asset: result.asset_materializations_for_node(asset)[0].metadata
                for asset in ("series_data", "forecast_backtest", "forecast")}
    assert metadata["series_data"]["regressors"].value == ["promotion"]
    assert metadata["series_data"]["future_rows"].value == HORIZON
    assert metadata["forecast_backtest"]["regressors"].value == ["promotion"]
    forecast = pd.read_parquet(home / "forecasts" / "sales.parquet").set_index("ds")
    assert len(forecast) == HORIZON
    promoted = _promoted()[1]["promotion"].reindex(forecast.index).to_numpy(bool)
    gap = forecast["yhat"][promoted].mean() - forecast["yhat"][~promoted].mean()
    assert re.match(r"auto_arima|prophet|median_top3", metadata["forecast"]["chosen_model"].value)
    assert abs(gap - LIFT) < 12, gap
    stored = FeatureStore(home=str(home)).load("series_data", "sales")
    assert stored["y"].isna().sum() == HORIZON and stored["promotion"].notna().all()


def test_the_readmes_series_spec_example_loads_and_reads(tmp_path):
    """The README's `Adding a series` YAML, as written, on a sales.csv shaped as it describes."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    example = re.search(r"Adding a series: .*?```yaml\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "sales.yaml").write_text(example)
    _file().rename(columns={"sales": "units"}).to_csv(tmp_path / "sales.csv", index=False)
    spec = load_series_spec(tmp_path / "sales.yaml")
    assert spec.regressors == ("promotion",) and spec.horizon == HORIZON and spec.folds == 3
    frame = read_series_frame(spec)
    assert frame["y"].iloc[-HORIZON:].isna().all() and len(read_series(spec)) == 120
