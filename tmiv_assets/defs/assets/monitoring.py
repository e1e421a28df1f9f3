"""Batch scoring with the champion and drift of each batch against the champion's training data."""

import dagster as dg
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from pydantic import Field

from tmiv_assets.defs.assets.data import stored_spec
from tmiv_assets.defs.assets.deploy import champion_or_failure, registered_model
from tmiv_assets.defs.metadata import bad_input_as_failure, markdown_table
from tmiv_assets.defs.partitions import batch_partitions
from tmiv_assets.ml.data.ingest import require_columns, validate_batch
from tmiv_assets.ml.data.spec import DatasetSpec
from tmiv_assets.ml.deploy.serving import predict_rows
from tmiv_assets.ml.metrics import score_model
from tmiv_assets.ml.monitoring.drift import DriftDetector
from tmiv_assets.ml.plots import drift_plot, figure_to_markdown
from tmiv_assets.resources.artifacts import ArtifactStore
from tmiv_assets.resources.data_source import DataSource
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.model_registry import ModelRegistry
from tmiv_assets.resources.prediction_log import PredictionLog


class DriftConfig(dg.Config):
    drift_share: float = Field(default=0.3, gt=0, le=1,
                               description="A batch drifts when at least this share of its columns drift.")


def batch_inputs(context: dg.AssetExecutionContext, source: DataSource, store: FeatureStore,
                 registry: ModelRegistry) -> tuple[str, str, ModelVersion, DatasetSpec, pd.DataFrame]:
    """(dataset, day, champion, the spec it was trained with, the batch) for a batch partition."""
    # A run launched from the shell carries the key as the string "flights|2013-07-22", not a MultiPartitionKey.
    keys = batch_partitions.get_partition_key_from_str(str(context.partition_key)).keys_by_dimension
    dataset, day = keys["dataset"], keys["day"]
    champion = champion_or_failure(registry, dataset)
    clean_version = int(champion.tags["clean_dataset_version"])
    spec = stored_spec(store, "clean_dataset", dataset, clean_version)
    raw_version = store.lineage("clean_dataset", dataset, clean_version)["raw_dataset_version"]
    with bad_input_as_failure(context.partition_key):
        batch = source.read_batch(dataset, day)
        validate_batch(batch, store.schema("raw_dataset", dataset, raw_version), source.batch_path(dataset, day),
                       skip={spec.target, *spec.key_columns})
    return dataset, day, champion, spec, batch


@dg.asset(partitions_def=batch_partitions, deps=[registered_model], group_name="monitoring", kinds={"parquet"})
def scored_batch(context: dg.AssetExecutionContext, source: DataSource, store: FeatureStore,
                 registry: ModelRegistry, artifacts: ArtifactStore,
                 prediction_log: PredictionLog) -> dg.MaterializeResult:
    """Predictions of the champion for one day's batch; scored against labels once they arrive."""
    dataset, day, champion, spec, batch = batch_inputs(context, source, store, registry)
    model = registry.load_version(dataset, champion.version)
    inputs = list(model.feature_names_in_)
    with bad_input_as_failure(context.partition_key):
        require_columns(batch, inputs, source.batch_path(dataset, day))
    scored = predict_rows(model, batch, spec.task, spec.positive_class, keep=[spec.id_column] if spec.id_column else [],
                          probabilities=False)
    scored["champion_version"] = int(champion.version)
    path = artifacts.write_frame(scored, "batches", dataset, day, "scored.parquet")
    request = prediction_log.record(f"{dataset}|{day}", champion.name, int(champion.version), scored["prediction"],
                                    scored.get("score"), batch[spec.id_column] if spec.id_column else None)
    metadata = {"dagster/row_count": len(scored), "champion_version": int(champion.version),
                "prediction_log_request": request,
                "path": dg.MetadataValue.path(str(path)), "preview": markdown_table(scored.head(5))}
    with bad_input_as_failure(context.partition_key):
        labels = source.read_labels(dataset, day)
    if spec.id_column and labels is not None:
        labelled = batch.merge(labels[[spec.id_column, spec.target]], on=spec.id_column)
        metrics = score_model(model, labelled[inputs], labelled[spec.target], spec.task, spec.positive_class)
        metadata |= {f"live_{k}": v for k, v in metrics.items()} | {"labelled_rows": len(labelled)}
    context.log.info(f"Scored {len(scored):,} rows of {dataset} {day} with champion v{champion.version}")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(partitions_def=batch_partitions, deps=[scored_batch], group_name="monitoring", kinds={"evidently"})
def drift_report(context: dg.AssetExecutionContext, config: DriftConfig, source: DataSource,
                 store: FeatureStore, registry: ModelRegistry, artifacts: ArtifactStore) -> dg.MaterializeResult:
    """Per-column drift of the batch against the rows the champion was trained on, with an Evidently report."""
    dataset, day, champion, spec, batch = batch_inputs(context, source, store, registry)
    reference_version = int(champion.tags["clean_dataset_version"])
    reference = store.load("clean_dataset", dataset, reference_version)
    skip = {spec.target, *spec.key_columns, *spec.exclude_columns}
    columns = [c for c in reference.columns if c not in skip and c in batch.columns]
    report = DriftDetector(drift_share=config.drift_share).fit(reference[columns]).detect(batch[columns])
    html_path = artifacts.write_text(report.snapshot.get_html_str(as_iframe=False), "batches", dataset, day,
                                     "drift_report.html")
    drifted = report.per_column.loc[report.per_column["drifted"], "column"].tolist()
    context.log.info(f"Drift {dataset} {day}: {len(drifted)}/{len(columns)} columns drifted "
                     f"({', '.join(drifted) or 'none'}); drift_detected={report.drift_detected}")
    return dg.MaterializeResult(metadata={
        "drift_detected": report.drift_detected,
        "drifted_share": report.drifted_share,
        "drift_share_threshold": config.drift_share,
        "drifted_columns": ", ".join(drifted) or "none",
        "reference": f"clean_dataset v{reference_version} (champion v{champion.version})",
        "batch_rows": len(batch),
        "per_column": markdown_table(report.per_column),
        "drift_plot": dg.MetadataValue.md(figure_to_markdown(drift_plot(report.per_column), "drift")),
        "evidently_report": dg.MetadataValue.path(str(html_path)),
    })
