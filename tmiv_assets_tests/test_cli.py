"""The shell entry points: `dagster job execute`, `dagster asset materialize` and the sensor daemon."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from tmiv_assets.defs.model_jobs import predict_file
from tmiv_assets.resources.model_registry import ModelRegistry
from tmiv_assets.resources.prediction_log import PredictionLog
from tmiv_assets_tests.conftest import DATA_DIR, PROJECT_ROOT, free_port, persistent_instance, resources_for

BIN = Path(sys.executable).parent


def dagster(environment: dict[str, str], *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dagster"), *args], cwd=PROJECT_ROOT, env=environment, capture_output=True,
                          text=True, timeout=timeout)


def test_job_execute_runs_the_full_pipeline_and_the_lifecycle_jobs(environment, tmp_path):
    with persistent_instance(environment) as instance:
        instance.add_dynamic_partitions("dataset", ["titanic"])
    run_config = tmp_path / "fast.yaml"  # the run-config file users pass to tune the search
    run_config.write_text("ops:\n  model_candidates:\n    config: {time_budget_s: 10, preset: fast, max_trials: 4}\n")
    completed = dagster(environment, "job", "execute", "-m", "tmiv_assets.definitions", "-j", "full_pipeline",
                        "-c", str(run_config), "--tags", json.dumps({"dagster/partition": "titanic"}))
    assert completed.returncode == 0, completed.stderr[-3000:]
    with persistent_instance(environment) as instance:
        runs = instance.get_runs()
        assert [(r.job_name, r.status, r.tags["dagster/partition"]) for r in runs] == [
            ("full_pipeline", dg.DagsterRunStatus.SUCCESS, "titanic")]
        assert instance.get_latest_materialization_event(dg.AssetKey("registered_model")) is not None
    registry = ModelRegistry(home=environment["TMIV_HOME"])
    with pytest.raises(LookupError, match="no earlier champion"):
        registry.rollback("titanic")
    first = registry.champion("titanic")
    registry.register("titanic", first.source, first.run_id, dict(first.tags))  # the same model again, as v2
    commands = readme_lifecycle_commands()  # promote v2, roll back, archive v2: the shipped configs, as documented
    assert [re.search(r"-j (\w+)", c).group(1) for c in commands] == ["promote_model", "rollback_model",
                                                                       "archive_model", "predict_file"]
    for command in commands:
        completed = subprocess.run(["bash", "-c", command], cwd=PROJECT_ROOT, env=environment | {
            "PATH": f"{BIN}:{environment['PATH']}"}, capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, f"{command}\n{completed.stderr[-3000:]}"
    assert int(registry.champion("titanic").version) == int(first.version) == 1
    assert registry.client().get_model_version("tmiv_titanic", "2").tags["archived"] == "true"
    history = registry.history("titanic")
    assert [(d.action, d.before, d.after, d.trigger) for d in history] == [
        ("register", None, 1, "manual"), ("promote", 1, 2, "manual"), ("rollback", 2, 1, "manual"),
        ("archive", 1, 1, "manual")]
    assert history[2].reason == "the new champion misbehaves on live data" and history[3].subject == 2
    with pytest.raises(ValueError, match="is the champion"):
        registry.archive("titanic", 1)
    with pytest.raises(LookupError, match=r"has no version 7; versions: \[1, 2\]"):
        registry.promote("titanic", 7)
    with pytest.raises(LookupError, match="unknown dataset 'nowhere'"):
        registry.rollback("nowhere")
    with persistent_instance(environment) as instance:
        shown = instance.get_latest_materialization_event(dg.AssetKey("champion_history")).asset_materialization
        assert shown.partition == "titanic" and shown.metadata["decisions"].value == 4
    rows = pd.read_csv(DATA_DIR / "datasets" / "titanic.csv")
    predicted = pd.read_parquet(Path(environment["TMIV_HOME"]) / "predictions" / "titanic" / "titanic-v1.parquet")
    model = registry.load_version("titanic", 1)
    assert predicted["passenger_id"].tolist() == rows["passenger_id"].tolist()
    assert predicted["prediction"].tolist() == model.predict(rows).tolist()
    assert sorted(c for c in predicted if c.startswith("probability_")) == ["probability_no", "probability_yes"]
    assert predicted["score"].tolist() == predicted["probability_yes"].tolist()  # titanic's positive_class
    logged = PredictionLog(home=environment["TMIV_HOME"]).rows(f"file:{DATA_DIR / 'datasets' / 'titanic.csv'}")
    assert len(logged) == len(rows) and set(logged["model_version"]) == {1}
    broken = tmp_path / "broken.csv"
    rows.drop(columns=["sex"]).assign(age=rows["age"].astype(str) + "y").to_csv(broken, index=False)
    result = predict_file.execute_in_process(
        run_config={"ops": {"predict_rows_of_file": {"config": {"dataset": "titanic", "path": str(broken)}}}},
        resources=resources_for(Path(environment["TMIV_HOME"])), raise_on_error=False)
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data.description
    assert str(broken) in failure and "['sex']" in failure and "are missing" in failure


def readme_lifecycle_commands() -> list[str]:
    """The README's promote / rollback / archive / predict_file lines (they need two registered versions)."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    return [line for line in readme.splitlines() if line.startswith("dagster job execute") and " -c config/" in line]


def readme_shell_commands() -> list[str]:
    """The `dagster …` lines and the partition-registering `python -c …` line the README shows."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    commands = [line.strip() for line in readme.splitlines() if line.startswith(("dagster job execute",
                                                                                 "dagster asset materialize", "dg "))
                and line not in readme_lifecycle_commands()]
    register = re.search(r"`(python -c \"import dagster as dg; [^`]+)`", readme).group(1)
    return [register, *commands]


# The whole README end to end (three datasets, forecasting, serving, every notebook) beside another worker's
# tests on two cores: 420-790 s measured, so the suite's 900 s would fail it on a slow day, not on a hang.
@pytest.mark.timeout(1800)
def test_every_shell_command_in_the_readme_runs_as_written(environment, monkeypatch):
    with persistent_instance(environment) as instance:  # what the sensor would have registered
        instance.add_dynamic_partitions("dataset", ["flights", "cps1985"])
        instance.add_dynamic_partitions("series", ["air_passengers"])
    shell = environment | {"PATH": f"{BIN}:{environment['PATH']}"}  # as after `source .venv/bin/activate`
    commands = readme_shell_commands()
    assert len(commands) == 10 and any("score_batch" in c for c in commands) and any("dg launch" in c for c in commands)
    for command in commands:
        completed = subprocess.run(["bash", "-c", command], cwd=PROJECT_ROOT, env=shell, capture_output=True,
                                   text=True, timeout=600)
        assert completed.returncode == 0, f"{command}\n{completed.stderr[-3000:]}"
    home = Path(environment["TMIV_HOME"])
    assert (home / "batches" / "flights" / "2013-07-22" / "scored.parquet").exists()
    served_predictions_equal_scored_batch(shell, home)
    assert (home / "forecasts" / "air_passengers.parquet").exists()
    with persistent_instance(environment) as instance:
        assert set(instance.get_dynamic_partitions("dataset")) == {"titanic", "flights", "cps1985"}
        succeeded = [r.job_name for r in instance.get_runs() if r.status == dg.DagsterRunStatus.SUCCESS]
        assert sorted(set(succeeded)) == ["__ASSET_JOB", "explain_champion", "forecast_series", "full_pipeline",
                                          "retrain", "score_batch"]
    monkeypatch.setenv("TMIV_HOME", environment["TMIV_HOME"])  # the notebooks read the state these commands made
    for notebook in sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb")):
        run_notebook(notebook)


def run_notebook(path: Path) -> None:
    """Execute a notebook top to bottom in a fresh kernel, in its own folder, as a person opening it would."""
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors}"
    figures = [output for cell in notebook.cells for output in cell.get("outputs", [])
               if output.get("data", {}).get("image/png")]
    assert figures or path.stem not in ("quickstart", "forecasting"), f"{path.name} drew no figure"


def test_a_run_started_from_python_is_the_code_locations_and_can_run_its_steps_in_process(environment):
    """How the demo executes runs: with the workspace location's origin (the UI lists and re-executes them), and
    with `steps_in_process` every step in the run's own process."""
    with persistent_instance(environment) as instance:
        instance.add_dynamic_partitions("series", ["air_passengers"])
    script = ("import dagster as dg; from tmiv_assets.defs.launch import execute_location_run; "
              "run = execute_location_run(dg.DagsterInstance.get(), 'forecast_series', 'air_passengers', {}, "
              "{'execution': {'config': {'steps_in_process': True}}}); print(run.run_id)")
    completed = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=environment, capture_output=True,
                               text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    run_id = completed.stdout.split()[-1]
    with persistent_instance(environment) as instance:
        run = instance.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS and run.tags["dagster/partition"] == "air_passengers"
        assert run.remote_job_origin.location_name == "tmiv_assets" and run.job_name == "forecast_series"
        events = [record.event_log_entry for record in instance.get_records_for_run(run_id).records
                  if record.event_log_entry.dagster_event is not None]
        pids = {e.dagster_event.event_type: e.dagster_event.pid for e in events}
        steps = [e for e in events if e.dagster_event.event_type == dg.DagsterEventType.STEP_START]
        assert len(steps) == 4 and {e.dagster_event.pid for e in steps} == {pids[dg.DagsterEventType.RUN_START]}


def test_notebooks_are_committed_without_outputs():
    for path in sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        stale = [i for i, cell in enumerate(notebook.cells)
                 if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
        assert not stale, f"{path.name}: cells {stale} carry outputs; clear them before committing"


def served_predictions_equal_scored_batch(shell: dict[str, str], home: Path) -> None:
    """The README's `mlflow models serve` and `curl` lines on a free port: the server answers the batch rows
    exactly as `scored_batch` did; stopped by its process group."""
    readme = (PROJECT_ROOT / "README.md").read_text().splitlines()
    port = str(free_port())
    serve = next(line for line in readme if "mlflow models serve" in line).replace("5001", port)
    curl = next(line for line in readme if line.startswith("curl -s 127.0.0.1:5001")).replace("5001", port)
    # A user's shell has no MLflow settings; in-process runs of other tests may have left some in os.environ.
    clean_shell = {k: v for k, v in shell.items() if not k.startswith("MLFLOW_")}
    log = home / "scoring_server.log"
    server = subprocess.Popen(["bash", "-c", serve], cwd=PROJECT_ROOT, env=clean_shell, stdout=log.open("w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while subprocess.run(["curl", "-sf", f"127.0.0.1:{port}/ping"], capture_output=True).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60)
        assert json.loads(answer.stdout)["predictions"][0] in (0, 1)
        batch = pd.read_parquet(DATA_DIR / "incoming" / "flights" / "2013-07-22.parquet")
        body = json.dumps({"dataframe_split": json.loads(batch.to_json(orient="split", index=False,
                                                                      date_format="iso"))})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body.encode(),
                                         {"Content-Type": "application/json"})
        served = json.loads(urllib.request.urlopen(request, timeout=120).read())["predictions"]
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    scored = pd.read_parquet(home / "batches" / "flights" / "2013-07-22" / "scored.parquet")
    assert served == scored["prediction"].tolist()
