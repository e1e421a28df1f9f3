"""The forecasting assets on bad series files: each a dg.Failure naming the file, column and fix, and the
forecast made earlier from the good file stays."""

import re
import shutil

import dagster as dg
import pandas as pd
import pytest

from tmiv_assets.defs.jobs import FORECAST_ASSETS
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets_tests.conftest import DATA_DIR, resources_for

SERIES = "uk_driver_deaths"


@pytest.fixture(scope="module")
def forecasted(tmp_path_factory):
    """uk_driver_deaths forecast once from its good file, in a writable copy of data/."""
    root = tmp_path_factory.mktemp("forecast_assets")
    data_dir, home = root / "data", root / "tmiv"
    shutil.copytree(DATA_DIR / "series", data_dir / "series")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("series", [SERIES])
        assert dg.materialize(FORECAST_ASSETS, resources=resources_for(home, data_dir), partition_key=SERIES,
                              instance=instance).success
        yield home, data_dir, instance


def _duplicate_a_month(frame):
    return pd.concat([frame, frame.iloc[[10]]]).sort_values("month")


def _drop_a_month(frame):
    return frame.drop(index=30)


def _blank_a_value(frame):
    return frame.assign(value=frame["value"].mask(frame.index == 40))


def _constant(frame):
    return frame.assign(value=1500.0)


@pytest.mark.parametrize(("breakage", "asset", "expected"), [
    (_duplicate_a_month, "series_data", r"uk_driver_deaths\.csv: time column 'month' is not a regular 'MS' series"),
    (_drop_a_month, "series_data", r"time column 'month' has 1 gaps at frequency 'MS'; add the missing periods"),
    (_blank_a_value, "series_data", r"value column 'value' has 1 missing or non-numeric values; fill them"),
    (_constant, "forecast_backtest", r"series is constant .* forecast the constant directly"),  # diagnostics too
])
def test_a_bad_series_file_fails_clearly_and_keeps_the_earlier_forecast(forecasted, breakage, asset, expected):
    home, data_dir, instance = forecasted
    path = data_dir / "series" / f"{SERIES}.csv"
    original = path.read_bytes()
    store = FeatureStore(home=str(home))
    before = {name: len(store.versions(name, SERIES)) for name in ("forecast_backtest", "forecast_leaderboard")}
    forecast_file = (home / "forecasts" / f"{SERIES}.parquet").read_bytes()
    try:
        breakage(pd.read_csv(path)).to_csv(path, index=False)
        run = dg.materialize(FORECAST_ASSETS, resources=resources_for(home, data_dir), partition_key=SERIES,
                             instance=instance, raise_on_error=False)
    finally:
        path.write_bytes(original)
    assert not run.success
    failures = {event.step_key: event for event in run.all_events
                if event.event_type == dg.DagsterEventType.STEP_FAILURE}
    failure = failures[asset]
    assert re.search(expected, failure.event_specific_data.error.message), failure.event_specific_data.error.message
    assert {name: len(store.versions(name, SERIES)) for name in before} == before
    assert (home / "forecasts" / f"{SERIES}.parquet").read_bytes() == forecast_file
