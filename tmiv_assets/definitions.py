"""Everything the platform defines, in one place."""

import dagster as dg

from tmiv_assets.defs.assets.automl import model_candidates, model_leaderboard
from tmiv_assets.defs.assets.data import clean_dataset, dataset_profile, raw_dataset
from tmiv_assets.defs.assets.deploy import champion_history, champion_model, model_comparison, registered_model
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
from tmiv_assets.defs.executors import default_executor
from tmiv_assets.defs.jobs import (
    evaluate_batch,
    explain_champion,
    forecast_series,
    full_pipeline,
    refresh_monitoring,
    retrain,
    score_batch,
)
from tmiv_assets.defs.model_jobs import (
    archive_model,
    conclude_ab_test,
    predict_file,
    promote_model,
    rollback_model,
)
from tmiv_assets.defs.resources import build_resources, default_environment
from tmiv_assets.defs.schedules import daily_forecast_schedule, weekly_retrain_schedule
from tmiv_assets.defs.sensors import (
    champion_explanations_sensor,
    dead_runs_sensor,
    drift_retrain_sensor,
    incoming_batches_sensor,
    monitoring_history_sensor,
    new_data_files_sensor,
    performance_retrain_sensor,
)

default_environment()

defs = dg.Definitions(
    assets=[raw_dataset, dataset_profile, clean_dataset, feature_set, selected_features, model_candidates,
            model_leaderboard, registered_model, champion_model, champion_history, shap_report, fairness_report,
            permutation_importance, lime_report, what_if_report, scored_batch,
            drift_report, model_performance, ab_test_report, monitoring_history, model_comparison, series_data,
            series_diagnostics, forecast_backtest, forecast],
    jobs=[full_pipeline, retrain, score_batch, evaluate_batch, refresh_monitoring, forecast_series, explain_champion,
          promote_model, rollback_model, archive_model, predict_file, conclude_ab_test],
    sensors=[new_data_files_sensor, incoming_batches_sensor, drift_retrain_sensor, performance_retrain_sensor,
             monitoring_history_sensor, champion_explanations_sensor, dead_runs_sensor],
    schedules=[weekly_retrain_schedule, daily_forecast_schedule],
    resources=build_resources(),
    executor=default_executor(),
)
