"""Sensors: new data files become partitions, new batches get scored, drift and performance drops go to the
retrain policy, a champion changed outside a training run gets explained, and runs whose process died are marked
failed."""

import json
import os
from datetime import UTC, datetime

import dagster as dg
from mlflow.entities.model_registry import ModelVersion

from tmiv_assets.defs.assets.data import considered_batch_days, training_batch_days
from tmiv_assets.defs.assets.deploy import registered_model
from tmiv_assets.defs.assets.explain import shap_report
from tmiv_assets.defs.assets.monitoring import drift_report, model_performance
from tmiv_assets.defs.jobs import (
    evaluate_batch,
    explain_champion,
    forecast_series,
    full_pipeline,
    refresh_monitoring,
    retrain,
    score_batch,
)
from tmiv_assets.defs.partitions import batch_day_partitions, batch_partitions, dataset_partitions, series_partitions
from tmiv_assets.ml.data.spec import DatasetSpec, SpecError
from tmiv_assets.ml.monitoring.policy import RetrainSettings, RetrainSignals, decide_retrain
from tmiv_assets.resources.data_source import DataSource
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.files import process_alive
from tmiv_assets.resources.model_registry import ModelRegistry
from tmiv_assets.resources.prediction_log import PredictionLog
from tmiv_assets.resources.tracking import IN_PROGRESS

# How often the data and monitoring sensors look, in seconds; a lower value reacts faster and queries more.
SENSOR_INTERVAL_S = int(os.environ.get("TMIV_SENSOR_INTERVAL_S", "60"))
# TMIV_AUTOMATION=off starts a UI with every sensor stopped (each can be started there): to browse or launch by
# hand without the sensors training every dataset they find.
AUTOMATION = os.environ.get("TMIV_AUTOMATION", "on") != "off"
RUNNING = dg.DefaultSensorStatus.RUNNING if AUTOMATION else dg.DefaultSensorStatus.STOPPED
WATCHED = (("datasets", dataset_partitions, full_pipeline), ("series", series_partitions, forecast_series))


@dg.sensor(jobs=[full_pipeline, forecast_series], minimum_interval_seconds=SENSOR_INTERVAL_S,
           default_status=RUNNING)
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


@dg.sensor(jobs=[score_batch, evaluate_batch], minimum_interval_seconds=SENSOR_INTERVAL_S, default_status=RUNNING)
def incoming_batches_sensor(context: dg.SensorEvaluationContext, source: DataSource) -> dg.SensorResult | dg.SkipReason:
    """Score every new batch file of a dataset that has a registered champion (its day becomes a batch partition);
    when a scored batch's labels arrive later, judge it again (`evaluate_batch`) without re-scoring, so its served
    predictions stay."""
    seen = json.loads(context.cursor or "{}")
    run_requests, new_days = [], set()
    known_days = set(context.instance.get_dynamic_partitions(batch_day_partitions.name))
    for dataset in sorted(context.instance.get_materialized_partitions(registered_model.key)):
        for day in source.batch_days(dataset):
            key = dg.MultiPartitionKey({"dataset": dataset, "day": day})
            stamp = str(source.batch_path(dataset, day).stat().st_mtime_ns)
            labels = source.labels_path(dataset, day)
            labels_stamp = str(labels.stat().st_mtime_ns) if labels.exists() else ""
            if seen.get(f"{dataset}|{day}") != stamp:  # a new batch: scored and judged with the labels it has
                seen[f"{dataset}|{day}"], seen[f"{dataset}|{day}|labels"] = stamp, labels_stamp
                new_days |= {day} - known_days
                run_requests.append(dg.RunRequest(job_name=score_batch.name, partition_key=key,
                                                  run_key=f"score/{dataset}/{day}@{stamp}"))
            elif labels_stamp and seen.get(f"{dataset}|{day}|labels") != labels_stamp:
                seen[f"{dataset}|{day}|labels"] = labels_stamp
                run_requests.append(dg.RunRequest(job_name=evaluate_batch.name, partition_key=key,
                                                  run_key=f"labels/{dataset}/{day}@{labels_stamp}"))
    if not run_requests:
        return dg.SkipReason("no new batches or labels for datasets with a champion")
    return dg.SensorResult(run_requests=run_requests, cursor=json.dumps(seen, sort_keys=True),
                           dynamic_partitions_requests=[batch_day_partitions.build_add_request(sorted(new_days))]
                           if new_days else None)


def new_labelled_rows(source: DataSource, store: FeatureStore, champion: ModelVersion | None,
                      prediction_log: PredictionLog, spec: DatasetSpec) -> tuple[int, tuple[str, ...]]:
    """Labelled rows a retrain would add that the champion did not train on, and their batch days."""
    trained = considered_batch_days(store, spec.name, champion) if champion is not None else set()
    days = tuple(day for day in training_batch_days(source, prediction_log, spec) if day not in trained)
    return sum(source.label_count(spec.name, day) for day in days), days


def hours_since_last_retrain(instance: dg.DagsterInstance, dataset: str) -> float | None:
    """Since the newest `retrain` run of the dataset was created (queued and running ones included)."""
    records = instance.get_run_records(dg.RunsFilter(job_name=retrain.name, tags={"dagster/partition": dataset}),
                                       limit=1)
    if not records:
        return None
    return (datetime.now(UTC) - records[0].create_timestamp).total_seconds() / 3600


# The registry's trigger vocabulary (new data, drift, performance, schedule, manual) per policy trigger.
TRIGGER_KIND = {"performance": "performance", "estimated performance": "performance", "drift": "drift",
                "prediction drift": "drift", "new data": "new data"}


def policy_result(context: dg.SensorEvaluationContext, triggered: dict[str, dict[str, list[str]]], cursor: str,
                  source: DataSource, store: FeatureStore, registry: ModelRegistry,
                  prediction_log: PredictionLog) -> dg.SensorResult:
    """One `retrain` request per dataset the retrain policy approves; the others' reasons as the skip reason.
    The run key names the trigger and the newest triggering day, so a restarted daemon requests it once."""
    run_requests, skipped = [], []
    for dataset, by_trigger in sorted(triggered.items()):
        try:
            spec = source.dataset_spec(dataset)
        except SpecError as error:
            skipped.append(f"{dataset}: {error}")
            continue
        champion = registry.champion(dataset)
        rows, days = new_labelled_rows(source, store, champion, prediction_log, spec)
        trained_rows = store.version("clean_dataset", dataset, int(champion.tags["clean_dataset_version"])).row_count \
            if champion is not None else None
        signals = RetrainSignals({trigger: tuple(days) for trigger, days in by_trigger.items()}, rows,
                                 hours_since_last_retrain(context.instance, dataset), trained_rows, days)
        decision = decide_retrain(signals, RetrainSettings.from_mapping(spec.retrain))
        context.log.info(f"{dataset}: {'retrain' if decision.retrain else 'skip'}: {decision.reason}")
        if not decision.retrain:
            skipped.append(f"{dataset}: {decision.reason}")
            continue
        kind = TRIGGER_KIND[decision.trigger]
        run_requests.append(dg.RunRequest(
            partition_key=dataset, run_key=f"{kind.replace(' ', '_')}/{dataset}/{max(decision.days)}",
            tags={"tmiv/trigger": kind, "tmiv/policy_trigger": decision.trigger, "tmiv/policy_reason": decision.reason,
                  "tmiv/trigger_batch": max(decision.days), "tmiv/trigger_batches": ",".join(decision.days)}))
    return dg.SensorResult(run_requests=run_requests, cursor=cursor,
                           skip_reason=None if run_requests else "; ".join(skipped) or "no trigger")


def new_materializations(context: dg.SensorEvaluationContext, asset: dg.AssetsDefinition) -> list:
    after = int(context.cursor) if context.cursor else None
    return context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset.key, after_storage_id=after), limit=500, ascending=True).records


def triggers_by_dataset(records: list, signals: dict[str, str]) -> dict[str, dict[str, list[str]]]:
    """{dataset: {trigger: [day, ...]}} for the batch materializations whose metadata flag `signals[trigger]`
    is true."""
    triggered: dict[str, dict[str, list[str]]] = {}
    for record in records:
        materialization = record.asset_materialization
        keys = batch_partitions.get_partition_key_from_str(materialization.partition).keys_by_dimension
        for trigger, flag in signals.items():
            value = materialization.metadata.get(flag)
            if value is not None and value.value is True:
                triggered.setdefault(keys["dataset"], {}).setdefault(trigger, []).append(keys["day"])
    return triggered


@dg.sensor(job=retrain, minimum_interval_seconds=SENSOR_INTERVAL_S, default_status=RUNNING)
def drift_retrain_sensor(context: dg.SensorEvaluationContext, source: DataSource, store: FeatureStore,
                         registry: ModelRegistry, prediction_log: PredictionLog) -> dg.SensorResult | dg.SkipReason:
    """New drift reports whose data (or prediction) drift fired go to the retrain policy: at most one
    `retrain` per dataset, however many of its days drifted, when it has new labelled rows to learn from
    and is out of its cool-down."""
    records = new_materializations(context, drift_report)
    if not records:
        return dg.SkipReason("no new drift reports")
    triggered = triggers_by_dataset(records, {"drift": "drift_detected", "prediction drift": "prediction_drift"})
    return policy_result(context, triggered, str(records[-1].storage_id), source, store, registry, prediction_log)


@dg.sensor(job=retrain, minimum_interval_seconds=SENSOR_INTERVAL_S, default_status=RUNNING)
def performance_retrain_sensor(context: dg.SensorEvaluationContext, source: DataSource, store: FeatureStore,
                               registry: ModelRegistry,
                               prediction_log: PredictionLog) -> dg.SensorResult | dg.SkipReason:
    """New model_performance results whose live metric (or label-free estimate) fell beyond the spec's
    thresholds go to the retrain policy, as the drift sensor's do; the cool-down counts either sensor's runs."""
    records = new_materializations(context, model_performance)
    if not records:
        return dg.SkipReason("no new performance results")
    triggered = triggers_by_dataset(records, {"performance": "below_threshold",
                                              "estimated performance": "estimated_below_threshold"})
    return policy_result(context, triggered, str(records[-1].storage_id), source, store, registry, prediction_log)


@dg.sensor(job=refresh_monitoring, minimum_interval_seconds=SENSOR_INTERVAL_S, default_status=RUNNING)
def monitoring_history_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """Rebuild monitoring_history of every dataset with new drift reports or performance results."""
    cursor = json.loads(context.cursor or "{}")
    newest: dict[str, int] = {}
    for asset in (drift_report, model_performance):
        key = asset.key.to_user_string()
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset.key, after_storage_id=cursor.get(key)), limit=500,
            ascending=True).records
        for record in records:
            dataset = record.asset_materialization.partition.split("|", 1)[0]
            newest[dataset] = max(newest.get(dataset, 0), record.storage_id)
        if records:
            cursor[key] = records[-1].storage_id
    if not newest:
        return dg.SkipReason("no new drift reports or performance results")
    return dg.SensorResult(run_requests=[dg.RunRequest(partition_key=dataset, run_key=f"history/{dataset}/{storage_id}")
                                         for dataset, storage_id in sorted(newest.items())],
                           cursor=json.dumps(cursor, sort_keys=True))


@dg.sensor(job=explain_champion, minimum_interval_seconds=SENSOR_INTERVAL_S, default_status=RUNNING)
def champion_explanations_sensor(context: dg.SensorEvaluationContext,
                                 registry: ModelRegistry) -> dg.SensorResult | dg.SkipReason:
    """Explain a dataset's champion again when its explanations are of another version (a promotion, a rollback
    by hand or by the monitoring loop); training runs explain their own champion, so datasets with a run in
    progress wait."""
    requests, waiting = [], []
    for dataset in sorted(context.instance.get_dynamic_partitions(dataset_partitions.name)):
        champion = registry.champion(dataset)
        if champion is None:
            continue
        latest = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=shap_report.key, asset_partitions=[dataset]), limit=1).records
        explained = latest[0].asset_materialization.metadata["champion_version"].value if latest else None
        if explained == int(champion.version):
            continue
        if context.instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS, tags={"dagster/partition": dataset}),
                                            limit=1):
            waiting.append(dataset)
            continue
        requests.append(dg.RunRequest(partition_key=dataset, run_key=f"explain/{dataset}/v{champion.version}",
                                      tags={"tmiv/explained_version": str(champion.version)}))
    if not requests:
        return dg.SkipReason(f"runs in progress for {waiting}" if waiting else "every champion is explained")
    return dg.SensorResult(run_requests=requests)


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


@dg.sensor(minimum_interval_seconds=30, default_status=RUNNING)
def dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """Fail runs whose process was killed, so they free their run-queue and pool slots."""
    messages = fail_dead_runs(context.instance)
    for message in messages:
        context.log.warning(message)
    return dg.SkipReason("; ".join(messages) or "every in-progress run has a live process")
