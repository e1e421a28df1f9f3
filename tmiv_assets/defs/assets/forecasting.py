"""Forecasts per time series with prediction intervals."""

import dagster as dg

from tmiv_assets.defs.metadata import bad_input_as_failure, markdown_table
from tmiv_assets.defs.partitions import series_partitions
from tmiv_assets.ml.forecasting.sarima import SarimaForecaster
from tmiv_assets.ml.plots import figure_to_markdown, forecast_plot
from tmiv_assets.resources.artifacts import ArtifactStore
from tmiv_assets.resources.data_source import DataSource


@dg.asset(partitions_def=series_partitions, group_name="forecasts", kinds={"statsmodels"})
def forecast(context: dg.AssetExecutionContext, source: DataSource, artifacts: ArtifactStore) -> dg.MaterializeResult:
    """Seasonal ARIMA forecast over the spec's horizon, with a 95% interval and a holdout backtest."""
    name = context.partition_key
    with bad_input_as_failure(name):
        spec = source.series_spec(name)
        series = source.read_series(spec)
        forecaster = SarimaForecaster(season_length=spec.season_length, log_transform=spec.log_transform)
        backtest = forecaster.backtest(series, spec.horizon)
        predicted = forecaster.fit(series).predict(spec.horizon)
    path = artifacts.write_frame(predicted, "forecasts", f"{name}.parquet")
    context.log.info(f"Forecast {name}: {spec.horizon} steps, backtest MAPE {backtest.mape:.2f}% "
                     f"(seasonal naive {backtest.seasonal_naive_mape:.2f}%)")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(predicted),
        "horizon": spec.horizon,
        "observations": len(series),
        "backtest_mape_pct": backtest.mape,
        "seasonal_naive_mape_pct": backtest.seasonal_naive_mape,
        "aic": forecaster.aic_,
        "forecast": markdown_table(predicted.head(12)),
        "plot": dg.MetadataValue.md(figure_to_markdown(forecast_plot(series, predicted, name), name)),
        "path": dg.MetadataValue.path(str(path)),
    })
