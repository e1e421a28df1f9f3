"""The real `dagster-daemon` running the monitoring loop, with bounded waits; processes stopped by pid."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.model_registry import ModelRegistry
from tmiv_assets_tests.conftest import DATA_DIR, PROJECT_ROOT, persistent_instance

BIN = Path(sys.executable).parent


def start_daemon(environment: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=PROJECT_ROOT,
                            env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop(daemon: subprocess.Popen) -> None:
    os.killpg(daemon.pid, signal.SIGTERM)
    daemon.wait(timeout=60)


def wait_for(what: str, condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {seconds:.0f} s waiting for {what}")
        time.sleep(3)


def finished_runs(environment: dict[str, str], job: str) -> list[dg.DagsterRun]:
    with persistent_instance(environment) as instance:
        return [r for r in instance.get_runs(filters=dg.RunsFilter(job_name=job)) if r.is_finished]


# A daemon, its runs and several retrains beside another worker's tests on two cores: 350-890 s measured,
# so the suite's 900 s would fail it on a slow day, not on a hang.
@pytest.mark.timeout(1800)
def test_the_daemon_runs_the_monitoring_loop(environment, tmp_path):
    """The real daemon on flights alone: it trains a champion, scores the four batches, retrains once for the
    two drifted July days (with the labelled rows of the scored days), gates the new model, fires nothing
    again after a restart, and rolls back a worse champion after the next labelled batch it served."""
    data = tmp_path / "data"
    (data / "datasets").mkdir(parents=True)
    shutil.copy(DATA_DIR / "datasets" / "flights.parquet", data / "datasets")
    # A wide live-performance threshold, so this test follows the drift trigger alone.
    spec = (DATA_DIR / "datasets" / "flights.yaml").read_text() + "performance: {max_relative_drop: 0.3}\n"
    (data / "datasets" / "flights.yaml").write_text(spec)
    shutil.copytree(DATA_DIR / "incoming" / "flights", data / "incoming" / "flights")
    environment = environment | {"TMIV_DATA_DIR": str(data), "TMIV_SENSOR_INTERVAL_S": "5"}
    # Two runs at a time on 2 cores, with the rest of the suite beside it: the retrain's 20 s search must still
    # get the CPU to finish a model (with four runs at once under the suite's load it once found none in time).
    instance_file = Path(environment["DAGSTER_HOME"]) / "dagster.yaml"
    instance_file.write_text(instance_file.read_text().replace("max_concurrent_runs: 4", "max_concurrent_runs: 2"))
    with persistent_instance(environment):
        pass  # creates the instance's SQLite storages before the daemon and this test both open them
    daemon = start_daemon(environment)
    try:
        # beside the rest of the suite, the four batches' runs and their monitoring refreshes queue before it
        wait_for("the policy's retrain", lambda: finished_runs(environment, "retrain"), 1200)
        time.sleep(15)  # three more ticks of every sensor, which must not retrain again
    finally:
        stop(daemon)
    scored = finished_runs(environment, "score_batch")
    assert len(scored) == 4 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in scored)
    [retrain] = finished_runs(environment, "retrain")
    assert retrain.tags["dagster/sensor_name"] == "drift_retrain_sensor"
    assert retrain.tags["tmiv/trigger"] == "drift"
    assert set(retrain.tags["tmiv/trigger_batches"].split(",")) <= {"2013-07-22", "2013-07-23"}  # not February
    assert retrain.tags["dagster/run_key"] == f"drift/flights/{retrain.tags['tmiv/trigger_batch']}"
    registry = ModelRegistry(home=environment["TMIV_HOME"])
    new = max(registry.versions("flights"), key=lambda v: int(v.version))
    assert (int(new.version), new.tags["trigger"], new.tags["dagster_run_id"]) == (2, "drift", retrain.run_id)
    assert "batch 2013-07-22's" in new.tags["decision"]  # gated on the newest labelled batch's held-out rows
    assert (int(registry.champion("flights").version) == 2) is (new.tags["gate"] == "passed")
    assert (retrain.status == dg.DagsterRunStatus.SUCCESS) is (new.tags["gate"] == "passed")

    # A restarted daemon requests nothing it requested before.
    good = registry.champion("flights")
    board = FeatureStore(home=environment["TMIV_HOME"]).load("model_leaderboard", "flights").set_index("model")
    worse = registry.register("flights", board.loc["baseline", "model_uri"], board.loc["baseline", "run_id"],
                              dict(new.tags) | {"test_roc_auc": str(board.loc["baseline", "test_roc_auc"])})
    registry.promote("flights", worse.version, reason="deliberately worse", trigger="drift")
    # The next batch (July 22's flights again, under new ids) arrives with its labels.
    batch = pd.read_parquet(DATA_DIR / "incoming" / "flights" / "2013-07-22.parquet")
    labels = pd.read_parquet(DATA_DIR / "incoming" / "flights" / "labels" / "2013-07-22.parquet")
    labels.assign(flight_id=labels["flight_id"] + 10_000_000).to_parquet(
        data / "incoming" / "flights" / "labels" / "2013-07-30.parquet")
    batch.assign(flight_id=batch["flight_id"] + 10_000_000).to_parquet(
        data / "incoming" / "flights" / "2013-07-30.parquet")
    daemon = start_daemon(environment)
    try:
        wait_for("the rollback", lambda: registry.champion("flights").version == good.version, 300)
        time.sleep(10)
    finally:
        stop(daemon)
    assert len(finished_runs(environment, "retrain")) == 1  # drift again on July 30, but in the cool-down
    assert len(finished_runs(environment, "score_batch")) == len(scored) + 1  # only the new day
    decision = registry.history("flights")[-1]
    assert (decision.action, decision.before, decision.after, decision.trigger) == (
        "rollback", int(worse.version), int(good.version), "performance")
    assert decision.reason.startswith("roll back: roc_auc 0.5000 vs the previous champion's")
    [rolled_back] = [r for r in finished_runs(environment, "score_batch") if r.tags.get("tmiv/decision")]
    assert rolled_back.tags["dagster/partition"] == "flights|2013-07-30"
