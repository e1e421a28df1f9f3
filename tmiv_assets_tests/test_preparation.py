"""Data preparation engine: ingest, schema, cleaning strategies, quality checks, splits."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tmiv_assets.ml.data.cleaning import DatasetCleaner
from tmiv_assets.ml.data.ingest import DataValidationError, read_dataset, read_table, sniff_csv, validate_dataset
from tmiv_assets.ml.data.quality import apply_schema, infer_schema, run_quality_checks
from tmiv_assets.ml.data.spec import DatasetSpec, SpecError, load_dataset_spec
from tmiv_assets.ml.data.splits import cv_folds, split_dataset


def spec_for(path: Path, **overrides) -> DatasetSpec:
    fields = {"name": "toy", "path": path, "target": "y", "task": "binary", "spec_path": path.with_suffix(".yaml")}
    return DatasetSpec(**(fields | overrides))


TOY = pd.DataFrame({"when": ["2013-01-01 10:00", "2013-01-02 11:30", "2013-01-05 09:00"],
                    "city": ["Zürich", "Genève", "Zürich"], "x": [1.5, 2.5, 3.5], "y": [0, 1, 0]})


@pytest.mark.parametrize(("delimiter", "encoding"),
                         [(",", "utf-8"), (";", "latin-1"), ("\t", "utf-8"), ("|", "cp1252")])
def test_csv_delimiter_and_encoding_are_sniffed(tmp_path, delimiter, encoding):
    path = tmp_path / "toy.csv"
    TOY.to_csv(path, sep=delimiter, encoding=encoding, index=False)
    assert sniff_csv(path)[0] == delimiter
    frame = read_table(path)
    assert list(frame.columns) == list(TOY.columns)
    assert frame["city"].tolist() == ["Zürich", "Genève", "Zürich"]


def test_parquet_and_excel_read_like_csv(tmp_path):
    TOY.to_parquet(tmp_path / "toy.parquet")
    TOY.to_excel(tmp_path / "toy.xlsx", index=False, sheet_name="data")
    pd.testing.assert_frame_equal(read_table(tmp_path / "toy.parquet"), TOY)
    pd.testing.assert_frame_equal(read_table(tmp_path / "toy.xlsx", sheet="data"), TOY)
    with pytest.raises(DataValidationError, match="cannot read sheet 'missing'.*'sheet' field"):
        read_table(tmp_path / "toy.xlsx", sheet="missing")


def test_spec_options_reach_the_reader(tmp_path):
    (tmp_path / "toy.csv").write_text("a;b;y\n1,5;2;0\n2,5;3;1\n")
    (tmp_path / "toy.yaml").write_text("file: toy.csv\ntarget: y\ntask: binary\ndelimiter: ';'\n"
                                       "dtypes: {b: categorical}\ncleaning: {missing: median, outliers: iqr}\n")
    spec = load_dataset_spec(tmp_path / "toy.yaml")
    assert (spec.delimiter, spec.dtypes, spec.cleaning["missing"]) == (";", {"b": "categorical"}, "median")
    assert read_dataset(spec).shape == (2, 3)


@pytest.mark.parametrize(("field", "message"), [("dtypes: {b: money}", "dtypes.b is 'money'"),
                                                ("cleaning: {missing: guess}", "cleaning.missing is 'guess'"),
                                                ("cleaning: {speed: 3}", "unknown cleaning option 'speed'")])
def test_bad_spec_options_name_the_field(tmp_path, field, message):
    (tmp_path / "toy.yaml").write_text(f"file: toy.csv\ntarget: y\ntask: binary\n{field}\n")
    with pytest.raises(SpecError, match=message):
        load_dataset_spec(tmp_path / "toy.yaml")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.csv", 'a,b,y\n1,2,0\n1,2,3,4,5\n"unclosed,1,0\n', "(?s)malformed CSV.*line 3, saw 5.*quote values"),
        ("empty.csv", "", "file is empty"),
        ("header.csv", "a,b,y\n", "header but no rows"),
        ("dup.csv", "a,a,y\n1,2,0\n3,4,1\n", r"duplicate column names \['a'\]"),
        ("data.json", "{}", "unsupported file type '.json'"),
        ("broken.xlsx", "not a zip", "cannot read sheet 0"),
    ],
)
def test_bad_files_raise_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataValidationError, match=message) as raised:
        read_table(path)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    ("frame", "overrides", "column", "message"),
    [
        (pd.DataFrame({"x": [1.0, np.inf, 2.0], "y": [0, 1, 0]}), {}, "x", "1 infinite values"),
        (pd.DataFrame({"x": ["1", "2", "3", "n/a"], "y": [0, 1, 0, 1]}), {}, "x", r"mixes numbers and text.*'n/a'"),
        (pd.DataFrame({"x": [1, "a", 2.5], "y": [0, 1, 0]}), {}, "x", "mixes numbers and text"),
        (pd.DataFrame({"t": ["2013-01-01", "soon"], "y": [0, 1]}), {"time_column": "t"}, "t", "1 unparseable"),
        (pd.DataFrame({"d": ["2013-01-01", "32/13/2013"], "y": [0, 1]}), {"dtypes": {"d": "datetime"}}, "d",
         "unparseable"),
        (pd.DataFrame({"x": [1, 2], "y": [1, 1]}), {}, "y", "has 1 classes"),
        (pd.DataFrame({"x": [1, 2], "y": [np.nan, np.nan]}), {}, "y", "has no values"),
    ],
)
def test_bad_values_raise_naming_the_column_and_fix(tmp_path, frame, overrides, column, message):
    with pytest.raises(DataValidationError, match=message) as raised:
        validate_dataset(frame, spec_for(tmp_path / "toy.csv", **overrides))
    assert raised.value.column == column and str(tmp_path / "toy.csv") in str(raised.value)


def test_declared_type_accepts_a_mixed_column(tmp_path):
    frame = pd.DataFrame({"x": ["1", "2", "3", "n/a"] * 5, "y": [0, 1, 0, 1] * 5})
    spec = spec_for(tmp_path / "toy.csv", dtypes={"x": "numeric"})
    validate_dataset(frame, spec)
    assert apply_schema(frame, spec)["x"].tolist()[:3] == [1.0, 2.0, 3.0]


def test_schema_inference_with_overrides(tmp_path):
    frame = pd.DataFrame({"n": [1, 2, 3, 4], "zip": [8001, 8002, 8001, 8003], "flag": ["yes", "no", "yes", "no"],
                          "d": ["2013-01-01", "2013-02-01", "2013-03-01", "2013-04-01"], "c": list("abab"),
                          "y": [0, 1, 0, 1]})
    spec = spec_for(tmp_path / "toy.csv", dtypes={"zip": "categorical"})
    schema = infer_schema(frame, spec).set_index("column")
    assert schema["type"].to_dict() == {"n": "numeric", "zip": "categorical", "flag": "boolean", "d": "datetime",
                                        "c": "categorical", "y": "numeric"}
    assert schema.loc["zip", "source"] == "spec" and schema.loc["zip", "inferred_type"] == "numeric"
    typed = apply_schema(frame, spec)
    assert typed["zip"].tolist() == ["8001", "8002", "8001", "8003"]
    assert pd.api.types.is_datetime64_any_dtype(typed["d"]) and typed["flag"].tolist() == [True, False, True, False]


MESSY = pd.DataFrame({
    "t": pd.date_range("2013-01-01", periods=8, freq="D")[[1, 0, 2, 3, 4, 5, 6, 7]],
    "a": [1.0, np.nan, 3.0, np.nan, 5.0, 6.0, 7.0, 100.0],
    "c": ["u", "v", None, "u", "u", "v", "u", "v"],
    "y": [0, 1, 0, 1, 0, 1, 0, 1],
})


@pytest.mark.parametrize(
    ("options", "expected_a", "rows"),
    [
        ({"missing": "median"}, [1.0, 5.5, 3.0, 5.5, 5.0, 6.0, 7.0, 100.0], 8),
        ({"missing": "mean"}, [1.0, 122 / 6, 3.0, 122 / 6, 5.0, 6.0, 7.0, 100.0], 8),
        ({"missing": "constant", "fill_value": -1}, [1.0, -1.0, 3.0, -1.0, 5.0, 6.0, 7.0, 100.0], 8),
        ({"missing": "drop"}, [1.0, 5.0, 6.0, 7.0, 100.0], 5),
        # Fills follow time order: row 1 is the earliest, so it has nothing before it to copy.
        ({"missing": "ffill"}, [1.0, np.nan, 3.0, 3.0, 5.0, 6.0, 7.0, 100.0], 8),
        ({"missing": "bfill"}, [1.0, 1.0, 3.0, 5.0, 5.0, 6.0, 7.0, 100.0], 8),
    ],
)
def test_missing_value_strategies(tmp_path, options, expected_a, rows):
    cleaner = DatasetCleaner(**options)
    clean = cleaner.fit_transform(MESSY, spec_for(tmp_path / "toy.csv", time_column="t"))
    np.testing.assert_allclose(clean["a"].to_numpy(), expected_a)
    assert len(clean) == rows and cleaner.summary_.rows_before == 8 and cleaner.summary_.rows_after == rows
    assert cleaner.report_["action"].str.contains("fill|drop_rows").any()


def test_mode_fills_text_columns_too(tmp_path):
    clean = DatasetCleaner(missing="mode").fit_transform(MESSY, spec_for(tmp_path / "toy.csv"))
    assert clean["c"].tolist()[2] == "u" and clean["a"].isna().sum() == 0


@pytest.mark.parametrize(("outliers", "action", "threshold", "rows", "top"),
                         [("iqr", "clip", None, 8, 11.5), ("iqr", "drop", None, 7, 7.0),
                          ("zscore", "clip", 2.0, 8, None), ("zscore", "drop", 10.0, 8, 100.0),
                          ("none", "clip", None, 8, 100.0)])
def test_outlier_strategies(tmp_path, outliers, action, threshold, rows, top):
    frame = MESSY.assign(a=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 100.0])
    cleaner = DatasetCleaner(outliers=outliers, outlier_action=action, outlier_threshold=threshold)
    clean = cleaner.fit_transform(frame, spec_for(tmp_path / "toy.csv"))
    assert len(clean) == rows
    if top is not None:
        assert clean["a"].max() == pytest.approx(top)
    else:
        assert clean["a"].max() < 100.0
    assert (cleaner.report_["action"].str.contains("outliers").any()) == (outliers != "none" and clean["a"].max() < 100)


def test_cleaner_reports_shape_and_rejects_bad_options(tmp_path):
    frame = MESSY.assign(empty=np.nan, const=1)
    cleaner = DatasetCleaner.from_spec(spec_for(tmp_path / "toy.csv", cleaning={"missing": "drop"}))
    clean = cleaner.fit_transform(frame, spec_for(tmp_path / "toy.csv"))
    assert (cleaner.summary_.columns_before, cleaner.summary_.columns_after) == (6, 4)
    assert {"all values missing", "constant value"} <= set(cleaner.report_["reason"]) and len(clean) == 5
    with pytest.raises(ValueError, match="outliers='tukey'.*'cleaning'"):
        DatasetCleaner(outliers="tukey").fit_transform(frame, spec_for(tmp_path / "toy.csv"))


def test_quality_checks_report_observed_and_threshold(tmp_path):
    frame = pd.DataFrame({"id": [1, 1, 2, 3], "x": [np.nan, np.nan, np.nan, 1.0], "z": [np.inf, 1, 2, 3],
                          "y": [0, 1, 0, np.nan]})
    checks = {c.name: c for c in run_quality_checks(frame, spec_for(tmp_path / "t.csv", id_column="id",
                                                                    dtypes={"missing_col": "numeric"}), 0.5)}
    assert not checks["schema_matches_spec"].passed and "missing_col" in checks["schema_matches_spec"].detail
    assert not checks["target_is_valid"].passed and "1 missing labels" in checks["target_is_valid"].detail
    missing_rate = checks["missing_rate_within_threshold"]
    assert (missing_rate.observed, missing_rate.threshold) == (0.75, 0.5)
    assert checks["ids_are_unique"].observed == 1 and not checks["values_are_finite"].passed
    good = pd.DataFrame({"id": [1, 2, 3], "x": [1.0, np.nan, 2.0], "y": [0, 1, 1]})
    assert all(c.passed for c in run_quality_checks(good, spec_for(tmp_path / "t.csv", id_column="id")))
    single = run_quality_checks(good.assign(y=1), spec_for(tmp_path / "t.csv"))
    assert [c.name for c in single if not c.passed] == ["target_is_valid"]


def classified(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.normal(size=n), "t": pd.Timestamp("2020-01-01") + pd.to_timedelta(
        rng.integers(0, 50, n), unit="D"), "y": rng.choice([0, 1], size=n, p=[0.8, 0.2])})


def test_stratified_split_keeps_balance_and_is_reproducible():
    frame = classified()
    split = split_dataset(frame, "y", "binary", test_size=0.2, seed=1)
    assert split.strategy == "stratified" and (len(split.X_train), len(split.X_test)) == (160, 40)
    assert abs(split.y_test.mean() - frame["y"].mean()) < 0.03
    again = split_dataset(frame, "y", "binary", test_size=0.2, seed=1)
    assert split.X_test.index.equals(again.X_test.index)
    assert not set(split.X_train.index) & set(split.X_test.index)


def test_time_split_never_trains_on_the_future_and_keeps_ties_together():
    frame = classified()
    split = split_dataset(frame, "y", "binary", test_size=0.2, ids=frame.index.to_series(), times=frame["t"])
    assert split.strategy == "chronological"  # time wins over the id hash
    assert split.X_train["t"].max() < split.X_test["t"].min()
    assert split.times_train.equals(frame.loc[split.X_train.index, "t"])
    assert 0.1 < len(split.X_test) / len(frame) < 0.3


@pytest.mark.parametrize(("task", "timed"), [("binary", False), ("regression", False), ("binary", True)])
def test_cv_folds_follow_task_and_time(task, timed):
    frame = classified()
    folds = cv_folds(frame["y"], task, 4, seed=0, times=frame["t"] if timed else None)
    assert len(folds) == 4
    validated = np.concatenate([validation for _, validation in folds])
    for train, validation in folds:
        assert not set(train) & set(validation)
        if timed:
            assert frame["t"].iloc[train].max() < frame["t"].iloc[validation].min()
        elif task == "binary":
            assert abs(frame["y"].iloc[validation].mean() - frame["y"].mean()) < 0.05
    # Shuffled folds validate every row once; time-ordered ones never validate the earliest block.
    assert (len(validated) == len(frame)) is (not timed)
    assert len(set(validated)) == len(validated)
