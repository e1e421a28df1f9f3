"""Forecasts per time series with prediction intervals."""

import dagster as dg

from tmiv_assets.defs.metadata import bad_input_as_failure, markdown_table
from tmiv_assets.defs.partitions import series_partitions
from tmiv_assets.ml.forecasting import SarimaForecaster
from tmiv_assets.ml.ingest import read_series
from tmiv_assets.ml.plots import figure_to_markdown, forecast_plot
from tmiv_assets.resources.data_source import DataSource
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.files import atomic_path


@dg.asset(partitions_def=series_partitions, group_name="forecasts", kinds={"statsmodels"})
def forecast(context: dg.AssetExecutionContext, source: DataSource, store: FeatureStore) -> dg.MaterializeResult:
    """Seasonal ARIMA forecast over the spec's horizon, with a 95% interval and a holdout backtest."""
    name = context.partition_key
    with bad_input_as_failure(name):
        spec = source.series_spec(name)
        series = read_series(spec)
        forecaster = SarimaForecaster(season_length=spec.season_length, log_transform=spec.log_transform)
        backtest = forecaster.backtest(series, spec.horizon)
        predicted = forecaster.fit(series).predict(spec.horizon)
    path = store.artifact_path("forecasts", f"{name}.parquet")
    with atomic_path(path) as temporary:
        predicted.to_parquet(temporary, index=False)
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
