"""PyTorch multilayer perceptron for encoded tabular data, with a scikit-learn interface."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted
from torch import nn

logger = logging.getLogger(__name__)


class _TorchMLP(BaseEstimator):
    """Feed-forward network (Linear, BatchNorm, ReLU, Dropout blocks) trained with AdamW.

    Parameters
    ----------
    hidden_layers, width : depth and units per layer; None picks them from the data size.
    dropout, lr, weight_decay, batch_size : the usual; batch_size None scales with the rows.
    max_epochs, patience : early stopping on the validation loss after `patience` epochs without improvement.
    scheduler : 'plateau' (ReduceLROnPlateau on the validation loss) or 'cosine' (annealing over max_epochs).
    clip_norm : gradient-norm clipping; None disables it.
    validation_fraction : rows held out for early stopping and the scheduler.
    seed, n_threads : torch seed and intra-op threads (small: the machine is shared).
    log_dir : TensorBoard event directory; None writes none.
    progress : called with {'event': 'epoch', epoch, train_loss, val_loss, val_metric, lr} after each epoch.
    deadline : monotonic time after which training stops at the end of the epoch (the best weights so far
        are kept and `stopped_reason_` starts with 'deadline'); None trains to the end.
    """

    def __init__(self, hidden_layers: int | None = None, width: int | None = None, dropout: float = 0.1,
                 lr: float = 1e-3, weight_decay: float = 1e-5, batch_size: int | None = None, max_epochs: int = 100,
                 patience: int = 10, scheduler: str = "plateau", clip_norm: float | None = 1.0,
                 validation_fraction: float = 0.15, seed: int = 0, n_threads: int = 1, log_dir: str | None = None,
                 progress: Callable[[dict], None] | None = None, deadline: float | None = None):
        self.hidden_layers = hidden_layers
        self.width = width
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.scheduler = scheduler
        self.clip_norm = clip_norm
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.n_threads = n_threads
        self.log_dir = log_dir
        self.progress = progress
        self.deadline = deadline

    def _fit(self, X, targets: np.ndarray, stratify) -> None:
        if self.scheduler not in ("plateau", "cosine"):
            raise ValueError(f"scheduler {self.scheduler!r} is not 'plateau' or 'cosine'")
        X = _as_float(X)
        if not np.isfinite(X).all():
            raise ValueError("X has missing or infinite values; impute before the network")
        torch.manual_seed(self.seed)
        torch.set_num_threads(self.n_threads)
        self.n_features_in_ = X.shape[1]
        self.architecture_ = auto_architecture(len(X), X.shape[1], self.hidden_layers, self.width)
        train, valid = train_test_split(np.arange(len(X)), test_size=self.validation_fraction,
                                        random_state=self.seed, stratify=stratify)
        self.module_ = _network(X.shape[1], self.n_outputs_, *self.architecture_, self.dropout)
        history, state, reason = self._train(torch.from_numpy(X), torch.from_numpy(targets), train, valid)
        self.module_.load_state_dict(state)
        self.module_.eval()
        self.history_ = pd.DataFrame(history)
        self.best_epoch_ = int(self.history_["val_loss"].idxmin()) + 1
        self.stopped_reason_ = reason

    def _train(self, X: torch.Tensor, y: torch.Tensor, train: np.ndarray, valid: np.ndarray):
        optimizer = torch.optim.AdamW(self.module_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        plateau = max(1, self.patience // 3)
        scheduler = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=plateau)
                     if self.scheduler == "plateau" else
                     torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.max_epochs))
        batch = self.batch_size or int(np.clip(2 ** round(math.log2(max(len(train) / 20, 1))), 32, 512))
        generator = torch.Generator().manual_seed(self.seed)
        writer = _writer(self.log_dir)
        best, state, waited, history = math.inf, copy.deepcopy(self.module_.state_dict()), 0, []
        reason = f"reached max_epochs={self.max_epochs}"
        for epoch in range(1, self.max_epochs + 1):
            train_loss = self._epoch(X[train], y[train], optimizer, batch, generator)
            val_loss, val_metric = self._validate(X[valid], y[valid])
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step(val_loss) if self.scheduler == "plateau" else scheduler.step()
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_metric": val_metric, "lr": lr}
            history.append(row)
            self._report(row, writer)
            if val_loss < best - 1e-6:
                best, state, waited = val_loss, copy.deepcopy(self.module_.state_dict()), 0
            else:
                waited += 1
            if waited >= self.patience:
                reason = f"early stopping at epoch {epoch}: no validation improvement for {self.patience} epochs"
                break
            if self.deadline is not None and time.monotonic() > self.deadline:
                reason = f"deadline reached at epoch {epoch}"
                break
        if writer is not None:
            writer.close()
        return history, state, reason

    def _epoch(self, X, y, optimizer, batch: int, generator) -> float:
        self.module_.train()
        order = torch.randperm(len(X), generator=generator)
        total = 0.0
        for start in range(0, len(X), batch):
            rows = order[start:start + batch]
            if len(rows) < 2:  # BatchNorm needs two rows
                continue
            optimizer.zero_grad()
            loss = self._loss(self.module_(X[rows]), y[rows])
            loss.backward()
            if self.clip_norm is not None:
                nn.utils.clip_grad_norm_(self.module_.parameters(), self.clip_norm)
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        return total / len(X)

    @torch.no_grad()
    def _validate(self, X, y) -> tuple[float, float]:
        self.module_.eval()
        output = self.module_(X)
        return float(self._loss(output, y)), self._metric(output, y)

    def _report(self, row: dict, writer) -> None:
        logger.debug("epoch %s", row)
        if writer is not None:
            for key in ("train_loss", "val_loss", "val_metric", "lr"):
                writer.add_scalar(key, row[key], row["epoch"])
        if self.progress is not None:
            self.progress({"event": "epoch", **row})

    @torch.no_grad()
    def _forward(self, X) -> np.ndarray:
        check_is_fitted(self, "module_")
        X = _as_float(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the network was trained on {self.n_features_in_}")
        self.module_.eval()
        return self.module_(torch.from_numpy(X)).numpy()


class TorchMLPClassifier(ClassifierMixin, _TorchMLP):
    """Binary and multiclass classification with cross-entropy; `val_metric` is validation accuracy."""

    def fit(self, X, y) -> TorchMLPClassifier:
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has a single class ({self.classes_[0]!r}); classification needs two or more")
        self.n_outputs_ = len(self.classes_)
        self._fit(X, codes.astype(np.int64), stratify=codes if np.bincount(codes).min() >= 2 else None)
        return self

    def _loss(self, output, y):
        return nn.functional.cross_entropy(output, y)

    def _metric(self, output, y) -> float:
        return float((output.argmax(dim=1) == y).float().mean())

    def predict_proba(self, X) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self._forward(X)), dim=1).numpy().astype(np.float64)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class TorchMLPRegressor(RegressorMixin, _TorchMLP):
    """Regression on a standardised target with mean squared error; `val_metric` is validation RMSE."""

    def fit(self, X, y) -> TorchMLPRegressor:
        y = np.asarray(y, dtype=np.float64)
        self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std() or 1.0)
        self.n_outputs_ = 1
        self._fit(X, ((y - self.y_mean_) / self.y_scale_).astype(np.float32).reshape(-1, 1), stratify=None)
        return self

    def _loss(self, output, y):
        return nn.functional.mse_loss(output, y)

    def _metric(self, output, y) -> float:
        return float(torch.sqrt(nn.functional.mse_loss(output, y))) * self.y_scale_

    def predict(self, X) -> np.ndarray:
        return self._forward(X)[:, 0].astype(np.float64) * self.y_scale_ + self.y_mean_


def auto_architecture(n_rows: int, n_features: int, hidden_layers: int | None = None,
                      width: int | None = None) -> tuple[int, int]:
    """Depth 1-3 growing with the rows; width a power of two near sqrt(rows * features), 32 to 256."""
    depth = hidden_layers or (1 if n_rows < 2_000 else 2 if n_rows < 50_000 else 3)
    units = width or int(np.clip(2 ** round(math.log2(math.sqrt(max(n_rows * n_features, 1)))), 32, 256))
    return depth, units


def _network(n_in: int, n_out: int, depth: int, width: int, dropout: float) -> nn.Sequential:
    layers, size = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout)]
        size = width
    return nn.Sequential(*layers, nn.Linear(size, n_out))


def _as_float(X) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(X, dtype=np.float32))


def _writer(log_dir: str | None):
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package; only then

    return SummaryWriter(log_dir=log_dir)
