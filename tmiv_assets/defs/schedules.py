"""Schedules: periodic retraining of every registered dataset and a fresh forecast of every series."""

import dagster as dg

from tmiv_assets.defs.jobs import forecast_series, retrain
from tmiv_assets.defs.partitions import dataset_partitions, series_partitions


@dg.schedule(job=retrain, cron_schedule="0 3 * * 1", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def weekly_retrain_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    """Every Monday 03:00 UTC: retrain each dataset on its latest data, labelled batches included."""
    datasets = context.instance.get_dynamic_partitions(dataset_partitions.name)
    if not datasets:
        return dg.SkipReason("no datasets registered yet")
    week = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [dg.RunRequest(partition_key=d, run_key=f"weekly/{d}/{week}", tags={"tmiv/trigger": "schedule"})
            for d in sorted(datasets)]


@dg.schedule(job=forecast_series, cron_schedule="0 4 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def daily_forecast_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    """Every day 04:00 UTC: back-test and forecast each series again from its current file (a changed file is
    picked up sooner by the new-data sensor)."""
    series = context.instance.get_dynamic_partitions(series_partitions.name)
    if not series:
        return dg.SkipReason("no series registered yet")
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [dg.RunRequest(partition_key=s, run_key=f"daily/{s}/{day}", tags={"tmiv/trigger": "schedule"})
            for s in sorted(series)]
