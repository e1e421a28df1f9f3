"""Sequence networks for forecasting: every architecture, seeded reproducibility, the transfer-learning path and the
spec's network settings."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tmiv_assets.ml.data.spec import SpecError, load_series_spec
from tmiv_assets.ml.forecasting.auto import DEFAULT_MODELS, AutoForecaster
from tmiv_assets.ml.forecasting.neural import ARCHITECTURES, NetworkSettings, SequenceNetwork, make_windows
from tmiv_assets_tests.conftest import read_series

SERIES_DIR = Path(__file__).resolve().parents[1] / "data" / "series"


@pytest.fixture(scope="module")
def passengers() -> np.ndarray:
    return np.log(read_series(load_series_spec(SERIES_DIR / "air_passengers.yaml")).to_numpy(float))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_each_architecture_learns_the_seasonal_pattern_reproducibly(passengers, architecture):
    train, actual = passengers[:-12], passengers[-12:]
    settings = NetworkSettings(architecture=architecture, max_epochs=60, seed=3)
    mean, lower, upper = SequenceNetwork(settings).fit(train, 12, 12).predict(95)
    again = SequenceNetwork(settings).fit(train, 12, 12).predict(95)
    np.testing.assert_array_equal(mean, again[0])
    other_seed = SequenceNetwork(NetworkSettings(architecture=architecture, max_epochs=60, seed=4)).fit(train, 12, 12)
    assert not np.array_equal(mean, other_seed.predict(95)[0])
    assert (lower < mean).all() and (mean < upper).all()
    naive_error = np.abs(actual - train[-1]).mean()
    assert np.abs(actual - mean).mean() < naive_error  # better than repeating the last value


def test_windows_are_relative_to_their_last_value_and_never_reach_past_the_series():
    values = np.arange(40.0) * 2 + 100
    windows = make_windows(values, lookback=6, horizon=3, season_length=4)
    assert windows.inputs.shape == (40 - 6 - 3 + 1, 6, 3)  # value and the season position's sine and cosine
    np.testing.assert_allclose(windows.inputs[:, -1, 0], 0.0)  # the last input is the reference level
    np.testing.assert_allclose(windows.targets[-1], [1.0, 2.0, 3.0])  # steps of 2 over a spread of 2
    assert make_windows(values[:8], lookback=6, horizon=3, season_length=4).inputs.shape[0] == 0


def test_transfer_learning_is_backtested_beside_the_network_from_scratch(passengers):
    series_dir = SERIES_DIR
    deaths_spec = load_series_spec(series_dir / "uk_driver_deaths.yaml")
    deaths = read_series(deaths_spec)
    other = read_series(load_series_spec(series_dir / "air_passengers.yaml"))
    auto = AutoForecaster(horizon=12, network={"architectures": ["gru"]}, pretraining=[other]).fit(deaths)
    board = auto.leaderboard_.set_index("model")
    assert board.loc["gru_transfer", "status"] == "ok" and board.loc["gru", "status"] == "ok"
    assert auto.pretrained_.series == 1 and auto.pretrained_.windows > 50
    ok = board[board["status"] == "ok"]
    # The fine-tuned network is chosen only when it wins, and clearly (else AutoARIMA on y or on log(y)).
    assert auto.chosen_ in {ok["mase"].idxmin(), *DEFAULT_MODELS} and auto.chosen_ == auto.leaderboard_["model"].iloc[0]
    # Fine-tuning starts from the pre-trained weights, so it differs from training from scratch.
    folds = auto.fold_forecasts_.set_index(["model", "fold", "step"])["yhat"]
    assert not np.allclose(folds.loc["gru_transfer"], folds.loc["gru"])
    # Without pre-training series there is no transfer candidate; with too little it is skipped with the reason.
    alone = AutoForecaster(horizon=12, models=["gru"]).evaluate(deaths).leaderboard_
    assert "gru_transfer" not in set(alone["model"])
    # No network is backtested unless the spec or `models` names one.
    short = AutoForecaster(horizon=12, pretraining=[other]).evaluate(deaths).leaderboard_
    assert not set(short["model"]) & {*ARCHITECTURES, "gru_transfer"}
    tiny = AutoForecaster(horizon=12, models=["gru"], pretraining=[other.iloc[:20]]).evaluate(deaths).leaderboard_
    status = tiny.set_index("model").loc["gru_transfer", "status"]
    assert status.startswith("skipped") and "pre-training failed" in status


def test_spec_network_settings_reach_the_networks_and_bad_ones_name_the_setting(tmp_path):
    path = tmp_path / "sales.yaml"
    pd.DataFrame({"month": pd.date_range("2010-01-01", periods=60, freq="MS"), "units": np.arange(60.0)}).to_csv(
        tmp_path / "sales.csv", index=False)
    body = "file: sales.csv\ntime_column: month\nvalue_column: units\nhorizon: 6\n"
    path.write_text(body + "network: {architecture: lstm, width: 8, depth: 1, bidirectional: true}\n")
    spec = load_series_spec(path)
    auto = AutoForecaster.from_spec(spec)
    assert auto._network("lstm") == NetworkSettings(architecture="lstm", width=8, depth=1, bidirectional=True)
    assert auto._network("gru") == NetworkSettings(architecture="gru", width=8, depth=1)
    path.write_text(body + "network: {widht: 8}\n")
    with pytest.raises(SpecError, match=r"network settings: unknown network settings \['widht'\]; use \["):
        load_series_spec(path)
    path.write_text(body + "network: {architecture: gru, bidirectional: true}\n")
    with pytest.raises(SpecError, match="bidirectional applies to the lstm architecture only"):
        load_series_spec(path)
    path.write_text(body + "network: {architectures: [gru, rnn]}\n")
    with pytest.raises(SpecError, match=r"network.architectures must be a list of \['lstm'"):
        load_series_spec(path)
