"""Engineered feature sets, versioned in the feature store."""

import dagster as dg

from tmiv_assets.defs.assets.datasets import clean_dataset, stored_version_metadata
from tmiv_assets.defs.metadata import bad_input_as_failure, column_schema, markdown_table
from tmiv_assets.defs.partitions import dataset_partitions
from tmiv_assets.ml.features import FeatureBuilder
from tmiv_assets.ml.selection import rank_features
from tmiv_assets.resources.data_source import DataSource
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.files import write_text_atomic


@dg.asset(partitions_def=dataset_partitions, deps=[clean_dataset], pool="duckdb_writer", group_name="features",
          kinds={"duckdb", "parquet"})
def feature_set(context: dg.AssetExecutionContext, source: DataSource, store: FeatureStore) -> dg.MaterializeResult:
    """Model inputs plus the target: identifiers dropped, the time column expanded into calendar features."""
    name = context.partition_key
    clean = store.load("clean_dataset", name)
    with bad_input_as_failure(name):
        spec = source.dataset_spec(name)
    builder = FeatureBuilder.from_spec(spec).fit(clean.drop(columns=[spec.target]))
    features = builder.transform(clean)
    lineage = {
        "clean_dataset_version": store.latest("clean_dataset", name).version,
        "transform": type(builder).__name__,
        "transform_params": builder.get_params(),
    }
    version = store.save("feature_set", name, features, lineage)
    generated = sorted(set(features.columns) - set(clean.columns))
    context.log.info(f"{features.shape[1] - 1} features for {name}, {len(generated)} generated")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(features),
        "dagster/column_schema": column_schema(features),
        "n_features": features.shape[1] - 1,
        "generated_features": ", ".join(generated) or "none",
        "preview": markdown_table(features.head(5)),
        **stored_version_metadata(version),
    })


@dg.asset(partitions_def=dataset_partitions, deps=[feature_set], group_name="features", kinds={"scikitlearn"})
def selected_features(context: dg.AssetExecutionContext, source: DataSource, store: FeatureStore) -> dg.MaterializeResult:
    """Features ranked by variance, correlation, mutual information, L1 and tree importance; kept on 2+ votes."""
    name = context.partition_key
    with bad_input_as_failure(name):
        spec = source.dataset_spec(name)
    version = store.latest("feature_set", name)
    selector = rank_features(store.load("feature_set", name), spec.target, spec.task)
    path = store.artifact_path("reports", name, f"feature_ranking_v{version.version}.csv")
    write_text_atomic(path, selector.ranking_.to_csv(index=False))
    context.log.info(f"Selected {len(selector.selected_features_)} of {len(selector.ranking_)} encoded features for {name}")
    return dg.MaterializeResult(metadata={
        "feature_set_version": version.version,
        "n_selected": len(selector.selected_features_),
        "n_candidates": len(selector.ranking_),
        "selected_features": ", ".join(selector.selected_features_),
        "ranking": markdown_table(selector.ranking_),
        "ranking_file": dg.MetadataValue.path(str(path)),
    })
