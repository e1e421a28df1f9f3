"""Sequence networks for forecasting in PyTorch: LSTM (optionally bidirectional), GRU, a dilated causal CNN (TCN) and a
Transformer encoder, each reading `lookback` past values and emitting all `horizon` future values at once.

Scaling is inside: every window is taken relative to its last observed value and divided by the series' spread, so
one network serves series of any level and a network pre-trained on other series transfers. Covariates: the
position in the season (sine and cosine) as input channels when the series has a season; the series' regressors
(standardised by their history's mean and spread) as input channels over the lookback, and their known values over
the horizon fed to the output layer beside the sequence's summary, so a forecast step sees its own regressors.
Training: Adam on the mean absolute error (what MASE measures), mini-batches, early stopping on the most recent
windows, the best weights kept; seeded and single-threaded so a run gives the same network every time and several
runs side by side do not fight over 2 cores. Intervals: the validation windows' absolute errors per step, as a
normal band.

Transfer learning (the seeds' global model): `pretrain` trains one network on the windows of several series;
`SequenceNetwork(..., pretrained=...)` starts from its weights and fine-tunes on the target series at a lower
learning rate. The backtest compares the fine-tuned network with the one trained from scratch like any two models.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm
from torch import nn

from tmiv_assets.ml.monitoring.settings import SpecSettings

ARCHITECTURES = ("lstm", "gru", "tcn", "transformer")
MIN_WINDOWS = 12  # fewer training windows than this cannot train and validate a network honestly
MAX_WINDOWS = 1024  # the most recent windows only: older ones add time, not much accuracy


@dataclass(frozen=True)
class NetworkSettings(SpecSettings):
    KIND: ClassVar[str] = "network"

    architecture: str = "gru"
    lookback: int | None = None
    """Past values read per forecast; None: two seasons, at least the horizon and 8, at most a third of the data."""
    width: int = 32
    depth: int = 2
    dropout: float = 0.1
    bidirectional: bool = False
    """LSTM only: read the lookback window both ways."""
    max_epochs: int = 150
    patience: int = 15
    learning_rate: float = 3e-3
    batch_size: int = 32
    fine_tune_epochs: int = 60
    fine_tune_learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {list(ARCHITECTURES)}, got {self.architecture!r}")
        if self.bidirectional and self.architecture != "lstm":
            raise ValueError("bidirectional applies to the lstm architecture only")
        if self.width < 4 or self.depth < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"width >= 4, depth >= 1 and 0 <= dropout < 1; got {self.width}, {self.depth}, "
                             f"{self.dropout}")

    def lookback_for(self, n: int, horizon: int, season_length: int) -> int:
        if self.lookback is not None:
            return self.lookback
        wanted = max(2 * season_length, horizon, 8)
        return max(4, min(wanted, n // 3))


@contextmanager
def single_thread() -> Iterator[None]:
    """Torch on one thread for the block: the work is small, and other steps share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Recurrent(nn.Module):
    def __init__(self, kind: str, channels: int, horizon: int, future: int, s: NetworkSettings):
        super().__init__()
        layer = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = layer(channels, s.width, num_layers=s.depth, batch_first=True, bidirectional=s.bidirectional,
                         dropout=s.dropout if s.depth > 1 else 0.0)
        self.head = nn.Linear(s.width * (2 if s.bidirectional else 1) + future, horizon)

    def forward(self, x: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(x)
        return self.head(torch.cat([output[:, -1], future], dim=1))


class _CausalBlock(nn.Module):
    def __init__(self, channels: int, width: int, dilation: int, dropout: float):
        super().__init__()
        self.pad = 2 * dilation  # kernel 3: pad the past only, so a step never sees its future
        self.conv = nn.Conv1d(channels, width, kernel_size=3, dilation=dilation)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv1d(channels, width, 1) if channels != width else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(nn.functional.pad(x, (self.pad, 0)))
        return torch.relu(self.drop(torch.relu(out)) + self.skip(x))


class _TCN(nn.Module):
    def __init__(self, channels: int, horizon: int, future: int, s: NetworkSettings):
        super().__init__()
        self.blocks = nn.Sequential(*[_CausalBlock(channels if i == 0 else s.width, s.width, 2 ** i, s.dropout)
                                      for i in range(s.depth)])
        self.head = nn.Linear(s.width + future, horizon)

    def forward(self, x: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.blocks(x.transpose(1, 2))[:, :, -1], future], dim=1))


class _Transformer(nn.Module):
    def __init__(self, channels: int, horizon: int, future: int, lookback: int, s: NetworkSettings):
        super().__init__()
        heads = 4 if s.width % 4 == 0 else 1
        self.embed = nn.Linear(channels, s.width)
        self.position = nn.Parameter(torch.zeros(1, lookback, s.width))
        layer = nn.TransformerEncoderLayer(s.width, heads, dim_feedforward=2 * s.width, dropout=s.dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, s.depth, enable_nested_tensor=False)
        self.head = nn.Linear(s.width + future, horizon)

    def forward(self, x: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.encoder(self.embed(x) + self.position)[:, -1], future], dim=1))


def _build(settings: NetworkSettings, channels: int, horizon: int, lookback: int, future: int = 0) -> nn.Module:
    """A network reading `channels` inputs per past step and `future` known values (regressors over the horizon)."""
    if settings.architecture in ("lstm", "gru"):
        return _Recurrent(settings.architecture, channels, horizon, future, settings)
    if settings.architecture == "tcn":
        return _TCN(channels, horizon, future, settings)
    return _Transformer(channels, horizon, future, lookback, settings)


@dataclass(frozen=True)
class Windows:
    inputs: np.ndarray  # (windows, lookback, channels), relative to the window's last value, over the spread
    targets: np.ndarray  # (windows, horizon), likewise
    future: np.ndarray  # (windows, horizon × regressors): the regressors over each window's horizon


def _channels(n: int, season_length: int, start: int = 0) -> np.ndarray:
    """Covariates per time step: the season position as sine and cosine (none without a season)."""
    if season_length <= 1:
        return np.empty((n, 0))
    angle = 2 * np.pi * (np.arange(start, start + n) % season_length) / season_length
    return np.column_stack([np.sin(angle), np.cos(angle)])


def _spread(values: np.ndarray) -> float:
    """The series' typical step size: the scale windows are divided by (1 for a series that never moves)."""
    steps = np.abs(np.diff(values))
    return float(steps.mean()) if len(steps) and steps.mean() > 0 else 1.0


def make_windows(values: np.ndarray, lookback: int, horizon: int, season_length: int,
                 regressors: np.ndarray | None = None) -> Windows:
    """Every (lookback, horizon) pair of consecutive windows of one series, the most recent MAX_WINDOWS;
    `regressors` (one row per value, standardised) join the inputs and give each window's `future`."""
    regressors = np.empty((len(values), 0)) if regressors is None else regressors
    count = len(values) - lookback - horizon + 1
    if count < 1:
        channels = 1 + 2 * (season_length > 1) + regressors.shape[1]
        return Windows(np.empty((0, lookback, channels)), np.empty((0, horizon)),
                       np.empty((0, horizon * regressors.shape[1])))
    first = max(0, count - MAX_WINDOWS)
    starts = np.arange(first, count)
    scale = _spread(values)
    past = values[starts[:, None] + np.arange(lookback)]
    future = values[starts[:, None] + lookback + np.arange(horizon)]
    last = past[:, -1:]
    covariates = np.concatenate([_channels(len(values), season_length), regressors], axis=1)
    inputs = np.concatenate([((past - last) / scale)[..., None], covariates[starts[:, None] + np.arange(lookback)]],
                            axis=2)
    known = regressors[starts[:, None] + lookback + np.arange(horizon)].reshape(len(starts), -1)
    return Windows(inputs.astype(np.float32), ((future - last) / scale).astype(np.float32), known.astype(np.float32))


def _train(model: nn.Module, train: Windows, valid: Windows, epochs: int, patience: int, learning_rate: float,
           batch_size: int, rng: np.random.Generator) -> tuple[nn.Module, int]:
    """Adam on mean absolute error with early stopping on `valid`; returns the best weights and their epoch."""
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    x, f, y = (torch.from_numpy(a) for a in (train.inputs, train.future, train.targets))
    vx, vf, vy = (torch.from_numpy(a) for a in (valid.inputs, valid.future, valid.targets))
    best, best_state, best_epoch, waited = math.inf, copy.deepcopy(model.state_dict()), 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        for batch in np.array_split(rng.permutation(len(x)), max(1, math.ceil(len(x) / batch_size))):
            optimiser.zero_grad()
            loss = (model(x[batch], f[batch]) - y[batch]).abs().mean()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
        model.eval()
        with torch.no_grad():
            score = float((model(vx, vf) - vy).abs().mean())
        if score < best - 1e-6:
            best, best_state, best_epoch, waited = score, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            waited += 1
            if waited >= patience:
                break
    model.load_state_dict(best_state)
    return model, best_epoch


def _split(windows: Windows, horizon: int) -> tuple[Windows, Windows]:
    """The most recent windows validate: a sixth of them, at least one; their targets overlap the training
    windows' by construction of consecutive windows, so the gap of `horizon` keeps the validation targets unseen."""
    n = len(windows.inputs)
    valid = max(1, n // 6)
    cut = max(1, n - valid - horizon)
    return (Windows(windows.inputs[:cut], windows.targets[:cut], windows.future[:cut]),
            Windows(windows.inputs[n - valid:], windows.targets[n - valid:], windows.future[n - valid:]))


@dataclass
class Pretrained:
    """A network trained on other series, with the shape it was built for."""

    settings: NetworkSettings
    lookback: int
    horizon: int
    season_length: int
    model: nn.Module
    series: int
    windows: int


def pretrain(series: Sequence[np.ndarray], settings: NetworkSettings, lookback: int, horizon: int,
             season_length: int) -> Pretrained:
    """One network on the pooled windows of several series (each scaled by its own spread)."""
    pooled = [make_windows(np.asarray(values, dtype=float), lookback, horizon, season_length) for values in series]
    pooled = [w for w in pooled if len(w.inputs) >= MIN_WINDOWS]
    if not pooled:
        raise ValueError(f"no pre-training series has {MIN_WINDOWS} windows of {lookback} + {horizon} points")
    parts = [_split(w, horizon) for w in pooled]
    train, valid = (Windows(*(np.concatenate([getattr(p[side], key) for p in parts])
                              for key in ("inputs", "targets", "future"))) for side in (0, 1))
    with single_thread():
        torch.manual_seed(settings.seed)
        model = _build(settings, train.inputs.shape[2], horizon, lookback)
        model, _ = _train(model, train, valid, settings.max_epochs, settings.patience, settings.learning_rate,
                          settings.batch_size, np.random.default_rng(settings.seed))
    return Pretrained(settings, lookback, horizon, season_length, model, len(pooled), len(train.inputs))


class SequenceNetwork:
    """A network trained on one series (or fine-tuned from a `Pretrained` one) that forecasts `horizon` steps."""

    def __init__(self, settings: NetworkSettings, pretrained: Pretrained | None = None):
        self.settings = settings
        self.pretrained = pretrained

    def fit(self, values: np.ndarray, horizon: int, season_length: int,
            regressors: np.ndarray | None = None) -> SequenceNetwork:
        """Train on the series' windows; `regressors` (one row per value) become input channels, and `predict`
        then needs their values over the horizon."""
        values = np.asarray(values, dtype=float)
        s = self.settings
        if self.pretrained and regressors is not None:
            raise ValueError("a pre-trained network has no regressor inputs; fine-tune it without regressors")
        if regressors is not None:
            regressors = np.asarray(regressors, dtype=float)
            self.regressor_mean_ = regressors.mean(axis=0)
            self.regressor_scale_ = np.where(regressors.std(axis=0) > 0, regressors.std(axis=0), 1.0)
            regressors = (regressors - self.regressor_mean_) / self.regressor_scale_
        self.regressors_ = regressors
        lookback = self.pretrained.lookback if self.pretrained else s.lookback_for(len(values), horizon, season_length)
        if self.pretrained and (self.pretrained.horizon, self.pretrained.season_length) != (horizon, season_length):
            raise ValueError(f"the pre-trained network forecasts {self.pretrained.horizon} steps at season length "
                             f"{self.pretrained.season_length}, not {horizon} at {season_length}")
        windows = make_windows(values, lookback, horizon, season_length, regressors)
        if len(windows.inputs) < MIN_WINDOWS:
            raise ValueError(f"{len(values)} points give {len(windows.inputs)} windows of {lookback} + {horizon}; a "
                             f"network needs {MIN_WINDOWS}")
        train, valid = _split(windows, horizon)
        with single_thread():
            torch.manual_seed(s.seed)
            if self.pretrained:
                model = copy.deepcopy(self.pretrained.model)
                epochs, rate = s.fine_tune_epochs, s.fine_tune_learning_rate
            else:
                model = _build(s, windows.inputs.shape[2], horizon, lookback, windows.future.shape[1])
                epochs, rate = s.max_epochs, s.learning_rate
            self.model_, self.best_epoch_ = _train(model, train, valid, epochs, s.patience, rate, s.batch_size,
                                                   np.random.default_rng(s.seed))
            self.model_.eval()
            with torch.no_grad():
                errors = (self.model_(torch.from_numpy(valid.inputs), torch.from_numpy(valid.future))
                          - torch.from_numpy(valid.targets)).numpy()
        self.values_, self.lookback_, self.horizon_, self.season_length_ = values, lookback, horizon, season_length
        self.scale_ = _spread(values)
        # Spread per step from the validation windows; at least the training error's, so one lucky window is no band.
        self.step_error_ = np.maximum(np.abs(errors).mean(axis=0), np.abs(errors).mean()) * np.sqrt(np.pi / 2)
        return self

    def predict(self, level: int = 95,
                regressors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, lower, upper) for the `horizon` steps after the series; `regressors` their values over those steps
        when the network was fitted with regressors."""
        past = self.values_[-self.lookback_:]
        known = np.empty((self.horizon_, 0))
        if self.regressors_ is not None:
            if regressors is None or np.shape(regressors) != (self.horizon_, self.regressors_.shape[1]):
                raise ValueError(f"the network was fitted with {self.regressors_.shape[1]} regressors: give their "
                                 f"values over the {self.horizon_} forecast steps")
            known = (np.asarray(regressors, dtype=float) - self.regressor_mean_) / self.regressor_scale_
        history = np.empty((len(self.values_), 0)) if self.regressors_ is None else self.regressors_
        covariates = np.concatenate([_channels(len(self.values_), self.season_length_), history], axis=1)
        x = np.concatenate([((past - past[-1]) / self.scale_)[:, None], covariates[-self.lookback_:]], axis=1)
        future = known.reshape(1, -1).astype(np.float32)
        with single_thread(), torch.no_grad():
            out = self.model_(torch.from_numpy(x[None].astype(np.float32)), torch.from_numpy(future)).numpy()[0]
        mean = past[-1] + out * self.scale_
        half = norm.ppf(0.5 + level / 200) * self.step_error_ * self.scale_
        return mean, mean - half, mean + half


def network_forecast(settings: NetworkSettings, pretrained: Pretrained | None = None):
    """A `Candidate.run` for models.py: fit on the series, forecast with a band at `level`."""

    def run(y: pd.Series, horizon: int, season_length: int, level: int, regressors: pd.DataFrame | None):
        history, future = (None, None) if regressors is None else (regressors.to_numpy()[:len(y)],
                                                                   regressors.to_numpy()[len(y):])
        return SequenceNetwork(settings, pretrained).fit(y.to_numpy(), horizon, season_length, history).predict(
            level, future)

    return run
