"""Sensors and the schedule evaluated against a real (temporary) Dagster instance."""

import json
import shutil
import uuid
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import pytest

from tmiv_assets.defs.schedules import daily_forecast_schedule, weekly_retrain_schedule
from tmiv_assets.defs.sensors import (
    drift_retrain_sensor,
    incoming_batches_sensor,
    new_data_files_sensor,
    performance_retrain_sensor,
)
from tmiv_assets.resources.data_source import DataSource
from tmiv_assets_tests.conftest import resources_for


def report(instance: dg.DagsterInstance, asset: str, day: str, **metadata) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=asset, partition=dg.MultiPartitionKey({"dataset": "flights", "day": day}), metadata=metadata))


def report_drift(instance: dg.DagsterInstance, day: str, drifted: bool) -> None:
    report(instance, "drift_report", day, drift_detected=drifted, drifted_share=0.7 if drifted else 0.1)


def run_requests(result) -> list[dg.RunRequest]:
    return [] if isinstance(result, dg.SkipReason) else list(result.run_requests)


@pytest.fixture
def monitored(instance, tmp_path) -> dict:
    """Flights registered, with its four batches in the prediction log (scored): three have labels."""
    instance.add_dynamic_partitions("dataset", ["flights"])
    resources = resources_for(tmp_path / "tmiv")
    for day in ("2013-02-12", "2013-02-13", "2013-07-22", "2013-07-23"):
        resources["prediction_log"].record(f"flights|{day}", "tmiv_flights", 1, pd.Series(["0"]))
    return {k: resources[k] for k in ("source", "store", "registry", "prediction_log")}


def evaluate(sensor, instance, resources, cursor=None):
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))


def test_drift_requests_one_retrain_per_drifted_dataset_and_none_on_reevaluation(instance, monitored):
    report_drift(instance, "2013-02-12", drifted=False)
    report_drift(instance, "2013-07-22", drifted=True)
    report_drift(instance, "2013-07-23", drifted=True)
    result = evaluate(drift_retrain_sensor, instance, monitored)
    requests = run_requests(result)
    assert [(r.partition_key, r.run_key) for r in requests] == [("flights", "drift/flights/2013-07-23")]
    assert requests[0].tags["tmiv/trigger_batches"] == "2013-07-22,2013-07-23"
    # the labelled rows of the three scored, labelled days (the champion trained on none)
    assert requests[0].tags["tmiv/policy_reason"] == "drift on 2013-07-22, 2013-07-23; 2643 new labelled rows"
    assert isinstance(evaluate(drift_retrain_sensor, instance, monitored, result.cursor), dg.SkipReason)


def test_no_drift_requests_nothing(instance, monitored):
    report_drift(instance, "2013-02-12", drifted=False)
    report_drift(instance, "2013-02-13", drifted=False)
    result = evaluate(drift_retrain_sensor, instance, monitored)
    assert run_requests(result) == []
    assert result.skip_reason.skip_message == "no trigger"
    assert result.cursor  # the reports were read, so they are not read again


def test_drift_within_the_cool_down_is_skipped_with_the_reason(instance, monitored):
    instance.add_run(dg.DagsterRun(job_name="retrain", run_id=str(uuid.uuid4()),
                                   tags={"dagster/partition": "flights"}))
    report_drift(instance, "2013-07-22", drifted=True)
    result = evaluate(drift_retrain_sensor, instance, monitored)
    assert run_requests(result) == []
    assert "h ago (cool-down 6 h)" in result.skip_reason.skip_message


def test_drift_without_labels_of_scored_batches_waits_for_labels(instance, monitored, tmp_path):
    unscored = {**monitored, "prediction_log": resources_for(tmp_path / "other")["prediction_log"]}
    report_drift(instance, "2013-07-22", drifted=True)
    result = evaluate(drift_retrain_sensor, instance, unscored)
    assert run_requests(result) == []
    assert "only 0 labelled rows the champion did not train on (need 100)" in result.skip_reason.skip_message


def test_a_live_or_estimated_drop_requests_a_performance_retrain(instance, monitored):
    report(instance, "model_performance", "2013-07-22", below_threshold=True, estimated_below_threshold=False)
    report(instance, "model_performance", "2013-07-23", estimated_below_threshold=True)
    report(instance, "model_performance", "2013-02-12", below_threshold=False, estimated_below_threshold=False)
    result = evaluate(performance_retrain_sensor, instance, monitored)
    [request] = run_requests(result)
    assert request.run_key == "performance/flights/2013-07-23"
    assert request.tags["tmiv/trigger"] == "performance" and request.tags["tmiv/policy_trigger"] == "performance"
    assert request.tags["tmiv/trigger_batches"] == "2013-07-22,2013-07-23"


def test_new_files_become_partitions_and_runs(instance, data_dir):
    source = DataSource(data_dir=str(data_dir))
    result = new_data_files_sensor(dg.build_sensor_context(instance=instance, resources={"source": source}))
    added = {r.partitions_def_name: sorted(r.partition_keys) for r in result.dynamic_partitions_requests}
    assert added == {"dataset": ["cps1985", "flights", "titanic"], "series": ["air_passengers", "uk_driver_deaths"]}
    assert sorted((r.job_name, r.partition_key) for r in result.run_requests) == [
        ("forecast_series", "air_passengers"), ("forecast_series", "uk_driver_deaths"),
        ("full_pipeline", "cps1985"), ("full_pipeline", "flights"), ("full_pipeline", "titanic")]
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))

    context = dg.build_sensor_context(instance=instance, cursor=result.cursor, resources={"source": source})
    assert isinstance(new_data_files_sensor(context), dg.SkipReason)

    shutil.copy(data_dir / "datasets" / "titanic.yaml", data_dir / "datasets" / "titanic_2026.yaml")
    context = dg.build_sensor_context(instance=instance, cursor=result.cursor, resources={"source": source})
    dropped = new_data_files_sensor(context)
    assert [r.partition_key for r in dropped.run_requests] == ["titanic_2026"]
    assert [list(r.partition_keys) for r in dropped.dynamic_partitions_requests] == [["titanic_2026"]]


BAD_SPECS = {
    "missing_target": b"file: broken.csv\ntask: binary\n",
    "undecodable": b"file: broken.csv\ntarget: \xff\xfe\ntask: binary\n",
    "sensitive_number": b"file: broken.csv\ntarget: y\ntask: binary\nsensitive_columns: 5\n",
    "not_a_mapping": b"- just\n- a list\n",
    "bad_yaml": b"target: [unclosed\n",
    "Bad-Name": b"file: broken.csv\ntarget: y\ntask: binary\n",
}


def test_bad_specs_are_skipped_with_a_reason_without_blocking_others(instance, data_dir):
    for name, content in BAD_SPECS.items():
        (data_dir / "datasets" / f"{name}.yaml").write_bytes(content)
    (data_dir / "series" / "bad_series.yaml").write_text("file: x.csv\ntime_column: t\nvalue_column: v\nfreq: ZZ\n")
    source = DataSource(data_dir=str(data_dir))
    context = dg.build_sensor_context(instance=instance, resources={"source": source})
    result = new_data_files_sensor(context)
    assert {r.partition_key for r in result.run_requests} == {"titanic", "flights", "cps1985", "air_passengers",
                                                               "uk_driver_deaths"}
    again = new_data_files_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor,
                                                          resources={"source": source}))
    assert isinstance(again, dg.SkipReason)
    for name in [*BAD_SPECS, "bad_series"]:  # each skipped spec is named, with its file, in the tick's reason
        assert f"{name}.yaml" in again.skip_message or f"'{name}'" in again.skip_message
    assert "save the file as UTF-8" in again.skip_message and "freq 'ZZ'" in again.skip_message


def test_new_batches_are_scored_once_for_datasets_with_a_champion(instance, data_dir):
    source = DataSource(data_dir=str(data_dir))
    instance.add_dynamic_partitions("dataset", ["flights", "titanic"])
    context = dg.build_sensor_context(instance=instance, resources={"source": source})
    assert isinstance(incoming_batches_sensor(context), dg.SkipReason)  # no champion yet

    instance.report_runless_asset_event(dg.AssetMaterialization("registered_model", partition="flights"))
    result = incoming_batches_sensor(dg.build_sensor_context(instance=instance, resources={"source": source}))
    keys = [r.partition_key for r in result.run_requests]
    assert [k.keys_by_dimension["day"] for k in keys] == ["2013-02-12", "2013-02-13", "2013-07-22", "2013-07-23"]
    assert {k.keys_by_dimension["dataset"] for k in keys} == {"flights"}
    assert {r.job_name for r in result.run_requests} == {"score_batch"}
    [days] = result.dynamic_partitions_requests  # only the days that have a batch become partitions
    assert days.partitions_def_name == "batch_day" and list(days.partition_keys) == [k.keys_by_dimension["day"]
                                                                                    for k in keys]
    instance.add_dynamic_partitions("batch_day", list(days.partition_keys))
    assert len(json.loads(result.cursor)) == 8  # each batch file and its labels file
    context = dg.build_sensor_context(instance=instance, cursor=result.cursor, resources={"source": source})
    assert isinstance(incoming_batches_sensor(context), dg.SkipReason)

    # July 23's labels arrive after it was scored: judged again, not re-scored.
    labels = pd.read_parquet(data_dir / "incoming" / "flights" / "labels" / "2013-07-22.parquet").head(0)
    labels.to_parquet(data_dir / "incoming" / "flights" / "labels" / "2013-07-23.parquet")
    later = incoming_batches_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor,
                                                           resources={"source": source}))
    [request] = later.run_requests
    assert request.job_name == "evaluate_batch" and request.run_key.startswith("labels/flights/2013-07-23@")
    assert not later.dynamic_partitions_requests  # a known day is not added again
    context = dg.build_sensor_context(instance=instance, cursor=later.cursor, resources={"source": source})
    assert isinstance(incoming_batches_sensor(context), dg.SkipReason)


@pytest.mark.parametrize("datasets", [[], ["cps1985", "titanic"]])
def test_weekly_schedule_retrains_every_dataset(instance, datasets):
    instance.add_dynamic_partitions("dataset", datasets)
    monday = datetime(2026, 11, 23, 3, tzinfo=UTC)
    result = weekly_retrain_schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=monday))
    if not datasets:
        assert isinstance(result, dg.SkipReason)
        return
    assert [(r.partition_key, r.run_key) for r in result] == [
        ("cps1985", "weekly/cps1985/2026-11-23"), ("titanic", "weekly/titanic/2026-11-23")]


@pytest.mark.parametrize("series", [[], ["air_passengers", "uk_driver_deaths"]])
def test_daily_schedule_forecasts_every_series_once_a_day(instance, series):
    instance.add_dynamic_partitions("series", series)
    day = datetime(2026, 11, 24, 4, tzinfo=UTC)
    result = daily_forecast_schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=day))
    if not series:
        assert isinstance(result, dg.SkipReason)
        return
    assert [(r.partition_key, r.run_key, r.tags["tmiv/trigger"]) for r in result] == [
        ("air_passengers", "daily/air_passengers/2026-11-24", "schedule"),
        ("uk_driver_deaths", "daily/uk_driver_deaths/2026-11-24", "schedule")]
