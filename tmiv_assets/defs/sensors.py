"""Sensors: new data files become partitions, new batches get scored, drift triggers retraining, and runs
whose process died are marked failed."""

import json

import dagster as dg

from tmiv_assets.defs.assets.deploy import registered_model
from tmiv_assets.defs.assets.monitoring import drift_report
from tmiv_assets.defs.jobs import forecast_series, full_pipeline, retrain, score_batch
from tmiv_assets.defs.partitions import batch_partitions, dataset_partitions, series_partitions
from tmiv_assets.ml.data.spec import SpecError
from tmiv_assets.resources.data_source import DataSource
from tmiv_assets.resources.files import process_alive

WATCHED = (("datasets", dataset_partitions, full_pipeline), ("series", series_partitions, forecast_series))


@dg.sensor(jobs=[full_pipeline, forecast_series], minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING)
def new_data_files_sensor(context: dg.SensorEvaluationContext, source: DataSource) -> dg.SensorResult | dg.SkipReason:
    """Register each new (or changed) dataset/series spec as a partition and run its pipeline."""
    seen = json.loads(context.cursor or "{}")
    run_requests, partition_requests, skipped = [], [], []
    for kind, partitions, job in WATCHED:
        existing = set(context.instance.get_dynamic_partitions(partitions.name))
        new_names = []
        for name, spec_path in source.spec_files(kind).items():
            try:
                spec = source.dataset_spec(name) if kind == "datasets" else source.series_spec(name)
            except SpecError as error:  # one bad spec must not stop the others from registering
                context.log.warning(f"skipping {spec_path}: {error}")
                skipped.append(str(error))
                continue
            stamp = f"{spec_path.stat().st_mtime_ns}-{spec.path.stat().st_mtime_ns if spec.path.exists() else 0}"
            if seen.get(f"{kind}/{name}") == stamp:
                continue
            seen[f"{kind}/{name}"] = stamp
            if name not in existing:
                new_names.append(name)
            run_requests.append(dg.RunRequest(job_name=job.name, partition_key=name, run_key=f"{kind}/{name}@{stamp}"))
        if new_names:
            partition_requests.append(partitions.build_add_request(new_names))
    if not run_requests:
        return dg.SkipReason("; ".join(["no new or changed dataset or series specs", *skipped]))
    return dg.SensorResult(run_requests=run_requests, dynamic_partitions_requests=partition_requests,
                           cursor=json.dumps(seen, sort_keys=True))


@dg.sensor(job=score_batch, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def incoming_batches_sensor(context: dg.SensorEvaluationContext, source: DataSource) -> dg.SensorResult | dg.SkipReason:
    """Score every new batch file of a dataset that has a registered champion."""
    seen = json.loads(context.cursor or "{}")
    run_requests = []
    for dataset in sorted(context.instance.get_materialized_partitions(registered_model.key)):
        for day in source.batch_days(dataset):
            stamp = str(source.batch_path(dataset, day).stat().st_mtime_ns)
            if seen.get(f"{dataset}|{day}") == stamp:
                continue
            seen[f"{dataset}|{day}"] = stamp
            key = dg.MultiPartitionKey({"dataset": dataset, "day": day})
            run_requests.append(dg.RunRequest(partition_key=key, run_key=f"score/{dataset}/{day}@{stamp}"))
    if not run_requests:
        return dg.SkipReason("no new batches for datasets with a champion")
    return dg.SensorResult(run_requests=run_requests, cursor=json.dumps(seen, sort_keys=True))


@dg.sensor(job=retrain, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def drift_retrain_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """Request one `retrain` per dataset whose new drift reports include a drifted batch, however many of its
    days drifted since the last tick; the run key names the latest drifted day, so a restarted daemon does
    not request it again."""
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=drift_report.key, after_storage_id=after), limit=500, ascending=True
    ).records
    if not records:
        return dg.SkipReason("no new drift reports")
    drifted: dict[str, list[str]] = {}
    for record in records:
        materialization = record.asset_materialization
        if materialization.metadata["drift_detected"].value:
            keys = batch_partitions.get_partition_key_from_str(materialization.partition).keys_by_dimension
            drifted.setdefault(keys["dataset"], []).append(keys["day"])
    run_requests = [dg.RunRequest(partition_key=dataset, run_key=f"drift/{dataset}/{max(days)}",
                                  tags={"tmiv/trigger": "drift", "tmiv/drifted_batch": max(days),
                                        "tmiv/drifted_batches": ",".join(sorted(set(days)))})
                    for dataset, days in sorted(drifted.items())]
    return dg.SensorResult(run_requests=run_requests, cursor=str(records[-1].storage_id))


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every in-progress run whose orchestrating process on this host is gone (SIGKILL, OOM) and
    give back the pool slots it held; a dead run otherwise stays STARTED and holds a run-queue slot forever.
    Returns the messages, one per run."""
    messages = []
    in_progress = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
    for record in instance.get_run_records(dg.RunsFilter(statuses=in_progress)):
        run = record.dagster_run
        started = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
        if not started or started[0].event_log_entry.dagster_event is None:
            continue
        pid = started[0].event_log_entry.dagster_event.pid
        if pid is None or process_alive(pid, started_before=started[0].event_log_entry.timestamp):
            continue
        message = (f"run {run.run_id} ({run.job_name}, partition {run.tags.get('dagster/partition', '-')}) lost its "
                   f"process {pid} (killed or out of memory): marked failed; rerun it from the UI or the shell")
        instance.report_run_failed(run, message)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        messages.append(message)
    return messages


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """Fail runs whose process was killed, so they free their run-queue and pool slots."""
    messages = fail_dead_runs(context.instance)
    for message in messages:
        context.log.warning(message)
    return dg.SkipReason("; ".join(messages) or "every in-progress run has a live process")
