"""PyTorch tabular MLP: seeded training, early stopping, schedules, TensorBoard logs, architecture from data size."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.preprocessing import StandardScaler

from tmiv_assets.ml.automl.neural import TorchMLPClassifier, TorchMLPRegressor, auto_architecture


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X[:300]), np.where(y[:300] == 1, "benign", "malignant")


def test_classifier_is_seeded_and_reports_epochs(cancer, tmp_path):
    X, y = cancer
    events = []
    model = TorchMLPClassifier(seed=1, max_epochs=30, log_dir=str(tmp_path / "tb"), progress=events.append).fit(X, y)
    again = TorchMLPClassifier(seed=1, max_epochs=30).fit(X, y)
    np.testing.assert_allclose(model.predict_proba(X), again.predict_proba(X))
    assert (model.predict(X) == y).mean() > 0.93
    assert [e["epoch"] for e in events] == list(model.history_["epoch"])
    assert {"train_loss", "val_loss", "val_metric", "lr"} <= set(events[0])
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_early_stopping_and_plateau_schedule(cancer):
    X, y = cancer
    model = TorchMLPClassifier(seed=0, max_epochs=200, patience=3, lr=0.05).fit(X, y)
    assert model.stopped_reason_.startswith("early stopping")
    assert len(model.history_) < 200
    assert model.history_["lr"].iloc[-1] <= model.history_["lr"].iloc[0]


def test_regressor_with_cosine_schedule():
    X, y = load_diabetes(return_X_y=True)
    model = TorchMLPRegressor(seed=0, scheduler="cosine", max_epochs=40, lr=3e-3).fit(X * 10, y)
    assert model.history_["lr"].is_monotonic_decreasing
    assert np.corrcoef(model.predict(X * 10), y)[0, 1] > 0.6
    with pytest.raises(ValueError, match="scheduler"):
        TorchMLPRegressor(scheduler="step").fit(X, y)


def test_architecture_grows_with_data():
    assert auto_architecture(500, 10) == (1, 64)
    assert auto_architecture(100_000, 50)[0] == 3
    assert auto_architecture(500, 10, hidden_layers=2, width=32) == (2, 32)
