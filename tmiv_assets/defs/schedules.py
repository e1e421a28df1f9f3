"""Schedules: periodic retraining of every registered dataset and a fresh forecast of every series."""

import dagster as dg

from tmiv_assets.defs.jobs import forecast_series, retrain
from tmiv_assets.defs.partitions import dataset_partitions, series_partitions
from tmiv_assets.defs.sensors import AUTOMATION

SCHEDULED = dg.DefaultScheduleStatus.RUNNING if AUTOMATION else dg.DefaultScheduleStatus.STOPPED


def every_partition(context: dg.ScheduleEvaluationContext, partitions: dg.DynamicPartitionsDefinition,
                    period: str) -> list[dg.RunRequest] | dg.SkipReason:
    """One run per registered partition, keyed by `period` and the scheduled day so a tick never runs twice."""
    keys = context.instance.get_dynamic_partitions(partitions.name)
    if not keys:
        return dg.SkipReason(f"no {partitions.name} registered yet")
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [dg.RunRequest(partition_key=key, run_key=f"{period}/{key}/{day}", tags={"tmiv/trigger": "schedule"})
            for key in sorted(keys)]


@dg.schedule(job=retrain, cron_schedule="0 3 * * 1", execution_timezone="UTC", default_status=SCHEDULED)
def weekly_retrain_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    """Every Monday 03:00 UTC: retrain each dataset on its latest data, labelled batches included."""
    return every_partition(context, dataset_partitions, "weekly")


@dg.schedule(job=forecast_series, cron_schedule="0 4 * * *", execution_timezone="UTC", default_status=SCHEDULED)
def daily_forecast_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    """Every day 04:00 UTC: back-test and forecast each series again from its current file (a changed file is
    picked up sooner by the new-data sensor)."""
    return every_partition(context, series_partitions, "daily")
