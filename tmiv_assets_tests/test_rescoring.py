"""The leading families cross-validated again on a second split before the ensemble is weighted."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from tmiv_assets.ml.automl import estimator as estimator_module
from tmiv_assets.ml.automl.estimator import MIN_RESCORED, AutoML
from tmiv_assets.ml.data.splits import cv_folds
from tmiv_assets.ml.metrics import binary_roc_auc


def test_second_split_scores_are_the_second_fold_models_on_their_own_validation_rows():
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = AutoML(time_budget_s=8, seed=0, n_jobs=1, include=["linear", "lightgbm", "knn"]).fit(X, y)
    assert len(model.fresh_fold_scores_) >= MIN_RESCORED
    encoded = model.best_pipeline_[0].transform(X)  # no target encodings here: the search's rows exactly
    members = {name: models for name, _, models in model.best_pipeline_[-1].members}
    for name, models in members.items():
        oof = np.zeros(len(y))
        for fold_model, (_, valid) in zip(models[5:], cv_folds(y, "binary", 5, seed=1), strict=True):
            oof[valid] = fold_model.predict_proba(encoded[valid])[:, 1]
        assert binary_roc_auc(y.to_numpy() == 1, oof) == pytest.approx(model.fresh_fold_scores_[name])
        assert model.fresh_fold_scores_[name] != model.leaderboard().set_index("model").loc[name, "cv_roc_auc_mean"]
    assert set(members) <= set(model.fresh_fold_scores_)  # weighted among the rescored families only
    assert model.fit_seconds_ <= 8 * 1.1


def test_the_reproducible_mode_and_a_lone_rescored_family_keep_the_search_split(monkeypatch):
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    monkeypatch.setattr(estimator_module, "MIN_RESCORED", 99)
    model = AutoML(time_budget_s=4, seed=0, n_jobs=1, include=["linear", "knn"]).fit(X, y)
    assert model.fresh_fold_scores_ == {} and model.timings_["rescore"] > 0  # tried, then not used
    assert all(len(models) == 5 for _, _, models in model.best_pipeline_[-1].members)

    capped = AutoML(max_trials=2, seed=0, n_jobs=1, include=["linear", "lightgbm"]).fit(X, y)
    assert capped.fresh_fold_scores_ == {}
    assert all(len(models) == 5 for _, _, models in capped.best_pipeline_[-1].members)
