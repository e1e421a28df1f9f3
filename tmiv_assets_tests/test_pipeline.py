"""The whole default pipeline on the embedded data, asserted on its real outputs."""

import re
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import pandas as pd
import pytest

from tmiv_assets.defs.assets.data import dataset_profile
from tmiv_assets.defs.assets.explain import what_if_report
from tmiv_assets.defs.assets.monitoring import drift_report, model_performance, monitoring_history, scored_batch
from tmiv_assets.defs.jobs import EXPLANATION_ASSETS, FORECAST_ASSETS, TRAINING_ASSETS
from tmiv_assets.defs.sensors import champion_explanations_sensor
from tmiv_assets.ml.data.quality import QUALITY_CHECKS
from tmiv_assets.resources.data_source import DataSource
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.model_registry import ModelRegistry
from tmiv_assets_tests.conftest import DATA_DIR, FAST_TRAINING, resources_for

DATASETS = ["titanic", "cps1985", "flights"]
SERIES = ["air_passengers", "uk_driver_deaths"]
UNSHIFTED_DAY, SHIFTED_DAY = "2013-02-12", "2013-07-22"


@dataclass
class Pipeline:
    home: Path
    instance: dg.DagsterInstance
    results: dict[str, dg.ExecuteInProcessResult]

    def metadata(self, run: str, asset: str) -> dict:
        return {k: v.value for k, v in self.results[run].asset_materializations_for_node(asset)[0].metadata.items()}


def batch_key(day: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"dataset": "flights", "day": day})


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    home = tmp_path_factory.mktemp("pipeline") / "tmiv"
    resources = resources_for(home)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", DATASETS)
        instance.add_dynamic_partitions("series", SERIES)
        instance.add_dynamic_partitions("batch_day", DataSource(data_dir=str(DATA_DIR)).batch_days("flights"))
        results = {}
        for dataset in DATASETS:
            results[dataset] = dg.materialize([dataset_profile, *TRAINING_ASSETS], run_config=FAST_TRAINING,
                                              resources=resources, partition_key=dataset, instance=instance)
        for day in (UNSHIFTED_DAY, SHIFTED_DAY):
            results[day] = dg.materialize([scored_batch, drift_report, model_performance], resources=resources,
                                          partition_key=batch_key(day), instance=instance)
        # The two scored days' labels have arrived: a retrain learns from them and is gated on their held-out rows.
        results["retrain"] = dg.materialize(TRAINING_ASSETS, run_config=FAST_TRAINING, resources=resources,
                                            partition_key="flights", instance=instance,
                                            tags={"tmiv/trigger": "drift"}, raise_on_error=False)
        results["history"] = dg.materialize([monitoring_history], resources=resources, partition_key="flights",
                                            instance=instance, selection=[monitoring_history])
        for series in SERIES:
            results[series] = dg.materialize(FORECAST_ASSETS, resources=resources, partition_key=series,
                                             instance=instance)
        yield Pipeline(home, instance, results)


def test_every_run_succeeds(pipeline):
    runs = {name: r.success for name, r in pipeline.results.items() if name != "retrain"}  # its gate may reject
    assert runs == {name: True for name in runs}


@pytest.mark.parametrize("dataset", DATASETS)
def test_champion_is_registered_with_alias(pipeline, dataset):
    registry = ModelRegistry(home=str(pipeline.home))
    champion = registry.champion(dataset)
    assert champion is not None and champion.name == f"tmiv_{dataset}"
    assert champion.aliases == ["champion"]
    promoted_by_retrain = dataset == "flights" and pipeline.results["retrain"].success
    metadata = pipeline.metadata("retrain" if promoted_by_retrain else dataset, "registered_model")
    assert metadata["model_version"] == int(champion.version)
    model = registry.load_version(dataset, champion.version)
    clean = FeatureStore(home=str(pipeline.home)).load("clean_dataset", dataset)
    assert len(model.predict(clean.head(10))) == 10  # serves raw columns


def test_feature_set_catalog_rows_point_at_parquet_files(pipeline):
    store = FeatureStore(home=str(pipeline.home))
    with duckdb.connect(str(store.catalog_path), read_only=True) as connection:
        rows = connection.execute(
            "SELECT dataset, path, row_count, content_hash FROM feature_sets WHERE name = 'feature_set'"
        ).fetchall()
    assert sorted(set(r[0] for r in rows)) == sorted(DATASETS)  # flights retrained: a second version
    for _, path, row_count, _ in rows:
        assert Path(path).exists()
        assert len(pd.read_parquet(path)) == row_count


def test_flights_feature_set_has_calendar_features_and_labelled_batches(pipeline):
    first = pipeline.metadata("flights", "raw_dataset")
    # Labels of batches never scored do not train the first model, though three label files are there.
    assert first["labelled_batches"] == "none" and first["rows_from_labelled_batches"] == 0
    retrain = pipeline.metadata("retrain", "raw_dataset")
    assert retrain["labelled_batches"] == f"{UNSHIFTED_DAY}, {SHIFTED_DAY}"
    assert retrain["rows_from_labelled_batches"] > 1600  # two labelled days of ~900 flights
    features = FeatureStore(home=str(pipeline.home)).load("feature_set", "flights")
    assert {"time_hour_hour_sin", "time_hour_day_of_week"} <= set(features.columns)
    assert "flight_id" not in features.columns


def test_a_retrain_after_drift_is_judged_on_held_out_rows_of_the_newest_labelled_batch(pipeline):
    candidates = pipeline.metadata("retrain", "model_candidates")
    assert candidates["validation"].endswith("chronological + 2 labelled batches by id hash test split; final "
                                             f"model: {candidates['validation'].rsplit(': ', 1)[1]}")
    gate = {c.check_name: c for c in pipeline.results["retrain"].get_asset_check_evaluations()}["beats_champion"]
    metadata = {k: v.value for k, v in gate.metadata.items()}
    assert metadata["batch_day"] == SHIFTED_DAY
    assert f"batch {SHIFTED_DAY}'s" in metadata["reason"] and "held-out labelled rows" in metadata["reason"]
    held_out_rows = int(metadata["reason"].split(f"batch {SHIFTED_DAY}'s ")[1].split(" ")[0])
    assert 150 <= held_out_rows <= 190  # a fifth of the day's ~860 labelled flights
    registry = ModelRegistry(home=str(pipeline.home))
    new = max(registry.versions("flights"), key=lambda v: int(v.version))
    assert new.tags["trigger"] == "drift" and new.tags["gate"] == ("passed" if gate.passed else "rejected")
    assert pipeline.results["retrain"].success is gate.passed
    assert (registry.champion("flights").version == new.version) is gate.passed


@pytest.mark.parametrize("dataset", DATASETS)
def test_clean_dataset_passes_every_quality_check(pipeline, dataset):
    checks = {c.check_name: c.passed for c in pipeline.results[dataset].get_asset_check_evaluations()
              if c.asset_key == dg.AssetKey("clean_dataset")}
    assert checks == {name: True for name in QUALITY_CHECKS}


def test_selected_features_keep_departure_delay_for_flights(pipeline):
    metadata = pipeline.metadata("flights", "selected_features")
    assert "dep_delay" in metadata["selected_features"].split(", ")
    assert 0 < metadata["n_selected"] < metadata["n_candidates"]
    ranking = pd.read_csv(metadata["ranking_file"])
    assert set(ranking["feature"]) >= {"dep_delay", "distance"}


@pytest.mark.parametrize(("dataset", "metric", "better_than"),
                         [("titanic", "roc_auc", 0.75), ("flights", "roc_auc", 0.85)])
def test_champion_beats_the_baseline(pipeline, dataset, metric, better_than):
    metadata = pipeline.metadata(dataset, "model_leaderboard")
    assert metadata[f"test_{metric}"] > better_than
    check = pipeline.results[dataset].get_asset_check_evaluations()
    assert {c.check_name: c.passed for c in check}["beats_baseline"]
    for plot in ("roc", "precision_recall", "calibration", "confusion_matrix"):
        assert f"![{plot}](data:image/png;base64," in metadata["evaluation_plots"]
    board = FeatureStore(home=str(pipeline.home)).load("model_leaderboard", dataset).set_index("model")
    assert board.loc["automl", f"test_{metric}"] > board.loc["baseline", f"test_{metric}"]


def test_time_ordered_data_is_split_and_validated_in_time_order(pipeline):
    candidates = pipeline.metadata("flights", "model_candidates")
    assert candidates["validation"].startswith("time-ordered ")
    assert "validation, chronological test split" in candidates["validation"]
    titanic = pipeline.metadata("titanic", "model_candidates")["validation"]
    assert "-fold validation, stable_id_hash test split" in titanic
    # shuffled folds would carry later targets into earlier rows' encodings; titanic's columns pool nothing
    assert candidates["target_encoding"] == "none: time-ordered rows"
    assert pipeline.metadata("titanic", "model_candidates")["target_encoding"] == "none: no pooled column to encode"
    assert pipeline.metadata("flights", "model_leaderboard")["test_split"] == "chronological"


def test_search_history_and_trials_are_in_the_ui_and_mlflow(pipeline):
    metadata = pipeline.metadata("cps1985", "model_candidates")
    assert "_history](data:image/png;base64," in metadata["search_plots"]
    assert "| family" in metadata["trial_table"] and metadata["trials"] >= 4
    board = FeatureStore(home=str(pipeline.home)).load("model_candidates", "cps1985")
    assert {"automl", "baseline"} <= set(board["model"]) and board["run_id"].str.len().gt(0).all()
    registry = ModelRegistry(home=str(pipeline.home))
    automl_run = board.set_index("model").loc["automl", "run_id"]
    trials = registry.client().download_artifacts(automl_run, "trials.csv", str(pipeline.home / "download"))
    assert len(pd.read_csv(trials)) == metadata["trials"]


def test_drift_verdicts_follow_the_season(pipeline):
    unshifted = pipeline.metadata(UNSHIFTED_DAY, "drift_report")
    shifted = pipeline.metadata(SHIFTED_DAY, "drift_report")
    assert unshifted["drift_detected"] is False
    assert shifted["drift_detected"] is True
    assert "dep_delay" in shifted["drifted_columns"]
    # July's delays move the served delay probabilities further from the reference than a February day's.
    assert shifted["prediction_drift_test"] == "wasserstein" and shifted["prediction_drift"] is True
    assert shifted["prediction_drift_score"] > unshifted["prediction_drift_score"]
    assert isinstance(shifted["target_drift"], bool) and shifted["target_drift_test"] == "jensenshannon"
    assert shifted["target_drift_score"] > unshifted["target_drift_score"]
    html = Path(shifted["evidently_report"])
    assert html.exists() and html.stat().st_size > 10_000


def test_scored_batch_has_predictions_and_model_performance_live_metrics(pipeline):
    metadata = pipeline.metadata(UNSHIFTED_DAY, "scored_batch")
    scored = pd.read_parquet(pipeline.home / "batches" / "flights" / UNSHIFTED_DAY / "scored.parquet")
    assert len(scored) == metadata["dagster/row_count"] > 800
    assert scored["score"].between(0, 1).all() and set(scored["prediction"]) <= {0, 1}
    # Reason codes beside each prediction: the top input columns' SHAP values, adding up to the row's score
    contributions = scored[[f"reason_{k}_contribution" for k in (1, 2, 3)]].sum(axis=1)
    assert (scored["reason_base"] + contributions + scored["reason_rest"] - scored["score"]).abs().max() < 1e-5
    assert scored["reason_1"].value_counts().index[0] == "dep_delay"
    performance = pipeline.metadata(UNSHIFTED_DAY, "model_performance")
    assert performance["status"] == "measured" and performance["live_roc_auc"] > 0.8
    gap = performance["test_roc_auc"] - performance["live_roc_auc"]
    assert performance["drop"] == pytest.approx(gap, abs=1e-4)
    assert performance["allowed_drop"] == pytest.approx(0.05 * performance["test_roc_auc"], abs=1e-4)
    assert performance["below_threshold"] is (gap > performance["allowed_drop"])
    assert performance["in_training_data"] is False and performance["served_version"] == 1
    # CBPE's estimate from the probabilities alone, beside the realised metric once labels arrived
    lower, upper = performance["estimated_accuracy_band_95"]
    assert lower < performance["estimated_accuracy"] < upper
    assert abs(performance["estimated_accuracy"] - performance["live_accuracy"]) < 0.06
    assert performance["estimated_below_threshold"] is False  # labels arrived: the realised metric decides


def test_monitoring_history_lists_every_batch_day_with_drift_and_performance(pipeline):
    metadata = pipeline.metadata("history", "monitoring_history")
    assert metadata["days"] == 2 and metadata["drifted_days"] == 1
    assert metadata["trainings"] == 2 and metadata["automatic_retrains"] == 1
    history = metadata["history"]
    for column in ("drifted_share", "prediction_drift_score", "estimated", "realised", "test_score"):
        assert f" {column} " in history.split("\n")[0]
    assert f"| {UNSHIFTED_DAY} |" in history and f"| {SHIFTED_DAY} |" in history
    assert "| drift " in metadata["trainings_table"] and metadata["lifecycle_decisions"] >= 1
    assert "![monitoring history](data:image/png;base64," in metadata["plot"]


def test_a_worse_automatic_champion_is_rolled_back_after_its_next_labelled_batch(pipeline):
    """The no-skill baseline made champion as if by drift; the next labelled batch it scores sends it back."""
    registry, store = ModelRegistry(home=str(pipeline.home)), FeatureStore(home=str(pipeline.home))
    good = registry.champion("flights")
    board = store.load("model_leaderboard", "flights").set_index("model")
    worse = registry.register("flights", board.loc["baseline", "model_uri"], board.loc["baseline", "run_id"],
                              dict(good.tags) | {"test_roc_auc": str(board.loc["baseline", "test_roc_auc"])})
    registry.promote("flights", worse.version, reason="deliberately worse", trigger="drift")
    day = "2013-02-13"  # labelled, and neither version trained on it
    run = dg.materialize([scored_batch, model_performance], resources=resources_for(pipeline.home),
                         partition_key=batch_key(day), instance=pipeline.instance)
    metadata = {k: v.value for k, v in run.asset_materializations_for_node("model_performance")[0].metadata.items()}
    assert metadata["served_version"] == int(worse.version)
    assert metadata["rollback"].startswith("roll back: roc_auc 0.5000 vs the previous champion's")
    assert metadata["rolled_back_to"] == int(good.version)
    assert registry.champion("flights").version == good.version
    last = registry.history("flights")[-1]
    assert (last.action, last.before, last.after, last.trigger) == ("rollback", int(worse.version),
                                                                    int(good.version), "performance")
    tags = pipeline.instance.get_run_by_id(run.run_id).tags
    assert tags["tmiv/decision"] == "rollback"
    assert tags["tmiv/rolled_back"] == f"v{worse.version}->v{good.version}"


def test_a_day_the_retrain_learned_from_is_judged_on_the_rows_its_split_held_out(pipeline):
    """The newest search's no-skill baseline, promoted as if by drift, scores a day that search trained on: it
    is measured, and rolled back, on that day's held-out rows only."""
    registry, store = ModelRegistry(home=str(pipeline.home)), FeatureStore(home=str(pipeline.home))
    good = registry.champion("flights")
    newest = max(registry.versions("flights"), key=lambda v: int(v.version))
    board = store.load("model_leaderboard", "flights").set_index("model")
    worse = registry.register("flights", board.loc["baseline", "model_uri"], board.loc["baseline", "run_id"],
                              dict(newest.tags) | {"test_roc_auc": str(board.loc["baseline", "test_roc_auc"])})
    registry.promote("flights", worse.version, reason="deliberately worse", trigger="drift")
    run = dg.materialize([scored_batch, model_performance], resources=resources_for(pipeline.home),
                         partition_key=batch_key(SHIFTED_DAY), instance=pipeline.instance)
    metadata = {k: v.value for k, v in run.asset_materializations_for_node("model_performance")[0].metadata.items()}
    assert metadata["served_version"] == int(worse.version) and metadata["in_training_data"] is True
    assert 0.1 < metadata["unseen_rows"] / metadata["labelled_rows"] < 0.3  # the fifth held out by id hash
    assert metadata["rollback"].startswith("roll back: roc_auc 0.5000")
    assert f"{metadata['unseen_rows']} labelled rows neither trained on" in metadata["rollback"]
    assert registry.champion("flights").version == good.version


def test_shap_report_ranks_departure_delay_first_for_flights(pipeline):
    metadata = pipeline.metadata("flights", "shap_report")
    assert metadata["top_feature"] == "dep_delay"
    assert metadata["additivity_error"] < 1e-6 and metadata["explained_output"] == "probability of 1"
    assert "was off by" not in metadata["explainers"]  # every model by its exact method, none fell back
    for kind in ("beeswarm", "bar", "waterfall", "dependence"):
        assert f"**{kind}**\n\n![{kind}](data:image/png;base64," in metadata["plots"]
    values = pd.read_parquet(metadata["values_file"])
    assert len(values) == 2 * metadata["rows_explained"]  # both classes' probabilities
    lime = pipeline.metadata("flights", "lime_report")
    assert lime["rows_explained"] == 6 and 0 <= lime["mean_stability"] <= 1
    assert lime["representative"].count("**row ") == 3 and "| condition " in lime["worst_predicted"]
    shuffled = pipeline.metadata("flights", "permutation_importance")
    assert shuffled["top_feature"] == "dep_delay" and shuffled["metric"] == "roc_auc"
    assert "| dep_delay " in shuffled["importance"] and "![permutation importance]" in shuffled["plot"]
    importance = pd.read_csv(metadata["importance_file"])
    assert importance["share"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize(("dataset", "goal"), [("titanic", "predicted class"), ("cps1985", "prediction >=")])
def test_what_if_report_has_curves_and_verified_counterfactuals_that_leave_sensitive_columns(pipeline, dataset, goal):
    metadata = pipeline.metadata(dataset, "what_if_report")
    assert 1 <= len(metadata["features"]) <= 4
    assert "![partial dependence and ICE](data:image/png;base64," in metadata["plot"]
    sensitive = {"titanic": ["sex", "age"], "cps1985": ["gender", "ethnicity", "age"]}[dataset]
    assert set(sensitive) <= set(metadata["frozen_columns"])
    table = metadata["counterfactuals"]
    assert goal in table and not any(f"{column}: " in table for column in sensitive)
    # every analysed row has a verified counterfactual or says none was found
    assert table.count("none found within") + metadata["counterfactuals_found"] == metadata["rows_analysed"] >= 1
    if dataset == "cps1985":  # many actionable columns (education, experience, occupation, ...)
        assert metadata["counterfactuals_found"] >= 1


@pytest.mark.parametrize(("dataset", "columns"), [("titanic", ("sex", "age")),
                                                  ("cps1985", ("gender", "ethnicity", "age"))])
def test_fairness_report_covers_every_sensitive_column_with_a_warning_check(pipeline, dataset, columns):
    metadata = pipeline.metadata(dataset, "fairness_report")
    for column in columns:
        assert f"| {column}" not in metadata[f"{column}_groups"] and "| group" in metadata[f"{column}_groups"]
    assert metadata["age_grouping"] == "quartiles" and "![fairness](data:image/png;base64," in metadata["plot"]
    if dataset == "titanic":
        assert 0 <= metadata["sex_disparate_impact"] <= 1 and "sex_equalized_odds_difference" in metadata
    else:
        assert 0 < metadata["gender_mean_prediction_ratio"] <= 1
    [check] = [c for c in pipeline.results[dataset].get_asset_check_evaluations()
               if c.check_name == "fairness_within_bounds"]
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.passed is (check.metadata["violations"].value == "none")


@pytest.mark.parametrize(("series", "horizon"), [("air_passengers", 24), ("uk_driver_deaths", 12)])
def test_forecast_horizon_and_interval_order(pipeline, series, horizon):
    predicted = pd.read_parquet(pipeline.home / "forecasts" / f"{series}.parquet")
    assert len(predicted) == horizon
    assert (predicted["yhat_lower"] <= predicted["yhat"]).all() and (predicted["yhat"] <= predicted["yhat_upper"]).all()
    metadata = pipeline.metadata(series, "forecast")
    assert f"| {metadata['chosen_model'].split(' ')[0]} " in metadata["leaderboard"]
    backtest = pipeline.metadata(series, "forecast_backtest")
    # The choice beats the baseline it scales by, or is AutoARIMA, which no model beat clearly and which is not
    # worse than the seasonal naive forecast in every fold (uk_driver_deaths: better in two of three).
    assert metadata["backtest_mase"] < metadata["seasonal_naive_mase"] or backtest["choice"].startswith("auto_arima:")
    assert backtest["chosen_model"] == metadata["chosen_model"].split(" ")[0]  # refitted from the stored backtest
    assert backtest["chosen_mase"] == metadata["backtest_mase"] and "![" in backtest["plot"]
    if series == "uk_driver_deaths":  # its spec names a GRU: from scratch, and pre-trained on air_passengers
        for network in ("gru", "gru_transfer"):
            assert re.search(rf"\| {network} +\| +\d", backtest["leaderboard"]), backtest["leaderboard"]
    run = mlflow.MlflowClient(ModelRegistry(home=str(pipeline.home)).tracking_uri).get_run(metadata["mlflow_run_id"])
    assert run.data.params["chosen_model"] == backtest["chosen_model"]
    assert run.data.metrics[f"backtest_mase_{backtest['chosen_model']}"] == pytest.approx(metadata["backtest_mase"])


def test_series_diagnostics_find_air_passengers_trending_and_seasonal(pipeline):
    diagnostics = pipeline.metadata("air_passengers", "series_diagnostics")
    assert diagnostics["stationary"] is False and diagnostics["differences"] >= 1
    assert diagnostics["seasonal_strength"] > 0.6 and diagnostics["trend_strength"] > 0.9
    assert "![" in diagnostics["plot"]
    assert pipeline.metadata("air_passengers", "series_data")["dagster/row_count"] == 144


def test_retraining_the_same_data_reproduces_the_metrics(pipeline):
    store = FeatureStore(home=str(pipeline.home))
    first = store.load("model_leaderboard", "titanic")
    again = dg.materialize(TRAINING_ASSETS, run_config=FAST_TRAINING, resources=resources_for(pipeline.home),
                           partition_key="titanic", instance=pipeline.instance)
    assert again.success
    second = store.load("model_leaderboard", "titanic")
    columns = ["model", "trials", "pruned", "params", "cv_roc_auc_mean", "test_roc_auc", "test_log_loss"]
    assert first[columns].to_string() == second[columns].to_string()
    versions = FeatureStore(home=str(pipeline.home)).versions("feature_set", "titanic")
    assert len(versions) == 1  # identical content: no new feature-set version
    registered = again.asset_materializations_for_node("registered_model")[0].metadata
    assert registered["gate"].value == "passed"  # a tie on the same test rows promotes the newer model
    assert "same test rows" in registered["reason"].value
    champion = again.asset_materializations_for_node("champion_model")[0].metadata
    assert champion["champion_version"].value == registered["model_version"].value


def test_a_champion_changed_outside_training_is_explained_again(pipeline):
    """Promoted by hand (no training run explains it): the sensor asks for explain_champion once, for that version;
    once its explanations exist it asks nothing."""
    registry = ModelRegistry(home=str(pipeline.home))
    good = registry.champion("titanic")
    board = FeatureStore(home=str(pipeline.home)).load("model_leaderboard", "titanic").set_index("model")
    other = registry.register("titanic", board.loc["automl", "model_uri"], board.loc["automl", "run_id"],
                              dict(good.tags))
    registry.promote("titanic", other.version, reason="a person's choice", trigger="manual")
    resources = resources_for(pipeline.home)
    context = dg.build_sensor_context(instance=pipeline.instance, resources={"registry": resources["registry"]})
    result = champion_explanations_sensor(context)
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [
        ("titanic", f"explain/titanic/v{other.version}")]
    run = dg.materialize(EXPLANATION_ASSETS, resources=resources, partition_key="titanic", instance=pipeline.instance)
    assert run.success
    assert pipeline_metadata(run, "shap_report")["champion_version"] == int(other.version)
    again = champion_explanations_sensor(dg.build_sensor_context(instance=pipeline.instance,
                                                                  resources={"registry": resources["registry"]}))
    assert isinstance(again, dg.SkipReason) and "every champion is explained" in again.skip_message
    assert pipeline_metadata(run, "what_if_report")["features"][0] == pipeline_metadata(run, "shap_report")[
        "top_feature"]  # the curves follow the version's own SHAP ranking
    # A version whose tags were copied from another (its ranking included) has no ranking of its own yet.
    copied = registry.register("titanic", board.loc["automl", "model_uri"], board.loc["automl", "run_id"],
                               dict(registry.version("titanic", other.version).tags))
    registry.promote("titanic", copied.version, reason="a copy", trigger="manual")
    alone = dg.materialize([what_if_report], resources=resources, partition_key="titanic",
                           instance=pipeline.instance, raise_on_error=False)
    description = alone.get_step_failure_events()[0].step_failure_data.user_failure_data.description
    assert f"v{copied.version} has no SHAP ranking" in description and "materialize shap_report" in description
    registry.promote("titanic", good.version, reason="back", trigger="manual")


def pipeline_metadata(run: dg.ExecuteInProcessResult, asset: str) -> dict:
    return {k: v.value for k, v in run.asset_materializations_for_node(asset)[0].metadata.items()}
