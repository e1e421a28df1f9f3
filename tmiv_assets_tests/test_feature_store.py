"""The DuckDB + Parquet feature store against a real catalog file."""

import json

import duckdb
import pandas as pd
import pytest

from tmiv_assets.ml.spec import SpecError
from tmiv_assets.resources.feature_store import FeatureStore


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


def test_artifact_paths_stay_inside_the_state_directory(store):
    with pytest.raises(ValueError, match="escapes the state directory"):
        store.artifact_path("..", "outside.txt")
