"""Engine unit tests: no Dagster, small real data."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from tmiv_assets.ml.data.cleaning import DatasetCleaner
from tmiv_assets.ml.data.ingest import (
    DataValidationError,
    append_labelled_batches,
    read_table,
    validate_dataset,
)
from tmiv_assets.ml.data.spec import DatasetSpec, SpecError, load_dataset_spec, load_series_spec, validate_name
from tmiv_assets.ml.data.splits import split_dataset
from tmiv_assets.ml.features.builder import FeatureBuilder
from tmiv_assets.ml.monitoring.drift import evidently_report
from tmiv_assets.ml.monitoring.statistics import DriftSettings, DriftStatistics
from tmiv_assets_tests.conftest import read_series

DATA = Path(__file__).resolve().parents[1] / "data"


def spec_for(path: Path, **overrides) -> DatasetSpec:
    fields = {"name": "toy", "path": path, "target": "y", "task": "binary", "spec_path": path.with_suffix(".yaml")}
    return DatasetSpec(**(fields | overrides))


@pytest.mark.parametrize("name", ["../etc", "a'; DROP TABLE x; --", "Upper", "", "1abc", "a" * 64])
def test_unsafe_names_are_rejected(name):
    with pytest.raises(SpecError, match="not allowed"):
        validate_name(name)


def test_embedded_specs_load():
    spec = load_dataset_spec(DATA / "datasets" / "flights.yaml")
    assert (spec.target, spec.task, spec.time_column, spec.id_column) == (
        "arr_delayed", "binary", "time_hour", "flight_id")
    assert load_dataset_spec(DATA / "datasets" / "titanic.yaml").sensitive_columns == ("sex", "age")
    series = load_series_spec(DATA / "series" / "air_passengers.yaml")
    assert read_series(series).index.freqstr == "MS" and len(read_series(series)) == 144


def test_spec_with_unknown_task_names_the_field(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("file: toy.csv\ntarget: y\ntask: clustering\n")
    with pytest.raises(SpecError, match="task 'clustering'.*'task' field"):
        load_dataset_spec(path)


def test_spec_file_outside_its_folder_is_rejected(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("file: ../secret.csv\ntarget: y\ntask: binary\n")
    with pytest.raises(SpecError, match="same folder"):
        load_dataset_spec(path)


@pytest.mark.parametrize(
    ("frame", "overrides", "message"),
    [
        (pd.DataFrame({"x": [1, 2]}), {}, "target 'y' not found"),
        (pd.DataFrame({"x": [1, 2], "y": ["a", "b"]}), {"task": "regression"}, "must be numeric for regression"),
        (pd.DataFrame({"x": [1, 2], "y": [1, 1]}), {}, "has 1 classes"),
        (pd.DataFrame({"x": [1, 2], "y": [np.nan, np.nan]}), {}, "has no values"),
        (pd.DataFrame({"id": [1, 1], "x": [1, 2], "y": [0, 1]}), {"id_column": "id"}, "2 duplicate|1 duplicate"),
    ],
)
def test_validation_names_file_and_column(tmp_path, frame, overrides, message):
    spec = spec_for(tmp_path / "toy.csv", **overrides)
    with pytest.raises(DataValidationError, match=message) as raised:
        validate_dataset(frame, spec)
    assert str(tmp_path / "toy.csv") in str(raised.value)


@pytest.mark.parametrize(("content", "message"), [("", "empty"), ("a,b\n", "no rows")])
def test_empty_files_are_rejected(tmp_path, content, message):
    path = tmp_path / "toy.csv"
    path.write_text(content)
    with pytest.raises(DataValidationError, match=message):
        read_table(path)


def test_unknown_file_type_is_rejected(tmp_path):
    # Excel is supported since issue 4; a SPSS file is not.
    with pytest.raises(DataValidationError, match="unsupported file type '.sav'"):
        read_table(tmp_path / "toy.sav")


def test_cleaner_drops_unlabelled_duplicate_rows_and_useless_columns(tmp_path):
    frame = pd.DataFrame({
        "x": [1.0, 1.0, 2.0, 3.0, 4.0],
        "constant": ["a"] * 5,
        "empty": [np.nan] * 5,
        "when": ["2013-01-01 10:00"] * 5,
        "y": [0, 0, 1, np.nan, 1],
    })
    cleaner = DatasetCleaner()
    clean = cleaner.fit_transform(frame, spec_for(tmp_path / "toy.csv", time_column="when"))
    assert list(clean.columns) == ["x", "when", "y"]
    assert len(clean) == 3
    assert pd.api.types.is_datetime64_any_dtype(clean["when"])
    assert set(cleaner.report_["reason"]) == {"target is missing", "exact duplicate row", "constant value",
                                              "all values missing"}


def test_cleaner_rejects_unparseable_time(tmp_path):
    frame = pd.DataFrame({"when": ["2013-01-01", "yesterday"], "y": [0, 1]})
    with pytest.raises(DataValidationError, match="time column 'when' has 1 unparseable"):
        DatasetCleaner().fit_transform(frame, spec_for(tmp_path / "toy.csv", time_column="when"))


def test_feature_builder_is_stateless_and_adds_calendar_parts():
    frame = pd.DataFrame({"id": [1, 2], "t": pd.to_datetime(["2013-01-05 23:00", "2013-01-07 01:00"]),
                          "flag": [True, False]})
    builder = FeatureBuilder(time_column="t", drop_columns=("id",)).fit(frame)
    features = builder.transform(frame)
    assert "id" not in features and "t" not in features
    assert features["t_is_weekend"].tolist() == [1, 0]  # a Saturday and a Monday
    assert features["flag"].tolist() == [1, 0]
    assert np.allclose(features["t_hour_sin"] ** 2 + features["t_hour_cos"] ** 2, 1)
    pd.testing.assert_frame_equal(builder.transform(frame.iloc[[1]]), features.iloc[[1]])


def test_labelled_batches_join_on_id_without_duplicates(tmp_path):
    base = pd.DataFrame({"id": [1, 2], "x": [0.1, 0.2], "y": [0, 1]})
    batch = pd.DataFrame({"id": [2, 3, 4], "x": [0.2, 0.3, 0.4]})
    labels = pd.DataFrame({"id": [2, 3], "y": [1, 0]})
    combined, days = append_labelled_batches(base, spec_for(tmp_path / "t.csv", id_column="id"),
                                             {"2013-02-01": (batch, labels)})
    assert combined["id"].tolist() == [1, 2, 3]
    assert days.tolist() == [pd.NA, pd.NA, "2013-02-01"]  # id 2 stays a reference row
    assert combined.loc[combined["id"] == 3, "y"].item() == 0


def breast_cancer() -> pd.DataFrame:
    data = load_breast_cancer(as_frame=True)
    return data.frame.rename(columns={"target": "y"})


def test_stratified_split_keeps_class_balance():
    frame = breast_cancer()
    data = split_dataset(frame, "y", "binary", test_size=0.2, seed=3)
    assert abs(data.y_test.mean() - frame["y"].mean()) < 0.01


def test_drift_statistics_and_evidently_flag_a_shifted_sample_only():
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"a": rng.normal(0, 1, 3000), "b": rng.choice(list("xyz"), 3000)})
    same = pd.DataFrame({"a": rng.normal(0, 1, 1500), "b": rng.choice(list("xyz"), 1500)})
    shifted = pd.DataFrame({"a": rng.normal(2, 1, 1500), "b": rng.choice(list("xyz"), 1500, p=[0.8, 0.1, 0.1])})
    statistics = DriftStatistics(DriftSettings(drift_share=0.5)).fit(reference)
    assert not statistics.compare(same).drift_detected
    verdict = statistics.compare(shifted)
    assert verdict.drift_detected and verdict.drifted_share == 1.0
    assert list(verdict.per_column["test"]) == ["wasserstein", "jensenshannon"]
    report = evidently_report(reference, shifted, drift_share=0.5)
    assert report.drifted_share == 1.0 and set(report.per_column["column"]) == {"a", "b"}
    assert "<html" in report.snapshot.get_html_str(as_iframe=False).lower()


def test_id_split_is_stratified_and_stable_when_rows_are_added():
    frame = breast_cancer()
    ids = pd.Series([f"row{i}" for i in range(len(frame))], index=frame.index)
    first = split_dataset(frame, "y", "binary", test_size=0.2, ids=ids)
    assert abs(len(first.X_test) / len(frame) - 0.2) < 0.01
    assert abs(first.y_test.mean() - frame["y"].mean()) < 0.01
    grown = pd.concat([frame, frame.iloc[:50]], ignore_index=True)
    grown_ids = pd.concat([ids, pd.Series([f"new{i}" for i in range(50)])], ignore_index=True)
    second = split_dataset(grown, "y", "binary", test_size=0.2, ids=grown_ids)
    kept = set(ids[first.X_test.index]) & set(grown_ids[second.X_test.index])
    assert len(kept) >= 0.9 * len(first.X_test)
