"""Bad input fails with a dg.Failure naming the file and column, and loses nothing already materialized."""

import re
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from tmiv_assets.defs.assets.automl import TrainingConfig
from tmiv_assets.defs.assets.data import clean_dataset, raw_dataset
from tmiv_assets.defs.assets.deploy import DeployConfig, model_comparison
from tmiv_assets.defs.assets.features import feature_set, selected_features
from tmiv_assets.defs.assets.monitoring import ab_test_report, scored_batch
from tmiv_assets.defs.jobs import TRAINING_ASSETS
from tmiv_assets.defs.model_jobs import conclude_ab_test
from tmiv_assets.resources.databases import check_database_url, sibling_database
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.model_registry import ModelRegistry
from tmiv_assets.resources.prediction_log import PredictionLog
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


@contextmanager
def restored(directory: Path) -> Iterator[None]:
    """Put every file of `directory` back as it was (and remove added ones) after the block."""
    before = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    try:
        yield
    finally:
        for path in sorted(directory.rglob("*"), reverse=True):
            if path not in before:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        for path, content in before.items():
            if not path.exists() or path.read_bytes() != content:
                path.write_bytes(content)


def edit_spec(dataset: str, edit) -> Callable[[Path], Path]:
    def apply(data_dir: Path) -> Path:
        spec = data_dir / "datasets" / f"{dataset}.yaml"
        spec.write_text(edit(spec.read_text())) if not isinstance(edit, bytes) else spec.write_bytes(edit)
        return spec
    return apply


def set_field(dataset: str, line: str) -> Callable[[Path], Path]:
    """Replace the field of `line` (or add it) in the dataset's spec."""
    key = line.split(":", 1)[0]
    return edit_spec(dataset, lambda text: "".join(
        row for row in text.splitlines(keepends=True) if not row.startswith(f"{key}:")) + line + "\n")


def edit_csv(dataset: str, transform) -> Callable[[Path], Path]:
    def apply(data_dir: Path) -> Path:
        path = data_dir / "datasets" / f"{dataset}.csv"
        transform(pd.read_csv(path)).to_csv(path, index=False)
        return path
    return apply


def write_csv_text(dataset: str, text: str | bytes) -> Callable[[Path], Path]:
    def apply(data_dir: Path) -> Path:
        path = data_dir / "datasets" / f"{dataset}.csv"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path
    return apply


def data_file(dataset: str, name: str, make) -> Callable[[Path], Path]:
    """Point the spec's `file` at a new file `name`, made by make(path) (e.g. a directory or corrupt bytes)."""
    def apply(data_dir: Path) -> Path:
        path = data_dir / "datasets" / name
        make(path)
        set_field(dataset, f"file: {name}")(data_dir)
        return path
    return apply


def titanic_rows(rows: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda f: f.head(rows)


def rare_class(frame: pd.DataFrame) -> pd.DataFrame:
    survivors = frame.index[frame["survived"] == "yes"]
    return frame.drop(index=survivors[1:])


# (id, breakage(data_dir) -> the file the message must name, fragments the message must contain)
BAD_INPUTS = [
    # the spec file
    ("spec_missing_target", edit_spec("titanic", lambda t: t.replace("target: survived\n", "")),
     ["required field 'target' is missing", "add it"]),
    ("spec_missing_file", edit_spec("titanic", lambda t: t.replace("file: titanic.csv\n", "")), ["'file'", "add it"]),
    ("spec_missing_task", edit_spec("titanic", lambda t: t.replace("task: binary\n", "")), ["'task'", "add it"]),
    ("spec_unknown_task", set_field("titanic", "task: classification"), ["'classification'", "'task' field"]),
    ("spec_undecodable_bytes", edit_spec("titanic", b"file: titanic.csv\ntarget: \xff\xfe survived\n"),
     ["not UTF-8", "save the file as UTF-8"]),
    ("spec_not_yaml", edit_spec("titanic", lambda t: t + "sensitive_columns: [sex\n"), ["not valid YAML", "fix"]),
    ("spec_a_list", edit_spec("titanic", lambda t: "- file: titanic.csv\n"), ["expected a mapping", "list"]),
    ("spec_sensitive_columns_number", set_field("titanic", "sensitive_columns: 5"),
     ["'sensitive_columns' must be a list of column names", "5"]),
    ("spec_exclude_columns_mapping", set_field("titanic", "exclude_columns: {age: 1}"),
     ["'exclude_columns' must be a list"]),
    ("spec_misspelt_field", edit_spec("titanic", lambda t: t + "taget: survived\n"), ["unknown fields ['taget']"]),
    ("spec_file_outside_folder", set_field("titanic", "file: ../titanic.csv"), ["same folder", "../titanic.csv"]),
    ("spec_file_not_found", set_field("titanic", "file: nowhere.csv"), ["file not found", "'file' field"]),
    ("spec_dtypes_list", set_field("titanic", "dtypes: [age]"), ["'dtypes' must map column names"]),
    ("spec_dtypes_unknown_kind", set_field("titanic", "dtypes: {age: decimal}"), ["dtypes.age", "'decimal'"]),
    ("spec_cleaning_unknown_option", set_field("titanic", "cleaning: {impute: mean}"), ["'impute'", "use one of"]),
    ("spec_cleaning_bad_value", set_field("titanic", "cleaning: {missing: guess}"), ["cleaning.missing", "'guess'"]),
    ("spec_cleaning_negative_threshold", set_field("titanic", "cleaning: {outliers: zscore, outlier_threshold: -3}"),
     ["outlier_threshold must be a positive number"]),
    ("spec_long_delimiter", set_field("titanic", "delimiter: ';;'"), ["'delimiter' must be one character"]),
    ("spec_unknown_encoding", set_field("titanic", "encoding: klingon"), ["encoding 'klingon' is unknown"]),
    ("spec_ab_test_share_above_one", set_field("titanic", "ab_test: {challenger_share: 1.5}"),
     ["ab_test.challenger_share must be a number between 0 and 1", "1.5"]),
    ("spec_ab_test_unknown_option", set_field("titanic", "ab_test: {share: 0.2}"), ["unknown ab_test option 'share'"]),
    ("spec_drift_unknown_method", set_field("titanic", "drift: {method: magic}"),
     ["drift settings", "drift method 'magic' is not one of"]),
    ("spec_performance_relative_drop_above_one", set_field("titanic", "performance: {max_relative_drop: 2}"),
     ["performance.max_relative_drop must be a number between 0 and 1"]),
    ("spec_id_column_list", set_field("titanic", "id_column: [passenger_id, sex]"), ["'id_column' must be a column"]),
    ("spec_positive_class_list", set_field("titanic", "positive_class: [yes, no]"), ["'positive_class' must be"]),
    ("spec_target_is_id", set_field("titanic", "id_column: survived"), ["is also the id column", "'id_column'"]),
    ("spec_target_excluded", set_field("titanic", "exclude_columns: [survived]"), ["listed in exclude_columns"]),
    ("spec_target_not_in_file", set_field("titanic", "target: died"), ["target 'died' not found", "'target' field"]),
    ("spec_id_not_in_file", set_field("titanic", "id_column: ticket"), ["id column 'ticket' not found"]),
    ("spec_time_not_in_file", set_field("titanic", "time_column: boarded_at"), ["time column 'boarded_at' not found"]),
    ("spec_sensitive_not_in_file", set_field("titanic", "sensitive_columns: [sex, religion]"),
     ["sensitive_columns names 'religion', not a column", "fix 'sensitive_columns'"]),
    ("spec_what_if_immutable_not_in_file", set_field("titanic", "what_if: {immutable_columns: [cabin]}"),
     ["what_if: immutable_columns names 'cabin', not a column"]),
    ("spec_what_if_too_many_changes", set_field("titanic", "what_if: {max_changes: 50}"),
     ["what_if max_changes must be a whole number from 1 to 10, got 50"]),
    ("spec_fairness_unknown", set_field("titanic", "fairness: {min_parity: 0.8}"),
     ["fairness settings: unknown fairness settings ['min_parity']"]),
    ("spec_datetime_dtype_missing_column", set_field("titanic", "dtypes: {boarded_at: datetime}"),
     ["datetime column 'boarded_at' not found"]),
    ("spec_positive_class_absent", set_field("titanic", "positive_class: maybe"), ["'maybe'", "positive_class"]),
    # the data file
    ("data_empty_file", write_csv_text("titanic", ""), ["file is empty"]),
    ("data_header_only", write_csv_text("titanic", "passenger_id,survived,sex,age,passengerClass\n"),
     ["header but no rows"]),
    ("data_no_columns", write_csv_text("titanic", "\n\n\n"), ["no columns"]),
    ("data_regression_target_text", edit_csv("cps1985", lambda f: f.assign(wage=f["wage"].map(lambda w: f"${w:.2f}"))),
     ["target column 'wage' must be numeric for regression", "'$5.10'"]),
    ("data_duplicate_ids", edit_csv("titanic", lambda f: f.assign(passenger_id=1)), ["id column 'passenger_id'",
                                                                                     "duplicate"]),
    ("data_target_missing", edit_csv("titanic", lambda f: f.drop(columns=["survived"])),
     ["target 'survived' not found", "'target' field"]),
    ("data_target_all_empty", edit_csv("titanic", lambda f: f.assign(survived=None)), ["'survived' has no values"]),
    ("data_binary_three_classes", edit_csv("titanic", lambda f: f.assign(
        survived=f["survived"].where(f.index % 3 > 0, "unknown"))), ["has 3 classes", "exactly 2"]),
    ("data_binary_one_class", edit_csv("titanic", lambda f: f.assign(survived="yes")), ["has 1 classes"]),
    ("data_class_with_one_example", edit_csv("titanic", rare_class), ["class 'yes' has 1 rows", "at least 5"]),
    ("data_four_rows", edit_csv("titanic", titanic_rows(4)), ["only 4 rows", "at least 20"]),
    ("data_only_the_target", edit_csv("titanic", lambda f: f[["passenger_id", "survived"]]),
     ["no feature columns besides the target"]),
    ("data_huge_values", edit_csv("titanic", lambda f: f.assign(age=f["age"].where(f.index != 7, 1e308))),
     ["column 'age'", "beyond ±1e+100", "rescale"]),
    ("data_infinite_values", edit_csv("titanic", lambda f: f.assign(age=f["age"].where(f.index != 7, np.inf))),
     ["column 'age' has 1 infinite values"]),
    ("data_numbers_mixed_with_text", edit_csv("titanic", lambda f: f.assign(age=f["age"].astype(object).where(
        f.index % 50 > 0, "unknown"))), ["column 'age' mixes numbers and text", "dtypes"]),
    ("data_duplicate_header", write_csv_text("titanic", "passenger_id,survived,age,age\n1,yes,3,4\n"),
     ["duplicate column names ['age']"]),
    ("data_ragged_rows", write_csv_text("titanic", "passenger_id,survived,sex\n1,yes,male\n2,no,female,extra,x\n"),
     ["malformed CSV", "quote values"]),
    ("data_case_colliding_columns", edit_csv("titanic", lambda f: f.assign(Age=f["age"])),
     ["'age' and 'Age' collide", "rename one"]),
    ("data_unparseable_time", lambda d: (edit_csv("titanic", lambda f: f.assign(
        boarded=["2012-04-10"] * (len(f) - 1) + ["yesterday"]))(d), set_field("titanic", "time_column: boarded")(d))[0],
     ["time column 'boarded' has 1 unparseable", "ISO dates"]),
    ("data_path_is_a_directory", data_file("titanic", "folder.csv", lambda p: p.mkdir()),
     ["is a directory", "'file'"]),
    ("data_unsupported_type", data_file("titanic", "titanic.json", lambda p: p.write_text("{}")),
     ["unsupported file type '.json'"]),
    ("data_corrupt_parquet", data_file("titanic", "titanic.parquet", lambda p: p.write_bytes(b"PAR1 not really")),
     ["not a readable Parquet file"]),
    ("data_corrupt_excel", data_file("titanic", "titanic.xlsx", lambda p: p.write_bytes(b"not a zip")),
     ["cannot read sheet", ".xlsx"]),
]


@pytest.mark.parametrize(("breakage", "expected"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_fails_clearly_and_keeps_earlier_state(trained, breakage, expected):
    home, data_dir, instance = trained
    before = {dataset: snapshot(home, dataset) for dataset in ("titanic", "cps1985")}
    with restored(data_dir / "datasets"):
        named_file = breakage(data_dir)
        dataset = "cps1985" if named_file.name.startswith("cps1985") else "titanic"
        result = dg.materialize(TRAINING_ASSETS, run_config=FAST_TRAINING, resources=resources_for(home, data_dir),
                                partition_key=dataset, instance=instance, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert failure.step_key == "raw_dataset"
    description = failure.step_failure_data.user_failure_data.description
    assert str(named_file) in description
    for fragment in expected:
        assert fragment in description
    assert {d: snapshot(home, d) for d in before} == before


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
                                partition_key="titanic", instance=instance, raise_on_error=False)
    finally:
        path.write_bytes(original)
    registered = {k: v.value for k, v in result.asset_materializations_for_node("registered_model")[0].metadata.items()}
    assert registered["gate"] == "rejected"
    assert f"kept champion v{champion_before}" in registered["reason"] and "passengerClass" in registered["reason"]
    assert_gate_blocked(result, home, champion_before)
    registry = ModelRegistry(home=str(home))
    assert registry.champion("titanic").version == champion_before
    challenger = registry.client().get_model_version_by_alias("tmiv_titanic", "challenger")
    assert int(challenger.version) == registered["model_version"] and "kept champion" in challenger.tags["decision"]


def assert_gate_blocked(result: dg.ExecuteInProcessResult, home: Path, champion_version: str) -> None:
    """The blocking beats_champion check failed, so champion_model did not run and the run failed."""
    gate = next(c for c in result.get_asset_check_evaluations() if c.check_name == "beats_champion")
    assert not gate.passed and not result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "registered_model" in materialized and "champion_model" not in materialized
    assert ModelRegistry(home=str(home)).champion("titanic").version == champion_version


def test_the_gate_also_compares_on_the_latest_labelled_batch(trained):
    home, data_dir, instance = trained
    registry = ModelRegistry(home=str(home))
    champion = registry.champion("titanic")
    day, folder = "2013-05-01", data_dir / "incoming" / "titanic"
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    rows = pd.read_csv(data_dir / "datasets" / "titanic.csv").sample(300, random_state=1)
    batch = rows.drop(columns=["survived"]).assign(passenger_id=rows["passenger_id"] + 100_000)  # new passengers
    # Labels that are exactly the champion's own predictions: no other model can beat it on this batch.
    labels = batch[["passenger_id"]].assign(survived=registry.load_version("titanic", champion.version).predict(batch))
    batch.to_parquet(folder / f"{day}.parquet")
    labels.to_parquet(folder / "labels" / f"{day}.parquet")
    # The champion scored the batch before its labels came, so they may join the training rows.
    resources_for(home, data_dir)["prediction_log"].record(f"titanic|{day}", champion.name, int(champion.version),
                                                            labels["survived"], entity_ids=batch["passenger_id"])
    # Another seed and a margin: a tie at a perfect score on the batch must not pass either.
    seeded = dg.RunConfig(ops={"model_candidates": TrainingConfig(time_budget_s=600, preset="fast", max_trials=4,
                                                                  n_jobs=1, seed=7),
                               "registered_model": DeployConfig(promotion_margin=0.001)})
    try:
        result = dg.materialize(TRAINING_ASSETS, run_config=seeded, resources=resources_for(home, data_dir),
                                partition_key="titanic", instance=instance, raise_on_error=False)
    finally:
        for path in (folder / f"{day}.parquet", folder / "labels" / f"{day}.parquet"):
            path.unlink()
    gate = next(c for c in result.get_asset_check_evaluations() if c.check_name == "beats_champion")
    scores = {k: v.value for k, v in gate.metadata.items()}
    assert scores["batch_day"] == day and scores["champion_on_batch"] == 1.0 >= scores["new_on_batch"]
    # compared on the fifth of the batch the new model did not train on
    held_out_rows = int(re.search(rf"batch {day}'s (\d+) held-out labelled rows is not better", scores["reason"])[1])
    assert 55 <= held_out_rows <= 65
    raw = result.asset_materializations_for_node("raw_dataset")[0].metadata
    assert raw["labelled_batches"].value == day and raw["rows_from_labelled_batches"].value == 300
    assert_gate_blocked(result, home, champion.version)
    assert registry.champion("titanic").version == champion.version
    assert registry.aliased("titanic", "challenger").tags["dagster_run_id"] == result.run_id


def titanic_batch(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["survived"]).head(40)


BAD_BATCHES = [
    ("batch_type_changed", lambda b: b.assign(age=b["age"].astype(str) + " years"),
     ["column 'age' was numeric in training", "send it as numeric"]),
    ("batch_empty_column", lambda b: b.assign(sex=None), ["column 'sex' is empty in all 40 rows", "fix the export"]),
    ("batch_missing_column", lambda b: b.drop(columns=["passengerClass"]), ["['passengerClass']", "are missing"]),
    ("batch_corrupt_file", None, ["not a readable Parquet file"]),
]


@pytest.mark.parametrize(("breakage", "expected"), [case[1:] for case in BAD_BATCHES], ids=[c[0] for c in BAD_BATCHES])
def test_a_bad_batch_fails_clearly_and_a_good_one_scores(trained, breakage, expected):
    home, data_dir, instance = trained
    day = "2013-03-01"
    path = data_dir / "incoming" / "titanic" / f"{day}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = titanic_batch(pd.read_csv(data_dir / "datasets" / "titanic.csv"))
    partition = dg.MultiPartitionKey({"dataset": "titanic", "day": day})
    instance.add_dynamic_partitions("dataset", ["titanic"])
    instance.add_dynamic_partitions("batch_day", [day])
    before = snapshot(home, "titanic")
    batch.to_parquet(path)
    good = dg.materialize([scored_batch], resources=resources_for(home, data_dir), partition_key=partition,
                          instance=instance)
    assert good.success
    logged = PredictionLog(home=str(home)).rows(f"titanic|{day}")  # each parameter scores the day again: replaced
    assert len(logged) == len(batch) and logged["request_id"].nunique() == 1
    assert sorted(logged["entity_id"]) == sorted(batch["passenger_id"].astype(str))
    if breakage is None:
        path.write_bytes(b"PAR1 truncated")
    else:
        breakage(batch).to_parquet(path)
    result = dg.materialize([scored_batch], resources=resources_for(home, data_dir), partition_key=partition,
                            instance=instance, raise_on_error=False)
    path.unlink()
    assert not result.success
    description = result.get_step_failure_events()[0].step_failure_data.user_failure_data.description
    assert str(path) in description
    for fragment in expected:
        assert fragment in description
    assert snapshot(home, "titanic") == before


def test_a_file_mixing_utf8_and_latin1_rows_is_decoded_row_by_row(tmp_path):
    data_dir = tmp_path / "data"
    (data_dir / "datasets").mkdir(parents=True)
    frame = pd.read_csv(DATA_DIR / "datasets" / "titanic.csv").assign(
        sex=lambda f: f["sex"].map({"male": "männlich", "female": "weiblich"}))
    half = len(frame) // 2
    (data_dir / "datasets" / "titanic.csv").write_bytes(  # an export appended to by a second tool in Latin-1
        frame.head(half).to_csv(index=False).encode("utf-8")
        + frame.iloc[half:].to_csv(index=False, header=False).encode("latin-1"))
    shutil.copy(DATA_DIR / "datasets" / "titanic.yaml", data_dir / "datasets")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["titanic"])
        result = dg.materialize([raw_dataset], resources=resources_for(tmp_path / "tmiv", data_dir),
                                partition_key="titanic", instance=instance)
    decoding = result.asset_materializations_for_node("raw_dataset")[0].metadata["decoding"].value
    assert "mixed text encodings" in decoding and "lines cp1252" in decoding and "save the file as UTF-8" in decoding
    stored = FeatureStore(home=str(tmp_path / "tmiv")).load("raw_dataset", "titanic")
    assert sorted(stored["sex"].unique()) == ["männlich", "weiblich"]


def test_report_csvs_escape_cells_a_spreadsheet_would_run(tmp_path):
    data_dir = tmp_path / "data"
    (data_dir / "datasets").mkdir(parents=True)
    formula = "=cmd|' /C calc'!A0"
    frame = pd.read_csv(DATA_DIR / "datasets" / "titanic.csv")
    frame[formula] = frame["age"].fillna(30) * 2 + np.random.default_rng(0).normal(size=len(frame))
    frame.to_csv(data_dir / "datasets" / "titanic.csv", index=False)
    shutil.copy(DATA_DIR / "datasets" / "titanic.yaml", data_dir / "datasets")
    home = tmp_path / "tmiv"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["titanic"])
        assert dg.materialize([raw_dataset, clean_dataset, feature_set, selected_features],
                              resources=resources_for(home, data_dir), partition_key="titanic",
                              instance=instance).success
    [ranking] = (home / "reports" / "titanic").glob("feature_ranking_v*.csv")
    cells = [cell for line in ranking.read_text().splitlines() for cell in line.split(",")]
    assert any(cell.startswith(f"'{formula[:4]}") for cell in cells)
    assert not [cell for cell in cells if cell.startswith(("=", "+", "@"))]
    assert FeatureStore(home=str(home)).load("feature_set", "titanic").columns.str.startswith("=").any()


def test_an_ab_test_routes_rows_by_id_and_reports_per_arm(trained):
    home, data_dir, instance = trained
    day, partition = "2013-03-02", dg.MultiPartitionKey({"dataset": "titanic", "day": "2013-03-02"})
    instance.add_dynamic_partitions("batch_day", [day])
    rows = pd.read_csv(data_dir / "datasets" / "titanic.csv").head(600)
    (data_dir / "incoming" / "titanic" / "labels").mkdir(parents=True, exist_ok=True)
    rows.drop(columns=["survived"]).to_parquet(data_dir / "incoming" / "titanic" / f"{day}.parquet")
    ab = {"ops": {"scored_batch": {"config": {"challenger_share": 0.5}}}}
    registry = ModelRegistry(home=str(home))
    if registry.aliased("titanic", "challenger") is not None:  # an earlier test may have left one
        registry.client().delete_registered_model_alias("tmiv_titanic", "challenger")
    no_challenger = dg.materialize([scored_batch], run_config=ab, resources=resources_for(home, data_dir),
                                   partition_key=partition, instance=instance, raise_on_error=False)
    description = no_challenger.get_step_failure_events()[0].step_failure_data.user_failure_data.description
    assert "needs a challenger version" in description
    champion = registry.champion("titanic")
    challenger = registry.register("titanic", champion.source, champion.run_id, dict(champion.tags))
    registry.promote("titanic", challenger.version, alias="challenger", reason="A/B test")
    assert dg.materialize([scored_batch, ab_test_report], run_config=ab, resources=resources_for(home, data_dir),
                          partition_key=partition, instance=instance).success
    logged = PredictionLog(home=str(home)).rows(f"titanic|{day}")
    arms = logged.set_index("entity_id")["arm"]
    assert set(arms) == {"champion", "challenger"} and abs((arms == "challenger").mean() - 0.5) < 0.1
    assert set(logged.loc[logged["arm"] == "challenger", "model_version"]) == {int(challenger.version)}
    report = instance.get_latest_materialization_event(dg.AssetKey("ab_test_report")).asset_materialization.metadata
    assert report["status"].value == "no labels yet"
    rows[["passenger_id", "survived"]].to_parquet(data_dir / "incoming" / "titanic" / "labels" / f"{day}.parquet")
    assert dg.materialize([scored_batch, ab_test_report], run_config=ab, resources=resources_for(home, data_dir),
                          partition_key=partition, instance=instance).success
    again = PredictionLog(home=str(home)).rows(f"titanic|{day}").set_index("entity_id")["arm"]
    assert again.sort_index().equals(arms.sort_index())  # a row keeps its arm when the batch is scored again
    spec_path = data_dir / "datasets" / "titanic.yaml"
    original_spec = spec_path.read_text()
    spec_path.write_text(original_spec + "ab_test: {challenger_share: 0.5, min_detectable_effect: 0.05}\n")
    try:  # the same test declared in the dataset spec instead of the run config
        assert dg.materialize([scored_batch], resources=resources_for(home, data_dir), partition_key=partition,
                              instance=instance).success
        from_spec = PredictionLog(home=str(home)).rows(f"titanic|{day}").set_index("entity_id")["arm"]
        assert from_spec.sort_index().equals(arms.sort_index())
        missing = dg.materialize([scored_batch], resources=resources_for(home, data_dir), partition_key=partition,
                                 instance=instance, raise_on_error=False,
                                 run_config={"ops": {"scored_batch": {"config": {"challenger_version": 999}}}})
        failure = missing.get_step_failure_events()[0].step_failure_data.user_failure_data.description
        assert "has no version 999" in failure and "challenger_version" in failure
    finally:
        spec_path.write_text(original_spec)
    report = instance.get_latest_materialization_event(dg.AssetKey("ab_test_report")).asset_materialization.metadata
    assert report["status"].value == "compared" and sum(report["rows_per_arm"].value.values()) == 600
    assert report["metric"].value == "accuracy" and 0 <= report["p_value"].value <= 1
    assert report["recommendation"].value  # same model in both arms: no significant difference expected
    assert not report["significant"].value
    champion_before = registry.champion("titanic").version
    concluded = conclude_ab_test.execute_in_process(
        run_config={"ops": {"conclude_ab_test_op": {"config": {"dataset": "titanic", "day": day}}}},
        resources=resources_for(home, data_dir), instance=instance)
    assert concluded.success and registry.champion("titanic").version == champion_before
    decision = registry.history("titanic")[-1]
    assert (decision.action, decision.trigger, decision.after) == ("keep", "ab_test", int(champion_before))
    assert decision.reason == report["recommendation"].value


def test_model_comparison_scores_every_version_on_the_same_test_rows(trained):
    home, data_dir, instance = trained
    registry = ModelRegistry(home=str(home))
    champion = registry.champion("cps1985")
    registry.register("cps1985", champion.source, champion.run_id, dict(champion.tags))  # the same model again
    result = dg.materialize([model_comparison], resources=resources_for(home, data_dir), partition_key="cps1985",
                            instance=instance)
    metadata = result.asset_materializations_for_node("model_comparison")[0].metadata
    table = metadata["comparison"].value
    versions = sorted(int(v.version) for v in registry.versions("cps1985"))
    assert metadata["versions"].value == len(versions) >= 2 and metadata["metric"].value == "rmse"
    assert "champion" in table and len(table.strip().splitlines()) == len(versions) + 2  # header, rule, rows
    assert metadata["best_version"].value in versions


def test_an_unreachable_or_malformed_database_url_names_the_setting_and_the_fix():
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionError, match=r"(?s)\(TMIV_DATABASE_URL\) is unreachable: .*start the server or fix"):
        sibling_database(f"postgresql+psycopg2://tmiv@127.0.0.1:{port}/tmiv", "mlflow")
    with pytest.raises(ValueError, match=r"must look like postgresql\+psycopg2://.* got postgresql://tmiv@"):
        check_database_url("postgresql://tmiv@127.0.0.1/tmiv")
