import os
import shutil
import socket
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from tmiv_assets.defs.assets.automl import TrainingConfig
from tmiv_assets.defs.resources import build_resources
from tmiv_assets.ml.data.ingest import read_series_frame, split_series

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--without-servers", action="store_true",
                     help="leave out the scale-out tests that start PostgreSQL, Redis and Celery workers")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Only an explicit flag leaves them out; a machine without the servers fails them, saying what to install.
    if config.getoption("--without-servers"):
        skip = pytest.mark.skip(reason="--without-servers")
        for item in items:
            if "servers" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh state directory."""
    path = tmp_path / "tmiv"
    monkeypatch.setenv("TMIV_HOME", str(path))
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A writable copy of the embedded data, for tests that drop or break files."""
    target = tmp_path / "data"
    shutil.copytree(DATA_DIR, target, ignore=shutil.ignore_patterns("*.py"))
    return target


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


def resources_for(home: Path, data_dir: Path = DATA_DIR) -> dict:
    return build_resources(home=str(home), data_dir=str(data_dir))


# A small, trial-capped search keeps the suite fast and its models identical run to run: the trial cap, never
# the clock, ends it (the budget is far above what it needs even on a loaded 2-core machine).
FAST_TRAINING = dg.RunConfig(ops={"model_candidates": TrainingConfig(time_budget_s=600, preset="fast", max_trials=4,
                                                                     n_jobs=1)})


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    dagster_home = tmp_path / "tmiv" / "dagster"
    dagster_home.mkdir(parents=True)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))  # dagster.yaml reads it
    shutil.copy(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    return os.environ | {"TMIV_HOME": str(tmp_path / "tmiv"), "DAGSTER_HOME": str(dagster_home),
                         "TMIV_DATA_DIR": str(DATA_DIR)}


def persistent_instance(environment: dict[str, str]) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(environment["DAGSTER_HOME"])


def free_port() -> int:
    """A loopback port no process listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_series(spec) -> pd.Series:
    """The observed series of a series spec's file, as series_data stores it (without the regressors)."""
    return split_series(read_series_frame(spec), spec.name)[0]
