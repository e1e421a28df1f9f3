"""Bad input fails with a dg.Failure naming the file and column, and loses nothing already materialized."""

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from tmiv_assets.defs.jobs import TRAINING_ASSETS
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.model_registry import ModelRegistry
from tmiv_assets_tests.conftest import DATA_DIR, FAST_TRAINING, resources_for


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """titanic and cps1985 trained once on good data in a writable copy of data/."""
    root = tmp_path_factory.mktemp("bad_input")
    data_dir = root / "data"
    shutil.copytree(DATA_DIR, data_dir, ignore=shutil.ignore_patterns("*.py", "incoming"))
    home = root / "tmiv"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["titanic", "cps1985"])
        for dataset in ("titanic", "cps1985"):
            assert dg.materialize(TRAINING_ASSETS, run_config=FAST_TRAINING, resources=resources_for(home, data_dir),
                                  partition_key=dataset, instance=instance).success
        yield home, data_dir, instance


def snapshot(home: Path, dataset: str) -> tuple:
    store, registry = FeatureStore(home=str(home)), ModelRegistry(home=str(home))
    catalog = tuple(len(store.versions(name, dataset)) for name in ("raw_dataset", "clean_dataset", "feature_set"))
    return catalog, registry.champion(dataset).version, store.load("feature_set", dataset).shape


def break_file(path: Path, content: str | None = None, transform=None) -> bytes:
    original = path.read_bytes()
    if transform is not None:
        transform(pd.read_csv(path)).to_csv(path, index=False)
    else:
        path.write_text(content)
    return original


@pytest.mark.parametrize(
    ("dataset", "breakage", "expected"),
    [
        ("titanic", {"transform": lambda f: f.drop(columns=["survived"])},
         ["target 'survived' not found", "'target' field"]),
        ("titanic", {"content": ""}, ["file is empty"]),
        ("titanic", {"content": "passenger_id,survived,sex\n"}, ["header but no rows"]),
        ("cps1985", {"transform": lambda f: f.assign(wage=f["wage"].map(lambda w: f"${w:.2f}"))},
         ["target column 'wage' must be numeric for regression", "'$5.10'"]),
        ("titanic", {"transform": lambda f: f.assign(passenger_id=1)}, ["id column 'passenger_id'", "duplicate"]),
    ],
)
def test_bad_file_fails_clearly_and_keeps_earlier_state(trained, dataset, breakage, expected):
    home, data_dir, instance = trained
    path = data_dir / "datasets" / f"{dataset}.csv"
    before = snapshot(home, dataset)
    original = break_file(path, **breakage)
    try:
        result = dg.materialize(TRAINING_ASSETS, run_config=FAST_TRAINING, resources=resources_for(home, data_dir),
                                partition_key=dataset, instance=instance, raise_on_error=False)
    finally:
        path.write_bytes(original)
    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert failure.step_key == "raw_dataset"
    description = failure.step_failure_data.user_failure_data.description
    assert str(path) in description
    for fragment in expected:
        assert fragment in description
    assert snapshot(home, dataset) == before


def test_missing_spec_field_names_the_spec(trained):
    home, data_dir, instance = trained
    spec = data_dir / "datasets" / "titanic.yaml"
    original = spec.read_text()
    spec.write_text(original.replace("target: survived\n", ""))
    try:
        result = dg.materialize(TRAINING_ASSETS[:1], resources=resources_for(home, data_dir), partition_key="titanic",
                                instance=instance, raise_on_error=False)
    finally:
        spec.write_text(original)
    description = result.get_step_failure_events()[0].step_failure_data.user_failure_data.description
    assert f"{spec}: required field 'target' is missing" in description


def test_failing_blocking_quality_check_stops_training(trained):
    home, data_dir, instance = trained
    path = data_dir / "datasets" / "titanic.csv"
    before = snapshot(home, "titanic")
    original = break_file(path, transform=lambda f: f.assign(age=f["age"].where(f.index % 5 == 0)))  # 80% missing
    try:
        result = dg.materialize(TRAINING_ASSETS, run_config=FAST_TRAINING, resources=resources_for(home, data_dir),
                                partition_key="titanic", instance=instance, raise_on_error=False)
    finally:
        path.write_bytes(original)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["missing_rate_within_threshold"].passed
    assert "age" in checks["missing_rate_within_threshold"].metadata["detail"].value
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "model_candidates" not in materialized and "registered_model" not in materialized
    assert snapshot(home, "titanic")[1] == before[1]  # the champion is untouched


def test_a_champion_that_cannot_score_the_new_rows_is_kept_not_replaced(trained):
    home, data_dir, instance = trained
    path = data_dir / "datasets" / "titanic.csv"
    champion_before = ModelRegistry(home=str(home)).champion("titanic").version
    original = break_file(path, transform=lambda f: f.drop(columns=["passengerClass"]))  # a column it needs
    try:
        result = dg.materialize(TRAINING_ASSETS, run_config=FAST_TRAINING, resources=resources_for(home, data_dir),
                                partition_key="titanic", instance=instance)
    finally:
        path.write_bytes(original)
    registered = {k: v.value for k, v in result.asset_materializations_for_node("registered_model")[0].metadata.items()}
    assert registered["promoted"] is False and registered["alias"] == "challenger"
    assert f"kept champion v{champion_before}" in registered["reason"] and "passengerClass" in registered["reason"]
    registry = ModelRegistry(home=str(home))
    assert registry.champion("titanic").version == champion_before
    challenger = registry.client().get_model_version_by_alias("tmiv_titanic", "challenger")
    assert int(challenger.version) == registered["model_version"] and "kept champion" in challenger.tags["decision"]
