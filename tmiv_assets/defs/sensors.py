"""Sensors: new data files become partitions, new batches get scored, drift triggers retraining."""

import json

import dagster as dg

from tmiv_assets.defs.assets.deploy import registered_model
from tmiv_assets.defs.assets.monitoring import drift_report
from tmiv_assets.defs.jobs import forecast_series, full_pipeline, retrain, score_batch
from tmiv_assets.defs.partitions import batch_partitions, dataset_partitions, series_partitions
from tmiv_assets.ml.data.spec import SpecError
from tmiv_assets.resources.data_source import DataSource

WATCHED = (("datasets", dataset_partitions, full_pipeline), ("series", series_partitions, forecast_series))


@dg.sensor(jobs=[full_pipeline, forecast_series], minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING)
def new_data_files_sensor(context: dg.SensorEvaluationContext, source: DataSource) -> dg.SensorResult | dg.SkipReason:
    """Register each new (or changed) dataset/series spec as a partition and run its pipeline."""
    seen = json.loads(context.cursor or "{}")
    run_requests, partition_requests = [], []
    for kind, partitions, job in WATCHED:
        existing = set(context.instance.get_dynamic_partitions(partitions.name))
        new_names = []
        for name, spec_path in source.spec_files(kind).items():
            try:
                spec = source.dataset_spec(name) if kind == "datasets" else source.series_spec(name)
            except SpecError as error:  # one bad spec must not stop the others from registering
                context.log.warning(f"skipping {spec_path}: {error}")
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
        return dg.SkipReason("no new or changed dataset or series specs")
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
    """Request one `retrain` per (dataset, batch day) whose drift report says the batch drifted."""
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=drift_report.key, after_storage_id=after), limit=500, ascending=True
    ).records
    if not records:
        return dg.SkipReason("no new drift reports")
    run_requests = []
    for record in records:
        materialization = record.asset_materialization
        if not materialization.metadata["drift_detected"].value:
            continue
        keys = batch_partitions.get_partition_key_from_str(materialization.partition).keys_by_dimension
        dataset, day = keys["dataset"], keys["day"]
        run_requests.append(dg.RunRequest(
            partition_key=dataset,
            run_key=f"drift/{dataset}/{day}",
            tags={"tmiv/trigger": "drift", "tmiv/drifted_batch": day},
        ))
    return dg.SensorResult(run_requests=run_requests, cursor=str(records[-1].storage_id))
