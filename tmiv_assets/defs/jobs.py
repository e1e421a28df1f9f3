"""Jobs: what `dagster job execute`, sensors and schedules launch."""

import dagster as dg

from tmiv_assets.defs.assets.automl import model_candidates, model_leaderboard
from tmiv_assets.defs.assets.data import clean_dataset, dataset_profile, raw_dataset
from tmiv_assets.defs.assets.deploy import champion_history, champion_model, registered_model
from tmiv_assets.defs.assets.explain import (
    fairness_report,
    lime_report,
    permutation_importance,
    shap_report,
    what_if_report,
)
from tmiv_assets.defs.assets.features import feature_set, selected_features
from tmiv_assets.defs.assets.forecasting import forecast, forecast_backtest, series_data, series_diagnostics
from tmiv_assets.defs.assets.monitoring import (
    ab_test_report,
    drift_report,
    model_performance,
    monitoring_history,
    scored_batch,
)
from tmiv_assets.defs.executors import short_steps_executor
from tmiv_assets.defs.partitions import batch_partitions, dataset_partitions, series_partitions

EXPLANATION_ASSETS = [shap_report, fairness_report, permutation_importance, lime_report, what_if_report]
TRAINING_ASSETS = [raw_dataset, clean_dataset, feature_set, selected_features, model_candidates, model_leaderboard,
                   registered_model, champion_model, champion_history, *EXPLANATION_ASSETS]
FORECAST_ASSETS = [series_data, series_diagnostics, forecast_backtest, forecast]

full_pipeline = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.assets(dataset_profile, *TRAINING_ASSETS),
    partitions_def=dataset_partitions,
    description="Ingest, profile, clean, engineer features, train, register the champion and explain it.",
)
retrain = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.assets(*TRAINING_ASSETS),
    partitions_def=dataset_partitions,
    description="Re-ingest (with newly labelled batches), retrain and promote a new champion.",
)
score_batch = dg.define_asset_job(
    "score_batch",
    selection=dg.AssetSelection.assets(scored_batch, drift_report, model_performance, ab_test_report),
    partitions_def=batch_partitions,
    description="Score one (dataset, day) batch with the champion (and challenger in an A/B test), report drift.",
    executor_def=short_steps_executor,
)
evaluate_batch = dg.define_asset_job(
    "evaluate_batch",
    selection=dg.AssetSelection.assets(drift_report, model_performance, ab_test_report),
    partitions_def=batch_partitions,
    description="Judge a scored batch again when its labels arrive: target drift, realised performance, A/B result.",
    executor_def=short_steps_executor,
)
forecast_series = dg.define_asset_job(
    "forecast_series",
    selection=dg.AssetSelection.assets(*FORECAST_ASSETS),
    partitions_def=series_partitions,
    description="Read, diagnose, backtest every model on and forecast one time series.",
)
explain_champion = dg.define_asset_job(
    "explain_champion",
    selection=dg.AssetSelection.assets(*EXPLANATION_ASSETS),
    partitions_def=dataset_partitions,
    description="Explain the current champion again (SHAP, permutation importance, LIME, what-if, fairness), e.g. "
                "after a promotion or rollback that no training run made.",
)
refresh_monitoring = dg.define_asset_job(
    "refresh_monitoring",
    selection=dg.AssetSelection.assets(monitoring_history),
    partitions_def=dataset_partitions,
    description="Rebuild a dataset's monitoring history from its batches' drift and performance results.",
    executor_def=short_steps_executor,
)
