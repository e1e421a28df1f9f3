"""One metrics module: every metric a search accepts is computed, ranked the right way and gates promotion."""

import math

import dagster as dg
import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tmiv_assets.defs.assets.automl import TrainingConfig, model_candidates, model_leaderboard
from tmiv_assets.defs.assets.data import clean_dataset, raw_dataset
from tmiv_assets.defs.assets.deploy import champion_model, registered_model
from tmiv_assets.defs.assets.features import feature_set
from tmiv_assets.ml.automl.tuning import make_storage
from tmiv_assets.ml.metrics import (
    LOWER_IS_BETTER,
    METRICS,
    IncumbentScore,
    binary_roc_auc,
    decide_promotion,
    is_better,
    oof_score,
    score_model,
)
from tmiv_assets_tests.conftest import resources_for

LOADERS = {"binary": load_breast_cancer, "multiclass": load_iris, "regression": load_diabetes}


def fitted_pair(task: str):
    """A real model and the no-skill baseline, both fitted, with the rows to score them on."""
    X, y = LOADERS[task](return_X_y=True, as_frame=True)
    if task == "regression":
        y = y + 100  # keeps MAPE finite and meaningful
        return make_pipeline(StandardScaler(), Ridge()).fit(X, y), DummyRegressor().fit(X, y), X, y
    return (make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y),
            DummyClassifier(strategy="prior").fit(X, y), X, y)


@pytest.mark.parametrize("task", sorted(METRICS))
def test_held_out_and_out_of_fold_scores_cover_every_metric_and_agree(task):
    model, _, X, y = fitted_pair(task)
    scores = score_model(model, X, y, task)
    assert set(METRICS[task]) <= set(scores)
    predicted = model.predict(X) if task == "regression" else model.predict_proba(X)
    classes = None if task == "regression" else model.classes_
    for metric in METRICS[task]:
        assert oof_score(metric, task, y, predicted, classes) == pytest.approx(scores[metric], rel=1e-6)


@pytest.mark.parametrize("distinct", [12_000, 7])  # continuous scores, and scores with many ties
def test_rank_roc_auc_equals_scikit_learns_ties_included(distinct):
    rng = np.random.default_rng(distinct)
    positive = rng.random(12_000) < 0.3
    scores = np.round(rng.random(12_000) * distinct) / distinct + 0.2 * positive
    assert binary_roc_auc(positive, scores) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
    with pytest.warns(UndefinedMetricWarning, match="Only one class"):  # as scikit-learn: NaN, not an error
        assert np.isnan(binary_roc_auc(np.ones(10, dtype=bool), scores[:10]))


def test_bincount_macro_f1_equals_scikit_learns_with_absent_and_unknown_classes():
    rng = np.random.default_rng(0)
    classes = np.array(["choice1", "choice2", "choice3", "choice4"])
    y = rng.choice(classes[:3], size=3_700, p=[0.6, 0.3, 0.1])  # choice4 is never true
    proba = rng.random((3_700, 4)) * [1.0, 1.0, 0.2, 1.0]  # choice3 is rarely predicted
    proba[:, 1] = 0.0  # choice2 never is
    labels = classes[proba.argmax(axis=1)]
    assert oof_score("f1_macro", "multiclass", y, proba, classes) == pytest.approx(
        f1_score(y, labels, average="macro"), abs=1e-12)
    y[:5] = "unseen"  # a label outside `classes` counts as a class of its own, F1 zero
    assert oof_score("f1_macro", "multiclass", y, proba, classes) == pytest.approx(
        f1_score(y, labels, average="macro"), abs=1e-12)


@pytest.mark.parametrize(("task", "metric"), [(t, m) for t in sorted(METRICS) for m in METRICS[t]])
def test_promotion_prefers_the_better_model_in_every_metric(task, metric):
    model, baseline, X, y = fitted_pair(task)
    good, bad = score_model(model, X, y, task)[metric], score_model(baseline, X, y, task)[metric]
    assert is_better(metric, good, bad) and (good < bad) is (metric in LOWER_IS_BETTER)
    assert decide_promotion(metric, good, IncumbentScore(version=1, score=bad)).promote
    kept = decide_promotion(metric, bad, IncumbentScore(version=1, score=good))
    assert not kept.promote and "is not better by the margin 0" in kept.reason
    gain = abs(good - bad)  # the gate's margin: a better model must also clear it
    assert decide_promotion(metric, good, IncumbentScore(version=1, score=bad), margin=gain * 0.99).promote
    assert not decide_promotion(metric, good, IncumbentScore(version=1, score=bad), margin=gain * 1.01).promote


def test_promotion_of_the_first_model_and_of_an_unscorable_champion():
    assert decide_promotion("rmse", 3.0, IncumbentScore(version=None, score=None)).promote
    decision = decide_promotion("rmse", 3.0, IncumbentScore(version=4, score=None, error="KeyError: 'age'"))
    assert not decision.promote and "kept champion v4" in decision.reason and "KeyError: 'age'" in decision.reason
    assert decide_promotion("rmse", 3.0, IncumbentScore(version=4, score=3.0)).promote  # a tie promotes the newer


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """titanic and cps1985 ingested, cleaned and featurized once; each test then trains on them."""
    home = tmp_path_factory.mktemp("metrics") / "tmiv"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["titanic", "cps1985"])
        for dataset in ("titanic", "cps1985"):
            assert dg.materialize([raw_dataset, clean_dataset, feature_set], resources=resources_for(home),
                                  partition_key=dataset, instance=instance).success
        yield home, instance


@pytest.mark.parametrize(("dataset", "metric"), [("titanic", m) for m in METRICS["binary"]]
                         + [("cps1985", m) for m in METRICS["regression"]])
def test_every_configurable_metric_trains_gates_and_promotes(prepared, dataset, metric):
    home, instance = prepared
    config = TrainingConfig(metric=metric, preset="fast", include=["linear", "lightgbm"], max_trials=1,
                            time_budget_s=600, n_jobs=1)
    result = dg.materialize([model_candidates, model_leaderboard, registered_model, champion_model],
                            resources=resources_for(home), partition_key=dataset, instance=instance,
                            run_config=dg.RunConfig(ops={"model_candidates": config}), raise_on_error=False)
    board = {k: v.value for k, v in result.asset_materializations_for_node("model_leaderboard")[0].metadata.items()}
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["beats_baseline"].passed and math.isfinite(board[f"test_{metric}"])
    gate = {k: v.value for k, v in checks["beats_champion"].metadata.items()}
    if not np.isnan(gate["champion"]):  # scored like for like, and the rule follows the metric's direction
        assert checks["beats_champion"].passed is not is_better(metric, gate["champion"], gate["new"])
    else:
        assert checks["beats_champion"].passed and "first model" in gate["reason"]
    assert result.success is checks["beats_champion"].passed  # a rejected model blocks champion_model
    assert isinstance(pd.Series(board).get(f"test_{metric}"), float)


def test_a_multi_objective_search_shows_its_pareto_front_in_the_ui(prepared):
    home, instance = prepared
    config = TrainingConfig(preset="fast", include=["linear", "lightgbm"], max_trials=4, time_budget_s=600, n_jobs=1,
                            sampler="nsga2", nsga2_population_size=4, secondary_objective="latency",
                            pareto_tolerance=0.01)
    result = dg.materialize([model_candidates], resources=resources_for(home), partition_key="titanic",
                            instance=instance, run_config=dg.RunConfig(ops={"model_candidates": config}))
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("model_candidates")[0].metadata.items()}
    assert "latency_ms_per_1k_rows" in metadata["pareto_front"] and "| True" in metadata["pareto_front"]
    assert "![Pareto front](data:image/png;base64," in metadata["pareto_plot"]


def test_search_workers_run_as_parallel_steps_sharing_the_runs_studies(prepared):
    home, instance = prepared
    config = TrainingConfig(preset="fast", include=["linear", "lightgbm"], max_trials=3, time_budget_s=600, n_jobs=1,
                            search_workers=2)
    result = dg.materialize([model_candidates], resources=resources_for(home), partition_key="titanic",
                            instance=instance, run_config=dg.RunConfig(ops={"model_candidates": config}))
    steps = {e.step_key for e in result.get_step_success_events()}
    assert {"model_candidates.search_worker[0]", "model_candidates.search_worker[1]"} <= steps
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("model_candidates")[0].metadata.items()}
    assert metadata["search_workers"] == 2
    journal = home / "optuna" / f"{result.run_id}.log"  # this run's studies, shared by both steps
    assert journal.exists()
    study = f"titanic-{result.run_id}-binary-lightgbm"
    trials = optuna.load_study(study_name=study, storage=make_storage(journal)).trials
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}  # both steps ran trials of the one study
    assert metadata["trials"] > len([t for t in trials if t.state.is_finished()])  # and the linear study's
