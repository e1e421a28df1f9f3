"""Forecasts per time series: the data, its diagnostics, a rolling-origin backtest of every model, and the chosen
model's forecast with calibrated intervals."""

import dagster as dg
import pandas as pd
from dagster_mlflow.resources import MlFlow

from tmiv_assets.defs.assets.data import stored_version_metadata
from tmiv_assets.defs.metadata import bad_input_as_failure, engine_errors_as_failure, markdown_table
from tmiv_assets.defs.partitions import series_partitions
from tmiv_assets.ml.data.ingest import split_series
from tmiv_assets.ml.forecasting.auto import AutoForecaster
from tmiv_assets.ml.forecasting.diagnostics import diagnose
from tmiv_assets.ml.forecasting.models import season_length_for
from tmiv_assets.ml.plots import backtest_plot, decomposition_plot, figure_to_markdown, forecast_plot
from tmiv_assets.resources.artifacts import ArtifactStore
from tmiv_assets.resources.data_source import DataSource
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.tracking import log_forecast


def stored_series(store: FeatureStore, name: str, version: int | str = "latest"
                  ) -> tuple[pd.Series, pd.DataFrame | None, dict, int]:
    """(observed series at its frequency, its regressors over the history and the future rows or None, the spec's
    forecasting settings, version) of a `series_data` version."""
    stored = store.version("series_data", name, version)
    frame, lineage = store.load("series_data", name, stored.version), store.lineage("series_data", name, stored.version)
    table = frame.set_index(pd.DatetimeIndex(frame["ds"], freq=lineage["freq"])).drop(columns="ds")
    series, regressors = split_series(table, name)
    return series, regressors, lineage["settings"], stored.version


def pretraining_series(context: dg.AssetExecutionContext, store: FeatureStore, name: str, freq: str,
                       versions: dict[str, int] | None = None) -> dict[str, tuple[pd.Series, int]]:
    """The other series partitions at the same frequency (their latest stored data, or the given versions): what
    the transfer network pre-trains on."""
    if versions is None:
        latest = {s: store.latest("series_data", s)
                  for s in sorted(context.instance.get_dynamic_partitions(series_partitions.name)) if s != name}
        versions = {s: stored.version for s, stored in latest.items()
                    if stored is not None and store.lineage("series_data", s, stored.version)["freq"] == freq}
    return {other: (stored_series(store, other, version)[0], version) for other, version in versions.items()}


@dg.asset(partitions_def=series_partitions, group_name="forecasts", kinds={"duckdb", "parquet"})
def series_data(context: dg.AssetExecutionContext, source: DataSource, store: FeatureStore) -> dg.MaterializeResult:
    """The series file read by its spec and checked (regular, no gaps, duplicates or missing values), with its
    regressors and their future rows, as a feature-store version that the later steps read."""
    name = context.partition_key
    with bad_input_as_failure(name):
        spec = source.series_spec(name)
        table = source.read_series_frame(spec)
    freq = table.index.freqstr  # the spec's, or inferred from the timestamps
    settings = {"season_length": spec.season_length or season_length_for(freq), "horizon": spec.horizon,
                "folds": spec.folds, "log_transform": spec.log_transform, "network": spec.network,
                "prophet": spec.prophet}
    version = store.save("series_data", name, table.rename_axis("ds").reset_index(),
                         {"file": str(spec.path), "freq": freq, "settings": settings})
    series, _ = split_series(table, name)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(series), "first": str(series.index[0].date()),
        "last": str(series.index[-1].date()), "freq": freq, **settings,
        "regressors": list(spec.regressors), "future_rows": len(table) - len(series),
        "source_file": dg.MetadataValue.path(str(spec.path)), **stored_version_metadata(version)})


@dg.asset(partitions_def=series_partitions, deps=[series_data], group_name="forecasts", kinds={"statsmodels"})
def series_diagnostics(context: dg.AssetExecutionContext, store: FeatureStore) -> dg.MaterializeResult:
    """STL decomposition, ADF and KPSS tests and the differencing AutoARIMA's tests choose."""
    name = context.partition_key
    series, _, settings, _ = stored_series(store, name)
    with engine_errors_as_failure(name, "series diagnostics"):
        found = diagnose(series, settings["season_length"])
    context.log.info(f"{name}: {'stationary' if found.stationary else 'not stationary'} (ADF p {found.adf_pvalue}, "
                     f"KPSS p {found.kpss_pvalue}); d={found.differences}, D={found.seasonal_differences}")
    return dg.MaterializeResult(metadata={
        "adf_pvalue": found.adf_pvalue, "kpss_pvalue": found.kpss_pvalue, "stationary": found.stationary,
        "differences": found.differences, "seasonal_differences": found.seasonal_differences,
        "trend_strength": found.trend_strength,
        **({"seasonal_strength": found.seasonal_strength} if found.seasonal_strength is not None else {}),
        "plot": dg.MetadataValue.md(figure_to_markdown(decomposition_plot(found.components, name), name))})


@dg.asset(partitions_def=series_partitions, deps=[series_data], group_name="forecasts",
          kinds={"statsforecast", "prophet"})
def forecast_backtest(context: dg.AssetExecutionContext, store: FeatureStore) -> dg.MaterializeResult:
    """Every candidate (baselines, AutoARIMA, AutoETS, AutoTheta, STL + ETS / ARIMA, Prophet, LSTM, GRU, TCN,
    Transformer, a network pre-trained on the other series of the frequency and fine-tuned, the median of the
    best three) forecast from rolling origins on an expanding window; leaderboard by mean MASE, every fold kept."""
    name = context.partition_key
    series, regressors, settings, data_version = stored_series(store, name)
    # Only a named network uses them (to pre-train the transfer network).
    networks = settings["network"].get("architectures")
    others = pretraining_series(context, store, name, series.index.freqstr) if networks else {}
    with engine_errors_as_failure(name, "no forecasting model could run"):
        auto = AutoForecaster(**settings, pretraining=[s for s, _ in others.values()]).evaluate(
            series, progress=lambda event: context.log.info(
                f"model {event['number']}/{event['of']} {event['model']}: "
                f"{'mean MASE ' + format(event['mase'], '.3f') if event['mase'] is not None else event['status']} "
                f"in {event['seconds']:.1f}s"), regressors=regressors)
    board = auto.leaderboard_
    lineage = {"series_data_version": data_version, "members": list(auto.combination_members_),
               "season_length": auto.season_length_, "pretraining": {s: v for s, (_, v) in others.items()}}
    store.save("forecast_leaderboard", name, board, lineage)
    version = store.save("forecast_backtest", name, auto.fold_forecasts_, lineage)
    chosen = board.iloc[0]  # the leaderboard lists the chosen model (or combination) first
    context.log.info(f"Backtest of {name}: chose {auto.choice_} ({int((board['status'] == 'ok').sum())} models over "
                     f"{auto.fold_scores_['fold'].nunique()} folds)")
    return dg.MaterializeResult(metadata={
        "chosen_model": chosen["model"], "chosen_mase": float(chosen["mase"]), "choice": auto.choice_,
        "regressors": list(auto.regressors_),
        "folds": int(auto.fold_scores_["fold"].nunique()), "leaderboard": markdown_table(board.round(4)),
        "fold_scores": markdown_table(auto.fold_scores_.round(4)),
        "plot": dg.MetadataValue.md(figure_to_markdown(
            backtest_plot(series, auto.fold_forecasts_, chosen["model"]), f"{name} backtest")),
        **stored_version_metadata(version)})


@dg.asset(partitions_def=series_partitions, deps=[forecast_backtest], group_name="forecasts",
          kinds={"statsforecast", "prophet", "mlflow"})
def forecast(context: dg.AssetExecutionContext, store: FeatureStore, artifacts: ArtifactStore,
             mlflow: dg.ResourceParam[MlFlow]) -> dg.MaterializeResult:
    """The backtest's chosen model refitted on the whole series: the spec's horizon with a 95% interval scaled so
    the backtest's coverage matches; logged to MLflow."""
    name = context.partition_key
    lineage = store.lineage("forecast_backtest", name)
    series, regressors, settings, _ = stored_series(store, name, lineage["series_data_version"])
    others = pretraining_series(context, store, name, series.index.freqstr, lineage["pretraining"])
    auto = AutoForecaster(**settings, pretraining=[s for s, _ in others.values()]).restore(
        store.load("forecast_leaderboard", name), store.load("forecast_backtest", name), lineage["members"],
        lineage["season_length"])
    with engine_errors_as_failure(name, "no forecasting model could be refitted"):
        auto.refit(series, regressors)
    predicted = auto.predict().rename_axis("ds").reset_index()
    path = artifacts.write_frame(predicted, "forecasts", f"{name}.parquet")
    run_id = log_forecast(mlflow, name, auto, predicted)
    board = auto.leaderboard_.set_index("model")
    chosen, calibration = board.loc[auto.chosen_], auto.calibration_
    context.log.info(f"Forecast {name}: {auto.chosen_} (backtest MASE {chosen['mase']:.3f}, seasonal naive "
                     f"{board.loc['seasonal_naive', 'mase']:.3f}); {auto.horizon} steps")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(predicted),
        "chosen_model": auto.chosen_ + (f" ({', '.join(auto.members_)})" if len(auto.members_) > 1 else ""),
        "backtest_mase": float(chosen["mase"]), "backtest_smape_pct": float(chosen["smape"]),
        "seasonal_naive_mase": float(board.loc["seasonal_naive", "mase"]), "horizon": auto.horizon,
        "season_length": auto.season_length_, "observations": len(series),
        "interval_coverage_before": calibration.coverage_before, "interval_coverage_after": calibration.coverage_after,
        "interval_factor": calibration.factor, "leaderboard": markdown_table(auto.leaderboard_.round(4)),
        "forecast": markdown_table(predicted.head(12)), "mlflow_run_id": run_id,
        "plot": dg.MetadataValue.md(figure_to_markdown(forecast_plot(series, predicted, name), name)),
        "path": dg.MetadataValue.path(str(path)),
    })
