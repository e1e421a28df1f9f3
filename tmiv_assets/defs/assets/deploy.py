"""Deployment: the leaderboard's final model as a registry version, champion only when the gate passes."""

import json
from dataclasses import dataclass

import dagster as dg
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from pydantic import Field

from tmiv_assets.defs.assets.automl import held_out, model_leaderboard
from tmiv_assets.defs.metadata import markdown_table
from tmiv_assets.defs.partitions import dataset_partitions
from tmiv_assets.ml.data.spec import DatasetSpec
from tmiv_assets.ml.metrics import LOWER_IS_BETTER, IncumbentScore, decide_promotion, score_model
from tmiv_assets.ml.monitoring.policy import RetrainSettings
from tmiv_assets.ml.plots import champion_timeline_plot, figure_to_markdown, version_scores_plot
from tmiv_assets.resources.feature_store import FeatureStore, code_version
from tmiv_assets.resources.model_registry import ARCHIVED, CHALLENGER, CHAMPION, ModelRegistry

# Version tags that carry the champion gate's verdict (and the spec's retrain.auto_deploy) from
# registered_model to champion_model.
GATE_TAG, GATE_SCORES_TAG, AUTO_DEPLOY_TAG = "gate", "gate_scores", "auto_deploy"


def champion_or_failure(registry: ModelRegistry, dataset: str) -> ModelVersion:
    """The dataset's champion version, or a `dg.Failure` saying to register one first."""
    champion = registry.champion(dataset)
    if champion is None:
        raise dg.Failure(description=f"[{dataset}] no champion model in the registry; "
                                     f"materialize registered_model for partition '{dataset}' first")
    return champion


def version_scores(registry: ModelRegistry, dataset: str, version: int | str, rows: pd.DataFrame, y: pd.Series,
                   spec: DatasetSpec) -> dict[str, float]:
    """Every metric of one registered version on `rows`; KeyError / ValueError when it cannot score them
    (e.g. the data lost a column it needs)."""
    model = registry.load_version(dataset, version)
    return score_model(model, rows[list(model.feature_names_in_)], y, spec.task, spec.positive_class)


def held_out_test_rows(held: tuple) -> tuple[pd.DataFrame, pd.Series, DatasetSpec]:
    """(input rows, target, spec) of the held-out test rows `held_out` rebuilt."""
    spec, clean, split = held
    return clean.loc[split.X_test.index].drop(columns=[spec.target]), split.y_test, spec


def score_incumbent(registry: ModelRegistry, dataset: str, rows: pd.DataFrame, y: pd.Series, spec: DatasetSpec,
                    metric: str) -> IncumbentScore:
    """The current champion, loaded by its version, scored on the new model's rows."""
    champion = registry.champion(dataset)
    if champion is None:
        return IncumbentScore(version=None, score=None)
    try:
        score = version_scores(registry, dataset, champion.version, rows, y, spec)[metric]
    except (KeyError, ValueError) as error:  # keep a champion that cannot be compared, and say why
        return IncumbentScore(version=int(champion.version), score=None, error=f"{type(error).__name__}: {error}")
    return IncumbentScore(version=int(champion.version), score=score)


@dataclass(frozen=True)
class GateResult:
    """The champion/challenger comparison on every row set it was made on."""

    passed: bool
    reason: str
    scores: dict[str, float | None]


def champion_gate(registry: ModelRegistry, store: FeatureStore, dataset: str, lineage: dict,
                  new_test_score: float, model_uri: str, margin: float) -> GateResult:
    """Does the new model beat the champion by `margin` on the held-out test rows and, when its training
    data holds labelled batches, on the held-out rows of the newest one (the recent rows neither trained on)?
    Both must hold."""
    held = held_out(store, dataset, lineage)
    rows, y, spec = held_out_test_rows(held)
    metric = lineage["metric"]
    incumbent = score_incumbent(registry, dataset, rows, y, spec, metric)
    decisions = [decide_promotion(metric, new_test_score, incumbent, margin)]
    scores = {"metric": metric, "new": new_test_score, "champion": incumbent.score}
    days = held[2].test_batch_days
    if incumbent.version is None or days is None or days.isna().all():
        return GateResult(decisions[0].promote, decisions[0].reason, scores)
    day = days.max()
    newest = (days == day).fillna(False).to_numpy(dtype=bool)
    rows, labels = rows[newest], y[newest]
    scores["batch_day"] = day
    try:
        new_score = score_model(registry.load_uri(model_uri), rows, labels, spec.task, spec.positive_class)[metric]
    except ValueError as error:  # the batch's held-out labels do not support the metric (e.g. a single class)
        return GateResult(decisions[0].promote, f"{decisions[0].reason}; batch {day} not compared: {error}", scores)
    on_batch = score_incumbent(registry, dataset, rows, labels, spec, metric)
    decisions.append(decide_promotion(metric, new_score, on_batch, margin,
                                      rows=f"batch {day}'s {len(rows)} held-out labelled rows"))
    scores |= {"new_on_batch": new_score, "champion_on_batch": on_batch.score}
    return GateResult(all(d.promote for d in decisions), "; ".join(d.reason for d in decisions), scores)


class DeployConfig(dg.Config):
    promotion_margin: float = Field(default=0.0, ge=0, description=(
        "How much better, in the metric's units, a new model must score than the champion on the same rows "
        "(test rows and the latest labelled batch) to replace it; 0: a tie promotes the newer model."))


@dg.asset(partitions_def=dataset_partitions, deps=[model_leaderboard], group_name="deployment", kinds={"mlflow"},
          check_specs=[dg.AssetCheckSpec("beats_champion", asset="registered_model", blocking=True, description=(
              "The new version beats the champion by the margin on the same test rows and on the latest labelled "
              "batch; failing blocks champion_model, so the champion stays."))])
def registered_model(context: dg.AssetExecutionContext, config: DeployConfig, store: FeatureStore,
                     registry: ModelRegistry) -> dg.MaterializeResult:
    """The final AutoML model as a new MLflow model version, with the champion gate's verdict in its tags; a
    version the gate rejects is aliased `challenger` (e.g. for an A/B test)."""
    name, version = context.partition_key, store.latest("model_leaderboard", context.partition_key).version
    lineage, board = store.lineage("model_leaderboard", name, version), store.load("model_leaderboard", name, version)
    metric, best = lineage["metric"], board.set_index("model").loc["automl"]
    gate = champion_gate(registry, store, name, lineage, float(best[f"test_{metric}"]), best["model_uri"],
                         config.promotion_margin)
    clean = store.version("clean_dataset", name, lineage["clean_dataset_version"])
    tags = {"dataset": name, "task": lineage["spec"]["task"], "candidate": "automl", "metric": metric,
            f"test_{metric}": str(best[f"test_{metric}"]), "dagster_run_id": context.run_id,
            "feature_set_version": str(lineage["feature_set_version"]),
            "clean_dataset_version": str(lineage["clean_dataset_version"]),
            "clean_dataset_content_hash": clean.content_hash, "leaderboard_version": str(version),
            "code_version": code_version(),
            "trigger": context.run.tags.get("tmiv/trigger", "manual"), "decision": gate.reason,
            "policy_reason": context.run.tags.get("tmiv/policy_reason", "not requested by the retrain policy"),
            GATE_TAG: "passed" if gate.passed else "rejected", GATE_SCORES_TAG: json.dumps(gate.scores),
            AUTO_DEPLOY_TAG: str(RetrainSettings.from_mapping(lineage["spec"].get("retrain", {})).auto_deploy).lower()}
    registered = registry.register(name, best["model_uri"], best["run_id"], tags)
    if not gate.passed:
        registry.promote(name, registered.version, CHALLENGER, reason=gate.reason, trigger=tags["trigger"],
                         run_id=context.run_id, scores=gate.scores)
    (context.log.info if gate.passed else context.log.warning)(
        f"Registered {registered.name} v{registered.version}; champion gate {tags[GATE_TAG]}: {gate.reason}")
    champion = registry.champion(name)
    return dg.MaterializeResult(
        metadata={"model_name": registered.name, "model_version": int(registered.version),
                  "gate": tags[GATE_TAG], "reason": gate.reason, f"test_{metric}": float(best[f"test_{metric}"]),
                  "champion_version": int(champion.version) if champion else 0, "model_uri": best["model_uri"]},
        check_results=[dg.AssetCheckResult(check_name="beats_champion", passed=gate.passed, metadata={
            "reason": gate.reason, "margin": config.promotion_margin,
            **{k: v if v is not None else float("nan") for k, v in gate.scores.items()}})])


def gated_version(registry: ModelRegistry, dataset: str, run_id: str) -> ModelVersion:
    """The version registered by this run, else the newest: the one champion_model acts on."""
    versions = sorted(registry.versions(dataset), key=lambda v: int(v.version))
    return next((v for v in versions if v.tags.get("dagster_run_id") == run_id), versions[-1])


@dg.asset(partitions_def=dataset_partitions, deps=[registered_model], group_name="deployment", kinds={"mlflow"})
def champion_model(context: dg.AssetExecutionContext, registry: ModelRegistry) -> dg.MaterializeResult:
    """The registered version that passed the champion gate, promoted to `champion` (runs only when the
    blocking `beats_champion` check passed)."""
    name = context.partition_key
    candidate = gated_version(registry, name, context.run_id)
    if candidate.tags.get(GATE_TAG) != "passed":
        raise dg.Failure(description=f"[{name}] v{candidate.version} did not pass the champion gate "
                                     f"({candidate.tags.get('decision', 'no verdict')}); run promote_model to "
                                     "promote it by hand")
    decision = dict(reason=candidate.tags["decision"], trigger=candidate.tags.get("trigger", "manual"),
                    run_id=context.run_id, scores=json.loads(candidate.tags.get(GATE_SCORES_TAG, "{}")))
    champion = registry.champion(name)
    waits = candidate.tags.get(AUTO_DEPLOY_TAG) == "false" and champion is not None
    if waits and champion.version != candidate.version:
        reason = f"passed the gate ({candidate.tags['decision']}); auto_deploy is off, so it waits for promote_model"
        registry.promote(name, candidate.version, CHALLENGER, **decision | {"reason": reason})
        context.log.info(f"{candidate.name} v{candidate.version} is the challenger: {reason}")
        return dg.MaterializeResult(metadata={"model_name": candidate.name, "champion_version": int(champion.version),
                                              "decision": "awaiting approval", "reason": reason})
    if CHAMPION not in candidate.aliases:
        registry.promote(name, candidate.version, action="register", **decision)
        context.log.info(f"{candidate.name} v{candidate.version} is the champion: {candidate.tags['decision']}")
    return dg.MaterializeResult(metadata={"model_name": candidate.name, "champion_version": int(candidate.version),
                                          "decision": "promoted", "reason": candidate.tags["decision"]})


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


@dg.asset(partitions_def=dataset_partitions, deps=[champion_model], group_name="deployment", kinds={"mlflow"})
def champion_history(context: dg.AssetExecutionContext, registry: ModelRegistry) -> dg.MaterializeResult:
    """Every lifecycle decision of the dataset's model: trigger, champion before and after, scores, reason."""
    return dg.MaterializeResult(metadata=history_metadata(registry, context.partition_key))


@dg.asset(partitions_def=dataset_partitions, deps=[registered_model], group_name="deployment", kinds={"mlflow"})
def model_comparison(context: dg.AssetExecutionContext, store: FeatureStore,
                     registry: ModelRegistry) -> dg.MaterializeResult:
    """Every registered version of the dataset's model scored on the latest leaderboard's test rows."""
    name = context.partition_key
    lineage = store.lineage("model_leaderboard", name)
    (test, y, spec), metric, rows = held_out_test_rows(held_out(store, name, lineage)), lineage["metric"], []
    for version in sorted(registry.versions(name), key=lambda v: int(v.version)):
        row = {"version": int(version.version), "aliases": ", ".join(version.aliases),
               "archived": version.tags.get(ARCHIVED) == "true"}
        try:
            row |= version_scores(registry, name, int(version.version), test, y, spec)
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
