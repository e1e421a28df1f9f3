"""Forecasts per time series: the model a rolling-origin backtest chose, with calibrated intervals."""

import dagster as dg

from tmiv_assets.defs.metadata import bad_input_as_failure, engine_errors_as_failure, markdown_table
from tmiv_assets.defs.partitions import series_partitions
from tmiv_assets.ml.forecasting.auto import AutoForecaster
from tmiv_assets.ml.plots import backtest_plot, figure_to_markdown, forecast_plot
from tmiv_assets.resources.artifacts import ArtifactStore
from tmiv_assets.resources.data_source import DataSource


@dg.asset(partitions_def=series_partitions, group_name="forecasts", kinds={"statsforecast", "prophet"})
def forecast(context: dg.AssetExecutionContext, source: DataSource, artifacts: ArtifactStore) -> dg.MaterializeResult:
    """Every candidate (naive, seasonal naive, drift, AutoARIMA, AutoETS, AutoTheta, Prophet, the median of the
    best three) scored by a rolling-origin backtest; the lowest mean MASE forecasts the spec's horizon, its 95%
    interval scaled so the backtest's coverage matches."""
    name = context.partition_key
    with bad_input_as_failure(name):
        spec = source.series_spec(name)
        series = source.read_series(spec)
    with engine_errors_as_failure(name, "no forecasting model could run"):
        auto = AutoForecaster.from_spec(spec).fit(series)
    predicted = auto.predict().rename_axis("ds").reset_index()
    path = artifacts.write_frame(predicted, "forecasts", f"{name}.parquet")
    board = auto.leaderboard_.set_index("model")
    chosen, calibration = board.loc[auto.chosen_], auto.calibration_
    context.log.info(f"Forecast {name}: {auto.chosen_} chosen by backtest MASE {chosen['mase']:.3f} (seasonal naive "
                     f"{board.loc['seasonal_naive', 'mase']:.3f}); {spec.horizon} steps")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(predicted),
        "chosen_model": auto.chosen_ + (f" ({', '.join(auto.members_)})" if len(auto.members_) > 1 else ""),
        "backtest_mase": float(chosen["mase"]), "backtest_smape_pct": float(chosen["smape"]),
        "seasonal_naive_mase": float(board.loc["seasonal_naive", "mase"]),
        "backtest_folds": int(auto.fold_scores_["fold"].nunique()), "horizon": spec.horizon,
        "season_length": auto.season_length_, "observations": len(series),
        "interval_coverage_before": calibration.coverage_before, "interval_coverage_after": calibration.coverage_after,
        "interval_factor": calibration.factor,
        "leaderboard": markdown_table(auto.leaderboard_.round(4)),
        "forecast": markdown_table(predicted.head(12)),
        "plot": dg.MetadataValue.md(figure_to_markdown(forecast_plot(series, predicted, name), name)),
        "backtest_plot": dg.MetadataValue.md(figure_to_markdown(
            backtest_plot(series, auto.fold_forecasts_, auto.chosen_), f"{name} backtest")),
        "path": dg.MetadataValue.path(str(path)),
    })
