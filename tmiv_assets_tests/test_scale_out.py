"""The scale-out profile end to end on loopback: the Dagster instance, MLflow's store and registry on PostgreSQL,
every step of `full_pipeline` run by one of two Celery workers through a Redis broker."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from tmiv_assets.resources.model_registry import ModelRegistry
from tmiv_assets_tests.conftest import DATA_DIR, PROJECT_ROOT
from tmiv_assets_tests.servers import Postgres, celery_workers, redis_server

pytestmark = pytest.mark.servers

BIN = Path(sys.executable).parent


@pytest.fixture
def postgres():
    server = Postgres().start()
    yield server
    server.remove()


@pytest.fixture
def scale_out(tmp_path, postgres, monkeypatch):
    """The environment of the PostgreSQL + Celery profile, as the README sets it up."""
    with redis_server() as broker:
        dagster_home = tmp_path / "tmiv" / "dagster"
        dagster_home.mkdir(parents=True)
        shutil.copy(PROJECT_ROOT / "deploy" / "postgres" / "dagster.yaml", dagster_home / "dagster.yaml")
        environment = {"TMIV_HOME": str(tmp_path / "tmiv"), "DAGSTER_HOME": str(dagster_home),
                       "TMIV_DATA_DIR": str(DATA_DIR), "TMIV_DATABASE_URL": postgres.url,
                       "TMIV_CELERY_BROKER": broker, "TMIV_AUTOMATION": "off"}
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        yield environment


def test_full_pipeline_runs_on_celery_workers_with_every_store_on_postgres(scale_out, postgres, tmp_path):
    environment = dict(__import__("os").environ)
    with dg.DagsterInstance.from_config(scale_out["DAGSTER_HOME"]) as instance:
        instance.add_dynamic_partitions("dataset", ["titanic"])
    run_config = tmp_path / "fast.yaml"
    run_config.write_text("ops:\n  model_candidates:\n    config: {time_budget_s: 60, preset: fast, max_trials: 4, "
                          "n_jobs: 1, search_workers: 2}\n")
    with celery_workers(environment, 2, tmp_path) as workers:
        completed = subprocess.run(
            [str(BIN / "dagster"), "job", "execute", "-m", "tmiv_assets.definitions", "-j", "full_pipeline", "-c",
             str(run_config), "--tags", json.dumps({"dagster/partition": "titanic"})],
            cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=900)
        assert completed.returncode == 0, completed.stderr[-4000:]
        assert all(worker.poll() is None for worker in workers)
    with dg.DagsterInstance.from_config(scale_out["DAGSTER_HOME"]) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        (run,) = instance.get_runs()
        assert (run.job_name, run.status) == ("full_pipeline", dg.DagsterRunStatus.SUCCESS)
        handed = [e for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.is_engine_event
                  and "in celery worker" in (e.dagster_event.message or "")]
        steps = [e for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)]
        assert len(handed) == len(steps) > 10  # every step went through the broker to a worker
        hosts = {e.dagster_event.engine_event_data.metadata["Celery worker"].value for e in handed}
        searched = {e.step_key for e in handed if ".search_worker[" in e.step_key}
        assert searched == {"model_candidates.search_worker[0]", "model_candidates.search_worker[1]"}
        assert hosts <= {f"worker{n}@{h.split('@')[1]}" for n in range(2) for h in hosts}
        assert instance.get_latest_materialization_event(dg.AssetKey("registered_model")) is not None
    registry = ModelRegistry(home=scale_out["TMIV_HOME"], database_url=postgres.url)
    assert registry.tracking_uri.startswith("postgresql+psycopg2://") and registry.champion("titanic") is not None
    with psycopg2.connect(host="127.0.0.1", port=postgres.port, user="tmiv", dbname="tmiv_mlflow") as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT alias, version FROM registered_model_aliases WHERE name = 'tmiv_titanic'")
            assert cursor.fetchall() == [("champion", int(registry.champion("titanic").version))]
    with psycopg2.connect(host="127.0.0.1", port=postgres.port, user="tmiv", dbname="tmiv_optuna") as connection:
        with connection.cursor() as cursor:  # the search workers' shared studies, one per family of this run
            cursor.execute("SELECT study_name FROM studies")
            assert {name for (name,) in cursor.fetchall()} >= {f"titanic-{run.run_id}-binary-lightgbm"}
    assert not (Path(scale_out["TMIV_HOME"]) / "mlflow" / "mlflow.db").exists()
    assert not list(Path(scale_out["DAGSTER_HOME"]).rglob("*.db"))  # no SQLite instance beside PostgreSQL
