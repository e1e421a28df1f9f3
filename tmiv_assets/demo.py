"""Run the platform end to end on the embedded data, the way the daemon would, and print where results are.

Each step evaluates the real sensor, then executes the runs it requests on the persistent instance
($DAGSTER_HOME), tagged with the sensor's run keys so a daemon started later does not repeat them:
1. `new_data_files_sensor` registers datasets and series as partitions -> `full_pipeline`, `forecast_series`
2. `incoming_batches_sensor` -> `score_batch` for each day of incoming flights
3. `drift_retrain_sensor` and `performance_retrain_sensor` -> the retrain policy -> at most one `retrain` per
   dataset, through the champion gate
4. a rollback drill (the safety net, staged because the embedded batches bring no bad retrain): the leaderboard's
   no-skill baseline is made flights' champion as if a retrain had promoted it; `score_batch` scores July 22 again
   with it, and its realised score on the rows no version trained on sends the champion back
5. `monitoring_history_sensor` -> `refresh_monitoring`: each dataset's drift, estimated and realised
   performance and decisions over its batch days
Steps 2-4 start once the pipelines of the datasets with batches are done, while the others still run, as they would
under the daemon; step 5 waits for every run.
"""

import argparse
import logging
import multiprocessing
import os
import time
import warnings
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import dagster as dg

from tmiv_assets.definitions import defs
from tmiv_assets.defs.assets.monitoring import drift_report, model_performance
from tmiv_assets.defs.launch import execute_location_run, run_events
from tmiv_assets.defs.resources import build_resources
from tmiv_assets.defs.sensors import (
    drift_retrain_sensor,
    incoming_batches_sensor,
    monitoring_history_sensor,
    new_data_files_sensor,
    performance_retrain_sensor,
)

# The demo reads results outside any run, so it needs the resources with their paths resolved.
RESOURCES = build_resources(home=os.environ["TMIV_HOME"], data_dir=os.environ["TMIV_DATA_DIR"])
# Independent partitions run side by side, as the daemon would run them (dagster.yaml allows 4 runs at once);
# four keep two cores busy through the steps' own I/O, and the forecasts need not wait for a pipeline to finish.
CONCURRENT_RUNS = 4
# The datasets with incoming batches start the chain every later stage waits on (score, drift, retrain, drill):
# their runs get the cores first, and the other datasets and the series run beside them at this niceness, on what
# is left, instead of slowing that chain by half.
BACKGROUND_NICENESS = 10
# Step-level INFO lines (what each asset did); DEBUG engine events stay in the run history.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# The runs already share the cores between them, so each runs its steps in its own process: no step start-up.
STEPS_IN_PROCESS = {"execution": {"config": {"steps_in_process": True}}}


@dataclass(frozen=True)
class Pools:
    """Processes forked once the project is imported, which execute every run of the demo."""

    chain: ProcessPoolExecutor
    """Runs of the datasets with incoming batches."""
    background: ProcessPoolExecutor
    """Every other run, at BACKGROUND_NICENESS."""

    def for_partition(self, partition: str) -> ProcessPoolExecutor:
        return self.chain if RESOURCES["source"].batch_days(partition) else self.background


def run_sensor(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, pool: Pools,
               run_config: dict) -> dict[str, Future]:
    """Evaluate `sensor` once, apply its partition requests and submit its runs as the code location's runs: a
    future per dataset or series, of its runs' (outcome line, run id)."""
    context = dg.build_sensor_context(instance=instance, sensor_name=sensor.name, definitions=defs,
                                      resources={key: RESOURCES[key] for key in sensor.required_resource_keys})
    result = sensor(context)
    skipped = result if isinstance(result, dg.SkipReason) else result.skip_reason
    if skipped is not None:
        print(f"  {sensor.name}: skipped ({skipped.skip_message})")
    if isinstance(result, dg.SkipReason):
        return {}
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    requests = [(request.job_name or sensor.job_name, request.partition_key,
                 {**request.tags, "dagster/sensor_name": sensor.name, "dagster/run_key": request.run_key})
                for request in result.run_requests]
    return submit_side_by_side(pool, requests, run_config)


def submit_side_by_side(pool: Pools, requests: list[tuple[str, str | None, dict[str, str]]],
                        run_config: dict) -> dict[str, Future]:
    """Submit the runs, those of different datasets or series side by side (CONCURRENT_RUNS at a time), those of
    one dataset in order (its batches share the prediction log and the champion): a future per dataset or series.
    Dagster's run orchestration is not thread-safe, so each dataset's runs go to one of the pools' processes."""
    by_partition: dict[str, list] = {}
    for request in requests:
        by_partition.setdefault((request[1] or "").split("|")[0], []).append(request)
    return {partition: pool.for_partition(partition).submit(execute_in_order, runs, run_config)
            for partition, runs in by_partition.items()}


def execute_in_order(requests: list[tuple[str, str | None, dict[str, str]]],
                     run_config: dict) -> list[tuple[str, str]]:
    outcomes = []
    with dg.DagsterInstance.get() as instance:
        for job_name, partition_key, tags in requests:
            started = time.perf_counter()
            run = execute_location_run(instance, job_name, partition_key, tags, run_config)
            status = "ok" if run.is_success else gate_outcome(instance, run.run_id) or "FAILED"
            outcomes.append((f"{job_name}[{partition_key}] {status} in {time.perf_counter() - started:.1f}s",
                             run.run_id))
            print(f"  {outcomes[-1][0]}", flush=True)
    return outcomes


def gate_outcome(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """A run that failed only because the champion gate rejected its new model: the champion stays, by design."""
    checks = [event.event_specific_data for event in run_events(instance, run_id,
                                                                dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
    rejected = [c for c in checks if c.check_name == "beats_champion" and not c.passed]
    return f"champion kept: {rejected[0].metadata['reason'].value}" if rejected else None


DRILL_DATASET, DRILL_DAY = "flights", "2013-07-22"  # labelled; the retrain held out a fifth of its rows


def rollback_drill(instance: dg.DagsterInstance, pool: Pools, run_config: dict) -> dict[str, Future]:
    """Promote the newest leaderboard's no-skill baseline as if by drift, re-score a labelled batch with it as an
    ordinary `score_batch` run, and report what `model_performance` decided."""
    registry, store = RESOURCES["registry"], RESOURCES["store"]
    newest = max(registry.versions(DRILL_DATASET), key=lambda v: int(v.version))  # the latest leaderboard's final model
    board = store.load("model_leaderboard", DRILL_DATASET).set_index("model")
    metric = newest.tags["metric"]
    weak = registry.register(DRILL_DATASET, board.loc["baseline", "model_uri"], board.loc["baseline", "run_id"],
                             dict(newest.tags) | {"candidate": "baseline", "trigger": "drift",
                                                  f"test_{metric}": str(board.loc["baseline", f"test_{metric}"])})
    registry.promote(DRILL_DATASET, weak.version, trigger="drift",
                     reason="rollback drill: the no-skill baseline promoted as if by a retrain")
    partition = f"{DRILL_DATASET}|{DRILL_DAY}"
    [(line, run_id)] = submit_side_by_side(pool, [("score_batch", partition, {"tmiv/drill": "rollback"})],
                                           run_config)[DRILL_DATASET].result()
    performance = [event.step_materialization_data.materialization for event in run_events(
        instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)
        if event.step_materialization_data.materialization.asset_key == model_performance.key]
    outcome = {k: v.value for k, v in performance[0].metadata.items()}
    print(f"  score_batch[{partition}] with v{weak.version}: {metric} {outcome.get(f'live_{metric}', 'n/a')}; "
          f"{outcome['rollback']}; champion now v{registry.champion(DRILL_DATASET).version}")
    failed = [] if "rolled_back_to" in outcome else [(f"FAILED: the drill's v{weak.version} was not rolled back", "")]
    return {DRILL_DATASET: done_future([(line, run_id), *failed])}


def done_future(outcomes: list[tuple[str, str]]) -> Future:
    future = Future()
    future.set_result(outcomes)
    return future


def _score(row: dict, metric: str) -> str:
    """Test score for the final model and the baseline; searched families only have a CV score, or none when no
    trial of theirs finished in time."""
    test, cv = row.get(f"test_{metric}"), row[f"cv_{metric}_mean"]
    if test is not None and test == test:  # NaN for CV-only rows
        return f"{row['model']}={test:.3f} (test)"
    return f"{row['model']}={cv:.3f} (cv)" if cv == cv else f"{row['model']}: no trial finished"


def latest_by_partition(instance: dg.DagsterInstance, key: dg.AssetKey) -> list[dg.EventLogRecord]:
    """The newest materialization of each partition (the drill re-scores one), in partition order."""
    records = instance.fetch_materializations(key, limit=100, ascending=False).records
    newest = {r.asset_materialization.partition: r for r in reversed(records)}
    return [newest[partition] for partition in sorted(newest)]


def summary(instance: dg.DagsterInstance) -> None:
    store, registry, artifacts = RESOURCES["store"], RESOURCES["registry"], RESOURCES["artifacts"]
    print("\nResults")
    for dataset in sorted(instance.get_dynamic_partitions("dataset")):
        champion = registry.champion(dataset)
        metric = store.lineage("model_leaderboard", dataset)["metric"]
        board = store.load("model_leaderboard", dataset).to_dict("records")
        print(f"  {dataset}: champion {registry.model_name(dataset)} v{champion.version}; "
              f"{metric}: {', '.join(_score(row, metric) for row in board)}")
    for record in latest_by_partition(instance, drift_report.key):
        meta = record.asset_materialization.metadata
        print(f"  drift {record.asset_materialization.partition}: drift_detected={meta['drift_detected'].value} "
              f"(share {meta['drifted_share'].value:.2f}) -> {meta['evidently_report'].value}")
    for record in latest_by_partition(instance, model_performance.key):
        meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        metric = meta["metric"]
        estimated = f"estimated {meta[f'estimated_{metric}']:.3f} {meta[f'estimated_{metric}_band_95']}" if (
            f"estimated_{metric}" in meta) else "no estimate"
        realised = f"realised {meta[f'live_{metric}']:.3f}" if f"live_{metric}" in meta else meta["status"]
        print(f"  performance {record.asset_materialization.partition}: v{meta['served_version']} {metric} "
              f"{estimated}, {realised}")
    for dataset in sorted(instance.get_dynamic_partitions("dataset")):
        decision = registry.history(dataset)[-1]
        print(f"  last decision for {dataset}: {decision.action} (trigger {decision.trigger}): {decision.reason}")
    for path in sorted(artifacts.path("forecasts").glob("*.parquet")):
        print(f"  forecast {path.stem}: {path}")
    print(f"\nState directory:  {artifacts.path()}")
    print(f"Feature catalog:  {store.catalog_path}")
    print(f"MLflow registry:  {registry.tracking_uri}  (mlflow ui --backend-store-uri {registry.tracking_uri})")
    print("Dagster UI:       make ui  ->  http://127.0.0.1:3000")


def time_in_steps(instance: dg.DagsterInstance, since: datetime) -> tuple[int, float, float]:
    """(runs, their summed wall seconds, seconds of it inside asset steps) of the runs created since `since`: the
    rest of a run's time is orchestration (run start, step start-up and hand-over, event writes, run end)."""
    runs, run_s, step_s = 0, 0.0, 0.0
    step_events = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
    for record in instance.get_run_records(dg.RunsFilter(created_after=since)):
        runs, run_s = runs + 1, run_s + record.end_time - record.create_timestamp.timestamp()
        started, intervals = {}, []
        for event in instance.get_records_for_run(record.dagster_run.run_id, of_type=step_events).records:
            entry = event.event_log_entry
            if entry.dagster_event.event_type == dg.DagsterEventType.STEP_START:
                started[entry.step_key] = entry.timestamp
            else:
                intervals.append((started.pop(entry.step_key), entry.timestamp))
        covered_until = 0.0  # steps of a run may overlap: count the time covered by any of them once
        for start, end in sorted(intervals):
            step_s += max(0.0, end - max(start, covered_until))
            covered_until = max(covered_until, end)
    return runs, run_s, step_s


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the platform end to end on the embedded data.")
    parser.add_argument("--steps-in-subprocesses", action="store_true", help=(
        "run each job's steps as the UI and daemon do: training, explaining and forecasting steps each in a process "
        "of its own (slower: each step starts up)"))
    run_config = QUIET if parser.parse_args().steps_in_subprocesses else QUIET | STEPS_IN_PROCESS
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    started, since = time.perf_counter(), datetime.now(UTC)
    stages: list[tuple[str, float, dict[str, Future]]] = []  # name, start, a future per dataset or series
    finished: dict[Future, float] = {}

    def stage(name: str, submit) -> dict[str, Future]:
        print(name, flush=True)
        stages.append((name, time.perf_counter(), submit()))
        for future in stages[-1][2].values():
            future.add_done_callback(lambda done: finished.setdefault(done, time.perf_counter()))
        return stages[-1][2]

    fork = multiprocessing.get_context("fork")
    with dg.DagsterInstance.get() as instance, ProcessPoolExecutor(1, mp_context=fork) as chain, ProcessPoolExecutor(
            CONCURRENT_RUNS - 1, mp_context=fork, initializer=os.nice, initargs=(BACKGROUND_NICENESS,)) as background:
        pool = Pools(chain, background)
        first = stage(new_data_files_sensor.name,
                      partial(run_sensor, new_data_files_sensor, instance, pool, run_config))
        # As the daemon would: a dataset's batches are scored once its own pipeline is done, while the other
        # datasets and series still train; the monitoring history waits for everything.
        wait([future for partition, future in first.items() if pool.for_partition(partition) is chain])
        for name, submit in [*((sensor.name, partial(run_sensor, sensor, instance, pool, run_config)) for sensor in (
                incoming_batches_sensor, drift_retrain_sensor, performance_retrain_sensor)),
                             ("rollback drill", partial(rollback_drill, instance, pool, run_config))]:
            wait(stage(name, submit).values())
        wait(first.values())
        wait(stage(monitoring_history_sensor.name,
                   partial(run_sensor, monitoring_history_sensor, instance, pool, run_config)).values())
        summary(instance)
        runs, run_s, step_s = time_in_steps(instance, since)
    wall = time.perf_counter() - started
    outcomes = [line for _, _, futures in stages for future in futures.values() for line, _ in future.result()]
    failures = [line for line in outcomes if "FAILED" in line]
    print("\n| stage | runs | started at s | wall s |\n|---|---|---|---|")
    for name, stage_started, futures in stages:
        lines = [line for future in futures.values() for line, _ in future.result() if not line.startswith("FAILED:")]
        ended = max((finished[future] for future in futures.values()), default=stage_started)
        print(f"| {name} | {len(lines)} | {stage_started - started:.1f} | {ended - stage_started:.1f} |")
    print(f"\nWall time: {wall:.1f}s. {runs} runs took {run_s:.1f}s together (side by side), {step_s:.1f}s of it "
          f"inside asset steps: orchestration {1 - step_s / run_s:.1%} of the runs' time.")
    if failures:
        raise SystemExit(f"{len(failures)} runs failed: {failures}")


if __name__ == "__main__":
    main()
