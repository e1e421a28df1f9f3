"""Data preparation: ingest into the feature store, profile, clean."""

import dagster as dg
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from pydantic import Field

from tmiv_assets.defs.metadata import bad_input_as_failure, column_schema, markdown_table
from tmiv_assets.defs.partitions import dataset_partitions
from tmiv_assets.ml.data.cleaning import DatasetCleaner
from tmiv_assets.ml.data.ingest import BATCH_DAY, append_labelled_batches, validate_dataset
from tmiv_assets.ml.data.profiling import profile_frame
from tmiv_assets.ml.data.quality import QUALITY_CHECKS, infer_schema, run_quality_checks
from tmiv_assets.ml.data.spec import DatasetSpec
from tmiv_assets.ml.monitoring.policy import RetrainSettings
from tmiv_assets.ml.plots import figure_to_markdown, missing_values_plot
from tmiv_assets.resources.data_source import DataSource
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.prediction_log import PredictionLog


class RawDatasetConfig(dg.Config):
    include_labelled_batches: bool = Field(default=True, description=(
        "Add the labelled rows of batches that were scored (within the spec's retrain.window_days) to the "
        "training rows."))


def training_batch_days(source: DataSource, prediction_log: PredictionLog, spec: DatasetSpec) -> list[str]:
    """Days whose labels may join the training rows: batches the platform scored before, so a model never
    learns from a batch before it has been judged on it, and with `retrain.window_days` only those at most
    that many days older than the newest."""
    scored = prediction_log.scored_days(spec.name)
    days = [day for day in source.labelled_days(spec.name) if day in scored]
    window = RetrainSettings.from_mapping(spec.retrain).window_days
    if window is not None and days:
        newest = pd.Timestamp(max(days))
        days = [day for day in days if pd.Timestamp(day) >= newest - pd.Timedelta(days=window)]
    return days


def version_raw_lineage(store: FeatureStore, dataset: str, version: ModelVersion) -> dict:
    """The lineage of the raw dataset version a registered version was trained on."""
    raw_version = store.lineage("clean_dataset", dataset, int(version.tags["clean_dataset_version"]))[
        "raw_dataset_version"]
    return store.lineage("raw_dataset", dataset, raw_version)


def trained_batch_days(store: FeatureStore, dataset: str, version: ModelVersion) -> set[str]:
    """The labelled batches a registered version trained on (some of their rows held out)."""
    return set(version_raw_lineage(store, dataset, version).get("labelled_batches", []))


def considered_batch_days(store: FeatureStore, dataset: str, version: ModelVersion) -> set[str]:
    """The labelled batches offered to a registered version's training, those that added no new rows too."""
    return set(version_raw_lineage(store, dataset, version).get("considered_batches", []))


def labelled_batch_days(store: FeatureStore, dataset: str, clean_version: int, ids: pd.Series) -> pd.Series | None:
    """The batch day of each row of a clean dataset version (missing for reference rows), or None when it
    holds no labelled batch rows."""
    raw_version = store.lineage("clean_dataset", dataset, clean_version)["raw_dataset_version"]
    labelled = store.lineage("raw_dataset", dataset, raw_version).get("labelled_rows_version")
    if labelled is None:
        return None
    rows = store.load("labelled_rows", dataset, labelled)
    return ids.astype(str).map(rows.set_index("id")[BATCH_DAY])


def stored_spec(store: FeatureStore, name: str, dataset: str, version: int | str = "latest") -> DatasetSpec:
    """The dataset spec a stored version was made with: `raw_dataset` reads the spec file once and every
    later step uses the spec its input carries, so one run never mixes two edits of the file."""
    return DatasetSpec.from_record(store.lineage(name, dataset, version)["spec"])


def trained_with(store: FeatureStore, dataset: str, clean_version: int) -> tuple[DatasetSpec, dict[str, str]]:
    """The spec a model trained on `clean_version` was made with, and the raw schema (column -> dtype) that
    rows it scores are checked against."""
    raw_version = store.lineage("clean_dataset", dataset, clean_version)["raw_dataset_version"]
    return stored_spec(store, "clean_dataset", dataset, clean_version), store.schema("raw_dataset", dataset,
                                                                                    raw_version)


def stored_version_metadata(version) -> dict:
    return {
        "version": version.version,
        "path": dg.MetadataValue.path(str(version.path)),
        "content_hash": version.content_hash,
        "new_version": version.created,
    }


@dg.asset(partitions_def=dataset_partitions, group_name="datasets", kinds={"duckdb", "parquet"})
def raw_dataset(context: dg.AssetExecutionContext, config: RawDatasetConfig, source: DataSource, store: FeatureStore,
                prediction_log: PredictionLog) -> dg.MaterializeResult:
    """The dataset file, validated against its spec, plus the labelled rows of scored batches, as a
    feature-store version; which row came from which batch is the `labelled_rows` frame beside it."""
    name = context.partition_key
    with bad_input_as_failure(name):
        spec = source.dataset_spec(name)
        frame = source.read_dataset(spec)
        validate_dataset(frame, spec)
        days = training_batch_days(source, prediction_log, spec) if config.include_labelled_batches else []
        batches = source.labelled_batches(name, days)
        combined, batch_days = append_labelled_batches(frame, spec, batches)
    # Only days that added rows: a batch whose ids were all reference rows already taught the model nothing.
    added_days = sorted(batch_days.dropna().unique())
    lineage = {"file": str(spec.path), "labelled_batches": added_days, "considered_batches": sorted(batches),
               "spec": spec.to_record()}
    if added_days:
        from_batch = batch_days.notna()
        labelled = pd.DataFrame({"id": combined.loc[from_batch, spec.id_column].astype(str),
                                 BATCH_DAY: batch_days[from_batch]}).reset_index(drop=True)
        lineage["labelled_rows_version"] = store.save("labelled_rows", name, labelled, {"spec": spec.to_record()}
                                                      ).version
    version = store.save("raw_dataset", name, combined, lineage)
    if "decoding" in frame.attrs:
        context.log.warning(frame.attrs["decoding"])
    context.log.info(f"Ingested {len(frame):,} rows from {spec.path.name} and {len(combined) - len(frame):,} "
                     f"labelled batch rows for {name}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(combined),
        "dagster/column_schema": column_schema(combined),
        "rows_from_file": len(frame),
        "rows_from_labelled_batches": len(combined) - len(frame),
        "labelled_batches": ", ".join(added_days) or "none",
        "source_file": dg.MetadataValue.path(str(spec.path)),
        **({"decoding": frame.attrs["decoding"]} if "decoding" in frame.attrs else {}),
        **stored_version_metadata(version),
    })


@dg.asset(partitions_def=dataset_partitions, deps=[raw_dataset], group_name="datasets", kinds={"pandas"})
def dataset_profile(context: dg.AssetExecutionContext, store: FeatureStore) -> dg.MaterializeResult:
    """Per-column dtypes, missing values and numeric statistics of the raw dataset."""
    frame = store.load("raw_dataset", context.partition_key)
    profile = profile_frame(frame)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(frame),
        "columns": len(profile),
        "missing_cells": int(profile["missing"].sum()),
        "profile": markdown_table(profile),
        "missing_values": dg.MetadataValue.md(figure_to_markdown(missing_values_plot(profile), "missing values")),
    })


class CleaningConfig(dg.Config):
    max_missing_rate: float = Field(default=0.5, ge=0, le=1,
                                    description="Largest share of missing values a feature may have (blocking check).")


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[raw_dataset],
    group_name="datasets",
    kinds={"duckdb", "parquet"},
    check_specs=[dg.AssetCheckSpec(name, asset="clean_dataset", blocking=True) for name in QUALITY_CHECKS],
)
def clean_dataset(context: dg.AssetExecutionContext, config: CleaningConfig,
                  store: FeatureStore) -> dg.MaterializeResult:
    """Typed, deduplicated, labelled rows, cleaned with the spec's `cleaning:` strategies.

    Imputation and scaling for models are learned inside the model pipeline on the training split.
    """
    name = context.partition_key
    raw_version = store.latest("raw_dataset", name).version
    raw, spec = store.load("raw_dataset", name, raw_version), stored_spec(store, "raw_dataset", name, raw_version)
    with bad_input_as_failure(name):
        cleaner = DatasetCleaner.from_spec(spec)
        clean = cleaner.fit_transform(raw, spec)
    version = store.save("clean_dataset", name, clean, {"raw_dataset_version": raw_version, "spec": spec.to_record()})
    checks = run_quality_checks(clean, spec, config.max_missing_rate)
    context.log.info(f"Cleaned {name}: {len(raw):,} -> {len(clean):,} rows, {len(cleaner.report_)} actions, "
                     f"{sum(c.passed for c in checks)}/{len(checks)} quality checks passed")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(clean),
            "dagster/column_schema": column_schema(clean),
            "rows_before": cleaner.summary_.rows_before,
            "columns_before": cleaner.summary_.columns_before,
            "columns_after": cleaner.summary_.columns_after,
            "actions": markdown_table(cleaner.report_) if len(cleaner.report_) else "no changes needed",
            "schema": markdown_table(infer_schema(clean, spec)),
            **stored_version_metadata(version),
        },
        check_results=[
            dg.AssetCheckResult(check_name=check.name, passed=check.passed,
                                metadata={"observed": check.observed, "threshold": check.threshold,
                                          "detail": check.detail})
            for check in checks
        ],
    )
