"""The DuckDB + Parquet feature store against a real catalog file."""

import json
import stat
import subprocess
import sys
import time

import duckdb
import numpy as np
import pandas as pd
import pytest

from tmiv_assets.ml.data.spec import SpecError
from tmiv_assets.resources.artifacts import ArtifactStore
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.files import atomic_path


@pytest.fixture
def store(home) -> FeatureStore:
    return FeatureStore(home=str(home))


def frame(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame({"x": range(n), "label": list("ab" * n)[:n]})


def test_versions_are_immutable_and_catalogued(store):
    first = store.save("feature_set", "toy", frame(5), {"source": "a"})
    second = store.save("feature_set", "toy", frame(7), {"source": "b"})
    assert (first.version, second.version) == (1, 2)
    assert first.path.exists() and second.path.exists()
    pd.testing.assert_frame_equal(store.load("feature_set", "toy", 1), frame(5))
    pd.testing.assert_frame_equal(store.load("feature_set", "toy"), frame(7))
    with duckdb.connect(str(store.catalog_path), read_only=True) as connection:
        rows = connection.execute(
            "SELECT version, row_count, lineage, schema FROM feature_sets WHERE dataset = 'toy' ORDER BY version"
        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [(1, 5), (2, 7)]
    assert json.loads(rows[1][2]) == {"source": "b"}
    assert [c["name"] for c in json.loads(rows[0][3])] == ["x", "label"]


def test_same_content_does_not_create_a_version(store):
    store.save("feature_set", "toy", frame(5), {})
    again = store.save("feature_set", "toy", frame(5), {"rerun": True})
    assert again.version == 1 and not again.created
    assert len(store.versions("feature_set", "toy")) == 1


@pytest.mark.parametrize("dataset", ["../escape", "x'; DROP TABLE feature_sets; --"])
def test_unsafe_dataset_names_never_reach_sql_or_paths(store, dataset):
    store.save("feature_set", "toy", frame(), {})
    with pytest.raises(SpecError, match="not allowed"):
        store.save("feature_set", dataset, frame(), {})
    assert len(store.versions("feature_set", "toy")) == 1


def test_loading_unknown_version_names_the_versions(store):
    store.save("feature_set", "toy", frame(), {})
    with pytest.raises(LookupError, match=r"no version 9: \[1\]"):
        store.load("feature_set", "toy", 9)
    with pytest.raises(LookupError, match="materialize clean_dataset first"):
        store.load("clean_dataset", "toy")


def test_artifact_paths_stay_inside_the_state_directory(home):
    artifacts = ArtifactStore(home=str(home))
    with pytest.raises(ValueError, match="escapes the state directory"):
        artifacts.write_text("x", "..", "outside.txt")
    assert artifacts.write_text("report", "reports", "toy", "r.txt").read_text() == "report"


def test_a_spec_change_makes_a_new_version_of_the_same_content(store):
    first = store.save("raw_dataset", "toy", frame(5), {"spec": {"positive_class": "a"}})
    same = store.save("raw_dataset", "toy", frame(5), {"spec": {"positive_class": "a"}, "rerun": True})
    changed = store.save("raw_dataset", "toy", frame(5), {"spec": {"positive_class": "b"}})
    assert (first.version, same.created, changed.version) == (1, False, 2)
    assert store.lineage("raw_dataset", "toy")["spec"] == {"positive_class": "b"}
    assert store.lineage("raw_dataset", "toy", 1)["spec"] == {"positive_class": "a"}


def test_round_trip_keeps_dtypes_and_missing_values(store):
    original = pd.DataFrame({
        "f": [1.5, np.nan, 3.0], "s": ["a", np.nan, "c"], "b": [True, False, True],
        "t": pd.to_datetime(["2013-01-01", None, "2013-01-03"]), "n": pd.array([1, None, 3], dtype="Int64"),
        "cat": pd.Categorical(["x", "y", "x"]), "tz": pd.to_datetime(["2013-01-01"] * 3).tz_localize("UTC"),
    })
    store.save("feature_set", "toy", original, {})
    pd.testing.assert_frame_equal(store.load("feature_set", "toy"), original)


def test_catalog_lineage_listing_and_schema_diff(store):
    store.save("feature_set", "toy", frame(5), {"clean_dataset_version": 3, "transform": {"degree": 2}})
    store.save("feature_set", "toy", frame(5).assign(x=lambda f: f["x"] * 1.0, extra=1), {})
    store.save("clean_dataset", "toy", frame(3), {})
    listing = store.feature_sets()
    assert listing[["name", "dataset", "versions"]].values.tolist() == [
        ["clean_dataset", "toy", 1], ["feature_set", "toy", 2]]
    versions = store.versions("feature_set", "toy")
    assert versions["code_version"].str.len().eq(12).all()
    assert json.loads(versions["lineage"].iloc[0])["transform"] == {"degree": 2}
    diff = store.diff_schemas("feature_set", "toy", 1, "latest")
    assert (diff.added, diff.removed, diff.type_changed) == (("extra",), (), (("x", "int64", "float64"),))
    assert store.diff_schemas("feature_set", "toy", 2, 2).unchanged


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (pd.DataFrame([[1, 2]], columns=["a", "a"]), "collide"),
        (pd.DataFrame({"Age": [1], "age": [2]}), "differing only by case"),
        (pd.DataFrame({"m": [1, "a"]}), "mixed or non-text"),
    ],
)
def test_unstorable_frames_fail_and_leave_earlier_versions_intact(store, bad, message):
    store.save("feature_set", "toy", frame(5), {})
    before = store.versions("feature_set", "toy")
    with pytest.raises(ValueError, match=message):
        store.save("feature_set", "toy", bad, {})
    pd.testing.assert_frame_equal(store.versions("feature_set", "toy"), before)
    pd.testing.assert_frame_equal(store.load("feature_set", "toy"), frame(5))
    assert sorted(p.name for p in (store.root / "feature_set" / "toy").iterdir()) == ["v0001.parquet"]


def test_failed_catalog_insert_removes_the_new_file(store, monkeypatch):
    store.save("feature_set", "toy", frame(5), {})

    def failing_code_version(*args, **kwargs):
        raise duckdb.ConstraintException("simulated catalog failure")

    monkeypatch.setattr("tmiv_assets.resources.feature_store.code_version", failing_code_version)
    with pytest.raises(duckdb.ConstraintException, match="simulated"):
        store.save("feature_set", "toy", frame(6), {})
    assert store.versions("feature_set", "toy")["version"].tolist() == [1]
    assert sorted(p.name for p in (store.root / "feature_set" / "toy").iterdir()) == ["v0001.parquet"]


def test_readers_do_not_block_on_a_writer_holding_the_catalog(store):
    store.save("feature_set", "toy", frame(5), {})
    # Another process opens the catalog for writing; DuckDB then locks the file against every other process.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('locked', flush=True); time.sleep(30)", str(store.catalog_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(store.catalog_path), read_only=True)
        started = time.monotonic()
        assert len(store.versions("feature_set", "toy")) == 1
        pd.testing.assert_frame_equal(store.load("feature_set", "toy"), frame(5))
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()


def test_atomic_writes_leave_files_readable_like_any_other_output(tmp_path):
    target = tmp_path / "reports" / "report.html"
    with atomic_path(target) as temporary:
        temporary.write_text("<html></html>")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # mkstemp alone would leave 0600
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]
