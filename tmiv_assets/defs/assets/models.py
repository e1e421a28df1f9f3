"""Model training, registration in MLflow and explanation of the champion."""

import json

import dagster as dg
import pandas as pd
from dagster_mlflow.resources import MlFlow
from pydantic import Field
from sklearn.pipeline import Pipeline

from tmiv_assets.defs.assets.features import feature_set
from tmiv_assets.defs.metadata import bad_input_as_failure, markdown_table
from tmiv_assets.defs.partitions import dataset_partitions
from tmiv_assets.ml.automl import AutoML, candidate_results
from tmiv_assets.ml.explain import explain_pipeline
from tmiv_assets.ml.features import FeatureBuilder
from tmiv_assets.ml.plots import figure_to_markdown, importance_plot, test_set_plot
from tmiv_assets.ml.training import (
    decide_promotion,
    is_better,
    resolve_positive_class,
    score_model,
    split_dataset,
)
from tmiv_assets.resources.data_source import DataSource
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.files import write_text_atomic
from tmiv_assets.resources.model_registry import CHALLENGER, CHAMPION, ModelRegistry
from tmiv_assets.resources.tracking import TrainingMonitor, log_candidates


class TrainingConfig(dg.Config):
    test_size: float = Field(default=0.2, gt=0, lt=1, description="Share of rows held out for the test set.")
    seed: int = Field(default=0, description="Seed of the split, the search and every model.")
    time_budget_s: float = Field(default=20, gt=0, description="Wall-clock budget of the AutoML search.")
    preset: str = Field(default="balanced", description="fast | balanced | best_quality")
    metric: str | None = Field(default=None, description="Optimised metric; default roc_auc / f1_macro / rmse.")
    sampler: str = Field(default="tpe", description="tpe (median pruning) | gp (Bayesian) | nsga2 (genetic) | random")
    include: list[str] = Field(default=[], description="Only these model families (empty: the preset's).")
    exclude: list[str] = Field(default=[], description="Model families to leave out.")
    max_trials: int = Field(default=0, ge=0, description="Trials per family at most (0: as the budget allows); "
                                                         "set it for bit-for-bit reproducible searches.")


def score_incumbent(context: dg.AssetExecutionContext, registry: ModelRegistry, dataset: str, test_rows: pd.DataFrame,
                    spec, metric: str, y_test: pd.Series) -> dict:
    """The current champion's score on this run's test rows, so the challenger is compared like for like."""
    champion = registry.champion(dataset)
    if champion is None:
        return {"version": None, "score": None, "note": "no champion yet"}
    try:
        scores = score_model(registry.load_champion(dataset), test_rows.drop(columns=[spec.target]), y_test,
                             spec.task, spec.positive_class)
    except (KeyError, ValueError) as error:  # e.g. the dataset gained or lost columns since it was trained
        context.log.warning(f"champion v{champion.version} cannot score the new test rows: {error}")
        return {"version": int(champion.version), "score": None, "note": f"not comparable: {error}"}
    return {"version": int(champion.version), "score": scores[metric], "note": "scored on the same test rows"}


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[feature_set],
    group_name="models",
    kinds={"mlflow", "optuna", "scikitlearn"},
    check_specs=[dg.AssetCheckSpec("champion_gate", asset="model_candidates", blocking=True,
                                   description="The AutoML model beats the no-skill baseline on the test set.")],
)
def model_candidates(
    context: dg.AssetExecutionContext, config: TrainingConfig, source: DataSource, store: FeatureStore,
    registry: ModelRegistry, mlflow: dg.ResourceParam[MlFlow],
) -> dg.MaterializeResult:
    """AutoML over the model catalog (Optuna, CV on the training split), scored on the held-out test set;
    each family's best and the final ensemble are MLflow runs nested in the Dagster run's run."""
    name = context.partition_key
    with bad_input_as_failure(name):
        spec = source.dataset_spec(name)
    features, clean = store.load("feature_set", name), store.load("clean_dataset", name)
    ids = clean[spec.id_column] if spec.id_column else None
    data = split_dataset(features, spec.target, spec.task, config.test_size, config.seed, ids)
    monitor = TrainingMonitor(context.log)
    automl = AutoML(task=spec.task, metric=config.metric, time_budget_s=config.time_budget_s, seed=config.seed,
                    n_jobs=2, preset=config.preset, sampler=config.sampler, include=config.include or None,
                    exclude=config.exclude or None, progress=monitor, study_prefix=name,
                    max_trials=config.max_trials or None)
    try:
        automl.fit(data.X_train, data.y_train)
    except ValueError as error:
        raise dg.Failure(description=f"[{name}] AutoML could not train: {error}") from error
    results = candidate_results(automl, data.X_test, data.y_test, spec.positive_class, config.seed)
    metric = automl.metric_
    # Serving models take raw columns: the stateless feature builder goes in front of the fitted pipeline.
    builder = FeatureBuilder.from_spec(spec).fit(clean.drop(columns=[spec.target]))
    serving = {"automl": Pipeline([("features", builder), ("model", automl.best_pipeline_)])}
    tags = {"dataset": name, "feature_set_version": str(store.latest("feature_set", name).version),
            "clean_dataset_version": str(store.latest("clean_dataset", name).version), "task": spec.task}
    logged = log_candidates(mlflow, results, serving, clean.drop(columns=[spec.target]).head(5), tags, monitor.history)
    board = pd.DataFrame([{"model": r.name, **r.metrics, "fit_seconds": r.fit_seconds, **logged[r.name]}
                          for r in results])
    incumbent = score_incumbent(context, registry, name, clean.loc[data.X_test.index], spec, metric, data.y_test)
    path = store.artifact_path("models", name, "candidates.json")
    write_text_atomic(path, json.dumps({"metric": metric, "tags": tags, "incumbent": incumbent,
                                        "leaderboard": board.to_dict("records")}, default=str))
    final, baseline = results[0], results[1]
    positive = resolve_positive_class(final.pipeline.classes_, spec.positive_class) if spec.task == "binary" else None
    plot = test_set_plot(final.pipeline, data.X_test, data.y_test, spec.task, positive)
    context.log.info(f"AutoML for {name}: {len(monitor.history)} trials, ensemble {automl.weights_}, "
                     f"test {metric}={final.metrics[metric]:.4f}")
    return dg.MaterializeResult(
        metadata={
            "leaderboard": markdown_table(board.drop(columns=["model_uri", "run_id", "params"], errors="ignore")),
            "ensemble": ", ".join(f"{k} {v:.2f}" for k, v in automl.weights_.items()),
            f"test_{metric}": float(final.metrics[metric]),
            "trials": len(monitor.history),
            "pruned_trials": sum(e["state"] == "PRUNED" for e in monitor.history),
            "search_seconds": round(automl.fit_seconds_, 1),
            "train_rows": len(data.X_train),
            "test_rows": len(data.X_test),
            "candidates_file": dg.MetadataValue.path(str(path)),
            "test_set_plot": dg.MetadataValue.md(figure_to_markdown(plot, "test set")),
        },
        check_results=[dg.AssetCheckResult(
            check_name="champion_gate",
            passed=is_better(metric, float(final.metrics[metric]), float(baseline.metrics[metric])),
            metadata={f"automl_{metric}": float(final.metrics[metric]), f"baseline_{metric}": float(baseline.metrics[metric])},
        )],
    )


@dg.asset(partitions_def=dataset_partitions, deps=[model_candidates], group_name="models", kinds={"mlflow"})
def registered_model(context: dg.AssetExecutionContext, store: FeatureStore,
                     registry: ModelRegistry) -> dg.MaterializeResult:
    """The best candidate as a new MLflow model version: `champion` unless the current champion scores
    better on the same test rows, in which case it is kept and the new version is aliased `challenger`."""
    name = context.partition_key
    candidates = json.loads(store.artifact_path("models", name, "candidates.json").read_text())
    best = next(row for row in candidates["leaderboard"] if row["model_uri"])
    metric, incumbent = candidates["metric"], candidates["incumbent"]
    decision = decide_promotion(metric, float(best[metric]), incumbent["score"])
    tags = {**candidates["tags"], "candidate": best["model"], metric: str(best[metric]), "dagster_run_id": context.run_id}
    version = registry.register(name, best["model_uri"], best["run_id"], tags)
    alias = CHAMPION if decision.promote else CHALLENGER
    registry.promote(name, version.version, alias)
    context.log.info(f"Registered {version.name} v{version.version} ({best['model']}) as {alias}: {decision.reason}")
    return dg.MaterializeResult(metadata={
        "model_name": version.name,
        "model_version": int(version.version),
        "alias": alias,
        "promoted": decision.promote,
        "reason": decision.reason,
        "candidate": best["model"],
        metric: float(best[metric]),
        "champion_version": int(registry.champion(name).version),
        "previous_champion_version": incumbent["version"] or 0,
        "model_uri": best["model_uri"],
    })


@dg.asset(partitions_def=dataset_partitions, deps=[registered_model], group_name="explanations", kinds={"shap"})
def shap_report(context: dg.AssetExecutionContext, source: DataSource, store: FeatureStore,
                registry: ModelRegistry) -> dg.MaterializeResult:
    """Global SHAP importance of the champion on a sample of its training rows."""
    name = context.partition_key
    with bad_input_as_failure(name):
        spec = source.dataset_spec(name)
    champion = registry.champion(name)
    clean = store.load("clean_dataset", name, int(champion.tags["clean_dataset_version"]))
    report = explain_pipeline(registry.load_champion(name), clean.drop(columns=[spec.target]))
    path = store.artifact_path("reports", name, f"shap_importance_v{champion.version}.csv")
    write_text_atomic(path, report.importance.to_csv(index=False))
    context.log.info(f"SHAP for {name} v{champion.version}: top feature {report.importance['feature'].iloc[0]}")
    return dg.MaterializeResult(metadata={
        "champion_version": int(champion.version),
        "rows_explained": report.n_rows,
        "top_feature": report.importance["feature"].iloc[0],
        "importance": markdown_table(report.importance),
        "importance_plot": dg.MetadataValue.md(figure_to_markdown(importance_plot(report.importance), "importance")),
        "summary_plot": dg.MetadataValue.md(figure_to_markdown(report.summary_figure, "SHAP summary")),
        "importance_file": dg.MetadataValue.path(str(path)),
    })
