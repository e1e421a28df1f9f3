"""AutoML engine: search, ensembles, tuners and evaluation on small bundled or hand-made data."""

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest
from catboost import CatBoostClassifier
from lightgbm import LGBMClassifier
from sklearn.datasets import load_breast_cancer, load_diabetes, make_classification
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import Lasso, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info

from tmiv_assets.ml.automl import estimator as estimator_module
from tmiv_assets.ml.automl import search as search_module
from tmiv_assets.ml.automl.catalog import (
    BOOSTING_ROUNDS,
    CATALOG,
    XGBLabelClassifier,
    families_for,
    family_named,
)
from tmiv_assets.ml.automl.ensembles import caruana_selection, make_bagging, make_blending, make_stacking
from tmiv_assets.ml.automl.estimator import AutoML
from tmiv_assets.ml.automl.evaluation import evaluation_plots, fit_baseline, training_histories
from tmiv_assets.ml.automl.fitting import (
    FIRST_CHUNK,
    SOLVER_CHUNK,
    DeadlineReached,
    best_rounds,
    can_grow_on,
    fit_within,
    grows_from,
    model_size,
)
from tmiv_assets.ml.automl.tuning import COSTS, make_sampler, make_storage, study_plots
from tmiv_assets.ml.features.preprocessing import make_preprocessor
from tmiv_assets.ml.metrics import score_model


def mixed_frame(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Numeric, categorical, boolean and datetime columns with missing values; string labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    X = pd.DataFrame({
        "x": np.where(rng.random(n) < 0.1, np.nan, x),
        "colour": pd.Series(colour).where(rng.random(n) > 0.1),
        "flag": rng.random(n) < 0.5,
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
        "empty": np.nan,
    })
    signal = x + (colour == "red") * 1.5 + rng.normal(scale=0.5, size=n)
    return X, pd.Series(np.where(signal > 0.5, "yes", "no"), name="label")


@pytest.fixture(scope="module")
def fitted_mixed():
    X, y = mixed_frame()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    events = []
    started = time.monotonic()
    model = AutoML(time_budget_s=8, seed=0, n_jobs=1, progress=events.append).fit(X_train, y_train)
    return model, X_test, y_test, events, time.monotonic() - started


def test_automl_fits_raw_mixed_frame(fitted_mixed):
    model, X_test, y_test, _, seconds = fitted_mixed
    assert (model.task_, model.metric_) == ("binary", "roc_auc")
    assert [name for name, _ in model.best_pipeline_.steps] == ["preprocess", "estimator"]
    assert (model.cv_strategy_, model.final_kind_) == ("5-fold", "fold models of the search")  # no refit needed
    proba = model.predict_proba(X_test)
    assert proba.shape == (len(X_test), 2) and np.allclose(proba.sum(axis=1), 1)
    assert set(model.predict(X_test)) <= {"yes", "no"}
    assert score_model(model.best_pipeline_, X_test, y_test, "binary")["roc_auc"] > 0.8


def test_leaderboard_and_trials_record_search(fitted_mixed):
    model, *_ = fitted_mixed
    board = model.leaderboard()
    assert list(board.columns[:4]) == ["model", "cv_roc_auc_mean", "cv_roc_auc_std", "fit_seconds"]
    assert board["cv_roc_auc_mean"].dropna().is_monotonic_decreasing
    assert abs(sum(model.weights_.values()) - 1) < 1e-9
    assert set(model.weights_) <= set(board["model"])
    pruned = model.trials_[model.trials_["state"] == "PRUNED"]
    assert pruned["pruned_reason"].str.startswith("fold").all()


def test_progress_reports_each_trial(fitted_mixed):
    model, _, _, events, _ = fitted_mixed
    assert len(events) == len(model.trials_)
    assert [e["trial"] for e in events] == list(range(1, len(events) + 1))
    assert {"family", "state", "value", "best", "best_overall", "eta_s", "n_trials", "pruned_reason"} <= set(events[0])
    assert events[-1]["n_trials"] >= events[-1]["trial"]


def test_same_seed_same_leaderboard():
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X, y = X.head(200), y.head(200)

    def board():
        model = AutoML(time_budget_s=60, seed=3, n_jobs=1, include=["linear", "lightgbm"], max_trials=3).fit(X, y)
        return model.leaderboard()

    first, second = board(), board()
    assert first["model"].tolist() == second["model"].tolist()
    np.testing.assert_allclose(first["cv_rmse_mean"], second["cv_rmse_mean"])
    assert (first["trials"] == [4, 5]).all() or set(first["trials"]) <= {4, 5}


@pytest.mark.parametrize("ensemble", ["voting", "stacking", "blending", "bagging"])
def test_other_ensembles_predict(ensemble):
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X, y = X.iloc[:150, :8], y.iloc[:150]
    model = AutoML(time_budget_s=20, seed=0, n_jobs=1, preset="fast", ensemble=ensemble, max_trials=1,
                   include=["linear", "lightgbm", "hist_gradient_boosting"]).fit(X, y)
    # the top three (bagging: the best one); a family can lose its only trial to the clock on a busy machine
    if ensemble == "bagging":
        assert type(model.best_pipeline_[-1]).__name__ == "BaggingClassifier"
    else:
        assert len(model.weights_) >= 2
    assert model.predict_proba(X).shape == (150, 2)
    assert (model.predict(X) == y).mean() > 0.85


@pytest.mark.parametrize("sampler", ["nsga2", "gp", "grid", "random"])
def test_samplers_drive_the_search(sampler):
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = AutoML(time_budget_s=30, preset="fast", sampler=sampler, include=["linear"], max_trials=4, n_jobs=1,
                   sampler_options={"population_size": 4, "mutation_prob": 0.2} if sampler == "nsga2" else None)
    model.fit(X.head(150), y.head(150))
    study = model.studies_["linear"]
    assert type(study.sampler).__name__.lower().startswith(sampler[:2])
    assert 2 <= len(study.trials) <= 5


def test_study_shared_through_journal_storage(tmp_path):
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    storage = str(tmp_path / "studies.log")
    for _ in range(2):  # a second process would do the same with the same storage and study names
        AutoML(time_budget_s=30, preset="fast", include=["linear"], max_trials=2, n_jobs=1, storage=storage,
               study_prefix="shared").fit(X.head(100), y.head(100))
    study = optuna.load_study(study_name="shared-regression-linear", storage=make_storage(storage))
    assert len(study.trials) == 2 * 3
    assert set(study_plots(study)) == {"history", "param_importance"}


@pytest.mark.parametrize(("X", "y", "kwargs", "message"), [
    (pd.DataFrame({"a": range(20)}), pd.Series(["x"] * 20), {}, "single class"),
    (pd.DataFrame({"a": range(6)}), pd.Series([0.5, 1.5, 2.5, 3.1, 4.2, 5.3]), {}, "fewer than the 10"),
    (pd.DataFrame({"a": [np.nan] * 20}), pd.Series([0, 1] * 10), {}, "entirely missing"),
    (pd.DataFrame({"a": range(20)}), pd.Series([0, 1] * 10), {"metric": "rmse"}, "does not fit task 'binary'"),
    (pd.DataFrame({"a": range(20)}), pd.Series([0, 1] * 10), {"time_budget_s": 1e-6}, "too small to fit any model"),
    (pd.DataFrame({"a": range(20)}), pd.Series([0] * 19 + [1]), {}, "class 1 has 1 row"),
    (pd.DataFrame({"a": range(20)}), pd.Series([0, 1] * 10), {"sampler": "annealing"}, "sampler 'annealing'"),
])
def test_bad_input_names_the_cause(X, y, kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoML(n_jobs=1, **kwargs).fit(X, y)


def test_caruana_selection_prefers_complementary_members():
    y = np.array([0, 1, 0, 1, 0, 1], dtype=float)
    predictions = {"good_a": y + np.array([0.4, 0, 0, 0, 0, 0]), "good_b": y - np.array([0, 0.4, 0, 0, 0, 0]),
                   "bad": 1 - y}
    selection = caruana_selection(predictions, lambda p: -np.abs(p - y).max(), rounds=5)
    assert set(selection.weights) == {"good_a", "good_b"}
    assert selection.score == pytest.approx(-0.2) and max(selection.history) == selection.score


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_blending_stacking_bagging(task):
    X, y = load_breast_cancer(return_X_y=True) if task == "binary" else load_diabetes(return_X_y=True)
    X, y = X[:200], y[:200]
    base = [(f.name, f.build({}, task, 0, 1)) for f in CATALOG if f.name in ("linear", "decision_tree")]
    for model in (make_blending(base, task), make_stacking(base, task, cv=3), make_bagging(base[1][1], task, 5)):
        predicted = model.fit(X, y).predict(X)
        assert predicted.shape == (200,)
        assert (predicted == y).mean() > 0.8 if task == "binary" else np.corrcoef(predicted, y)[0, 1] > 0.5


def test_preprocessor_expands_datetimes_and_drops_empty_columns():
    X, _ = mixed_frame(40)
    names = list(make_preprocessor().fit(X).get_feature_names_out())
    assert {"when_year", "when_month", "when_day_of_week", "when_month_sin", "x", "flag"} <= set(names)
    assert not any(n.startswith("empty") for n in names)


def test_xgboost_family_accepts_string_labels():
    X = np.random.default_rng(0).normal(size=(60, 3))
    y = np.where(X[:, 0] > 0, "up", "down")
    model = XGBLabelClassifier(n_estimators=10).fit(X, y)
    assert list(model.classes_) == ["down", "up"]
    assert (model.predict(X) == y).mean() > 0.9


def test_presets_choose_families():
    assert [f.name for f in families_for("binary", "fast")] == ["lightgbm", "linear", "hist_gradient_boosting"]
    assert "mlp" in {f.name for f in families_for("regression", "best_quality")}
    assert "naive_bayes" not in {f.name for f in families_for("regression", "best_quality")}
    # an SVM's fit cannot be stopped: it runs right after LightGBM's defaults only where it is nearly free
    small, large = (families_for("multiclass", "balanced", n_rows=rows) for rows in (1_500, 4_000))
    assert [f.name for f in small[:3]] == ["lightgbm", "svm", "linear"] and small[3:] == [
        f for f in large if f.name != "svm"][2:]
    assert large[-1].name == "svm" and [f.name for f in large[:2]] == ["lightgbm", "linear"]
    with pytest.raises(ValueError, match="unknown model families"):
        families_for("binary", "fast", include=["tabnet"])
    with pytest.raises(ValueError, match="grid"):
        make_sampler("grid")


def test_evaluation_plots_and_baseline(fitted_mixed):
    model, X_test, y_test, _, _ = fitted_mixed
    assert set(evaluation_plots(model.best_pipeline_, X_test, y_test, "binary", positive_class="yes")) == {
        "confusion_matrix", "roc", "precision_recall", "calibration"}
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    baseline = fit_baseline(X, y, "regression")
    assert np.allclose(baseline.predict(X.head(3)), y.mean())
    assert set(evaluation_plots(baseline, X.head(60), y.head(60), "regression")) == {"residuals", "predicted_vs_actual"}


def test_time_ordered_cv_pinned_params_scaler_and_training_curves(tmp_path):
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X, y = X.iloc[:200, :6], y.iloc[:200]
    times = pd.Series(pd.date_range("2024-01-01", periods=200, freq="D"))
    model = AutoML(time_budget_s=30, seed=0, n_jobs=1, preset="fast", include=["mlp"], max_trials=1, n_folds=3,
                   scaler="robust", pinned_params={"mlp": {"max_epochs": 7, "patience": 100}},
                   log_dir=str(tmp_path / "tensorboard")).fit(X, y, times=times)
    assert model.cv_strategy_ == "time-ordered 3-fold" and model.final_kind_ == "refitted on all training rows"
    for train, valid in model.folds_:
        assert times[train].max() < times[valid].min()
    histories = training_histories(model.best_pipeline_)
    assert [len(h) for h in histories.values()] == [7]  # the pinned epochs reached the refit
    assert type(model.best_pipeline_.named_steps["preprocess"]["encode"].scaler_).__name__ == "RobustScaler"
    assert any((tmp_path / "tensorboard" / "mlp").iterdir())
    assert any(name.startswith("training_curve_") for name in evaluation_plots(model.best_pipeline_, X, y, "binary"))


def test_a_pooled_high_cardinality_column_reaches_the_models_target_encoded_except_on_time_ordered_rows():
    # 60 cities on 60 price levels, 75 training rows each: one-hot keeps 29 and pools the rest into one column
    rng = np.random.default_rng(0)
    level = rng.integers(0, 60, 6000)
    X = pd.DataFrame({"city": [f"c{k}" for k in level], "rooms": rng.integers(1, 6, 6000).astype(float)})
    y = pd.Series(level * 10.0 + X["rooms"] * 5 + rng.normal(size=6000))
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    settings = {"task": "regression", "time_budget_s": 30, "seed": 0, "n_jobs": 1, "include": ["lightgbm"],
                "max_trials": 0, "n_folds": 3}
    shuffled = AutoML(**settings).fit(X_train, y_train)
    names = list(shuffled.preprocessor_.get_feature_names_out())
    assert "city_infrequent" in names and names[-1] == "city_target"
    times = pd.Series(pd.date_range("2024-01-01", periods=len(X_train), freq="h"))
    ordered = AutoML(**settings).fit(X_train, y_train, times=times)
    assert "city_target" not in ordered.preprocessor_.get_feature_names_out()
    # LightGBM's defaults on the encoded cities against the same on pooled ones
    errors = [score_model(m.best_pipeline_, X_test, y_test, "regression")["rmse"] for m in (shuffled, ordered)]
    assert errors[0] < 0.5 * errors[1], errors


SLOW_LIGHTGBM = {"n_estimators": 500_000, "learning_rate": 0.0005, "num_leaves": 255, "min_child_samples": 1}


def test_budget_is_a_contract_a_slow_family_is_stopped_not_awaited():
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    started = time.monotonic()
    # max_trials: the reproducible mode, where no model is time-boxed, so the slow family meets the hard deadline
    model = AutoML(time_budget_s=6, seed=0, n_jobs=1, include=["lightgbm", "linear"], max_trials=50,
                   pinned_params={"lightgbm": SLOW_LIGHTGBM}).fit(X, y)
    assert time.monotonic() - started <= 6 * 1.1
    lightgbm = model.trials_[model.trials_["family"] == "lightgbm"]
    assert (lightgbm["state"] == "PRUNED").all() and lightgbm["pruned_reason"].str.contains("deadline").all()
    assert model.weights_ == {"linear": 1.0}
    board = model.leaderboard().set_index("model")
    assert board.loc["lightgbm", "why_stopped"].startswith("no trial finished")
    assert model.predict_proba(X.head(3)).shape == (3, 2)


def test_a_family_needing_more_rounds_than_its_time_is_time_boxed_not_dropped():
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    started = time.monotonic()
    model = AutoML(time_budget_s=6, seed=0, n_jobs=1, include=["lightgbm", "linear"],
                   pinned_params={"lightgbm": SLOW_LIGHTGBM}).fit(X, y)
    assert time.monotonic() - started <= 6 * 1.1
    lightgbm = model.trials_[model.trials_["family"] == "lightgbm"]
    trained = lightgbm[lightgbm["state"] == "COMPLETE"]
    assert len(trained) >= 1  # 500,000 rounds at a learning rate of 0.0005 never converge: each fold stopped growing
    assert trained["time_boxed"].str.contains(r"fold 5/5: stopped growing at its time share after \d+ rounds").all()
    board = model.leaderboard().set_index("model")
    assert np.isfinite(board.loc["lightgbm", "cv_roc_auc_mean"])
    # its first trial took 40% of the search; what is left cannot double that, so it is not tuned
    assert board.loc["lightgbm", "why_stopped"].startswith("first trial time-boxed at")


@pytest.mark.parametrize(("make", "size"), [
    (lambda size: LGBMClassifier(n_estimators=size, learning_rate=0.0005, verbose=-1), 500_000),
    (lambda size: XGBLabelClassifier(n_estimators=size, learning_rate=0.0005, n_jobs=1), 500_000),
    (lambda size: CatBoostClassifier(iterations=size, learning_rate=0.0005, verbose=False, thread_count=1,
                                        allow_writing_files=False), 500_000),
    (lambda size: RandomForestClassifier(n_estimators=size, random_state=0), 5000)])
def test_a_model_stops_growing_at_its_time_share_and_is_kept(make, size):
    X, y = load_breast_cancer(return_X_y=True)
    now = time.monotonic()
    model = fit_within(make(size), X[:400], y[:400], X[400:], y[400:], deadline=now + 60, grow_until=now + 0.5)
    assert time.monotonic() - now < 5
    assert 0 < model_size(model) < size and model.time_boxed_.endswith(f"after {model_size(model)} rounds")
    assert model.predict_proba(X[400:]).shape == (len(X) - 400, 2)


def test_library_defaults_are_time_boxed_only_when_their_rounds_are_a_ceiling():
    X, y = load_breast_cancer(return_X_y=True)
    now = time.monotonic()
    default = fit_within(LGBMClassifier(verbose=-1), X[:400], y[:400], X[400:], y[400:], deadline=now + 60,
                         grow_until=now)
    assert model_size(default) == 100 and not hasattr(default, "time_boxed_")
    short = fit_within(LGBMClassifier(verbose=-1), X[:400], y[:400], X[400:], y[400:], deadline=now + 60,
                       grow_until=now, any_size=True)
    assert model_size(short) < 100 and short.time_boxed_.endswith(f"after {model_size(short)} rounds")
    assert best_rounds(short) == model_size(short)  # a refit on all rows grows as many rounds
    whole = fit_within(LGBMClassifier(n_estimators=1, verbose=-1), X[:400], y[:400], X[400:], y[400:],
                       deadline=now + 60, grow_until=now, any_size=True)
    assert model_size(whole) == 1 and not hasattr(whole, "time_boxed_")  # its last round ended past the clock
    forest = fit_within(RandomForestClassifier(n_estimators=5000, random_state=0), X, y, deadline=now + 60,
                        grow_until=now)
    assert model_size(forest) == FIRST_CHUNK  # a forest grows one first chunk whatever the clock says
    assert best_rounds(forest) == FIRST_CHUNK  # so the refit on all rows grows as many trees, not 5,000


def test_a_forest_on_a_machine_that_slows_mid_fit_still_stops_growing_before_its_deadline(monkeypatch):
    X, y = load_breast_cancer(return_X_y=True)
    fit, pace = ExtraTreesClassifier.fit, []

    def slowing(model, *args, **kwargs):  # other work starts after the first chunk: each tree takes 1.8x longer
        held = len(getattr(model, "estimators_", []))
        fit(model, *args, **kwargs)
        time.sleep((0.05 if not pace else 0.09) * (len(model.estimators_) - held))
        pace.append(len(model.estimators_) - held)
        return model

    monkeypatch.setattr(ExtraTreesClassifier, "fit", slowing)
    now = time.monotonic()
    model = fit_within(ExtraTreesClassifier(n_estimators=500, random_state=0), X, y, deadline=now + 2.0,
                       grow_until=now + 1.7)
    assert time.monotonic() - now < 2.0 and model.time_boxed_  # kept, not lost to a chunk sized at the old pace
    assert pace[0] == FIRST_CHUNK


@pytest.mark.parametrize("make_model", [
    lambda: LGBMClassifier(verbose=-1, n_jobs=1),
    lambda: XGBLabelClassifier(n_estimators=100, n_jobs=1),
    lambda: CatBoostClassifier(iterations=100, learning_rate=0.1, thread_count=1, verbose=0, random_seed=0),
    lambda: RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1),
    lambda: HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0)],
    ids=["lightgbm", "xgboost", "catboost", "random_forest", "hist_gradient_boosting"])
def test_a_model_stopped_short_goes_on_to_its_configured_size(make_model):
    X, y = load_breast_cancer(return_X_y=True)
    now = time.monotonic()
    short = fit_within(make_model(), X[:400], y[:400], X[400:], y[400:], deadline=now + 60, grow_until=now,
                       any_size=True)
    held, before = model_size(short), short.predict_proba(X[400:])
    assert 0 < held < 100 and can_grow_on(short)
    grown = make_model()
    grows_from(grown, short)
    fit_within(grown, X[:400], y[:400], X[400:], y[400:], deadline=time.monotonic() + 60, init_model=short)
    assert model_size(grown) == 100 and not hasattr(grown, "time_boxed_")  # what it had and the rest, not 100 more
    whole = fit_within(make_model(), X[:400], y[:400], X[400:], y[400:], deadline=time.monotonic() + 60)
    # going on from the short model is training the whole model (up to floating-point sums)
    np.testing.assert_allclose(grown.predict_proba(X[400:]), whole.predict_proba(X[400:]), atol=1e-3)
    # the trial it went on from keeps its own model
    assert model_size(short) == held and np.array_equal(short.predict_proba(X[400:]), before)


def test_lightgbm_defaults_come_first_and_the_result_is_never_below_them():
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = AutoML(time_budget_s=60, seed=0, n_jobs=1, preset="fast", max_trials=3).fit(X, y)  # the cap ends it early
    first = model.trials_.iloc[0]
    assert (first["family"], first["params"]) == ("lightgbm", "{}")
    default_rmse = model.studies_["lightgbm"].trials[0].value
    assert model.ensemble_score_ <= default_rmse  # out-of-fold RMSE of the final model
    assert model.final_kind_ == "refitted on all training rows"  # 3 folds (fast preset): refit on all rows


def fit_with_slow_refits(monkeypatch, cheap: set[str]) -> tuple[AutoML, float]:
    """A 3-fold fit (3 folds plan a refit on all rows) in which every member's refit but those in `cheap` is
    expected to take far longer than the 6 s budget; the model and its wall seconds."""
    merge_outcomes = estimator_module.merge_outcomes

    def slow_refits(outcomes, metric):
        results, reasons = merge_outcomes(outcomes, metric)
        return [result if result.family.name in cheap else replace(result, fold_seconds=1e3)
                for result in results], reasons

    monkeypatch.setattr(estimator_module, "merge_outcomes", slow_refits)
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    started = time.monotonic()
    model = AutoML(time_budget_s=6, seed=0, n_jobs=1, n_folds=3, max_trials=4,
                   include=["lightgbm", "linear", "naive_bayes"]).fit(X, y)
    seconds = time.monotonic() - started
    assert score_model(model, X, y, "binary")["roc_auc"] > 0.95
    bag = model.best_pipeline_.named_steps["estimator"]
    assert {name: weight for name, weight, _ in bag.members} == model.weights_
    assert {name: len(models) for name, _, models in bag.members} == {
        name: 1 if name in cheap else 3 for name in model.weights_}
    return model, seconds


def test_refits_that_would_all_overrun_the_budget_give_way_to_the_whole_selections_fold_models(monkeypatch):
    model, seconds = fit_with_slow_refits(monkeypatch, cheap=set())
    assert seconds <= 6 * 1.1
    # the old plan refitted the heaviest member alone and dropped the others
    assert model.final_kind_ == "fold models of the search" and model.timings_["final_model"] < 0.5
    assert len(model.weights_) > 1 and sum(model.weights_.values()) == pytest.approx(1.0)


def test_a_refit_too_slow_for_the_budget_leaves_that_member_its_fold_models_and_the_others_are_refitted(monkeypatch):
    model, seconds = fit_with_slow_refits(monkeypatch, cheap={"linear"})
    assert seconds <= 6 * 1.1
    assert "linear" in model.weights_ and len(model.weights_) > 1  # the old plan dropped every other member
    assert model.final_kind_.startswith("linear refitted on all training rows; ")


@pytest.mark.parametrize(("weights", "fold_models", "refits", "kept"), [
    ({"lightgbm": 0.6, "xgboost": 0.25, "catboost": 0.15}, True, {"lightgbm"}, None),
    ({"xgboost": 0.7, "lightgbm": 0.3}, True, {"lightgbm"}, None),  # the heaviest keeps its fold models
    ({"lightgbm": 0.6, "xgboost": 0.25, "catboost": 0.15}, False, {"lightgbm"}, {"lightgbm": 1.0}),
    ({"xgboost": 0.7, "lightgbm": 0.3}, False, {"xgboost"}, {"xgboost": 1.0})])  # nothing else stands in for it
def test_the_members_whose_refit_fits_are_refitted_and_the_others_keep_their_fold_models_when_they_have_them(
        weights, fold_models, refits, kept):
    y = pd.Series(np.linspace(0.0, 1.0, 20))
    seconds = {"lightgbm": 1.0, "xgboost": 50.0, "catboost": 50.0}  # a 10 s budget affords LightGBM's refit only
    results = [search_module.FamilyResult(family_named(name), {}, 0.1, 0.0, 5 * cost, cost, y.to_numpy(),
                                          [object()] if fold_models else [], {}) for name, cost in seconds.items()]
    model = AutoML(time_budget_s=10, ensemble="caruana")
    model.task_, model.metric_, model.classes_, model.weights_ = "regression", "rmse", None, dict(weights)
    model.folds_ = [(np.arange(16), np.arange(16, 20))]  # a holdout: a refit costs 1.4x a fold
    assert model._plan_refit(results, y, started=time.monotonic()) == refits
    assert model.weights_ == (kept or weights)


def test_on_two_folds_tuning_ends_in_time_for_the_leading_families_refits_on_all_rows(monkeypatch):
    reserves = []
    search_families = estimator_module.search_families

    def search_kept(context, families, tuned, started, deadline, large, refit_start, **options):
        reserves.append(refit_start)
        no_time_left = None if refit_start is None else (lambda leaders: started)  # the leaders' refits use it all
        return search_families(context, families, tuned, started, deadline, large, no_time_left, **options)

    monkeypatch.setattr(estimator_module, "search_families", search_kept)
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    included = ["lightgbm", "linear", "naive_bayes"]
    model = AutoML(time_budget_s=8, seed=0, n_jobs=1, n_folds=2, include=included).fit(X, y)
    assert callable(reserves[-1]) and model.cv_strategy_ == "2-fold"
    board = model.leaderboard().set_index("model")
    assert (board["trials"] == 1).all()  # the first pass only: no tuning trial
    assert board.loc["lightgbm", "why_stopped"] == (
        "not tuned: the rest of the budget is kept for refitting the leading families on all rows")
    assert model.final_kind_ == "refitted on all training rows"  # every member: the time went to their refits
    small = AutoML(time_budget_s=3, seed=0, n_jobs=1, include=included).fit(X.iloc[:300], y.iloc[:300])
    # 5 folds: the final model bags the fold models, nothing is refitted; the reserve is the second split's
    assert reserves[-1].__qualname__.startswith("AutoML._rescore_start")
    assert small.leaderboard().set_index("model").loc["lightgbm", "why_stopped"] == (
        "not tuned: the rest of the budget is kept for cross-validating the leading families again on a second split")

    results = [search_module.FamilyResult(family_named(name), {}, 0.9, 0.0, 2 * cost, cost, np.zeros(20), [], {})
               for name, cost in (("catboost", 2.0), ("lightgbm", 0.5), ("linear", 0.1))]
    model.folds_ = [(np.arange(10, 20), np.arange(10)), (np.arange(10), np.arange(10, 20))]  # fold models: half
    started = time.monotonic()
    reserved = sum(model._refit_cost(r.fold_seconds) for r in results[:estimator_module.REFIT_RESERVED_LEADERS])
    assert reserved == pytest.approx(2.5 / 0.5 ** 1.5)  # the two leaders' folds, grown to all rows
    assert model._refit_start(started)(results) == pytest.approx(started + 8 - reserved)


def test_lightgbm_defaults_may_take_the_floor_share_the_other_families_twice_a_fair_one(monkeypatch):
    deadlines, shares = [], {}
    search_families, run = estimator_module.search_families, search_module._FamilySearch.run

    def deadline_kept(context, families, tuned, started, deadline, large, refit_start, **options):
        deadlines.append(deadline)
        return search_families(context, families, tuned, started, deadline, large, refit_start, **options)

    def share_kept(search, n_trials, limit, study_total=None):  # of the search time left, at each first trial
        now = time.monotonic()
        shares.setdefault(search.family.name, (limit - now) / (deadlines[0] - now))
        return run(search, n_trials, limit, study_total)

    monkeypatch.setattr(estimator_module, "search_families", deadline_kept)
    monkeypatch.setattr(search_module._FamilySearch, "run", share_kept)
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    included = {"lightgbm", "linear", "naive_bayes", "knn", "decision_tree", "random_forest"}
    AutoML(time_budget_s=4, seed=0, n_jobs=1, include=sorted(included)).fit(X.iloc[:300], y.iloc[:300])
    families = [family.name for family in CATALOG if family.name in included]
    assert families[0] == "lightgbm" and list(shares)[:len(families)] == families  # the first pass, in catalog order
    assert shares["lightgbm"] == pytest.approx(search_module.FLOOR_SHARE, abs=0.01)  # not twice a fair share: 2/6
    for position, name in enumerate(families[1:], start=1):
        fair = search_module.FIRST_PASS_FAIR_SHARES / (len(families) - position)
        assert shares[name] <= min(search_module.FIRST_PASS_SHARE, fair) + 0.01, (name, shares[name])


def test_after_a_holdout_tuning_ends_for_the_refit_only_when_the_leaders_refit_fits():
    model = AutoML(time_budget_s=30)
    model.folds_ = [(np.arange(80), np.arange(80, 100))]
    tuning_ends = model._refit_or_search(started=0.0)
    cheap, costly = SimpleNamespace(fold_seconds=1.0), SimpleNamespace(fold_seconds=10.0)
    assert tuning_ends([cheap, costly]) == 30 * estimator_module.SEARCH_SHARE  # a 1.4 s refit fits the last 6 s
    assert tuning_ends([costly, cheap]) == 30  # a 14 s one does not: no refit, the search runs to its own end


def test_on_large_data_no_family_starts_past_the_first_pass_share_and_the_rest_is_tuning(monkeypatch):
    searches, first_runs = [], {}
    search_families, run = estimator_module.search_families, search_module._FamilySearch.run

    def search_kept(context, families, tuned, started, deadline, large, refit_start, **options):
        searches.append((time.monotonic(), deadline, large, refit_start))
        return search_families(context, families, tuned, started, deadline, large, refit_start, **options)

    def first_run_kept(search, n_trials, limit, study_total=None):
        first_runs.setdefault(search.family.name, time.monotonic())
        return run(search, n_trials, limit, study_total)

    monkeypatch.setattr(estimator_module, "search_families", search_kept)
    monkeypatch.setattr(search_module._FamilySearch, "run", first_run_kept)
    features, target = make_classification(n_samples=8000, n_features=40, n_informative=12, random_state=0)
    X, y = pd.DataFrame(features).add_prefix("x"), pd.Series(target)
    model = AutoML(time_budget_s=5, seed=0, n_jobs=1).fit(X, y)  # 320,000 cells in 5 s: a holdout, large data
    (begun, deadline, large, refit_start), = searches
    assert large and model.cv_strategy_ == "holdout"
    # fold models that saw 80% of the rows: the search keeps its time unless the leader's refit fits after it
    assert refit_start([]) == pytest.approx(deadline + 5 * (1 - estimator_module.SEARCH_SHARE_NO_REFIT))
    cutoff = begun + search_module.FIRST_PASS_STARTS * (deadline - begun)
    assert all(when <= cutoff + 0.05 for when in first_runs.values()), (first_runs, cutoff)
    board = model.leaderboard().set_index("model")
    not_reached = board.index[board["why_stopped"].str.startswith("not reached")]
    assert len(not_reached) >= 1 and not set(not_reached) & set(first_runs)
    assert board.loc["lightgbm", "why_stopped"].startswith("tuned: its")  # the time left went to tuning
    assert model.fit_seconds_ <= 5 * 1.1


def test_a_tuned_family_that_stops_improving_hands_its_time_to_the_families_still_improving(monkeypatch):
    patience = 5  # per sampled parameter; the linear model samples one, C (fewer than 20, so a slow machine gets there)
    monkeypatch.setattr(search_module, "PLATEAU_TRIALS_PER_PARAMETER", patience)
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = AutoML(time_budget_s=6, seed=0, n_jobs=1, include=["linear", "lightgbm"]).fit(X, y)
    board = model.leaderboard().set_index("model")
    assert board.loc["linear", "why_stopped"].startswith(f"tuned: stopped after {patience} trials without a better")
    linear = model.trials_[model.trials_["family"] == "linear"]
    done = linear[linear["state"] == "COMPLETE"]
    first_best = done.loc[done["value"] == done["value"].max(), "number"].min()
    assert linear["number"].max() == first_best + patience
    assert board.loc["lightgbm", "search_seconds"] > 3 * board.loc["linear", "search_seconds"]
    assert model.timings_["search"] >= 0.8 * 6 * estimator_module.SEARCH_SHARE_NO_REFIT  # no time was left unused


def test_a_start_configuration_too_big_for_its_time_is_time_boxed_and_kept_a_sampled_one_is_not():
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    prepared = AutoML(time_budget_s=10, seed=0, n_jobs=1)._prepare(X, y, None, time.monotonic())

    def slow_space(trial, task):
        return {**SLOW_LIGHTGBM, "learning_rate": trial.suggest_float("learning_rate", 1e-4, 5e-4)}

    family = replace(family_named("lightgbm"), starts=({}, {"n_estimators": 500_000, "learning_rate": 0.0005}),
                     space=slow_space)
    now = time.monotonic()
    search = search_module._FamilySearch(prepared.context, family, search_module._Tracker(prepared.context, now,
                                                                                         now + 10))
    search.run(1, time.monotonic() + 5)  # LightGBM's defaults: 100 rounds, done in well under a second
    search.run(1, time.monotonic() + 1.5)  # the second start: 500,000 rounds at 0.0005 grow until its time share
    search.run(1, time.monotonic() + 1.5)  # a sampled configuration as slow is stopped at the limit, not kept
    defaults, start, sampled = search.study.trials
    assert defaults.state.name == start.state.name == "COMPLETE" and "time_boxed" not in defaults.user_attrs
    assert start.user_attrs["time_boxed"].startswith("fold 5/5: stopped growing at its time share")
    assert sampled.state.name == "PRUNED" and "deadline" in sampled.user_attrs["pruned_reason"]


def holdout_context() -> search_module.SearchContext:
    """40,000 x 60 rows of 3 classes validated on a holdout (at a 10 s budget), where LightGBM's 100 default
    rounds take 3.5-5.6 s on one thread, their first round (the binning included) 0.35-0.56 s."""
    X, y = make_classification(40_000, 60, n_informative=20, n_classes=3, random_state=0)
    X, y = pd.DataFrame(X).add_prefix("f"), pd.Series(y)
    return AutoML(time_budget_s=10, seed=0, n_jobs=1)._prepare(X, y, None, time.monotonic()).context


def floor_given(context: search_module.SearchContext, seconds: float):
    """LightGBM's search after its first trial, its defaults, had `seconds`."""
    now = time.monotonic()
    search = search_module._FamilySearch(context, family_named("lightgbm"),
                                         search_module._Tracker(context, now, now + 60))
    search.run(1, now + seconds)
    return search


def test_the_floor_too_slow_for_its_share_is_kept_with_fewer_rounds():
    context, now = holdout_context(), time.monotonic()
    search = floor_given(context, 1.2)
    floor, folds = search.study.trials[0], len(context.folds)
    assert floor.state.name == "COMPLETE" and floor.user_attrs["config"] == {}
    assert floor.user_attrs["time_boxed"].startswith(f"fold {folds}/{folds}: stopped growing at its time share")
    assert all(0 < rounds < 100 for rounds in search.best["rounds"])
    assert time.monotonic() - now < 1.2 + 1.0  # each fold's last round and prediction after its share


def test_a_floor_stopped_short_goes_on_from_its_fold_models():
    search = floor_given(holdout_context(), 1.2)
    floor = search.best
    assert search.can_grow() and model_size(floor["models"][0]) < 100
    search.grow(time.monotonic() + 60)
    grown = search.study.trials[-1]
    assert grown.state.name == "COMPLETE" and grown.user_attrs["grown_from"] == floor["number"]
    assert search.best["number"] == grown.number and not search.best["time_boxed"] and not search.can_grow()
    assert model_size(search.best["models"][0]) == 100  # its rounds went on to the defaults' 100
    assert search.best["value"] > floor["value"]
    # a refit on all rows trains both trials' rounds, so its cost counts both
    assert search.best["fold_seconds"] > floor["fold_seconds"]
    assert search.result().refit_params == {}  # LightGBM's defaults, 100 rounds, on all rows


@pytest.mark.parametrize("family", ["lightgbm", "extra_trees"])
def test_a_leader_stopped_short_goes_on_instead_of_giving_its_tuning_slot_away(family):
    context, started = holdout_context(), time.monotonic()
    # the first trial's 60% of 2 s cannot grow LightGBM's 100 default rounds or 200 extra trees on 32,000 rows;
    # the 40% left cannot double it
    _, studies, reasons = search_module.search_families(context, [family_named(family)], 1, started,
                                                        started + 2.0, large=True)
    first, grown = [t for t in studies[family].trials if t.state.is_finished()][:2]
    assert "time_boxed" in first.user_attrs and grown.user_attrs["grown_from"] == first.number
    assert reasons[family].startswith("first trial time-boxed") and "fold models went on growing" in reasons[family]
    assert time.monotonic() - started < 2.0 + 1.0


@pytest.mark.parametrize(("rows", "columns", "budget", "folds"), [
    (500, 10, 30, 5), (10_000, 50, 30, 3), (20_000, 50, 30, 2), (20_000, 100, 30, 1), (50_000, 150, 300, 3),
    (150_000, 5, 600, 1)])
def test_validation_is_sized_to_rows_features_and_budget(rows, columns, budget, folds):
    assert AutoML(time_budget_s=budget)._n_folds((rows, columns)) == folds


def test_many_classes_get_fewer_folds_where_lightgbms_defaults_would_not_finish_their_cross_validation(
        monkeypatch):
    X, y = make_classification(800, 8, n_informative=6, n_classes=26, n_clusters_per_class=1, random_state=0)
    X, y = pd.DataFrame(X, columns=[f"f{i}" for i in range(8)]), pd.Series(y)

    def folds(budget: float, lone: bool = True, **options) -> int:
        automl = AutoML(task="multiclass", time_budget_s=budget, seed=0, n_jobs=1, **options)
        automl._prepare(*automl._validate(X, y), None, time.monotonic(), lone=lone)
        return len(automl.folds_)

    # 6,400 training cells at 0.5 s is small by rows x features alone (5 folds), but 26 classes' boosting rounds
    # are not: the floor's 5 folds would take far more than its share of the search.
    assert AutoML(time_budget_s=0.5)._n_folds(X.shape) == 5
    assert folds(0.5) == 1
    assert folds(0.5, exclude=["lightgbm"]) == 5  # no floor to protect: sized by rows x features only
    assert folds(600) == 5
    # search workers and their assembly must agree on the folds, and max_trials searches never read the clock
    assert folds(0.5, lone=False) == folds(0.5, max_trials=3) == 5

    class FailingLightGBM(LGBMClassifier):
        def fit(self, X, y, **options):
            raise ValueError("the floor cannot be fitted on this data")

    failing = replace(family_named("lightgbm"), build=lambda params, task, seed, n_jobs: FailingLightGBM())
    monkeypatch.setattr(estimator_module, "family_named", lambda name: failing)
    assert folds(0.5) == 5  # a failed timing says nothing of the cost; the search's first trial records it


def test_boosting_stops_early_on_the_validation_fold_and_at_the_deadline():
    X, y = load_breast_cancer(return_X_y=True)
    model = fit_within(LGBMClassifier(n_estimators=2000, learning_rate=0.3, verbose=-1), X[:400], y[:400],
                       X[400:], y[400:])
    assert best_rounds(model) < 500
    forest = RandomForestClassifier(n_estimators=5000, random_state=0)
    with pytest.raises(DeadlineReached, match=f"stopped at the deadline after {FIRST_CHUNK} of 5000"):
        fit_within(forest, X, y, deadline=time.monotonic())


def test_xgboost_starts_hold_its_library_defaults_which_fit_a_target_without_noise():
    family = family_named("xgboost")
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 50, 1200), rng.normal(size=(1200, 3))])
    y = X[:, 0] ** 2
    errors = []
    for params in family.starts:
        model = fit_within(family.build(params, "regression", 0, 1), X[:1000], y[:1000],
                           X[1000:], y[1000:])
        errors.append(float(np.sqrt(np.mean((model.predict(X[1000:]) - y[1000:]) ** 2))))
    defaults = family.starts.index({"n_estimators": BOOSTING_ROUNDS})
    # a square of an integer column: the first start samples columns, and trees without it cannot fit it
    assert errors[defaults] < 0.01 * y.std() < errors[0], errors


def test_an_iterative_linear_fit_is_cut_at_the_deadline_and_unchanged_when_it_converges():
    X, y = load_breast_cancer(return_X_y=True)
    scaled = StandardScaler().fit_transform(X)
    plain = LogisticRegression(max_iter=3000).fit(scaled, y)
    assert plain.n_iter_[0] < SOLVER_CHUNK
    chunked = fit_within(LogisticRegression(max_iter=3000), scaled, y, deadline=time.monotonic() + 60)
    np.testing.assert_array_equal(chunked.coef_, plain.coef_)
    assert (chunked.max_iter, chunked.warm_start) == (3000, False)  # a later refit starts from scratch
    lasso = fit_within(Lasso(alpha=1e-4, max_iter=5000, tol=1e-8), scaled, y.astype(float),
                       deadline=time.monotonic() + 60)
    reference = Lasso(alpha=1e-4, max_iter=5000, tol=1e-8).fit(scaled, y.astype(float))
    assert reference.n_iter_ > 10 * SOLVER_CHUNK  # resumed over many chunks, it reaches the same solution
    np.testing.assert_allclose(lasso.coef_, reference.coef_, atol=1e-4)
    # Unscaled and nearly unregularised, L-BFGS runs for thousands of iterations (about 5 s per 12,500).
    started = time.monotonic()
    with pytest.raises(DeadlineReached, match="LogisticRegression stopped at the deadline after"):
        fit_within(LogisticRegression(C=1e6, tol=1e-14, max_iter=10_000_000), X, y, deadline=started + 0.5)
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(("objective", "tolerance"), [("latency", 0.0), ("latency", 0.05), ("size", 0.02)])
def test_multi_objective_search_keeps_a_pareto_front_and_picks_from_it(objective, tolerance):
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = AutoML(time_budget_s=60, seed=0, n_jobs=1, sampler="nsga2", include=["linear", "lightgbm"],
                   max_trials=6, sampler_options={"population_size": 4}, secondary_objective=objective,
                   pareto_tolerance=tolerance).fit(X, y)
    assert all(len(study.directions) == 2 for study in model.studies_.values())
    front, cost = model.pareto_front_, COSTS[objective]
    done = model.trials_[model.trials_["state"] == "COMPLETE"]
    for _, row in front.iterrows():  # nothing finished beats a front trial on both objectives
        assert not ((done["value"] > row["value"]) & (done[cost] < row[cost])).any()
    pick = front[front["picked"]].iloc[0]
    best = front["value"].max()
    assert best - pick["value"] <= tolerance * best + 1e-12
    assert (front.loc[front["value"] >= best * (1 - tolerance) - 1e-12, cost] >= pick[cost]).all()
    assert model.weights_ == {pick["family"]: 1.0} and model.predict_proba(X.head(2)).shape == (2, 2)


def test_models_without_a_thread_parameter_get_no_more_threads_than_the_fit(monkeypatch):
    threads = []

    def counting(model, *args, **kwargs):  # OpenMP and BLAS threads a model may take while it trains
        threads.append({pool["num_threads"] for pool in threadpool_info()})
        return fit_within(model, *args, **kwargs)

    monkeypatch.setattr(search_module, "fit_within", counting)
    monkeypatch.setattr(estimator_module, "fit_within", counting)
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    callers = threadpool_info()
    model = AutoML(time_budget_s=30, seed=0, n_jobs=1, include=["hist_gradient_boosting", "linear"], n_folds=3,
                   max_trials=2).fit(X, y)
    assert model.final_kind_ == "refitted on all training rows"  # the refit's fits were counted too
    assert len(threads) >= 2 * 3 + 1 and all(counted == {1} for counted in threads)
    assert threadpool_info() == callers  # the caller's settings are back


def _search_part(arguments):
    storage, worker = arguments
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return AutoML(time_budget_s=120, seed=0, n_jobs=1, preset="fast", max_trials=3, storage=storage,
                  study_prefix="shared").search_worker(X, y, worker=worker, workers=2)


def test_two_search_workers_share_one_study_and_their_best_trials_are_assembled(tmp_path):
    storage = str(tmp_path / "studies.log")  # Optuna's journal file: what two processes on one host share
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver")) as pool:
        outcomes = list(pool.map(_search_part, [(storage, 0), (storage, 1)]))
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = AutoML(time_budget_s=120, seed=0, n_jobs=1, preset="fast", max_trials=3, storage=storage,
                   study_prefix="shared").fit_from(X, y, outcomes)
    ran = {o.worker: {r.family.name: r.cv_mean for r in o.results} for o in outcomes}
    assert set(ran[0]) == set(ran[1]) == set(model.studies_)  # both searched every family of the preset
    trials = model.trials_
    assert (trials["state"] == "COMPLETE").sum() >= 2 * len(ran[0])  # the study holds both workers' trials
    assert set(trials["worker"]) == {0, 1}
    configs = [repr(t.user_attrs["config"]) for t in model.studies_["lightgbm"].trials if t.state.is_finished()]
    assert configs.count("{}") == 1 and len(set(configs)) == len(configs)  # the defaults ran, the starts once
    for name, score in model.leaderboard().set_index("model")["cv_rmse_mean"].items():
        assert score == min(ran[0][name], ran[1][name])  # each family's best over the two workers
    assert model.search_workers_ == 2 and model.predict(X.head(3)).shape == (3,)
    with pytest.raises(ValueError, match="share their studies through `storage`"):
        AutoML(preset="fast").search_worker(X, y, worker=0, workers=2)


def test_a_worker_that_starts_after_another_has_tuned_still_scores_every_family(tmp_path):
    storage = str(tmp_path / "studies.log")
    ahead = _search_part((storage, 1))  # worker 1 has tuned its best family before worker 0 starts
    late = _search_part((storage, 0))
    assert {r.family.name for r in late.results} == {r.family.name for r in ahead.results} == set(ahead.reasons)
    # the pruner was armed: worker 0's first trial of the tuned family met more than its startup trials of worker 1
    tuned = next(name for name, why in ahead.reasons.items() if why.startswith("tuned"))
    trials = optuna.load_study(study_name=f"shared-regression-{tuned}", storage=make_storage(storage)).trials
    first_late = next(t.number for t in trials if t.user_attrs.get("worker") == 0)
    assert sum(t.state.name == "COMPLETE" and t.number < first_late for t in trials) > 3
