"""Deployment: the leaderboard's final model as a registry version, champion only when it is no worse."""

import dagster as dg
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from pydantic import Field

from tmiv_assets.defs.assets.automl import held_out, model_leaderboard
from tmiv_assets.defs.metadata import markdown_table
from tmiv_assets.defs.partitions import dataset_partitions
from tmiv_assets.ml.metrics import LOWER_IS_BETTER, IncumbentScore, decide_promotion, score_model
from tmiv_assets.ml.plots import champion_timeline_plot, figure_to_markdown, version_scores_plot
from tmiv_assets.resources.feature_store import FeatureStore, code_version
from tmiv_assets.resources.model_registry import ARCHIVED, CHALLENGER, CHAMPION, ModelRegistry


def champion_or_failure(registry: ModelRegistry, dataset: str) -> ModelVersion:
    """The dataset's champion version, or a `dg.Failure` saying to register one first."""
    champion = registry.champion(dataset)
    if champion is None:
        raise dg.Failure(description=f"[{dataset}] no champion model in the registry; "
                                     f"materialize registered_model for partition '{dataset}' first")
    return champion


def version_scores(registry: ModelRegistry, dataset: str, version: int, held: tuple) -> dict[str, float]:
    """Every metric of one registered version on held-out rows; KeyError / ValueError when it cannot score
    them (e.g. the data lost a column it needs)."""
    spec, clean, split = held
    model = registry.load_version(dataset, version)
    return score_model(model, clean.loc[split.X_test.index].drop(columns=[spec.target]), split.y_test, spec.task,
                       spec.positive_class)


def score_incumbent(registry: ModelRegistry, store: FeatureStore, dataset: str, lineage: dict) -> IncumbentScore:
    """The current champion, loaded by its version, scored on the new model's test rows."""
    champion = registry.champion(dataset)
    if champion is None:
        return IncumbentScore(version=None, score=None)
    try:
        scores = version_scores(registry, dataset, int(champion.version), held_out(store, dataset, lineage))
    except (KeyError, ValueError) as error:  # keep a champion that cannot be compared, and say why
        return IncumbentScore(version=int(champion.version), score=None, error=f"{type(error).__name__}: {error}")
    return IncumbentScore(version=int(champion.version), score=scores[lineage["metric"]])


class DeployConfig(dg.Config):
    promotion_margin: float = Field(default=0.0, ge=0, description=(
        "How much better, in the metric's units, a new model must score than the champion on the same test "
        "rows to replace it; 0: a tie promotes the newer model."))


@dg.asset(partitions_def=dataset_partitions, deps=[model_leaderboard], group_name="deployment", kinds={"mlflow"})
def registered_model(context: dg.AssetExecutionContext, config: DeployConfig, store: FeatureStore,
                     registry: ModelRegistry) -> dg.MaterializeResult:
    """The final AutoML model as a new MLflow model version: `champion` unless the current champion scores
    better on the same test rows or cannot be scored on them; then it is kept and the new version is
    aliased `challenger`."""
    name, version = context.partition_key, store.latest("model_leaderboard", context.partition_key).version
    lineage, board = store.lineage("model_leaderboard", name, version), store.load("model_leaderboard", name, version)
    metric, best = lineage["metric"], board.set_index("model").loc["automl"]
    incumbent = score_incumbent(registry, store, name, lineage)
    decision = decide_promotion(metric, float(best[f"test_{metric}"]), incumbent, config.promotion_margin)
    clean = store.version("clean_dataset", name, lineage["clean_dataset_version"])
    tags = {"dataset": name, "task": lineage["spec"]["task"], "candidate": "automl", "metric": metric,
            f"test_{metric}": str(best[f"test_{metric}"]), "dagster_run_id": context.run_id,
            "feature_set_version": str(lineage["feature_set_version"]),
            "clean_dataset_version": str(lineage["clean_dataset_version"]),
            "clean_dataset_content_hash": clean.content_hash, "code_version": code_version(),
            "trigger": context.run.tags.get(
                "tmiv/trigger", "manual"), "decision": decision.reason}
    registered = registry.register(name, best["model_uri"], best["run_id"], tags)
    alias = CHAMPION if decision.promote else CHALLENGER
    registry.promote(name, registered.version, alias, reason=decision.reason, trigger=tags["trigger"],
                     action="register", run_id=context.run_id,
                     scores={"new": float(best[f"test_{metric}"]), "champion": incumbent.score, "metric": metric})
    (context.log.info if decision.promote else context.log.warning)(
        f"Registered {registered.name} v{registered.version} as {alias}: {decision.reason}")
    return dg.MaterializeResult(metadata={
        "model_name": registered.name,
        "model_version": int(registered.version),
        "alias": alias,
        "promoted": decision.promote,
        "reason": decision.reason,
        f"test_{metric}": float(best[f"test_{metric}"]),
        f"champion_{metric}_on_same_rows": incumbent.score if incumbent.score is not None else float("nan"),
        "champion_version": int(registry.champion(name).version),
        "previous_champion_version": incumbent.version or 0,
        "model_uri": best["model_uri"],
    })


def history_metadata(registry: ModelRegistry, dataset: str) -> dict:
    """The decision table and timeline of a dataset's champion."""
    history = pd.DataFrame([vars(d) for d in registry.history(dataset)])
    if history.empty:
        return {"decisions": 0}
    champion = registry.champion(dataset)
    return {"decisions": len(history), "champion_version": int(champion.version) if champion else 0,
            "history": markdown_table(history[["at", "action", "before", "after", "subject", "trigger", "reason",
                                               "scores", "run_id"]].astype(str)),
            "timeline": dg.MetadataValue.md(figure_to_markdown(champion_timeline_plot(history), "champion timeline"))}


@dg.asset(partitions_def=dataset_partitions, deps=[registered_model], group_name="deployment", kinds={"mlflow"})
def champion_history(context: dg.AssetExecutionContext, registry: ModelRegistry) -> dg.MaterializeResult:
    """Every lifecycle decision of the dataset's model: trigger, champion before and after, scores, reason."""
    return dg.MaterializeResult(metadata=history_metadata(registry, context.partition_key))


@dg.asset(partitions_def=dataset_partitions, deps=[registered_model], group_name="deployment", kinds={"mlflow"})
def model_comparison(context: dg.AssetExecutionContext, store: FeatureStore,
                     registry: ModelRegistry) -> dg.MaterializeResult:
    """Every registered version of the dataset's model scored on the latest leaderboard's test rows."""
    name = context.partition_key
    lineage = store.lineage("model_leaderboard", name)
    held, metric, rows = held_out(store, name, lineage), lineage["metric"], []
    for version in sorted(registry.versions(name), key=lambda v: int(v.version)):
        row = {"version": int(version.version), "aliases": ", ".join(version.aliases),
               "archived": version.tags.get(ARCHIVED) == "true"}
        try:
            row |= version_scores(registry, name, int(version.version), held)
        except (KeyError, ValueError) as error:
            row["error"] = f"{type(error).__name__}: {error}"
        rows.append(row)
    table = pd.DataFrame(rows)
    scored = table.dropna(subset=[metric]) if metric in table else table.iloc[:0]
    return dg.MaterializeResult(metadata={
        "versions": len(table), "metric": metric, "comparison": markdown_table(table),
        "best_version": int(scored.loc[scored[metric].idxmin() if metric in LOWER_IS_BETTER
                                       else scored[metric].idxmax(), "version"]) if len(scored) else 0,
        "plot": dg.MetadataValue.md(figure_to_markdown(version_scores_plot(scored, metric), "versions"))})
