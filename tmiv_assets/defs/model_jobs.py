"""Jobs that act on registered models by hand, from the UI launchpad or the shell: promote, roll back and
archive versions (`dagster job execute -j rollback_model -c config/rollback_model.yaml`; every decision is
recorded in the registry and shown by `champion_history`), and predict a user's file (`predict_file`)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from tmiv_assets.defs.assets.data import trained_with
from tmiv_assets.defs.assets.deploy import champion_history, champion_or_failure, history_metadata
from tmiv_assets.defs.assets.monitoring import ab_comparison
from tmiv_assets.defs.executors import short_steps_executor
from tmiv_assets.defs.metadata import bad_input_as_failure, markdown_table
from tmiv_assets.ml.data.ingest import read_table, require_columns, validate_batch
from tmiv_assets.ml.deploy.serving import predict_rows
from tmiv_assets.resources.artifacts import ArtifactStore
from tmiv_assets.resources.data_source import DataSource
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.model_registry import CHALLENGER, ModelRegistry
from tmiv_assets.resources.prediction_log import PredictionLog


class LifecycleConfig(dg.Config):
    dataset: str = Field(description="Dataset whose model is changed, e.g. titanic.")
    version: int | None = Field(default=None, description="Model version (rollback: empty = the previous champion).")
    reason: str = Field(default="", description="Why: recorded with the decision.")


def _decide(context: dg.OpExecutionContext, config: LifecycleConfig, registry: ModelRegistry,
            action: str) -> Iterator[dg.AssetMaterialization]:
    try:
        if action == "promote":
            if config.version is None:
                raise ValueError("promote needs a version; set 'version' in the run config")
            decision = registry.promote(config.dataset, config.version, reason=config.reason or "promoted by hand",
                                        run_id=context.run_id)
        elif action == "rollback":
            decision = registry.rollback(config.dataset, config.version, reason=config.reason, run_id=context.run_id)
        else:
            if config.version is None:
                raise ValueError("archive needs a version; set 'version' in the run config")
            decision = registry.archive(config.dataset, config.version, reason=config.reason, run_id=context.run_id)
    except (LookupError, ValueError) as error:
        raise dg.Failure(description=f"[{config.dataset}] {action}: {error}") from error
    context.log.info(f"{config.dataset}: {action} -> champion v{decision.after} (was v{decision.before})")
    yield history_event(registry, config.dataset)


def history_event(registry: ModelRegistry, dataset: str) -> dg.AssetMaterialization:
    """A `champion_history` materialization after a decision made outside its asset, so the UI shows it."""
    return dg.AssetMaterialization(asset_key=champion_history.key, partition=dataset,
                                   metadata=history_metadata(registry, dataset))


@dg.op(out={})
def promote_version(context: dg.OpExecutionContext, config: LifecycleConfig, registry: ModelRegistry):
    """Make `version` the champion."""
    yield from _decide(context, config, registry, "promote")


@dg.op(out={})
def rollback_champion(context: dg.OpExecutionContext, config: LifecycleConfig, registry: ModelRegistry):
    """Make the previous champion (or `version`) the champion again."""
    yield from _decide(context, config, registry, "rollback")


@dg.op(out={})
def archive_version(context: dg.OpExecutionContext, config: LifecycleConfig, registry: ModelRegistry):
    """Tag `version` archived (never the champion) and drop its challenger alias."""
    yield from _decide(context, config, registry, "archive")


@dg.job(executor_def=short_steps_executor, description="Make a registered model version the champion.")
def promote_model():
    promote_version()


@dg.job(executor_def=short_steps_executor,
        description="Roll the champion back to the previous one (or a named version).")
def rollback_model():
    rollback_champion()


@dg.job(executor_def=short_steps_executor, description="Archive a model version.")
def archive_model():
    archive_version()


class PredictFileConfig(dg.Config):
    dataset: str = Field(description="Dataset whose model predicts, e.g. titanic.")
    path: str = Field(description="CSV, Parquet or Excel file with the dataset's columns (the target may be absent).")
    version: int | None = Field(default=None, description="Model version; empty = the champion.")
    output_format: Literal["parquet", "csv"] = Field(default="parquet", description="File type of the predictions.")


@dg.op(out={})
def predict_rows_of_file(context: dg.OpExecutionContext, config: PredictFileConfig, registry: ModelRegistry,
                         store: FeatureStore, artifacts: ArtifactStore, prediction_log: PredictionLog):
    """Predictions (and class probabilities) for a user's file, written atomically under `predictions/`."""
    path = Path(config.path).expanduser().resolve()
    try:
        chosen = (registry.version(config.dataset, config.version) if config.version is not None
                  else champion_or_failure(registry, config.dataset))
    except LookupError as error:
        raise dg.Failure(description=f"[{config.dataset}] predict_file: {error}") from error
    version = int(chosen.version)
    model = registry.load_version(config.dataset, version)
    spec, schema = trained_with(store, config.dataset, int(chosen.tags["clean_dataset_version"]))
    with bad_input_as_failure(config.dataset):
        frame = read_table(path)
        ignored = require_columns(frame, list(model.feature_names_in_), path)
        validate_batch(frame, schema, path, skip={spec.target, *spec.key_columns})
    result = predict_rows(model, frame, spec.task, spec.positive_class,
                          keep=[c for c in spec.key_columns if c in frame.columns])
    result["model_version"] = version
    parts = ("predictions", config.dataset, f"{path.stem}-v{version}.{config.output_format}")
    target = artifacts.write_frame(result, *parts) if config.output_format == "parquet" else \
        artifacts.write_csv(result, *parts)
    context.log.info(f"{config.dataset} v{version}: {len(result):,} predictions for {path.name} -> {target}"
                     + (f"; ignored columns {ignored}" if ignored else ""))
    prediction_log.record(f"file:{path}", chosen.name, version, result["prediction"], result.get("score"),
                          result[spec.id_column] if spec.id_column in result else None)
    metadata = {"rows": len(result), "path": dg.MetadataValue.path(str(target)), "source_file": str(path),
                "model_version": version, "ignored_columns": ", ".join(ignored) or "none",
                "preview": markdown_table(result.head(5))}
    yield dg.AssetMaterialization(asset_key=["predictions", config.dataset],
                                  description=f"{path} with model v{version}", metadata=metadata)


@dg.job(executor_def=short_steps_executor, description="Predict a file of rows with the champion (or a named version).")
def predict_file():
    predict_rows_of_file()


class ConcludeABTestConfig(dg.Config):
    dataset: str = Field(description="Dataset whose A/B test ends, e.g. flights.")
    day: str = Field(description="The scored and labelled batch day the arms are compared on, e.g. 2013-07-22.")
    min_detectable_effect: float | None = Field(default=None, gt=0, description="As in ab_test_report.")


@dg.op(out={})
def conclude_ab_test_op(context: dg.OpExecutionContext, config: ConcludeABTestConfig, registry: ModelRegistry,
                        store: FeatureStore, source: DataSource, prediction_log: PredictionLog):
    """Promote the challenger when it is significantly better on the batch's labelled rows; otherwise record
    that the champion is kept. Either way the decision is in the registry and `champion_history`."""
    comparison = ab_comparison(config.dataset, config.day, source, store, registry, prediction_log,
                               config.min_detectable_effect)
    if isinstance(comparison, str):
        raise dg.Failure(description=f"[{config.dataset}|{config.day}] cannot conclude the A/B test: {comparison}; "
                                     "score the batch with challenger_share > 0 and wait for its labels")
    scores = {"metric": comparison.metric, **comparison.values, "p_value": comparison.p_value}
    challenger = registry.aliased(config.dataset, CHALLENGER)
    if comparison.winner == "challenger" and challenger is not None:
        decision = registry.promote(config.dataset, challenger.version, action="promote", trigger="ab_test",
                                    reason=comparison.recommendation, scores=scores, run_id=context.run_id)
        registry.client().delete_registered_model_alias(registry.model_name(config.dataset), CHALLENGER)
    else:
        decision = registry.keep(config.dataset, reason=comparison.recommendation, trigger="ab_test", scores=scores,
                                 run_id=context.run_id)
    context.log.info(f"A/B test {config.dataset} {config.day}: {decision.action}, champion v{decision.after}")
    yield history_event(registry, config.dataset)


@dg.job(executor_def=short_steps_executor,
        description="End an A/B test: promote a significantly better challenger, or keep the champion.")
def conclude_ab_test():
    conclude_ab_test_op()
