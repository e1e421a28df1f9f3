"""Schedules: periodic retraining of every registered dataset."""

import dagster as dg

from tmiv_assets.defs.jobs import retrain
from tmiv_assets.defs.partitions import dataset_partitions


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
