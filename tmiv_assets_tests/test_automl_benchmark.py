"""benchmarks/automl.py on several train/test splits: the systems ranked on their mean scores."""

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
