"""Kills at each write point of the feature store and the registry, then an unattended rerun; concurrent runs.

Each kill is a real SIGKILL of a process running the training assets, sent by the process itself at an
exact point (a patched method). Afterwards nobody frees or deletes anything by hand: the dead run is failed
by `dead_runs_sensor`, a rerun succeeds, and the state is consistent.
"""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import optuna
import pandas as pd
import pytest

from tmiv_assets.defs.jobs import TRAINING_ASSETS
from tmiv_assets.defs.sensors import dead_runs_sensor, fail_dead_runs
from tmiv_assets.ml.automl.tuning import make_storage
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.model_registry import EXPERIMENT, ModelRegistry
from tmiv_assets_tests.conftest import DATA_DIR, FAST_TRAINING, PROJECT_ROOT, resources_for

# Run in a child process: patch one write point so that the process SIGKILLs itself there, then train titanic.
CHILD = textwrap.dedent("""
    import contextlib, os, signal, sys
    from pathlib import Path
    import dagster as dg
    import tmiv_assets.resources.feature_store as feature_store
    from tmiv_assets.defs.jobs import TRAINING_ASSETS
    from tmiv_assets.ml.automl.estimator import AutoML
    from tmiv_assets.ml.automl.search import _FamilySearch
    from tmiv_assets.resources.model_registry import ModelRegistry
    from tmiv_assets_tests.conftest import FAST_TRAINING, resources_for

    home, data_dir, point = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    run_config = FAST_TRAINING
    Store, saving = feature_store.FeatureStore, []

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    def at_clean_dataset(patched):  # the kill hits clean_dataset's save: raw_dataset is already committed
        def wrapper(*args, **kwargs):
            if saving and saving[-1] == "clean_dataset":
                die()
            return patched(*args, **kwargs)
        return wrapper

    save = Store.save
    Store.save = lambda self, name, *a, **k: saving.append(name) or save(self, name, *a, **k)
    if point == "parquet_write":  # half a Parquet file under its temporary name
        write = feature_store.write_parquet_hashed
        def partial_write(frame, target):
            if saving[-1] == "clean_dataset":
                target.write_bytes(b"PAR1 half written")
                die()
            return write(frame, target)
        feature_store.write_parquet_hashed = partial_write
    elif point == "inside_transaction":
        Store._latest_row = staticmethod(at_clean_dataset(Store._latest_row))
    elif point == "after_commit":  # committed in DuckDB, the readers' snapshot not yet published
        publish = Store._publish_snapshot
        Store._publish_snapshot = lambda self, c: (die() if saving[-1:] == ["clean_dataset"]
                                                   and self.publishing_marker.exists() else publish(self, c))
    elif point == "snapshot_rename":  # the new snapshot written under its temporary name, not renamed
        atomic = feature_store.atomic_path
        @contextlib.contextmanager
        def unfinished(target):
            with atomic(target) as temporary:
                yield temporary
                if saving[-1:] == ["clean_dataset"]:
                    die()
        feature_store.atomic_path = unfinished
    elif point == "search_worker":  # the second of two search workers, its trial started in the shared study
        folds = _FamilySearch._cross_validate
        _FamilySearch._cross_validate = lambda self, *a: die() if self.context.worker == 1 else folds(self, *a)
        config = FAST_TRAINING.ops["model_candidates"]
        run_config = dg.RunConfig(ops={"model_candidates": config.model_copy(update={"search_workers": 2})})
    elif point == "training":  # MLflow runs are open
        AutoML.fit_from = die
    elif point == "model_version":  # before the MLflow model version exists
        ModelRegistry.register = die
    elif point == "champion_alias":  # the version exists, its alias does not
        ModelRegistry.promote = die
    with dg.DagsterInstance.get() as instance:
        dg.materialize(TRAINING_ASSETS, run_config=run_config, resources=resources_for(home, data_dir),
                       partition_key="titanic", instance=instance)
    print("the kill point was never reached")
""")
KILL_POINTS = ["parquet_write", "inside_transaction", "after_commit", "snapshot_rename", "search_worker", "training",
               "model_version", "champion_alias"]


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "dagster"
    path.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(path))
    return path


def assert_consistent(home: Path, dataset: str) -> None:
    """Snapshot = catalog, every row has its file and every file its row, no temporaries, no stale lineage,
    one champion tagged with the latest versions, no MLflow run left RUNNING."""
    store = FeatureStore(home=str(home))
    assert not store.publishing_marker.exists()
    with duckdb.connect(str(store.catalog_path), read_only=True) as connection:
        committed = connection.execute("SELECT name, dataset, version, path FROM feature_sets "
                                       "ORDER BY ALL").fetchall()
    published = duckdb.sql(f"SELECT name, dataset, version, path FROM read_parquet('{store.catalog_snapshot_path}') "
                           "ORDER BY ALL").fetchall()
    assert published == committed
    assert {Path(row[3]) for row in committed} == set(store.root.rglob("v*.parquet"))
    assert not list(store.root.rglob("*.tmp"))
    clean = store.latest("clean_dataset", dataset).version
    assert store.lineage("feature_set", dataset)["clean_dataset_version"] == clean
    champion = ModelRegistry(home=str(home)).champion(dataset)
    assert champion.tags["clean_dataset_version"] == str(clean)
    assert champion.tags["feature_set_version"] == str(store.latest("feature_set", dataset).version)
    client = ModelRegistry(home=str(home)).client()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert not client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_kill_at_each_write_point_is_recovered_by_an_unattended_rerun(point, tmp_path, dagster_home):
    home = tmp_path / "tmiv"
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("dataset", ["titanic"])
    child = subprocess.run([sys.executable, "-c", CHILD, str(home), str(DATA_DIR), point], cwd=PROJECT_ROOT,
                           capture_output=True, text=True, timeout=600, env=os.environ | {"TMIV_HOME": str(home)})
    assert child.returncode == -signal.SIGKILL, child.stdout[-2000:] + child.stderr[-3000:]
    with dg.DagsterInstance.get() as instance:
        [dead] = instance.get_runs()
        assert dead.status == dg.DagsterRunStatus.STARTED  # what a killed run looks like until it is noticed
        tick = dead_runs_sensor(dg.build_sensor_context(instance=instance))  # what the daemon runs every 30 s
        assert dead.run_id in tick.skip_message and "killed" in tick.skip_message
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert fail_dead_runs(instance) == []
        if point == "search_worker":  # the shared study keeps the first worker's finished trials
            study = optuna.load_study(study_name=f"titanic-{dead.run_id}-binary-lightgbm",
                                      storage=make_storage(home / "optuna" / f"{dead.run_id}.log"))
            states = [(t.user_attrs["worker"], t.state.name) for t in study.trials]
            assert (0, "COMPLETE") in states and states[-1] == (1, "RUNNING")
        rerun = dg.materialize(TRAINING_ASSETS, run_config=FAST_TRAINING, resources=resources_for(home),
                               partition_key="titanic", instance=instance)
    assert rerun.success
    assert_consistent(home, "titanic")


def test_readers_wait_for_a_publish_and_repair_one_a_killed_writer_left(tmp_path):
    """The marker brackets commit and publish: a reader that finds it republishes before reading."""
    store = FeatureStore(home=str(tmp_path))
    store.save("raw_dataset", "toy", pd.DataFrame({"x": [1, 2]}), {})
    with duckdb.connect(str(store.catalog_path)) as connection:  # a commit whose writer died before publishing
        connection.execute("INSERT INTO feature_sets SELECT name, dataset, 2, path, schema, row_count, content_hash, "
                           "created_at, lineage, code_version FROM feature_sets")
    store.publishing_marker.touch()
    assert store.latest("raw_dataset", "toy").version == 2
    assert not store.publishing_marker.exists()


def test_five_concurrent_runs_over_different_partitions_have_no_lock_errors(tmp_path, dagster_home):
    data_dir = tmp_path / "data"
    (data_dir / "datasets").mkdir(parents=True)
    names = [f"{base}_{copy}" for base in ("titanic", "cps1985") for copy in "abc"][:5]
    for name in names:
        base = name.rsplit("_", 1)[0]
        shutil.copy(DATA_DIR / "datasets" / f"{base}.csv", data_dir / "datasets" / f"{name}.csv")
        spec = (DATA_DIR / "datasets" / f"{base}.yaml").read_text().replace(f"{base}.csv", f"{name}.csv")
        (data_dir / "datasets" / f"{name}.yaml").write_text(spec)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("dataset", names)
    environment = os.environ | {"TMIV_HOME": str(tmp_path / "tmiv"), "TMIV_DATA_DIR": str(data_dir)}
    runs = [subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m",
                              "tmiv_assets.definitions", "--select", "raw_dataset,clean_dataset,feature_set",
                              "--partition", name], cwd=PROJECT_ROOT, env=environment, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for name in names]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0] * 5, "\n".join(o[-2000:] for o in outputs)
    assert not [line for output in outputs for line in output.splitlines() if "lock" in line.lower()]
    store = FeatureStore(home=str(tmp_path / "tmiv"))
    assert sorted(store.feature_sets()["dataset"].unique()) == sorted(names)
    assert len(store.feature_sets()) == 15 and store.feature_sets()["versions"].eq(1).all()


def test_first_runs_of_a_fresh_state_directory_create_the_mlflow_store_once(tmp_path):
    """Three processes open the registry of a new state directory at once, as the first runs of `make demo` or of a
    daemon do: one creates and migrates the SQLite store, the others wait for it (no "duplicate column name")."""
    opener = ("import sys; from tmiv_assets.resources.model_registry import ModelRegistry; "
              "print(ModelRegistry(home=sys.argv[1]).ensure_experiment())")
    processes = [subprocess.Popen([sys.executable, "-c", opener, str(tmp_path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in processes]
    assert [code for code, _, _ in outcomes] == [0, 0, 0], [err[-2000:] for _, _, err in outcomes]
    assert len({out.strip() for _, out, _ in outcomes}) == 1  # one experiment, whoever created it
    assert (tmp_path / "mlflow" / ".store_created").exists()
